"""One peer measurement for online_speed.py, run inside benchmarks/.venv-peers (never imports understudy).

    python _online_peer.py --lib {sb3,sbx} --algo {sac,td3} --env HalfCheetah-v5 --warmup W --skip S --steps N

Trains with learning_starts = W, 256-256 networks, batch 256, one gradient update per env step, and
prints one JSON line: steps/s over env steps W+S .. W+S+N (each step with its update), timed by a
callback right after each env step. SB3 runs torch at its faster thread count (see fastest_torch_threads).
"""

from __future__ import annotations

import argparse
import json
import time


def fastest_torch_threads() -> int:
    """Sets torch to the thread count (1 or all cores) that multiplies 256x256 matrices fastest right now.

    On a shared 2-core machine torch's multi-threaded kernels can run 10x slower than one thread (threads
    wait on each other), so the peer gets whichever is better at the moment it starts."""
    import os

    import torch

    best, best_time = 1, float("inf")
    x, w = torch.randn(256, 256), torch.randn(256, 256)
    for n in sorted({1, os.cpu_count() or 1}):
        torch.set_num_threads(n)
        for _ in range(20):
            x @ w
        start = time.perf_counter()
        for _ in range(500):
            x @ w
        elapsed = time.perf_counter() - start
        if elapsed < best_time:
            best, best_time = n, elapsed
    torch.set_num_threads(best)
    return best


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--lib", choices=("sb3", "sbx"), required=True)
    p.add_argument("--algo", choices=("sac", "td3"), required=True)
    p.add_argument("--env", default="HalfCheetah-v5")
    p.add_argument("--warmup", type=int, required=True)
    p.add_argument("--skip", type=int, required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    import gymnasium as gym
    import numpy as np
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.noise import NormalActionNoise

    if a.lib == "sb3":
        from stable_baselines3 import SAC, TD3
    else:
        from sbx import SAC, TD3

    start, stop = a.warmup + a.skip, a.warmup + a.skip + a.steps

    class Clock(BaseCallback):
        def __init__(self):
            super().__init__()
            self.times = {}

        def _on_step(self) -> bool:
            if self.num_timesteps in (start, stop):
                self.times[self.num_timesteps] = time.perf_counter()
            return True

    threads = fastest_torch_threads() if a.lib == "sb3" else None
    env = gym.make(a.env)
    common = dict(learning_starts=a.warmup, batch_size=256, buffer_size=stop, train_freq=1, gradient_steps=1,
                  learning_rate=3e-4, gamma=0.99, tau=0.005, policy_kwargs={"net_arch": [256, 256]}, seed=a.seed,
                  verbose=0)
    if a.lib == "sb3":
        common["device"] = "cpu"
    if a.algo == "sac":
        model = SAC("MlpPolicy", env, **common)
    else:
        dim = env.action_space.shape[0]
        model = TD3("MlpPolicy", env, policy_delay=2, target_policy_noise=0.2, target_noise_clip=0.5,
                    action_noise=NormalActionNoise(np.zeros(dim), 0.1 * np.ones(dim)), **common)
    clock = Clock()
    model.learn(total_timesteps=stop, callback=clock)
    rate = a.steps / (clock.times[stop] - clock.times[start])
    print(json.dumps({"lib": a.lib, "algo": a.algo, "steps_per_s": rate, "torch_threads": threads}))


if __name__ == "__main__":
    main()
