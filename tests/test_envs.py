"""Contract tests for understudy.envs: every family makes and steps, specs round-trip, wrappers do what
they say, errors name the fix, vector envs and video work."""

from __future__ import annotations

import json
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

from understudy import envs
from understudy.types import EnvSpec, UnderstudyError

FAMILY_CASES = [  # (id as a user types it, family, canonical id, observation shape)
    ("Hopper-v5", "mujoco", "Hopper-v5", (11,)),
    ("MountainCar-v0", "classic", "MountainCar-v0", (2,)),
    ("Pendulum-v1", "classic", "Pendulum-v1", (3,)),
    ("dm_control/walker-walk-v0", "dm_control", "walker-walk", (24,)),
    ("reach-v3", "metaworld", "metaworld/reach-v3", (39,)),
]


@pytest.mark.parametrize("env_id,family,canonical,obs_shape", FAMILY_CASES)
def test_make_and_step_each_box_family(env_id, family, canonical, obs_shape):
    env = envs.make(env_id, seed=0)
    try:
        obs, _ = env.reset()
        assert obs.shape == obs_shape and obs.dtype == np.float32
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert obs.shape == obs_shape and obs.dtype == np.float32 and np.all(np.isfinite(obs))
        assert np.isfinite(float(reward)) and isinstance(terminated, bool) and isinstance(truncated, bool)
        spec = envs.env_spec(env)
        assert (spec.family, spec.env_id, spec.obs_shape) == (family, canonical, obs_shape)
        assert spec.max_episode_steps is not None and spec.max_episode_steps > 0
        if spec.discrete:
            assert spec.action.shape == () and spec.num_actions == env.action_space.n
        else:
            assert spec.action.dtype == "float32" and spec.action_low.shape == spec.action.shape
            assert env.action_space.dtype == np.float32
    finally:
        env.close()


def test_dm_control_walker_flattens_in_dm_control_order_with_1000_step_limit():
    env = envs.make("walker-run", seed=3)
    obs, _ = env.reset()
    physics = env.unwrapped._env.physics
    # dm_control order: orientations (14), height (1), velocity (9)
    np.testing.assert_allclose(obs[:14], physics.orientations(), rtol=1e-6, atol=1e-6)
    assert obs[14] == pytest.approx(physics.torso_height(), abs=1e-6)
    np.testing.assert_allclose(obs[15:], physics.velocity(), rtol=1e-6, atol=1e-6)
    assert envs.env_spec(env).max_episode_steps == 1000
    env.close()
    short = envs.make("walker-walk", max_episode_steps=3)
    short.reset(seed=0)
    ends = [short.step(np.zeros(6, np.float32))[3] for _ in range(3)]
    assert ends == [False, False, True]
    short.close()


def test_babyai_dict_observation_and_instruction():
    env = envs.make("BabyAI-GoToLocal-v0", seed=1)
    obs, info = env.reset()
    assert set(obs) == {"image", "direction"}
    assert obs["image"].shape == (7, 7, 3) and obs["image"].dtype == np.uint8 and 0 <= int(obs["direction"]) < 4
    assert info["instruction"].startswith("go to ") and env.instruction == info["instruction"]
    spec = envs.env_spec(env)
    assert spec.family == "babyai" and spec.discrete and spec.num_actions == 7
    assert spec.observation["image"].shape == (7, 7, 3) and spec.observation["image"].dtype == "uint8"
    assert spec.instruction == info["instruction"]  # the first reset replays make()'s seeded episode
    assert spec.max_episode_steps == 64
    obs, reward, terminated, truncated, info = env.step(2)
    assert info["instruction"] == spec.instruction and info["success"] is False
    env.close()


