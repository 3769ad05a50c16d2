"""TD3+BC, IQL and CQL: their losses numerically, and the algorithm contract through the offline loop.

Each algorithm trains 2 vmapped seeds for a few updates (jitted, inside the loop's lax.scan) on a small dataset of
the shipped Pendulum expert; the test then restores the run's last checkpoint and checks the state (shapes, every
seed moved away from its initialization and from the other seed), the acting function (shapes, bounds), the
logged metrics (finite), that the final/ exports reload with `load_policy` and act exactly as the checkpointed
agent, and that the best/ exports load. One loop run per algorithm keeps the compilations, which are most of the
time on CPU, to a minimum.
"""

import csv
import dataclasses
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from understudy.algos import cql, iql, losses, td3bc
from understudy.checkpoint import TrainCheckpointer
from understudy.data import collect, load_dataset, save_dataset
from understudy.data.normalize import fit_normalizer, normalize
from understudy.policy import load_policy, to_env_action
from understudy.train import offline
from understudy.train.common import RunArgs
from understudy.types import ArraySpec, Batch, EnvSpec, UnderstudyError

EXPERT = Path(__file__).resolve().parents[1] / "experts" / "Pendulum-v1"
SMALL = (16,)  # one hidden layer: compiling (init and update) is most of these tests' time
STEPS, SEEDS = 2, 2
# Small networks, small batches; options that exercise the non-default paths where they are cheap to check.
CASES = {
    "td3bc": (td3bc, td3bc.Config(hidden_dims=SMALL, batch_size=64)),
    "iql": (iql, iql.Config(hidden_dims=SMALL, batch_size=64, actor_lr_decay_steps=STEPS,
                            normalize_reward_by_returns=True)),
    "cql": (cql, cql.Config(hidden_dims=SMALL, batch_size=64, num_sampled_actions=4, lagrange=True, bc_steps=1)),
}


# -- losses ------------------------------------------------------------------------------------------
def test_expectile_loss_is_asymmetric_and_its_minimizer_is_the_expectile():
    diff = jnp.array([-2.0, -0.5, 0.0, 0.5, 2.0])
    np.testing.assert_allclose(losses.expectile_loss(diff, 0.7), [0.3 * 4, 0.3 * 0.25, 0.0, 0.7 * 0.25, 0.7 * 4],
                               rtol=1e-6)
    np.testing.assert_allclose(losses.expectile_loss(diff, 0.5), 0.5 * np.square(diff), rtol=1e-6)
    # Over samples {0, 1} the 0.7-expectile is 0.7: 0.3 v^2 + 0.7 (1 - v)^2 is stationary there.
    samples = jnp.array([0.0, 1.0])
    grad = jax.grad(lambda v, tau: jnp.mean(losses.expectile_loss(samples - v, tau)))
    assert float(grad(0.7, 0.7)) == pytest.approx(0.0, abs=1e-6)
    assert float(grad(0.5, 0.7)) < 0 < float(grad(0.9, 0.7))  # below the expectile the loss still falls
    with pytest.raises(ValueError, match="tau"):
        losses.expectile_loss(diff, 1.0)


