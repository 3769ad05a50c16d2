"""The gmm, diffusion and autoregressive heads: their math checked against direct computations, the common
head protocol (shapes, bounds, jit, determinism, policy export round trip), and a small fit on bimodal data."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import special, stats

from understudy.algos import losses
from understudy.checkpoint import export_policy
from understudy.nets.heads import HEADS, head_config, is_discrete_head, make_head
from understudy.nets.heads.autoregressive import action_to_bin, bin_cell, bin_centre
from understudy.nets.heads.diffusion import beta_schedule, ddpm_constants, draw_step_and_noise, forward_noise
from understudy.nets.heads.gmm import beta_gmm_nll, gmm_log_prob
from understudy.policy import load_policy, to_env_action
from understudy.types import ArraySpec, EnvSpec, UnderstudyError

B, OBS_DIM, ACTION_DIM = 7, 5, 3
NEW_HEADS = ["gmm", "diffusion", "autoregressive"]


def _random_params(head, obs, seed=0):
    """Parameters of the right shapes drawn in NumPy (scaled like lecun-normal): no init program to compile."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(head.init, jax.random.key(0), obs)
    return jax.tree_util.tree_map(
        lambda s: (rng.normal(size=s.shape) / np.sqrt(s.shape[-2] if len(s.shape) > 1 else 100)).astype(np.float32),
        shapes)


@functools.lru_cache(maxsize=None)
def _setup(name, **options):
    head = make_head(name, action_dim=ACTION_DIM, hidden_dims=(16, 16), **options)
    obs = jax.random.normal(jax.random.key(1), (B, OBS_DIM))
    actions = jax.random.uniform(jax.random.key(2), (B, ACTION_DIM), minval=-1.0, maxval=1.0)
    return head, _random_params(head, obs), obs, actions


# --------------------------------------------------------------------------------------------------
# The common protocol, on heads fitted to a small two-mode dataset (one compiled program per head:
# compilation, not running, is what these tests spend their time on)
# --------------------------------------------------------------------------------------------------
FIT_OPTIONS = {"gmm": {"num_components": 4}, "diffusion": {"time_dim": 16},
               "autoregressive": {"num_bins": 16, "dim_hidden": 32}}
FIT_STEPS = {"gmm": 300, "diffusion": 1500, "autoregressive": 300}
MODES = np.array([[0.6, -0.6], [-0.6, 0.6]])  # the 2-D action is one of these (plus a little noise), at random
N, FIT_OBS_DIM, FIT_ACTION_DIM = 256, 2, 2
NORMALIZER = {"mean": np.full(FIT_OBS_DIM, 0.5, np.float32), "std": np.full(FIT_OBS_DIM, 2.0, np.float32)}
POLICY_SEED = 3


@functools.lru_cache(maxsize=None)
def _trained(name):
    head = make_head(name, action_dim=FIT_ACTION_DIM, hidden_dims=(32, 32), **FIT_OPTIONS[name])
    obs = np.asarray(jax.random.uniform(jax.random.key(0), (N, FIT_OBS_DIM), minval=-1.0, maxval=1.0))
    params = _random_params(head, obs)
    opt = optax.adam(3e-3)

    @jax.jit
    def run(params):
        signs = jnp.where(jax.random.bernoulli(jax.random.key(1), 0.5, (N, 1)), 1.0, -1.0)
        actions = signs * jnp.asarray(MODES[0]) + 0.03 * jax.random.normal(jax.random.key(2), (N, FIT_ACTION_DIM))

        def mean_loss(p, key):
            return jnp.mean(head.apply(p, obs, actions, key, method="loss"))

        def step(carry, key):
            p, opt_state = carry
            loss, grads = jax.value_and_grad(mean_loss)(p, key)
            updates, opt_state = opt.update(grads, opt_state, p)
            return (optax.apply_updates(p, updates), opt_state), loss

        (fitted, _), loss_curve = jax.lax.scan(step, (params, opt.init(params)),
                                           jax.random.split(jax.random.key(4), FIT_STEPS[name]))
        _, policy_key = jax.random.split(jax.random.PRNGKey(POLICY_SEED))  # the key of a loaded Policy's first sample
        keys = jnp.stack([jax.random.key_data(jax.random.key(7)), jax.random.key_data(jax.random.key(8)), policy_key])
        all_obs = jnp.concatenate([obs, 1e3 * obs[:B]])  # the last rows push raw network outputs far out
        return fitted, {
            # averaged over steps: the diffusion loss is noisy (it draws a step and noise per example)
            "loss_before": jnp.mean(loss_curve[:10]), "loss_after": jnp.mean(loss_curve[-50:]),
            "changed": [jnp.any(a != b) for a, b in zip(*map(jax.tree_util.tree_leaves, (params, fitted)))],
            # [3, N + B, A]: samples under keys 7, 8 and the policy's key, in one traced call
            "samples": jax.vmap(lambda k: head.apply(fitted, all_obs, k, method="sample"))(keys),
            "modes": head.apply(fitted, all_obs, method="mode")}

    fitted, out = run(params)
    return head, fitted, obs, jax.tree_util.tree_map(np.asarray, out)


