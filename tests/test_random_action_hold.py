"""--random-action-hold: the off-policy loop's random phase holds each uniform action for N steps."""

import dataclasses

import jax
import numpy as np
import pytest

from understudy import envs
from understudy.algos import sac, td3
from understudy.data.recipes import REPLAY_FILE, load_replay_snapshot
from understudy.train import off_policy
from understudy.train.common import RunArgs
from understudy.types import UnderstudyError


@pytest.mark.parametrize("hold", [1, 25])
def test_random_actions_are_held_for_whole_blocks_then_redrawn(tmp_path, hold):
    # learning_starts = steps: the whole run is the random phase, so no update is compiled.
    cfg = td3.Config(hidden_dims=(8,), batch_size=8, learning_starts=200, random_action_hold=hold)
    run = RunArgs(env="Pendulum-v1", steps=200, eval_every=200, eval_episodes=1, snapshot_every=200,
                  snapshot_replay=True, out=str(tmp_path / "run"), seed=0, tensorboard=False, progress=False)
    off_policy.train("td3", td3, cfg, run)
    columns, _ = load_replay_snapshot(tmp_path / "run" / "snapshots" / "step_200" / REPLAY_FILE)
    blocks = columns["actions"].reshape(200 // hold, hold, -1)
    np.testing.assert_array_equal(blocks, np.repeat(blocks[:, :1], hold, axis=1))  # constant within a block
    assert len(np.unique(blocks[:, 0, 0])) == 200 // hold  # a fresh uniform draw for each block
    assert np.all(np.abs(blocks) <= 2.0)  # Pendulum's torque range


def test_a_hold_below_one_is_refused():
    spec = envs.make_spec("Pendulum-v1")
    for algo in (sac, td3):
        with pytest.raises(UnderstudyError, match="random-action-hold must be >= 1"):
            algo.init(dataclasses.replace(algo.Config(), random_action_hold=0), spec, jax.random.PRNGKey(0))
