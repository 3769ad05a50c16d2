"""PPO: GAE, the clipped objective, the value loss and the running normalizers against direct computations;
the algorithm contract; export/load round trip; and the on-policy loop (metrics rows, exports, resume)."""

import functools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from understudy.algos import ppo
from understudy.checkpoint import export_policy
from understudy.envs import make_vector
from understudy.nets.heads import make_head
from understudy.policy import load_policy
from understudy.train import on_policy
from understudy.train.common import RunArgs
from understudy.types import ArraySpec, EnvSpec, UnderstudyError

OBS_DIM, ACTION_DIM, NUM_ACTIONS = 3, 2, 4
CONTINUOUS = EnvSpec("Synthetic-v0", "gymnasium", ArraySpec((OBS_DIM,), "float32"),
                     ArraySpec((ACTION_DIM,), "float32", (-2.0,) * ACTION_DIM, (2.0,) * ACTION_DIM))
DISCRETE = EnvSpec("SyntheticDiscrete-v0", "gymnasium", ArraySpec((OBS_DIM,), "float32"), ArraySpec((), "int64"),
                   num_actions=NUM_ACTIONS)
T, N = 8, 2
CFG = ppo.Config(num_envs=N, num_steps=T, num_minibatches=4, update_epochs=2, hidden_dims=(16, 16))


# -- GAE and the losses against direct loops ------------------------------------------------------------------
def gae_reference(rewards, values, next_value, terms, truncs, valid, gamma, lam):
    """Textbook GAE, one sub-env and one step at a time, with episodes cut at every done."""
    T, N = rewards.shape
    adv = np.zeros((T, N))
    for n in range(N):
        running = 0.0
        for t in reversed(range(T)):
            if not valid[t, n]:
                running = 0.0  # an autoreset step: no transition
                continue
            v_next = next_value[n] if t == T - 1 else values[t + 1, n]
            delta = rewards[t, n] + gamma * v_next * (1.0 - terms[t, n]) - values[t, n]
            if terms[t, n] or truncs[t, n]:
                running = delta  # the episode ends here: nothing after it counts
            else:
                running = delta + gamma * lam * running
            adv[t, n] = running
    return adv, adv + values * valid


def test_gae_matches_a_direct_loop_with_terminations_truncations_and_autoreset_rows():
    rng = np.random.default_rng(0)
    T, N = 12, 3
    rewards, values = rng.normal(size=(T, N)), rng.normal(size=(T, N))
    next_value = rng.normal(size=N)
    terms, truncs, valid = np.zeros((T, N)), np.zeros((T, N)), np.ones((T, N))
    # env 0 terminates at t=3 (row 4 is the autoreset step), env 1 is truncated at t=6 (row 7 autoresets),
    # env 2 is truncated at the last row (bootstraps from next_value, the final observation's value)
    terms[3, 0], valid[4, 0] = 1, 0
    truncs[6, 1], valid[7, 1] = 1, 0
    truncs[T - 1, 2] = 1
    adv, ret = ppo.gae(*(jnp.asarray(x, jnp.float32) for x in (rewards, values, next_value, terms, truncs, valid)),
                       gamma=0.9, lam=0.8)
    want_adv, want_ret = gae_reference(rewards, values, next_value, terms, truncs, valid, 0.9, 0.8)
    np.testing.assert_allclose(adv, want_adv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(ret) * valid, want_ret * valid, rtol=1e-5, atol=1e-5)
    # the truncated step bootstraps from the value of the row after it (the final observation) ...
    assert adv[6, 1] == pytest.approx(rewards[6, 1] + 0.9 * values[7, 1] - values[6, 1], rel=1e-5)
    # ... the terminated step does not
    assert adv[3, 0] == pytest.approx(rewards[3, 0] - values[3, 0], rel=1e-5)
    assert adv[T - 1, 2] == pytest.approx(rewards[T - 1, 2] + 0.9 * next_value[2] - values[T - 1, 2], rel=1e-5)
    assert adv[4, 0] == 0.0 and adv[7, 1] == 0.0


