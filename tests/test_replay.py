"""Replay ring buffer: wraparound overwrites the oldest, sampling covers only the filled part, vmaps over seeds."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from understudy.data.replay import replay_add, replay_init, replay_init_batched, replay_sample
from understudy.types import UnderstudyError


def chunk(start, n, obs_dim=3):
    """n transitions whose reward identifies them: reward = start..start+n-1; obs rows are reward-filled."""
    r = jnp.arange(start, start + n, dtype=jnp.float32)
    obs = jnp.repeat(r[:, None], obs_dim, axis=1)
    return obs, jnp.stack([r, -r], 1), r, (r % 2 == 0).astype(jnp.float32), obs + 0.5


def test_init_shapes_and_dtypes():
    buf = replay_init(7, (3,), (), action_dtype=jnp.int32)
    assert buf.observations.shape == (7, 3) and buf.actions.shape == (7,) and buf.actions.dtype == jnp.int32
    assert buf.ptr.dtype == jnp.int32 and buf.size.dtype == jnp.int32 and int(buf.size) == 0
    assert buf.capacity == 7
    with pytest.raises(UnderstudyError):
        replay_init(0, (3,), (2,))


def test_add_wraparound_overwrites_oldest():
    add = jax.jit(replay_add)
    buf = replay_init(5, (3,), (2,))
    buf = add(buf, *chunk(0, 2))
    assert int(buf.ptr) == 2 and int(buf.size) == 2
    np.testing.assert_array_equal(np.asarray(buf.rewards), [0, 1, 0, 0, 0])
    buf = add(buf, *chunk(2, 2))
    buf = add(buf, *chunk(4, 2))  # 6 transitions in a 5-slot buffer: step 5 overwrites step 0 at slot 0
    assert int(buf.ptr) == 1 and int(buf.size) == 5
    np.testing.assert_array_equal(np.asarray(buf.rewards), [5, 1, 2, 3, 4])
    buf = add(buf, *chunk(6, 2))
    assert int(buf.ptr) == 3 and int(buf.size) == 5
    np.testing.assert_array_equal(np.asarray(buf.rewards), [5, 6, 7, 3, 4])
    # Every field of a slot was written together.
    np.testing.assert_array_equal(np.asarray(buf.observations[:, 0]), [5, 6, 7, 3, 4])
    np.testing.assert_array_equal(np.asarray(buf.actions[:, 1]), [-5, -6, -7, -3, -4])
    np.testing.assert_array_equal(np.asarray(buf.terminations), [0, 1, 0, 0, 1])
    np.testing.assert_array_equal(np.asarray(buf.next_observations[:, 2]), [5.5, 6.5, 7.5, 3.5, 4.5])
    with pytest.raises(UnderstudyError):
        replay_add(buf, *chunk(0, 6))


def test_sample_only_filled_part_and_uniform():
    buf = replay_add(replay_init(100, (3,), (2,)), *chunk(10, 4))
    batch = jax.jit(replay_sample, static_argnums=2)(buf, jax.random.PRNGKey(0), 8000)
    r = np.asarray(batch.rewards)
    assert set(r.tolist()) == {10.0, 11.0, 12.0, 13.0}  # never an empty slot
    counts = np.bincount(r.astype(int) - 10)
    assert np.all(np.abs(counts - 2000) < 200), counts  # ~4.5 sigma
    np.testing.assert_array_equal(np.asarray(batch.observations[:, 1]), r)
    np.testing.assert_array_equal(np.asarray(batch.actions[:, 1]), -r)


def test_vmap_add_and_sample_over_seeds_in_scan():
    seeds, envs, capacity, steps = 3, 4, 16, 6
    bufs = replay_init_batched(seeds, capacity, (3,), (2,))
    assert bufs.ptr.shape == (seeds,) and bufs.observations.shape == (seeds, capacity, 3)

    def run(buf, key, seed_index):
        def step(buf, xs):
            t, k = xs  # env step t writes rewards 1000*seed + 4t .. 4t+3
            buf = replay_add(buf, *chunk(0, envs))
            buf = buf.replace(rewards=buf.rewards.at[(buf.ptr - envs + jnp.arange(envs)) % capacity].add(
                1000.0 * seed_index + envs * t))
            return buf, replay_sample(buf, k, 32).rewards
        return jax.lax.scan(step, buf, (jnp.arange(steps, dtype=jnp.float32), jax.random.split(key, steps)))

    keys = jax.random.split(jax.random.PRNGKey(1), seeds)
    bufs, sampled = jax.jit(jax.vmap(run))(bufs, keys, jnp.arange(seeds, dtype=jnp.float32))
    assert sampled.shape == (seeds, steps, 32)
    np.testing.assert_array_equal(np.asarray(bufs.ptr), [8, 8, 8])  # 24 adds into 16 slots
    np.testing.assert_array_equal(np.asarray(bufs.size), [16, 16, 16])
    # Slots 0..7 were overwritten by t=4,5 (rewards 16..23); slots 8..15 still hold t=2,3 (rewards 8..15).
    want = np.concatenate([np.arange(16, 24), np.arange(8, 16)]).astype(np.float32)
    for s in range(seeds):
        np.testing.assert_array_equal(np.asarray(bufs.rewards[s]), want + 1000 * s)
        # After the first add only that seed's first 4 transitions exist.
        assert set(np.asarray(sampled[s, 0]).tolist()) <= {1000.0 * s + i for i in range(4)}
        # Samples always come from this seed's buffer and from the filled part.
        assert np.all((np.asarray(sampled[s]) >= 1000 * s) & (np.asarray(sampled[s]) < 1000 * s + 24))
    # Seeds draw different indices.
    assert not np.array_equal(np.asarray(sampled[0]) % 1000, np.asarray(sampled[1]) % 1000)
