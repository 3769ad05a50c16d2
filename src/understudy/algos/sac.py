"""Soft actor-critic (Haarnoja et al. 2018) with twin critics and automatic temperature, as in CleanRL.

Actions are in the normalized box [-1, 1]^A; the training loop rescales them to the env's bounds and
handles random exploration before `learning_starts`, the replay buffer and `updates_per_step`.
One `update` performs one critic step, one actor step, one temperature step and a Polyak target update,
all in one pure function so the loop can scan it K times and vmap it over seeds.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional

import flax.struct as struct
import jax
import jax.numpy as jnp
import optax

from understudy.algos import losses
from understudy.nets.critics import EnsembleQ
from understudy.nets.heads import head_config, make_head
from understudy.types import Batch, EnvSpec, UnderstudyError

ACTOR_HEAD = "tanh-gaussian"
# the State fields `act` reads: training loops pass act only these (train.common.acting_view)
ACT_READS = ("actor_params",)


@dataclasses.dataclass(frozen=True)
class Config:
    """Soft actor-critic settings (defaults follow CleanRL's sac_continuous_action.py)."""

    hidden_dims: tuple[int, ...] = (256, 256)
    """Hidden layer widths of the actor and of each critic."""
    batch_size: int = 256
    """Transitions per gradient update."""
    learning_starts: int = 5000
    """Environment steps taken with uniformly random actions before updates begin."""
    random_action_hold: int = 1
    """Before learning_starts, hold each uniformly random action for this many steps (temporally extended
    exploration, as in Dabney et al. 2021's ez-greedy). 1 = a fresh action every step. MountainCarContinuous
    needs it: one-step random actions never reach the top, actions held 10-50 steps do in most episodes."""
    buffer_size: int = 1_000_000
    """Replay buffer capacity in transitions."""
    updates_per_step: float = 1.0
    """Gradient updates per environment step once learning has started (fractions allowed, e.g. 0.25)."""
    gamma: float = 0.99
    """Discount factor."""
    tau: float = 0.005
    """Polyak averaging rate of the target critics (1.0 copies the online critics)."""
    actor_lr: float = 3e-4
    """Adam learning rate of the actor."""
    critic_lr: float = 1e-3
    """Adam learning rate of the critics."""
    alpha_lr: float = 1e-3
    """Adam learning rate of the log temperature."""
    autotune: bool = True
    """Learn the temperature to keep the policy's entropy near `target_entropy`."""
    init_alpha: float = 1.0
    """Starting temperature when autotuning (CleanRL starts log alpha at 0)."""
    alpha: float = 0.2
    """Fixed temperature when `autotune` is off."""
    target_entropy: Optional[float] = None
    """Entropy target for autotuning; None means -action_dim."""
    num_critics: int = 2
    """Critics in the ensemble; targets and the actor use their minimum."""
    log_std_min: float = -5.0
    """Lower bound of the actor's log standard deviation."""
    log_std_max: float = 2.0
    """Upper bound of the actor's log standard deviation."""


class State(struct.PyTreeNode):
    """Everything an update changes. `action_dim` is static (it shapes the networks)."""

    actor_params: Any
    critic_params: Any
    target_critic_params: Any
    log_alpha: jax.Array  # scalar
    actor_opt_state: Any
    critic_opt_state: Any
    alpha_opt_state: Any
    rng: jax.Array
    step: jax.Array  # int32 scalar, number of updates done
    action_dim: int = struct.field(pytree_node=False, default=1)


# -- networks and optimizers, rebuilt from the config (cheap Python, traced once); public for seeded SAC ----
def _actor_kwargs(cfg: Config) -> dict:
    return {"log_std_min": cfg.log_std_min, "log_std_max": cfg.log_std_max}


def actor_network(cfg: Config, action_dim: int):
    return make_head(ACTOR_HEAD, action_dim=action_dim, hidden_dims=cfg.hidden_dims, **_actor_kwargs(cfg))


def critic_network(cfg: Config) -> EnsembleQ:
    return EnsembleQ(hidden_dims=cfg.hidden_dims, num_qs=cfg.num_critics)


def optimizers(cfg: Config):
    return optax.adam(cfg.actor_lr), optax.adam(cfg.critic_lr), optax.adam(cfg.alpha_lr)


def _target_entropy(cfg: Config, action_dim: int) -> float:
    return -float(action_dim) if cfg.target_entropy is None else float(cfg.target_entropy)


# -- the contract ----------------------------------------------------------------------------------
def init(cfg: Config, spec: EnvSpec, key: jax.Array) -> State:
    if spec.discrete:
        raise UnderstudyError(f"SAC needs continuous actions, but {spec.env_id} has {spec.num_actions} discrete "
                              "actions. Use a discrete-action algorithm (dqn, ppo) or a Box-action environment.")
    if cfg.num_critics < 1:
        raise UnderstudyError(f"SAC --num-critics must be >= 1, got {cfg.num_critics}.")
    if cfg.random_action_hold < 1:
        raise UnderstudyError(f"SAC --random-action-hold must be >= 1 (1 draws a new random action every step), "
                              f"got {cfg.random_action_hold}.")
    return _init_state(cfg, spec.obs_dim, spec.action_dim, key)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _init_state(cfg: Config, obs_dim: int, action_dim: int, key: jax.Array) -> State:
    # Jitted: initializing op by op dispatches hundreds of tiny computations (seconds on CPU).
    obs = jnp.zeros((1, obs_dim), jnp.float32)
    action = jnp.zeros((1, action_dim), jnp.float32)
    key, actor_key, critic_key = jax.random.split(key, 3)
    actor_params = actor_network(cfg, action_dim).init(actor_key, obs)
    critic_params = critic_network(cfg).init(critic_key, obs, action)
    log_alpha = jnp.asarray(jnp.log(cfg.init_alpha if cfg.autotune else cfg.alpha), jnp.float32)
    actor_opt, critic_opt, alpha_opt = optimizers(cfg)
    return State(actor_params=actor_params, critic_params=critic_params, target_critic_params=critic_params,
                 log_alpha=log_alpha, actor_opt_state=actor_opt.init(actor_params),
                 critic_opt_state=critic_opt.init(critic_params), alpha_opt_state=alpha_opt.init(log_alpha),
                 rng=key, step=jnp.zeros((), jnp.int32), action_dim=action_dim)


def update(cfg: Config, state: State, batch: Batch) -> tuple[State, dict[str, jax.Array]]:
    actor, critic = actor_network(cfg, state.action_dim), critic_network(cfg)
    actor_opt, critic_opt, alpha_opt = optimizers(cfg)
    rng, next_key, pi_key = jax.random.split(state.rng, 3)
    alpha = jnp.exp(state.log_alpha)

    # Critic: regress every member on the soft target built from the minimum of the target critics.
    next_action, next_log_prob = actor.apply(state.actor_params, batch.next_observations, next_key,
                                             method="sample_and_log_prob")
    next_q = critic.apply(state.target_critic_params, batch.next_observations, next_action).min(axis=0)
    target = losses.soft_td_target(batch.rewards, batch.terminations, next_q, next_log_prob, alpha, cfg.gamma)

    def critic_loss_fn(params):
        q = critic.apply(params, batch.observations, batch.actions)
        return losses.sac_critic_loss(q, target), q

    (critic_loss, q), critic_grads = jax.value_and_grad(critic_loss_fn, has_aux=True)(state.critic_params)
    critic_updates, critic_opt_state = critic_opt.update(critic_grads, state.critic_opt_state, state.critic_params)
    critic_params = optax.apply_updates(state.critic_params, critic_updates)

    # Actor: maximize min-Q of a reparameterized sample plus entropy, against the freshly updated critics.
    def actor_loss_fn(params):
        action, log_prob = actor.apply(params, batch.observations, pi_key, method="sample_and_log_prob")
        q_pi = critic.apply(critic_params, batch.observations, action).min(axis=0)
        return losses.sac_actor_loss(log_prob, q_pi, alpha), log_prob

    (actor_loss, log_prob), actor_grads = jax.value_and_grad(actor_loss_fn, has_aux=True)(state.actor_params)
    actor_updates, actor_opt_state = actor_opt.update(actor_grads, state.actor_opt_state, state.actor_params)
    actor_params = optax.apply_updates(state.actor_params, actor_updates)

    # Temperature: move entropy toward the target (skipped when the temperature is fixed).
    target_entropy = _target_entropy(cfg, state.action_dim)
    alpha_loss, alpha_grad = jax.value_and_grad(losses.temperature_loss)(state.log_alpha, log_prob, target_entropy)
    if cfg.autotune:
        alpha_update, alpha_opt_state = alpha_opt.update(alpha_grad, state.alpha_opt_state, state.log_alpha)
        log_alpha = optax.apply_updates(state.log_alpha, alpha_update)
    else:
        alpha_opt_state, log_alpha = state.alpha_opt_state, state.log_alpha

    target_critic_params = optax.incremental_update(critic_params, state.target_critic_params, cfg.tau)
    new_state = state.replace(actor_params=actor_params, critic_params=critic_params,
                              target_critic_params=target_critic_params, log_alpha=log_alpha,
                              actor_opt_state=actor_opt_state, critic_opt_state=critic_opt_state,
                              alpha_opt_state=alpha_opt_state, rng=rng, step=state.step + 1)
    metrics = {"critic_loss": critic_loss, "actor_loss": actor_loss, "alpha_loss": alpha_loss, "alpha": alpha,
               "entropy": -jnp.mean(log_prob), "q_mean": jnp.mean(q), "target_mean": jnp.mean(target)}
    return new_state, metrics


def act(cfg: Config, state: State, obs: jax.Array, key: jax.Array, deterministic: bool) -> jax.Array:
    """Normalized actions [B, A] for observations [B, obs_dim]. `deterministic` is a Python bool (tanh(mean))."""
    actor = actor_network(cfg, state.action_dim)
    if deterministic:
        return actor.apply(state.actor_params, obs, method="mode")
    return actor.apply(state.actor_params, obs, key, method="sample")


def policy_export(cfg: Config, state: State) -> tuple[dict, Any]:
    """(head_config dict, actor variables) — `make_head(**config).apply(variables, obs, method=...)` acts."""
    return head_config(ACTOR_HEAD, state.action_dim, cfg.hidden_dims, **_actor_kwargs(cfg)), state.actor_params
