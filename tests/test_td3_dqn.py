"""TD3 and DQN: their losses numerically, the algorithm contract (shapes, finite metrics, jit + scan + vmap over
seeds, exports that load with understudy.load_policy) and quick learning checks on synthetic data."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from understudy.algos import dqn, losses, td3
from understudy.checkpoint import export_policy
from understudy.policy import load_policy, to_env_action
from understudy.types import ArraySpec, Batch, EnvSpec, UnderstudyError

OBS_DIM, ACTION_DIM, NUM_ACTIONS, B = 4, 2, 3, 64
CONTINUOUS = EnvSpec("Synthetic-v0", "gymnasium", ArraySpec((OBS_DIM,), "float32"),
                     ArraySpec((ACTION_DIM,), "float32", (-2.0, 0.0), (2.0, 1.0)))
DISCRETE = EnvSpec("SyntheticDiscrete-v0", "gymnasium", ArraySpec((OBS_DIM,), "float32"), ArraySpec((), "int64"),
                   num_actions=NUM_ACTIONS)
# One config per algorithm for (almost) every test: each distinct config costs its own compilations.
TD3_CFG = td3.Config(hidden_dims=(64, 64), batch_size=B, actor_lr=1e-3, critic_lr=1e-3)
DQN_CFG = dqn.Config(hidden_dims=(64, 64), batch_size=B, lr=3e-3, loss="huber", max_grad_norm=10.0,
                     target_update_interval=3, learning_starts=0, updates_per_step=1.0, epsilon_start=1.0,
                     epsilon_end=0.0, exploration_steps=20_000)
K = 10  # updates per scanned call


def random_batch(seed, spec, batch_size=B, lead=()):
    """Random transitions (numpy-generated: eager jax.random ops are slow to dispatch)."""
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


def trees_close(a, b, rtol=2e-4, atol=2e-5) -> bool:
    return all(np.allclose(_numeric(x), _numeric(y), rtol=rtol, atol=atol)
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


@functools.lru_cache(maxsize=None)
def jitted_update(mod, cfg):
    """One compiled update per (algorithm, config), shared by the tests."""
    return jax.jit(functools.partial(mod.update, cfg))


@functools.lru_cache(maxsize=None)
def jitted_act(mod, cfg):
    return jax.jit(functools.partial(mod.act, cfg), static_argnames="deterministic")


@functools.lru_cache(maxsize=None)
def vmapped_scan(mod, cfg):
    """jit(vmap over seeds(scan of K updates)), the shape of the training loops' inner program."""
    def run(states, batches):
        return jax.vmap(lambda st, b: jax.lax.scan(functools.partial(mod.update, cfg), st, b))(states, batches)
    return jax.jit(run)


def stack(trees):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def seed_slice(tree, s):
    return jax.tree.map(lambda x: x[s], tree)


def bandit_batches(rng, obs, actions, rewards, seeds):
    """[seeds, K, B] terminal transitions drawn from a fixed one-step data set (next obs irrelevant)."""
    idx = rng.integers(0, len(obs), (seeds, K, B))
    return Batch(obs[idx], actions[idx], rewards[idx], jnp.ones(idx.shape), obs[idx])


def polyak(new, old, tau):
    return jax.tree.map(lambda n, o: tau * n + (1 - tau) * o, new, old)


# -- losses ------------------------------------------------------------------------------------------
def test_td_target_masks_bootstrapping_on_termination():
    got = losses.td_target(jnp.array([1.0, 2.0, -1.0]), jnp.array([0.0, 1.0, 0.0]), jnp.array([10.0, 10.0, 4.0]),
                           gamma=0.9)
    np.testing.assert_allclose(got, [1 + 9.0, 2.0, -1 + 3.6], rtol=1e-6)


def test_deterministic_actor_loss_is_minus_mean_q():
    assert float(losses.deterministic_actor_loss(jnp.array([1.0, -3.0, 5.0]))) == pytest.approx(-1.0)


