"""Data-parallel training on 4 forced CPU devices gives the 1-device run's losses and parameters (same global
batch and seed), within float summation-order differences.

XLA_FLAGS must be set before JAX starts, so the comparison runs in a fresh Python process."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from understudy.data import save_dataset

SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    from understudy.instruct.algo import Config
    from understudy.train.common import RunArgs
    from understudy.train.instruct import initial_state, make_update_many, prepare

    assert len(jax.devices()) == 4, jax.devices()
    cfg = Config(d_model=32, num_layers=1, num_heads=2, head_hidden_dims=(32,), batch_size=16, warmup_steps=2)
    out = {}
    for devices in (1, 4):
        setup = prepare(Config(**{**cfg.__dict__, "devices": devices}), RunArgs(dataset=sys.argv[1]))
        tx, state, key = initial_state(cfg, setup, 30, 0)
        update_many = make_update_many(setup["net"], tx, setup["data"], setup["table"], cfg, setup["mesh"])
        losses = []
        for _ in range(3):
            state, key, metrics = update_many(state, key, num_updates=10)
            losses += np.asarray(metrics["loss"]).tolist()
        batch_devices = len(state.params["params"]["final_norm"]["scale"].sharding.device_set)
        leaves = [np.asarray(x).ravel() for x in jax.tree.leaves(jax.device_get(state.params))]
        out[devices] = {"losses": losses, "params": np.concatenate(leaves).tolist(), "mesh": setup["mesh"].size,
                        "param_devices": batch_devices}
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def grid_data(tmp_path_factory):
    from test_instruct_model import grid_dataset

    path = tmp_path_factory.mktemp("shard") / "grid"
    save_dataset(grid_dataset(num_episodes=20), path)
    return str(path)


def test_four_device_run_matches_one_device_run(grid_data, tmp_path):
    script = tmp_path / "compare.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, str(script), grid_data], env=env, capture_output=True, text=True,
                          timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    one, four = result["1"], result["4"]
    assert one["mesh"] == 1 and four["mesh"] == 4
    assert four["param_devices"] == 4  # parameters replicated on every device
    assert len(one["losses"]) == 30
    import numpy as np

    np.testing.assert_allclose(four["losses"], one["losses"], atol=1e-4, rtol=0)
    assert abs(one["losses"][-1] - one["losses"][0]) > 1e-3  # the runs did train
    # Adam divides by the root of tiny second moments, so summation-order differences in near-zero gradients
    # move some parameters by up to ~1e-3 over 30 updates; the losses above are the contract
    np.testing.assert_allclose(four["params"], one["params"], atol=3e-3, rtol=0)


def test_a_batch_that_does_not_split_over_the_devices_is_refused(grid_data):
    from understudy.instruct.algo import Config
    from understudy.train.common import RunArgs
    from understudy.train.instruct import prepare
    from understudy.types import UnderstudyError

    with pytest.raises(UnderstudyError, match="--devices 3"):
        prepare(Config(devices=3), RunArgs(dataset=grid_data))  # this test process sees one device
