"""Implicit Q-learning (Kostrikov et al. 2021), as in CORL's iql.py.

IQL never evaluates Q at actions outside the dataset. Each update, in CORL's order:
  1. V(s) regresses on min_i Q'_i(s, a) (target critics, dataset actions) with the expectile loss
     (`losses.expectile_loss`, tau = 0.7), so V approaches an upper expectile of Q over the data's actions;
  2. the twin critics regress on r + gamma (1 - done) V(s'), with V from before step 1;
  3. the actor does advantage-weighted regression on the dataset's actions, weights
     min(exp(beta (Q'(s, a) - V(s))), 100), with the advantage from before step 1.
The target critics follow the critics by Polyak averaging every update; the actor's learning rate decays on
a cosine schedule (CORL's CosineAnnealingLR over the whole run).

The actor is CORL's Gaussian policy with one learned log-std vector shared by all states (the "gaussian"
head with state_dependent_std=False, log-std in [-20, 2]); greedy actions are its clipped mean. One
difference: CORL squashes the mean with tanh, while this head's mean is linear and clipped to [-1, 1] when
acting (the likelihood of dataset actions, which lie inside the box, is what both maximize).
`deterministic_actor` switches to CORL's deterministic policy (the tanh "mse" head, weighted squared error).

Actions are in [-1, 1]^A and observations arrive standardized when `normalize_observations` is on (the
offline loop fits the normalizer and stores it with the policy export).
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
from understudy.nets.critics import EnsembleQ
from understudy.nets.heads import head_config, make_head
from understudy.nets.mlp import MLP
from understudy.types import Batch, EnvSpec, UnderstudyError

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # CORL's clamp of the Gaussian policy's log-std


@dataclasses.dataclass(frozen=True)
class Config:
    """IQL settings (defaults follow CORL's iql.py and its locomotion configs)."""

    expectile: float = 0.7
    """Expectile tau of the value loss (CORL's iql_tau): 0.5 is SARSA-like mean regression, -> 1 approaches max_a Q."""
    beta: float = 3.0
    """Inverse temperature of the advantage weights exp(beta A): small -> behaviour cloning, large -> greedy on Q."""
    max_weight: float = 100.0
    """Clip the advantage weights exp(beta A) at this value (CORL's EXP_ADV_MAX)."""
    deterministic_actor: bool = False
    """Use a deterministic tanh actor trained by weighted squared error (CORL's iql_deterministic) instead of the Gaussian."""
    hidden_dims: tuple[int, ...] = (256, 256)
    """Hidden layer widths of the actor, each critic and the value network."""
    batch_size: int = 256
    """Transitions per gradient update."""
    gamma: float = 0.99
    """Discount factor."""
    tau: float = 0.005
    """Polyak averaging rate of the target critics, every update."""
    actor_lr: float = 3e-4
    """Initial Adam learning rate of the actor (decayed to 0 by a cosine schedule over `actor_lr_decay_steps`)."""
    actor_lr_decay_steps: int = 1_000_000
    """Updates over which the actor's learning rate decays to 0 (CORL: the run's max_timesteps, 1M). Set it to --steps for shorter runs."""
    critic_lr: float = 3e-4
    """Adam learning rate of the critics (CORL's qf_lr)."""
    value_lr: float = 3e-4
    """Adam learning rate of the value network (CORL's vf_lr)."""
    num_critics: int = 2
    """Critics in the ensemble; V's target and the advantage use the minimum of the target critics."""
    dataset_reward_scale: float = 1.0
    """Multiply dataset rewards by this inside the update (CORL's normalize_reward for hopper-medium scales by 1000 / (max return - min return))."""
    dataset_reward_bias: float = 0.0
    """Add this to the scaled rewards inside the update (CORL uses -1 for AntMaze)."""
    normalize_reward_by_returns: bool = False
    """Set the reward scale to 1000 / (max - min episode return), measured on the dataset when training starts: the IQL paper's and CORL's setting for MuJoCo locomotion (1000 = its episode limit), which `understudy study offline-locomotion` passes. Off by default: on narrow expert-only data the spread is small and the scale large. Replaces --dataset-reward-scale."""
    normalize_observations: bool = True
    """Standardize observations with dataset mean/std (applied by the training loop, saved in the export)."""


class State(struct.PyTreeNode):
    """Everything an update changes. `action_dim` is static (it shapes the networks)."""

    actor_params: Any
    critic_params: Any
    target_critic_params: Any
    value_params: Any
    actor_opt_state: Any
    critic_opt_state: Any
    value_opt_state: Any
    rng: jax.Array
    step: jax.Array  # int32 scalar, number of updates done
    action_dim: int = struct.field(pytree_node=False, default=1)


# -- networks and optimizers, rebuilt from the config (cheap Python, traced once) ---------------------
def _actor_head(cfg: Config) -> tuple[str, dict]:
    if cfg.deterministic_actor:
        return "mse", {}
    return "gaussian", {"state_dependent_std": False, "log_std_min": LOG_STD_MIN, "log_std_max": LOG_STD_MAX}


def _actor(cfg: Config, action_dim: int):
    name, kwargs = _actor_head(cfg)
    return make_head(name, action_dim=action_dim, hidden_dims=cfg.hidden_dims, **kwargs)


def _critic(cfg: Config) -> EnsembleQ:
    return EnsembleQ(hidden_dims=cfg.hidden_dims, num_qs=cfg.num_critics)


def _value(cfg: Config) -> MLP:
    return MLP(cfg.hidden_dims, output_dim=1)  # V(s): [B, D] -> [B, 1]


def _optimizers(cfg: Config):
    schedule = optax.cosine_decay_schedule(cfg.actor_lr, decay_steps=cfg.actor_lr_decay_steps)
    return optax.adam(schedule), optax.adam(cfg.critic_lr), optax.adam(cfg.value_lr)


def advantage_weights(advantage: jax.Array, beta: float, max_weight: float) -> jax.Array:
    """min(exp(beta A), max_weight), elementwise and without gradient: the actor's regression weights."""
    return jax.lax.stop_gradient(jnp.minimum(jnp.exp(beta * advantage), max_weight))


# -- the contract ----------------------------------------------------------------------------------
def init(cfg: Config, spec: EnvSpec, key: jax.Array) -> State:
    if spec.discrete:
        raise UnderstudyError(f"IQL needs continuous actions, but {spec.env_id} has {spec.num_actions} discrete "
                              "actions. Use bc --head categorical for discrete-action datasets.")
    if not 0.0 < cfg.expectile < 1.0:
        raise UnderstudyError(f"IQL --expectile must lie in (0, 1) (CORL uses 0.7), got {cfg.expectile}.")
    if cfg.num_critics < 1:
        raise UnderstudyError(f"IQL --num-critics must be >= 1, got {cfg.num_critics}.")
    if cfg.actor_lr_decay_steps < 1:
        raise UnderstudyError(f"IQL --actor-lr-decay-steps must be >= 1 (e.g. the run's --steps), "
                              f"got {cfg.actor_lr_decay_steps}.")
    return _init_state(cfg, spec.obs_dim, spec.action_dim, key)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _init_state(cfg: Config, obs_dim: int, action_dim: int, key: jax.Array) -> State:
    # Jitted: initializing op by op dispatches hundreds of tiny computations (seconds on CPU).
    obs = jnp.zeros((1, obs_dim), jnp.float32)
    action = jnp.zeros((1, action_dim), jnp.float32)
    key, actor_key, critic_key, value_key = jax.random.split(key, 4)
    actor_params = _actor(cfg, action_dim).init(actor_key, obs)
    critic_params = _critic(cfg).init(critic_key, obs, action)
    value_params = _value(cfg).init(value_key, obs)
    actor_opt, critic_opt, value_opt = _optimizers(cfg)
    return State(actor_params=actor_params, critic_params=critic_params, target_critic_params=critic_params,
                 value_params=value_params, actor_opt_state=actor_opt.init(actor_params),
                 critic_opt_state=critic_opt.init(critic_params), value_opt_state=value_opt.init(value_params),
                 rng=key, step=jnp.zeros((), jnp.int32), action_dim=action_dim)


def update(cfg: Config, state: State, batch: Batch) -> tuple[State, dict[str, jax.Array]]:
    actor, critic, value = _actor(cfg, state.action_dim), _critic(cfg), _value(cfg)
    actor_opt, critic_opt, value_opt = _optimizers(cfg)
    rewards = batch.rewards * cfg.dataset_reward_scale + cfg.dataset_reward_bias

    # 1. Value: expectile regression on the target critics' Q at the dataset's actions.
    target_q = critic.apply(state.target_critic_params, batch.observations, batch.actions).min(axis=0)
    next_v = value.apply(state.value_params, batch.next_observations)[..., 0]

    def value_loss_fn(params):
        advantage = target_q - value.apply(params, batch.observations)[..., 0]
        return jnp.mean(losses.expectile_loss(advantage, cfg.expectile)), advantage

    (value_loss, advantage), value_grads = jax.value_and_grad(value_loss_fn, has_aux=True)(state.value_params)
    value_updates, value_opt_state = value_opt.update(value_grads, state.value_opt_state, state.value_params)
    value_params = optax.apply_updates(state.value_params, value_updates)

    # 2. Critics: one-step targets through V(s'), averaged over the members as CORL (sum / len(qs)).
    target = losses.td_target(rewards, batch.terminations, next_v, cfg.gamma)

    def critic_loss_fn(params):
        q = critic.apply(params, batch.observations, batch.actions)
        return losses.sac_critic_loss(q, target) / cfg.num_critics, q

    (critic_loss, q), critic_grads = jax.value_and_grad(critic_loss_fn, has_aux=True)(state.critic_params)
    critic_updates, critic_opt_state = critic_opt.update(critic_grads, state.critic_opt_state, state.critic_params)
    critic_params = optax.apply_updates(state.critic_params, critic_updates)
    target_critic_params = optax.incremental_update(critic_params, state.target_critic_params, cfg.tau)

    # 3. Actor: advantage-weighted regression on the dataset's actions.
    weights = advantage_weights(advantage, cfg.beta, cfg.max_weight)

    def actor_loss_fn(params):
        if cfg.deterministic_actor:
            per_example = jnp.sum(jnp.square(actor.apply(params, batch.observations) - batch.actions), axis=-1)
        else:
            per_example = -actor.apply(params, batch.observations, batch.actions, method="log_prob")
        return jnp.mean(weights * per_example)

    actor_loss, actor_grads = jax.value_and_grad(actor_loss_fn)(state.actor_params)
    actor_updates, actor_opt_state = actor_opt.update(actor_grads, state.actor_opt_state, state.actor_params)
    actor_params = optax.apply_updates(state.actor_params, actor_updates)

    new_state = state.replace(actor_params=actor_params, critic_params=critic_params,
                              target_critic_params=target_critic_params, value_params=value_params,
                              actor_opt_state=actor_opt_state, critic_opt_state=critic_opt_state,
                              value_opt_state=value_opt_state, step=state.step + 1)
    metrics = {"value_loss": value_loss, "critic_loss": critic_loss, "actor_loss": actor_loss,
               "q_mean": jnp.mean(q), "v_mean": jnp.mean(target_q - advantage), "advantage_mean": jnp.mean(advantage),
               "weight_mean": jnp.mean(weights),
               "weight_clipped": jnp.mean((weights >= cfg.max_weight).astype(jnp.float32))}
    return new_state, metrics


def act(cfg: Config, state: State, obs: jax.Array, key: jax.Array, deterministic: bool) -> jax.Array:
    """Normalized actions [B, A] in [-1, 1] for (normalized) observations [B, obs_dim].

    `deterministic` is a Python bool: the policy's (clipped) mean, else a sample from the Gaussian
    (the deterministic actor returns its action either way).
    """
    head = _actor(cfg, state.action_dim)
    if deterministic:
        return head.apply(state.actor_params, obs, method="mode")
    return head.apply(state.actor_params, obs, key, method="sample")


def policy_export(cfg: Config, state: State) -> tuple[dict, Any]:
    """(head_config dict, actor variables) — `make_head(**config).apply(variables, obs, method=...)` acts."""
    name, kwargs = _actor_head(cfg)
    return head_config(name, state.action_dim, cfg.hidden_dims, **kwargs), state.actor_params
