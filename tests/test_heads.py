"""Every action head: shapes, finite losses, actions inside the box, deterministic modes, consistent
log-probs, and rebuilding from its JSON config."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from understudy.nets.heads import HEADS, head_config, is_discrete_head, make_head
from understudy.types import UnderstudyError

B, OBS_DIM, ACTION_DIM, NUM_ACTIONS = 7, 5, 3, 4
CONTINUOUS = ["mse", "gaussian", "tanh-gaussian"]
WITH_LOG_PROB = ["gaussian", "tanh-gaussian", "categorical"]


def _setup(name):
    action_dim = NUM_ACTIONS if name == "categorical" else ACTION_DIM
    head = make_head(name, action_dim=action_dim, hidden_dims=(16, 16))
    obs = jax.random.normal(jax.random.key(1), (B, OBS_DIM))
    params = head.init(jax.random.key(0), obs)
    if name == "categorical":
        actions = jax.random.randint(jax.random.key(2), (B,), 0, NUM_ACTIONS)
    else:
        actions = jax.random.uniform(jax.random.key(2), (B, ACTION_DIM), minval=-1.0, maxval=1.0)
    return head, params, obs, actions


def test_registry_has_the_four_heads_and_knows_which_are_discrete():
    assert set(CONTINUOUS + ["categorical"]) <= set(HEADS)
    assert is_discrete_head("categorical") and not any(is_discrete_head(n) for n in CONTINUOUS)


@pytest.mark.parametrize("name", CONTINUOUS + ["categorical"])
def test_shapes_finite_loss_and_bounded_actions(name):
    head, params, obs, actions = _setup(name)
    loss = head.apply(params, obs, actions, jax.random.key(3), method="loss")
    assert loss.shape == (B,) and np.all(np.isfinite(loss))
    sample = head.apply(params, obs, jax.random.key(4), method="sample")
    mode = head.apply(params, obs, method="mode")
    if name == "categorical":
        assert sample.shape == mode.shape == (B,)
        assert sample.dtype == mode.dtype == jnp.int32
        assert np.all((sample >= 0) & (sample < NUM_ACTIONS))
    else:
        assert sample.shape == mode.shape == (B, ACTION_DIM)
        # Push the torso output far out so unbounded means would leave the box.
        big_obs = 1e3 * obs
        for a in (head.apply(params, big_obs, jax.random.key(5), method="sample"),
                  head.apply(params, big_obs, method="mode"), sample, mode):
            assert np.all(np.abs(np.asarray(a)) <= 1.0)


@pytest.mark.parametrize("name", CONTINUOUS + ["categorical"])
def test_mode_is_deterministic_and_samples_vary_with_key(name):
    head, params, obs, _ = _setup(name)
    np.testing.assert_array_equal(head.apply(params, obs, method="mode"), head.apply(params, obs, method="mode"))
    s1 = head.apply(params, obs, jax.random.key(6), method="sample")
    s2 = head.apply(params, obs, jax.random.key(6), method="sample")
    np.testing.assert_array_equal(s1, s2)
    if name != "mse":  # the deterministic head ignores the key
        samples = [head.apply(params, jnp.tile(obs, (20, 1)), jax.random.key(k), method="sample") for k in (7, 8)]
        assert not np.array_equal(samples[0], samples[1])


@pytest.mark.parametrize("name", WITH_LOG_PROB)
def test_loss_is_negative_log_prob(name):
    head, params, obs, actions = _setup(name)
    log_prob = head.apply(params, obs, actions, method="log_prob")
    loss = head.apply(params, obs, actions, jax.random.key(0), method="loss")
    assert log_prob.shape == (B,)
    np.testing.assert_allclose(loss, -log_prob, rtol=1e-6)


def test_categorical_log_probs_normalize_and_accept_column_actions():
    head, params, obs, actions = _setup("categorical")
    all_lp = np.stack([head.apply(params, obs, jnp.full((B,), a), method="log_prob") for a in range(NUM_ACTIONS)])
    np.testing.assert_allclose(np.exp(all_lp).sum(0), 1.0, rtol=1e-5)
    np.testing.assert_allclose(head.apply(params, obs, actions[:, None].astype(jnp.float32), method="log_prob"),
                               head.apply(params, obs, actions, method="log_prob"), rtol=1e-6)


def test_gaussian_log_prob_matches_its_mean_and_std():
    head, params, obs, actions = _setup("gaussian")
    mean, log_std = head.apply(params, obs)
    from scipy import stats
    expected = stats.norm.logpdf(actions, loc=mean, scale=np.exp(log_std)).sum(-1)
    np.testing.assert_allclose(head.apply(params, obs, actions, method="log_prob"), expected, rtol=1e-4)


def test_tanh_gaussian_sample_and_log_prob_agrees_with_log_prob():
    head, params, obs, _ = _setup("tanh-gaussian")
    action, log_prob = head.apply(params, obs, jax.random.key(9), method="sample_and_log_prob")
    assert action.shape == (B, ACTION_DIM) and log_prob.shape == (B,)
    np.testing.assert_allclose(head.apply(params, obs, action, method="log_prob"), log_prob, rtol=1e-3, atol=1e-3)
    # Reparameterized: the sample has a gradient with respect to the parameters.
    grads = jax.grad(lambda p: head.apply(p, obs, jax.random.key(9), method="sample").sum())(params)
    assert float(jnp.abs(grads["params"]["mean_layer"]["kernel"]).sum()) > 0
    np.testing.assert_allclose(head.apply(params, obs, method="mode"), jnp.tanh(head.apply(params, obs)[0]), rtol=1e-6)


def test_log_std_is_bounded():
    head = make_head("tanh-gaussian", action_dim=2, hidden_dims=(8,), log_std_min=-3.0, log_std_max=1.0)
    obs = 1e4 * jax.random.normal(jax.random.key(0), (50, 4))
    params = head.init(jax.random.key(1), obs)
    _, log_std = head.apply(params, obs)
    assert float(log_std.min()) >= -3.0 and float(log_std.max()) <= 1.0
    assert float(log_std.max() - log_std.min()) > 1.0  # saturates at both ends, not a constant


@pytest.mark.parametrize("name", CONTINUOUS + ["categorical"])
def test_head_config_round_trips_through_json(name):
    head, params, obs, _ = _setup(name)
    extra = {"log_std_min": -4.0} if name in ("gaussian", "tanh-gaussian") else {}
    config = head_config(name, head.action_dim, (16, 16), **extra)
    rebuilt = make_head(**json.loads(json.dumps(config)))
    assert rebuilt == make_head(name, action_dim=head.action_dim, hidden_dims=(16, 16), **extra)
    assert type(rebuilt) is HEADS[name] and rebuilt.hidden_dims == (16, 16)
    np.testing.assert_array_equal(rebuilt.apply(params, obs, method="mode"), head.apply(params, obs, method="mode"))


def test_bad_names_and_options_raise_understudy_errors():
    with pytest.raises(UnderstudyError, match="Unknown action head 'nope'"):
        make_head("nope", action_dim=2)
    with pytest.raises(UnderstudyError, match="no option"):
        make_head("mse", action_dim=2, num_components=5)
    with pytest.raises(UnderstudyError, match="action_dim"):
        head_config("gaussian", 0, (8,))
