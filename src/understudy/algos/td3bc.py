"""TD3+BC (Fujimoto & Gu 2021): TD3 whose actor also regresses on the dataset's actions, as in CORL's td3_bc.py.

The actor maximizes lambda Q(s, pi(s)) - (pi(s) - a)^2 with lambda = alpha / mean |Q| (see
`losses.td3bc_actor_loss`); everything else is TD3: twin critics on the minimum of the target critics at a
smoothed target action, an actor step (and Polyak target updates) every `policy_frequency` critic steps.

Actions are in the normalized box [-1, 1]^A (the offline loop rescales the dataset's actions and the policy's),
so noise scales are fractions of the half-range, which is CORL's `policy_noise * max_action`. Observations
arrive standardized when `normalize_observations` is on (CORL's `normalize`): the offline loop fits the
normalizer on the dataset and stores it with the policy export.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from understudy.algos import losses
from understudy.algos import td3
from understudy.nets.critics import ensemble_member_q
from understudy.types import Batch, EnvSpec, UnderstudyError

ACTOR_HEAD = td3.ACTOR_HEAD


@dataclasses.dataclass(frozen=True)
class Config:
    """TD3+BC settings (defaults follow CORL's td3_bc.py, which follows the paper)."""

    alpha: float = 2.5
    """Weight of the Q term against behaviour cloning: lambda = alpha / mean |Q| (0 is pure BC)."""
    hidden_dims: tuple[int, ...] = (256, 256)
    """Hidden layer widths of the actor and of each critic."""
    batch_size: int = 256
    """Transitions per gradient update."""
    gamma: float = 0.99
    """Discount factor."""
    tau: float = 0.005
    """Polyak averaging rate of the target actor and critics, applied on actor steps."""
    actor_lr: float = 3e-4
    """Adam learning rate of the actor."""
    critic_lr: float = 3e-4
    """Adam learning rate of the critics."""
    policy_frequency: int = 2
    """Update the actor and the targets once every this many critic updates (TD3's delay)."""
    policy_noise: float = 0.2
    """Std of the Gaussian noise added to the target actor's action (target policy smoothing)."""
    noise_clip: float = 0.5
    """Clip the target smoothing noise to [-noise_clip, noise_clip]."""
    exploration_noise: float = 0.1
    """Std of the Gaussian noise added to the actor's action when acting with deterministic=False (CORL's expl_noise)."""
    num_critics: int = 2
    """Critics in the ensemble; targets use their minimum, the actor ascends the first one (as TD3)."""
    normalize_observations: bool = True
    """Standardize observations with dataset mean/std (applied by the training loop, saved in the export)."""


# TD3's state, networks and optimizers: TD3+BC differs only in the actor loss (and has no environment).
State = td3.State
_actor, _critic = td3._actor, td3._critic


# -- the contract ----------------------------------------------------------------------------------
def init(cfg: Config, spec: EnvSpec, key: jax.Array) -> State:
    if spec.discrete:
        raise UnderstudyError(f"TD3+BC needs continuous actions, but {spec.env_id} has {spec.num_actions} discrete "
                              "actions. Use bc --head categorical for discrete-action datasets.")
    if cfg.num_critics < 1:
        raise UnderstudyError(f"TD3+BC --num-critics must be >= 1, got {cfg.num_critics}.")
    if cfg.policy_frequency < 1:
        raise UnderstudyError(f"TD3+BC --policy-frequency must be >= 1 (1 updates the actor every step), "
                              f"got {cfg.policy_frequency}.")
    if cfg.alpha < 0:
        raise UnderstudyError(f"TD3+BC --alpha must be >= 0 (0 is pure behaviour cloning), got {cfg.alpha}.")
    return td3._init_state(cfg, spec.obs_dim, spec.action_dim, key)


def update(cfg: Config, state: State, batch: Batch) -> tuple[State, dict[str, jax.Array]]:
    state, critic_metrics = td3.critic_update(cfg, state, batch)  # CORL: mse(q1) + mse(q2)
    actor, critic = _actor(cfg, state.action_dim), _critic(cfg)

    # Delayed actor: lambda-scaled Q of the first (freshly updated) critic plus MSE to the data's actions.
    def actor_loss_fn(params):
        pi = actor.apply(params, batch.observations)
        q_pi = ensemble_member_q(critic, state.critic_params, 0, batch.observations, pi)
        return losses.td3bc_actor_loss(q_pi, pi, batch.actions, cfg.alpha), {
            "lambda": cfg.alpha / jnp.mean(jnp.abs(q_pi)), "bc_mse": jnp.mean(jnp.square(pi - batch.actions))}

    # lambda and bc_mse, like actor_loss, are 0 on updates without an actor step (see td3.delayed_actor_update)
    state, actor_loss, actor_metrics, is_actor_step = td3.delayed_actor_update(cfg, state, actor_loss_fn)
    metrics = {"critic_loss": critic_metrics["critic_loss"], "actor_loss": actor_loss,
               "q_mean": critic_metrics["q_mean"], "target_mean": critic_metrics["target_mean"],
               **actor_metrics, "actor_step": is_actor_step.astype(jnp.float32)}
    return state, metrics


act = td3.act  # deterministic=False adds N(0, exploration_noise^2) to the actor's action (CORL's expl_noise)
policy_export = td3.policy_export
