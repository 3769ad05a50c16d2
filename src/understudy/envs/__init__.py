"""Environments for every supported family behind one `make`.

    from understudy import envs
    env = envs.make("Hopper-v5", seed=0, obs_noise=0.01, task_bit=(0, 2))
    spec = envs.env_spec(env)                   # types.EnvSpec, JSON round-trips
    env2 = envs.make(spec.env_id, **spec.options)  # the same environment again

Families (FAMILIES): mujoco (Hopper-v5, HalfCheetah-v5, Walker2d-v5, Ant-v5, ...), classic
(MountainCar-v0, MountainCarContinuous-v0, Pendulum-v1, ...), dm_control (walker-walk, walker-run, ...),
babyai (BabyAI-GoToLocal-v0, ...), metaworld (metaworld/reach-v3, ...), gymnasium (any other registered
id with Box or Discrete spaces). Importing this package is cheap; each family's heavy dependency is
imported when one of its envs is first made.
"""

from understudy.envs.registry import FAMILIES, list_envs, make, make_vector, resolve
from understudy.envs.spec import env_spec, make_from_spec, make_spec
from understudy.envs.video import VideoRecorder, record_video
from understudy.envs.wrappers import ObservationNoise, TaskBit, UnderstudyEnv

__all__ = ["FAMILIES", "list_envs", "make", "make_vector", "resolve", "env_spec", "make_spec", "make_from_spec",
           "VideoRecorder", "record_video", "ObservationNoise", "TaskBit", "UnderstudyEnv"]
