#!/bin/bash
# Session 18: the stronger walker2d-medium lead (TD3+BC 36.1 < BC 48.2, seed 0 only) over 3 seeds, core 1.
cd /work/main
D=/work/offline-loco/data-stronger/walker2d-medium
P=/work/offline-loco/s18
taskset -c 1 .venv/bin/understudy train td3bc --dataset $D --steps 100000 --eval-every 25000 --eval-episodes 10 \
    --final-eval-episodes 100 --seeds 3 --seed 0 --no-progress --out $P/td3bc-stronger-100k-3seeds
taskset -c 1 .venv/bin/understudy train bc --dataset $D --steps 20000 --eval-every 10000 --eval-episodes 10 \
    --final-eval-episodes 100 --seeds 3 --seed 0 --no-progress --out $P/bc-stronger-20k-3seeds
