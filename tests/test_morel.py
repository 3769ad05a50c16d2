"""MOReL: the unknown-state detector, thresholds and halting on toy ensembles with known predictions, the model
losses numerically, and the contract through the model-based loop (tiny runs with --rl sac and --rl ppo: finite
metrics, checkpoints, exports that reload and act exactly as the agent, resume).

The toy ensembles are linear members (no hidden layer) whose weights the tests set, so every prediction is known:
member i predicts the change of state i * c * s_0 in the first coordinate (standardization statistics 0 / 1).
"""

import csv
import dataclasses
import math
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from understudy.algos import morel, ppo
from understudy.checkpoint import TrainCheckpointer
from understudy.data import collect, load_dataset, save_dataset
from understudy.data.normalize import fit_normalizer, normalize
from understudy.data.replay import replay_init_batched
from understudy.nets import dynamics
from understudy.policy import load_policy, to_env_action
from understudy.train import model_based
from understudy.train.common import RunArgs
from understudy.types import ArraySpec, Batch, EnvSpec, UnderstudyError

EXPERT = Path(__file__).resolve().parents[1] / "experts" / "Pendulum-v1"
OBS_DIM, ACTION_DIM = 3, 1
SPEC = EnvSpec("Synthetic-v0", "gymnasium", ArraySpec((OBS_DIM,), "float32"),
               ArraySpec((ACTION_DIM,), "float32", (-1.0,), (1.0,)))


# -- toy ensembles with known predictions --------------------------------------------------------------------
def toy_state(slopes, reward_bias=None, threshold=np.inf, halt_reward=-100.0, kappa=None, **overrides):
    """A MOReL state whose member i predicts next_obs = obs + slopes[i] * obs[0] * e_0 and reward reward_bias[i]
    (linear members, target mean 0 and std 1, termination logit -10)."""
    E = len(slopes)
    cfg = morel.Config(ensemble_size=E, model_hidden_dims=(), kappa=kappa, **overrides)
    # no RL state: these tests exercise the models alone (and skip compiling SAC's init)
    state = morel.State(dynamics=morel._init_dynamics(cfg, OBS_DIM, ACTION_DIM, jax.random.PRNGKey(0)), rl=None,
                        threshold=None, halt_reward=None, reward_low=None, reward_high=None, step=None,
                        obs_dim=OBS_DIM, action_dim=ACTION_DIM)
    kernel = np.zeros((E, OBS_DIM + ACTION_DIM, 2 * (OBS_DIM + 1) + 1), np.float32)
    kernel[:, 0, 0] = slopes
    bias = np.zeros((E, 2 * (OBS_DIM + 1) + 1), np.float32)
    bias[:, OBS_DIM] = 0.0 if reward_bias is None else reward_bias
    bias[:, -1] = -10.0  # termination logit: never terminates
    params = {"params": {"net": {"output": {"kernel": jnp.asarray(kernel), "bias": jnp.asarray(bias)}}}}
    assert jax.tree.structure(params) == jax.tree.structure(state.dynamics.params)
    state = state.replace(dynamics=state.dynamics.replace(params=params), threshold=jnp.float32(threshold),
                          halt_reward=jnp.float32(halt_reward), reward_low=jnp.float32(-5.0),
                          reward_high=jnp.float32(5.0))
    return cfg, state


