"""Family "mujoco": Gymnasium's MuJoCo locomotion envs (Hopper-v5, HalfCheetah-v5, Walker2d-v5, Ant-v5, ...)."""

from __future__ import annotations

import os
from typing import Optional

# Headless offscreen rendering; must be set before mujoco is first imported. A user's own choice wins.
os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402

from understudy.envs import generic  # noqa: E402
from understudy.envs.base import Built  # noqa: E402

FAMILY = "mujoco"
_MODULE = "gymnasium.envs.mujoco"


def resolve(env_id: str) -> Optional[str]:
    return env_id if generic.entry_module(env_id).startswith(_MODULE) else None


def known_ids() -> list[str]:
    """The v5 versions (the ones this project supports); older registered versions also resolve."""
    return sorted(i for i in gym.registry if i.endswith("-v5") and generic.entry_module(i).startswith(_MODULE))


def option_names(env_id: str) -> dict[str, str]:
    # model_path / observation_space are fixed by each env class and cannot be passed twice.
    return generic.registered_options(env_id, exclude=("model_path", "observation_space"))


def build(env_id: str, *, seed: Optional[int], render_mode: Optional[str], options: dict) -> Built:
    del seed  # seeding happens at reset (see UnderstudyEnv)
    return generic.build_registered(env_id, render_mode=render_mode, options=options)
