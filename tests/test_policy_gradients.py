"""REINFORCE (plain and with a baseline) and actor-critic: the pure pieces against direct Python computation,
the losses numerically, the algorithm contract (jit, vmap over seeds, note 001's options), and the episodic
loop (exports that load with understudy.load_policy, resume that replays exactly)."""

import dataclasses
import functools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

import understudy
from understudy.algos import actor_critic, reinforce
from understudy.train import episodic
from understudy.train.common import RunArgs
from understudy.types import ArraySpec, Batch, EnvSpec, UnderstudyError

OBS_DIM, ACTION_DIM, NUM_ACTIONS, M, T = 3, 2, 3, 4, 6
CONTINUOUS = EnvSpec("Synthetic-v0", "gymnasium", ArraySpec((OBS_DIM,), "float32"),
                     ArraySpec((ACTION_DIM,), "float32", (-1.0,) * ACTION_DIM, (1.0,) * ACTION_DIM),
                     max_episode_steps=T)
DISCRETE = EnvSpec("SyntheticDiscrete-v0", "gymnasium", ArraySpec((OBS_DIM,), "float32"), ArraySpec((), "int64"),
                   num_actions=NUM_ACTIONS, max_episode_steps=T)
SMALL = dict(hidden_dims=(16, 16), value_updates=3, value_lr=1e-2)
# Few distinct configs: each one compiles its own update (seconds on a shared CPU).
BASELINE = reinforce.Config(baseline=True, **SMALL)  # Monte-Carlo advantages with a value network
ACTOR_CRITIC = actor_critic.Config(replay_trajectories=10, replay_capacity=6, **SMALL)  # GAE; replays past episodes
RAW = reinforce.Config(normalize_advantages=False, length_bonus=1.0, gamma=1.0, **SMALL)  # plain REINFORCE
ANNEALED = dataclasses.replace(RAW, anneal_gradient_weight=True)
CASES = [(reinforce, BASELINE, DISCRETE), (actor_critic, ACTOR_CRITIC, CONTINUOUS), (reinforce, RAW, CONTINUOUS)]
IDS = ["reinforce-baseline-categorical", "actor-critic-gaussian", "reinforce-gaussian"]
LENGTHS = [6, 3, 1, 5]  # episode lengths of the synthetic batch (6 = the horizon: a time-limit truncation)


# -- direct Python references ------------------------------------------------------------------------------
def py_returns(rewards, length, gamma, bootstrap=0.0):
    out, g = [0.0] * len(rewards), bootstrap
    for t in reversed(range(length)):
        g = rewards[t] + gamma * g
        out[t] = g
    return out


def py_gae(rewards, values, next_values, terms, length, gamma, lam):
    out, a = [0.0] * len(rewards), 0.0
    for t in reversed(range(length)):
        delta = rewards[t] + gamma * (1 - terms[t]) * next_values[t] - values[t]
        a = delta + gamma * lam * a
        out[t] = a
    return out


def padded_mask(lengths, horizon=T):
    return np.array([[1.0 if t < n else 0.0 for t in range(horizon)] for n in lengths], np.float32)


def random_episodes(seed, spec, lengths=LENGTHS, lead=()):
    """Padded episodes [*lead, M, T, ...]; the last real step of an episode shorter than T terminates."""
    rng = np.random.default_rng(seed)
    shape = (*lead, len(lengths), T)
    mask = np.broadcast_to(padded_mask(lengths), shape).copy()
    terms = np.zeros(shape, np.float32)
    for i, n in enumerate(lengths):
        if n < T:
            terms[..., i, n - 1] = 1.0
    if spec.discrete:
        actions = rng.integers(0, spec.num_actions, shape).astype(np.int32)
    else:
        actions = rng.normal(0.0, 1.2, (*shape, spec.action_dim)).astype(np.float32)
    obs = rng.normal(size=(*shape, OBS_DIM)).astype(np.float32)
    return jax.tree.map(jnp.asarray, Batch(
        observations=obs * mask[..., None],
        actions=actions * (mask if spec.discrete else mask[..., None]).astype(actions.dtype),
        rewards=rng.normal(size=shape).astype(np.float32) * mask, terminations=terms,
        next_observations=rng.normal(size=(*shape, OBS_DIM)).astype(np.float32) * mask[..., None], mask=mask))