def test_disagreement_is_the_largest_pairwise_distance():
    preds = np.zeros((3, 2, 2), np.float32)  # [E, B, D]
    preds[:, 0] = [[0.0, 0.0], [3.0, 4.0], [1.0, 0.0]]  # pairs: 5, 1, sqrt(4 + 16)
    preds[:, 1] = [[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]]  # agreement
    np.testing.assert_allclose(morel.disagreement(jnp.asarray(preds)), [5.0, 0.0], rtol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        morel.disagreement(jnp.zeros((2, 3)))


def test_detector_on_a_toy_ensemble_measures_the_members_spread():
    cfg, state = toy_state(slopes=(0.0, 0.5, 2.0), reward_bias=(1.0, 2.0, 3.0))
    obs = jnp.asarray([[1.0, 0.3, -0.2], [-2.0, 0.0, 0.0], [0.0, 5.0, 5.0]])
    action = jnp.zeros((3, 1))
    next_obs, reward, term = jax.jit(morel.ensemble_transitions, static_argnums=0)(cfg, state.dynamics, obs, action)
    assert next_obs.shape == (3, 3, OBS_DIM) and reward.shape == term.shape == (3, 3)
    np.testing.assert_allclose(next_obs[:, 1, 0], [-2.0, -3.0, -6.0], rtol=1e-6)  # s_0 + slope_i * s_0
    np.testing.assert_allclose(next_obs[..., 1:], np.broadcast_to(obs[None, :, 1:], (3, 3, 2)), atol=1e-6)
    np.testing.assert_allclose(reward, [[1.0] * 3, [2.0] * 3, [3.0] * 3], rtol=1e-6)
    # u = max |slope_i - slope_j| * |s_0| = 2 |s_0|
    np.testing.assert_allclose(jax.jit(morel.dataset_disagreement, static_argnums=0)(cfg, state.dynamics, obs, action),
                               [2.0, 4.0, 0.0],
                               atol=1e-5)


def test_thresholds_from_the_data_disagreement(monkeypatch):
    u = jnp.asarray([0.5, 1.0, 1.5, 3.0])
    assert float(morel.unknown_threshold(u, "max")) == pytest.approx(3.0)
    assert float(morel.unknown_threshold(u, "max", scale=0.5)) == pytest.approx(1.5)
    std = float(np.std([0.5, 1.0, 1.5, 3.0]))
    assert float(morel.unknown_threshold(u, "mean-std", num_std=2.0)) == pytest.approx(1.5 + 2 * std, rel=1e-5)
    with pytest.raises(ValueError, match="rule"):
        morel.unknown_threshold(u, "median")
    # The loop's chunked pass over the dataset (10 pairs in padded chunks of 4) finds the same max for every seed.
    monkeypatch.setattr(model_based, "DISAGREEMENT_CHUNK", 4)
    cfg, state = toy_state(slopes=(0.0, 1.0, 3.0))
    dyn = jax.tree.map(lambda x: jnp.stack([x, x]), state.dynamics)  # two seeds
    obs = np.zeros((10, OBS_DIM), np.float32)
    obs[:, 0] = np.linspace(-1.0, 0.5, 10)
    values, summary = model_based.thresholds(morel, cfg, dyn, obs, np.zeros((10, 1), np.float32))
    np.testing.assert_allclose(values, [3.0, 3.0], rtol=1e-5)  # 3 * max |s_0|
    assert summary["disagreement_mean"][0] == pytest.approx(3 * np.mean(np.abs(obs[:, 0])), rel=1e-5)


model_step = jax.jit(morel.model_step, static_argnums=0)  # one compilation instead of op-by-op dispatch


def test_unknown_pairs_halt_with_the_penalty_terminate_and_stay_halted():
    cfg, state = toy_state(slopes=(0.0, 1.0), reward_bias=(1.0, 1.0), threshold=0.5, halt_reward=-42.0,
                           rollout_member="mean")
    obs = jnp.asarray([[0.2, 0.0, 0.0], [1.0, 0.0, 0.0], [0.1, 0.0, 0.0]])  # u = |s_0|: known, unknown, known
    halted = jnp.asarray([False, False, True])  # the third is already in HALT
    step = model_step(cfg, state, obs, jnp.zeros((3, 1)), halted, jax.random.PRNGKey(0))
    np.testing.assert_allclose(step.disagreement, [0.2, 1.0, 0.1], atol=1e-6)
    assert step.halted.tolist() == [False, True, True] and step.terminal.tolist() == [False, True, True]
    np.testing.assert_allclose(step.reward, [1.0, -42.0, -42.0], rtol=1e-6)
    np.testing.assert_allclose(step.next_observation[0], [0.3, 0.0, 0.0], atol=1e-6)  # mean of 0.2 and 0.4
    np.testing.assert_allclose(step.next_observation[1:], obs[1:], atol=1e-6)  # HALT keeps the state
    again = model_step(cfg, state, step.next_observation, jnp.zeros((3, 1)), step.halted, jax.random.PRNGKey(1))
    assert again.halted.tolist() == [False, True, True]
    np.testing.assert_allclose(again.reward[1:], [-42.0, -42.0])
    # A random member per row: the next state is one member's prediction, never a blend.
    cfg_random = dataclasses.replace(cfg, rollout_member="random")
    picks = model_step(cfg_random, state, jnp.full((64, 3), 0.2), jnp.zeros((64, 1)), jnp.zeros(64, bool),
                             jax.random.PRNGKey(2)).next_observation[:, 0]
    np.testing.assert_allclose(np.unique(np.round(np.asarray(picks), 5)), [0.2, 0.4], rtol=1e-5)


def test_halting_reward_is_r_min_minus_kappa():
    cfg = morel.Config()
    assert morel.halt_reward(cfg, -3.0, 1.0) == pytest.approx(-3.0 - 4.0 / (1 - cfg.sac.gamma))  # scale-aware default
    assert morel.halt_reward(dataclasses.replace(cfg, kappa=100.0), -3.0, 1.0) == pytest.approx(-103.0)
    assert morel.halt_reward(dataclasses.replace(cfg, rl="ppo"), 0.0, 1.0) == pytest.approx(-1 / (1 - cfg.ppo.gamma))


# -- model losses --------------------------------------------------------------------------------------------
def test_model_losses_match_their_formulas():
    mean, logvar, y = jnp.asarray([[0.0, 1.0]]), jnp.asarray([[0.0, math.log(4.0)]]), jnp.asarray([[2.0, 3.0]])
    assert float(dynamics.gaussian_nll(mean, logvar, y)) == pytest.approx(0.5 * ((4.0 + 0.0) + (4.0 / 4 + math.log(4))) / 2)
    assert float(dynamics.squared_error(mean, y)) == pytest.approx((4.0 + 4.0) / 2)
    assert float(dynamics.termination_loss(jnp.asarray([0.0, 2.0]), jnp.asarray([1.0, 0.0]))) == pytest.approx(
        (math.log(2.0) + math.log(1 + math.exp(2.0))) / 2, rel=1e-6)
    kl = dynamics.kl_to_standard_normal(jnp.asarray([[1.0, 0.0]]), jnp.asarray([[0.0, math.log(2.0)]]))
    assert float(kl) == pytest.approx(0.5 * 1.0 + 0.5 * (2.0 - 1.0 - math.log(2.0)), rel=1e-6)
    with pytest.raises(ValueError, match="shape"):
        dynamics.gaussian_nll(mean, logvar, jnp.zeros((2, 2)))

    # The ensemble loss of the toy members (known predictions, zero raw log-variance) on known targets.
    cfg, state = toy_state(slopes=(0.0, 1.0))
    obs = jnp.asarray([[[1.0, 0.0, 0.0]], [[2.0, 0.0, 0.0]]])  # [E=2, B=1, D]: one row per member
    targets = jnp.asarray([[[0.0, 1.0, 0.0, 1.0]], [[0.0, 1.0, 0.0, 0.0]]])  # change of state, reward
    net = morel.dynamics_net(cfg, OBS_DIM)
    loss, metrics = jax.jit(dynamics.ensemble_loss, static_argnums=(0, 7))(
        net, state.dynamics.params, obs, jnp.zeros((2, 1, 1)), targets, jnp.zeros((2, 1)), jax.random.PRNGKey(0), "nll")
    # member 0 predicts delta (0, 0, 0) and reward 0, targets (0, 1, 0, 1); member 1 predicts (2, 0, 0, 0) vs (0, 1, 0, 0)
    expected_mse = np.mean([(1 + 1) / 4, (4 + 1) / 4])
    assert float(metrics["mse"]) == pytest.approx(expected_mse, rel=1e-5)
    lv = 0.5 - math.log1p(math.exp(0.5))  # the soft clamp at raw log-variance 0
    lv = -10.0 + math.log1p(math.exp(lv + 10.0))
    expected_nll = np.mean([0.5 * (sq * math.exp(-lv) + lv) for sq in (0.5, 1.25)])  # entries averaged per member
    term = math.log1p(math.exp(-10.0))  # BCE of logit -10 against label 0
    assert float(loss) == pytest.approx(2 * (expected_nll + term), rel=1e-4)  # summed over the members
    assert float(metrics["termination_loss"]) == pytest.approx(term, rel=1e-4)


def test_vae_member_loss_is_reconstruction_plus_weighted_kl_and_predicts_at_the_prior_mean():
    net = dynamics.make_dynamics("vae", 2, (), learn_terminations=False, latent_dim=1)  # linear encoder, decoder
    params = {"params": {"encoder": {"output": {"kernel": jnp.zeros((4, 2)), "bias": jnp.asarray([0.5, math.log(0.25)])}},
                         "decoder": {"output": {"kernel": jnp.zeros((3, 2)), "bias": jnp.asarray([1.0, -1.0])}}}}
    obs, action = jnp.asarray([[0.3]]), jnp.asarray([[0.1]])
    assert jax.tree.structure(params) == jax.tree.structure(
        jax.eval_shape(net.init, jax.random.PRNGKey(0), obs, action, jnp.zeros((1, 2)), jax.random.PRNGKey(1)))
    loss, metrics = jax.jit(dynamics.member_loss, static_argnums=(0, 7, 8))(
        net, params, obs, action, jnp.asarray([[2.0, -1.0]]), jnp.zeros(1), jax.random.PRNGKey(2), "nll", 0.5)
    kl = 0.5 * (0.25 + 0.25 - 1.0 - math.log(0.25))  # z ~ N(0.5, 0.25) against N(0, 1)
    assert float(metrics["mse"]) == pytest.approx(0.5) and float(metrics["kl"]) == pytest.approx(kl, rel=1e-5)
    assert float(loss) == pytest.approx(0.5 + 0.5 * kl, rel=1e-5)
    prediction = net.apply(params, obs, action, method="predict")
    np.testing.assert_allclose(prediction["mean"], [[1.0, -1.0]])
    assert prediction["logvar"] is None and prediction["term_logit"] is None


@pytest.mark.slow
def test_both_model_kinds_fit_a_toy_dynamics():
    """200 updates of a small ensemble on s' = s + 0.1 a (reward -s_0^2) bring the held-out error far below the
    error of predicting the mean (1 in standardized units)."""
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(2, 4, 64, OBS_DIM)).astype(np.float32)  # [fit/validate, E, B, D]
    act = rng.uniform(-1, 1, (2, 4, 64, ACTION_DIM)).astype(np.float32)
    next_obs = obs + 0.1 * np.concatenate([act, act, act], axis=-1)
    batch = Batch(observations=obs, actions=act, rewards=-np.square(obs[..., 0]), terminations=np.zeros(obs.shape[:-1]),
                  next_observations=next_obs)
    stats = morel.target_statistics(obs.reshape(-1, OBS_DIM), next_obs.reshape(-1, OBS_DIM), batch.rewards.ravel())
    for kind in ("mlp", "vae"):
        cfg = morel.Config(model=kind, model_hidden_dims=(32,), model_lr=3e-3, learn_terminations=False)
        dyn = morel._init_dynamics(cfg, OBS_DIM, ACTION_DIM, jax.random.PRNGKey(0))
        dyn = dyn.replace(target_mean=jnp.asarray(stats["mean"]), target_std=jnp.asarray(stats["std"]))
        train_batch, val_batch = (jax.tree.map(lambda x, i=i: jnp.asarray(x[i]), batch) for i in (0, 1))
        flat_val = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), val_batch)

        @jax.jit
        def fit(dyn):
            def one(d, k):
                return morel.model_update(cfg, d, train_batch, k)
            return jax.lax.scan(one, dyn, jax.random.split(jax.random.PRNGKey(1), 200))[0]

        error = jax.jit(morel.model_validation_error, static_argnums=0)
        before, after = float(error(cfg, dyn, flat_val)), float(error(cfg, fit(dyn), flat_val))
        assert after < 0.25 < before, (kind, before, after)


