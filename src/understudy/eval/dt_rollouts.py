"""Evaluation rollouts for return-conditioned sequence policies (the Decision Transformer): every env keeps its
own window of the last K steps of (observation, action, return-to-go, timestep), and the return-to-go falls by
each reward received.

Layout (as in training, see understudy.algos.dt): right-aligned, newest step last, zero padding in front with
mask 0. At step t the newest position holds o_t, R_t and t with a zero placeholder action; the policy's
action a_t is then written there, and after the env step the window shifts by one and takes
o_{t+1}, R_{t+1} = R_t - r_t / return_scale, t + 1. A new episode starts from R_0 = target_return / return_scale.
Observations are kept raw; the policy normalizes them.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from understudy.eval.rollouts import SUCCESS_KEYS
from understudy.policy import to_env_action
from understudy.types import EnvSpec, UnderstudyError


class HistoryWindows:
    """The last `context` steps of `num_envs` episodes in progress, right-aligned (see the module docstring)."""

    def __init__(self, num_envs: int, context: int, obs_shape: tuple[int, ...], action_dim: int,
                 target_return: float, return_scale: float):
        self.initial_return = float(target_return) / float(return_scale)
        self.return_scale = float(return_scale)
        self.state = np.zeros((num_envs, context, *obs_shape), np.float32)
        self.action = np.zeros((num_envs, context, action_dim), np.float32)
        self.return_to_go = np.zeros((num_envs, context), np.float32)
        self.timestep = np.zeros((num_envs, context), np.int32)
        self.mask = np.zeros((num_envs, context), np.float32)

    def _columns(self):
        return (self.state, self.action, self.return_to_go, self.timestep, self.mask)

    def start(self, rows: np.ndarray, obs: np.ndarray) -> None:
        """New episodes in `rows`, whose first observations are obs[rows]."""
        for column in self._columns():
            column[rows] = 0
        self.state[rows, -1] = obs[rows]
        self.return_to_go[rows, -1] = self.initial_return
        self.mask[rows, -1] = 1.0

    def set_action(self, actions: np.ndarray) -> None:
        """The actions (in [-1, 1]) just taken at the newest step of every env."""
        self.action[:, -1] = actions

    def advance(self, rows: np.ndarray, obs: np.ndarray, rewards: np.ndarray) -> None:
        """One step on in `rows`: shift the window and append obs[rows] with the return-to-go less rewards[rows]."""
        if rows.size == 0:
            return
        last_return, last_time = self.return_to_go[rows, -1], self.timestep[rows, -1]
        for column in self._columns():
            column[rows] = np.roll(column[rows], -1, axis=1)
        self.state[rows, -1] = obs[rows]
        self.action[rows, -1] = 0.0
        self.return_to_go[rows, -1] = last_return - np.asarray(rewards, np.float32)[rows] / self.return_scale
        self.timestep[rows, -1] = last_time + 1
        self.mask[rows, -1] = 1.0

    def windows(self) -> dict:
        return {"state": self.state, "action": self.action, "return_to_go": self.return_to_go,
                "timestep": self.timestep, "mask": self.mask}


def evaluate_history_seeds(act: Callable[[dict], np.ndarray], spec: EnvSpec, *, context: int, target_return: float,
                           return_scale: float, num_seeds: int = 1, episodes: int = 10, seed: int = 0,
                           env_id: str | None = None, env_options: dict | None = None,
                           max_envs: int = 64) -> list[dict]:
    """Runs `episodes` complete episodes for each of `num_seeds` history-conditioned policies.

    act: maps history windows (a dict of arrays with leading axes [num_seeds, n], see HistoryWindows.windows) to
    actions in [-1, 1] [num_seeds, n, A]. Returns, as understudy.eval.rollouts.evaluate_seeds does, one dict per
    seed: returns, lengths, mean, std, success_rate (None where the env reports none). Sub-env j of seed s runs
    episodes j, j+n, j+2n, ... so the episode set depends only on `seed`.
    """
    from understudy.envs import make_vector

    if episodes < 1:
        raise UnderstudyError(f"--eval-episodes must be at least 1 (got {episodes}).")
    if spec.discrete:
        raise UnderstudyError(f"{spec.env_id} has discrete actions; history rollouts here are for continuous ones.")
    env_id = env_id or spec.env_id
    n = min(episodes, max(1, max_envs // num_seeds))
    total = num_seeds * n
    quota = np.array([len(range(j, episodes, n)) for j in range(n)] * num_seeds)
    envs = make_vector(env_id, total, seed=seed, **(env_options or {}))
    try:
        obs, _ = envs.reset(seed=seed)
        obs = np.asarray(obs, np.float32)
        if obs.shape[1:] != tuple(spec.obs_shape):
            raise UnderstudyError(f"{env_id} gives observations of shape {obs.shape[1:]} but the policy reads "
                                  f"{tuple(spec.obs_shape)} ({spec.env_id}). Evaluate it on a matching env.")
        history = HistoryWindows(total, context, tuple(spec.obs_shape), spec.action_dim, target_return, return_scale)
        history.start(np.arange(total), obs)
        returns, lengths, successes = ([[] for _ in range(total)] for _ in range(3))
        ep_return, ep_length = np.zeros(total), np.zeros(total, np.int64)
        ep_success = np.zeros(total, bool)
        saw_success_key = False
        resetting = np.zeros(total, bool)  # gymnasium's default autoreset: the step after a done is a reset step
        done_count = np.zeros(total, np.int64)
        while np.any(done_count < quota):
            windows = {k: v.reshape(num_seeds, n, *v.shape[1:]) for k, v in history.windows().items()}
            actions = np.asarray(act(windows), np.float32).reshape(total, spec.action_dim)
            history.set_action(actions)
            obs, reward, terminated, truncated, info = envs.step(to_env_action(actions, spec))
            obs = np.asarray(obs, np.float32)
            live = ~resetting & (done_count < quota)
            ep_return[live] += reward[live]
            ep_length[live] += 1
            for key in SUCCESS_KEYS:
                if key in info:
                    saw_success_key = True
                    ep_success |= live & info.get(f"_{key}", np.ones(total, bool)) & np.asarray(info[key], bool)
            done = (terminated | truncated) & ~resetting
            for i in np.flatnonzero(done & live):
                returns[i].append(float(ep_return[i]))
                lengths[i].append(int(ep_length[i]))
                successes[i].append(bool(ep_success[i]))
                done_count[i] += 1
            history.start(np.flatnonzero(resetting), obs)  # this step reset them: obs is a first observation
            history.advance(np.flatnonzero(~resetting & ~done), obs, reward)
            ep_return[done], ep_length[done], ep_success[done] = 0.0, 0, False
            resetting = done
    finally:
        envs.close()

    results = []
    for s in range(num_seeds):
        rets, lens, succ = [], [], []
        for k in range(int(quota.max())):  # episode e = j + k n, so results do not depend on n
            for j in range(n):
                i = s * n + j
                if k < len(returns[i]):
                    rets.append(returns[i][k])
                    lens.append(lengths[i][k])
                    succ.append(successes[i][k])
        results.append({"returns": rets, "lengths": lens, "mean": float(np.mean(rets)), "std": float(np.std(rets)),
                        "success_rate": float(np.mean(succ)) if saw_success_key else None})
    return results
