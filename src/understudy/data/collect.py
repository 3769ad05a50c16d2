"""Roll a policy out in vector environments and record complete episodes as a Dataset.

Terminations (the episode truly ended) are kept apart from truncations (time limit). Which episodes are
recorded is decided when they start, never when they end, so short episodes are not over-represented:
with `episodes=N` the first N episodes to start are recorded; with `steps=S` sub-environments keep
starting recorded episodes while the steps finished plus those under way fall short of S, and every
recorded episode runs to its end (so the dataset holds at least S steps, in whole episodes).

Speed: each step stores the whole batch (observations, actions, rewards, flags) with one append per
column, and Python looks at single sub-environments only when an episode starts or ends; the flat
dataset is gathered from those batches once, at the end. With a batched policy over enough
sub-environments this runs at about the env's raw step rate (benchmarks/collect_speed.py).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Union

import numpy as np
from gymnasium.vector import AutoresetMode

from understudy.data.episodes import Dataset, map_obs
from understudy.data.validate import CLEAN_ACTION_LABELS
from understudy.types import EnvSpec, UnderstudyError

Policy = Union[str, Callable[[Any], Any]]


@dataclasses.dataclass
class _Episode:
    """Where one recorded episode lies in the step history: sub-env `env`, steps [start, end)."""

    order: int  # how many recorded episodes started before this one
    env: int
    start: int
    instruction: Optional[str]
    end: int = -1  # -1 while under way


def _policy_fn(policy: Policy, envs) -> Callable[[Any], np.ndarray]:
    bind = getattr(policy, "bind", None)
    if not isinstance(policy, str) and callable(bind):  # a policy that reads the simulators (the BabyAI bot)
        return bind(envs)
    if isinstance(policy, str):
        if policy != "random":
            raise UnderstudyError(f"Unknown policy {policy!r}: pass a callable (batch of observations -> batch of "
                                  "actions) or \"random\".")
        return lambda obs: envs.action_space.sample()  # seeded by make_vector
    if not callable(policy):
        raise UnderstudyError(f"policy must be a callable or \"random\", got {type(policy).__name__}.")
    return policy


def _instruction(infos: dict, i: int) -> Optional[str]:
    """The instruction a sub-env reported (BabyAI missions, Meta-World task text), if any."""
    if "instruction" in infos and infos.get("_instruction", np.ones(i + 1, bool))[i]:
        return str(infos["instruction"][i])
    return None


def _noise_fn(action_noise: float, spec: EnvSpec, seed: int) -> Optional[Callable[[np.ndarray], np.ndarray]]:
    """Adds N(0, action_noise^2) in normalized action units ([-1, 1] spans the bounds), clipped to the bounds."""
    if not action_noise:
        return None
    if not np.isfinite(action_noise) or action_noise < 0:
        raise UnderstudyError(f"--action-noise must be a standard deviation >= 0, got {action_noise}.")
    if spec.discrete or spec.action.low is None:
        raise UnderstudyError(f"--action-noise needs a bounded continuous action space, but {spec.env_id} has "
                              f"{'discrete' if spec.discrete else 'unbounded'} actions; drop --action-noise.")
    low, high = spec.action_low, spec.action_high
    scale = (0.5 * action_noise * (high - low)).astype(np.float32)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x6E6F]))  # its own stream

    def add_noise(actions: np.ndarray) -> np.ndarray:
        noisy = actions + scale * rng.standard_normal(actions.shape, dtype=np.float32)
        return np.clip(noisy, low, high).astype(actions.dtype, copy=False)

    return add_noise


def collect(env_id: str, policy: Policy, *, episodes: Optional[int] = None, steps: Optional[int] = None,
            seed: int = 0, num_envs: int = 8, env_options: Optional[dict] = None, policy_name: str = "",
            action_noise: float = 0.0, clean_action_labels: bool = False, progress: bool = True) -> Dataset:
    """Record `episodes` whole episodes (exactly) or at least `steps` steps (whole episodes) of `policy`.

    policy: a callable mapping a batch of observations [num_envs, ...] (numpy; a dict of arrays for dict
        observations) to a batch of actions for the env, or "random" (uniform over the action space), or
        an object with a `bind(envs)` method, called once with the vector env, that returns such a
        callable (for policies that read the simulators, e.g. understudy.instruct.demos.BabyAIBotPolicy).
    num_envs: sub-environments stepped side by side; the policy sees all of them in one call, so more of
        them amortize its cost (at most num_envs - 1 episodes are recorded beyond what `steps` needs).
    env_options: options for `understudy.envs.make` (e.g. obs_noise, task_bit, family options).
    action_noise: std of Gaussian noise added to every action, in normalized units (the action bounds
        span [-1, 1]), then clipped to the bounds; the noisy action is the one executed and recorded.
    clean_action_labels: with action_noise, record the policy's own noise-free action as each step's
        action while the env executes the noisy one (DART-style noise injection, Laskey et al. 2017): the
        states show the expert recovering from perturbations, the labels stay the expert's. Such data is
        for imitation only: its actions did not produce its transitions, so offline RL refuses it.
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
        add_noise = _noise_fn(action_noise, spec, seed)
        if clean_action_labels and add_noise is None:
            raise UnderstudyError("--clean-action-labels records the noise-free action while a noisy one is executed, "
                                  "so it needs --action-noise STD > 0 (e.g. 0.1).")
        mode = AutoresetMode(envs.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP))
        if mode == AutoresetMode.DISABLED:
            raise UnderstudyError(f"collect needs a vector env that autoresets (next_step or same_step); the one "
                                  f"made for {env_id} has autoreset disabled.")
        history = _History()
        recorded = _rollout(envs, act, add_noise, clean_action_labels, num_envs, episodes, steps,
                            mode == AutoresetMode.SAME_STEP, history, _Progress(f"collect {spec.env_id}", target,
                                               "episodes" if episodes is not None else "steps", progress))
    finally:
        envs.close()

    name = policy_name or (policy if isinstance(policy, str) else getattr(policy, "__name__", type(policy).__name__))
    metadata = {"env_id": spec.env_id, "spec": spec.to_dict(), "policy": name, "seed": seed,
                "num_envs": num_envs, "env_options": dict(env_options or {})}
    if action_noise:
        metadata["action_noise"] = float(action_noise)
    if clean_action_labels:
        metadata["action_labels"] = CLEAN_ACTION_LABELS
    ds = history.dataset(sorted(recorded, key=lambda e: e.order), spec.task_id, metadata)
    if policy == "random" and not action_noise:
        ds.metadata["ref_min_score"] = float(ds.episode_returns().mean())
    return ds