@functools.lru_cache(maxsize=None)
def jitted_update(mod, cfg):
    return jax.jit(functools.partial(mod.update, cfg))


def assert_trees_close(a, b, rtol=2e-4, atol=2e-5):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x, y = (jax.random.key_data(v) if jnp.issubdtype(v.dtype, jax.dtypes.prng_key) else v for v in (x, y))
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


# -- pure pieces -----------------------------------------------------------------------------------------
def test_returns_to_go_match_python_with_padding_and_bootstrap():
    rng = np.random.default_rng(0)
    rewards = rng.normal(size=(4, T)).astype(np.float32)
    mask = padded_mask(LENGTHS)
    boot = rng.normal(size=(4, T)).astype(np.float32)
    gamma = 0.9
    got = np.asarray(reinforce.returns_to_go(jnp.asarray(rewards * mask), jnp.asarray(mask), gamma))
    got_boot = np.asarray(reinforce.returns_to_go(jnp.asarray(rewards * mask), jnp.asarray(mask), gamma,
                                                  jnp.asarray(boot)))
    for i, n in enumerate(LENGTHS):
        np.testing.assert_allclose(got[i], py_returns(rewards[i], n, gamma), rtol=1e-5, atol=1e-6)
        # the bootstrap value is the one stored at the episode's last real step
        np.testing.assert_allclose(got_boot[i], py_returns(rewards[i], n, gamma, boot[i, n - 1]), rtol=1e-5, atol=1e-6)
    # hand-checked: rewards 1, 2, 3 with gamma 0.5 -> 1 + 0.5 * (2 + 0.5 * 3) = 2.75
    small = reinforce.returns_to_go(jnp.array([[1.0, 2.0, 3.0, 9.0]]), jnp.array([[1.0, 1.0, 1.0, 0.0]]), 0.5)
    np.testing.assert_allclose(small, [[2.75, 3.5, 3.0, 0.0]])


def test_length_bonus_is_proportional_to_the_remaining_length():
    mask = jnp.asarray(padded_mask(LENGTHS))
    bonus = np.asarray(reinforce.length_bonus(mask, 0.1))
    for i, n in enumerate(LENGTHS):
        expected = [0.1 * (n - t) if t < n else 0.0 for t in range(T)]
        np.testing.assert_allclose(bonus[i], expected, rtol=1e-6)
    np.testing.assert_array_equal(reinforce.remaining_length(mask)[1], [3, 2, 1, 0, 0, 0])


def test_gae_matches_python_and_its_limits():
    rng = np.random.default_rng(1)
    r, v, nv = (rng.normal(size=(4, T)).astype(np.float32) for _ in range(3))
    mask = padded_mask(LENGTHS)
    terms = np.asarray(random_episodes(0, DISCRETE).terminations)
    for lam in (0.0, 0.7, 1.0):
        got = np.asarray(reinforce.gae_advantages(*(jnp.asarray(x) for x in (r, v, nv, terms, mask)), 0.95, lam))
        for i, n in enumerate(LENGTHS):
            np.testing.assert_allclose(got[i], py_gae(r[i], v[i], nv[i], terms[i], n, 0.95, lam), rtol=1e-5, atol=1e-5)
    # lam = 1: the bootstrapped Monte-Carlo return minus V, when V(s'_t) is V(s_{t+1}) inside an episode
    nv = np.where(np.roll(mask, -1, axis=1) > 0, np.roll(v, -1, axis=1), nv)
    mc = reinforce.returns_to_go(jnp.asarray(r * mask), jnp.asarray(mask), 0.95, jnp.asarray((1 - terms) * nv))
    gae1 = reinforce.gae_advantages(*(jnp.asarray(x) for x in (r * mask, v, nv, terms, mask)), 0.95, 1.0)
    np.testing.assert_allclose(gae1, (mc - v) * mask, rtol=1e-4, atol=1e-5)


def test_gradient_weight_schedule():
    steps = jnp.array([0, 1000, 3000, 99_000])
    np.testing.assert_allclose(reinforce.gradient_weight(steps), [1.0, 1 / math.sqrt(2), 0.5, 0.1], rtol=1e-6)
    np.testing.assert_allclose(reinforce.gradient_weight(500, scale=500.0), 1 / math.sqrt(2), rtol=1e-6)