def test_q_of_actions_and_next_state_value_double_vs_max():
    target_next = jnp.array([[1.0, 5.0, 0.0], [3.0, 2.0, 7.0]])
    online_next = jnp.array([[2.0, 1.0, 0.0], [0.0, 4.0, 1.0]])
    np.testing.assert_array_equal(losses.q_of_actions(target_next, jnp.array([2, 0])), [0.0, 3.0])
    # Max DQN: the target network's own max. Double DQN: online argmax (0, 1) valued by the target net.
    np.testing.assert_array_equal(losses.next_state_value(target_next), [5.0, 7.0])
    np.testing.assert_array_equal(losses.next_state_value(target_next, online_next), [1.0, 2.0])


def test_huber_matches_smooth_l1_and_is_continuous():
    x = jnp.array([-3.0, -0.5, 0.0, 0.5, 2.0])
    np.testing.assert_allclose(losses.huber(x), [2.5, 0.125, 0.0, 0.125, 1.5], rtol=1e-6)
    np.testing.assert_allclose(losses.huber(x, delta=2.0), [4.0, 0.125, 0.0, 0.125, 2.0], rtol=1e-6)
    # Value and slope agree on both sides of |x| = delta.
    edge = jnp.array([1.0 - 1e-4, 1.0 + 1e-4])
    np.testing.assert_allclose(losses.huber(edge), [0.5 - 1e-4, 0.5 + 1e-4], atol=1e-6)
    np.testing.assert_allclose(jax.vmap(jax.grad(losses.huber))(edge), [1.0 - 1e-4, 1.0], atol=1e-6)


def test_q_regression_loss_values_and_stopped_target():
    q, target = jnp.array([0.0, 1.0, 5.0]), jnp.array([0.5, 1.0, 2.0])
    assert float(losses.q_regression_loss(q, target, "mse")) == pytest.approx((0.25 + 0 + 9) / 3)
    assert float(losses.q_regression_loss(q, target, "huber")) == pytest.approx((0.125 + 0 + 2.5) / 3)
    np.testing.assert_array_equal(jax.grad(lambda t: losses.q_regression_loss(q, t, "huber"))(target), 0.0)
    with pytest.raises(ValueError, match="huber"):
        losses.q_regression_loss(q, target, "l1")


def test_linear_schedule_ramps_then_holds():
    got = losses.linear_schedule(1.0, 0.1, 100, jnp.array([0.0, 25.0, 100.0, 1e6]))
    np.testing.assert_allclose(got, [1.0, 0.775, 0.1, 0.1], rtol=1e-6)
    np.testing.assert_allclose(losses.linear_schedule(1.0, 0.1, 0, jnp.array([0.0, 5.0])), [0.1, 0.1])


@pytest.mark.parametrize("call", [
    lambda: losses.td_target(jnp.zeros(4), jnp.zeros((4, 1)), jnp.zeros(4), 0.99),
    lambda: losses.deterministic_actor_loss(jnp.zeros((2, 4))),
    lambda: losses.q_of_actions(jnp.zeros((4, 3)), jnp.zeros((4, 1), jnp.int32)),
    lambda: losses.next_state_value(jnp.zeros((4, 3)), jnp.zeros((4, 2))),
    lambda: losses.q_regression_loss(jnp.zeros(4), jnp.zeros((4, 1))),
    lambda: td3.smoothed_target_action(jnp.zeros((4, 2)), jnp.zeros((4, 1)), 0.5),
])
def test_shape_mismatches_raise(call):
    with pytest.raises(ValueError, match="shape"):
        call()


def test_td3_target_smoothing_clips_noise_then_action():
    target_action = jnp.array([[0.0, 0.9], [-0.8, 0.2]])
    noise = jnp.array([[0.7, 0.3], [-0.1, -2.0]])
    got = td3.smoothed_target_action(target_action, noise, noise_clip=0.5)
    np.testing.assert_allclose(got, [[0.5, 1.0], [-0.9, -0.3]], rtol=1e-6)


