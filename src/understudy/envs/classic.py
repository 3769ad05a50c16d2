"""Family "classic": Gymnasium classic control (MountainCar-v0, MountainCarContinuous-v0, Pendulum-v1, ...).

Rendering (rgb_array) uses pygame surfaces and needs no display.
"""

from __future__ import annotations

import os
from typing import Optional

# Without a display, pygame (which draws rgb_array frames) prints an SDL error unless told there is none.
if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import gymnasium as gym  # noqa: E402

from understudy.envs import generic  # noqa: E402
from understudy.envs.base import Built  # noqa: E402

FAMILY = "classic"
_MODULE = "gymnasium.envs.classic_control"


def resolve(env_id: str) -> Optional[str]:
    return env_id if generic.entry_module(env_id).startswith(_MODULE) else None


def known_ids() -> list[str]:
    return sorted(i for i in gym.registry if generic.entry_module(i).startswith(_MODULE))


def option_names(env_id: str) -> dict[str, str]:
    return generic.registered_options(env_id)


# Envs whose termination means the goal was reached: their episodes report info["success"].
_TERMINATES_AT_GOAL = ("MountainCar-v0", "MountainCarContinuous-v0")


class GoalSuccess(gym.Wrapper):
    """Adds info["success"]: whether this step reached the goal (for envs that terminate only there)."""

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, {**info, "success": bool(terminated)}


def build(env_id: str, *, seed: Optional[int], render_mode: Optional[str], options: dict) -> Built:
    del seed  # seeding happens at reset (see UnderstudyEnv)
    built = generic.build_registered(env_id, render_mode=render_mode, options=options)
    if env_id in _TERMINATES_AT_GOAL:
        built.env = GoalSuccess(built.env)
    return built