def test_policy_gradient_loss_value_and_gradient_on_a_tiny_categorical_policy():
    # pi(a) = softmax(theta): d/dtheta [-mean_t A_t log pi(a_t)] = -mean_t A_t (onehot(a_t) - pi)
    theta = jnp.array([0.2, -0.1, 0.5])
    actions = jnp.array([[0, 2, 1, 2]])
    adv = jnp.array([[1.0, -2.0, 0.5, 7.0]])
    mask = jnp.array([[1.0, 1.0, 1.0, 0.0]])  # the last step is padding: its advantage must not count

    def loss(theta):
        log_prob = jax.nn.log_softmax(theta)[actions]
        return reinforce.policy_gradient_loss(log_prob, adv, mask)

    pi = np.asarray(jax.nn.softmax(theta))
    log_pi = np.log(pi)
    expected_loss = -(1.0 * log_pi[0] - 2.0 * log_pi[2] + 0.5 * log_pi[1]) / 3
    expected_grad = -sum(a * (np.eye(3)[k] - pi) for a, k in ((1.0, 0), (-2.0, 2), (0.5, 1))) / 3
    np.testing.assert_allclose(loss(theta), expected_loss, rtol=1e-5)
    np.testing.assert_allclose(jax.grad(loss)(theta), expected_grad, rtol=1e-5, atol=1e-6)
    # the advantages are constants: no gradient flows into them
    assert float(jnp.abs(jax.grad(lambda a: reinforce.policy_gradient_loss(jnp.ones((1, 4)), a, mask))(adv)).sum()) == 0


def test_masked_standardize_ignores_padding():
    x = jnp.array([[1.0, 2.0, 3.0, 100.0]])
    mask = jnp.array([[1.0, 1.0, 1.0, 0.0]])
    np.testing.assert_allclose(reinforce.masked_standardize(x, mask), [[-math.sqrt(1.5), 0.0, math.sqrt(1.5), 0.0]],
                               rtol=1e-5)


def test_episode_store_ring_and_empty_sample():
    add, sample = jax.jit(reinforce.store_add), jax.jit(reinforce.store_sample, static_argnums=2)
    store = reinforce.store_init(5, T, (OBS_DIM,), (), jnp.int32)
    empty = sample(store, jax.random.key(0), 50)
    assert empty.mask.shape == (50, T) and float(empty.mask.sum()) == 0.0
    batch = random_episodes(0, DISCRETE)  # 4 episodes
    store = add(add(store, batch), batch)
    assert int(store.count) == 5 and int(store.pointer) == 3
    # slots 4, 0, 1, 2 were written by the second add: episodes 0..3 of the batch; slot 3 keeps episode 3
    np.testing.assert_array_equal(np.asarray(store.episodes.rewards)[[4, 0, 1, 2, 3]],
                                  np.asarray(batch.rewards)[[0, 1, 2, 3, 3]])
    sample = sample(store, jax.random.key(1), 50)
    lengths = set(np.asarray(sample.mask.sum(-1)).astype(int).tolist())
    assert lengths <= set(LENGTHS) and len(lengths) > 1


# -- the algorithm contract -------------------------------------------------------------------------------
@pytest.mark.parametrize("mod,cfg,spec", CASES, ids=IDS)
def test_update_under_jit_changes_params_counts_env_steps_and_keeps_structure(mod, cfg, spec):
    state = mod.init(cfg, spec, jax.random.key(0))
    assert (state.value_params is None) == (mod is reinforce and not cfg.baseline)
    new_state, metrics = jitted_update(mod, cfg)(state, random_episodes(1, spec))
    assert int(new_state.step) == 1 and int(new_state.env_steps) == sum(LENGTHS)
    assert metrics and all(np.shape(v) == () and np.isfinite(v) for v in metrics.values())
    assert float(metrics["episodes_trained"]) == len(LENGTHS)
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(state.actor_params),
                                                    jax.tree.leaves(new_state.actor_params)))
    if new_state.value_params is not None:  # the value regression makes progress on its fixed targets
        assert "value_loss" in metrics


def test_value_regression_lowers_the_value_loss():
    state = reinforce.init(BASELINE, DISCRETE, jax.random.key(0))
    batch = random_episodes(2, DISCRETE)
    losses = []
    for _ in range(4):
        state, metrics = jitted_update(reinforce, BASELINE)(state, batch)
        losses.append(float(metrics["value_loss"]))
    assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < 0.6 * losses[0], losses


