"""Evaluation rollouts in Gymnasium vector envs: N episodes per seed, policies batched over seeds and envs."""

from __future__ import annotations

from typing import Callable

import numpy as np

from understudy.types import UnderstudyError

SUCCESS_KEYS = ("success", "is_success")


def evaluate_seeds(act: Callable[[np.ndarray], np.ndarray], env_id: str, *, num_seeds: int = 1, episodes: int = 10,
                   seed: int = 0, env_options: dict | None = None, max_envs: int = 64) -> list[dict]:
    """Runs `episodes` complete episodes for each of `num_seeds` policies.

    act: maps observations [num_seeds, n, *obs_shape] to env actions [num_seeds, n, ...].
    Returns one dict per seed: returns, lengths, mean, std, success_rate (None where the env reports none).
    Sub-env j of seed s runs episodes j, j+n, j+2n, ... so the episode set depends only on `seed`.
    """
    from understudy.envs import make_vector

    if episodes < 1:
        raise UnderstudyError(f"--eval-episodes must be at least 1 (got {episodes}).")
    n = min(episodes, max(1, max_envs // num_seeds))
    quota = np.array([len(range(j, episodes, n)) for j in range(n)] * num_seeds)
    envs = make_vector(env_id, num_seeds * n, seed=seed, **(env_options or {}))
    try:
        obs, _ = envs.reset(seed=seed)
        total = num_seeds * n
        returns = [[] for _ in range(total)]
        lengths = [[] for _ in range(total)]
        successes = [[] for _ in range(total)]
        ep_return = np.zeros(total)
        ep_length = np.zeros(total, np.int64)
        ep_success = np.zeros(total, bool)
        saw_success_key = False
        resetting = np.zeros(total, bool)  # gymnasium's default autoreset: the step after a done is a reset step
        done_count = np.zeros(total, np.int64)
        family = "babyai" if env_id.startswith("BabyAI") else None
        while np.any(done_count < quota):
            stacked = obs.reshape(num_seeds, n, *obs.shape[1:])
            actions = np.asarray(act(stacked))
            actions = actions.reshape(total, *actions.shape[2:])
            obs, reward, terminated, truncated, info = envs.step(actions)
            live = ~resetting & (done_count < quota)
            ep_return[live] += reward[live]
            ep_length[live] += 1
            for key in SUCCESS_KEYS:
                if key in info:
                    saw_success_key = True
                    mask = info.get(f"_{key}", np.ones(total, bool))
                    ep_success |= live & mask & np.asarray(info[key], bool)
            done = (terminated | truncated) & ~resetting
            for i in np.flatnonzero(done & live):
                returns[i].append(float(ep_return[i]))
                lengths[i].append(int(ep_length[i]))
                # BabyAI reports no success flag: a positive reward at termination is success there
                successes[i].append(bool(ep_success[i]) or (family == "babyai" and terminated[i] and reward[i] > 0))
                done_count[i] += 1
            ep_return[done] = 0.0
            ep_length[done] = 0
            ep_success[done] = False
            resetting = done
    finally:
        envs.close()

    results = []
    for s in range(num_seeds):
        # order episodes by index e = j + k*n so results are stable whatever n is
        rets, lens, succ = [], [], []
        for k in range(int(quota.max())):
            for j in range(n):
                i = s * n + j
                if k < len(returns[i]):
                    rets.append(returns[i][k])
                    lens.append(lengths[i][k])
                    succ.append(successes[i][k])
        report_success = saw_success_key or family == "babyai"
        results.append({"returns": rets, "lengths": lens, "mean": float(np.mean(rets)), "std": float(np.std(rets)),
                        "success_rate": float(np.mean(succ)) if report_success else None})
    return results


def evaluate_policy(policy, env_id: str, *, episodes: int = 10, seed: int = 0, env_options: dict | None = None,
                    deterministic: bool = True) -> dict:
    """Evaluates one loaded `Policy` (see understudy.load_policy) over `episodes` episodes."""
    def act(obs):
        return policy(obs[0], deterministic=deterministic)[None]

    return evaluate_seeds(act, env_id, num_seeds=1, episodes=episodes, seed=seed, env_options=env_options)[0]
