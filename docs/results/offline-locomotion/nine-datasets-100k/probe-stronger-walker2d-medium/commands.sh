#!/bin/bash
# Session 17 probe: walker2d-medium from a stronger snapshot (the rerun's step 250000, 2125 over 10 episodes, about
# half the expert's return), sampled actions, 1M steps; TD3+BC (core 0) and IQL (core 1), 100k updates, seed 0.
cd /work/main
R=/work/offline-loco/sac-Walker2d-v5-medium-s0
D=/work/offline-loco/data-stronger/walker2d-medium
.venv/bin/understudy collect --env Walker2d-v5 --policy experts/Walker2d-v5 --medium-policy $R/snapshots/step_250000 \
    --recipe medium --steps 1000000 --stochastic --seed 0 --no-progress --out $D
.venv/bin/understudy data info $D --json > /work/offline-loco/s17/stronger-info.json
P=/work/offline-loco/s17/probes
taskset -c 0 .venv/bin/understudy train td3bc --dataset $D --steps 100000 --eval-every 25000 --eval-episodes 5 \
    --final-eval-episodes 100 --seed 0 --no-progress --out $P/td3bc-walker2d-stronger-medium-100k-s0 &
taskset -c 1 .venv/bin/understudy train iql --dataset $D --steps 100000 --eval-every 25000 --eval-episodes 5 \
    --final-eval-episodes 100 --seed 0 --normalize-reward-by-returns --no-progress --out $P/iql-walker2d-stronger-medium-100k-s0 &
wait
# then BC (MSE head, the defaults) on the same data, core 0:
taskset -c 0 .venv/bin/understudy train bc --dataset $D --steps 20000 --eval-every 10000 --eval-episodes 5 \
    --final-eval-episodes 100 --seed 0 --no-progress --out $P/bc-walker2d-stronger-medium-20k-s0
