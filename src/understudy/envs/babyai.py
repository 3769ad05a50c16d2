"""Family "babyai": BabyAI levels (and other MiniGrid envs) from the minigrid package.

Observations are a dict {"image": (7, 7, 3) uint8, "direction": int64 in 0..3}. The mission text is not
an array: it arrives as info["instruction"] on every reset and step, and as the `instruction` attribute
of the env make() returns (`env.get_wrapper_attr("instruction")` under further wrappers). It changes every
episode. info["success"] is True on the step that ends the episode with a positive reward.

Ids: the registered ones ("BabyAI-GoToLocal-v0", "MiniGrid-Empty-5x5-v0", ...) or the alias "babyai:LEVEL"
with the level name ("babyai:GoToLocal", any case) or a full id after the colon ("babyai:BabyAI-GoToLocal-v0").
"""

from __future__ import annotations

import contextlib
import io
import re
from typing import Optional

import gymnasium as gym
from gymnasium.envs.registration import load_env_creator

from understudy.envs.base import MAX_EPISODE_STEPS_DOC, Built, check_spaces

FAMILY = "babyai"
_PREFIXES = ("BabyAI-", "MiniGrid-")
ALIAS_PREFIX = "babyai:"

# MiniGridEnv options every level passes through (the level's own constructor options are added per id).
_SHARED_OPTIONS = {
    "max_steps": "episode length limit inside the level (default: set by the level)",
    "agent_view_size": "side of the egocentric view, changes the image shape (default 7)",
    "see_through_walls": "default False",
    "tile_size": "pixels per cell when rendering (default 32)",
    "highlight": "shade the agent's view when rendering (default True)",
    "agent_pov": "render the agent's view instead of the whole grid (default False)",
    "screen_size": "window size for human rendering (default 640)",
    "max_episode_steps": MAX_EPISODE_STEPS_DOC,
}


def _register() -> None:
    import minigrid  # noqa: F401  (registers the BabyAI-* and MiniGrid-* ids)


def _level_ids() -> dict[str, str]:
    """Lower-case level name ("gotolocal", also "gotolocal-v0") -> registered id ("BabyAI-GoToLocal-v0")."""
    levels = {}
    for env_id in known_ids():
        name = env_id[len("BabyAI-"):]
        levels[name.lower()] = env_id
        levels[re.sub(r"-v\d+$", "", name).lower()] = env_id
    return levels


def _resolve_alias(env_id: str) -> str:
    name = env_id[len(ALIAS_PREFIX):]
    _register()
    if name.startswith(_PREFIXES) and name in gym.registry:
        return name
    levels = _level_ids()
    if name.lower() in levels:
        return levels[name.lower()]
    import difflib

    close = dict.fromkeys(levels[c] for c in difflib.get_close_matches(name.lower(), list(levels), n=6, cutoff=0.6))
    hint = (" Did you mean " + " or ".join(ALIAS_PREFIX + re.sub(r"-v\d+$", "", c[len("BabyAI-"):])
                                          for c in list(close)[:3]) + "?") if close else ""
    from understudy.envs.errors import user_error

    raise user_error(f"Unknown BabyAI level '{name}' in '{env_id}'.{hint} Use a level name such as "
                     f"babyai:GoToLocal (understudy.envs.list_envs()['babyai'] lists the levels) or a full id "
                     f"such as babyai:BabyAI-GoToLocal-v0.")


def resolve(env_id: str) -> Optional[str]:
    if env_id.startswith(ALIAS_PREFIX):
        return _resolve_alias(env_id)
    if not env_id.startswith(_PREFIXES):
        return None
    _register()
    return env_id if env_id in gym.registry else None


def known_ids() -> list[str]:
    """The BabyAI levels (MiniGrid-* ids also resolve)."""
    _register()
    return sorted(i for i in gym.registry if i.startswith("BabyAI-"))


def option_names(env_id: str) -> dict[str, str]:
    import inspect

    spec = gym.spec(env_id)
    level = load_env_creator(spec.entry_point) if isinstance(spec.entry_point, str) else spec.entry_point
    valid = {p.name: f"default {p.default!r}" for p in inspect.signature(level.__init__).parameters.values()
             if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.default is not p.empty}
    valid.update({k: f"default {v!r}" for k, v in spec.kwargs.items()})
    valid.update(_SHARED_OPTIONS)
    return valid


class MissionAsInstruction(gym.Wrapper):
    """Moves the mission text out of the observation into info["instruction"] / `instruction`."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.observation_space = gym.spaces.Dict(
            {"image": env.observation_space["image"], "direction": env.observation_space["direction"]})
        self.instruction: Optional[str] = None

    def _split(self, obs: dict, info: dict) -> tuple[dict, dict]:
        self.instruction = str(obs["mission"])
        info = dict(info, instruction=self.instruction)
        return {"image": obs["image"], "direction": obs["direction"]}, info

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        # Level generation prints "Sampling rejected: ..." for every rejected layout; keep stdout clean.
        with contextlib.redirect_stdout(io.StringIO()):
            obs, info = self.env.reset(seed=seed, options=options)
        obs, info = self._split(obs, info)
        info["success"] = False
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        obs, info = self._split(obs, info)
        info["success"] = bool(terminated and reward > 0)
        return obs, reward, terminated, truncated, info


def build(env_id: str, *, seed: Optional[int], render_mode: Optional[str], options: dict) -> Built:
    _register()
    env = gym.make(env_id, render_mode=render_mode, **options)
    check_spaces(env, env_id, observation_types=(gym.spaces.Dict,))
    env = MissionAsInstruction(env)
    # Levels draw the mission at reset; one seeded reset here gives the spec its first instruction (the
    # user's first reset replays the same episode because UnderstudyEnv reuses this seed).
    env.reset(seed=seed)
    limits = [n for n in (env.unwrapped.max_steps, env.spec.max_episode_steps if env.spec else None) if n]
    return Built(env=env, max_episode_steps=min(limits) if limits else None, instruction=env.instruction)
