"""benchmarks/offline_speed.py, our side only: the synthetic data and a few updates of each algorithm.

No d3rlpy environment is touched here (building one takes minutes and the network).
"""

import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import offline_speed  # noqa: E402


def test_synthetic_data_is_hopper_shaped_with_rewards_rare_terminals_and_episodes():
    steps = 3000
    data = offline_speed.synthetic_data(steps, seed=3)
    assert data["observations"].shape == data["next_observations"].shape == (steps, 11)
    assert data["actions"].shape == (steps, 3)
    assert data["rewards"].shape == data["terminals"].shape == data["timeouts"].shape == (steps,)
    assert all(data[k].dtype == np.float32 for k in data if k != "episode_starts")
    assert data["actions"].min() >= -1.0 and data["actions"].max() <= 1.0 and data["actions"].std() > 0.1
    assert abs(data["rewards"].mean()) < 0.1 and abs(data["rewards"].std() - 1.0) < 0.1  # standard normal
    assert 0 < data["terminals"].sum() < 0.01 * steps  # rare (p = 1e-3 per step: 3 expected)

    ends = np.flatnonzero(data["terminals"] + data["timeouts"])
    assert not np.any(data["terminals"] * data["timeouts"])  # an episode ends one way
    assert ends[-1] == steps - 1  # the data end an episode (d3rlpy requires it)
    starts = data["episode_starts"]
    np.testing.assert_array_equal(starts, np.concatenate([[0], ends[:-1] + 1]))
    assert np.diff(np.concatenate([[-1], ends])).max() <= offline_speed.EPISODE_STEPS
    # Next observations follow within an episode and are zeros after its last step.
    inside = np.setdiff1d(np.arange(steps - 1), ends)
    np.testing.assert_array_equal(data["next_observations"][inside], data["observations"][inside + 1])
    assert not data["next_observations"][ends].any()

    again = offline_speed.synthetic_data(steps, seed=3)
    for key in data:
        np.testing.assert_array_equal(data[key], again[key])
    assert not np.array_equal(offline_speed.synthetic_data(steps, seed=4)["rewards"], data["rewards"])


# CQL's compile alone takes ~15 s and test_offline_algos already runs its update: it is a slow check here
@pytest.mark.parametrize("algo", [pytest.param(a, marks=pytest.mark.slow) if a == "cql" else a
                                  for a in offline_speed.ALGOS])
def test_ours_runs_a_few_updates_with_finite_losses(algo):
    data = offline_speed.synthetic_data(2000)
    result = offline_speed.ours_rate(algo, data, updates=4, chunk=2)
    assert result["updates_per_s"] > 0
    assert result["finite"] and np.isfinite(result["first_loss"]) and np.isfinite(result["last_loss"])
    assert result["first_loss"] > 0


def test_ours_uses_the_aligned_settings():
    for name in offline_speed.ALGOS:
        _, cfg = offline_speed.algo_config(name)
        assert cfg.hidden_dims == (256, 256) and cfg.batch_size == 256 and cfg.num_critics == 2
        assert not cfg.normalize_observations
    _, cql = offline_speed.algo_config("cql")
    assert cql.num_sampled_actions == 10 and not cql.lagrange and cql.cql_alpha == 10.0 and cql.autotune
