"""Small shared types: what an environment looks like (EnvSpec) and what an update eats (Batch).

Everything here is plain data, JSON-serialisable (EnvSpec) or a JAX pytree (Batch), so it can be saved
beside a model and crossed into jitted code.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Optional

import numpy as np
from flax import struct


class UnderstudyError(Exception):
    """An error caused by the user's input (a bad file, flag or id).

    The CLI prints its message as one paragraph and exits non-zero, without a traceback unless
    `--debug` is given. Messages name the problem and the fix.
    """


@dataclasses.dataclass(frozen=True)
class ArraySpec:
    """Shape, dtype and (for Box spaces) bounds of one array."""

    shape: tuple[int, ...]
    dtype: str
    low: Optional[tuple[float, ...]] = None  # flattened bounds, Box spaces only
    high: Optional[tuple[float, ...]] = None

    def to_dict(self) -> dict:
        return {"shape": list(self.shape), "dtype": self.dtype, "low": None if self.low is None else list(self.low),
                "high": None if self.high is None else list(self.high)}

    @staticmethod
    def from_dict(d: dict) -> "ArraySpec":
        return ArraySpec(shape=tuple(d["shape"]), dtype=d["dtype"],
                         low=None if d.get("low") is None else tuple(d["low"]),
                         high=None if d.get("high") is None else tuple(d["high"]))


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    """One description for every environment family.

    observation: an ArraySpec for array observations, or a dict name -> ArraySpec for dict observations
        (BabyAI: image, direction; the mission text is carried in `instruction`, not as an array).
    action: ArraySpec of one action. Continuous: float32, shape (action_dim,), with low/high.
        Discrete: int64, shape (), and `num_actions` set.
    """

    env_id: str
    family: str  # "mujoco", "classic", "dm_control", "babyai", "metaworld", "gymnasium"
    observation: Any  # ArraySpec | dict[str, ArraySpec]
    action: ArraySpec
    num_actions: Optional[int] = None  # discrete action spaces only
    max_episode_steps: Optional[int] = None
    instruction: Optional[str] = None  # task text (Meta-World) or the first mission (BabyAI)
    num_tasks: Optional[int] = None  # set when a task-bit wrapper appends a one-hot of this size
    task_id: Optional[int] = None
    options: dict = dataclasses.field(default_factory=dict)  # the make() options, for re-creating it

    # -- convenience --------------------------------------------------------------------------
    @property
    def discrete(self) -> bool:
        return self.num_actions is not None

    @property
    def obs_shape(self) -> tuple[int, ...]:
        if isinstance(self.observation, dict):
            raise UnderstudyError(f"{self.env_id} has dict observations {sorted(self.observation)}; "
                                  "this model needs array observations.")
        return tuple(self.observation.shape)

    @property
    def obs_dim(self) -> int:
        return int(np.prod(self.obs_shape))

    @property
    def action_dim(self) -> int:
        """Continuous: number of action dimensions. Discrete: number of actions."""
        return int(self.num_actions) if self.discrete else int(np.prod(self.action.shape))

    @property
    def action_low(self) -> np.ndarray:
        return np.asarray(self.action.low, np.float32)

    @property
    def action_high(self) -> np.ndarray:
        return np.asarray(self.action.high, np.float32)

    # -- (de)serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict:
        obs = ({k: v.to_dict() for k, v in self.observation.items()} if isinstance(self.observation, dict)
               else self.observation.to_dict())
        return {"env_id": self.env_id, "family": self.family, "observation": obs, "action": self.action.to_dict(),
                "num_actions": self.num_actions, "max_episode_steps": self.max_episode_steps,
                "instruction": self.instruction, "num_tasks": self.num_tasks, "task_id": self.task_id,
                "options": self.options}

    @staticmethod
    def from_dict(d: dict) -> "EnvSpec":
        obs = d["observation"]
        obs = ({k: ArraySpec.from_dict(v) for k, v in obs.items()} if "shape" not in obs else ArraySpec.from_dict(obs))
        return EnvSpec(env_id=d["env_id"], family=d["family"], observation=obs, action=ArraySpec.from_dict(d["action"]),
                       num_actions=d.get("num_actions"), max_episode_steps=d.get("max_episode_steps"),
                       instruction=d.get("instruction"), num_tasks=d.get("num_tasks"), task_id=d.get("task_id"),
                       options=dict(d.get("options") or {}))

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @staticmethod
    def from_json(s: str) -> "EnvSpec":
        return EnvSpec.from_dict(json.loads(s))


@struct.dataclass
class Batch:
    """A batch of transitions (leading axis B), or of windows (leading axes B, W) with `mask`.

    `terminations` is 1.0 where the episode truly ended (no bootstrapping); time-limit truncations do not
    appear here because a truncated transition still bootstraps from `next_observations`.
    """

    observations: Any
    actions: Any
    rewards: Any
    terminations: Any
    next_observations: Any
    mask: Any = None  # windows: 1.0 for real steps, 0.0 for padding before an episode start
    task_id: Any = None