def test_gae_with_lambda_one_and_no_dones_is_discounted_return_minus_value():
    rewards = np.array([[1.0], [2.0], [3.0]])
    values = np.array([[0.5], [0.1], [-0.2]])
    zeros, ones = np.zeros((3, 1)), np.ones((3, 1))
    adv, ret = ppo.gae(*(jnp.asarray(x, jnp.float32) for x in (rewards, values, [4.0], zeros, zeros, ones)),
                       gamma=0.5, lam=1.0)
    want_return = np.array([1 + 0.5 * 2 + 0.25 * 3 + 0.125 * 4, 2 + 0.5 * 3 + 0.25 * 4, 3 + 0.5 * 4])
    np.testing.assert_allclose(np.asarray(ret)[:, 0], want_return, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(adv)[:, 0], want_return - values[:, 0], rtol=1e-6)


def test_gae_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="one shape"):
        ppo.gae(jnp.zeros((4, 2)), jnp.zeros((4, 1)), jnp.zeros(2), jnp.zeros((4, 2)), jnp.zeros((4, 2)),
                jnp.ones((4, 2)), 0.99, 0.95)


def test_clipped_surrogate_numerically():
    old = jnp.zeros(4)
    # ratios 1.5, 0.5, 1.1, 1.5 with advantages +1, +1, -2, -1; the last row is masked out
    new = jnp.log(jnp.array([1.5, 0.5, 1.1, 1.5]))
    adv = jnp.array([1.0, 1.0, -2.0, -1.0])
    mask = jnp.array([1.0, 1.0, 1.0, 0.0])
    loss, diag = ppo.clipped_surrogate_loss(new, old, adv, 0.2, mask)
    # per row max(-A r, -A clip(r)): -1.2 (gain capped at 1+eps), -0.5 (the unclipped, more pessimistic), 2.2
    assert float(loss) == pytest.approx((-1.2 - 0.5 + 2.2) / 3, rel=1e-6)
    assert float(diag["clipfrac"]) == pytest.approx(2 / 3)
    kl = [(r - 1) - math.log(r) for r in (1.5, 0.5, 1.1)]
    assert float(diag["approx_kl"]) == pytest.approx(np.mean(kl), rel=1e-5)
    # gradients vanish where the ratio is clipped in the objective's favour
    grad = jax.grad(lambda lp: ppo.clipped_surrogate_loss(lp, old, adv, 0.2, mask)[0])(new)
    np.testing.assert_allclose(grad, [0.0, -0.5 / 3, 2.2 / 3, 0.0], rtol=1e-5, atol=1e-7)


def test_value_loss_with_and_without_clipping():
    values, old, returns = jnp.array([1.0, 0.0]), jnp.array([0.0, 0.0]), jnp.array([2.0, -1.0])
    mask = jnp.ones(2)
    assert float(ppo.value_loss(values, old, returns, None, mask)) == pytest.approx(0.5 * (1.0 + 1.0) / 2)
    # clipped prediction 0.2 for row 0: max((1-2)^2, (0.2-2)^2) = 3.24; row 1 unchanged: 1
    assert float(ppo.value_loss(values, old, returns, 0.2, mask)) == pytest.approx(0.5 * (3.24 + 1.0) / 2, rel=1e-6)


def test_advantage_standardization_ignores_masked_rows():
    adv = jnp.array([1.0, 2.0, 3.0, 100.0])
    out = ppo.standardize_advantages(adv, jnp.array([1.0, 1.0, 1.0, 0.0]))
    np.testing.assert_allclose(out[:3], [-1.0, 0.0, 1.0], rtol=1e-5)  # std with Bessel's correction is 1


