"""What a trained agent actually does: roll a policy out, caption every episode with the rule-based captioner,
and count how often each behaviour category occurs. Success is the environment's own goal (info["success"])."""

from __future__ import annotations

from typing import Callable

import numpy as np


def rollout_episodes(act: Callable[[np.ndarray], object], env_id: str, *, episodes: int, seed: int) -> list[dict]:
    """`episodes` episodes of make(env_id); episode k is reset with seed + k. Each: states [T+1, D], actions,
    env_return, success."""
    from understudy.envs import make

    env = make(env_id, seed=seed)
    out = []
    try:
        for k in range(episodes):
            obs, _ = env.reset(seed=seed + k)
            states, actions, total, success, done = [obs], [], 0.0, False, False
            while not done:
                a = act(obs)
                obs, r, terminated, truncated, info = env.step(a)
                states.append(obs), actions.append(a)
                total, success, done = total + float(r), success or bool(info.get("success")), terminated or truncated
            out.append({"states": np.asarray(states, np.float32), "actions": np.asarray(actions),
                        "env_return": total, "success": success})
    finally:
        env.close()
    return out


def behaviour_rates(policy, env_id: str, captioner, *, episodes: int = 100, seed: int = 0) -> dict:
    """Category shares of a policy's episodes (deterministic actions), with success rate and returns."""
    rolled = rollout_episodes(lambda o: policy(o, deterministic=True), env_id, episodes=episodes, seed=seed)
    labels = np.array([captioner.label(ep["states"]) for ep in rolled])
    counts = np.bincount(labels, minlength=len(captioner.categories))
    returns = np.array([ep["env_return"] for ep in rolled])
    return {"episodes": episodes, "seed": seed,
            "counts": {c: int(n) for c, n in zip(captioner.categories, counts)},
            "rates": {c: float(n) / episodes for c, n in zip(captioner.categories, counts)},
            "success_rate": float(np.mean([ep["success"] for ep in rolled])),
            "env_return_mean": float(returns.mean()), "env_return_std": float(returns.std())}
