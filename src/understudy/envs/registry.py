"""One entry point for every environment family: make, make_vector, list_envs, and id resolution.

An id is offered to each family in turn (specific ones first, "gymnasium" last); the first that claims
it builds it. Family modules share one small interface: FAMILY, resolve(id) -> canonical id | None,
known_ids(), option_names(id), build(id, seed=, render_mode=, options=) -> Built. Heavy packages
(dm_control, metaworld, minigrid) are imported inside their family's functions, never at
`import understudy.envs`.
"""

from __future__ import annotations

import difflib
from types import ModuleType
from typing import Any, Optional, Sequence

import gymnasium as gym
import numpy as np

from understudy.envs import babyai, classic, dm_control, generic, gym_mujoco, metaworld
from understudy.envs.base import check_options, jsonable
from understudy.envs.errors import user_error
from understudy.envs.wrappers import Float32Action, Float32Observation, ObservationNoise, TaskBit, UnderstudyEnv

# Resolution order: specific families first, the catch-all "gymnasium" last.
_MODULES: tuple[ModuleType, ...] = (dm_control, metaworld, babyai, gym_mujoco, classic, generic)
FAMILIES: tuple[str, ...] = ("mujoco", "classic", "dm_control", "babyai", "metaworld", "gymnasium")
_BY_FAMILY = {m.FAMILY: m for m in _MODULES}
_EXAMPLES = {"mujoco": "Hopper-v5", "classic": "MountainCar-v0", "dm_control": "walker-walk",
             "babyai": "BabyAI-GoToLocal-v0", "metaworld": "metaworld/reach-v3", "gymnasium": "FrozenLake-v1"}


def list_envs() -> dict[str, list[str]]:
    """Known ids per family (imports minigrid to list BabyAI levels; any registered Gymnasium id also works)."""
    return {family: _BY_FAMILY[family].known_ids() for family in FAMILIES}


def resolve(env_id: str) -> tuple[str, str]:
    """(family, canonical id) for `env_id`, e.g. "dm_control/walker-walk-v0" -> ("dm_control", "walker-walk").

    Raises UnderstudyError naming close matches when no family claims the id.
    """
    if not isinstance(env_id, str) or not env_id:
        raise user_error(f"Environment id must be a non-empty string, got {env_id!r}.")
    for module in _MODULES:
        canonical = module.resolve(env_id)
        if canonical is not None:
            return module.FAMILY, canonical
    raise user_error(_unknown_id_message(env_id))


def _unknown_id_message(env_id: str) -> str:
    candidates = {i for ids in list_envs().values() for i in ids} | set(gym.registry) | set(metaworld.INSTRUCTIONS)
    by_lower = {c.lower(): c for c in sorted(candidates)}
    close = [by_lower[c] for c in difflib.get_close_matches(env_id.lower(), list(by_lower), n=5, cutoff=0.6)]
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    families = ", ".join(f"{f} (e.g. {_EXAMPLES[f]})" for f in FAMILIES)
    return (f"Unknown environment id '{env_id}'.{hint} Supported families: {families}; the 'gymnasium' family "
            "takes any registered Gymnasium id with Box or Discrete spaces. understudy.envs.list_envs() lists "
            "the known ids.")


def _check_task_bit(task_bit: Any) -> Optional[tuple[int, int]]:
    if task_bit is None:
        return None
    ok = (isinstance(task_bit, (tuple, list)) and len(task_bit) == 2
          and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in task_bit))
    if not ok or not (task_bit[1] >= 1 and 0 <= task_bit[0] < task_bit[1]):
        raise user_error(f"task_bit={task_bit!r} must be (task_id, num_tasks) with 0 <= task_id < num_tasks, "
                         "e.g. task_bit=(1, 2) for task 1 of 2.")
    return int(task_bit[0]), int(task_bit[1])


def _check_obs_noise(obs_noise: Any) -> float:
    if isinstance(obs_noise, bool) or not isinstance(obs_noise, (int, float, np.floating, np.integer)) \
            or not np.isfinite(obs_noise) or obs_noise < 0:
        raise user_error(f"obs_noise={obs_noise!r} must be a finite standard deviation >= 0 (0 turns noise off).")
    return float(obs_noise)