def test_running_stats_equal_the_statistics_of_all_valid_rows():
    rng = np.random.default_rng(1)
    batches = [rng.normal(3.0, 2.0, size=(5, OBS_DIM)) for _ in range(4)]
    masks = [np.array([1, 1, 0, 1, 1]), np.ones(5), np.zeros(5), np.array([0, 1, 1, 1, 0])]
    stats = ppo.stats_init((OBS_DIM,))
    for x, m in zip(batches, masks):
        stats = ppo.stats_update(stats, jnp.asarray(x, jnp.float32), jnp.asarray(m))
    rows = np.concatenate([x[m > 0] for x, m in zip(batches, masks)])
    # the 1e-4 pseudo-count of the initial (mean 0, var 1) barely matters
    np.testing.assert_allclose(stats.mean, rows.mean(0), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(stats.var, rows.var(0), rtol=1e-3, atol=1e-3)
    assert float(stats.count) == pytest.approx(len(rows), abs=1e-3)


def test_reward_scaling_matches_gymnasiums_normalize_reward_step_by_step():
    rng = np.random.default_rng(2)
    T, N, gamma = 6, 2, 0.9
    rewards = rng.normal(2.0, 1.0, size=(T, N))
    dones = np.zeros((T, N))
    dones[2, 0] = 1
    valid = np.ones((T, N))
    valid[3, 0] = 0
    stats, g, scaled = ppo.scale_rewards(ppo.stats_init(()), jnp.zeros(N), *(jnp.asarray(x, jnp.float32)
                                         for x in (rewards, dones, valid)), gamma=gamma, clip=10.0)
    count, mean, var, ret, seen = 1e-4, 0.0, 1.0, np.zeros(N), []
    want = np.zeros((T, N))
    for t in range(T):
        ok = valid[t] > 0
        ret = np.where(ok, gamma * ret + rewards[t], ret)
        batch = ret[ok]
        if len(batch):  # the same parallel update, written out
            b_mean, b_var, b_n = batch.mean(), batch.var(), len(batch)
            delta, total = b_mean - mean, count + b_n
            mean, var = mean + delta * b_n / total, (var * count + b_var * b_n + delta ** 2 * count * b_n / total) / total
            count = total
        want[t] = rewards[t] / np.sqrt(var + 1e-8)
        ret = np.where(ok & (dones[t] > 0), 0.0, ret)
    np.testing.assert_allclose(scaled, want, rtol=1e-4)
    np.testing.assert_allclose(g, ret, rtol=1e-5)
    assert float(stats.var) == pytest.approx(var, rel=1e-4)


# -- the contract ------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def jitted(name, cfg):
    return jax.jit(functools.partial(getattr(ppo, name), cfg))


def make_rollout(spec, seed=0, cfg=CFG):
    rng = np.random.default_rng(seed)
    T, N = cfg.num_steps, cfg.num_envs
    obs = rng.normal(size=(T, N, OBS_DIM)).astype(np.float32)
    if spec.discrete:
        actions = rng.integers(0, NUM_ACTIONS, (T, N)).astype(np.int32)
    else:
        actions = rng.normal(size=(T, N, ACTION_DIM)).astype(np.float32)
    valid = np.ones((T, N), np.float32)
    valid[3, 1] = 0
    terms = np.zeros((T, N), np.float32)
    terms[2, 1] = 1
    return ppo.Rollout(observations=jnp.asarray(obs), actions=jnp.asarray(actions),
                       log_probs=jnp.asarray(rng.normal(-2.0, 0.3, (T, N)), jnp.float32),
                       values=jnp.asarray(rng.normal(size=(T, N)), jnp.float32),
                       rewards=jnp.asarray(rng.normal(size=(T, N)), jnp.float32), terminations=jnp.asarray(terms),
                       truncations=jnp.zeros((T, N)), valid=jnp.asarray(valid),
                       next_observation=jnp.asarray(rng.normal(size=(N, OBS_DIM)), jnp.float32))


@pytest.mark.parametrize("spec", [CONTINUOUS, DISCRETE], ids=["continuous", "discrete"])
def test_update_under_jit_changes_params_and_returns_finite_scalar_metrics(spec):
    state = ppo.init(CFG, spec, jax.random.key(0))
    new_state, metrics = jitted("update", CFG)(state, make_rollout(spec), 0.5)
    assert int(new_state.step) == 1
    assert all(np.shape(v) == () and np.isfinite(v) for v in metrics.values()), metrics
    assert float(metrics["learning_rate"]) == pytest.approx(0.5 * CFG.learning_rate)
    for old, new in [(state.actor_params, new_state.actor_params), (state.critic_params, new_state.critic_params)]:
        assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(old), jax.tree.leaves(new)))
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    # reward scaling moved the return statistics; the observation statistics change only while acting
    assert float(new_state.return_stats.count) > 1.0
    np.testing.assert_array_equal(new_state.obs_stats.mean, state.obs_stats.mean)


