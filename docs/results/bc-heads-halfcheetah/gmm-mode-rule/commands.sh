#!/bin/bash
# Session 20: the GMM head's std floor (--log-std-min) and deterministic-action rule (--gmm-mode-rule) on the
# study's data: 25 expert episodes per env (`understudy collect --env ENV --policy experts/ENV --episodes 25 --out DATA`).
# Every BC run: 3 vmapped seeds, the study's BC defaults, each seed's last policy over 100 episodes. One run per core.
cd /work/main
bc() { .venv/bin/understudy train bc --head gmm --steps 20000 --eval-every 2000 --eval-episodes 10 --final-eval-episodes 100 \
       --seeds 3 --seed 0 "$@"; }
H=/work/data/halfcheetah-expert-25
O=/work/bc-study/s20
# 1. the std floor: -5 (default), -3, -2
taskset -c 0 bc --dataset $H --log-std-min=-3 --out $O/gmm-lsm-3 &
taskset -c 1 bc --dataset $H --log-std-min=-2 --out $O/gmm-lsm-2 &
wait
taskset -c 1 bc --dataset $H --out $O/gmm-default
# 2. both deterministic-action rules on the same exports and the same 100 episodes (env seed 12345)
for run in gmm-default gmm-lsm-3 gmm-lsm-2; do
  .venv/bin/python docs/results/bc-heads-halfcheetah/gmm-mode-rule/gmm_rules_eval.py HalfCheetah-v5 experts/HalfCheetah-v5 $O/$run/final/seed{0,1,2}
done
# 3. 5-member ensembles acting with the mixture mean (ensemble5/ and ensemble5-bootstrap/ hold the top-component runs)
taskset -c 0 bc --dataset $H --gmm-mode-rule mixture-mean --ensemble-size 5 --ensemble-bootstrap --no-progress --out $O/gmm-ens5-boot-mix &
taskset -c 1 bc --dataset $H --gmm-mode-rule mixture-mean --ensemble-size 5 --no-progress --out $O/gmm-ens5-mix &
wait
# 4. the other envs, default head, then both rules on the same exports
for pair in "Hopper-v5 hopper" "Walker2d-v5 walker2d" "Ant-v5 ant"; do
  set -- $pair
  bc --dataset /work/data/$2-expert-25 --no-progress --out $O/gmm-$2
  .venv/bin/python docs/results/bc-heads-halfcheetah/gmm-mode-rule/gmm_rules_eval.py $1 experts/$1 $O/gmm-$2/final/seed{0,1,2}
done
# 5. EMA weights (--ema-decay 0.999, as on Walker2d) with the mixture mean, then both rules on its exports
bc --dataset $H --gmm-mode-rule mixture-mean --ema-decay 0.999 --no-progress --out $O/gmm-ema-mix
.venv/bin/python docs/results/bc-heads-halfcheetah/gmm-mode-rule/gmm_rules_eval.py HalfCheetah-v5 experts/HalfCheetah-v5 $O/gmm-ema-mix/final/seed{0,1,2}