def _as_float32(env: gym.Env) -> gym.Env:
    obs, act = env.observation_space, env.action_space
    if isinstance(obs, gym.spaces.Box) and np.issubdtype(obs.dtype, np.floating) and obs.dtype != np.float32:
        env = Float32Observation(env)
    if isinstance(act, gym.spaces.Box) and np.issubdtype(act.dtype, np.floating) and act.dtype != np.float32:
        env = Float32Action(env)
    return env


def make(env_id: str, *, seed: Optional[int] = None, task_bit: Optional[Sequence[int]] = None,
         obs_noise: float = 0.0, render_mode: Optional[str] = None, **options) -> gym.Env:
    """Build an environment of any supported family, with the shared wrappers.

    env_id: e.g. "Hopper-v5", "Pendulum-v1", "walker-walk", "BabyAI-GoToLocal-v0" (or "babyai:GoToLocal"),
        "metaworld/reach-v3" (or "metaworld:reach-v3"). A suite id ("metaworld:MT10") names several
        tasks, not one env: it raises UnderstudyError pointing at `understudy collect`.
    seed: used by the first reset() that is not given a seed, by action_space.sample(), and by the
        observation noise; later `reset(seed=s)` calls re-seed as usual.
    task_bit: (task_id, num_tasks): appends a one-hot of size num_tasks, 1 at task_id, to the observation.
    obs_noise: standard deviation of Gaussian noise added to every observation (float Box observations).
    render_mode: e.g. "rgb_array" for video.
    options: family-specific constructor options (e.g. ctrl_cost_weight for Hopper-v5, room_size for
        BabyAI, terminate_on_success for Meta-World) and max_episode_steps; an unknown name raises
        UnderstudyError listing the valid ones.

    Float Box observations come out float32; continuous action spaces are float32 Boxes. The returned
    env's `instruction` attribute holds the current task text (BabyAI, Meta-World) or None.
    """
    family, canonical = resolve(env_id)
    module = _BY_FAMILY[family]
    check_options(canonical, family, options, module.option_names(canonical))
    bit = _check_task_bit(task_bit)
    noise = _check_obs_noise(obs_noise)
    built = module.build(canonical, seed=seed, render_mode=render_mode, options=dict(options))
    env = built.env
    try:
        env = _as_float32(env)
        if noise > 0.0:
            env = ObservationNoise(env, noise, seed=seed)
        if bit is not None:
            env = TaskBit(env, *bit)
    except Exception:
        env.close()
        raise
    recorded = jsonable(dict(options))
    if bit is not None:
        recorded["task_bit"] = list(bit)
    if noise > 0.0:
        recorded["obs_noise"] = noise
    return UnderstudyEnv(env, env_id=canonical, family=family, options=recorded,
                         max_episode_steps=built.max_episode_steps, instruction=built.instruction,
                         task_bit=bit, seed=seed)


def make_vector(env_id: str, num_envs: int, *, seed: Optional[int] = None, **kwargs) -> gym.vector.SyncVectorEnv:
    """`num_envs` copies of make(env_id, **kwargs) in a gymnasium SyncVectorEnv; sub-env i gets seed + i.

    Autoreset is gymnasium's default (AutoresetMode.NEXT_STEP): when sub-env i ends an episode at step t,
    step t returns its last observation with terminated/truncated set, and the *next* step() call resets
    it, ignoring its action for that call and returning the first observation of the new episode with
    reward 0 and terminated = truncated = False. Skip that transition when storing data.
    """
    if not isinstance(num_envs, (int, np.integer)) or isinstance(num_envs, bool) or num_envs < 1:
        raise user_error(f"num_envs={num_envs!r} must be a positive integer.")

    def factory(index: int):
        return lambda: make(env_id, seed=None if seed is None else seed + index, **kwargs)

    vector_env = gym.vector.SyncVectorEnv([factory(i) for i in range(int(num_envs))])
    if seed is not None:
        vector_env.action_space.seed(seed)
    return vector_env