def test_loss_ignores_padded_steps():
    """Changing anything on padded steps changes nothing in the update."""
    cfg = ACTOR_CRITIC
    state = actor_critic.init(cfg, CONTINUOUS, jax.random.key(0))
    batch = random_episodes(3, CONTINUOUS)
    pad = 1.0 - batch.mask
    noisy = batch.replace(rewards=batch.rewards + 5.0 * pad, observations=batch.observations + pad[..., None],
                          actions=batch.actions + pad[..., None],
                          next_observations=batch.next_observations - pad[..., None])
    a, _ = jitted_update(actor_critic, cfg)(state, batch)
    b, _ = jitted_update(actor_critic, cfg)(state, noisy)
    assert_trees_close(a.actor_params, b.actor_params, rtol=1e-5, atol=1e-6)
    assert_trees_close(a.value_params, b.value_params, rtol=1e-5, atol=1e-6)


def test_annealed_gradient_weight_scales_the_policy_update():
    state = reinforce.init(RAW, CONTINUOUS, jax.random.key(0)).replace(env_steps=jnp.asarray(3000, jnp.int32))
    batch = random_episodes(4, CONTINUOUS)
    a, ma = jitted_update(reinforce, RAW)(state, batch)
    b, mb = jitted_update(reinforce, ANNEALED)(state, batch)
    assert float(ma["gradient_weight"]) == 1.0 and float(mb["gradient_weight"]) == pytest.approx(0.5)
    delta = lambda s: jax.tree.map(lambda x, y: x - y, s.actor_params, state.actor_params)  # noqa: E731
    assert_trees_close(delta(b), jax.tree.map(lambda d: 0.5 * d, delta(a)), rtol=1e-4, atol=1e-7)
    assert int(b.env_steps) == 3000 + sum(LENGTHS)


def test_length_bonus_enters_the_returns():
    state = reinforce.init(RAW, CONTINUOUS, jax.random.key(0))
    batch = random_episodes(5, CONTINUOUS).replace(rewards=jnp.zeros((len(LENGTHS), T)))
    _, metrics = jitted_update(reinforce, RAW)(state, batch)
    # zero env rewards, bonus 1 * (n - t), gamma 1: step t's return is sum_{k >= t} (n - k) = (n - t)(n - t + 1) / 2
    expected = np.mean([(n - t) * (n - t + 1) / 2 for n in LENGTHS for t in range(n)])
    assert float(metrics["advantage_mean"]) == pytest.approx(expected, rel=1e-5)


def test_replay_trains_on_past_episodes_from_the_second_update():
    state = actor_critic.init(ACTOR_CRITIC, CONTINUOUS, jax.random.key(0))
    assert state.store.episodes.observations.shape == (6, T, OBS_DIM)
    update = jitted_update(actor_critic, ACTOR_CRITIC)
    state, m1 = update(state, random_episodes(6, CONTINUOUS))
    state, m2 = update(state, random_episodes(7, CONTINUOUS))
    assert float(m1["episodes_trained"]) == len(LENGTHS)  # the store was empty
    assert float(m2["episodes_trained"]) == len(LENGTHS) + 10
    assert int(state.store.count) == 6 and int(state.env_steps) == 2 * sum(LENGTHS)


@pytest.mark.parametrize("mod,cfg,spec", CASES[1:2], ids=IDS[1:2])
def test_vmap_over_seeds_matches_single_seeds(mod, cfg, spec):
    S = 3
    keys = jax.random.split(jax.random.key(0), S)
    states = jax.tree.map(lambda *xs: jnp.stack(xs), *[mod.init(cfg, spec, k) for k in keys])  # as the loop does
    batches = random_episodes(1, spec, lead=(S,))
    new_states, metrics = jax.jit(jax.vmap(functools.partial(mod.update, cfg)))(states, batches)
    assert all(v.shape == (S,) and np.all(np.isfinite(v)) for v in metrics.values())
    alone, _ = jitted_update(mod, cfg)(jax.tree.map(lambda x: x[1], states), jax.tree.map(lambda x: x[1], batches))
    assert_trees_close(jax.tree.map(lambda x: x[1], new_states), alone)


