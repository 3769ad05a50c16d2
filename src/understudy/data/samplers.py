"""On-device samplers over a flat dataset: uniform transitions and padded windows of consecutive steps.

A `DeviceDataset` holds every column as one device array with a leading step axis N, plus, for each step,
the index of the first step of its episode. Samplers are pure functions of (data, key), so they jit,
run inside `lax.scan` (K updates per call, sampling on device) and `vmap` over a leading seed axis
(vmap the key; the dataset itself can stay unbatched with `in_axes=None`).

Observations may be an array or a pytree of arrays (e.g. dict observations); every leaf has leading axis N.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from understudy.types import Batch, UnderstudyError

_REQUIRED = ("observations", "actions", "rewards", "terminations", "next_observations")


@struct.dataclass
class DeviceDataset:
    """Flat columns on device. All leaves share the leading axis N (number of steps).

    episode_start_index[i] is the index of the first step of the episode that step i belongs to; window
    sampling uses it so that a window never reaches back into the previous episode.
    """

    observations: Any  # [N, ...] (array or pytree of arrays)
    actions: Any  # [N, ...]
    rewards: jax.Array  # [N] float32
    terminations: jax.Array  # [N] float32, 1.0 where the episode truly ended
    next_observations: Any  # [N, ...]
    episode_start_index: jax.Array  # [N] int32
    task_id: Optional[jax.Array] = None  # [N] int32, multi-task datasets only

    @property
    def num_steps(self) -> int:
        return int(self.rewards.shape[0])


def _column(columns: Any, name: str):
    """Read a column from a mapping or from an object's attribute (so an episodes object also works)."""
    if isinstance(columns, Mapping):
        return columns.get(name)
    return getattr(columns, name, None)


def episode_start_index(episode_starts: np.ndarray, num_steps: int) -> np.ndarray:
    """For each step, the first step of its episode. `episode_starts` are the sorted first steps [E]."""
    starts = np.asarray(episode_starts, dtype=np.int64).reshape(-1)
    if num_steps == 0:
        return np.zeros((0,), np.int32)
    if starts.size == 0 or starts[0] != 0:
        raise UnderstudyError(
            f"episode_starts must begin with 0 (the first step starts an episode); got {starts[:5].tolist()}. "
            "Pass the index of the first step of every episode, in order, starting with 0.")
    if np.any(np.diff(starts) <= 0) or starts[-1] >= num_steps:
        raise UnderstudyError(
            f"episode_starts must be strictly increasing and below the number of steps ({num_steps}); got "
            f"{starts[:10].tolist()}{' ...' if starts.size > 10 else ''}. Pass each episode's first step index once.")
    which = np.searchsorted(starts, np.arange(num_steps), side="right") - 1
    return starts[which].astype(np.int32)


def to_device(columns: Any, episode_starts: Optional[np.ndarray] = None) -> DeviceDataset:
    """Build a DeviceDataset from plain arrays.

    columns: a mapping (or object with attributes) holding `observations`, `actions`, `rewards`,
        `terminations`, `next_observations`, `episode_starts` (int [E], first step of each contiguous
        episode) and optionally `task_id`. `episode_starts` may instead be passed as an argument.
    Rewards and terminations become float32; other dtypes are kept (uint8 images stay uint8).
    """
    missing = [k for k in _REQUIRED if _column(columns, k) is None]
    if missing:
        raise UnderstudyError(
            f"The dataset is missing column(s) {missing}; samplers need {list(_REQUIRED)} plus episode_starts. "
            "Load the dataset with understudy.data (which fills every column) or add the missing arrays.")
    if episode_starts is None:
        episode_starts = _column(columns, "episode_starts")
    if episode_starts is None:
        raise UnderstudyError("The dataset has no `episode_starts` (first step index of each episode); window "
                              "sampling needs episode boundaries. Pass episode_starts=... to to_device.")
    rewards = np.asarray(_column(columns, "rewards"), np.float32).reshape(-1)
    n = rewards.shape[0]
    if n == 0:
        raise UnderstudyError("The dataset has no steps, so there is nothing to sample. Check the dataset path "
                              "or the filter that selected its episodes.")
    cols = {k: jax.tree_util.tree_map(np.asarray, _column(columns, k)) for k in _REQUIRED}
    task_id = _column(columns, "task_id")
    if task_id is not None:
        cols["task_id"] = np.asarray(task_id, np.int32).reshape(-1)
    for name, value in cols.items():
        for leaf in jax.tree_util.tree_leaves(value):
            if leaf.shape[:1] != (n,):
                raise UnderstudyError(
                    f"Column `{name}` has leading size {leaf.shape[:1]} but `rewards` has {n} steps; every column "
                    "must have one row per step. Check how the dataset was built or converted.")
    return DeviceDataset(
        observations=jax.tree_util.tree_map(jnp.asarray, cols["observations"]),
        actions=jnp.asarray(cols["actions"]),
        rewards=jnp.asarray(rewards),
        terminations=jnp.asarray(np.asarray(cols["terminations"], np.float32).reshape(-1)),
        next_observations=jax.tree_util.tree_map(jnp.asarray, cols["next_observations"]),
        episode_start_index=jnp.asarray(episode_start_index(episode_starts, n)),
        task_id=None if task_id is None else jnp.asarray(cols["task_id"]),
    )


def _take(tree: Any, idx: jax.Array) -> Any:
    return jax.tree_util.tree_map(lambda x: jnp.take(x, idx, axis=0), tree)


def sample_transitions(data: DeviceDataset, key: jax.Array, batch_size: int) -> Batch:
    """`batch_size` transitions drawn uniformly (with replacement) over all N steps; leading axis [B]."""
    n = data.rewards.shape[0]
    idx = jax.random.randint(key, (batch_size,), 0, n)
    return Batch(observations=_take(data.observations, idx), actions=jnp.take(data.actions, idx, axis=0),
                 rewards=data.rewards[idx], terminations=data.terminations[idx],
                 next_observations=_take(data.next_observations, idx),
                 task_id=None if data.task_id is None else data.task_id[idx])


def sample_windows(data: DeviceDataset, key: jax.Array, batch_size: int, window: int) -> Batch:
    """Windows of `window` consecutive steps ending at a uniformly chosen step t: steps t-W+1 .. t.

    Leading axes [B, W]; the last position is always step t. Positions before t's episode start are
    padding: every field there is ZERO (not a repeat of the first step, so padding can never be mistaken
    for data) and `mask` is 0.0; real steps have mask 1.0. Padding never contains steps of the previous
    episode. Models must use `mask` (attention mask / loss weights).
    """
    n = data.rewards.shape[0]
    t = jax.random.randint(key, (batch_size,), 0, n)
    idx = t[:, None] + jnp.arange(1 - window, 1)[None, :]  # [B, W]: t-W+1 .. t
    valid = idx >= data.episode_start_index[t][:, None]
    safe = jnp.where(valid, idx, t[:, None])  # gather something in-bounds, then zero it

    def gather(x):
        g = jnp.take(x, safe, axis=0)
        m = valid.reshape(valid.shape + (1,) * (g.ndim - 2))
        return jnp.where(m, g, jnp.zeros((), g.dtype))

    gather_tree = lambda tree: jax.tree_util.tree_map(gather, tree)  # noqa: E731
    return Batch(observations=gather_tree(data.observations), actions=gather(data.actions),
                 rewards=gather(data.rewards), terminations=gather(data.terminations),
                 next_observations=gather_tree(data.next_observations), mask=valid.astype(jnp.float32),
                 task_id=None if data.task_id is None else gather(data.task_id))
