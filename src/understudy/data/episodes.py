"""A dataset as flat columns with episode boundaries, and the operations that keep episodes whole.

Steps of one episode are stored contiguously; `episode_starts[e]` is the index of episode e's first step,
so step i belongs to the last episode whose start is <= i. `next_observations[i]` is the observation
after step i; within an episode it equals `observations[i + 1]`.

Observations are one array [N, ...] or a dict name -> array [N, ...] (e.g. BabyAI image + direction).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Optional, Sequence, Union

import numpy as np

from understudy.types import UnderstudyError

Obs = Union[np.ndarray, dict]


def map_obs(fn, obs: Obs) -> Obs:
    """Apply `fn` to an observation array, or to each array of a dict observation."""
    return {k: fn(v) for k, v in obs.items()} if isinstance(obs, dict) else fn(obs)


def _obs_dtype(x) -> np.ndarray:
    """Float observations become float32; integer ones (uint8 images, directions) keep their dtype."""
    x = np.asarray(x)
    return x.astype(np.float32, copy=False) if x.dtype.kind == "f" else x


def _action_dtype(x) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind in "iub":
        return x.astype(np.int64, copy=False)
    return x.astype(np.float32, copy=False)


def _concat(parts: list) -> Obs:
    if isinstance(parts[0], dict):
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return np.concatenate(parts)


@dataclasses.dataclass
class Dataset:
    """Flat columns, one row per environment step (N rows), in E contiguous episodes."""

    observations: Obs  # [N, ...] or dict of [N, ...]
    actions: np.ndarray  # [N, ...] float32 (continuous) or int64 (discrete)
    rewards: np.ndarray  # [N] float32
    terminations: np.ndarray  # [N] bool: the episode truly ended (no bootstrapping)
    truncations: np.ndarray  # [N] bool: cut by a time limit (or the end of the data)
    next_observations: Obs  # [N, ...]
    episode_starts: np.ndarray  # [E] int64, first step of each episode, increasing, starts with 0
    task_id: Optional[np.ndarray] = None  # [N] int64, constant within an episode
    instructions: Optional[list[str]] = None  # one text per episode
    metadata: dict = dataclasses.field(default_factory=dict)  # env_id, spec, policy, ref_min/max_score, ...

    def __post_init__(self):
        # Normalise dtypes once so every consumer can rely on them.
        self.observations = map_obs(_obs_dtype, self.observations)
        self.next_observations = map_obs(_obs_dtype, self.next_observations)
        self.actions = _action_dtype(self.actions)
        self.rewards = np.asarray(self.rewards, np.float32).reshape(-1)
        self.terminations = np.asarray(self.terminations, bool).reshape(-1)
        self.truncations = np.asarray(self.truncations, bool).reshape(-1)
        self.episode_starts = np.asarray(self.episode_starts, np.int64).reshape(-1)
        if self.task_id is not None:
            self.task_id = np.asarray(self.task_id, np.int64).reshape(-1)
        if self.instructions is not None:
            self.instructions = [str(s) for s in self.instructions]
        self.metadata = dict(self.metadata or {})

    def __repr__(self) -> str:
        extra = (" with task ids" if self.task_id is not None else "") + (
            " with instructions" if self.instructions is not None else "")
        return (f"Dataset({self.metadata.get('env_id') or 'unknown env'}: {self.num_episodes} episodes, "
                f"{self.num_steps} steps{extra})")

    # -- sizes --------------------------------------------------------------------------------------
    @property
    def num_steps(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def num_episodes(self) -> int:
        return int(self.episode_starts.shape[0])

    @property
    def episode_ends(self) -> np.ndarray:
        """One past the last step of each episode [E]."""
        return np.append(self.episode_starts[1:], self.num_steps).astype(np.int64)

    @property
    def episode_lengths(self) -> np.ndarray:
        return self.episode_ends - self.episode_starts

    def episode_returns(self) -> np.ndarray:
        """Undiscounted return of each episode [E], float64."""
        if self.num_episodes == 0:
            return np.zeros((0,), np.float64)
        return np.add.reduceat(self.rewards.astype(np.float64), self.episode_starts)

    def episode_index(self) -> np.ndarray:
        """For each step, the index of its episode [N]."""
        return np.repeat(np.arange(self.num_episodes), self.episode_lengths)

    # -- episodes -----------------------------------------------------------------------------------
    def episode(self, i: int) -> dict:
        """Episode i, Minari-style: observations has T+1 entries (the last is the final next observation)."""
        if not -self.num_episodes <= i < self.num_episodes:
            raise IndexError(f"episode {i} out of range: the dataset has {self.num_episodes} episodes")
        i = i % self.num_episodes
        s, e = int(self.episode_starts[i]), int(self.episode_ends[i])
        if isinstance(self.observations, dict):
            obs = {k: np.concatenate([v[s:e], self.next_observations[k][e - 1:e]])
                   for k, v in self.observations.items()}
        else:
            obs = np.concatenate([self.observations[s:e], self.next_observations[e - 1:e]])
        ep = {"observations": obs, "actions": self.actions[s:e], "rewards": self.rewards[s:e],
              "terminations": self.terminations[s:e], "truncations": self.truncations[s:e]}
        if self.task_id is not None:
            ep["task_id"] = int(self.task_id[s])
        if self.instructions is not None:
            ep["instruction"] = self.instructions[i]
        return ep

    @staticmethod
    def from_episodes(episodes: Sequence[dict], metadata: Optional[dict] = None) -> "Dataset":
        """Build from Minari-style episode dicts: observations (T+1 entries), actions, rewards,
        terminations, truncations (T entries), optional task_id (int) and instruction (str)."""
        if not episodes:
            raise UnderstudyError("Dataset.from_episodes got no episodes; collect at least one episode.")
        obs, next_obs, lengths = [], [], []
        for j, ep in enumerate(episodes):
            t = len(ep["rewards"])
            o = ep["observations"]
            o_len = len(next(iter(o.values()))) if isinstance(o, dict) else len(o)
            if t == 0 or o_len != t + 1 or len(ep["actions"]) != t:
                raise UnderstudyError(
                    f"Episode {j} has {o_len} observations, {len(ep['actions'])} actions and {t} rewards; an "
                    "episode needs T >= 1 steps with T+1 observations (the last is the final next observation) "
                    "and T actions, rewards, terminations and truncations.")
            obs.append(map_obs(lambda x: np.asarray(x)[:-1], o))
            next_obs.append(map_obs(lambda x: np.asarray(x)[1:], o))
            lengths.append(t)
        has_task = ["task_id" in ep and ep["task_id"] is not None for ep in episodes]
        if any(has_task) and not all(has_task):
            raise UnderstudyError("Some episodes have a task_id and some do not; give every episode a task_id.")
        task_id = (np.concatenate([np.full(n, int(ep["task_id"]), np.int64) for n, ep in zip(lengths, episodes)])
                   if all(has_task) else None)
        has_text = any(ep.get("instruction") is not None for ep in episodes)
        instructions = [ep.get("instruction") or "" for ep in episodes] if has_text else None
        return Dataset(
            observations=_concat(obs), next_observations=_concat(next_obs),
            actions=np.concatenate([np.asarray(ep["actions"]) for ep in episodes]),
            rewards=np.concatenate([np.asarray(ep["rewards"], np.float32).reshape(-1) for ep in episodes]),
            terminations=np.concatenate([np.asarray(ep["terminations"], bool).reshape(-1) for ep in episodes]),
            truncations=np.concatenate([np.asarray(ep["truncations"], bool).reshape(-1) for ep in episodes]),
            episode_starts=np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64),
            task_id=task_id, instructions=instructions, metadata=dict(metadata or {}))

    def select_episodes(self, indices) -> "Dataset":
        """A new dataset holding the given episodes, in the given order."""
        indices = np.asarray(indices, np.int64).reshape(-1)
        if indices.size and (indices.min() < 0 or indices.max() >= self.num_episodes):
            raise UnderstudyError(f"Episode indices must be in [0, {self.num_episodes}); got "
                                  f"{indices.min()}..{indices.max()}.")
        starts, lengths = self.episode_starts[indices], self.episode_lengths[indices]
        rows = (np.concatenate([np.arange(s, s + n) for s, n in zip(starts, lengths)])
                if indices.size else np.zeros((0,), np.int64))
        take = lambda x: x[rows]  # noqa: E731
        return Dataset(
            observations=map_obs(take, self.observations), next_observations=map_obs(take, self.next_observations),
            actions=self.actions[rows], rewards=self.rewards[rows], terminations=self.terminations[rows],
            truncations=self.truncations[rows],
            episode_starts=np.concatenate([[0], np.cumsum(lengths)[:-1]]) if indices.size else np.zeros(0),
            task_id=None if self.task_id is None else self.task_id[rows],
            instructions=None if self.instructions is None else [self.instructions[i] for i in indices],
            metadata=copy.deepcopy(self.metadata))


# -- whole-dataset operations -----------------------------------------------------------------------------
def _structure(obs: Obs) -> Any:
    """Shape/dtype signature of one observation row, to check datasets can be concatenated."""
    return ({k: (v.shape[1:], v.dtype.str) for k, v in sorted(obs.items())} if isinstance(obs, dict)
            else (obs.shape[1:], obs.dtype.str))


def mix_datasets(datasets: Sequence[Dataset]) -> Dataset:
    """Concatenate datasets; task_id of every step becomes the index of its source dataset."""
    if not datasets:
        raise UnderstudyError("mix_datasets needs at least one dataset.")
    first = datasets[0]
    for j, ds in enumerate(datasets[1:], start=1):
        for what, a, b in (("observations", _structure(first.observations), _structure(ds.observations)),
                           ("actions", (first.actions.shape[1:], first.actions.dtype.str),
                            (ds.actions.shape[1:], ds.actions.dtype.str))):
            if a != b:
                raise UnderstudyError(
                    f"Cannot mix datasets: {what} of dataset {j} ({ds.metadata.get('env_id', '?')}) are {b} but "
                    f"dataset 0 ({first.metadata.get('env_id', '?')}) has {a}. Mix only datasets whose "
                    "observation and action spaces match.")
    offsets = np.cumsum([0] + [ds.num_steps for ds in datasets[:-1]])
    has_text = any(ds.instructions is not None for ds in datasets)
    env_ids = [ds.metadata.get("env_id") for ds in datasets]
    metadata = {
        "env_id": env_ids[0] if len(set(env_ids)) == 1 else None,
        "env_ids": env_ids,
        "spec": first.metadata.get("spec"),
        "policy": "mixture",
        "sources": [{"task_id": j, "env_id": ds.metadata.get("env_id"), "policy": ds.metadata.get("policy"),
                     "episodes": ds.num_episodes, "steps": ds.num_steps, "source": ds.metadata.get("source")}
                    for j, ds in enumerate(datasets)],
    }
    for key in ("ref_min_score", "ref_max_score"):  # only meaningful when every source agrees
        values = {ds.metadata.get(key) for ds in datasets}
        if len(values) == 1 and None not in values:
            metadata[key] = values.pop()
    return Dataset(
        observations=_concat([ds.observations for ds in datasets]),
        next_observations=_concat([ds.next_observations for ds in datasets]),
        actions=np.concatenate([ds.actions for ds in datasets]),
        rewards=np.concatenate([ds.rewards for ds in datasets]),
        terminations=np.concatenate([ds.terminations for ds in datasets]),
        truncations=np.concatenate([ds.truncations for ds in datasets]),
        episode_starts=np.concatenate([ds.episode_starts + off for ds, off in zip(datasets, offsets)]),
        task_id=np.concatenate([np.full(ds.num_steps, j, np.int64) for j, ds in enumerate(datasets)]),
        instructions=([s for ds in datasets for s in (ds.instructions or [""] * ds.num_episodes)]
                      if has_text else None),
        metadata=metadata)


def train_val_split(ds: Dataset, val_fraction: float = 0.1, seed: int = 0) -> tuple[Dataset, Dataset]:
    """Split by whole episodes (no episode is cut), deterministically for a given seed.

    Each split keeps the original episode order. With val_fraction > 0 the validation split holds at
    least one episode and the training split at least one.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise UnderstudyError(f"val_fraction must be in [0, 1); got {val_fraction}.")
    n = ds.num_episodes
    n_val = 0 if val_fraction == 0 else max(1, int(round(n * val_fraction)))
    if n_val and n - n_val < 1:
        raise UnderstudyError(
            f"Cannot split {n} episode(s) into training and validation sets by whole episodes; collect more "
            "episodes or set val_fraction=0.")
    order = np.random.default_rng(seed).permutation(n)
    val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
    return ds.select_episodes(train_idx), ds.select_episodes(val_idx)