@pytest.mark.parametrize("mod,cfg,spec", CASES[:2], ids=IDS[:2])
def test_act_and_explore(mod, cfg, spec):
    state = mod.init(cfg, spec, jax.random.key(0))
    obs = 3.0 * jax.random.normal(jax.random.key(1), (256, OBS_DIM))
    det = mod.act(cfg, state, obs, jax.random.key(2), deterministic=True)
    np.testing.assert_array_equal(det, mod.act(cfg, state, obs, jax.random.key(3), deterministic=True))
    sample = mod.act(cfg, state, obs, jax.random.key(2), deterministic=False)
    raw = mod.explore(cfg, state, obs, jax.random.key(2))
    if spec.discrete:
        assert det.shape == raw.shape == (256,) and raw.dtype == jnp.int32
        assert np.all((np.asarray(raw) >= 0) & (np.asarray(raw) < NUM_ACTIONS))
    else:
        assert det.shape == sample.shape == raw.shape == (256, ACTION_DIM)
        assert np.all(np.abs(np.asarray(det)) <= 1) and np.all(np.abs(np.asarray(sample)) <= 1)
        # exploration keeps the unclipped Gaussian sample (std 1 at init): its density is the head's log_prob
        assert np.abs(np.asarray(raw)).max() > 1.0
        np.testing.assert_allclose(np.clip(raw, -1, 1), sample, rtol=1e-6)


@pytest.mark.parametrize("mod,cfg,spec", CASES[:2], ids=IDS[:2])
def test_log_prob_and_entropy_match_the_head(mod, cfg, spec):
    state = mod.init(cfg, spec, jax.random.key(0))
    obs = jax.random.normal(jax.random.key(1), (2, 4000, OBS_DIM))
    actions = jax.vmap(lambda o, k: reinforce.explore(cfg, state, o, k))(obs, jax.random.split(jax.random.key(2), 2))
    log_prob, entropy = jax.jit(functools.partial(reinforce.log_prob_and_entropy, cfg, state))(
        state.actor_params, obs, actions)
    head = reinforce._actor(cfg, state.action_dim, state.discrete)
    np.testing.assert_allclose(log_prob, head.apply(state.actor_params, obs, actions, method="log_prob"),
                               rtol=1e-5, atol=1e-5)
    assert log_prob.shape == entropy.shape == (2, 4000)
    # entropy(s) = E[-log pi(a|s)] over a ~ pi(.|s): the averages over (state, sampled action) pairs agree
    assert float(jnp.mean(entropy)) == pytest.approx(-float(jnp.mean(log_prob)), rel=0.03)


def test_config_errors_name_the_flag():
    with pytest.raises(UnderstudyError, match="--episodes-per-iteration"):
        reinforce.init(reinforce.Config(episodes_per_iteration=0), DISCRETE, jax.random.key(0))
    with pytest.raises(UnderstudyError, match="--gae-lambda"):
        actor_critic.init(actor_critic.Config(gae_lambda=1.5), DISCRETE, jax.random.key(0))


# -- the episodic loop ----------------------------------------------------------------------------------------
def _run(tmp_path, name, mod, cfg, **kw):
    args = dict(env="CartPole-v1", steps=400, eval_every=200, eval_episodes=2, progress=False, tensorboard=False,
                out=str(tmp_path / name))
    args.update(kw)
    return episodic.train(mod.__name__.rsplit(".", 1)[1].replace("_", "-"), mod, cfg, RunArgs(**args))


def restored_agents(run_dir, mod, cfg, env_id, seeds=1):
    """The agents (leading seed axis) from the run's last checkpoint, i.e. what the loop trained, and the env spec."""
    from understudy.checkpoint import TrainCheckpointer
    from understudy.envs import env_spec, make

    spec = env_spec(make(env_id))
    one = mod.init(cfg, spec, jax.random.PRNGKey(0))  # the loop's compiled init; only shapes matter here
    like = {"state": jax.tree.map(lambda x: jnp.stack([x] * seeds), one),
            "keys": jax.random.split(jax.random.PRNGKey(0), seeds),
            "env_steps": jnp.zeros(seeds, jnp.int32), "iteration": jnp.zeros((), jnp.int32)}
    ck = TrainCheckpointer(run_dir / "checkpoints")
    _, tree, meta = ck.restore_latest(like)
    ck.close()
    assert meta["iteration"] == int(tree["iteration"]) > 0
    return tree["state"], spec