def test_td3bc_actor_loss_scales_q_by_alpha_over_mean_abs_q():
    q = jnp.array([2.0, -4.0, 5.0])  # mean 1, mean |q| 11/3
    pi = jnp.array([[0.5, 0.0], [0.0, -1.0], [1.0, 1.0]])
    data = jnp.array([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    lmbda = 2.5 / (11 / 3)
    mse = (0.25 + 1.0 + 1.0) / 6
    assert float(losses.td3bc_actor_loss(q, pi, data, 2.5)) == pytest.approx(-lmbda * 1.0 + mse, rel=1e-6)
    # lambda carries no gradient: dL/dq_i = -lambda / B; and rescaling Q leaves the Q term unchanged.
    np.testing.assert_allclose(jax.grad(losses.td3bc_actor_loss)(q, pi, data, 2.5), -lmbda / 3, rtol=1e-6)
    assert float(losses.td3bc_actor_loss(100.0 * q, pi, data, 2.5)) == pytest.approx(-lmbda + mse, rel=1e-6)
    assert float(losses.td3bc_actor_loss(q, pi, data, 0.0)) == pytest.approx(mse, rel=1e-6)  # alpha 0: pure BC
    np.testing.assert_allclose(jax.grad(losses.td3bc_actor_loss, argnums=1)(q, pi, data, 2.5), 2 * (pi - data) / 6,
                               rtol=1e-6)


def test_cql_penalty_is_the_weighted_logsumexp_minus_data_q():
    q_sampled = np.array([[[1.0, 2.0, 0.5], [-1.0, 0.0, 3.0]]], np.float32)  # [E=1, B=2, M=3]
    log_weights = np.array([[[0.7, 0.7, -0.2], [0.1, 1.5, -0.3]]], np.float32)
    q_data = np.array([[1.5, -2.0]], np.float32)
    expected = np.mean(np.log(np.sum(np.exp(q_sampled + log_weights), -1)) - q_data, -1)
    got = losses.cql_penalty(jnp.asarray(q_sampled), jnp.asarray(log_weights), jnp.asarray(q_data))
    assert got.shape == (1,)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    # Temperature T: T logsumexp((q + w) / T).
    expected_t = np.mean(0.5 * np.log(np.sum(np.exp((q_sampled + log_weights) / 0.5), -1)) - q_data, -1)
    np.testing.assert_allclose(losses.cql_penalty(q_sampled, log_weights, q_data, 0.5), expected_t, rtol=1e-6)
    # Uniform samples over [-1, 1]^A have log weight A log 2: M equal Q values give q + log M + A log 2 - q_data.
    flat = jnp.full((4, 10), 3.0)
    np.testing.assert_allclose(losses.cql_penalty(flat, jnp.full((4, 10), 2 * math.log(2.0)), jnp.full(4, 1.0)),
                               3.0 + math.log(10) + 2 * math.log(2.0) - 1.0, rtol=1e-6)
    # The gradient lowers Q on the samples (softmax weights summing to 1 per state) and raises it on the data.
    g_sampled, g_data = jax.grad(lambda s, d: losses.cql_penalty(s, jnp.asarray(log_weights), d)[0], argnums=(0, 1))(
        jnp.asarray(q_sampled), jnp.asarray(q_data))
    np.testing.assert_allclose(g_sampled.sum(-1), [[0.5, 0.5]], rtol=1e-6)
    np.testing.assert_allclose(g_data, [[-0.5, -0.5]], rtol=1e-6)


def test_iql_advantage_weights_are_exponential_and_clipped():
    got = iql.advantage_weights(jnp.array([-1.0, 0.0, 1.0, 2.0]), beta=3.0, max_weight=100.0)
    np.testing.assert_allclose(got, [math.exp(-3), 1.0, math.exp(3), 100.0], rtol=1e-6)


@pytest.mark.parametrize("call", [
    lambda: losses.td3bc_actor_loss(jnp.zeros((4, 1)), jnp.zeros((4, 2)), jnp.zeros((4, 2)), 2.5),
    lambda: losses.td3bc_actor_loss(jnp.zeros(4), jnp.zeros((4, 2)), jnp.zeros((4, 3)), 2.5),
    lambda: losses.td3bc_actor_loss(jnp.zeros(3), jnp.zeros((4, 2)), jnp.zeros((4, 2)), 2.5),
    lambda: losses.cql_penalty(jnp.zeros((2, 4, 3)), jnp.zeros((4, 3)), jnp.zeros((2, 4))),
    lambda: losses.cql_penalty(jnp.zeros((2, 4, 3)), jnp.zeros((2, 4, 3)), jnp.zeros((2, 3))),
])
def test_shape_mismatches_raise(call):
    with pytest.raises(ValueError, match="shape"):
        call()


def test_cql_proposals_are_uniform_and_policy_samples_weighted_by_inverse_density():
    spec_dims, n = (3, 2), CASES["cql"][1].num_sampled_actions
    cfg = CASES["cql"][1]
    actor = cql._actor(cfg, spec_dims[1])
    rng = np.random.default_rng(0)
    obs = jnp.asarray(rng.normal(size=(64, spec_dims[0])), jnp.float32)
    batch = Batch(obs, jnp.zeros((64, spec_dims[1])), jnp.zeros(64), jnp.zeros(64), 2.0 * obs)

    @jax.jit
    def proposals_and_log_probs(batch, key):
        # Only the actor matters here; a State with just actor parameters avoids compiling the whole init.
        params = actor.init(jax.random.PRNGKey(0), batch.observations)
        state = cql.State(params, None, None, None, None, None, None, None, None, None, None, action_dim=spec_dims[1])
        actions, log_weights = cql.sampled_actions(cfg, state, batch, key)
        current = actor.apply(params, cql._repeat(batch.observations, n), actions[:, n:2 * n], method="log_prob")
        following = actor.apply(params, cql._repeat(batch.next_observations, n), actions[:, 2 * n:], method="log_prob")
        return actions, log_weights, current, following

    actions, log_weights, current, following = proposals_and_log_probs(batch, jax.random.PRNGKey(1))
    assert actions.shape == (64, 3 * n, 2) and log_weights.shape == (64, 3 * n)
    assert np.all(np.abs(np.asarray(actions)) <= 1.0)
    np.testing.assert_allclose(log_weights[:, :n], 2 * math.log(2.0), rtol=1e-6)
    assert np.asarray(actions[:, :n]).std() == pytest.approx(1 / math.sqrt(3), rel=0.1)  # U(-1, 1): std 1/sqrt(3)
    # Policy samples carry -log pi(a|s) of their own state (s for current actions, s' for next-state actions);
    # compared away from the box's edge, where recovering the pre-tanh sample from the action loses precision.
    inside = np.all(np.abs(np.asarray(actions)) < 0.99, axis=-1)
    assert inside[:, n:].mean() > 0.8
    for part, log_prob in ((slice(n, 2 * n), current), (slice(2 * n, 3 * n), following)):
        np.testing.assert_allclose(np.asarray(log_weights[:, part])[inside[:, part]],
                                   -np.asarray(log_prob)[inside[:, part]], rtol=1e-3, atol=1e-3)
    assert not np.allclose(actions[:, n:2 * n].mean(1), actions[:, 2 * n:].mean(1), atol=1e-3)


def test_per_state_samples_equal_samples_of_repeated_states():
    """CQL draws its n policy proposals per state from one actor pass (samples_and_log_probs); with the same key
    this must equal running the actor on the state repeated n times (sample_and_log_prob), the costlier form."""
    n, cfg = 5, CASES["cql"][1]
    actor = cql._actor(cfg, 2)
    obs = jnp.asarray(np.random.default_rng(0).normal(size=(16, 3)), jnp.float32)
    params = actor.init(jax.random.PRNGKey(0), obs)
    key = jax.random.PRNGKey(7)
    once, once_log_prob = actor.apply(params, obs, key, n, method="samples_and_log_probs")
    repeated, repeated_log_prob = actor.apply(params, cql._repeat(obs, n), key, method="sample_and_log_prob")
    assert once.shape == (16, n, 2) and once_log_prob.shape == (16, n)
    np.testing.assert_allclose(np.asarray(once), np.asarray(repeated), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(once_log_prob), np.asarray(repeated_log_prob), rtol=1e-5, atol=1e-5)
    assert not np.allclose(once[:, 0], once[:, 1])  # n different draws per state, not one draw copied


@pytest.mark.parametrize("mod", [td3bc, iql, cql], ids=["td3bc", "iql", "cql"])
def test_discrete_actions_are_rejected(mod):
    spec = EnvSpec("SyntheticDiscrete-v0", "gymnasium", ArraySpec((3,), "float32"), ArraySpec((), "int64"),
                   num_actions=3)
    with pytest.raises(UnderstudyError, match="continuous actions"):
        mod.init(mod.Config(), spec, jax.random.PRNGKey(0))


def test_bad_settings_are_rejected():
    spec = EnvSpec("Synthetic-v0", "gymnasium", ArraySpec((3,), "float32"), ArraySpec((1,), "float32", (-1.0,), (1.0,)))
    for mod, bad, flag in ((td3bc, dict(policy_frequency=0), "--policy-frequency"),
                           (td3bc, dict(alpha=-1.0), "--alpha"), (iql, dict(expectile=1.0), "--expectile"),
                           (cql, dict(num_sampled_actions=0), "--num-sampled-actions")):
        with pytest.raises(UnderstudyError, match=flag):
            mod.init(dataclasses.replace(mod.Config(), **bad), spec, jax.random.PRNGKey(0))


# -- the contract, through the offline loop ----------------------------------------------------------
@pytest.fixture(scope="module")
def pendulum_dataset(tmp_path_factory):
    """Three episodes (600 steps) of the shipped Pendulum expert, saved as a dataset directory."""
    ds = collect("Pendulum-v1", load_policy(EXPERT), episodes=3, num_envs=3, seed=0, progress=False,
                 policy_name="expert")
    return save_dataset(ds, tmp_path_factory.mktemp("data") / "pendulum-expert")


def _numeric(x):
    return jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x


@pytest.mark.parametrize("name", list(CASES))
def test_offline_loop_trains_two_seeds_and_exports_reload_with_identical_actions(name, pendulum_dataset, tmp_path):
    mod, cfg = CASES[name]
    out = tmp_path / name
    summary = offline.train(name, mod, cfg, RunArgs(dataset=str(pendulum_dataset), steps=STEPS, eval_every=STEPS,
                                                    eval_episodes=1, seeds=SEEDS, out=str(out), progress=False,
                                                    tensorboard=False), method=name)
    assert [s["seed"] for s in summary["final"]["seeds"]] == [0, 1]
    assert all(np.isfinite(s["mean"]) and -2000 < s["mean"] <= 0 for s in summary["final"]["seeds"])

    # Logged training metrics (one row, at the only evaluation): every train/ metric finite.
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [STEPS]
    train_keys = [k for k in rows[0] if k.startswith("train/")]
    assert "train/critic_loss" in train_keys and "train/actor_loss" in train_keys
    assert all(np.isfinite(float(r[k])) for r in rows for k in train_keys)

    # The checkpointed state: both seeds took STEPS updates and moved away from their init and from each other.
    ds = load_dataset(pendulum_dataset)
    spec = load_policy(out / "final" / "seed0").spec
    initial = jax.vmap(lambda s: mod.init(cfg, spec, jax.random.PRNGKey(s)))(jnp.arange(SEEDS))
    keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.PRNGKey(s), 1))(jnp.arange(SEEDS))
    checkpointer = TrainCheckpointer(out / "checkpoints")
    step, tree, _ = checkpointer.restore_latest({"state": initial, "keys": keys})
    checkpointer.close()
    state = tree["state"]
    assert step == STEPS and np.asarray(state.step).tolist() == [STEPS] * SEEDS
    assert jax.tree.structure(state) == jax.tree.structure(initial)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(initial), strict=True):
        assert np.shape(a) == np.shape(b) and np.shape(a)[:1] == (SEEDS,)
    for s in range(SEEDS):
        assert any(not np.allclose(_numeric(a)[s], _numeric(b)[s])
                   for a, b in zip(jax.tree.leaves(state.actor_params), jax.tree.leaves(initial.actor_params)))
        assert any(not np.allclose(a[s], b[s])
                   for a, b in zip(jax.tree.leaves(state.critic_params), jax.tree.leaves(initial.critic_params)))
    assert any(not np.allclose(a[0], a[1]) for a in jax.tree.leaves(state.actor_params))

    # Acting: [seeds, B, A] in [-1, 1]; sampling (TD3+BC: exploration noise) differs from the greedy action.
    normalizer = fit_normalizer(ds.observations)
    obs = ds.observations[::7].astype(np.float32)
    act = jax.jit(jax.vmap(lambda st, o, k, d: mod.act(cfg, st, o, k, d), in_axes=(0, None, None, None)),
                  static_argnums=3)
    greedy = np.asarray(act(state, normalize(obs, normalizer), jax.random.PRNGKey(3), True))
    sampled = np.asarray(act(state, normalize(obs, normalizer), jax.random.PRNGKey(3), False))
    assert greedy.shape == sampled.shape == (SEEDS, len(obs), spec.action_dim)
    assert np.all(np.abs(greedy) <= 1.0) and np.all(np.abs(sampled) <= 1.0)
    assert not np.allclose(greedy, sampled)

    # final/ exports act exactly as the checkpointed agent; best/ exports (the same single evaluation) load.
    for s in range(SEEDS):
        final = load_policy(out / "final" / f"seed{s}")
        np.testing.assert_allclose(final(obs), to_env_action(greedy[s], spec), rtol=1e-5, atol=1e-5)
        assert final.metadata["algo"] == name and final.metadata["step"] == STEPS
        assert load_policy(out / "best" / f"seed{s}").metadata["step"] == STEPS

    # Algorithm-specific bookkeeping visible after a few updates.
    if mod is td3bc:  # the actor trains on every second update
        assert all(float(r["train/actor_step"]) == 0.5 for r in rows)
        assert all(float(r["train/bc_mse"]) > 0 and float(r["train/lambda"]) > 0 for r in rows)
    if mod is cql:  # the Lagrange multiplier moved from its start log alpha' = 1
        assert np.all(np.asarray(state.log_alpha_prime) != 1.0)
    if mod is iql:  # the reward scale was set from the dataset's episode returns, and recorded
        returns = ds.episode_returns()
        recorded = json.loads((out / "config.json").read_text())["config"]
        assert recorded["dataset_reward_scale"] == pytest.approx(1000 / (returns.max() - returns.min()))