# -- settings ------------------------------------------------------------------------------------------------
def test_config_is_documented_and_bad_settings_are_rejected():
    import ast
    import inspect

    fields = [f.name for f in dataclasses.fields(morel.Config)]
    assert not set(fields) & {f.name for f in dataclasses.fields(RunArgs)}
    body = next(node for node in ast.parse(inspect.getsource(morel)).body
                if isinstance(node, ast.ClassDef) and node.name == "Config").body
    documented = {stmt.target.id for stmt, after in zip(body, body[1:])
                  if isinstance(stmt, ast.AnnAssign) and isinstance(after, ast.Expr)
                  and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)}
    assert documented == set(fields)
    assert morel.PRESETS["paper"].model_hidden_dims == (512, 512) and morel.PRESETS["paper"].ensemble_size == 4
    for bad, flag in ((dict(ensemble_size=1), "--ensemble-size"), (dict(rl="td3"), "--rl"),
                      (dict(real_ratio=1.0), "--real-ratio"), (dict(kappa=-1.0), "--kappa"),
                      (dict(rollout_horizon=0), "--rollout-horizon")):
        with pytest.raises(UnderstudyError, match=flag):
            morel.check(dataclasses.replace(morel.Config(), **bad))
    discrete = EnvSpec("D-v0", "gymnasium", ArraySpec((3,), "float32"), ArraySpec((), "int64"), num_actions=2)
    with pytest.raises(UnderstudyError, match="continuous actions"):
        morel.init(morel.Config(), discrete, jax.random.PRNGKey(0))


