"""Dataset collection speed against the env's raw step rate (issue: collection runs at >= half of it).

    python benchmarks/collect_speed.py [--envs HalfCheetah-v5 Hopper-v5] [--steps 5000] [--rounds 3]

raw:    a plain gymnasium loop, one env from gymnasium.make, uniform random actions.
random: understudy's collect(..., "random") as the `random` recipe runs it.
policy: collect with a SAC-shaped policy export (256-256 tanh-gaussian, random weights) loaded as the
        recipes load it (one batched policy call per step over `--num-envs` sub-environments).
The three are measured in turns, `--rounds` times each, so a busy machine slows them alike; each figure
is the median over rounds of recorded steps per second. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np

from understudy import envs
from understudy.checkpoint import export_policy
from understudy.data import collect
from understudy.data.recipes import batched_policy
from understudy.nets.heads import head_config, make_head


def raw_rate(env_id: str, steps: int, seed: int) -> float:
    env = gym.make(env_id)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    start = time.perf_counter()
    for _ in range(steps):
        _, _, term, trunc, _ = env.step(env.action_space.sample())
        if term or trunc:
            env.reset()
    rate = steps / (time.perf_counter() - start)
    env.close()
    return rate


def collect_rate(env_id: str, policy, steps: int, seed: int, num_envs: int) -> float:
    start = time.perf_counter()
    ds = collect(env_id, policy, steps=steps, seed=seed, num_envs=num_envs, progress=False)
    return ds.num_steps / (time.perf_counter() - start)


def sac_shaped_export(env_id: str, directory: Path) -> Path:
    spec = envs.make_spec(env_id)
    cfg = head_config("tanh-gaussian", action_dim=spec.action_dim, hidden_dims=(256, 256))
    params = make_head(**cfg).init(jax.random.PRNGKey(0), jnp.zeros((1, spec.obs_dim)))
    return export_policy(directory / env_id, head_config=cfg, params=params, spec=spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=["HalfCheetah-v5", "Hopper-v5"])
    parser.add_argument("--steps", type=int, default=5000, help="steps per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--num-envs", type=int, default=16, help="sub-environments in collect (the recipes' default)")
    args = parser.parse_args()

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for env_id in args.envs:
            act = batched_policy(sac_shaped_export(env_id, Path(tmp)), env_id, seed=0, stochastic=False)
            collect_rate(env_id, act, 200, 0, args.num_envs)  # compile the policy before timing
            rates = {"raw": [], "random": [], "policy": []}
            for r in range(args.rounds):
                rates["raw"].append(raw_rate(env_id, args.steps, r))
                rates["random"].append(collect_rate(env_id, "random", args.steps, r, args.num_envs))
                rates["policy"].append(collect_rate(env_id, act, args.steps, r, args.num_envs))
            med = {k: float(np.median(v)) for k, v in rates.items()}
            results[env_id] = {f"{k}_steps_per_s": round(v, 1) for k, v in med.items()}
            results[env_id]["random_ratio"] = round(med["random"] / med["raw"], 3)
            results[env_id]["policy_ratio"] = round(med["policy"] / med["raw"], 3)
            print(f"{env_id}: raw {med['raw']:.0f} steps/s, collect random {med['random']:.0f} "
                  f"({results[env_id]['random_ratio']:.2f}x raw), collect with a 256-256 policy "
                  f"{med['policy']:.0f} ({results[env_id]['policy_ratio']:.2f}x raw)", flush=True)
    summary = {"benchmark": "collect_speed", "steps": args.steps, "rounds": args.rounds, "num_envs": args.num_envs,
               "envs": results, "min_ratio": min(min(r["random_ratio"], r["policy_ratio"]) for r in results.values())}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
