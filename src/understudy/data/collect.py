"""Roll a policy out in vector environments and record complete episodes as a Dataset.

Terminations (the episode truly ended) are kept apart from truncations (time limit). Which episodes are
recorded is decided when they start, never when they end, so short episodes are not over-represented:
with `episodes=N` the first N episodes to start are recorded; with `steps=S` sub-environments keep
starting recorded episodes while the steps finished plus those under way fall short of S, and every
recorded episode runs to its end (so the dataset holds at least S steps, in whole episodes).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Union

import numpy as np
from gymnasium.vector import AutoresetMode

from understudy.data.episodes import Dataset, map_obs
from understudy.types import UnderstudyError

Policy = Union[str, Callable[[Any], Any]]


@dataclasses.dataclass
class _Recording:
    """One episode under way in one sub-environment."""

    order: int  # how many recorded episodes started before this one
    observations: list
    instruction: Optional[str]
    actions: list = dataclasses.field(default_factory=list)
    rewards: list = dataclasses.field(default_factory=list)
    terminations: list = dataclasses.field(default_factory=list)
    truncations: list = dataclasses.field(default_factory=list)

    def as_episode(self, task_id: Optional[int]) -> dict:
        first = self.observations[0]
        obs = ({k: np.stack([o[k] for o in self.observations]) for k in first} if isinstance(first, dict)
               else np.stack(self.observations))
        ep = {"observations": obs, "actions": np.stack(self.actions), "rewards": np.asarray(self.rewards),
              "terminations": np.asarray(self.terminations), "truncations": np.asarray(self.truncations)}
        if self.instruction is not None:
            ep["instruction"] = self.instruction
        if task_id is not None:
            ep["task_id"] = task_id
        return ep


def _policy_fn(policy: Policy, envs) -> Callable[[Any], np.ndarray]:
    if isinstance(policy, str):
        if policy != "random":
            raise UnderstudyError(f"Unknown policy {policy!r}: pass a callable (batch of observations -> batch of "
                                  "actions) or \"random\".")
        return lambda obs: envs.action_space.sample()  # seeded by make_vector
    if not callable(policy):
        raise UnderstudyError(f"policy must be a callable or \"random\", got {type(policy).__name__}.")
    return policy


def _row(obs, i: int):
    return map_obs(lambda x: np.array(x[i]), obs)


def _instruction(infos: dict, i: int) -> Optional[str]:
    """The instruction a sub-env reported (BabyAI missions, Meta-World task text), if any."""
    if "instruction" in infos and infos.get("_instruction", np.ones(i + 1, bool))[i]:
        return str(infos["instruction"][i])
    return None


def collect(env_id: str, policy: Policy, *, episodes: Optional[int] = None, steps: Optional[int] = None,
            seed: int = 0, num_envs: int = 8, env_options: Optional[dict] = None, policy_name: str = "",
            progress: bool = True) -> Dataset:
    """Record `episodes` whole episodes (exactly) or at least `steps` steps (whole episodes) of `policy`.

    policy: a callable mapping a batch of observations [num_envs, ...] (numpy; a dict of arrays for dict
        observations) to a batch of actions for the env, or "random".
    env_options: options for `understudy.envs.make` (e.g. obs_noise, task_bit, family options).
    """
    from understudy.envs import env_spec, make_vector

    if (episodes is None) == (steps is None):
        raise UnderstudyError("Give exactly one of --episodes N or --steps N to collect.")
    target = episodes if episodes is not None else steps
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)) or target < 1:
        raise UnderstudyError(f"--episodes/--steps must be a positive integer, got {target!r}.")
    num_envs = int(min(num_envs, episodes)) if episodes is not None else int(num_envs)
    envs = make_vector(env_id, num_envs, seed=seed, **(env_options or {}))
    try:
        spec = env_spec(envs)
        act = _policy_fn(policy, envs)
        mode = AutoresetMode(envs.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP))
        if mode == AutoresetMode.DISABLED:
            raise UnderstudyError(f"collect needs a vector env that autoresets (next_step or same_step); the one "
                                  f"made for {env_id} has autoreset disabled.")
        same_step = mode == AutoresetMode.SAME_STEP
        finished = _rollout(envs, act, num_envs, episodes, steps, same_step, progress,
                            label=f"collect {spec.env_id}")
    finally:
        envs.close()

    name = policy_name or (policy if isinstance(policy, str) else getattr(policy, "__name__", type(policy).__name__))
    metadata = {"env_id": spec.env_id, "spec": spec.to_dict(), "policy": name, "seed": seed,
                "num_envs": num_envs, "env_options": dict(env_options or {})}
    ds = Dataset.from_episodes([r.as_episode(spec.task_id) for r in sorted(finished, key=lambda r: r.order)],
                               metadata)
    if policy == "random":
        ds.metadata["ref_min_score"] = float(ds.episode_returns().mean())
    return ds


def _rollout(envs, act, n: int, episodes: Optional[int], steps: Optional[int], same_step: bool,
             progress: bool, label: str) -> list[_Recording]:
    recording: list[Optional[_Recording]] = [None] * n
    finished: list[_Recording] = []
    started = 0
    finished_steps = 0

    def want_more() -> bool:
        if episodes is not None:
            return started < episodes
        under_way = sum(len(r.rewards) for r in recording if r is not None)
        return finished_steps + under_way < steps

    def maybe_start(i: int, obs, infos) -> None:
        nonlocal started
        if recording[i] is None and want_more():
            recording[i] = _Recording(order=started, observations=[_row(obs, i)], instruction=_instruction(infos, i))
            started += 1

    bar = _Progress(label, episodes if episodes is not None else steps, "episodes" if episodes else "steps",
                    progress)
    obs, infos = envs.reset()
    for i in range(n):
        maybe_start(i, obs, infos)
    resetting = np.zeros(n, bool)  # next_step autoreset: this sub-env's next step() only resets it
    while any(r is not None for r in recording) or want_more():
        actions = np.asarray(act(obs))
        if actions.shape[:1] != (n,):
            raise UnderstudyError(f"The policy returned actions of shape {actions.shape} for {n} observations; it "
                                  f"must return one action per observation (leading axis {n}).")
        next_obs, rewards, terms, truncs, infos = envs.step(actions)
        for i in range(n):
            if resetting[i]:  # this step only reset sub-env i: its observation starts a new episode
                resetting[i] = False
                maybe_start(i, next_obs, infos)
                continue
            rec = recording[i]
            done = bool(terms[i] or truncs[i])
            if rec is not None:
                final = infos["final_obs"][i] if (same_step and done) else _row(next_obs, i)
                rec.observations.append(map_obs(np.array, final))
                rec.actions.append(actions[i])
                rec.rewards.append(float(rewards[i]))
                rec.terminations.append(bool(terms[i]))
                rec.truncations.append(bool(truncs[i]))
            if done:
                if rec is not None:
                    finished.append(rec)
                    finished_steps += len(rec.rewards)
                    recording[i] = None
                    bar.advance(1 if episodes is not None else len(rec.rewards))
                if same_step:
                    maybe_start(i, next_obs, infos)
                else:
                    resetting[i] = True
        obs = next_obs
    bar.close()
    return finished


class _Progress:
    """A rich progress bar, or nothing when progress is off."""

    def __init__(self, label: str, total: int, unit: str, enabled: bool):
        self._bar = None
        if enabled:
            from rich.progress import Progress

            self._bar = Progress(transient=True)
            self._task = self._bar.add_task(f"{label} ({unit})", total=total)
            self._bar.start()

    def advance(self, amount: int) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, amount)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
