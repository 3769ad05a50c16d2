"""EnvSpec from a live environment, and back: env_spec, make_spec, make_from_spec."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import gymnasium as gym
import numpy as np

from understudy.envs.errors import user_error
from understudy.envs.registry import make
from understudy.envs.wrappers import UnderstudyEnv

if TYPE_CHECKING:
    from understudy.types import ArraySpec, EnvSpec


def _find_understudy(env: Any) -> Optional[UnderstudyEnv]:
    while isinstance(env, gym.Wrapper):
        if isinstance(env, UnderstudyEnv):
            return env
        env = env.env
    return None


def _array_spec(space: gym.Space) -> "ArraySpec":
    from understudy.types import ArraySpec

    if isinstance(space, gym.spaces.Box):
        if np.issubdtype(space.dtype, np.floating):  # integer boxes are images: bounds are just 0..255
            return ArraySpec(shape=tuple(space.shape), dtype=str(space.dtype),
                             low=tuple(float(v) for v in space.low.ravel()),
                             high=tuple(float(v) for v in space.high.ravel()))
        return ArraySpec(shape=tuple(space.shape), dtype=str(space.dtype))
    if isinstance(space, gym.spaces.Discrete):
        return ArraySpec(shape=(), dtype="int64")
    raise user_error(f"Cannot describe the space {space} in an EnvSpec; understudy supports Box and Discrete "
                     "spaces (and dicts of them for observations).")


def env_spec(env: gym.Env | gym.vector.VectorEnv) -> "EnvSpec":
    """The EnvSpec of an env from `make` (or of a vector env from `make_vector`), read from its outer spaces.

    `options` holds what make() needs to rebuild it: `make(spec.env_id, **spec.options)` (seed and
    render_mode are not part of it). Envs not made by understudy get family "gymnasium" and no options.
    """
    from understudy.types import EnvSpec

    if isinstance(env, gym.vector.VectorEnv):
        obs_space, act_space = env.single_observation_space, env.single_action_space
        meta = _find_understudy(env.envs[0]) if hasattr(env, "envs") else None
        plain_spec = env.spec
    else:
        obs_space, act_space = env.observation_space, env.action_space
        meta = _find_understudy(env)
        plain_spec = env.spec

    if isinstance(obs_space, gym.spaces.Dict):
        observation = {k: _array_spec(v) for k, v in obs_space.spaces.items()}
    else:
        observation = _array_spec(obs_space)
    action = _array_spec(act_space)
    num_actions = int(act_space.n) if isinstance(act_space, gym.spaces.Discrete) else None

    if meta is None:
        return EnvSpec(env_id=plain_spec.id if plain_spec else type(env).__name__, family="gymnasium",
                       observation=observation, action=action, num_actions=num_actions,
                       max_episode_steps=plain_spec.max_episode_steps if plain_spec else None)
    task_id, num_tasks = meta.task_bit if meta.task_bit else (None, None)
    return EnvSpec(env_id=meta.env_id, family=meta.family, observation=observation, action=action,
                   num_actions=num_actions, max_episode_steps=meta.max_episode_steps,
                   instruction=meta.first_instruction, num_tasks=num_tasks, task_id=task_id,
                   options=dict(meta.options))


def make_spec(env_id: str, **kwargs) -> "EnvSpec":
    """make(env_id, **kwargs), read its EnvSpec, close it."""
    env = make(env_id, **kwargs)
    try:
        return env_spec(env)
    finally:
        env.close()


def make_from_spec(spec: "EnvSpec", *, seed: Optional[int] = None, render_mode: Optional[str] = None,
                   **overrides) -> gym.Env:
    """Re-create the environment a spec describes: make(spec.env_id, seed=, render_mode=, **spec.options).

    `overrides` replace individual options (e.g. obs_noise=0.0 to evaluate without noise).
    """
    return make(spec.env_id, seed=seed, render_mode=render_mode, **{**spec.options, **overrides})
