"""GAIL and AIRL: the discriminator loss, gradient penalty and reward transforms against hand computations, AIRL's
f decomposition with terminal transitions, the AIRL reward export (round trip, damaged files, env wrapper), the
loop around SAC and PPO (finite metrics, exports that `understudy eval` agrees with, resume), the CLI, and (slow)
GAIL with SAC learning Pendulum from expert demonstrations."""

import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from understudy.algos import ALGORITHMS, airl, discriminator, gail, ppo, sac
from understudy.data import collect, save_dataset
from understudy.envs import env_spec, make
from understudy.eval.rollouts import evaluate_policy
from understudy.policy import load_policy
from understudy.train import adversarial
from understudy.train.common import RunArgs
from understudy.types import Batch, UnderstudyError

SPEC = env_spec(make("Pendulum-v1"))  # observations (3,), one action in [-2, 2]
EXPERT = str(Path(__file__).resolve().parents[1] / "experts" / "Pendulum-v1")
TINY_SAC = sac.Config(hidden_dims=(16, 16), batch_size=16, learning_starts=50)
TINY_PPO = ppo.Config(num_envs=2, num_steps=50, num_minibatches=2, update_epochs=1, hidden_dims=(16, 16),
                      normalize_observations=False)
TINY_DISC = dict(sac=TINY_SAC, ppo=TINY_PPO, disc_hidden_dims=(16, 16), disc_batch_size=16)


def tiny(algo, **kw):
    extra = {"shaping_hidden_dims": (16, 16)} if algo is airl else {}
    return algo.Config(**{**TINY_DISC, **extra, **kw})


def run_args(tmp_path, name, **kw):
    return RunArgs(**{"steps": 200, "eval_every": 100, "eval_episodes": 1, "out": str(tmp_path / name),
                      "progress": False, "tensorboard": False, **kw})


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    """Three episodes of the shipped Pendulum expert, as a dataset."""
    path = tmp_path_factory.mktemp("demos") / "pendulum-expert"
    policy = load_policy(EXPERT)
    save_dataset(collect("Pendulum-v1", policy, episodes=3, seed=0, policy_name=EXPERT, progress=False), path)
    return str(path)


def init_params(algo, cfg, seed):
    """Discriminator parameters, initialized by the loop's compiled program (shared by these tests and the runs)."""
    return jax.tree.map(lambda x: x[0], adversarial._init_discriminators(algo, cfg, SPEC, [seed]).params)


def random_batch(seed, n=8, obs_dim=3, action_dim=1):
    rng = np.random.default_rng(seed)
    return Batch(observations=jnp.asarray(rng.normal(size=(n, obs_dim)), jnp.float32),
                 actions=jnp.asarray(rng.uniform(-1, 1, (n, action_dim)), jnp.float32), rewards=None,
                 terminations=jnp.asarray(rng.uniform(size=n) < 0.3, jnp.float32),
                 next_observations=jnp.asarray(rng.normal(size=(n, obs_dim)), jnp.float32))


# -- pure pieces ----------------------------------------------------------------------------------------------------
def test_discriminator_loss_is_balanced_binary_cross_entropy():
    loss, metrics = discriminator.discriminator_loss(jnp.array([0.0, 2.0]), jnp.array([-1.0, 1.0, 3.0]))
    # -log sigmoid(x) for the expert, -log(1 - sigmoid(x)) for the policy, each class averaged, then halved
    expert = (math.log(2.0) + math.log(1 + math.exp(-2.0))) / 2
    policy = (math.log(1 + math.exp(-1.0)) + math.log(1 + math.exp(1.0)) + math.log(1 + math.exp(3.0))) / 3
    np.testing.assert_allclose(loss, 0.5 * (expert + policy), rtol=1e-6)
    np.testing.assert_allclose(metrics["expert_accuracy"], 0.5)  # logit 0 is not > 0
    np.testing.assert_allclose(metrics["policy_accuracy"], 1 / 3)
    # a discriminator that cannot tell them apart scores log 2
    np.testing.assert_allclose(discriminator.discriminator_loss(jnp.zeros(4), jnp.zeros(4))[0], math.log(2.0),
                               rtol=1e-6)
    with pytest.raises(ValueError, match="vector"):
        discriminator.discriminator_loss(jnp.zeros((4, 1)), jnp.zeros(4))


