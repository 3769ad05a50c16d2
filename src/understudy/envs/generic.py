"""Family "gymnasium": any registered Gymnasium id with Box or Discrete spaces.

Also the shared path for the families that are plain Gymnasium registrations (mujoco, classic): they
differ only in which ids they claim.
"""

from __future__ import annotations

from typing import Optional

import gymnasium as gym
from gymnasium.envs.registration import load_env_creator

from understudy.envs.base import MAX_EPISODE_STEPS_DOC, Built, check_spaces, constructor_options

FAMILY = "gymnasium"

# Namespaces handled by other families (or not supported); excluded from this family's listing.
_OTHER_FAMILY_PREFIXES = ("dm_control/", "Meta-World/", "BabyAI-", "MiniGrid-")


def entry_module(env_id: str) -> str:
    """The module of a registered id's entry point ('' when the id is not registered)."""
    spec = gym.registry.get(env_id)
    if spec is None:
        return ""
    entry = spec.entry_point
    if isinstance(entry, str):
        return entry.split(":")[0]
    return getattr(entry, "__module__", "") or ""


def resolve(env_id: str) -> Optional[str]:
    return env_id if env_id in gym.registry else None


def known_ids() -> list[str]:
    return sorted(i for i in gym.registry if not i.startswith(_OTHER_FAMILY_PREFIXES)
                  and not entry_module(i).startswith(("gymnasium.envs.mujoco", "gymnasium.envs.classic_control")))


def registered_options(env_id: str, exclude: tuple[str, ...] = ()) -> dict[str, str]:
    """Constructor keyword options of a registered env, plus gym.make's max_episode_steps."""
    spec = gym.spec(env_id)
    try:
        valid = constructor_options(load_env_creator(spec.entry_point) if isinstance(spec.entry_point, str)
                                    else spec.entry_point, exclude)
    except (ImportError, AttributeError, ValueError, TypeError):
        valid = {}  # e.g. an optional dependency is missing; make() reports the real problem
    valid.update({k: f"default {v!r}" for k, v in spec.kwargs.items()})
    valid["max_episode_steps"] = MAX_EPISODE_STEPS_DOC
    return valid


def option_names(env_id: str) -> dict[str, str]:
    return registered_options(env_id)


def build_registered(env_id: str, *, render_mode: Optional[str], options: dict) -> Built:
    env = gym.make(env_id, render_mode=render_mode, **options)
    check_spaces(env, env_id)
    return Built(env=env, max_episode_steps=env.spec.max_episode_steps if env.spec else None)


def build(env_id: str, *, seed: Optional[int], render_mode: Optional[str], options: dict) -> Built:
    del seed  # seeding happens at reset (see UnderstudyEnv)
    return build_registered(env_id, render_mode=render_mode, options=options)