def test_registry_has_the_new_continuous_heads_and_options_are_checked_when_built():
    assert set(NEW_HEADS) <= set(HEADS)
    assert not any(is_discrete_head(n) for n in NEW_HEADS)
    for name, bad in [("gmm", {"num_components": 0}), ("diffusion", {"beta_schedule": "quadratic"}),
                      ("diffusion", {"num_steps": 0}), ("autoregressive", {"num_bins": 1})]:
        with pytest.raises(UnderstudyError, match=f"{name} head options"):
            head_config(name, 2, (8,), **bad)


@pytest.mark.parametrize("name", NEW_HEADS)
def test_shapes_bounds_and_every_parameter_trains(name):
    _, _, _, out = _trained(name)
    assert np.isfinite(out["loss_before"]) and np.isfinite(out["loss_after"])
    assert out["samples"].shape == (3, N + B, FIT_ACTION_DIM) and out["modes"].shape == (N + B, FIT_ACTION_DIM)
    for a in (out["samples"], out["modes"]):
        assert np.all(np.isfinite(a)) and np.all(np.abs(a) <= 1.0)
    assert not np.array_equal(out["samples"][0], out["samples"][1])  # samples depend on the key
    assert all(out["changed"])  # the loss reaches every parameter


@pytest.mark.parametrize("name", NEW_HEADS)
def test_policy_export_round_trip_gives_identical_actions(name, tmp_path):
    head, fitted, obs, out = _trained(name)
    spec = EnvSpec(env_id="Toy-v0", family="gymnasium", observation=ArraySpec((FIT_OBS_DIM,), "float32"),
                   action=ArraySpec((FIT_ACTION_DIM,), "float32", low=(-2.0, -2.0), high=(2.0, 2.0)))
    config = head_config(name, FIT_ACTION_DIM, (32, 32), **FIT_OPTIONS[name])
    path = export_policy(tmp_path / "policy", head_config=config, params=fitted, spec=spec, normalizer=NORMALIZER)
    loaded = load_policy(path, seed=POLICY_SEED)
    assert loaded.module == head
    all_obs = np.concatenate([obs, 1e3 * obs[:B]])
    raw_obs = all_obs * NORMALIZER["std"] + NORMALIZER["mean"]  # normalizes back to the observations used in _trained
    # Sample first: the loaded policy's first sample uses the policy key of _trained.
    np.testing.assert_allclose(loaded(raw_obs, deterministic=False), to_env_action(out["samples"][2], spec),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(loaded(raw_obs), to_env_action(out["modes"], spec), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", NEW_HEADS)
def test_fit_reduces_the_loss_and_puts_mass_on_both_modes(name):
    # The MSE regressor's optimum here is the average action (0, 0), between the modes; these heads must not average.
    _, _, _, out = _trained(name)
    before, after = float(out["loss_before"]), float(out["loss_after"])
    if name == "diffusion":
        assert after < 0.4 * before, (before, after)
    else:  # cross-entropy losses: down by well over a nat (the AR head's smoothed targets keep it above ~3.5)
        assert after < before - 1.5, (before, after)

    def near_each_mode(actions):  # fractions of the actions within 0.25 (max-norm) of each mode, jointly
        return np.array([np.mean(np.abs(actions - m).max(-1) < 0.25) for m in MODES])

    near = near_each_mode(out["samples"][0, :N])  # both dimensions must agree on the mode (the AR head's conditioning)
    assert near.min() > 0.3 and near.sum() > 0.8, near
    if name != "diffusion":  # the most probable component / greedy bins: always one of the modes
        assert near_each_mode(out["modes"][:N]).sum() > 0.99, near_each_mode(out["modes"][:N])


# --------------------------------------------------------------------------------------------------
# Gaussian mixture
# --------------------------------------------------------------------------------------------------
def _numpy_gmm_log_prob(logits, means, log_stds, action):
    weights = special.log_softmax(logits, axis=-1)
    components = stats.norm.logpdf(action[:, None, :], loc=means, scale=np.exp(log_stds)).sum(-1)
    return special.logsumexp(weights + components, axis=-1)


def test_gmm_log_prob_matches_a_direct_computation():
    rng = np.random.default_rng(0)
    k = 4
    logits = rng.normal(size=(B, k)).astype(np.float32)
    means = rng.uniform(-1, 1, size=(B, k, ACTION_DIM)).astype(np.float32)
    log_stds = rng.uniform(-2, 0, size=(B, k, ACTION_DIM)).astype(np.float32)
    action = rng.uniform(-1, 1, size=(B, ACTION_DIM)).astype(np.float32)
    np.testing.assert_allclose(gmm_log_prob(logits, means, log_stds, action),
                               _numpy_gmm_log_prob(logits, means, log_stds, action), rtol=1e-5, atol=1e-5)
    # The head's log_prob is that formula applied to its own outputs, and its loss is the negative.
    head, params, obs, actions = _setup("gmm")
    outputs = [np.asarray(x, np.float64) for x in head.apply(params, obs)]
    assert outputs[0].shape == (B, 5) and outputs[1].shape == outputs[2].shape == (B, 5, ACTION_DIM)
    assert outputs[2].min() >= -5.0 and outputs[2].max() <= 2.0
    log_prob = head.apply(params, obs, actions, method="log_prob")
    np.testing.assert_allclose(log_prob, _numpy_gmm_log_prob(*outputs, np.asarray(actions)), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(head.apply(params, obs, actions, None, method="loss"), -log_prob, rtol=1e-6)
    with pytest.raises(ValueError, match="GMM shapes"):
        gmm_log_prob(logits, means, log_stds, action[:, :2])


def test_gmm_with_one_component_is_a_gaussian():
    rng = np.random.default_rng(1)
    means = rng.normal(size=(B, 1, ACTION_DIM)).astype(np.float32)
    log_stds = rng.normal(size=(B, 1, ACTION_DIM)).astype(np.float32)
    action = rng.normal(size=(B, ACTION_DIM)).astype(np.float32)
    np.testing.assert_allclose(gmm_log_prob(rng.normal(size=(B, 1)), means, log_stds, action),
                               losses.gaussian_log_prob(means[:, 0], log_stds[:, 0], action), rtol=1e-5, atol=1e-5)
    head, params, obs, actions = _setup("gmm", num_components=1)
    _, head_means, head_log_stds = head.apply(params, obs)
    np.testing.assert_allclose(head.apply(params, obs, actions, method="log_prob"),
                               stats.norm.logpdf(actions, head_means[:, 0], np.exp(head_log_stds[:, 0])).sum(-1),
                               rtol=1e-4, atol=1e-4)


def test_gmm_beta_nll_keeps_the_nll_gradient_at_small_beta_and_is_beta_nll_for_one_component():
    rng = np.random.default_rng(2)
    k = 4
    logits = rng.normal(size=(B, k)).astype(np.float32)
    means = rng.uniform(-1, 1, size=(B, k, ACTION_DIM)).astype(np.float32)
    log_stds = rng.uniform(-2, 0, size=(B, k, ACTION_DIM)).astype(np.float32)
    action = rng.uniform(-1, 1, size=(B, ACTION_DIM)).astype(np.float32)
    np.testing.assert_allclose(beta_gmm_nll(logits, means, log_stds, action, 0.0),
                               -_numpy_gmm_log_prob(logits, means, log_stds, action), rtol=1e-5, atol=1e-5)
    # The EM form with fixed responsibilities has the NLL's gradient (weights -> 1 as beta -> 0).
    def total(fn):
        return jax.grad(lambda l, m, s: jnp.sum(fn(l, m, s)), argnums=(0, 1, 2))(logits, means, log_stds)
    nll_grads = total(lambda l, m, s: -gmm_log_prob(l, m, s, action))
    em_grads = total(lambda l, m, s: beta_gmm_nll(l, m, s, action, 1e-9))
    for got, want in zip(em_grads, nll_grads):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # One component: exactly the Gaussian beta-NLL.
    np.testing.assert_allclose(beta_gmm_nll(logits[:, :1], means[:, :1], log_stds[:, :1], action, 0.5),
                               losses.beta_gaussian_nll(means[:, 0], log_stds[:, 0], action, 0.5), rtol=1e-5)


def test_tanh_gaussian_beta_nll_is_the_pre_tanh_beta_nll_plus_the_jacobian():
    actions = jnp.clip(jax.random.uniform(jax.random.key(3), (B, ACTION_DIM), minval=-1.0, maxval=1.0), -0.99, 0.99)
    plain, params, obs, _ = _setup("tanh-gaussian")
    weighted = make_head("tanh-gaussian", action_dim=ACTION_DIM, hidden_dims=(16, 16), nll_beta=0.5)
    np.testing.assert_allclose(plain.apply(params, obs, actions, None, method="loss"),
                               -plain.apply(params, obs, actions, method="log_prob"), rtol=1e-6)
    mean, log_std = (np.asarray(x, np.float64) for x in plain.apply(params, obs))
    u = np.arctanh(np.asarray(actions, np.float64))
    per_dim = -stats.norm.logpdf(u, mean, np.exp(log_std)) * np.exp(log_std)  # std^(2 beta), beta = 0.5
    expected = per_dim.sum(-1) + np.log(1 - np.tanh(u) ** 2).sum(-1)
    np.testing.assert_allclose(weighted.apply(params, obs, actions, None, method="loss"), expected, rtol=1e-4,
                               atol=1e-4)


def test_gmm_mode_is_the_most_probable_components_mean_and_samples_follow_the_weights():
    head, params, obs, _ = _setup("gmm")
    logits, means, _ = head.apply(params, obs)
    best = np.argmax(logits, axis=-1)
    np.testing.assert_allclose(head.apply(params, obs, method="mode"),
                               np.clip(np.asarray(means)[np.arange(B), best], -1, 1), rtol=1e-6)
    # Component choice: shrink every std to the minimum so each sample sits on its component's mean.
    narrow = make_head("gmm", action_dim=ACTION_DIM, hidden_dims=(16, 16), log_std_min=-12.0, log_std_max=-11.0)
    one_obs = jnp.tile(obs[:1], (4000, 1))
    samples, (n_logits, n_means, _) = jax.tree_util.tree_map(np.asarray, jax.jit(lambda p: (
        narrow.apply(p, one_obs, jax.random.key(0), method="sample"), narrow.apply(p, obs[:1])))(params))
    distance = np.abs(samples[:, None, :] - np.clip(n_means[0], -1, 1)[None]).max(-1)  # [N, K]
    assert distance.min(-1).max() < 1e-3
    frequencies = np.bincount(distance.argmin(-1), minlength=5) / len(samples)
    np.testing.assert_allclose(frequencies, special.softmax(n_logits[0]), atol=0.03)


def test_gmm_mixture_mean_mode_is_the_weighted_average_of_the_component_means():
    head, params, obs, _ = _setup("gmm")
    mixture = make_head("gmm", action_dim=ACTION_DIM, hidden_dims=(16, 16), mode_rule="mixture-mean")
    logits, means, _ = jax.tree_util.tree_map(np.asarray, head.apply(params, obs))
    expected = np.clip(np.einsum("bk,bka->ba", special.softmax(logits, axis=-1), means), -1, 1)
    np.testing.assert_allclose(mixture.apply(params, obs, method="mode"), expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(expected, head.apply(params, obs, method="mode"))  # the two rules differ here
    with pytest.raises(UnderstudyError, match="mode_rule"):
        make_head("gmm", action_dim=ACTION_DIM, mode_rule="median")
    # The rule is part of the head's config, so a policy export acts with it after loading.
    assert make_head(**head_config("gmm", ACTION_DIM, (16, 16), mode_rule="mixture-mean")) == mixture


# --------------------------------------------------------------------------------------------------
# Diffusion
# --------------------------------------------------------------------------------------------------
def test_cosine_schedule_matches_its_formula():
    steps = 10
    c = ddpm_constants(steps, "cosine")
    f = np.cos((np.arange(steps + 1) / steps + 0.008) / 1.008 * np.pi / 2) ** 2
    expected = np.clip(f[1:] / f[0], 0, None)
    np.testing.assert_allclose(c["alphas_cumprod"][:-1], expected[:-1], rtol=1e-5)
    assert c["alphas_cumprod"][-1] < 1e-3  # the last step is (almost) pure noise
    assert np.all(np.diff(c["alphas_cumprod"]) < 0)
    assert np.all((beta_schedule(5, "vp") > 0) & (beta_schedule(5, "vp") < 1))
    with pytest.raises(ValueError, match="beta_schedule"):
        beta_schedule(10, "quadratic")


@pytest.mark.parametrize("kind", ["cosine", "vp"])
def test_posterior_is_consistent_with_the_forward_marginals(kind):
    # If a_t ~ q(a_t | a_0) and a_{t-1} ~ q(a_{t-1} | a_t, a_0), then a_{t-1} ~ q(a_{t-1} | a_0):
    # mean sqrt(abar_{t-1}) a_0 and variance 1 - abar_{t-1}.
    c = ddpm_constants(8, kind)
    abar = c["alphas_cumprod"].astype(np.float64)
    prev = np.concatenate([[1.0], abar[:-1]])
    np.testing.assert_allclose(c["posterior_coef_x0"] + c["posterior_coef_xt"] * np.sqrt(abar), np.sqrt(prev),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c["posterior_coef_xt"] ** 2 * (1 - abar) + c["posterior_std"] ** 2, 1 - prev,
                               rtol=1e-4, atol=1e-6)


def test_forward_noising_has_the_schedules_statistics():
    abar = ddpm_constants(10)["alphas_cumprod"]
    action = jnp.array([0.7, -0.3, 0.0])
    n = 20000
    step, noise = draw_step_and_noise(jax.random.key(0), (n, 3), 10)
    assert step.shape == (n,) and noise.shape == (n, 3)
    np.testing.assert_allclose(np.bincount(np.asarray(step), minlength=10) / n, 0.1, atol=0.015)
    for t in (0, 4, 9):
        noisy = np.asarray(forward_noise(abar, jnp.broadcast_to(action, (n, 3)), jnp.full((n,), t), noise))
        np.testing.assert_allclose(noisy.mean(0), np.sqrt(abar[t]) * np.asarray(action), atol=0.03)
        np.testing.assert_allclose(noisy.std(0), np.sqrt(1 - abar[t]), rtol=0.03, atol=0.01)


def test_diffusion_loss_is_the_mse_to_the_injected_noise():
    head, params, obs, actions = _setup("diffusion")
    key = jax.random.key(11)
    step, noise = draw_step_and_noise(key, actions.shape, head.num_steps)
    noisy = forward_noise(ddpm_constants(head.num_steps)["alphas_cumprod"], actions, step, noise)
    predicted = head.apply(params, obs, noisy, step)
    expected = np.mean((np.asarray(predicted) - np.asarray(noise)) ** 2, axis=-1)
    np.testing.assert_allclose(head.apply(params, obs, actions, key, method="loss"), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="PRNG key"):
        head.apply(params, obs, actions, None, method="loss")
    with pytest.raises(ValueError, match="action has shape"):
        head.apply(params, obs, actions[:, :2], key, method="loss")


def test_diffusion_mode_is_deterministic_and_samples_are_not():
    head, params, obs, _ = _setup("diffusion")
    act = jax.jit(lambda key: (head.apply(params, obs, method="mode"), head.apply(params, obs, key, method="sample")))
    (mode_1, sample_1), (mode_2, sample_2), (_, other_sample) = act(jax.random.key(1)), act(jax.random.key(1)), \
        act(jax.random.key(2))
    np.testing.assert_array_equal(mode_1, mode_2)
    np.testing.assert_array_equal(sample_1, sample_2)
    assert np.abs(np.asarray(sample_1 - other_sample)).max() > 1e-3


def test_diffusion_single_step_chain_returns_the_clipped_denoised_start():
    # With T = 1 the chain is one step: a_0 = clip((a_1 - sqrt(1 - abar) eps) / sqrt(abar)).
    head, params, obs, _ = _setup("diffusion", num_steps=1)
    abar = ddpm_constants(1)["alphas_cumprod"][0]
    eps = head.apply(params, obs, jnp.zeros((B, ACTION_DIM)), jnp.zeros((B,), jnp.int32))
    np.testing.assert_allclose(head.apply(params, obs, method="mode"),
                               np.clip(-np.sqrt(1 - abar) * np.asarray(eps) / np.sqrt(abar), -1, 1),
                               rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# Autoregressive discretization
# --------------------------------------------------------------------------------------------------
def test_binning_round_trips_within_half_a_bin_and_includes_the_bounds():
    bins = 20
    spacing = 2.0 / (bins - 1)
    a = jnp.concatenate([jnp.linspace(-1.0, 1.0, 1001), jnp.array([-1.5, 1.5])])
    index = action_to_bin(a, bins)
    assert int(index.min()) == 0 and int(index.max()) == bins - 1
    error = np.abs(np.asarray(bin_centre(index, bins)) - np.clip(np.asarray(a), -1, 1))
    assert error.max() <= spacing / 2 + 1e-6
    np.testing.assert_allclose(bin_centre(jnp.array([0, bins - 1]), bins), [-1.0, 1.0])  # saturated actions exactly
    np.testing.assert_array_equal(action_to_bin(bin_centre(jnp.arange(bins), bins), bins), np.arange(bins))
    lower, width = (np.asarray(x) for x in bin_cell(jnp.arange(bins), bins))
    np.testing.assert_allclose(width.sum(), 2.0, rtol=1e-6)  # the cells tile [-1, 1]
    np.testing.assert_allclose(lower[1:], lower[:-1] + width[:-1], atol=1e-6)
    np.testing.assert_allclose(width[[0, -1]], spacing / 2, rtol=1e-5)


def test_autoregressive_conditioning_is_causal():
    head, params, obs, actions = _setup("autoregressive")
    logits = head.apply(params, obs, actions)
    assert logits.shape == (B, ACTION_DIM, 20)
    for j in range(ACTION_DIM):
        changed = head.apply(params, obs, actions.at[:, j].add(0.5))
        np.testing.assert_array_equal(changed[:, : j + 1], logits[:, : j + 1])  # dims <= j cannot see a_j
        if j + 1 < ACTION_DIM:
            assert np.all(np.abs(np.asarray(changed[:, j + 1:] - logits[:, j + 1:])).max(axis=(1, 2)) > 1e-6)


def test_autoregressive_loss_log_prob_and_greedy_mode_match_hand_computations():
    head, params, obs, actions = _setup("autoregressive")
    one_hot_head = make_head("autoregressive", action_dim=ACTION_DIM, hidden_dims=(16, 16), label_smoothing=0.0)
    actions = actions.at[0, 0].set(1.0)  # one action on the bound: its cell is half as wide
    log_softmax = special.log_softmax(np.asarray(head.apply(params, obs, actions), np.float64), -1)
    spacing = 2.0 / 19
    bins = np.rint((np.asarray(actions) + 1) / spacing).astype(int)
    picked = np.take_along_axis(log_softmax, bins[..., None], -1)[..., 0]
    np.testing.assert_allclose(one_hot_head.apply(params, obs, actions, None, method="loss"), -picked.sum(-1),
                               rtol=1e-5)
    widths = np.where((bins == 0) | (bins == 19), spacing / 2, spacing)
    for h in (head, one_hot_head):  # the density does not depend on the training target
        np.testing.assert_allclose(h.apply(params, obs, actions, method="log_prob"),
                                   picked.sum(-1) - np.log(widths).sum(-1), rtol=1e-5)
    # Default loss: cross-entropy against the N(action, spacing^2) mass of each cell (outer cells to +-inf).
    edges = np.concatenate([[-np.inf], -1 + (np.arange(19) + 0.5) * spacing, [np.inf]])
    targets = np.diff(stats.norm.cdf((edges - np.asarray(actions, np.float64)[..., None]) / spacing), axis=-1)
    np.testing.assert_allclose(targets.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(head.apply(params, obs, actions, None, method="loss"),
                               -(targets * log_softmax).sum((-2, -1)), rtol=1e-5)
    # Greedy decoding, one dimension at a time through the teacher-forced logits.
    partial = jnp.zeros((B, ACTION_DIM))
    for d in range(ACTION_DIM):
        best = jnp.argmax(head.apply(params, obs, partial)[:, d], axis=-1)
        partial = partial.at[:, d].set(bin_centre(best, 20))
    np.testing.assert_allclose(head.apply(params, obs, method="mode"), partial, atol=1e-6)


def test_autoregressive_density_integrates_to_one_and_samples_stay_in_their_bins():
    bins, n = 6, 3000
    head = make_head("autoregressive", action_dim=1, hidden_dims=(8,), num_bins=bins)
    centred = make_head("autoregressive", action_dim=1, hidden_dims=(8,), num_bins=bins, uniform_within_bin=False)
    centres = bin_centre(jnp.arange(bins), bins)

    obs = jax.random.normal(jax.random.key(0), (1, 5))

    @jax.jit
    def run(params):
        log_density = jax.vmap(lambda c: head.apply(params, obs, jnp.full((1, 1), c), method="log_prob")[0])(centres)
        many = jnp.tile(obs, (n, 1))
        return (jnp.exp(log_density), head.apply(params, many, jax.random.key(2), method="sample")[:, 0],
                centred.apply(params, many, jax.random.key(3), method="sample")[:, 0])

    density, samples, centre_samples = jax.tree_util.tree_map(np.asarray, run(_random_params(head, obs)))
    probabilities = density * np.asarray(bin_cell(jnp.arange(bins), bins)[1])  # the density is flat in each cell
    np.testing.assert_allclose(probabilities.sum(), 1.0, rtol=1e-5)
    assert len(np.unique(samples)) > 100  # uniform within cells, not only the bin values
    frequencies = np.bincount(np.asarray(action_to_bin(samples, bins)), minlength=bins) / n
    np.testing.assert_allclose(frequencies, probabilities, atol=0.03)
    assert set(np.round(np.unique(centre_samples), 5)) <= set(np.round(np.asarray(centres), 5))


def test_bc_passes_head_options_to_the_head_and_its_export():
    from understudy.algos import bc

    for head, option, field, value in (("gmm", "num_components", "num_components", 3),
                                       ("gmm", "nll_beta", "nll_beta", 0.25),
                                       ("gaussian", "nll_beta", "nll_beta", 0.0),
                                       ("tanh-gaussian", "nll_beta", "nll_beta", 0.3),
                                       ("gmm", "log_std_min", "log_std_min", -2.5),
                                       ("gmm", "gmm_mode_rule", "mode_rule", "mixture-mean"),
                                       ("gaussian", "log_std_min", "log_std_min", -3.0),
                                       ("tanh-gaussian", "log_std_min", "log_std_min", -4.0),
                                       ("diffusion", "diffusion_steps", "num_steps", 4),
                                       ("autoregressive", "num_bins", "num_bins", 7)):
        cfg = bc.Config(head=head, hidden_dims=(8,), **{option: value})
        assert getattr(bc._head(cfg, 2), field) == value
        assert bc.head_options(cfg)[field] == value
    assert bc.head_options(bc.Config(head="gmm")) == {"num_components": 5, "mode_rule": "top-component", "nll_beta": 0.5,
                                                         "log_std_min": -5.0}
    assert bc.head_options(bc.Config(head="mse")) == {}


def test_a_higher_log_std_floor_bounds_every_gmm_std_from_below():
    obs = jax.random.normal(jax.random.PRNGKey(0), (64, 3)) * 10.0  # large inputs push the raw log-stds to both ends
    for floor in (-5.0, -2.5):
        head = make_head("gmm", action_dim=2, hidden_dims=(16,), num_components=3, log_std_min=floor)
        params = head.init(jax.random.PRNGKey(1), obs)
        params = jax.tree_util.tree_map(lambda p: p * 20.0, params)
        _, _, log_stds = head.apply(params, obs)
        assert float(log_stds.min()) >= floor - 1e-5
        assert float(log_stds.min()) < floor + 0.5  # the floor is reached, so it is what binds
