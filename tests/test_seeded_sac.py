"""Imitation-seeded SAC (note 001): the calibration losses numerically, rewards-to-go, the seeding-probability
schedule, the algorithm contract (export -> load_policy), expert loading, the loop with --resume, and (slow)
a Pendulum run seeded from a quickly trained SAC expert that is good from its first evaluation."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from understudy.algos import sac, seeded_sac
from understudy.checkpoint import export_policy
from understudy.data.episodes import Dataset
from understudy.data.storage import save_dataset
from understudy.envs import env_spec, make
from understudy.policy import load_policy, to_env_action
from understudy.train import seeded
from understudy.train.common import RunArgs
from understudy.types import Batch, UnderstudyError

SPEC = env_spec(make("Pendulum-v1"))  # obs (3,), one action in [-2, 2]
SMALL = dict(hidden_dims=(32, 32), batch_size=32)


@pytest.fixture(scope="module")
def expert_dir(tmp_path_factory):
    """A policy export (an untrained SAC actor: the contract does not need a good expert).

    It is the SAC actor of an agent made with the very config the tests below use, `config(expert_dir)`, so
    their initializations reuse the compiled one."""
    path = tmp_path_factory.mktemp("expert") / "policy"
    cfg = config(path)
    head, params = seeded_sac.policy_export(cfg, seeded_sac.init(cfg, SPEC, jax.random.PRNGKey(7)))
    return export_policy(path, head_config=head, params=params, spec=SPEC)


def config(expert, **kw):
    return seeded_sac.Config(expert=str(expert), **{**SMALL, **kw})


def random_batch(seed, n=16):
    rng = np.random.default_rng(seed)
    return Batch(observations=jnp.asarray(rng.normal(size=(n, 3)), jnp.float32),
                 actions=jnp.asarray(rng.uniform(-1, 1, (n, 1)), jnp.float32),
                 rewards=jnp.asarray(rng.normal(size=n), jnp.float32), terminations=jnp.zeros(n),
                 next_observations=jnp.asarray(rng.normal(size=(n, 3)), jnp.float32))


# -- pure pieces --------------------------------------------------------------------------------------------
def test_rewards_to_go_restart_at_episode_ends():
    rtg = seeded_sac.rewards_to_go(np.array([1.0, 1.0, 1.0, 2.0, 4.0]), np.array([0, 1, 0, 0, 0], bool), gamma=0.5)
    np.testing.assert_allclose(rtg, [1.5, 1.0, 1.0 + 0.5 * 2 + 0.25 * 4, 2.0 + 0.5 * 4, 4.0])


def test_seeding_probability_starts_certain_then_decays_geometrically():
    cfg = seeded_sac.Config(p0=0.6, p_decay=0.5)
    probs = [seeded_sac.seeding_probability(cfg, i) for i in range(5)]
    np.testing.assert_allclose(probs, [1.0, 0.3, 0.15, 0.075, 0.0375])


def test_calibration_losses_are_actor_mse_to_imitator_and_critic_regression_to_rewards_to_go(expert_dir):
    cfg = config(expert_dir)
    full = seeded_sac.init(cfg, SPEC, jax.random.PRNGKey(0))
    state = full.sac
    batch = random_batch(0)
    extra_states = random_batch(1, n=8).observations

    @jax.jit
    def check(state, batch):
        mode = sac.act(cfg, state, batch.observations, jax.random.PRNGKey(0), True)
        q_of = lambda actions: sac.critic_network(cfg).apply(state.critic_params, batch.observations, actions)  # [2, B]
        losses = lambda b: seeded_sac.calibration_losses(cfg, state, state.actor_params, state.critic_params, b)
        # imitator actions offset from the actor's mode by 0.3; rewards-to-go offset from critic 0 by 2
        offset = batch.replace(actions=mode + 0.3, rewards=q_of(mode + 0.3)[0] + 2.0)
        q_offset = q_of(mode + 0.3)
        expected_critic = jnp.mean((q_offset - (q_offset[0] + 2.0)[None]) ** 2)
        exact = batch.replace(actions=mode, rewards=q_of(mode)[0])  # critic 0 fits exactly
        # extra states labelled by the imitator train the actor only (mask 0 keeps them out of the critic loss)
        mixed = seeded_sac.calibration_batch(cfg, full, offset, extra_states)
        extra_gap = jnp.sum((sac.act(cfg, state, extra_states, jax.random.PRNGKey(0), True)
                             - seeded_sac.imitator_act(cfg, full, extra_states)) ** 2, axis=-1)
        expected_mixed_actor = (0.09 * batch.rewards.shape[0] + jnp.sum(extra_gap)) / (batch.rewards.shape[0] + 8)
        return (losses(offset), expected_critic, losses(exact), q_offset, q_of(mode), losses(mixed),
                expected_mixed_actor)

    ((actor_loss, critic_loss), expected_critic, (exact_actor, exact_critic), q, q_exact, (mixed_actor, mixed_critic),
     expected_mixed_actor) = check(state, batch)
    np.testing.assert_allclose(mixed_actor, expected_mixed_actor, rtol=1e-4)
    np.testing.assert_allclose(mixed_critic, critic_loss, rtol=1e-5)
    assert float(mixed_actor) > 0.09  # the untrained imitator disagrees with the actor on the extra states
    np.testing.assert_allclose(actor_loss, 0.09, rtol=1e-4)
    np.testing.assert_allclose(critic_loss, expected_critic, rtol=1e-5)
    # by hand: critic 0 is 2 off everywhere (4), critic 1 is off by q1 - q0 - 2
    np.testing.assert_allclose(critic_loss, (4.0 + np.mean((np.asarray(q[1] - q[0]) - 2.0) ** 2)) / 2, rtol=1e-3)
    assert float(exact_actor) < 1e-10
    np.testing.assert_allclose(exact_critic, np.mean(np.asarray(q_exact[1] - q_exact[0]) ** 2) / 2, rtol=1e-4)


def test_calibration_updates_fit_actor_and_critics_and_copy_the_targets(expert_dir):
    cfg = config(expert_dir)
    state = seeded_sac.init(cfg, SPEC, jax.random.PRNGKey(1))
    batch = random_batch(1, n=32)
    batch = batch.replace(actions=jnp.tanh(batch.observations[:, :1]), rewards=-5.0 + batch.observations[:, 1])
    fit = jax.jit(lambda st: jax.lax.scan(lambda s, _: seeded_sac.calibration_update(cfg, s, batch), st, None,
                                          length=500))
    state, metrics = fit(state)
    first, last = jax.tree.map(lambda m: m[0], metrics), jax.tree.map(lambda m: m[-1], metrics)
    assert float(last["calibration_actor_loss"]) < 0.05 * float(first["calibration_actor_loss"])
    assert float(last["calibration_critic_loss"]) < 0.05 * float(first["calibration_critic_loss"])
    jax.tree.map(np.testing.assert_array_equal, state.sac.target_critic_params, state.sac.critic_params)


def test_contract_update_act_and_export_roundtrip(expert_dir, tmp_path):
    cfg = config(expert_dir)
    state = seeded_sac.init(cfg, SPEC, jax.random.PRNGKey(2))
    state, metrics = jax.jit(lambda st, b: seeded_sac.update(cfg, st, b))(state, random_batch(2, n=32))
    assert {"critic_loss", "actor_loss", "alpha"} <= set(metrics) and int(state.sac.step) == 1
    state, imitation = jax.jit(lambda st, b: seeded_sac.imitator_update(cfg, st, b))(state, random_batch(3, n=32))
    assert np.isfinite(float(imitation["imitator_loss"])) and int(state.imitator.step) == 1
    obs = np.random.default_rng(4).normal(size=(5, 3)).astype(np.float32)
    action = seeded_sac.act(cfg, state, jnp.asarray(obs), jax.random.PRNGKey(0), True)
    assert action.shape == (5, 1) and np.all(np.abs(np.asarray(action)) <= 1.0)
    assert seeded_sac.imitator_act(cfg, state, jnp.asarray(obs)).shape == (5, 1)
    head, params = seeded_sac.policy_export(cfg, state)
    policy = load_policy(export_policy(tmp_path / "p", head_config=head, params=params, spec=SPEC))
    np.testing.assert_allclose(policy(obs), to_env_action(np.asarray(action), SPEC), rtol=1e-6, atol=1e-6)


def test_config_errors_name_the_fix(expert_dir, tmp_path):
    with pytest.raises(UnderstudyError, match="--expert"):
        seeded_sac.init(seeded_sac.Config(), SPEC, jax.random.PRNGKey(0))
    with pytest.raises(UnderstudyError, match="imitator-head"):
        seeded_sac.init(config(expert_dir, imitator_head="categorical"), SPEC, jax.random.PRNGKey(0))
    with pytest.raises(UnderstudyError, match="does not exist"):
        seeded_sac.load_expert(config(tmp_path / "nothing"), SPEC, "Pendulum-v1", 0)


def test_expert_from_policy_rollouts_and_from_a_dataset(expert_dir, tmp_path):
    obs, actions = seeded_sac.load_expert(config(expert_dir, expert_episodes=1), SPEC, "Pendulum-v1", 0)
    assert obs.shape == (200, 3) and actions.shape == (200, 1)
    np.testing.assert_allclose(actions, np.asarray(load_policy(expert_dir)(obs)) / 2.0, atol=1e-5)  # bounds [-2, 2]
    rng = np.random.default_rng(0)
    episode = {"observations": rng.normal(size=(5, 3)).astype(np.float32),
               "actions": np.array([[-2.0], [-1.0], [0.0], [1.0], [2.0]], np.float32), "rewards": np.zeros(4),
               "terminations": np.zeros(4, bool), "truncations": np.eye(4, dtype=bool)[-1]}
    episode["actions"] = episode["actions"][:4]
    path = save_dataset(Dataset.from_episodes([episode], {"env_id": "Pendulum-v1", "spec": SPEC.to_dict()}),
                        tmp_path / "demos")
    obs, actions = seeded_sac.load_expert(config(path), SPEC, "Pendulum-v1", 0)
    np.testing.assert_allclose(actions[:, 0], [-1.0, -0.5, 0.0, 0.5])
    np.testing.assert_allclose(obs, episode["observations"][:4])
    other = env_spec(make("MountainCarContinuous-v0"))  # observations of 2 numbers, not 3
    with pytest.raises(UnderstudyError, match="do not match MountainCarContinuous-v0"):
        seeded_sac.load_expert(config(path), other, "MountainCarContinuous-v0", 0)


# -- the loop ---------------------------------------------------------------------------------------------------
def test_loop_seeds_first_then_explores_and_resumes(expert_dir, tmp_path):
    cfg = config(expert_dir, expert_episodes=1, imitator_updates=20, calibration_updates=20,
                 calibration_trajectories=1, iteration_steps=100, p0=0.0)
    run = RunArgs(env="Pendulum-v1", steps=300, eval_every=200, eval_episodes=1, out=str(tmp_path / "run"),
                  progress=False, tensorboard=False)
    seeded.train("seeded-sac", seeded_sac, cfg, run)
    rows = pd.read_csv(tmp_path / "run" / "metrics.csv")
    # iteration 0 seeds (one 200-step imitator episode), then p0 = 0: SAC explores 100 steps
    assert list(rows["step"]) == [200, 300]
    assert rows["train/seedings"].iloc[0] == 1 and np.isfinite(rows["train/calibration_critic_loss"].iloc[0])
    assert np.isfinite(rows["train/critic_loss"].iloc[1])
    summary = seeded.train("seeded-sac", seeded_sac, cfg, RunArgs(**{**run.__dict__, "steps": 450, "resume": True}))
    rows = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert list(rows["step"]) == [200, 300, 400, 450] and summary["step"] == 450
    assert json.loads((tmp_path / "run" / "config.json").read_text())["steps"] == 450
    policy = load_policy(tmp_path / "run" / "final")
    assert policy(np.zeros(3, np.float32)).shape == (1,)


# -- learning (slow) --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_seeded_sac_is_good_from_its_first_evaluation_on_pendulum(tmp_path):
    from understudy.cli import train

    train("sac", sac.Config(learning_starts=1000), RunArgs(env="Pendulum-v1", steps=10_000, eval_every=5000,
                                                           eval_episodes=10, out=str(tmp_path / "expert"),
                                                           progress=False, tensorboard=False))
    expert_return = json.loads((tmp_path / "expert" / "eval.json").read_text())["best"]["seeds"][0]["mean"]
    cfg = seeded_sac.Config(expert=str(tmp_path / "expert" / "best"), expert_episodes=10, imitator_updates=2000,
                            calibration_updates=2000, calibration_trajectories=5, iteration_steps=1000)
    summary = seeded.train("seeded-sac", seeded_sac, cfg,
                           RunArgs(env="Pendulum-v1", steps=3000, eval_every=1000, eval_episodes=10,
                                   out=str(tmp_path / "seeded"), progress=False, tensorboard=False))
    rows = pd.read_csv(tmp_path / "seeded" / "metrics.csv")
    print("expert", expert_return, "seeded evals", list(zip(rows["step"], rows["eval/return"])),
          "imitator", rows["train/imitator_return"].iloc[0])
    assert expert_return > -300
    # a random policy scores about -1200 on Pendulum; the seeded actor starts near the expert
    assert rows["step"].iloc[0] == 1000 and rows["eval/return"].iloc[0] > -400
    assert summary["final"]["seeds"][0]["mean"] > -400  # iteration 2 re-seeds for run seed 0 (p = 0.32)