@pytest.mark.parametrize("mod", [td3bc, iql, cql], ids=["td3bc", "iql", "cql"])
def test_config_is_documented_and_its_flags_do_not_clash_with_the_run_flags(mod):
    """`understudy train ALGO` puts RunArgs and Config flags side by side, so their names must differ."""
    import ast
    import inspect

    fields = [f.name for f in dataclasses.fields(mod.Config)]
    assert not set(fields) & {f.name for f in dataclasses.fields(RunArgs)}
    # Every field is followed by its docstring (tyro shows it as the flag's help).
    body = next(node for node in ast.parse(inspect.getsource(mod)).body
                if isinstance(node, ast.ClassDef) and node.name == "Config").body
    documented = {stmt.target.id for stmt, after in zip(body, body[1:])
                  if isinstance(stmt, ast.AnnAssign) and isinstance(after, ast.Expr)
                  and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)}
    assert documented == set(fields)
    assert mod.Config().normalize_observations  # CORL normalizes states for all three


def test_corl_defaults_and_cql_presets():
    assert (td3bc.Config().alpha, td3bc.Config().policy_noise, td3bc.Config().noise_clip) == (2.5, 0.2, 0.5)
    assert (iql.Config().expectile, iql.Config().beta, iql.Config().max_weight) == (0.7, 3.0, 100.0)
    corl = cql.Config()
    assert (corl.cql_alpha, corl.num_sampled_actions, corl.hidden_dims) == (10.0, 10, (256, 256, 256))
    assert (corl.actor_lr, corl.critic_lr, corl.tau, corl.lagrange) == (3e-5, 3e-4, 0.005, False)
    assert cql.PRESETS["corl"] == corl and cql.PRESETS["small"].hidden_dims == (64, 64)