def test_a_seed_whose_models_stopped_early_ends_as_a_run_of_its_own(monkeypatch, tmp_path):
    """In a 2-seed fit, seed 0 runs out of patience while seed 1 still improves. Seed 0's ensemble and keys must be
    those at its stop (as in a 1-seed run), even though its validation error dips again while seed 1 trains on."""
    losses = {0: [1.0, 2.0, 3.0, 0.1, 0.1, 0.1], 1: [1.0, 0.9, 0.8, 0.7, 0.6, 0.5]}  # per chunk of 10 updates

    def fit(dyn, keys, fit_data, num_updates):
        split_first = jax.vmap(lambda k: jax.random.split(k)[0])
        return {"chunks": dyn["chunks"] + 1}, split_first(keys), {"loss": jnp.zeros(2)}

    def validation(dyn, val_batch):
        chunk = int(dyn["chunks"][0]) - 1
        return np.array([losses[0][chunk], losses[1][chunk]])

    monkeypatch.setattr(model_based, "_model_programs", lambda algo, mcfg: SimpleNamespace(fit=fit,
                                                                                          validation=validation))
    algo = SimpleNamespace(model_config=lambda cfg: None)
    cfg = dataclasses.replace(morel.Config(), model_steps=60, model_eval_every=10, model_patience=2)
    keys = jnp.stack([jax.random.PRNGKey(0), jax.random.PRNGKey(1)])
    dyn, out_keys, summary = model_based.fit_models(algo, cfg, {"chunks": jnp.zeros(2, jnp.int32)}, keys,
                                                     None, "held-out", tmp_path, progress=False)

    after = lambda key, n: key if n == 0 else after(jax.random.split(key)[0], n - 1)  # noqa: E731
    assert summary["updates"] == 60 and summary["best_step"] == [10, 60]
    assert summary["validation_mse"] == [1.0, 0.5]
    assert dyn["chunks"].tolist() == [1, 6]  # seed 0 keeps its chunk-1 best: the dip at chunk 4 came after its stop
    np.testing.assert_array_equal(out_keys[0], after(keys[0], 3))  # seed 0 stopped after its 3rd chunk
    np.testing.assert_array_equal(out_keys[1], after(keys[1], 6))


