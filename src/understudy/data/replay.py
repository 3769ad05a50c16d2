"""A device-resident ring buffer of transitions, as a plain pytree.

Everything, including the write pointer and fill level, is an array, so the buffer jits, lives inside
`lax.scan`, vmaps over a leading seed axis (build one per seed with `jax.vmap(lambda _: replay_init(...))`
or `replay_init_batched`), and checkpoints like any other array tree (no Python state to lose on resume).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import struct

from understudy.types import Batch, UnderstudyError


@struct.dataclass
class ReplayBuffer:
    observations: jax.Array  # [C, *obs_shape]
    actions: jax.Array  # [C, *action_shape]
    rewards: jax.Array  # [C] float32
    terminations: jax.Array  # [C] float32
    next_observations: jax.Array  # [C, *obs_shape]
    ptr: jax.Array  # int32 scalar: the next slot to write
    size: jax.Array  # int32 scalar: number of filled slots (<= C)

    @property
    def capacity(self) -> int:
        return int(self.rewards.shape[-1])


def replay_init(capacity: int, obs_shape: Sequence[int], action_shape: Sequence[int],
                action_dtype=jnp.float32, obs_dtype=jnp.float32) -> ReplayBuffer:
    """An empty buffer of `capacity` transitions (zeros everywhere, ptr = size = 0)."""
    if capacity <= 0:
        raise UnderstudyError(f"Replay capacity must be positive; got {capacity}. Set a buffer size >= 1.")
    obs_shape, action_shape = tuple(obs_shape), tuple(action_shape)
    return ReplayBuffer(
        observations=jnp.zeros((capacity,) + obs_shape, obs_dtype),
        actions=jnp.zeros((capacity,) + action_shape, action_dtype),
        rewards=jnp.zeros((capacity,), jnp.float32),
        terminations=jnp.zeros((capacity,), jnp.float32),
        next_observations=jnp.zeros((capacity,) + obs_shape, obs_dtype),
        ptr=jnp.zeros((), jnp.int32),
        size=jnp.zeros((), jnp.int32),
    )


def replay_init_batched(num_seeds: int, capacity: int, obs_shape: Sequence[int], action_shape: Sequence[int],
                        action_dtype=jnp.float32, obs_dtype=jnp.float32) -> ReplayBuffer:
    """`num_seeds` independent empty buffers stacked on a leading seed axis (for vmapped training)."""
    one = replay_init(capacity, obs_shape, action_shape, action_dtype, obs_dtype)
    return jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (num_seeds,) + x.shape), one)


def replay_add(buf: ReplayBuffer, obs, actions, rewards, terminations, next_obs) -> ReplayBuffer:
    """Write a batch of n transitions (n = number of envs) at ptr, wrapping around and overwriting the oldest.

    n must not exceed the capacity (else some writes in the batch would collide).
    """
    capacity = buf.rewards.shape[0]
    n = rewards.shape[0]
    if n > capacity:
        raise UnderstudyError(f"Adding {n} transitions at once to a replay buffer of capacity {capacity}; "
                              "the buffer must hold at least one step from every env. Raise the buffer size.")
    idx = (buf.ptr + jnp.arange(n, dtype=jnp.int32)) % capacity
    return buf.replace(
        observations=buf.observations.at[idx].set(jnp.asarray(obs, buf.observations.dtype)),
        actions=buf.actions.at[idx].set(jnp.asarray(actions, buf.actions.dtype).reshape((n,) + buf.actions.shape[1:])),
        rewards=buf.rewards.at[idx].set(jnp.asarray(rewards, jnp.float32)),
        terminations=buf.terminations.at[idx].set(jnp.asarray(terminations, jnp.float32)),
        next_observations=buf.next_observations.at[idx].set(jnp.asarray(next_obs, buf.next_observations.dtype)),
        ptr=((buf.ptr + n) % capacity).astype(jnp.int32),
        size=jnp.minimum(buf.size + n, capacity).astype(jnp.int32),
    )


def replay_sample(buf: ReplayBuffer, key: jax.Array, batch_size: int) -> Batch:
    """`batch_size` transitions uniform (with replacement) over the filled part; leading axis [B].

    On an empty buffer this returns slot 0 (zeros); callers start updating only after a warm-up.
    """
    idx = jax.random.randint(key, (batch_size,), 0, jnp.maximum(buf.size, 1))
    return Batch(observations=buf.observations[idx], actions=buf.actions[idx], rewards=buf.rewards[idx],
                 terminations=buf.terminations[idx], next_observations=buf.next_observations[idx])