def test_reward_scale_from_returns_is_1000_over_the_return_spread():
    from understudy.data.episodes import Dataset

    def dataset(episode_rewards):
        rewards = np.concatenate(episode_rewards).astype(np.float32)
        n = len(rewards)
        ends = np.cumsum([len(r) for r in episode_rewards]) - 1
        return Dataset(observations=np.zeros((n, 1), np.float32), next_observations=np.zeros((n, 1), np.float32),
                       actions=np.zeros((n, 1), np.float32), rewards=rewards, terminations=np.isin(np.arange(n), ends),
                       truncations=np.zeros(n, bool), episode_starts=np.concatenate([[0], ends[:-1] + 1]))

    ds = dataset([np.full(4, -25.0), np.full(2, 200.0), np.full(3, 50.0)])  # returns -100, 400, 150
    cfg = iql.Config(normalize_reward_by_returns=True)
    assert offline.reward_scale_from_returns(cfg, ds).dataset_reward_scale == pytest.approx(2.0)
    assert offline.reward_scale_from_returns(iql.Config(), ds) == iql.Config()  # off by default: unchanged
    with pytest.raises(UnderstudyError, match="cannot be combined with --dataset-reward-scale 0.5"):
        offline.reward_scale_from_returns(dataclasses.replace(cfg, dataset_reward_scale=0.5), ds)
    with pytest.raises(UnderstudyError, match="different returns"):
        offline.reward_scale_from_returns(cfg, dataset([np.ones(3), np.ones(3)]))
