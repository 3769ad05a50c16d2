"""Samplers: uniform transitions, padded windows that respect episode boundaries, jit/scan/vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from understudy.data.samplers import (DeviceDataset, episode_start_index, sample_transitions, sample_windows,
                                      to_device)
from understudy.types import UnderstudyError

# Three episodes: steps 0-3, 4-5, 6-9 (N = 10). Observation i is [i+1, -(i+1)] so zero means padding.
STARTS = np.array([0, 4, 6])
N = 10


def make_columns(with_task=False):
    i = np.arange(N, dtype=np.float32)
    cols = dict(observations=np.stack([i + 1, -(i + 1)], axis=1), actions=(np.arange(N) % 3 + 1).astype(np.int64),
                rewards=i * 10 + 1, terminations=np.isin(np.arange(N), [3, 9]).astype(np.bool_),
                next_observations=np.stack([i + 2, -(i + 2)], axis=1), episode_starts=STARTS)
    if with_task:
        cols["task_id"] = np.array([1, 1, 1, 1, 2, 2, 3, 3, 3, 3])
    return cols


def test_episode_start_index():
    np.testing.assert_array_equal(episode_start_index(STARTS, N), [0, 0, 0, 0, 4, 4, 6, 6, 6, 6])
    with pytest.raises(UnderstudyError):
        episode_start_index(np.array([1, 4]), N)
    with pytest.raises(UnderstudyError):
        episode_start_index(np.array([0, 4, 4]), N)
    with pytest.raises(UnderstudyError):
        episode_start_index(np.array([0, 12]), N)


def test_to_device_dtypes_and_validation():
    data = to_device(make_columns(with_task=True))
    assert isinstance(data, DeviceDataset)
    assert data.terminations.dtype == jnp.float32 and data.rewards.dtype == jnp.float32
    assert data.episode_start_index.dtype == jnp.int32
    assert data.num_steps == N
    np.testing.assert_array_equal(np.asarray(data.terminations)[[3, 9]], [1.0, 1.0])
    bad = make_columns()
    del bad["next_observations"]
    with pytest.raises(UnderstudyError, match="next_observations"):
        to_device(bad)
    bad = make_columns()
    bad["actions"] = bad["actions"][:-1]
    with pytest.raises(UnderstudyError, match="actions"):
        to_device(bad)


def test_transitions_uniform_and_consistent():
    data = to_device(make_columns(with_task=True))
    batch = jax.jit(sample_transitions, static_argnums=2)(data, jax.random.PRNGKey(0), 20000)
    assert batch.observations.shape == (20000, 2) and batch.rewards.shape == (20000,)
    step = np.asarray(batch.observations[:, 0]).astype(int) - 1
    # Every field comes from the same step.
    np.testing.assert_allclose(np.asarray(batch.rewards), step * 10 + 1)
    np.testing.assert_allclose(np.asarray(batch.next_observations[:, 0]), step + 2)
    np.testing.assert_array_equal(np.asarray(batch.actions), step % 3 + 1)
    np.testing.assert_array_equal(np.asarray(batch.task_id), np.array([1, 1, 1, 1, 2, 2, 3, 3, 3, 3])[step])
    counts = np.bincount(step, minlength=N)
    # 2000 expected per step; binomial std ~42, so 10% is > 4 sigma.
    assert np.all(np.abs(counts - 2000) < 200), counts


def test_windows_padding_and_content():
    data = to_device(make_columns(with_task=True))
    w = 3
    batch = jax.jit(sample_windows, static_argnums=(2, 3))(data, jax.random.PRNGKey(1), 4000, w)
    assert batch.observations.shape == (4000, w, 2) and batch.mask.shape == (4000, w)
    assert batch.task_id.shape == (4000, w)
    obs, mask = np.asarray(batch.observations), np.asarray(batch.mask)
    rew, act, nxt, task = (np.asarray(x) for x in (batch.rewards, batch.actions, batch.next_observations,
                                                   batch.task_id))
    starts = episode_start_index(STARTS, N)
    t = obs[:, -1, 0].astype(int) - 1  # the last position is always the sampled (real) step
    assert np.all(mask[:, -1] == 1.0)
    seen = set()
    for b in range(len(t)):
        seen.add(t[b])
        for j in range(w):
            step = t[b] - (w - 1) + j
            if step >= starts[t[b]]:
                assert mask[b, j] == 1.0
                assert obs[b, j, 0] == step + 1 and rew[b, j] == step * 10 + 1
                assert act[b, j] == step % 3 + 1 and task[b, j] > 0
            else:  # padding: zeros everywhere, never the previous episode
                assert mask[b, j] == 0.0
                assert np.all(obs[b, j] == 0) and rew[b, j] == 0 and act[b, j] == 0
                assert np.all(nxt[b, j] == 0) and task[b, j] == 0
    assert seen == set(range(N))
    # Concretely: a window ending at an episode's first step (4) is [pad, pad, 4].
    row = np.nonzero(t == 4)[0][0]
    np.testing.assert_array_equal(mask[row], [0, 0, 1])
    np.testing.assert_array_equal(obs[row, :, 0], [0, 0, 5])
    # And at step 7 (episode starts at 6): [pad, 6, 7].
    row = np.nonzero(t == 7)[0][0]
    np.testing.assert_array_equal(mask[row], [0, 1, 1])
    np.testing.assert_array_equal(obs[row, :, 0], [0, 7, 8])


def test_windows_at_dataset_start_and_dict_observations():
    cols = make_columns()
    cols["observations"] = {"a": cols["observations"], "img": np.arange(N, dtype=np.uint8)[:, None, None] + 1}
    cols["next_observations"] = {"a": cols["next_observations"], "img": np.zeros((N, 1, 1), np.uint8)}
    data = to_device(cols)
    batch = sample_windows(data, jax.random.PRNGKey(2), 500, 6)
    img = np.asarray(batch.observations["img"])[:, :, 0, 0]
    assert img.dtype == np.uint8
    mask = np.asarray(batch.mask)
    np.testing.assert_array_equal(img > 0, mask > 0)  # images are 1-based, so zero exactly on padding
    # Window longer than any episode: number of real steps = t - start + 1.
    t = img[:, -1].astype(int) - 1
    np.testing.assert_array_equal(mask.sum(1), np.minimum(t - episode_start_index(STARTS, N)[t] + 1, 6))


def test_samplers_in_scan_and_vmap():
    data = to_device(make_columns())

    def k_steps(key):
        def body(carry, k):
            b = sample_transitions(data, k, 8)
            w = sample_windows(data, k, 4, 3)
            return carry + b.rewards.sum() + (w.rewards * w.mask).sum(), None
        total, _ = jax.lax.scan(body, jnp.zeros(()), jax.random.split(key, 5))
        return total

    totals = jax.jit(jax.vmap(k_steps))(jax.random.split(jax.random.PRNGKey(3), 3))
    assert totals.shape == (3,)
    assert np.all(np.asarray(totals) > 0)
    assert len(set(np.asarray(totals).tolist())) == 3  # different seeds sample differently
