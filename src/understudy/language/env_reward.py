"""Replace an environment's reward by a reward model's score of the trajectory so far against one sentence.

Two ways to turn the score S_t = score(states[:t+1], actions[:t], sentence) into a per-step reward:
- "score" (default, note 000's reward; there: scale 100, clipped to [-12, 12]): r_t = scale · S_t. The reward
  model scores prefixes, so every step pays for what the trajectory so far looks like: for "reaches the top" a
  low score until the goal makes a long episode costly (like MountainCar's own -1 per step), for "stays at the
  bottom" a high score in the valley pays for staying there to the end.
- "difference": r_t = scale · (S_t − S_{t−1}). The rewards of an episode sum to S_T − S_0, the score of the
  whole trajectory, independent of how long it took.
Either is then clipped to [reward_min, reward_max] when those are given.

The environment's own reward is never passed on; it stays visible only in `info["env_reward"]` (for logging;
the training loops do not read it). `info["language_score"]` holds S_t.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, Optional

import gymnasium as gym
import jax
import numpy as np

from understudy.types import UnderstudyError

_MODELS: dict[str, object] = {}  # path -> RewardModel, shared by every env of a process


@dataclasses.dataclass(frozen=True)
class LanguageRewardConfig:
    text: str
    model: str
    scale: float = 1.0
    reward_min: Optional[float] = None
    reward_max: Optional[float] = None
    mode: Literal["score", "difference"] = "score"

    def __post_init__(self):
        if self.mode not in ("difference", "score"):
            raise UnderstudyError(f"--reward-mode must be 'difference' or 'score'; got {self.mode!r}.")
        if self.reward_min is not None and self.reward_max is not None and self.reward_min > self.reward_max:
            raise UnderstudyError(f"--reward-min {self.reward_min} is above --reward-max {self.reward_max}.")
        if not self.text.strip():
            raise UnderstudyError("--reward-text is empty; give the sentence the agent should act out.")


def load_reward_model(path: str):
    if path not in _MODELS:
        from understudy.language.reward_model import RewardModel

        _MODELS[path] = RewardModel.load(path)
    return _MODELS[path]


class LanguageReward(gym.Wrapper):
    def __init__(self, env: gym.Env, cfg: LanguageRewardConfig):
        super().__init__(env)
        self.cfg = cfg
        self.model = load_reward_model(cfg.model)
        fmt = self.model.trajectory
        obs_dim = int(np.prod(env.observation_space.shape))
        discrete = isinstance(env.action_space, gym.spaces.Discrete)
        if obs_dim != fmt.obs_dim or (fmt.num_actions and (not discrete or env.action_space.n != fmt.num_actions)) \
                or (not fmt.num_actions and (discrete or int(np.prod(env.action_space.shape)) != fmt.action_dim)):
            raise UnderstudyError(
                f"The reward model {cfg.model} was trained on trajectories with {fmt.obs_dim}-dim states and "
                f"{f'{fmt.num_actions} discrete actions' if fmt.num_actions else f'{fmt.action_dim}-dim actions'}, "
                f"which does not fit this environment (observations {env.observation_space}, actions "
                f"{env.action_space}). Use a reward model trained on this environment's trajectories.")
        unknown = self.model._tokenizer.unknown_words(cfg.text) if self.model._tokenizer is not None else []
        if unknown:
            import warnings

            warnings.warn(f"--reward-text has words the reward model never saw in training ({', '.join(unknown)}); "
                          "they are read as unknown tokens.", stacklevel=2)
        self._text = tuple(jax.device_put(x) for x in self.model.encode_text([cfg.text]))
        self._states: list[np.ndarray] = []
        self._actions: list = []
        self._score = 0.0

    def _current_score(self) -> float:
        s, a, v = self.model.trajectory.featurize(np.asarray(self._states), np.asarray(self._actions))
        return float(self.model.scores_from_features(s[None], a[None], v[None], *self._text)[0])

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._states, self._actions = [np.asarray(obs, np.float32).reshape(-1)], []
        self._score = self._current_score()
        return obs, info

    def step(self, action):
        obs, env_reward, terminated, truncated, info = self.env.step(action)
        self._states.append(np.asarray(obs, np.float32).reshape(-1))
        self._actions.append(action)
        score = self._current_score()
        reward = self.cfg.scale * (score - self._score if self.cfg.mode == "difference" else score)
        if self.cfg.reward_min is not None or self.cfg.reward_max is not None:
            reward = float(np.clip(reward, self.cfg.reward_min, self.cfg.reward_max))
        self._score = score
        info = dict(info, env_reward=env_reward, language_score=score)
        return obs, float(reward), terminated, truncated, info
