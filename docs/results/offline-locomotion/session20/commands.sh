#!/bin/bash
# Session 20 (2026-12-07), a 2-core AMD EPYC, no GPU. Each run one process pinned to one core (taskset).
cd /work/main
D=/work/offline-loco/data-1m
O=/work/exp/s20
# the datasets, as the study collects them (the same data as sessions 16-19: walker2d-medium 1,003,003 steps,
# return 1047.8 +- 438.9, normalized 23.8; hopper-medium 1,002,621 steps, return 1005.6 +- 165.4, normalized 28.7)
understudy collect --env Walker2d-v5 --policy experts/Walker2d-v5 --recipe medium --steps 1000000 --stochastic --seed 0 --out $D/walker2d-medium
understudy collect --env Hopper-v5 --policy experts/Hopper-v5 --recipe medium --steps 1000000 --stochastic --seed 0 --out $D/hopper-medium
# MOReL on walker2d-medium: the default detector, then max x 0.5 (the hopper setting of session 19)
taskset -c 0 .venv/bin/understudy train morel --dataset $D/walker2d-medium --steps 100000 --eval-every 25000 --eval-episodes 10 \
    --final-eval-episodes 100 --seeds 1 --seed 0 --no-progress --out $O/morel-walker2d-medium-100k &
taskset -c 1 .venv/bin/understudy train morel --dataset $D/walker2d-medium --threshold-scale 0.5 --steps 100000 --eval-every 25000 \
    --eval-episodes 10 --final-eval-episodes 100 --seeds 1 --seed 0 --no-progress --out $O/morel-scale0.5-walker2d-medium-100k &
wait
# MOReL on walker2d-medium with larger dynamics models fitted longer (the 256-256 models were still improving at 20,000)
taskset -c 0 .venv/bin/understudy train morel --dataset $D/walker2d-medium --model-hidden-dims 512 512 --model-steps 100000 \
    --threshold-scale 0.5 --steps 100000 --eval-every 25000 --eval-episodes 10 --final-eval-episodes 100 --seeds 1 --seed 0 \
    --no-progress --out $O/morel-model512-100k-scale0.5-walker2d-medium-100k &
# Decision Transformer, small (the offline-walker study's size), on hopper-medium; the target return is the expert's
taskset -c 1 .venv/bin/understudy train dt --dataset $D/hopper-medium --embed-dim 64 --num-layers 2 --warmup-steps 2000 \
    --steps 20000 --eval-every 5000 --eval-episodes 10 --final-eval-episodes 100 --seeds 1 --seed 0 --no-progress \
    --out $O/dt-small-hopper-medium-20k
# CQL (the defaults but 256-256 networks, as in benchmarks/offline_speed.py) on hopper-medium, 30,000 updates
taskset -c 1 .venv/bin/understudy train cql --dataset $D/hopper-medium --hidden-dims 256 256 --steps 30000 --eval-every 10000 \
    --eval-episodes 10 --final-eval-episodes 100 --seeds 1 --seed 0 --no-progress --out $O/cql-256x2-hopper-medium-30k
wait
# the larger-model run's best checkpoint (step 50,000 on 10 episodes) re-measured on 100 episodes
.venv/bin/understudy eval $O/morel-model512-100k-scale0.5-walker2d-medium-100k/best --env Walker2d-v5 --episodes 100 --seed 0 \
    --json $O/morel512-best-100ep.json
