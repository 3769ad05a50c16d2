"""Observation and action wrappers shared by every environment family.

Order, inside out (see registry.make): family adaptations -> Float32Observation / Float32Action ->
ObservationNoise -> TaskBit -> UnderstudyEnv (metadata and first-reset seeding). Noise is applied before
the task bit so the one-hot stays exact.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import gymnasium as gym
import numpy as np

from understudy.envs.errors import user_error

# Mixed into noise seeds so the noise stream is not the same stream as anything else seeded with `seed`.
_NOISE_STREAM = 0x6E6F6973


def _float32_box(space: gym.spaces.Box) -> gym.spaces.Box:
    return gym.spaces.Box(low=space.low.astype(np.float32), high=space.high.astype(np.float32), dtype=np.float32)


class Float32Observation(gym.ObservationWrapper):
    """Casts a floating-point Box observation to float32 (MuJoCo and Meta-World return float64).

    `space` replaces the observation space when the wrapped env declares a wrong one (Meta-World)."""

    def __init__(self, env: gym.Env, space: Optional[gym.spaces.Box] = None):
        super().__init__(env)
        self.observation_space = _float32_box(space if space is not None else env.observation_space)

    def observation(self, observation):
        return np.asarray(observation, dtype=np.float32)


class Float32Action(gym.ActionWrapper):
    """Exposes a float32 Box action space over an env whose Box is another float dtype (dm_control: float64)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self._inner_dtype = env.action_space.dtype
        self.action_space = _float32_box(env.action_space)

    def action(self, action):
        return np.asarray(action, dtype=self._inner_dtype)


class FlattenDictObservation(gym.ObservationWrapper):
    """Concatenates a dict of arrays into one float32 vector, in the fixed order `keys` (scalars count as 1)."""

    def __init__(self, env: gym.Env, keys: Sequence[str]):
        super().__init__(env)
        self.keys = tuple(keys)
        sizes = [int(np.prod(env.observation_space[k].shape)) for k in self.keys]
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (sum(sizes),), np.float32)

    def observation(self, observation):
        return np.concatenate([np.asarray(observation[k], np.float32).ravel() for k in self.keys])


def noise_rng(seed: Optional[int]) -> np.random.Generator:
    """The generator ObservationNoise uses after seeding with `seed` (None: fresh entropy)."""
    if seed is None:
        return np.random.default_rng()
    return np.random.default_rng(np.random.SeedSequence([int(seed), _NOISE_STREAM]))


class ObservationNoise(gym.ObservationWrapper):
    """Adds N(0, std^2) noise to every float Box observation, reset and step alike.

    The noise generator is re-seeded by `reset(seed=s)`, so a seeded episode is reproducible; resets
    without a seed continue the current stream. Bounds widen to (-inf, inf) because noise can leave them.
    """

    def __init__(self, env: gym.Env, std: float, seed: Optional[int] = None):
        super().__init__(env)
        space = env.observation_space
        if not (isinstance(space, gym.spaces.Box) and np.issubdtype(space.dtype, np.floating)):
            raise user_error(f"obs_noise={std} needs a float Box observation, but this environment observes {space}; "
                             "drop obs_noise for it.")
        if not std >= 0.0:
            raise user_error(f"obs_noise must be a standard deviation >= 0, got {std}.")
        self.std = float(std)
        self.rng = noise_rng(seed)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, space.shape, space.dtype)

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        if seed is not None:
            self.rng = noise_rng(seed)
        return super().reset(seed=seed, options=options)

    def observation(self, observation):
        noise = self.rng.normal(0.0, self.std, size=np.shape(observation))
        return (observation + noise).astype(self.observation_space.dtype)


class TaskBit(gym.ObservationWrapper):
    """Appends a one-hot of size `num_tasks` with a 1 at `task_id` to a 1-D Box observation."""

    def __init__(self, env: gym.Env, task_id: int, num_tasks: int):
        super().__init__(env)
        space = env.observation_space
        if not (isinstance(space, gym.spaces.Box) and len(space.shape) == 1):
            raise user_error(f"task_bit needs a 1-D Box observation, but this environment observes {space}; "
                             "drop task_bit for it.")
        if not (isinstance(num_tasks, (int, np.integer)) and isinstance(task_id, (int, np.integer))
                and num_tasks >= 1 and 0 <= task_id < num_tasks):
            raise user_error(f"task_bit=({task_id}, {num_tasks}) is not (task_id, num_tasks) with "
                             "0 <= task_id < num_tasks; e.g. task_bit=(1, 2) is task 1 of 2.")
        self.task_id, self.num_tasks = int(task_id), int(num_tasks)
        self.one_hot = np.zeros(self.num_tasks, space.dtype)
        self.one_hot[self.task_id] = 1
        self.observation_space = gym.spaces.Box(
            low=np.concatenate([space.low, np.zeros(self.num_tasks, space.dtype)]),
            high=np.concatenate([space.high, np.ones(self.num_tasks, space.dtype)]), dtype=space.dtype)

    def observation(self, observation):
        return np.concatenate([observation, self.one_hot])


class UnderstudyEnv(gym.Wrapper):
    """Outermost wrapper of every env from `understudy.envs.make`.

    Holds what `env_spec` reports (id, family, options, time limit, task bit, first instruction), keeps
    the current instruction in `instruction` (BabyAI missions change every episode; they arrive in
    info["instruction"]), and makes the first `reset()` without a seed use the seed given to make().
    """

    def __init__(self, env: gym.Env, *, env_id: str, family: str, options: dict, max_episode_steps: Optional[int],
                 instruction: Optional[str], task_bit: Optional[tuple[int, int]], seed: Optional[int]):
        super().__init__(env)
        self.env_id, self.family, self.options = env_id, family, dict(options)
        self.max_episode_steps = max_episode_steps
        self.first_instruction = instruction
        self.instruction = instruction
        self.task_bit = task_bit
        self.make_seed = seed
        self._has_reset = False
        if seed is not None:
            self.action_space.seed(seed)

    def _note_instruction(self, info: dict) -> None:
        if "instruction" in info:
            self.instruction = info["instruction"]

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        if seed is None and not self._has_reset:
            seed = self.make_seed
        self._has_reset = True
        obs, info = self.env.reset(seed=seed, options=options)
        self._note_instruction(info)
        return obs, info

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._note_instruction(info)
        return obs, reward, terminated, truncated, info