def test_init_uses_cleanrl_orthogonal_layers_and_a_state_independent_log_std():
    state = ppo.init(CFG, CONTINUOUS, jax.random.key(0))
    p = state.actor_params["params"]
    np.testing.assert_array_equal(p["log_std"], np.zeros(ACTION_DIM))
    mean_kernel = np.asarray(p["mean_layer"]["kernel"])  # orthogonal with gain 0.01: columns of norm 0.01
    np.testing.assert_allclose(np.linalg.norm(mean_kernel, axis=0), 0.01, rtol=1e-4)
    assert all(np.all(np.asarray(leaf) == 0) for path, leaf in jax.tree_util.tree_flatten_with_path(state.critic_params)[0]
               if "bias" in jax.tree_util.keystr(path))


def test_rollout_step_logs_the_probability_of_the_raw_unclipped_sample_and_updates_obs_stats():
    cfg = CFG
    acting = ppo.acting(ppo.init(cfg, CONTINUOUS, jax.random.key(0)))
    # push the policy's std up so samples often leave [-1, 1]
    params = jax.tree.map(lambda x: x, acting.actor_params)
    params["params"]["log_std"] = jnp.full((ACTION_DIM,), 1.0)
    acting = acting.replace(actor_params=params)
    obs = jnp.asarray(np.random.default_rng(0).normal(5.0, 1.0, (64, OBS_DIM)), jnp.float32)  # 64 sub-envs' worth
    new_acting, step = jitted("rollout_step", cfg)(acting, obs, jax.random.key(1))
    a = np.asarray(step.action)
    assert np.abs(a).max() > 1.5  # raw samples, not clipped
    np.testing.assert_allclose(ppo.env_action(a, False), np.clip(a, -1, 1))
    mean = ppo._actor(cfg, ACTION_DIM, False).apply(acting.actor_params, step.observation)[0]
    want = np.sum(-0.5 * ((a - mean) / np.e) ** 2 - 1.0 - 0.5 * np.log(2 * np.pi), axis=-1)
    np.testing.assert_allclose(step.log_prob, want, rtol=1e-5)
    assert float(new_acting.obs_stats.mean.mean()) == pytest.approx(5.0, abs=0.3)
    assert np.abs(np.asarray(step.observation)).mean() < 2.0  # standardized with the updated statistics


def test_init_rejects_a_rollout_smaller_than_the_minibatch_count():
    with pytest.raises(UnderstudyError, match="num-minibatches"):
        ppo.init(ppo.Config(num_envs=1, num_steps=4, num_minibatches=8), CONTINUOUS, jax.random.key(0))


def test_presets_are_configs():
    assert ppo.PRESETS["mujoco"] == ppo.Config()
    cartpole = ppo.PRESETS["classic-discrete"]
    assert (cartpole.num_envs, cartpole.num_steps, cartpole.ent_coef) == (4, 128, 0.01)