# -- TD3 ---------------------------------------------------------------------------------------------
def test_td3_init_shapes_and_targets():
    state = td3.init(TD3_CFG, CONTINUOUS, jax.random.key(0))
    critic = state.critic_params["params"]["qs"]["mlp"]
    assert critic["dense_0"]["kernel"].shape == (2, OBS_DIM + ACTION_DIM, 64)
    assert critic["output"]["kernel"].shape == (2, 64, 1)
    assert not np.allclose(critic["dense_0"]["kernel"][0], critic["dense_0"]["kernel"][1])
    assert state.actor_params["params"]["action_layer"]["kernel"].shape == (64, ACTION_DIM)
    assert trees_close(state.target_critic_params, state.critic_params, 0, 0)
    assert trees_close(state.target_actor_params, state.actor_params, 0, 0)


def test_td3_delays_the_actor_and_target_updates():
    """Update 1 trains the critics only; update 2 also the actor, and moves both targets by tau."""
    update = jitted_update(td3, TD3_CFG)
    s0 = td3.init(TD3_CFG, CONTINUOUS, jax.random.key(0))
    s1, m1 = update(s0, random_batch(1, CONTINUOUS))
    assert int(s1.step) == 1 and float(m1["actor_step"]) == 0.0
    assert all(np.shape(v) == () and np.isfinite(v) for v in m1.values())
    assert float(m1["actor_loss"]) == 0.0  # no actor work on critic-only updates (mean_metrics skips them)
    assert not trees_close(s1.critic_params, s0.critic_params)
    assert trees_close(s1.actor_params, s0.actor_params, 0, 0)
    assert trees_close(s1.target_critic_params, s0.target_critic_params, 0, 0)
    assert trees_close(s1.target_actor_params, s0.target_actor_params, 0, 0)

    s2, m2 = update(s1, random_batch(2, CONTINUOUS))
    assert float(m2["actor_step"]) == 1.0 and np.isfinite(float(m2["actor_loss"])) and float(m2["actor_loss"]) != 0.0
    assert not trees_close(s2.actor_params, s1.actor_params)
    assert trees_close(s2.target_actor_params, polyak(s2.actor_params, s1.target_actor_params, TD3_CFG.tau), 1e-5, 1e-7)
    assert trees_close(s2.target_critic_params, polyak(s2.critic_params, s1.target_critic_params, TD3_CFG.tau),
                       1e-5, 1e-7)