def test_metaworld_reach_instruction_success_and_seeded_goal():
    env = envs.make("metaworld/reach-v3", seed=0)
    spec = envs.env_spec(env)
    assert spec.instruction == "reach the goal" and spec.max_episode_steps == 500 and spec.action.shape == (4,)
    first, _ = env.reset(seed=7)
    _, _, _, _, info = env.step(np.zeros(4, np.float32))
    assert info["success"] in (True, False) and info["instruction"] == "reach the goal"
    again, _ = env.reset(seed=7)
    other, _ = env.reset(seed=8)
    np.testing.assert_array_equal(first, again)  # Meta-World ignores reset seeds; our wrapper does not
    assert not np.allclose(first[-3:], other[-3:])  # the last 3 entries are the goal position
    env.close()


def test_metaworld_task_list_matches_installed_metaworld():
    import metaworld

    assert {i.split("/", 1)[1] for i in envs.list_envs()["metaworld"]} == set(metaworld.ALL_V3_ENVIRONMENTS)


def test_spec_json_round_trip_and_recreate_from_options():
    env = envs.make("Hopper-v5", seed=0, task_bit=(1, 3), obs_noise=0.05, ctrl_cost_weight=0.01)
    spec = envs.env_spec(env)
    env.close()
    assert EnvSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert EnvSpec.from_json(spec.to_json()) == spec
    assert spec.options == {"ctrl_cost_weight": 0.01, "task_bit": [1, 3], "obs_noise": 0.05}
    assert envs.make_spec(spec.env_id, **spec.options) == spec
    again = envs.make_from_spec(spec, seed=0)
    assert again.unwrapped._ctrl_cost_weight == 0.01
    again.close()
    babyai = envs.make_spec("BabyAI-GoToLocal-v0", seed=0)
    assert EnvSpec.from_json(babyai.to_json()) == babyai


def test_discrete_spec_shape():
    spec = envs.make_spec("MountainCar-v0")
    assert spec.discrete and spec.action.shape == () and spec.action.dtype == "int64" and spec.action_dim == 3


def test_task_bit_appends_one_hot():
    env = envs.make("Pendulum-v1", seed=0, task_bit=(2, 4))
    obs, _ = env.reset()
    assert obs.shape == (7,) and obs.dtype == np.float32
    np.testing.assert_array_equal(obs[3:], [0, 0, 1, 0])
    obs, *_ = env.step(env.action_space.sample())
    np.testing.assert_array_equal(obs[3:], [0, 0, 1, 0])
    spec = envs.env_spec(env)
    assert (spec.num_tasks, spec.task_id, spec.obs_dim) == (4, 2, 7)
    np.testing.assert_array_equal(np.asarray(spec.observation.high[3:]), [1, 1, 1, 1])
    env.close()
    with pytest.raises(UnderstudyError, match="task_id < num_tasks"):
        envs.make("Pendulum-v1", task_bit=(4, 4))


def _rollout(env, seed, steps=40):
    obs, _ = env.reset(seed=seed)
    out = [obs]
    rng = np.random.default_rng(0)
    for _ in range(steps):
        obs, *_ = env.step(rng.uniform(-1, 1, 3).astype(np.float32))
        out.append(obs)
    return np.stack(out)


def test_observation_noise_has_the_given_std_and_is_reproducible():
    clean = _rollout(envs.make("Hopper-v5", terminate_when_unhealthy=False), seed=5)
    noisy = _rollout(envs.make("Hopper-v5", obs_noise=0.1, terminate_when_unhealthy=False), seed=5)
    diff = noisy - clean  # same seed and actions: the dynamics are identical, only the noise differs
    assert diff.std() == pytest.approx(0.1, rel=0.1) and abs(diff.mean()) < 0.02
    repeat = _rollout(envs.make("Hopper-v5", obs_noise=0.1, terminate_when_unhealthy=False), seed=5)
    np.testing.assert_array_equal(noisy, repeat)
    other = _rollout(envs.make("Hopper-v5", obs_noise=0.1, terminate_when_unhealthy=False), seed=6)
    assert not np.allclose(other[0] - clean[0], diff[0])
    # make(seed=) seeds the first plain reset(), noise included
    a, b = envs.make("Pendulum-v1", seed=3, obs_noise=0.1), envs.make("Pendulum-v1", seed=3, obs_noise=0.1)
    np.testing.assert_array_equal(a.reset()[0], b.reset()[0])


