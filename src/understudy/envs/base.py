"""What every family module returns, and the checks they share (option names, supported spaces)."""

from __future__ import annotations

import dataclasses
import inspect
import json
from typing import Any, Callable, Iterable, Optional

import gymnasium as gym

from understudy.envs.errors import user_error

MAX_EPISODE_STEPS_DOC = "time limit in steps (default: the registered one)"


@dataclasses.dataclass
class Built:
    """A family's env before the shared wrappers, with what only the family knows about it."""

    env: gym.Env
    max_episode_steps: Optional[int]
    instruction: Optional[str] = None


def constructor_options(creator: Callable, exclude: Iterable[str] = ()) -> dict[str, str]:
    """Keyword options of an env class (following **kwargs up its base classes) or of a factory function.

    Returns name -> "default <repr>" (or "required"), for error messages.
    """
    skip = {"self", "render_mode", *exclude}
    found: dict[str, str] = {}

    def add(signature: inspect.Signature) -> bool:
        takes_more = False
        for p in signature.parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                takes_more |= p.kind == p.VAR_KEYWORD
            elif p.name not in skip and p.name not in found:
                found[p.name] = "required" if p.default is p.empty else f"default {p.default!r}"
        return takes_more

    if inspect.isclass(creator):
        for cls in creator.__mro__:
            if "__init__" in cls.__dict__ and not add(inspect.signature(cls.__init__)):
                break
    else:
        add(inspect.signature(creator))
    return found


def check_options(env_id: str, family: str, options: dict, valid: dict[str, str]) -> None:
    """Raises UnderstudyError for option names `valid` lacks, or values a spec could not save as JSON."""
    unknown = sorted(set(options) - set(valid))
    if unknown:
        listing = "; ".join(f"{name} ({doc})" for name, doc in sorted(valid.items())) or "none"
        raise user_error(f"Unknown option(s) {', '.join(map(repr, unknown))} for environment '{env_id}' "
                         f"(family '{family}'). Valid options for it: {listing}. Fix the option name or drop it.")
    for name, value in options.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            raise user_error(f"Option {name}={value!r} for '{env_id}' is not JSON-serialisable, so it cannot be "
                             "saved in the EnvSpec that re-creates the environment; pass numbers, strings, "
                             "lists or dicts.") from None


def check_spaces(env: gym.Env, env_id: str, observation_types: tuple = (gym.spaces.Box, gym.spaces.Discrete)) -> None:
    """Raises UnderstudyError (closing env) unless the spaces are ones an EnvSpec can describe."""
    problems = []
    if not isinstance(env.observation_space, observation_types):
        problems.append(f"observation space {env.observation_space}")
    if not isinstance(env.action_space, (gym.spaces.Box, gym.spaces.Discrete)):
        problems.append(f"action space {env.action_space}")
    if problems:
        env.close()
        raise user_error(f"Environment '{env_id}' has an unsupported {' and '.join(problems)}; understudy supports "
                         "Box or Discrete spaces (and BabyAI's dict observations). Choose another environment.")


def jsonable(value: Any) -> Any:
    """Tuples -> lists, recursively, so options compare equal after a JSON round trip."""
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    return value
