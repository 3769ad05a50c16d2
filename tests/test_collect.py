"""collect(): whole episodes from vector envs, terminations apart from truncations, autoreset handled."""

import gymnasium as gym
import numpy as np
import pytest

from understudy import envs
from understudy.data import collect, load_dataset, save_dataset
from understudy.types import EnvSpec, UnderstudyError


def swing(obs):
    """A deterministic Pendulum policy: torque against the angular velocity."""
    return np.clip(-0.5 * obs[:, 2:3], -2.0, 2.0).astype(np.float32)


def assert_consistent(ds):
    """Within every episode next_observations[t] == observations[t + 1]; flags only at episode ends."""
    for s, e in zip(ds.episode_starts, ds.episode_ends):
        np.testing.assert_array_equal(ds.next_observations[s:e - 1], ds.observations[s + 1:e])
        assert not ds.terminations[s:e - 1].any() and not ds.truncations[s:e - 1].any()
        assert ds.terminations[e - 1] or ds.truncations[e - 1]


def test_pendulum_random_episodes():
    ds = collect("Pendulum-v1", "random", episodes=3, num_envs=2, seed=0, progress=False)
    assert (ds.num_episodes, ds.num_steps) == (3, 600)
    np.testing.assert_array_equal(ds.episode_lengths, [200, 200, 200])
    np.testing.assert_array_equal(np.nonzero(ds.truncations)[0], [199, 399, 599])
    assert not ds.terminations.any()
    assert_consistent(ds)
    assert np.abs(ds.actions).max() <= 2.0 and ds.actions.shape == (600, 1)
    assert ds.metadata["env_id"] == "Pendulum-v1" and ds.metadata["policy"] == "random"
    assert EnvSpec.from_dict(ds.metadata["spec"]).obs_shape == (3,)
    assert ds.metadata["ref_min_score"] == pytest.approx(ds.episode_returns().mean())
    # episodes start from different reset states
    assert len({tuple(ds.observations[s]) for s in ds.episode_starts}) == 3


def test_matches_a_plain_single_env_rollout_across_autoreset():
    """Two episodes from one sub-env: the second starts at the autoreset observation, not the final one."""
    ds = collect("Pendulum-v1", swing, episodes=2, num_envs=1, seed=7, progress=False, policy_name="swing")
    env = envs.make("Pendulum-v1", seed=7)
    for i in range(2):
        obs, _ = env.reset()
        ep = ds.episode(i)
        np.testing.assert_allclose(ep["observations"][0], obs, rtol=1e-6)
        rewards = []
        done = False
        while not done:
            obs, r, term, trunc, _ = env.step(swing(obs[None])[0])
            rewards.append(r)
            done = term or trunc
        np.testing.assert_allclose(ep["observations"][-1], obs, rtol=1e-5)
        np.testing.assert_allclose(ep["rewards"], rewards, rtol=1e-5)
    assert ds.metadata["policy"] == "swing"


