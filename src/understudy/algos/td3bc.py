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
import functools
from typing import Any

import flax.struct as struct
import jax
import jax.numpy as jnp
import optax

from understudy.algos import losses
from understudy.algos.td3 import smoothed_target_action
from understudy.nets.critics import EnsembleQ
from understudy.nets.heads import head_config, make_head
from understudy.types import Batch, EnvSpec, UnderstudyError

ACTOR_HEAD = "mse"


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


class State(struct.PyTreeNode):
    """Everything an update changes. `action_dim` is static (it shapes the networks)."""

    actor_params: Any
    critic_params: Any
    target_actor_params: Any
    target_critic_params: Any
    actor_opt_state: Any
    critic_opt_state: Any
    rng: jax.Array
    step: jax.Array  # int32 scalar, number of (critic) updates done
    action_dim: int = struct.field(pytree_node=False, default=1)


def _actor(cfg: Config, action_dim: int):
    return make_head(ACTOR_HEAD, action_dim=action_dim, hidden_dims=cfg.hidden_dims)


def _critic(cfg: Config) -> EnsembleQ:
    return EnsembleQ(hidden_dims=cfg.hidden_dims, num_qs=cfg.num_critics)


def _optimizers(cfg: Config):
    return optax.adam(cfg.actor_lr), optax.adam(cfg.critic_lr)


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
    return _init_state(cfg, spec.obs_dim, spec.action_dim, key)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _init_state(cfg: Config, obs_dim: int, action_dim: int, key: jax.Array) -> State:
    # Jitted: initializing op by op dispatches hundreds of tiny computations (seconds on CPU).
    obs = jnp.zeros((1, obs_dim), jnp.float32)
    action = jnp.zeros((1, action_dim), jnp.float32)
    key, actor_key, critic_key = jax.random.split(key, 3)
    actor_params = _actor(cfg, action_dim).init(actor_key, obs)
    critic_params = _critic(cfg).init(critic_key, obs, action)
    actor_opt, critic_opt = _optimizers(cfg)
    return State(actor_params=actor_params, critic_params=critic_params, target_actor_params=actor_params,
                 target_critic_params=critic_params, actor_opt_state=actor_opt.init(actor_params),
                 critic_opt_state=critic_opt.init(critic_params), rng=key, step=jnp.zeros((), jnp.int32),
                 action_dim=action_dim)


def update(cfg: Config, state: State, batch: Batch) -> tuple[State, dict[str, jax.Array]]:
    actor, critic = _actor(cfg, state.action_dim), _critic(cfg)
    actor_opt, critic_opt = _optimizers(cfg)
    rng, noise_key = jax.random.split(state.rng)

    # Critics: TD3's target r + gamma min_i Q'_i(s', smoothed target action).
    target_action = actor.apply(state.target_actor_params, batch.next_observations)
    noise = cfg.policy_noise * jax.random.normal(noise_key, target_action.shape)
    next_action = smoothed_target_action(target_action, noise, cfg.noise_clip)
    next_q = critic.apply(state.target_critic_params, batch.next_observations, next_action).min(axis=0)
    target = losses.td_target(batch.rewards, batch.terminations, next_q, cfg.gamma)

    def critic_loss_fn(params):
        q = critic.apply(params, batch.observations, batch.actions)
        return losses.sac_critic_loss(q, target), q  # CORL: mse(q1) + mse(q2)

    (critic_loss, q), critic_grads = jax.value_and_grad(critic_loss_fn, has_aux=True)(state.critic_params)
    critic_updates, critic_opt_state = critic_opt.update(critic_grads, state.critic_opt_state, state.critic_params)
    critic_params = optax.apply_updates(state.critic_params, critic_updates)

    # Delayed actor: lambda-scaled Q of the first (freshly updated) critic plus MSE to the data's actions.
    def actor_loss_fn(params):
        pi = actor.apply(params, batch.observations)
        q_pi = critic.apply(critic_params, batch.observations, pi)[0]
        return losses.td3bc_actor_loss(q_pi, pi, batch.actions, cfg.alpha), (q_pi, pi)

    def actor_step(_):
        (actor_loss, aux), grads = jax.value_and_grad(actor_loss_fn, has_aux=True)(state.actor_params)
        updates, actor_opt_state = actor_opt.update(grads, state.actor_opt_state, state.actor_params)
        actor_params = optax.apply_updates(state.actor_params, updates)
        return (actor_params, actor_opt_state,
                optax.incremental_update(actor_params, state.target_actor_params, cfg.tau),
                optax.incremental_update(critic_params, state.target_critic_params, cfg.tau),
                actor_loss, aux)

    def no_actor_step(_):
        # The loss is still reported (a forward pass), so interval means of every metric stay finite.
        actor_loss, aux = actor_loss_fn(state.actor_params)
        return (state.actor_params, state.actor_opt_state, state.target_actor_params, state.target_critic_params,
                actor_loss, aux)

    # Actor steps on updates number policy_frequency, 2 policy_frequency, ... (1-based), as CORL's total_it.
    is_actor_step = (state.step + 1) % cfg.policy_frequency == 0
    actor_params, actor_opt_state, target_actor_params, target_critic_params, actor_loss, (q_pi, pi) = jax.lax.cond(
        is_actor_step, actor_step, no_actor_step, None)

    new_state = state.replace(actor_params=actor_params, critic_params=critic_params,
                              target_actor_params=target_actor_params, target_critic_params=target_critic_params,
                              actor_opt_state=actor_opt_state, critic_opt_state=critic_opt_state, rng=rng,
                              step=state.step + 1)
    metrics = {"critic_loss": critic_loss, "actor_loss": actor_loss, "q_mean": jnp.mean(q),
               "target_mean": jnp.mean(target), "lambda": cfg.alpha / jnp.mean(jnp.abs(q_pi)),
               "bc_mse": jnp.mean(jnp.square(pi - batch.actions)), "actor_step": is_actor_step.astype(jnp.float32)}
    return new_state, metrics


def act(cfg: Config, state: State, obs: jax.Array, key: jax.Array, deterministic: bool) -> jax.Array:
    """Normalized actions [B, A] for (normalized) observations [B, obs_dim]. `deterministic` is a Python bool.

    deterministic=False adds N(0, exploration_noise^2) to the actor's action and clips to [-1, 1].
    """
    action = _actor(cfg, state.action_dim).apply(state.actor_params, obs, method="mode")
    if deterministic:
        return action
    noise = cfg.exploration_noise * jax.random.normal(key, action.shape)
    return jnp.clip(action + noise, -1.0, 1.0)


def policy_export(cfg: Config, state: State) -> tuple[dict, Any]:
    """(head_config dict, actor variables) — `make_head(**config).apply(variables, obs, method=...)` acts."""
    return head_config(ACTOR_HEAD, state.action_dim, cfg.hidden_dims), state.actor_params
