"""Per-task evaluation of an instruction-following policy: success rate and return over N episodes.

Episode k of a task is reset with seed `seed + k`, whichever of the side-by-side environments runs it, so
results do not depend on how many environments are used. Each environment keeps its own window of the last
W observations (padding before the episode's start is masked, as in training).

Instructions: BabyAI levels draw a new mission each episode and the policy is given that mission. Tasks with
a fixed instruction (Meta-World) are given paraphrases from the task's 'train' or 'held_out' list, cycling
through them by episode.
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import numpy as np

from understudy.types import UnderstudyError


def _stack_window(window: list, W: int) -> tuple[Any, np.ndarray]:
    """Last W observations (oldest first) right-aligned, zero padding in front; mask [W]."""
    pad = W - len(window)

    def stack(*leaves):
        first = np.asarray(leaves[0])
        zeros = [np.zeros_like(first)] * pad
        return np.stack(zeros + [np.asarray(x) for x in leaves])

    obs = jax.tree.map(stack, *window)
    return obs, np.concatenate([np.zeros(pad, np.float32), np.ones(len(window), np.float32)])


def evaluate_task(policy, task: dict, *, episodes: int = 100, seed: int = 0, instructions: str = "train",
                  num_envs: int = 16, env_options: Optional[dict] = None) -> Optional[dict]:
    """Roll `policy` out on one task {env_id, env_options, instructions: {train, held_out} | None}.

    Returns {returns, lengths, successes, mean, std, success_rate, instructions} or None when the task has no
    held-out paraphrases and those were asked for.
    """
    from understudy.envs import make

    if episodes < 1:
        raise UnderstudyError(f"Evaluation needs at least 1 episode per task (got {episodes}).")
    texts = None
    if task.get("instructions"):
        texts = list(task["instructions"].get("held_out" if instructions == "held-out" else "train") or [])
        if not texts:
            return None
    elif instructions == "held-out":
        return None  # instructions come from the environment (BabyAI): nothing is held out
    options = {**(task.get("env_options") or {}), **(env_options or {})}
    W = policy.window
    n = min(num_envs, episodes)
    envs = [make(task["env_id"], seed=seed, **options) for _ in range(n)]
    returns = np.zeros(episodes)
    lengths = np.zeros(episodes, np.int64)
    successes = np.zeros(episodes, bool)
    slots: list[Optional[dict]] = [None] * n
    next_episode = 0

    def start(i: int) -> None:
        nonlocal next_episode
        k = next_episode
        next_episode += 1
        obs, info = envs[i].reset(seed=seed + k)
        sentence = texts[k % len(texts)] if texts else info.get("instruction")
        if not sentence:
            raise UnderstudyError(f"{task['env_id']} gave no instruction and the policy's tasks list none for it.")
        slots[i] = {"episode": k, "window": [obs], "instruction": sentence, "return": 0.0, "length": 0,
                    "success": False}

    try:
        for i in range(n):
            start(i)
        while any(s is not None for s in slots):
            live = [i for i in range(n) if slots[i] is not None]
            # always a batch of n rows (idle slots repeat a live one), so the jitted policy compiles once
            rows = live + [live[0]] * (n - len(live))
            windows = [_stack_window(slots[i]["window"], W) for i in rows]
            obs = jax.tree.map(lambda *xs: np.stack(xs), *[w[0] for w in windows])
            mask = np.stack([w[1] for w in windows])
            actions = policy.act(obs, mask, [slots[i]["instruction"] for i in rows])
            for j, i in enumerate(live):
                slot = slots[i]
                obs_i, reward, terminated, truncated, info = envs[i].step(actions[j])
                slot["return"] += float(reward)
                slot["length"] += 1
                slot["success"] |= bool(info.get("success", False))
                slot["window"] = (slot["window"] + [obs_i])[-W:]
                if terminated or truncated:
                    k = slot["episode"]
                    returns[k], lengths[k], successes[k] = slot["return"], slot["length"], slot["success"]
                    slots[i] = None
                    if next_episode < episodes:
                        start(i)
    finally:
        for env in envs:
            env.close()
    return {"returns": returns.tolist(), "lengths": lengths.tolist(), "successes": successes.tolist(),
            "mean": float(returns.mean()), "std": float(returns.std()), "success_rate": float(successes.mean()),
            "instructions": instructions}


def evaluate_tasks(policy, tasks: list[dict], *, episodes: int = 100, seed: int = 0, instructions: str = "train",
                   num_envs: int = 16, progress: bool = False) -> dict[str, dict]:
    """evaluate_task for every task; {task name: result} (tasks without held-out paraphrases are left out)."""
    results = {}
    for t in tasks:
        r = evaluate_task(policy, t, episodes=episodes, seed=seed, instructions=instructions, num_envs=num_envs)
        if r is not None:
            results[t["name"]] = r
            if progress:
                print(f"  {t['name']:<28} {instructions:<9} success {r['success_rate']:.2f}  return {r['mean']:.2f}")
    return results


def task_for_env(policy, env_id: Optional[str]) -> dict:
    """The policy's task for `env_id` (its own paraphrases and env options), or a new task on that env (the
    instruction then comes from the env: BabyAI's mission, Meta-World's task text). No env: the only task."""
    from understudy.envs import resolve

    if env_id is None:
        if len(policy.tasks) != 1:
            names = ", ".join(t["env_id"] for t in policy.tasks)
            raise UnderstudyError(f"This policy was trained on {len(policy.tasks)} tasks ({names}); pass --env with "
                                  "the one to evaluate.")
        return policy.tasks[0]
    canonical = resolve(env_id)[1]
    for t in policy.tasks:
        if resolve(t["env_id"])[1] == canonical:
            return t
    return {"name": canonical.split("/")[-1], "env_id": canonical, "env_options": {}, "instructions": None}