def test_same_step_autoreset_gives_the_same_data(monkeypatch):
    def make_same_step(env_id, num_envs, *, seed=None, **kw):
        vec = gym.vector.SyncVectorEnv([lambda i=i: envs.make(env_id, seed=seed + i, **kw) for i in range(num_envs)],
                                       autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
        vec.action_space.seed(seed)
        return vec

    reference = collect("Pendulum-v1", swing, episodes=3, num_envs=2, seed=1, progress=False)
    monkeypatch.setattr(envs, "make_vector", make_same_step)
    same_step = collect("Pendulum-v1", swing, episodes=3, num_envs=2, seed=1, progress=False)
    np.testing.assert_array_equal(same_step.observations, reference.observations)
    np.testing.assert_array_equal(same_step.next_observations, reference.next_observations)
    np.testing.assert_array_equal(same_step.truncations, reference.truncations)


def test_steps_whole_episodes_with_terminations_and_determinism():
    ds = collect("Hopper-v5", "random", steps=300, num_envs=4, seed=3, progress=False)
    assert ds.num_steps >= 300
    assert ds.terminations.sum() == ds.num_episodes  # random Hopper falls long before the time limit
    assert not ds.truncations.any()
    assert_consistent(ds)
    # no episode started once 300 steps were reached: when the last one started, at most 3 others were
    # under way and all earlier ones (in start order) had finished, so those hold fewer than 300 steps
    assert ds.episode_lengths[:-4].sum() < 300
    again = collect("Hopper-v5", "random", steps=300, num_envs=4, seed=3, progress=False)
    np.testing.assert_array_equal(again.observations, ds.observations)
    np.testing.assert_array_equal(again.actions, ds.actions)


def test_babyai_dict_observations_and_instructions(tmp_path):
    ds = collect("BabyAI-GoToLocal-v0", "random", episodes=3, num_envs=2, seed=0, progress=False)
    assert set(ds.observations) == {"image", "direction"}
    assert ds.observations["image"].dtype == np.uint8 and ds.actions.dtype == np.int64
    assert len(ds.instructions) == 3 and all(s.startswith("go to") for s in ds.instructions)
    first = envs.make("BabyAI-GoToLocal-v0", seed=0)
    first.reset()
    assert ds.instructions[0] == first.unwrapped.mission
    back = load_dataset(save_dataset(ds, tmp_path / "babyai"))
    assert back.instructions == ds.instructions
    np.testing.assert_array_equal(back.observations["image"], ds.observations["image"])


def test_collected_dataset_roundtrips_through_minari(tmp_path, monkeypatch):
    import minari

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    ds = collect("Pendulum-v1", "random", episodes=2, num_envs=2, progress=False)
    save_dataset(ds, tmp_path / "understudy" / "pendulum-random-v0")
    m = minari.load_dataset("understudy/pendulum-random-v0")
    assert m.total_steps == 400
    np.testing.assert_allclose([e.rewards.sum() for e in m], ds.episode_returns(), rtol=1e-5)
    assert m.env_spec.id == "Pendulum-v1"  # minari can recover the environment


def test_argument_errors():
    with pytest.raises(UnderstudyError, match="exactly one"):
        collect("Pendulum-v1", "random", episodes=1, steps=10, progress=False)
    with pytest.raises(UnderstudyError, match="exactly one"):
        collect("Pendulum-v1", "random", progress=False)
    with pytest.raises(UnderstudyError, match="positive"):
        collect("Pendulum-v1", "random", episodes=0, progress=False)
    with pytest.raises(UnderstudyError, match="Unknown policy"):
        collect("Pendulum-v1", "expert-ish", episodes=1, progress=False)
    with pytest.raises(UnderstudyError, match="one action per observation"):
        collect("Pendulum-v1", lambda obs: np.zeros((1, 1), np.float32), episodes=2, num_envs=2, progress=False)


def test_clean_action_labels_execute_the_noise_but_record_the_policy(tmp_path):
    """DART-style data: the same states as the noisy run, each labelled with the policy's noise-free action."""
    common = dict(episodes=2, num_envs=2, seed=3, progress=False, action_noise=0.5)
    noisy = collect("Pendulum-v1", swing, **common)
    labelled = collect("Pendulum-v1", swing, clean_action_labels=True, **common)
    np.testing.assert_array_equal(labelled.observations, noisy.observations)  # the noise was executed
    np.testing.assert_array_equal(labelled.rewards, noisy.rewards)
    np.testing.assert_allclose(labelled.actions, swing(labelled.observations), rtol=1e-6)  # clean labels
    assert np.abs(noisy.actions - labelled.actions).mean() > 0.1  # the noisy run recorded what it executed
    assert labelled.metadata["action_labels"] == "policy-without-noise" and labelled.metadata["action_noise"] == 0.5
    assert "action_labels" not in noisy.metadata
    from understudy.data import dataset_info, format_info

    assert "each step records the policy's noise-free action" in format_info(dataset_info(labelled))
    assert "the noisy actions are the ones executed and recorded" in format_info(dataset_info(noisy))
    with pytest.raises(UnderstudyError, match="needs --action-noise"):
        collect("Pendulum-v1", swing, episodes=1, progress=False, clean_action_labels=True)


def test_offline_rl_refuses_clean_labels_and_bc_takes_them(tmp_path):
    from understudy.train.common import RunArgs
    from understudy.train.offline import load_training_data

    ds = collect("Pendulum-v1", swing, episodes=1, progress=False, action_noise=0.3, clean_action_labels=True)
    path = str(save_dataset(ds, tmp_path / "dart"))
    assert load_training_data(RunArgs(dataset=path), "bc")[0].num_steps == 200
    with pytest.raises(UnderstudyError, match="did not produce its transitions.*collected without"):
        load_training_data(RunArgs(dataset=path), "iql")
