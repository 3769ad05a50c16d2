"""The algorithm contract for SAC and BC: init/update/act/policy_export, jit, lax.scan, vmap over seeds,
and quick learning sanity checks on synthetic data."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from understudy.algos import bc, get_algorithm, sac
from understudy.nets.heads import make_head
from understudy.types import ArraySpec, Batch, EnvSpec, UnderstudyError

OBS_DIM, ACTION_DIM, NUM_ACTIONS, B = 4, 2, 3, 32
CONTINUOUS = EnvSpec("Synthetic-v0", "gymnasium", ArraySpec((OBS_DIM,), "float32"),
                     ArraySpec((ACTION_DIM,), "float32", (-1.0,) * ACTION_DIM, (1.0,) * ACTION_DIM))
DISCRETE = EnvSpec("SyntheticDiscrete-v0", "gymnasium", ArraySpec((OBS_DIM,), "float32"), ArraySpec((), "int64"),
                   num_actions=NUM_ACTIONS)
SAC_CFG = sac.Config(hidden_dims=(32, 32), batch_size=B)
BC_CFG = bc.Config(hidden_dims=(32, 32), batch_size=B)
CASES = [(sac, SAC_CFG, CONTINUOUS), (bc, BC_CFG, CONTINUOUS),
         (bc, bc.Config(head="tanh-gaussian", hidden_dims=(32, 32)), CONTINUOUS),
         (bc, bc.Config(head="categorical", hidden_dims=(32, 32)), DISCRETE)]
IDS = ["sac", "bc-mse", "bc-tanh-gaussian", "bc-categorical"]


def random_batch(seed, spec=CONTINUOUS, batch_size=B, lead=()):
    """A batch of random transitions (numpy-generated: eager jax.random ops are slow to dispatch)."""
    rng = np.random.default_rng(seed)
    shape = (*lead, batch_size)
    if spec.discrete:
        actions = rng.integers(0, spec.num_actions, shape).astype(np.int32)
    else:
        actions = rng.uniform(-1.0, 1.0, (*shape, spec.action_dim)).astype(np.float32)
    return jax.tree.map(jnp.asarray, Batch(
        observations=rng.normal(size=(*shape, OBS_DIM)).astype(np.float32), actions=actions,
        rewards=rng.normal(size=shape).astype(np.float32),
        terminations=(rng.uniform(size=shape) < 0.2).astype(np.float32),
        next_observations=rng.normal(size=(*shape, OBS_DIM)).astype(np.float32)))


def _numeric(x):
    return jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x


def leaves_differ(a, b) -> bool:
    return any(not np.allclose(_numeric(x), _numeric(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def assert_trees_close(a, b, rtol=2e-4, atol=2e-5):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(_numeric(x), _numeric(y), rtol=rtol, atol=atol)


@functools.lru_cache(maxsize=None)
def jitted_update(mod, cfg):
    """One compiled update per (algorithm, config), shared by the tests (eager updates take seconds)."""
    return jax.jit(functools.partial(mod.update, cfg))


def policy_params(mod, state):
    return state.actor_params if mod is sac else state.params


def test_registry_finds_both_modules():
    assert get_algorithm("sac") is sac and get_algorithm("bc") is bc
    with pytest.raises(UnderstudyError, match="Unknown algorithm"):
        get_algorithm("nope")


@pytest.mark.parametrize("mod,cfg,spec", CASES, ids=IDS)
def test_update_under_jit_gives_finite_scalar_metrics_and_changes_params(mod, cfg, spec):
    state = mod.init(cfg, spec, jax.random.key(0))
    assert int(state.step) == 0
    new_state, metrics = jitted_update(mod, cfg)(state, random_batch(1, spec))
    assert int(new_state.step) == 1
    assert metrics and all(np.shape(v) == () and np.isfinite(v) for v in metrics.values())
    assert leaves_differ(policy_params(mod, state), policy_params(mod, new_state))
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    # Parameters are plain nested dicts of arrays (what the safetensors export flattens).
    params = policy_params(mod, new_state)
    assert isinstance(params, dict) and all(isinstance(x, jax.Array) for x in jax.tree.leaves(params))


@pytest.mark.parametrize("mod,cfg,spec", CASES[:2], ids=IDS[:2])
def test_lax_scan_over_k_updates(mod, cfg, spec):
    K = 5
    state = mod.init(cfg, spec, jax.random.key(0))
    batches = random_batch(1, spec, lead=(K,))

    @jax.jit
    def run(state, batches):
        return jax.lax.scan(lambda s, b: mod.update(cfg, s, b), state, batches)

    final, metrics = run(state, batches)
    assert int(final.step) == K
    assert all(v.shape == (K,) and np.all(np.isfinite(v)) for v in metrics.values())
    # The scan is the same computation as K separate updates.
    stepwise = state
    for i in range(K):
        stepwise, _ = jitted_update(mod, cfg)(stepwise, jax.tree.map(lambda x: x[i], batches))
    assert_trees_close(final, stepwise)


@pytest.mark.parametrize("mod,cfg,spec", CASES[:2], ids=IDS[:2])
def test_vmap_over_seeds(mod, cfg, spec):
    S = 3
    keys = jax.random.split(jax.random.key(0), S)
    singles = [mod.init(cfg, spec, k) for k in keys]
    states = jax.tree.map(lambda *xs: jnp.stack(xs), *singles)
    if mod is bc:  # vmapping init itself works the same way (skipped for SAC only to save a slow compile)
        assert_trees_close(jax.vmap(functools.partial(mod.init, cfg, spec))(keys), states, rtol=1e-6, atol=1e-7)
    batches = random_batch(1, spec, lead=(S,))
    new_states, metrics = jax.jit(jax.vmap(functools.partial(mod.update, cfg)))(states, batches)
    assert all(v.shape == (S,) and np.all(np.isfinite(v)) for v in metrics.values())
    leaves = jax.tree.leaves(policy_params(mod, new_states))
    for i in range(S):
        for j in range(i + 1, S):
            assert any(not np.allclose(x[i], x[j]) for x in leaves), f"seeds {i} and {j} have identical params"
    # Seed 1 of the vmapped update equals updating seed 1 alone.
    one = jax.tree.map(lambda x: x[1], states)
    alone, _ = jitted_update(mod, cfg)(one, jax.tree.map(lambda x: x[1], batches))
    assert_trees_close(jax.tree.map(lambda x: x[1], new_states), alone)


@pytest.mark.parametrize("mod,cfg,spec", CASES, ids=IDS)
def test_act_shapes_bounds_and_repeatability(mod, cfg, spec):
    state = mod.init(cfg, spec, jax.random.key(0))
    obs = 3.0 * jax.random.normal(jax.random.key(1), (64, OBS_DIM))
    act = jax.jit(functools.partial(mod.act, cfg), static_argnames="deterministic")
    det = act(state, obs, jax.random.key(2), deterministic=True)
    np.testing.assert_array_equal(det, act(state, obs, jax.random.key(3), deterministic=True))
    s1 = act(state, obs, jax.random.key(2), deterministic=False)
    s2 = act(state, obs, jax.random.key(3), deterministic=False)
    np.testing.assert_array_equal(s1, act(state, obs, jax.random.key(2), deterministic=False))
    if spec.discrete:
        assert det.shape == (64,) and det.dtype == jnp.int32 and np.all((s1 >= 0) & (s1 < NUM_ACTIONS))
    else:
        assert det.shape == s1.shape == (64, ACTION_DIM)
        assert np.all(np.abs(np.asarray(s1)) <= 1.0) and np.all(np.abs(np.asarray(det)) <= 1.0)
    if not (mod is bc and cfg.head == "mse"):
        assert not np.array_equal(s1, s2)


@pytest.mark.parametrize("mod,cfg,spec", CASES, ids=IDS)
def test_policy_export_rebuilds_the_acting_policy(mod, cfg, spec):
    state = mod.init(cfg, spec, jax.random.key(0))
    config, params = mod.policy_export(cfg, state)
    assert config["action_dim"] == spec.action_dim and config["hidden_dims"] == [32, 32]
    obs = jax.random.normal(jax.random.key(1), (8, OBS_DIM))
    np.testing.assert_array_equal(make_head(**config).apply(params, obs, method="mode"),
                                  mod.act(cfg, state, obs, jax.random.key(2), deterministic=True))


# -- SAC specifics ---------------------------------------------------------------------------------
def test_sac_init_shapes_and_targets():
    state = sac.init(SAC_CFG, CONTINUOUS, jax.random.key(0))
    critic = state.critic_params["params"]["qs"]["mlp"]
    assert critic["dense_0"]["kernel"].shape == (2, OBS_DIM + ACTION_DIM, 32)
    assert critic["output"]["kernel"].shape == (2, 32, 1)
    assert not np.allclose(critic["dense_0"]["kernel"][0], critic["dense_0"]["kernel"][1])  # independent members
    assert not leaves_differ(state.critic_params, state.target_critic_params)
    assert float(jnp.exp(state.log_alpha)) == pytest.approx(1.0)


def test_sac_target_critics_move_by_tau():
    state = sac.init(SAC_CFG, CONTINUOUS, jax.random.key(0))
    new, _ = jitted_update(sac, SAC_CFG)(state, random_batch(1))
    expected = jax.tree.map(lambda new_p, old_t: SAC_CFG.tau * new_p + (1 - SAC_CFG.tau) * old_t,
                            new.critic_params, state.target_critic_params)
    for x, y in zip(jax.tree.leaves(new.target_critic_params), jax.tree.leaves(expected)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)


def test_sac_temperature_autotunes():
    state = sac.init(SAC_CFG, CONTINUOUS, jax.random.key(0))
    new, metrics = jitted_update(sac, SAC_CFG)(state, random_batch(1))
    assert float(new.log_alpha) != float(state.log_alpha)
    # Entropy above the target -A lowers alpha; below raises it.
    assert (float(new.log_alpha) < float(state.log_alpha)) == (float(metrics["entropy"]) > -ACTION_DIM)


def test_sac_critic_learns_terminal_rewards():
    """All transitions terminal with reward r(s) = s_0: Q(s, a) must regress onto s_0 (finite throughout).

    Runs with a fixed temperature, which must then stay at `alpha`.
    """
    cfg = sac.Config(hidden_dims=(32, 32), batch_size=B, autotune=False, alpha=0.3)
    obs = jax.random.normal(jax.random.key(0), (512, OBS_DIM))
    actions = jax.random.uniform(jax.random.key(1), (512, ACTION_DIM), minval=-1, maxval=1)

    def step(state, key):
        idx = jax.random.randint(key, (B,), 0, 512)
        batch = Batch(obs[idx], actions[idx], obs[idx, 0], jnp.ones(B), obs[idx])
        return sac.update(cfg, state, batch)

    run = jax.jit(lambda s, keys: jax.lax.scan(step, s, keys))
    state = sac.init(cfg, CONTINUOUS, jax.random.key(2))
    for i in range(6):  # 6 x 50 updates through one compiled scan
        state, metrics = run(state, jax.random.split(jax.random.key(3 + i), 50))
        assert np.all(np.isfinite(np.stack(list(metrics.values()))))
    assert float(jnp.exp(state.log_alpha)) == pytest.approx(0.3) and np.allclose(metrics["alpha"], 0.3)
    q = sac.critic_network(cfg).apply(state.critic_params, obs, actions)
    assert float(jnp.mean((q - obs[None, :, 0]) ** 2)) < 0.05  # started near Var(s_0) = 1


def test_sac_rejects_discrete_actions():
    with pytest.raises(UnderstudyError, match="discrete"):
        sac.init(SAC_CFG, DISCRETE, jax.random.key(0))


# -- BC specifics ----------------------------------------------------------------------------------
def _linear_expert_data(key, n=2048, discrete=False):
    k_obs, k_w = jax.random.split(key)
    obs = jax.random.normal(k_obs, (n, OBS_DIM))
    if discrete:
        actions = jnp.argmax(obs @ jax.random.normal(k_w, (OBS_DIM, NUM_ACTIONS)), axis=-1)
    else:
        actions = jnp.tanh(obs @ (0.5 * jax.random.normal(k_w, (OBS_DIM, ACTION_DIM))))
    return obs, actions


def _train_bc(cfg, spec, obs, actions, steps):
    zeros = jnp.zeros(cfg.batch_size)

    def step(state, key):
        idx = jax.random.randint(key, (cfg.batch_size,), 0, obs.shape[0])
        return bc.update(cfg, state, Batch(obs[idx], actions[idx], zeros, zeros, obs[idx]))

    run = jax.jit(lambda s, keys: jax.lax.scan(step, s, keys))
    return run(bc.init(cfg, spec, jax.random.key(0)), jax.random.split(jax.random.key(1), steps))


def test_bc_mse_learns_a_linear_expert():
    cfg = bc.Config(hidden_dims=(64, 64), batch_size=64, lr=3e-3)
    obs, actions = _linear_expert_data(jax.random.key(5))
    state, metrics = _train_bc(cfg, CONTINUOUS, obs, actions, 400)
    held_out_obs, held_out_actions = _linear_expert_data(jax.random.key(5), n=4096)
    held_out = Batch(held_out_obs[2048:], held_out_actions[2048:], None, None, None)
    val_loss = bc.evaluate_loss(cfg, state, held_out)
    assert float(val_loss) < 0.01 and float(metrics["loss"][0]) > 10 * float(val_loss)
    assert float(bc.evaluate_loss(cfg, state, held_out)) == float(val_loss)  # no state change, no randomness
    predicted = bc.act(cfg, state, held_out.observations, jax.random.key(0), deterministic=True)
    assert float(jnp.mean(jnp.abs(predicted - held_out.actions))) < 0.1


def test_bc_categorical_learns_a_linear_classifier():
    cfg = bc.Config(head="categorical", hidden_dims=(64, 64), batch_size=64, lr=3e-3)
    obs, actions = _linear_expert_data(jax.random.key(6), discrete=True)
    state, metrics = _train_bc(cfg, DISCRETE, obs, actions, 400)
    assert float(metrics["loss"][-20:].mean()) < 0.5 * float(metrics["loss"][:5].mean())
    accuracy = jnp.mean(bc.act(cfg, state, obs, jax.random.key(0), deterministic=True) == actions)
    assert float(accuracy) > 0.9


def test_bc_heads_must_match_the_action_space():
    with pytest.raises(UnderstudyError, match="--head categorical"):
        bc.init(bc.Config(head="mse"), DISCRETE, jax.random.key(0))
    with pytest.raises(UnderstudyError, match="continuous actions"):
        bc.init(bc.Config(head="categorical"), CONTINUOUS, jax.random.key(0))
    with pytest.raises(UnderstudyError, match="not an action head"):
        bc.init(bc.Config(head="nope"), CONTINUOUS, jax.random.key(0))


def test_bc_gaussian_head_and_grad_clipping_run():
    cfg = bc.Config(head="gaussian", hidden_dims=(32, 32), max_grad_norm=1.0, weight_decay=0.0)
    state = bc.init(cfg, CONTINUOUS, jax.random.key(0))
    new, metrics = jitted_update(bc, cfg)(state, random_batch(1))
    assert np.isfinite(metrics["loss"]) and leaves_differ(state.params, new.params)
