#!/bin/bash
# Session 19: where TD3+BC's gap to BC on the stronger walker2d-medium comes from. One process per core.
cd /work/main
D=/work/offline-loco/data-stronger/walker2d-medium
P=/work/offline-loco/s19
# Core 0: TD3+BC's own setup with the Q term switched off (alpha 0: pure behaviour cloning of a deterministic actor).
taskset -c 0 .venv/bin/understudy train td3bc --dataset $D --steps 100000 --eval-every 25000 --eval-episodes 10 \
    --final-eval-episodes 100 --seeds 1 --seed 0 --alpha 0 --no-progress --out $P/td3bc-alpha0-100k
# Core 0, next: BC at TD3+BC's budget of 100,000 updates (session 18 ran BC for 20,000).
taskset -c 0 .venv/bin/understudy train bc --dataset $D --steps 100000 --eval-every 25000 --eval-episodes 10 \
    --final-eval-episodes 100 --seeds 3 --seed 0 --no-progress --out $P/bc-100k-3seeds
# Core 1, alongside: d3rlpy 2.8.1's TD3+BC on the same data (a venv with d3rlpy 2.8.1, torch 2.13 cpu, gymnasium,
# mujoco). The data go to an .npz first with our package: python export_npz.py $D walker2d-stronger-medium.npz
cd d3rlpy-td3bc   # this folder's copies of the two scripts
taskset -c 1 python d3rlpy_td3bc.py walker2d-stronger-medium.npz --steps 100000 --eval-every 25000 --seed 0 \
    > seed0.jsonl