# -- the contract, through the model-based loop ------------------------------------------------------------------
SMALL = (16,)
BASE = morel.Config(sac=dataclasses.replace(morel.Config().sac, hidden_dims=SMALL, batch_size=32, buffer_size=1000),
                    ppo=dataclasses.replace(morel.Config().ppo, hidden_dims=SMALL, num_envs=4, num_steps=8,
                                            num_minibatches=2, update_epochs=1),
                    model_hidden_dims=SMALL, model_batch_size=32, model_steps=20, model_eval_every=10,
                    rollout_batch_size=8, rollout_horizon=3, rollout_every=2, episode_horizon=5)
SEEDS = 2


@pytest.fixture(scope="module")
def pendulum_dataset(tmp_path_factory):
    """Three episodes (600 steps) of the shipped Pendulum expert."""
    ds = collect("Pendulum-v1", load_policy(EXPERT), episodes=3, num_envs=3, seed=0, progress=False,
                 policy_name="expert")
    return save_dataset(ds, tmp_path_factory.mktemp("data") / "pendulum-expert")


def _run(cfg, dataset, out, steps, **kw):
    return model_based.train("morel", morel, cfg, RunArgs(dataset=str(dataset), steps=steps, eval_every=4,
                                                          eval_episodes=1, seeds=SEEDS, out=str(out), progress=False,
                                                          tensorboard=False, **kw))