@pytest.mark.parametrize("spec", [CONTINUOUS, DISCRETE], ids=["continuous", "discrete"])
def test_export_and_load_give_identical_actions(tmp_path, spec):
    state = ppo.init(CFG, spec, jax.random.key(0))
    # non-trivial observation statistics, so the exported normalizer matters
    rng = np.random.default_rng(4)
    acting, _ = jitted("rollout_step", CFG)(ppo.acting(state), jnp.asarray(rng.normal(3.0, 2.0, (64, OBS_DIM)),
                                                                         jnp.float32), jax.random.key(1))
    state = ppo.with_acting(state, acting)
    state, _ = jitted("update", CFG)(state, make_rollout(spec), 1.0)
    head, params, normalizer = ppo.policy_export(CFG, state)
    assert head["activation"] == "tanh" and normalizer is not None
    export_policy(tmp_path / "p", head_config=head, params=params, spec=spec, normalizer=normalizer)
    assert json.loads((tmp_path / "p" / "policy.json").read_text())["normalizer"] is True
    policy = load_policy(tmp_path / "p")
    obs = rng.normal(3.0, 2.0, (16, OBS_DIM)).astype(np.float32)
    ours = np.asarray(ppo.act(CFG, state, jnp.asarray(obs), jax.random.key(0), True))
    theirs = policy(obs)
    if spec.discrete:
        np.testing.assert_array_equal(theirs, ours)
    else:
        np.testing.assert_allclose(theirs, 2.0 * ours, rtol=1e-5, atol=1e-6)  # env bounds are ±2
        # the head's activation option is live: the same weights under relu act differently
        relu = make_head(**{**head, "activation": "relu"})
        x = (obs - normalizer["mean"]) / normalizer["std"]
        assert not np.allclose(relu.apply(params, x, method="mode"), ours, atol=1e-4)


# -- the loop -------------------------------------------------------------------------------------------------------
def test_gymnasium_next_step_autoreset_is_what_the_loop_assumes():
    envs = make_vector("CartPole-v1", 1, seed=0, max_episode_steps=3)
    envs.reset(seed=0)
    flags = []
    for _ in range(5):
        obs, reward, term, trunc, _ = envs.step(np.zeros(1, np.int64))
        flags.append((float(reward[0]), bool(term[0] or trunc[0])))
    envs.close()
    # three real steps, the third truncated; then a reset step with reward 0 and no done flag
    assert flags[:4] == [(1.0, False), (1.0, False), (1.0, True), (0.0, False)]


def test_schedule_rounds_to_whole_rollouts():
    plan = on_policy.schedule(RunArgs(steps=1_000_000, eval_every=50_000, snapshot_every=300_000), 2048)
    assert plan["total"] == 488 * 2048 and plan["eval_every"] == 24 * 2048
    assert plan["checkpoint_every"] == plan["eval_every"] and plan["snapshot_every"] % plan["eval_every"] == 0
    assert on_policy.schedule(RunArgs(steps=100, eval_every=10), 64)["total"] == 64


def test_loop_writes_rows_exports_and_resumes(tmp_path):
    cfg = CFG
    out = str(tmp_path / "run")
    common = dict(env="Pendulum-v1", eval_every=128, eval_episodes=1, out=out, progress=False, tensorboard=False)
    summary = on_policy.train("ppo", ppo, cfg, RunArgs(steps=256, seeds=2, **common))
    lines = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert [int(r.split(",")[0]) for r in lines[1:]] == [128, 256]
    assert "train/value_loss" in lines[0] and "eval/return/seed1" in lines[0]
    assert summary["step"] == 256 and len(summary["final"]["seeds"]) == 2
    policy = load_policy(tmp_path / "run" / "final" / "seed1")
    assert policy.normalizer is not None and np.any(np.asarray(policy.normalizer["std"]) != 1.0)
    assert np.all(np.abs(policy(np.zeros((4, 3), np.float32))) <= 2.0)
    summary = on_policy.train("ppo", ppo, cfg, RunArgs(steps=384, seeds=2, resume=True, **common))
    lines = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert [int(r.split(",")[0]) for r in lines[1:]] == [128, 256, 384]
    assert summary["step"] == 384
    with pytest.raises(UnderstudyError, match="already exists"):
        on_policy.train("ppo", ppo, cfg, RunArgs(steps=256, seeds=2, **common))