# one config for the CartPole loop tests, so they share compilations
LOOP = reinforce.Config(baseline=True, episodes_per_iteration=2, length_bonus=0.01, replay_trajectories=3,
                        replay_capacity=4, **SMALL)


def test_loop_writes_a_run_whose_export_loads_with_identical_actions(tmp_path):
    cfg = LOOP
    summary = _run(tmp_path, "cartpole", reinforce, cfg)
    run = tmp_path / "cartpole"
    assert summary["step"] >= 400 and summary["method"] == "reinforce-baseline"
    for name in ("config.json", "metrics.csv", "eval.json", "best/policy.json", "final/policy.json"):
        assert (run / name).exists(), name
    header, *rows = (run / "metrics.csv").read_text().splitlines()
    assert header.startswith("step,") and "eval/return" in header and "train/value_loss" in header and len(rows) == 2
    assert json.loads((run / "config.json").read_text())["step_unit"] == "env_steps"
    states, spec = restored_agents(run, reinforce, cfg, "CartPole-v1")
    state = jax.tree.map(lambda x: x[0], states)
    assert int(state.step) >= 2 and int(state.env_steps) == summary["step"]
    policy = understudy.load_policy(run / "final")
    obs = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    expected = np.asarray(reinforce.act(cfg, state, jnp.asarray(obs), jax.random.key(0), deterministic=True))
    np.testing.assert_array_equal(policy(obs), expected)
    # the logits themselves match (the actions alone could agree by chance)
    logits = reinforce._actor(cfg, 2, True).apply(state.actor_params, obs)
    np.testing.assert_allclose(policy.module.apply(policy.params, obs), logits, rtol=1e-6, atol=1e-6)


def test_loop_continuous_actions_two_seeds_export_matches_each_agent(tmp_path):
    cfg = actor_critic.Config(episodes_per_iteration=1, replay_trajectories=2, anneal_gradient_weight=True, **SMALL)
    summary = _run(tmp_path, "pendulum", actor_critic, cfg, env="Pendulum-v1", steps=400, eval_every=400, seeds=2)
    assert summary["step"] == 400 and len(summary["final"]["seeds"]) == 2  # Pendulum episodes are always 200 steps
    states, spec = restored_agents(tmp_path / "pendulum", actor_critic, cfg, "Pendulum-v1", seeds=2)
    np.testing.assert_array_equal(states.store.count, [2, 2])
    np.testing.assert_array_equal(states.env_steps, [400, 400])
    obs = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    actions = []
    for s in range(2):
        policy = understudy.load_policy(tmp_path / "pendulum" / "final" / f"seed{s}")
        actions.append(policy(obs))
        assert actions[s].shape == (8, 1) and np.all(np.abs(actions[s]) <= 2.0)  # Pendulum's torque bound
        state = jax.tree.map(lambda x: x[s], states)
        expected = actor_critic.act(cfg, state, jnp.asarray(obs), jax.random.key(0), deterministic=True)
        np.testing.assert_allclose(actions[s], 2.0 * np.asarray(expected), rtol=1e-5, atol=1e-6)
    assert not np.allclose(actions[0], actions[1])  # the seeds are different agents


def test_resume_replays_the_uninterrupted_run(tmp_path):
    straight = _run(tmp_path, "straight", reinforce, LOOP, steps=600)
    _run(tmp_path, "pieces", reinforce, LOOP, steps=300)
    resumed = _run(tmp_path, "pieces", reinforce, LOOP, steps=600, resume=True)
    assert resumed["step"] == straight["step"]
    assert resumed["final"]["seeds"][0]["returns"] == straight["final"]["seeds"][0]["returns"]
    a = load_file(str(tmp_path / "straight" / "final" / "policy.safetensors"))
    b = load_file(str(tmp_path / "pieces" / "final" / "policy.safetensors"))
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-6, atol=1e-7)
    steps = [int(line.split(",")[0]) for line in (tmp_path / "pieces" / "metrics.csv").read_text().splitlines()[1:]]
    assert steps == sorted(set(steps))  # no row repeated or lost


def test_loop_errors(tmp_path):
    with pytest.raises(UnderstudyError, match="--env"):
        episodic.train("reinforce", reinforce, reinforce.Config(), RunArgs(out=str(tmp_path / "x")))