def _restore(cfg, out):
    """The run's latest checkpoint: (step, state [seeds], meta)."""
    spec = load_policy(out / "final" / "seed0").spec
    stacked = lambda trees: jax.tree.map(lambda *xs: jnp.stack(xs), *trees)  # noqa: E731
    like = {"state": stacked([morel.init(cfg, spec, jax.random.PRNGKey(s)) for s in range(SEEDS)]),
            "keys": stacked([jax.random.PRNGKey(s) for s in range(SEEDS)])}
    if cfg.rl == "sac":  # the replay buffers of model transitions
        like["rollouts"] = replay_init_batched(SEEDS, cfg.sac.buffer_size, (spec.obs_dim,), (spec.action_dim,))
    else:  # the model episodes in progress
        n = cfg.ppo.num_envs
        like["rollouts"] = model_based.ModelEpisodes(obs=jnp.zeros((SEEDS, n, spec.obs_dim)),
                                                     t=jnp.zeros((SEEDS, n), jnp.int32),
                                                     resetting=jnp.zeros((SEEDS, n), bool))
    checkpointer = TrainCheckpointer(out / "checkpoints")
    step, tree, meta = checkpointer.restore_latest(like)
    checkpointer.close()
    return step, tree["state"], meta


@pytest.mark.parametrize("rl", ["sac", "ppo"])
def test_loop_trains_models_then_the_policy_and_exports_reload_with_identical_actions(rl, pendulum_dataset, tmp_path):
    cfg = dataclasses.replace(BASE, rl=rl)
    out = tmp_path / rl
    summary = _run(cfg, pendulum_dataset, out, steps=4)
    assert summary["method"] == f"morel-{rl}" and [s["seed"] for s in summary["final"]["seeds"]] == [0, 1]
    assert all(np.isfinite(s["mean"]) and -2000 < s["mean"] <= 0 for s in summary["final"]["seeds"])

    # The models: two validation rows, thresholds = the max data disagreement, the halting reward r_min - kappa.
    model = summary["model"]
    with open(out / "model" / "metrics.csv") as f:
        model_rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in model_rows] == [10, 20]
    assert all(np.isfinite(float(r[k])) for r in model_rows for k in ("train/loss", "val/mse"))
    assert model["threshold"] == model["disagreement_max"] and all(t > 0 for t in model["threshold"])
    rewards = load_dataset(pendulum_dataset).rewards
    gamma = cfg.sac.gamma if rl == "sac" else cfg.ppo.gamma
    assert model["halt_reward"] == pytest.approx(rewards.min() - (rewards.max() - rewards.min()) / (1 - gamma),
                                                 rel=1e-4)

    # Policy metrics: one row at the only evaluation, every train/ metric finite, model-rollout statistics present.
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [4]
    train_keys = [k for k in rows[0] if k.startswith("train/")]
    assert "train/model/halt_rate" in train_keys and ("train/critic_loss" if rl == "sac" else "train/policy_loss") \
        in train_keys
    assert all(np.isfinite(float(rows[0][k])) for k in train_keys)

    # The checkpoint: the fitted models and thresholds, the RL state moved; final/ exports act as the agent.
    step, state, meta = _restore(cfg, out)
    assert step == 4 and meta["model"]["threshold"] == model["threshold"]
    np.testing.assert_allclose(state.threshold, model["threshold"], rtol=1e-6)
    assert np.asarray(state.dynamics.step).tolist() == [20, 20]
    assert np.asarray(state.step).tolist() == ([4, 4] if rl == "sac" else [4 // 2] * 2)  # PPO: 2 grad steps/update
    ds = load_dataset(pendulum_dataset)
    obs = ds.observations[::7].astype(np.float32)
    greedy = jax.vmap(lambda st: morel.act(cfg, st, normalize(obs, fit_normalizer(ds.observations)),
                                           jax.random.PRNGKey(0), True))(state)
    for s in range(SEEDS):
        final = load_policy(out / "final" / f"seed{s}")
        np.testing.assert_allclose(final(obs), to_env_action(np.asarray(greedy[s]), final.spec), rtol=1e-5, atol=1e-5)
        assert final.metadata["algo"] == "morel" and final.metadata["step"] == 4
        assert load_policy(out / "best" / f"seed{s}").metadata["step"] == 4

    if rl == "sac":  # resuming continues from the checkpoint (models kept, not refitted) to the new --steps
        summary = _run(cfg, pendulum_dataset, out, steps=8, resume=True)
        assert summary["step"] == 8 and summary["model"]["threshold"] == model["threshold"]
        with open(out / "metrics.csv") as f:
            assert [int(r["step"]) for r in csv.DictReader(f)] == [4, 8]
        step, state, _ = _restore(cfg, out)
        assert step == 8 and np.asarray(state.step).tolist() == [8, 8]
        assert np.asarray(state.dynamics.step).tolist() == [20, 20]


# -- learning checks ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def noisy_expert(tmp_path_factory):
    ds = collect("Pendulum-v1", load_policy(EXPERT), steps=20_000, action_noise=0.3, seed=0, progress=False,
                 policy_name="expert+noise0.3")
    return save_dataset(ds, tmp_path_factory.mktemp("data") / "pendulum-noisy-expert")


# Measured here (one seed, 10 evaluation episodes): SAC -932, -269, -112, -113, -114 at 2k..10k updates after 5k
# model updates (with 3k model updates and 6k SAC updates it was noisier: -610, -226, -232, -499, -379); PPO (Pendulum
# settings: gamma 0.9, lr 1e-3) -153, -138, -557, -112, -205 at 3840..19200 minibatch steps, i.e. 12..60 iterations
# of 64 model episodes x 128 steps. About 10 and 2 minutes on the busy 2-core machine.
LEARNING = {
    "sac": (morel.Config(model_steps=5_000), 10_000),
    "ppo": (morel.Config(rl="ppo", model_steps=3_000,
                         ppo=dataclasses.replace(ppo.PRESETS["pendulum"], num_envs=64, num_steps=128, num_minibatches=32,
                                                 update_epochs=10, normalize_observations=False)), 19_200),
}


@pytest.mark.slow
@pytest.mark.parametrize("rl", list(LEARNING))
def test_morel_learns_pendulum_from_noisy_expert_data(rl, noisy_expert, tmp_path):
    """20k steps of the shipped Pendulum expert with action noise 0.3 (episodes average about -160; uniform random
    actions score about -1230): the best export of MOReL (picked on 10 evaluation episodes), re-evaluated over 20
    other episodes, must reach a mean return >= -400; the models must fit the held-out episodes closely."""
    from understudy.eval.rollouts import evaluate_policy

    cfg, steps = LEARNING[rl]
    out = tmp_path / rl
    summary = model_based.train("morel", morel, cfg, RunArgs(dataset=str(noisy_expert), steps=steps,
                                                             eval_every=steps // 5, eval_episodes=10, out=str(out),
                                                             progress=False, tensorboard=False))
    reloaded = evaluate_policy(load_policy(out / "best"), "Pendulum-v1", episodes=20, seed=12_345)["mean"]
    with open(out / "metrics.csv") as f:
        curve = [(int(r["step"]), round(float(r["eval/return"]), 1)) for r in csv.DictReader(f)]
    print(f"morel-{rl}: eval curve {curve}; best export re-evaluated {reloaded:.1f}; models {summary['model']}")
    assert summary["model"]["validation_mse"][0] < 0.01
    assert reloaded >= -400.0
