#!/bin/bash
# Session 19: MOReL's first runs on MuJoCo locomotion data. Two processes at a time, each pinned to one core; the
# datasets are session 16's (`understudy study offline-locomotion ... --data-dir /work/offline-loco/data-1m`).
cd /work/main
D=/work/offline-loco/data-1m
O=/work/exp/s19
for pair in "0 halfcheetah-medium" "1 hopper-medium"; do
  set -- $pair
  # the default detector: halt above the largest disagreement seen on the data (the paper's rule), 3 seeds
  taskset -c $1 .venv/bin/understudy train morel --dataset $D/$2 --steps 100000 --eval-every 25000 --eval-episodes 10 \
      --final-eval-episodes 100 --seeds 3 --seed 0 --no-progress --out $O/morel-$2-100k &
  # a stricter detector: halt above the data's mean + 3 std, seed 0 only (started about 20 minutes after the first two)
  taskset -c $1 .venv/bin/understudy train morel --dataset $D/$2 --threshold-rule mean-std --steps 100000 \
      --eval-every 25000 --eval-episodes 10 --final-eval-episodes 100 --seeds 1 --seed 0 --no-progress \
      --out $O/morel-meanstd-$2-100k &
done
wait
# Then, alone on the two cores: the max rule scaled down, seed 0 only.
taskset -c 0 .venv/bin/understudy train morel --dataset $D/halfcheetah-medium --threshold-scale 0.3 --steps 100000 \
    --eval-every 25000 --eval-episodes 10 --final-eval-episodes 100 --seeds 1 --seed 0 --no-progress \
    --out $O/morel-scale0.3-halfcheetah-medium-100k &
taskset -c 1 .venv/bin/understudy train morel --dataset $D/hopper-medium --threshold-scale 0.5 --steps 100000 \
    --eval-every 25000 --eval-episodes 10 --final-eval-episodes 100 --seeds 1 --seed 0 --no-progress \
    --out $O/morel-scale0.5-hopper-medium-100k &
wait
# Last: seeds 1 and 2 of the hopper setting, each a 1-seed run on its own core.
for s in 1 2; do
  taskset -c $((s - 1)) .venv/bin/understudy train morel --dataset $D/hopper-medium --threshold-scale 0.5 --steps 100000 \
      --eval-every 25000 --eval-episodes 10 --final-eval-episodes 100 --seeds 1 --seed $s --no-progress \
      --out $O/morel-scale0.5-hopper-medium-100k-seed$s &
done
wait
