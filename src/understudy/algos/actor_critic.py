"""Actor-critic on whole episodes: a policy and a value network, with TD(lambda) advantages.

The advantage is the generalized advantage estimate A_t = sum_k (gamma lam)^k delta_{t+k} of the one-step
TD errors delta_t = r_t + gamma (1 - term_t) V(s'_t) - V(s_t); `gae_lambda` 0 gives note 001's one-step
actor-critic (A = r + gamma V(s') - V(s)), larger values trade bias for variance towards REINFORCE with a
baseline. The value network regresses on A_t + V(s_t) (the TD(lambda) return). Time-limit truncations
bootstrap from V of the last next observation; true terminations do not.

Everything else (episode batches, note 001's length bonus, annealed gradient weight and replay of past
episodes, heads, acting, export) is shared with `reinforce.py`.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax

from understudy.algos import reinforce
from understudy.algos.reinforce import State, act, explore, horizon, policy_export  # noqa: F401 (the contract)
from understudy.types import Batch, EnvSpec, UnderstudyError


@dataclasses.dataclass(frozen=True)
class Config:
    """Actor-critic settings (note 001's options: `length_bonus`, `anneal_gradient_weight`, `replay_trajectories`)."""

    gae_lambda: float = 0.95
    """TD(lambda) mixing of the advantage: 0 is the one-step TD error, 1 the bootstrapped Monte-Carlo return."""
    hidden_dims: tuple[int, ...] = (64, 64)
    """Hidden layer widths of the policy and of the value network."""
    episodes_per_iteration: int = 8
    """Whole episodes collected per seed before each update."""
    gamma: float = 0.99
    """Discount factor."""
    lr: float = 1e-3
    """Adam learning rate of the policy."""
    value_lr: float = 1e-3
    """Adam learning rate of the value network."""
    value_updates: int = 10
    """Full-batch gradient steps on the value network per update."""
    normalize_advantages: bool = True
    """Standardize advantages over the real steps of each update."""
    entropy_coef: float = 0.0
    """Weight of the policy-entropy bonus in the policy loss."""
    max_grad_norm: Optional[float] = 1.0
    """Clip each network's gradient to this global norm; None disables clipping."""
    reward_scale: float = 1.0
    """Multiply environment rewards by this before computing advantages (e.g. 0.1 for Pendulum's large costs)."""
    length_bonus: float = 0.0
    """Note 001: add this times the remaining episode length (T - t, t from 0) to each step's reward; 0 disables."""
    anneal_gradient_weight: bool = False
    """Note 001: scale each policy step by alpha = sqrt(1 / (1 + env_steps / gradient_weight_scale)) (the Adam step,
    since Adam would cancel a scale on the gradient)."""
    gradient_weight_scale: float = 1000.0
    """Env steps over which the annealed gradient weight falls to 1/sqrt(2)."""
    replay_trajectories: int = 0
    """Note 001: re-train on this many random past episodes per update (the note uses 10); 0 disables."""
    replay_capacity: int = 100
    """Past episodes kept (per seed) for `replay_trajectories`, oldest replaced first."""
    state_dependent_std: bool = False
    """Gaussian policies: a log-std per state (True) or one learned log-std vector (False, usual for PG methods)."""
    log_std_min: float = -5.0
    """Lower bound of the Gaussian policy's log standard deviation."""
    log_std_max: float = 2.0
    """Upper bound of the Gaussian policy's log standard deviation."""
    max_episode_steps: int = 1000
    """Horizon for environments without their own time limit (episodes are cut there and count as truncated)."""


def td_lambda_advantages(cfg: Config, rewards, values, next_values, batch: Batch):
    """(GAE advantages, TD(lambda) value targets), both [N, T]."""
    advantages = reinforce.gae_advantages(rewards, values, next_values, batch.terminations, batch.mask, cfg.gamma,
                                          cfg.gae_lambda)
    return advantages, (advantages + values) * batch.mask


def init(cfg: Config, spec: EnvSpec, key: jax.Array) -> State:
    reinforce.check_config(cfg, "actor-critic")
    if not 0.0 <= cfg.gae_lambda <= 1.0:
        raise UnderstudyError(f"actor-critic --gae-lambda must lie in [0, 1], got {cfg.gae_lambda}.")
    return reinforce.init_state(cfg, spec, key)


def update(cfg: Config, state: State, batch: Batch) -> tuple[State, dict[str, jax.Array]]:
    """One policy-gradient step and `value_updates` value steps on M padded episodes: leaves [M, T, ...]."""
    return reinforce.policy_gradient_update(cfg, state, batch, td_lambda_advantages)


def method_name(cfg: Config) -> str:
    return "actor-critic"