def test_gail_reward_forms():
    logits = jnp.array([-3.0, 0.0, 2.5])
    d = 1 / (1 + np.exp(-np.asarray(logits, np.float64)))
    np.testing.assert_allclose(discriminator.gail_reward(logits, "positive"), -np.log(1 - d), rtol=1e-5)
    np.testing.assert_allclose(discriminator.gail_reward(logits, "logit"), np.log(d) - np.log(1 - d), rtol=1e-5,
                               atol=1e-6)
    params = init_params(gail, tiny(gail), 0)
    batch = random_batch(0)
    expected = jax.nn.softplus(gail.logits(tiny(gail), params, batch, None, 0.99))
    np.testing.assert_allclose(gail.policy_reward(tiny(gail), params, batch, None, 0.99), expected, rtol=1e-6)


def test_gradient_penalty_against_direct_computations():
    key = jax.random.PRNGKey(3)
    rng = np.random.default_rng(0)
    x_e, x_p = (jnp.asarray(rng.normal(size=(6, 3)), jnp.float32) for _ in range(2))
    a_e, a_p = (jnp.asarray(rng.normal(size=(6, 2)), jnp.float32) for _ in range(2))
    # linear logit: the gradient is (w, v) everywhere
    w, v = jnp.array([0.5, -1.0, 2.0]), jnp.array([1.0, 0.25])
    penalty = discriminator.gradient_penalty(lambda x, a: x @ w + a @ v, (x_e, a_e), (x_p, a_p), key)
    np.testing.assert_allclose(penalty, (math.sqrt(0.25 + 1 + 4 + 1 + 0.0625) - 1) ** 2, rtol=1e-5)
    # |x|^2: the gradient 2 x at the interpolate eps x_e + (1 - eps) x_p, eps ~ U[0, 1] per row from `key`
    penalty = discriminator.gradient_penalty(lambda x: jnp.sum(x ** 2, axis=1), (x_e,), (x_p,), key)
    eps = np.asarray(jax.random.uniform(key, (6,)))[:, None]
    mixed = eps * np.asarray(x_e) + (1 - eps) * np.asarray(x_p)
    np.testing.assert_allclose(penalty, np.mean((2 * np.linalg.norm(mixed, axis=1) - 1) ** 2), rtol=1e-5)


