"""Family "dm_control": DeepMind Control Suite tasks through Shimmy (walker-walk, walker-run, ...).

Ids: "walker-walk" (canonical) or "dm_control/walker-walk-v0". The observation dict is flattened to one
float32 vector in dm_control's own key order (walker: orientations 14, height 1, velocity 9 -> 24), the
order dm_control's flatten and most published walker datasets use. Episodes are cut at
`max_episode_steps` (1000 by default, dm_control's usual 20-25 s) by a TimeLimit, so they end truncated.
"""

from __future__ import annotations

import os
import re
from typing import Optional

# Headless offscreen rendering; must be set before mujoco is first imported. A user's own choice wins.
os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402

from understudy.envs.base import Built  # noqa: E402
from understudy.envs.wrappers import FlattenDictObservation  # noqa: E402

FAMILY = "dm_control"
DEFAULT_MAX_EPISODE_STEPS = 1000

# The suite tasks Shimmy registers (shimmy.utils.envs_configs.DM_CONTROL_SUITE_ENVS, copied because
# importing shimmy imports dm_control, which takes seconds).
SUITE_TASKS = (
    ("acrobot", "swingup"), ("acrobot", "swingup_sparse"), ("ball_in_cup", "catch"), ("cartpole", "balance"),
    ("cartpole", "balance_sparse"), ("cartpole", "swingup"), ("cartpole", "swingup_sparse"),
    ("cartpole", "two_poles"), ("cartpole", "three_poles"), ("cheetah", "run"), ("dog", "stand"), ("dog", "walk"),
    ("dog", "trot"), ("dog", "run"), ("dog", "fetch"), ("finger", "spin"), ("finger", "turn_easy"),
    ("finger", "turn_hard"), ("fish", "upright"), ("fish", "swim"), ("hopper", "stand"), ("hopper", "hop"),
    ("humanoid", "stand"), ("humanoid", "walk"), ("humanoid", "run"), ("humanoid", "run_pure_state"),
    ("humanoid_CMU", "stand"), ("humanoid_CMU", "walk"), ("humanoid_CMU", "run"), ("lqr", "lqr_2_1"),
    ("lqr", "lqr_6_2"), ("manipulator", "bring_ball"), ("manipulator", "bring_peg"),
    ("manipulator", "insert_ball"), ("manipulator", "insert_peg"), ("pendulum", "swingup"),
    ("point_mass", "easy"), ("point_mass", "hard"), ("quadruped", "walk"), ("quadruped", "run"),
    ("quadruped", "escape"), ("quadruped", "fetch"), ("reacher", "easy"), ("reacher", "hard"),
    ("stacker", "stack_2"), ("stacker", "stack_4"), ("swimmer", "swimmer6"), ("swimmer", "swimmer15"),
    ("walker", "stand"), ("walker", "walk"), ("walker", "run"),
)
_SHORT_IDS = frozenset(f"{domain}-{task}" for domain, task in SUITE_TASKS)
_LONG_ID = re.compile(r"^dm_control/(?P<short>.+)-v0$")

OPTIONS = {
    "task_kwargs": "dict passed to dm_control.suite.load, e.g. {'time_limit': 10.0}",
    "environment_kwargs": "dict passed to dm_control.suite.load, e.g. {'n_sub_steps': 2}",
    "visualize_reward": "default False",
    "width": "render width in pixels, default 320",
    "height": "render height in pixels, default 240",
    "camera_id": "render camera, default 0",
    "max_episode_steps": f"time limit in steps, default {DEFAULT_MAX_EPISODE_STEPS}",
}


def resolve(env_id: str) -> Optional[str]:
    match = _LONG_ID.match(env_id)
    short = match.group("short") if match else env_id
    return short if short in _SHORT_IDS else None


def known_ids() -> list[str]:
    return sorted(_SHORT_IDS)


def option_names(env_id: str) -> dict[str, str]:
    return dict(OPTIONS)


def build(env_id: str, *, seed: Optional[int], render_mode: Optional[str], options: dict) -> Built:
    del seed  # Shimmy seeds the task's RandomState at reset(seed=...)
    import shimmy  # noqa: F401  (registers the dm_control/* ids; imports dm_control, slow, hence lazy)

    opts = dict(options)
    max_steps = int(opts.pop("max_episode_steps", DEFAULT_MAX_EPISODE_STEPS))
    render_kwargs = {k: opts.pop(k) for k in ("width", "height", "camera_id") if k in opts}
    # dm_control's own clock is switched off so our TimeLimit alone decides, unless the user sets it.
    task_kwargs = {"time_limit": float("inf"), **opts.pop("task_kwargs", {})}
    env = gym.make(f"dm_control/{env_id}-v0", task_kwargs=task_kwargs, render_mode=render_mode,
                   render_kwargs=render_kwargs or None, **opts)
    keys = list(env.unwrapped._env.observation_spec().keys())  # dm_control's order, not the sorted Dict's
    env = FlattenDictObservation(env, keys)
    env = gym.wrappers.TimeLimit(env, max_episode_steps=max_steps)
    return Built(env=env, max_episode_steps=max_steps)
