"""benchmarks/bc_speed.py: our side runs and learns in a handful of updates; peer environments are named apart.

No peer environment is built here (that takes minutes and the network); only our side is exercised.
"""

import json
import sys
from pathlib import Path

import numpy as np

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import _peer_venv  # noqa: E402
import bc_speed  # noqa: E402


def test_synthetic_data_is_hopper_shaped_bounded_and_deterministic():
    obs, acts = bc_speed.synthetic_data(500, seed=3)
    assert obs.shape == (500, 11) and acts.shape == (500, 3)
    assert obs.dtype == np.float32 and acts.dtype == np.float32
    assert acts.min() >= -1.0 and acts.max() <= 1.0 and acts.std() > 0.1
    again, _ = bc_speed.synthetic_data(500, seed=3)
    np.testing.assert_array_equal(obs, again)


def test_ours_rate_times_the_updates_and_the_loss_falls():
    obs, acts = bc_speed.synthetic_data(2000)
    result = bc_speed.ours_rate(obs, acts, updates=200, chunk=100)
    assert result["updates_per_s"] > 0
    # 300 MSE updates on a smooth target: the last call's mean loss is well below the first's.
    assert result["last_loss"] < 0.7 * result["first_loss"]


def test_each_peer_group_gets_its_own_environment_and_the_default_stays_put():
    assert _peer_venv.venv_dir() == BENCHMARKS / ".venv-peers" == _peer_venv.VENV_DIR
    assert _peer_venv.venv_dir("imitation") == BENCHMARKS / ".venv-imitation"
    assert _peer_venv.peer_python("d3rlpy") == BENCHMARKS / ".venv-d3rlpy" / "bin" / "python"
    # online_speed.py's environment keeps the requirements (and so the stamp) it was built with.
    assert json.loads(json.dumps(_peer_venv.VENVS["peers"])) == [
        ["torch==2.13.0"], ["stable-baselines3", "sbx-rl", "gymnasium[mujoco]", "mujoco==3.3.0"]]
    assert any("imitation" in spec for group in _peer_venv.VENVS["imitation"] for spec in group)