def test_airl_f_is_g_plus_discounted_potential_difference_without_bootstrap_at_terminals():
    np.testing.assert_allclose(discriminator.shaped_reward(jnp.array([1.0, 2.0]), jnp.array([0.5, 1.0]),
                                                           jnp.array([2.0, 3.0]), jnp.array([0.0, 1.0]), 0.9),
                               [1 + 0.9 * 2 - 0.5, 2 - 1.0], rtol=1e-6)
    cfg = tiny(airl)
    params = init_params(airl, cfg, 1)
    batch = random_batch(1)
    gamma = 0.97
    f = airl.learned_logit(cfg, params, batch, gamma)
    g = airl.g_values(cfg, params, batch.observations, batch.actions)
    h, next_h = airl.h_values(cfg, params, batch.observations), airl.h_values(cfg, params, batch.next_observations)
    np.testing.assert_allclose(f, g + gamma * (1 - batch.terminations) * next_h - h, rtol=1e-5, atol=1e-6)
    # state-only g ignores the action; at a terminal transition the next observation does not matter
    moved = batch.replace(actions=-batch.actions, next_observations=batch.next_observations + 5.0)
    terminal = np.asarray(batch.terminations) == 1
    assert terminal.any() and not terminal.all()
    f_moved = np.asarray(airl.learned_logit(cfg, params, moved, gamma))
    np.testing.assert_allclose(f_moved[terminal], np.asarray(f)[terminal], rtol=1e-6)
    assert np.all(np.abs(f_moved[~terminal] - np.asarray(f)[~terminal]) > 1e-6)
    # D = exp(f) / (exp(f) + pi): logit f - log pi; policy reward -log(1 - D) = log(1 + exp(f - log pi)) (ppo's
    # default), f - log pi (--reward-form logit) or f (sac's)
    log_pi = jnp.linspace(-2.0, 1.0, 8)
    ppo_cfg, sac_cfg = tiny(airl, rl="ppo"), tiny(airl, rl="sac")
    np.testing.assert_allclose(airl.logits(ppo_cfg, params, batch, log_pi, gamma), f - log_pi, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(airl.policy_reward(ppo_cfg, params, batch, log_pi, gamma),
                               np.log1p(np.exp(np.asarray(f) - np.asarray(log_pi))), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(airl.policy_reward(tiny(airl, rl="ppo", reward_form="logit"), params, batch, log_pi,
                                                  gamma), f - log_pi, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(airl.policy_reward(sac_cfg, params, batch, log_pi, gamma), f, rtol=1e-6)


def test_airl_with_ppo_takes_log_pi_of_the_policys_own_draws_not_of_the_clipped_actions(demos):
    # A Gaussian draw clipped at the box edge is far likelier than the same value drawn: were the clipped action's
    # density used, a policy whose mean left the box would earn a large -log pi for acting bang-bang.
    from understudy.data import load_dataset

    cfg = tiny(airl, rl="ppo", disc_updates=0)  # no discriminator step: the rewards come from these parameters
    expert, _ = adversarial.expert_on_device(cfg, load_dataset(demos), SPEC)
    agent = adversarial.Agent(rl=ppo.init(cfg.ppo, SPEC, jax.random.PRNGKey(0)),
                              disc=discriminator.init_state(init_params(airl, cfg, 0), cfg))
    T, N = 4, 2
    rng = np.random.default_rng(0)
    obs = jnp.asarray(rng.normal(size=(T, N, 3)), jnp.float32)
    sampled = jnp.asarray([[[3.0], [-0.5]], [[-2.5], [0.2]], [[0.9], [1.7]], [[-1.2], [0.0]]], jnp.float32)
    executed = jnp.clip(sampled, -1.0, 1.0)
    final_obs, terminations, valid = obs[-1] + 0.1, jnp.zeros((T, N)), jnp.ones((T, N))
    _, rewards, _ = adversarial.ppo_discriminator_round(airl, cfg, SPEC, agent, expert, obs, executed, sampled,
                                                        final_obs, terminations, valid, jax.random.PRNGKey(1))
    next_obs = jnp.concatenate([obs[1:], final_obs[None]], axis=0)
    batch = adversarial.disc_inputs(SPEC, obs.reshape(T * N, 3), executed.reshape(T * N, 1),
                                    next_obs.reshape(T * N, 3), terminations.reshape(-1))
    params, gamma = agent.disc.params, discriminator.rl_gamma(cfg)

    def reward_with_log_pi_of(actions):
        log_pi = adversarial._ppo_log_prob(cfg.ppo, agent.rl, batch.observations, actions.reshape(T * N, 1))
        return np.asarray(airl.policy_reward(cfg, params, batch, log_pi, gamma)).reshape(T, N)

    np.testing.assert_allclose(rewards, reward_with_log_pi_of(sampled), rtol=1e-5, atol=1e-6)
    clipped = np.asarray(np.abs(sampled[..., 0]) > 1)
    assert np.all(reward_with_log_pi_of(executed)[clipped] < np.asarray(rewards)[clipped] - 1e-3)  # they differ


def test_discriminator_step_lowers_the_loss_on_separable_data():
    cfg = tiny(gail, disc_lr=1e-2, grad_penalty=1.0)
    disc = discriminator.init_state(init_params(gail, tiny(gail), 0), cfg)
    expert, policy = random_batch(0, n=32), random_batch(1, n=32)
    expert = expert.replace(observations=expert.observations + 2.0)
    step = jax.jit(lambda d, k: discriminator.step(gail, cfg, d, expert, policy, jnp.zeros(32), jnp.zeros(32), k))
    first = None
    for i in range(30):
        disc, metrics = step(disc, jax.random.PRNGKey(i))
        first = first if first is not None else float(metrics["disc_loss"])
    assert float(metrics["disc_loss"]) < 0.5 * first
    assert float(metrics["expert_accuracy"]) > 0.9 and float(metrics["policy_accuracy"]) > 0.9
    assert np.isfinite(float(metrics["grad_penalty"]))


# -- the AIRL reward export -------------------------------------------------------------------------------------------
def _reward(seed=0):
    cfg = tiny(airl)
    normalizer = {"mean": np.array([0.5, -0.2, 1.0], np.float32), "std": np.array([0.7, 0.9, 2.0], np.float32)}
    return airl.AIRLReward(cfg, init_params(airl, cfg, seed), SPEC, normalizer, 0.99)


def test_airl_reward_export_round_trip_gives_identical_rewards(tmp_path):
    reward = _reward()
    reward.save(tmp_path / "final")
    loaded = airl.load_reward(tmp_path / "final")
    rng = np.random.default_rng(0)
    obs, next_obs = rng.normal(size=(5, 3)).astype(np.float32), rng.normal(size=(5, 3)).astype(np.float32)
    action, terminated = rng.uniform(-2, 2, (5, 1)).astype(np.float32), np.array([0, 1, 0, 0, 1], np.float32)
    np.testing.assert_array_equal(loaded.g(obs), reward.g(obs))
    np.testing.assert_array_equal(loaded.f(obs, action, next_obs, terminated),
                                  reward.f(obs, action, next_obs, terminated))
    assert isinstance(loaded(obs[0], action[0], next_obs[0], False), float)
    # f's pieces: the loaded reward is the training-time function of the standardized observations
    z, z_next = (obs - reward.normalizer["mean"]) / reward.normalizer["std"], \
        (next_obs - reward.normalizer["mean"]) / reward.normalizer["std"]
    batch = Batch(observations=jnp.asarray(z), actions=jnp.asarray(action / 2), rewards=None,
                  terminations=jnp.asarray(terminated), next_observations=jnp.asarray(z_next))
    np.testing.assert_allclose(loaded.f(obs, action, next_obs, terminated),
                               airl.learned_logit(reward.cfg, reward.params, batch, 0.99), rtol=1e-5, atol=1e-6)
    # used as an environment's reward
    env = airl.AIRLRewardWrapper(make("Pendulum-v1"), tmp_path / "final")
    o, _ = env.reset(seed=0)
    o2, r, term, _, info = env.step(np.array([0.5], np.float32))
    np.testing.assert_allclose(r, reward.g(o), rtol=1e-6)
    assert "env_reward" in info
    env.close()
    # `understudy train sac --reward-model DIR` (no --reward-text): the training env pays the learned reward
    from understudy.train.common import make_train_env

    env = make_train_env(RunArgs(env="Pendulum-v1", reward_model=str(tmp_path / "final")), seed=0)
    o, _ = env.reset(seed=0)
    _, r, _, _, info = env.step(np.array([0.5], np.float32))
    np.testing.assert_allclose(r, reward.g(o), rtol=1e-6)
    assert "env_reward" in info and info["env_reward"] != r
    env.close()
    with pytest.raises(UnderstudyError, match="AIRL reward export"):
        make_train_env(RunArgs(env="Pendulum-v1", reward_model=str(tmp_path)), seed=0)


def test_damaged_or_mismatched_reward_files_raise_clear_errors(tmp_path):
    with pytest.raises(UnderstudyError, match="no reward.json"):
        airl.load_reward(tmp_path)
    _reward().save(tmp_path / "a")
    weights = tmp_path / "a" / "reward.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(UnderstudyError, match="truncated or corrupt"):
        airl.load_reward(tmp_path / "a")
    _reward().save(tmp_path / "b")
    description = json.loads((tmp_path / "b" / "reward.json").read_text())
    (tmp_path / "b" / "reward.json").write_text(json.dumps({**description, "hidden_dims": [32, 32]}))
    with pytest.raises(UnderstudyError, match="do not match the networks"):
        airl.load_reward(tmp_path / "b")
    (tmp_path / "b" / "reward.json").write_text("{not json")
    with pytest.raises(UnderstudyError, match="not valid JSON"):
        airl.load_reward(tmp_path / "b")
    _reward().save(tmp_path / "c")
    env = make("MountainCarContinuous-v0")  # observations of 2 numbers, not 3
    with pytest.raises(UnderstudyError, match="does not fit this environment"):
        airl.AIRLRewardWrapper(env, tmp_path / "c")
    env.close()


# -- the loop ----------------------------------------------------------------------------------------------------------
def check_run(out: Path, summary: dict, algo_name: str, rl: str, run: RunArgs) -> None:
    """The contract of a finished run: finite metrics at each evaluation, exports `understudy eval` agrees with."""
    rows = pd.read_csv(out / "metrics.csv")
    assert list(rows["step"]) == [100, 200]
    for column in ("train/disc_loss", "train/expert_accuracy", "train/policy_accuracy", "train/disc_reward",
                   "eval/return"):
        assert np.all(np.isfinite(rows[column])), column
    assert summary["method"] == f"{algo_name}-{rl}"
    config = json.loads((out / "config.json").read_text())
    assert config["env_id"] == "Pendulum-v1" and config["config"]["rl"] == rl
    # the export carries the expert normalizer, and evaluating it reproduces the run's final evaluation
    policy = load_policy(out / "final")
    assert policy.normalizer is not None
    result = evaluate_policy(policy, "Pendulum-v1", episodes=run.eval_episodes, seed=run.seed + 10_000)
    assert result["returns"] == summary["final"]["seeds"][0]["returns"]
    assert (out / "final" / "reward.json").exists() == (algo_name == "airl")
    assert (out / "best" / "reward.json").exists() == (algo_name == "airl")


@pytest.mark.parametrize("algo,rl", [(airl, "sac"), (gail, "ppo"), (airl, "ppo")],
                         ids=["airl-sac", "gail-ppo", "airl-ppo"])  # gail-sac: the CLI test below
def test_loop_runs_with_finite_metrics_and_exports_that_eval_agrees_with(algo, rl, demos, tmp_path):
    name = algo.__name__.split(".")[-1]
    run = run_args(tmp_path, "run", dataset=demos)
    summary = adversarial.train(name, algo, tiny(algo, rl=rl), run)
    check_run(tmp_path / "run", summary, name, rl, run)
    assert np.all(np.isfinite(pd.read_csv(tmp_path / "run" / "metrics.csv")["train/grad_penalty"]))
    if algo is airl:
        reward = airl.load_reward(tmp_path / "run" / "best")
        assert np.isfinite(reward.g(np.zeros(3, np.float32)))


def test_resume_continues_with_the_discriminator(demos, tmp_path):
    cfg = tiny(airl, rl="sac")
    run = run_args(tmp_path, "run", dataset=demos)
    adversarial.train("airl", airl, cfg, run)
    summary = adversarial.train("airl", airl, cfg, RunArgs(**{**run.__dict__, "steps": 300, "resume": True}))
    rows = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert list(rows["step"]) == [100, 200, 300] and summary["step"] == 300
    assert np.isfinite(rows["train/disc_loss"].iloc[-1])
    with pytest.raises(UnderstudyError, match="differs"):
        adversarial.train("airl", airl, tiny(airl, rl="sac", grad_penalty=0.0),
                          RunArgs(**{**run.__dict__, "steps": 400, "resume": True}))


def test_user_errors_name_the_fix(demos, tmp_path):
    with pytest.raises(UnderstudyError, match="--dataset"):
        adversarial.train("gail", gail, tiny(gail), run_args(tmp_path, "a", env="Pendulum-v1"))
    with pytest.raises(UnderstudyError, match="--expert-episodes 9"):
        adversarial.train("gail", gail, tiny(gail, expert_episodes=9), run_args(tmp_path, "b", dataset=demos))
    with pytest.raises(UnderstudyError, match="--reward-text"):
        adversarial.train("gail", gail, tiny(gail), run_args(tmp_path, "c", dataset=demos, reward_text="go"))
    with pytest.raises(UnderstudyError, match="--grad-penalty"):
        adversarial.train("gail", gail, tiny(gail, grad_penalty=-1.0), run_args(tmp_path, "d", dataset=demos))


def test_cli_trains_gail_with_sac_from_a_dataset(demos, tmp_path, capsys):
    from understudy.cli import main

    assert ALGORITHMS["gail"][:2] == ("understudy.algos.gail", "adversarial")
    assert ALGORITHMS["airl"][:2] == ("understudy.algos.airl", "adversarial")
    out = tmp_path / "gail"
    assert main(["train", "gail", "--dataset", demos, "--rl", "sac", "--steps", "200", "--eval-every", "100",
                 "--eval-episodes", "1", "--sac.hidden-dims", "16", "16", "--sac.batch-size", "16",
                 "--sac.learning-starts", "50", "--disc-hidden-dims", "16", "16", "--disc-batch-size", "16",
                 "--out", str(out), "--no-progress", "--no-tensorboard"]) == 0
    assert "gail-sac on Pendulum-v1" in capsys.readouterr().out
    saved = json.loads((out / "config.json").read_text())["config"]  # the flags reached the config (= tiny(gail))
    assert saved["sac"]["hidden_dims"] == [16, 16] and saved["disc_batch_size"] == 16 and saved["rl"] == "sac"
    check_run(out, json.loads((out / "eval.json").read_text()), "gail", "sac", run_args(tmp_path, "gail"))
    with pytest.raises(SystemExit):  # tyro rejects a choice outside sac|ppo
        main(["train", "airl", "--dataset", demos, "--rl", "nope", "--out", str(tmp_path / "x")])


# -- learning (slow) ---------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_gail_with_sac_imitates_the_pendulum_expert(tmp_path):
    data = tmp_path / "demos"
    save_dataset(collect("Pendulum-v1", load_policy(EXPERT), episodes=10, seed=0, policy_name=EXPERT,
                         progress=False), data)
    cfg = gail.Config(rl="sac", sac=sac.Config(learning_starts=1000))
    summary = adversarial.train("gail", gail, cfg, RunArgs(dataset=str(data), steps=12_000, eval_every=2000,
                                                           eval_episodes=10, out=str(tmp_path / "run"),
                                                           progress=False, tensorboard=False))
    rows = pd.read_csv(tmp_path / "run" / "metrics.csv")
    print("GAIL-SAC Pendulum evals", list(zip(rows["step"], rows["eval/return"].round(1))))
    # a random policy scores about -1200 over 10 episodes, the expert about -145
    assert summary["final"]["seeds"][0]["mean"] > -300