def test_unknown_id_names_close_match_and_families():
    with pytest.raises(UnderstudyError) as err:
        envs.make("Hoper-v5")
    message = str(err.value)
    assert "Hopper-v5" in message and all(f in message for f in envs.FAMILIES)
    with pytest.raises(UnderstudyError, match="walker-walk"):
        envs.make("walker-wakl")


def test_unknown_option_lists_valid_options():
    with pytest.raises(UnderstudyError) as err:
        envs.make("Hopper-v5", ctrl_cost=0.1)
    assert "ctrl_cost" in str(err.value) and "ctrl_cost_weight" in str(err.value) and "mujoco" in str(err.value)
    with pytest.raises(UnderstudyError, match="room_size"):
        envs.make("BabyAI-GoToLocal-v0", roomsize=6)
    with pytest.raises(UnderstudyError, match="terminate_on_success"):
        envs.make("metaworld/reach-v3", terminate=True)


def test_make_vector_shapes_and_per_env_seeds():
    vec = envs.make_vector("Pendulum-v1", 3, seed=0, task_bit=(0, 2))
    obs, _ = vec.reset()
    assert obs.shape == (3, 5) and obs.dtype == np.float32
    assert len({tuple(row) for row in obs[:, :3].round(6)}) == 3  # seeds 0, 1, 2 differ
    np.testing.assert_array_equal(obs[0], envs.make("Pendulum-v1", seed=0, task_bit=(0, 2)).reset()[0])
    obs, reward, terminated, truncated, _ = vec.step(vec.action_space.sample())
    assert obs.shape == (3, 5) and reward.shape == terminated.shape == truncated.shape == (3,)
    assert envs.env_spec(vec).obs_shape == (5,) and envs.env_spec(vec).options == {"task_bit": [0, 2]}
    vec.close()


def test_list_envs_covers_the_families():
    known = envs.list_envs()
    assert set(known) == set(envs.FAMILIES)
    for family, env_id in [("mujoco", "Ant-v5"), ("classic", "MountainCarContinuous-v0"),
                           ("dm_control", "walker-run"), ("babyai", "BabyAI-GoToLocal-v0"),
                           ("metaworld", "metaworld/push-v3")]:
        assert env_id in known[family]


def test_import_is_lazy():
    heavy = ("mujoco", "dm_control", "metaworld", "minigrid", "shimmy", "flax")
    code = f"import sys, understudy.envs; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _frame_count(path) -> int:
    import imageio_ffmpeg

    frames = imageio_ffmpeg.read_frames(str(path))
    next(frames)  # metadata
    return sum(1 for _ in frames)


def test_video_pendulum(tmp_path):
    path = tmp_path / "pendulum.mp4"
    result = envs.record_video("Pendulum-v1", lambda obs: np.zeros(1, np.float32), path, episodes=2, seed=0,
                               max_episode_steps=5)
    assert result["lengths"] == [5, 5] and result["frames"] == 12
    assert path.stat().st_size > 0 and _frame_count(path) == 12


def test_video_mujoco_headless(tmp_path):
    path = tmp_path / "hopper.mp4"
    result = envs.record_video("Hopper-v5", None, path, max_episode_steps=4, width=64, height=64)
    assert result["frames"] == 5 and path.stat().st_size > 0 and _frame_count(path) == 5


def test_video_recorder_needs_rgb_array():
    with pytest.raises(UnderstudyError, match="rgb_array"):
        envs.VideoRecorder(envs.make("Pendulum-v1"), "unused.mp4")


def test_generic_gymnasium_family():
    env = envs.make("FrozenLake-v1", seed=0, is_slippery=False)
    spec = envs.env_spec(env)
    assert spec.family == "gymnasium" and spec.num_actions == 4 and spec.observation.shape == ()
    env.close()
    assert isinstance(envs.make("Acrobot-v1"), gym.Env)