def test_td3_learns_a_bandit_under_vmap_and_scan_like_single_seeds():
    """Terminal transitions with reward -|a - a*|^2, a* = (0.5, -0.3), two seeds vmapped, K updates per scan.

    Seed 1 of the first call equals K jitted updates of seed 1 alone; after 1000 updates both seeds' actors
    choose actions near a* (early on an actor may sit in a saturated corner of the box for a few hundred
    updates; the critics' fit of the quadratic limits the final precision).
    """
    rng = np.random.default_rng(0)
    best = np.array([0.5, -0.3], np.float32)
    obs = rng.normal(size=(1024, OBS_DIM)).astype(np.float32)
    actions = rng.uniform(-1, 1, (1024, ACTION_DIM)).astype(np.float32)
    rewards = -np.sum((actions - best) ** 2, axis=-1)
    init = [td3.init(TD3_CFG, CONTINUOUS, jax.random.key(s)) for s in (1, 2)]
    states, run = stack(init), vmapped_scan(td3, TD3_CFG)

    batches = bandit_batches(rng, obs, actions, rewards, 2)
    states, metrics = run(states, batches)
    assert all(v.shape == (2, K) and np.all(np.isfinite(v)) for v in metrics.values())
    np.testing.assert_array_equal(metrics["actor_step"][0], [0, 1] * (K // 2))
    single = init[1]
    for i in range(K):
        single, _ = jitted_update(td3, TD3_CFG)(single, jax.tree.map(lambda x: x[1, i], batches))
    assert trees_close(seed_slice(states, 1), single)

    first_loss = metrics["critic_loss"].mean()
    for _ in range(1000 // K - 1):
        states, metrics = run(states, bandit_batches(rng, obs, actions, rewards, 2))
    assert np.all(np.isfinite(np.stack(list(metrics.values()))))
    assert float(metrics["critic_loss"].mean()) < 0.05 * float(first_loss)
    for s in range(2):
        chosen = np.asarray(jitted_act(td3, TD3_CFG)(seed_slice(states, s), obs[:256], jax.random.key(0),
                                                     deterministic=True))
        # Uniform random actions are 1.0 away from a* in mean squared distance, the corner (1, -1) 0.74.
        assert np.mean(np.sum((chosen - best) ** 2, axis=-1)) < 0.15, chosen.mean(0)


def test_td3_act_bounds_noise_and_repeatability():
    state = td3.init(TD3_CFG, CONTINUOUS, jax.random.key(0))
    obs = jax.random.normal(jax.random.key(1), (512, OBS_DIM))
    act = jitted_act(td3, TD3_CFG)
    det = act(state, obs, jax.random.key(2), deterministic=True)
    np.testing.assert_array_equal(det, act(state, obs, jax.random.key(3), deterministic=True))
    noisy = act(state, obs, jax.random.key(2), deterministic=False)
    np.testing.assert_array_equal(noisy, act(state, obs, jax.random.key(2), deterministic=False))
    assert det.shape == noisy.shape == (512, ACTION_DIM)
    assert np.all(np.abs(np.asarray(noisy)) <= 1.0)
    # Away from the bounds clipping needs a 4-sigma draw, so there the noise std is exploration_noise.
    inside = np.abs(np.asarray(det)) < 0.6
    assert inside.mean() > 0.5
    assert float(np.std(np.asarray(noisy - det)[inside])) == pytest.approx(TD3_CFG.exploration_noise, rel=0.1)


def test_td3_export_loads_and_acts_like_the_agent(tmp_path):
    state = td3.init(TD3_CFG, CONTINUOUS, jax.random.key(0))
    state, _ = jitted_update(td3, TD3_CFG)(state, random_batch(1, CONTINUOUS))
    head, params = td3.policy_export(TD3_CFG, state)
    assert head == {"name": "mse", "action_dim": ACTION_DIM, "hidden_dims": [64, 64]}
    export_policy(tmp_path / "td3", head_config=head, params=params, spec=CONTINUOUS)
    policy = load_policy(tmp_path / "td3")
    obs = np.random.default_rng(0).normal(size=(512, OBS_DIM)).astype(np.float32)
    greedy = np.asarray(jitted_act(td3, TD3_CFG)(state, obs, jax.random.key(0), deterministic=True))
    np.testing.assert_allclose(policy(obs), to_env_action(greedy, CONTINUOUS), rtol=1e-6, atol=1e-6)
    # The loaded policy acts in the env's bounds: [-2, 2] x [0, 1], not [-1, 1].
    assert np.ptp(policy(obs)[:, 0]) > np.ptp(greedy[:, 0]) and np.all(policy(obs)[:, 1] >= 0)


def test_td3_rejects_discrete_actions_and_bad_settings():
    with pytest.raises(UnderstudyError, match="continuous actions"):
        td3.init(TD3_CFG, DISCRETE, jax.random.key(0))
    with pytest.raises(UnderstudyError, match="policy-frequency"):
        td3.init(dataclasses.replace(TD3_CFG, policy_frequency=0), CONTINUOUS, jax.random.key(0))


def test_td3_presets():
    assert td3.PRESETS["cleanrl"] == td3.Config()
    cpu = td3.PRESETS["cpu"]
    assert cpu.learning_starts < td3.Config().learning_starts and cpu.hidden_dims == (256, 256)
    assert (cpu.batch_size, cpu.gamma, cpu.tau, cpu.policy_frequency) == (256, 0.99, 0.005, 2)


# -- DQN ---------------------------------------------------------------------------------------------
def _q_values(cfg, params, obs):
    return dqn._q_network(cfg, NUM_ACTIONS).apply(params, obs)


@pytest.mark.parametrize("double", [True, False], ids=["double", "max"])
def test_dqn_update_regresses_on_the_double_or_max_target(double):
    cfg = DQN_CFG if double else dataclasses.replace(DQN_CFG, double=False)
    state = dqn.init(DQN_CFG, DISCRETE, jax.random.key(0))
    # A target network that differs from the online one, so double and max targets differ.
    state = state.replace(target_params=dqn.init(DQN_CFG, DISCRETE, jax.random.key(9)).params)
    batch = random_batch(1, DISCRETE)
    new, metrics = jitted_update(dqn, cfg)(state, batch)
    assert int(new.step) == 1 and all(np.shape(v) == () and np.isfinite(v) for v in metrics.values())
    target_next = np.asarray(_q_values(cfg, state.target_params, batch.next_observations))
    if double:
        chosen = np.argmax(np.asarray(_q_values(cfg, state.params, batch.next_observations)), axis=1)
        next_value = target_next[np.arange(B), chosen]
    else:
        next_value = target_next.max(axis=1)
    target = np.asarray(batch.rewards) + cfg.gamma * (1 - np.asarray(batch.terminations)) * next_value
    q = np.asarray(_q_values(cfg, state.params, batch.observations))[np.arange(B), np.asarray(batch.actions)]
    error = np.abs(q - target)
    huber = np.where(error <= 1, 0.5 * error ** 2, error - 0.5)
    assert float(metrics["target_mean"]) == pytest.approx(target.mean(), rel=1e-5, abs=1e-6)
    assert float(metrics["loss"]) == pytest.approx(huber.mean(), rel=1e-5)
    assert not trees_close(new.params, state.params)
    assert trees_close(new.target_params, state.target_params, 0, 0)


def test_dqn_target_network_is_copied_every_interval_or_averaged():
    update = jitted_update(dqn, DQN_CFG)  # target_update_interval=3, tau=1
    state = dqn.init(DQN_CFG, DISCRETE, jax.random.key(0))
    initial = state.params
    for i in range(3):
        state, _ = update(state, random_batch(i, DISCRETE))
        if i < 2:
            assert trees_close(state.target_params, initial, 0, 0)
    assert not trees_close(state.params, initial) and trees_close(state.target_params, state.params, 0, 0)

    soft = dataclasses.replace(DQN_CFG, tau=0.25, target_update_interval=1)
    s0 = dqn.init(DQN_CFG, DISCRETE, jax.random.key(0))
    s1, _ = jitted_update(dqn, soft)(s0, random_batch(0, DISCRETE))
    assert trees_close(s1.target_params, polyak(s1.params, s0.target_params, 0.25), 1e-5, 1e-7)


def test_dqn_epsilon_follows_env_steps_derived_from_the_update_count():
    cfg = dqn.PRESETS["mountaincar"]  # learning_starts 1000, 0.5 updates/step, 1.0 -> 0.07 over 24k steps
    steps = jnp.array([0, 5_000, 11_500, 1_000_000])
    np.testing.assert_allclose(dqn.env_steps(cfg, steps), [1_000, 11_000, 24_000, 2_001_000])
    np.testing.assert_allclose(dqn.epsilon(cfg, steps),
                               [1 - 0.93 * 1_000 / 24_000, 1 - 0.93 * 11_000 / 24_000, 0.07, 0.07], rtol=1e-5)


def test_dqn_act_is_greedy_or_epsilon_greedy_and_repeatable():
    state = dqn.init(DQN_CFG, DISCRETE, jax.random.key(0))  # epsilon 1 -> 0 over 20k steps, from step 0
    obs = jax.random.normal(jax.random.key(1), (3000, OBS_DIM))
    act = jitted_act(dqn, DQN_CFG)
    greedy = np.asarray(act(state, obs, jax.random.key(2), deterministic=True))
    assert greedy.shape == (3000,) and greedy.dtype == np.int32
    np.testing.assert_array_equal(greedy, np.argmax(np.asarray(_q_values(DQN_CFG, state.params, obs)), axis=1))
    # epsilon 1 at step 0: uniform actions, which differ from the greedy one 2/3 of the time.
    explore = np.asarray(act(state, obs, jax.random.key(3), deterministic=False))
    np.testing.assert_array_equal(explore, act(state, obs, jax.random.key(3), deterministic=False))
    assert np.all((explore >= 0) & (explore < NUM_ACTIONS))
    assert np.mean(explore != greedy) == pytest.approx(2 / 3, abs=0.04)
    np.testing.assert_allclose(np.bincount(explore, minlength=NUM_ACTIONS) / 3000, 1 / 3, atol=0.04)
    # Half-way (epsilon 0.5): a third of the actions differ; at the end (epsilon 0): none.
    half = state.replace(step=jnp.asarray(10_000, jnp.int32))
    assert np.mean(np.asarray(act(half, obs, jax.random.key(3), deterministic=False)) != greedy) == pytest.approx(
        1 / 3, abs=0.04)
    done = state.replace(step=jnp.asarray(20_000, jnp.int32))
    np.testing.assert_array_equal(act(done, obs, jax.random.key(3), deterministic=False), greedy)


def test_dqn_learns_a_bandit_under_vmap_and_scan_like_single_seeds():
    """Terminal transitions, reward 1 for the action a linear teacher prefers: both seeds' greedy policies match it."""
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(2048, OBS_DIM)).astype(np.float32)
    best = np.argmax(obs @ rng.normal(size=(OBS_DIM, NUM_ACTIONS)), axis=-1)
    actions = rng.integers(0, NUM_ACTIONS, 2048).astype(np.int32)
    rewards = (actions == best).astype(np.float32)
    init = [dqn.init(DQN_CFG, DISCRETE, jax.random.key(s)) for s in (1, 2)]
    states, run = stack(init), vmapped_scan(dqn, DQN_CFG)

    batches = bandit_batches(rng, obs, actions, rewards, 2)
    states, metrics = run(states, batches)
    assert all(v.shape == (2, K) and np.all(np.isfinite(v)) for v in metrics.values())
    single = init[1]
    for i in range(K):
        single, _ = jitted_update(dqn, DQN_CFG)(single, jax.tree.map(lambda x: x[1, i], batches))
    assert trees_close(seed_slice(states, 1), single)

    for _ in range(400 // K - 1):
        states, metrics = run(states, bandit_batches(rng, obs, actions, rewards, 2))
    assert np.all(np.isfinite(np.stack(list(metrics.values()))))
    for s in range(2):
        greedy = np.asarray(jitted_act(dqn, DQN_CFG)(seed_slice(states, s), obs, jax.random.key(0), deterministic=True))
        assert np.mean(greedy == best) > 0.9


def test_dqn_export_is_a_categorical_policy_with_the_same_greedy_actions(tmp_path):
    state = dqn.init(DQN_CFG, DISCRETE, jax.random.key(0))
    state, _ = jitted_update(dqn, DQN_CFG)(state, random_batch(1, DISCRETE))
    head, params = dqn.policy_export(DQN_CFG, state)
    assert head == {"name": "categorical", "action_dim": NUM_ACTIONS, "hidden_dims": [64, 64]}
    export_policy(tmp_path / "dqn", head_config=head, params=params, spec=DISCRETE)
    policy = load_policy(tmp_path / "dqn")
    obs = np.random.default_rng(0).normal(size=(3000, OBS_DIM)).astype(np.float32)
    expected = np.asarray(jitted_act(dqn, DQN_CFG)(state, obs, jax.random.key(0), deterministic=True))
    np.testing.assert_array_equal(policy(obs), expected)
    assert len(set(expected.tolist())) > 1  # a non-trivial comparison


def test_dqn_rejects_continuous_actions_and_bad_settings():
    with pytest.raises(UnderstudyError, match="discrete actions"):
        dqn.init(DQN_CFG, CONTINUOUS, jax.random.key(0))
    for bad, flag in ((dict(updates_per_step=0.0), "--updates-per-step"), (dict(loss="l1"), "--loss"),
                      (dict(tau=0.0), "--tau"), (dict(target_update_interval=0), "--target-update-interval"),
                      (dict(epsilon_end=1.5), "--epsilon-end")):
        with pytest.raises(UnderstudyError, match=flag):
            dqn.init(dataclasses.replace(DQN_CFG, **bad), DISCRETE, jax.random.key(0))


def test_dqn_presets_follow_the_zoo():
    mc = dqn.PRESETS["mountaincar"]
    assert (mc.lr, mc.batch_size, mc.buffer_size, mc.learning_starts, mc.gamma) == (4e-3, 128, 10_000, 1_000, 0.98)
    assert mc.updates_per_step == 8 / 16 and mc.target_update_interval == 600 * 8 // 16
    assert mc.exploration_steps == int(0.2 * 120_000) and mc.epsilon_end == 0.07 and mc.hidden_dims == (256, 256)
    assert dqn.PRESETS["cleanrl"] == dqn.Config()


def test_mean_metrics_averages_actor_metrics_over_actor_steps_only():
    """TD3's critic-only updates report actor metrics as 0; the interval mean must not count them."""
    from understudy.train.common import mean_metrics

    metrics = {"critic_loss": np.array([[1.0], [3.0], [5.0], [7.0]]), "actor_loss": np.array([[0.0], [-2.0], [0.0], [-4.0]]),
               "actor_step": np.array([[0.0], [1.0], [0.0], [1.0]])}
    means = mean_metrics(metrics)
    assert means == {"train/critic_loss": 4.0, "train/actor_loss": -3.0, "train/actor_step": 0.5}
    # without the marker (SAC, IQL, ...) every key is a plain mean
    assert mean_metrics({"actor_loss": np.array([0.0, -2.0])}) == {"train/actor_loss": -1.0}


def test_ensemble_member_q_equals_the_ensembles_row_and_its_gradient():
    """TD3's actor evaluates the first critic alone; values and action gradients must equal the ensemble's row."""
    from understudy.nets.critics import EnsembleQ, ensemble_member_q

    ensemble = EnsembleQ(hidden_dims=(16, 16), num_qs=3)
    obs = jax.random.normal(jax.random.key(1), (5, OBS_DIM))
    action = jax.random.uniform(jax.random.key(2), (5, ACTION_DIM), minval=-1, maxval=1)
    params = ensemble.init(jax.random.key(0), obs, action)
    full = ensemble.apply(params, obs, action)
    for index in range(3):
        np.testing.assert_allclose(ensemble_member_q(ensemble, params, index, obs, action), full[index], rtol=1e-6)
    grad_alone = jax.grad(lambda a: ensemble_member_q(ensemble, params, 1, obs, a).sum())(action)
    grad_row = jax.grad(lambda a: ensemble.apply(params, obs, a)[1].sum())(action)
    np.testing.assert_allclose(grad_alone, grad_row, rtol=1e-5, atol=1e-7)
    assert not np.allclose(full[0], full[1])  # members differ, so picking the wrong one would fail
