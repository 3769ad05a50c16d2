"""Numeric checks of the pure loss functions against scipy and hand-computed values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from understudy.algos import losses

RNG = np.random.default_rng(0)


def test_mse_matches_numpy():
    pred, target = RNG.normal(size=(5, 3)).astype(np.float32), RNG.normal(size=(5, 3)).astype(np.float32)
    np.testing.assert_allclose(losses.mse(pred, target), ((pred - target) ** 2).mean(-1), rtol=1e-6)


def test_gaussian_log_prob_and_nll_match_scipy():
    mean = RNG.normal(size=(6, 4)).astype(np.float32)
    log_std = RNG.uniform(-2, 1, size=(6, 4)).astype(np.float32)
    x = RNG.normal(size=(6, 4)).astype(np.float32)
    expected = stats.norm.logpdf(x, loc=mean, scale=np.exp(log_std)).sum(-1)
    np.testing.assert_allclose(losses.gaussian_log_prob(mean, log_std, x), expected, rtol=1e-5)
    np.testing.assert_allclose(losses.gaussian_nll(mean, log_std, x), -expected, rtol=1e-5)


def test_beta_nll_is_the_nll_at_beta_zero_and_weights_each_dimension_by_std_power():
    mean = RNG.normal(size=(6, 4)).astype(np.float32)
    log_std = RNG.uniform(-2, 1, size=(6, 4)).astype(np.float32)
    x = RNG.normal(size=(6, 4)).astype(np.float32)
    np.testing.assert_allclose(losses.beta_gaussian_nll(mean, log_std, x, 0.0), losses.gaussian_nll(mean, log_std, x),
                               rtol=1e-6)
    per_dim_nll = -stats.norm.logpdf(x, loc=mean, scale=np.exp(log_std))
    expected = (per_dim_nll * np.exp(log_std) ** (2 * 0.5)).sum(-1)  # std^(2 beta) at beta = 0.5
    np.testing.assert_allclose(losses.beta_gaussian_nll(mean, log_std, x, 0.5), expected, rtol=1e-5)
    # At beta = 1 the weight cancels the 1/std^2: the mean's gradient is MSE's, (mean - x) per element.
    grad = jax.grad(lambda m: jnp.sum(losses.beta_gaussian_nll(m, log_std, x, 1.0)))(mean)
    np.testing.assert_allclose(grad, mean - x, rtol=1e-5, atol=1e-6)
    # The weight is a constant to the std's gradient too: d/dlog_std = std^(2 beta) (1 - z^2).
    z2 = ((x - mean) / np.exp(log_std)) ** 2
    grad_log_std = jax.grad(lambda s: jnp.sum(losses.beta_gaussian_nll(mean, s, x, 0.5)))(log_std)
    np.testing.assert_allclose(grad_log_std, np.exp(log_std) * (1 - z2), rtol=1e-4, atol=1e-5)


def test_log_one_minus_tanh_sq_is_exact_and_stable():
    u = np.array([-30.0, -3.0, -0.5, 0.0, 0.7, 4.0, 30.0], np.float32)
    got = np.asarray(losses.log_one_minus_tanh_sq(jnp.asarray(u)))
    assert np.all(np.isfinite(got))
    moderate = np.abs(u) < 5
    np.testing.assert_allclose(got[moderate], np.log(1 - np.tanh(u[moderate].astype(np.float64)) ** 2), rtol=1e-5)
    # For large |u|, 1 - tanh^2 = 4 e^{-2|u|} (1 + O(e^{-2|u|})).
    np.testing.assert_allclose(got[~moderate], np.log(4.0) - 2 * np.abs(u[~moderate]), rtol=1e-5)


def test_tanh_gaussian_log_prob_is_change_of_variables():
    mean = RNG.normal(size=(5, 2)).astype(np.float32)
    log_std = RNG.uniform(-1, 0.5, size=(5, 2)).astype(np.float32)
    action = RNG.uniform(-0.95, 0.95, size=(5, 2)).astype(np.float32)
    a64 = action.astype(np.float64)
    u = np.arctanh(a64)
    expected = (stats.norm.logpdf(u, loc=mean, scale=np.exp(log_std)) - np.log(1 - a64 ** 2)).sum(-1)
    np.testing.assert_allclose(losses.tanh_gaussian_log_prob(mean, log_std, action), expected, rtol=1e-4)
    from_pre_tanh = losses.tanh_gaussian_log_prob_from_pre_tanh(mean, log_std, jnp.asarray(u, jnp.float32))
    np.testing.assert_allclose(from_pre_tanh, expected, rtol=1e-4)


def test_tanh_gaussian_density_integrates_to_one_and_matches_monte_carlo():
    mean, log_std = 0.4, np.log(0.8)
    # A grid on a = tanh(u) that is dense near the bounds, where the density's tails live.
    grid = np.tanh(np.linspace(-6.0, 6.0, 20_001))
    log_density = losses.tanh_gaussian_log_prob(jnp.full((grid.size, 1), mean), jnp.full((grid.size, 1), log_std),
                                                jnp.asarray(grid[:, None], jnp.float32))
    density = np.exp(np.asarray(log_density, np.float64))
    assert np.trapezoid(density, grid) == pytest.approx(1.0, abs=1e-3)
    # P(a < 0.3): Monte Carlo through tanh against the integrated density.
    samples = np.tanh(mean + np.exp(log_std) * RNG.normal(size=200_000))
    below = grid < 0.3
    assert np.mean(samples < 0.3) == pytest.approx(np.trapezoid(density[below], grid[below]), abs=5e-3)


def test_tanh_gaussian_log_prob_clips_actions_at_the_bounds():
    lp = losses.tanh_gaussian_log_prob(jnp.zeros((2, 1)), jnp.zeros((2, 1)), jnp.array([[1.0], [-1.0]]))
    assert np.all(np.isfinite(np.asarray(lp)))


def test_categorical_nll_matches_log_softmax():
    logits = RNG.normal(size=(4, 5)).astype(np.float32)
    labels = np.array([0, 4, 2, 2])
    expected = -special.log_softmax(logits, axis=-1)[np.arange(4), labels]
    np.testing.assert_allclose(losses.categorical_nll(logits, labels), expected, rtol=1e-5)


def test_soft_td_target_masks_bootstrapping_on_termination():
    rewards = jnp.array([1.0, 2.0, -1.0])
    terminations = jnp.array([0.0, 1.0, 0.0])
    next_q = jnp.array([10.0, 10.0, 4.0])
    next_log_prob = jnp.array([-1.0, -1.0, 2.0])
    got = losses.soft_td_target(rewards, terminations, next_q, next_log_prob, alpha=0.5, gamma=0.9)
    # 1 + 0.9 (10 + 0.5) ; 2 (terminated) ; -1 + 0.9 (4 - 1)
    np.testing.assert_allclose(got, [1 + 0.9 * 10.5, 2.0, -1 + 0.9 * 3.0], rtol=1e-6)


def test_sac_critic_loss_sums_member_mses():
    q = jnp.array([[1.0, 2.0], [0.0, 4.0]])
    target = jnp.array([1.5, 3.0])
    # member 0: (0.25 + 1) / 2 ; member 1: (2.25 + 1) / 2
    assert float(losses.sac_critic_loss(q, target)) == pytest.approx(0.625 + 1.625)
    # No gradient flows into the target.
    grad = jax.grad(lambda t: losses.sac_critic_loss(q, t))(target)
    np.testing.assert_array_equal(grad, 0.0)


def test_sac_actor_loss():
    log_prob, q = jnp.array([-1.0, 0.5]), jnp.array([3.0, 1.0])
    assert float(losses.sac_actor_loss(log_prob, q, 0.2)) == pytest.approx(((-0.2 - 3) + (0.1 - 1)) / 2)


def test_temperature_loss_value_and_gradient_direction():
    log_prob = jnp.array([-0.5, -1.5])  # entropy 1.0
    assert float(losses.temperature_loss(jnp.log(2.0), log_prob, target_entropy=-3.0)) == pytest.approx(
        -2.0 * np.mean(np.array([-0.5, -1.5]) - 3.0))
    # Entropy 1.0 above the target -3: alpha should shrink (descending the loss lowers log alpha).
    assert float(jax.grad(losses.temperature_loss)(0.0, log_prob, -3.0)) > 0
    # Entropy below the target 2.0: alpha should grow.
    assert float(jax.grad(losses.temperature_loss)(0.0, log_prob, 2.0)) < 0


@pytest.mark.parametrize("call", [
    lambda: losses.mse(jnp.zeros((4, 2)), jnp.zeros((4, 1))),
    lambda: losses.gaussian_log_prob(jnp.zeros((4, 2)), jnp.zeros((4, 2)), jnp.zeros((4,))),
    lambda: losses.categorical_nll(jnp.zeros((4, 3)), jnp.zeros((4, 1), jnp.int32)),
    lambda: losses.soft_td_target(jnp.zeros(4), jnp.zeros((4, 1)), jnp.zeros(4), jnp.zeros(4), 0.1, 0.99),
    lambda: losses.sac_critic_loss(jnp.zeros((2, 4)), jnp.zeros((4, 1))),
    lambda: losses.sac_actor_loss(jnp.zeros(4), jnp.zeros((4, 1)), 0.1),
    lambda: losses.temperature_loss(jnp.zeros(1), jnp.zeros(4), -1.0),
])
def test_shape_mismatches_raise(call):
    with pytest.raises(ValueError, match="shape"):
        call()