class _History:
    """Every step of every sub-env, one batch per step; observations hold T+1 batches (the reset first).

    In next_step autoreset mode, observations[t + 1][i] is the final observation when sub-env i ended an
    episode at step t. In same_step mode it is already the next episode's first observation, so the
    final observation is kept aside in `finals[(t, i)]`.
    """

    def __init__(self):
        self.observations: list = []
        self.actions: list = []
        self.rewards: list = []
        self.terminations: list = []
        self.truncations: list = []
        self.finals: dict[tuple[int, int], Any] = {}

    @property
    def num_steps(self) -> int:
        return len(self.actions)

    def dataset(self, episodes: list[_Episode], task_id: Optional[int], metadata: dict) -> Dataset:
        if not episodes:
            raise UnderstudyError("collect recorded no episode; ask for at least one episode or step.")
        lengths = np.array([e.end - e.start for e in episodes])
        t = np.concatenate([np.arange(e.start, e.end) for e in episodes])
        i = np.repeat([e.env for e in episodes], lengths)

        def stacked(batches):
            first = batches[0]
            if isinstance(first, dict):
                return {k: np.stack([b[k] for b in batches]) for k in first}
            return np.stack(batches)

        obs = stacked(self.observations)
        next_obs = map_obs(lambda x: x[t + 1, i], obs)
        last_rows = np.cumsum(lengths) - 1
        for row, e in zip(last_rows, episodes):
            final = self.finals.get((e.end - 1, e.env))
            if final is not None:
                if isinstance(next_obs, dict):
                    for k in next_obs:
                        next_obs[k][row] = final[k]
                else:
                    next_obs[row] = final
        texts = [e.instruction for e in episodes]
        return Dataset(observations=map_obs(lambda x: x[t, i], obs), next_observations=next_obs,
                       actions=np.stack(self.actions)[t, i], rewards=np.stack(self.rewards)[t, i],
                       terminations=np.stack(self.terminations)[t, i], truncations=np.stack(self.truncations)[t, i],
                       episode_starts=np.concatenate([[0], np.cumsum(lengths)[:-1]]),
                       task_id=None if task_id is None else np.full(int(lengths.sum()), task_id, np.int64),
                       instructions=[s or "" for s in texts] if any(s is not None for s in texts) else None,
                       metadata=metadata)


def _rollout(envs, act, add_noise, clean_action_labels: bool, n: int, episodes: Optional[int],
             steps: Optional[int], same_step: bool, history: _History, bar: "_Progress") -> list[_Episode]:
    recording: list[Optional[_Episode]] = [None] * n
    done_episodes: list[_Episode] = []
    started = 0
    finished_steps = 0

    def want_more() -> bool:
        if episodes is not None:
            return started < episodes
        under_way = sum(history.num_steps - r.start for r in recording if r is not None)
        return finished_steps + under_way < steps

    def maybe_start(i: int, infos) -> None:
        """Sub-env i's observation at the current step starts an episode: record it if more are wanted."""
        nonlocal started
        if want_more():
            recording[i] = _Episode(order=started, env=i, start=history.num_steps, instruction=_instruction(infos, i))
            started += 1

    obs, infos = envs.reset()
    history.observations.append(obs)
    for i in range(n):
        maybe_start(i, infos)
    resetting = np.zeros(n, bool)  # next_step autoreset: this sub-env's step only resets it
    while any(r is not None for r in recording) or want_more():
        actions = np.array(act(obs))
        if actions.shape[:1] != (n,):
            raise UnderstudyError(f"The policy returned actions of shape {actions.shape} for {n} observations; it "
                                  f"must return one action per observation (leading axis {n}).")
        executed = add_noise(actions) if add_noise is not None else actions
        obs, rewards, terms, truncs, infos = envs.step(executed)
        t = history.num_steps  # the index of this step
        history.observations.append(obs)
        history.actions.append(actions if clean_action_labels else executed)
        history.rewards.append(rewards)
        history.terminations.append(terms)
        history.truncations.append(truncs)
        was_resetting = resetting
        done = (terms | truncs) & ~was_resetting
        resetting = done if not same_step else resetting
        for i in np.flatnonzero(was_resetting):  # this step only reset sub-env i: a new episode starts
            maybe_start(i, infos)
        for i in np.flatnonzero(done):
            rec = recording[i]
            if rec is not None:
                rec.end = t + 1
                done_episodes.append(rec)
                finished_steps += rec.end - rec.start
                recording[i] = None
                bar.advance(1 if episodes is not None else rec.end - rec.start)
                if same_step:
                    history.finals[(t, int(i))] = map_obs(np.array, infos["final_obs"][i])
            if same_step:
                maybe_start(i, infos)
    bar.close()
    return done_episodes


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
