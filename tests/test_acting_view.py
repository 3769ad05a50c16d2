"""train.common.acting_view: the slimmed state the online loops pass to `act` every env step must act exactly as
the whole state does, for every algorithm that declares ACT_READS (an unlisted field `act` reads would be None
and fail here)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from understudy.algos import dqn, sac, td3
from understudy.train.common import acting_view
from understudy.types import ArraySpec, EnvSpec

OBS_DIM, ACTION_DIM = 5, 3
CONTINUOUS = EnvSpec("Synthetic-v0", "gymnasium", ArraySpec((OBS_DIM,), "float32"),
                     ArraySpec((ACTION_DIM,), "float32", (-1.0,) * ACTION_DIM, (1.0,) * ACTION_DIM))
DISCRETE = EnvSpec("SyntheticDiscrete-v0", "gymnasium", ArraySpec((OBS_DIM,), "float32"), ArraySpec((), "int64"),
                   num_actions=4)
CASES = [(sac, sac.Config(hidden_dims=(16, 16)), CONTINUOUS), (td3, td3.Config(hidden_dims=(16, 16)), CONTINUOUS),
         (dqn, dqn.Config(hidden_dims=(16, 16)), DISCRETE)]


@pytest.mark.parametrize("algo,cfg,spec", CASES, ids=["sac", "td3", "dqn"])
@pytest.mark.parametrize("deterministic", [True, False])
def test_acting_view_acts_like_the_whole_state(algo, cfg, spec, deterministic):
    state = algo.init(cfg, spec, jax.random.PRNGKey(0))
    view = acting_view(algo, state)
    kept = [name for name in algo.ACT_READS if getattr(view, name) is not None]
    assert kept == list(algo.ACT_READS)
    assert len(jax.tree.leaves(view)) < len(jax.tree.leaves(state))  # something was actually left out
    obs = jnp.asarray(np.random.default_rng(0).normal(size=(8, OBS_DIM)), jnp.float32)
    act = jax.jit(lambda st, o, k: algo.act(cfg, st, o, k, deterministic))
    key = jax.random.PRNGKey(3)
    np.testing.assert_array_equal(np.asarray(act(view, obs, key)), np.asarray(act(state, obs, key)))


def test_a_module_without_act_reads_gets_its_whole_state():
    class Bare:
        pass

    state = sac.init(sac.Config(hidden_dims=(8,)), CONTINUOUS, jax.random.PRNGKey(0))
    assert acting_view(Bare, state) is state
