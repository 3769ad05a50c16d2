"""Twin delayed DDPG (Fujimoto et al. 2018), as in CleanRL's td3_continuous_action.py.

Actions are in the normalized box [-1, 1]^A; the training loop rescales them to the env's bounds and
handles random exploration before `learning_starts`, the replay buffer and `updates_per_step`. Noise scales
are therefore fractions of the action half-range, which is CleanRL's `action_scale` convention.

The actor is the "mse" head (a deterministic tanh policy), so its export is an ordinary policy export.
One `update` performs one twin-critic step and, every `policy_frequency`-th update (counted by
`state.step`), one actor step and the Polyak updates of the target actor and critics. The delay is a
`lax.cond` inside the pure update, so the loop can scan it K times and vmap it over seeds (the loops keep
the update counter out of the vmap, `train.common.vmapped_update`, so the cond stays a real branch). Updates
without an actor step compute nothing for the actor: their actor metrics are 0 and the `actor_step` metric
marks which updates carry them (`train.common.mean_metrics` averages them over actor steps only).
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
from understudy.nets.critics import EnsembleQ, ensemble_member_q
from understudy.nets.heads import head_config, make_head
from understudy.types import Batch, EnvSpec, UnderstudyError

ACTOR_HEAD = "mse"
# the State fields `act` reads: training loops pass act only these (train.common.acting_view)
ACT_READS = ("actor_params",)


@dataclasses.dataclass(frozen=True)
class Config:
    """TD3 settings (defaults follow CleanRL's td3_continuous_action.py)."""

    hidden_dims: tuple[int, ...] = (256, 256)
    """Hidden layer widths of the actor and of each critic."""
    batch_size: int = 256
    """Transitions per gradient update."""
    learning_starts: int = 25_000
    """Environment steps taken with uniformly random actions before updates begin."""
    random_action_hold: int = 1
    """Before learning_starts, hold each uniformly random action for this many steps (temporally extended
    exploration, as in Dabney et al. 2021's ez-greedy). 1 = a fresh action every step. MountainCarContinuous
    needs it: one-step random actions never reach the top, actions held 10-50 steps do in most episodes."""
    buffer_size: int = 1_000_000
    """Replay buffer capacity in transitions."""
    updates_per_step: float = 1.0
    """Gradient updates (critic steps) per environment step once learning has started (fractions allowed)."""
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
    """Std of the Gaussian noise added to the actor's action when acting with deterministic=False."""
    num_critics: int = 2
    """Critics in the ensemble; targets use their minimum, the actor ascends the first one (as TD3)."""


# Named alternatives to the defaults, for `understudy train td3 --preset NAME`.
PRESETS: dict[str, Config] = {
    "cleanrl": Config(),
    # CPU preset. The per-update cost is unchanged (256-256 networks and batch 256 are what the published
    # returns rest on), so the saving is in environment steps: CleanRL spends its first 25k steps on
    # uniformly random actions, which is 2.5% of a 1M-step GPU run but most of the 20k-100k-step runs one
    # affords on a laptop CPU. Starting updates after 5k steps (CleanRL's SAC value; SB3's TD3 starts after
    # 100) makes short runs learn from their first minutes: TD3 solves Pendulum-v1 (>= -200) in ~20k steps.
    "cpu": Config(learning_starts=5_000),
}


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


# -- networks and optimizers, rebuilt from the config (cheap Python, traced once) ---------------------
def _actor(cfg: Config, action_dim: int):
    return make_head(ACTOR_HEAD, action_dim=action_dim, hidden_dims=cfg.hidden_dims)


def _critic(cfg: Config) -> EnsembleQ:
    return EnsembleQ(hidden_dims=cfg.hidden_dims, num_qs=cfg.num_critics)


def _optimizers(cfg: Config):
    return optax.adam(cfg.actor_lr), optax.adam(cfg.critic_lr)


def smoothed_target_action(target_action: jax.Array, noise: jax.Array, noise_clip: float) -> jax.Array:
    """TD3's target policy smoothing: clip(a' + clip(noise, -c, c), -1, 1) for a' and noise [B, A]."""
    if target_action.shape != noise.shape:
        raise ValueError(f"target_action has shape {target_action.shape} but noise has shape {noise.shape}.")
    return jnp.clip(target_action + jnp.clip(noise, -noise_clip, noise_clip), -1.0, 1.0)


# -- the contract ----------------------------------------------------------------------------------
def init(cfg: Config, spec: EnvSpec, key: jax.Array) -> State:
    if spec.discrete:
        raise UnderstudyError(f"TD3 needs continuous actions, but {spec.env_id} has {spec.num_actions} discrete "
                              "actions. Use a discrete-action algorithm (dqn, ppo) or a Box-action environment.")
    if cfg.num_critics < 1:
        raise UnderstudyError(f"TD3 --num-critics must be >= 1, got {cfg.num_critics}.")
    if cfg.random_action_hold < 1:
        raise UnderstudyError(f"TD3 --random-action-hold must be >= 1 (1 draws a new random action every step), "
                              f"got {cfg.random_action_hold}.")
    if cfg.policy_frequency < 1:
        raise UnderstudyError(f"TD3 --policy-frequency must be >= 1 (1 updates the actor every step), "
                              f"got {cfg.policy_frequency}.")
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


def critic_update(cfg: Config, state: State, batch: Batch) -> tuple[State, dict[str, jax.Array]]:
    """TD3's critic step: regress every member on r + gamma min_i Q'_i(s', smoothed target action).
    Shared with TD3+BC (any config with TD3's fields)."""
    actor, critic = _actor(cfg, state.action_dim), _critic(cfg)
    _, critic_opt = _optimizers(cfg)
    rng, noise_key = jax.random.split(state.rng)
    target_action = actor.apply(state.target_actor_params, batch.next_observations)
    noise = cfg.policy_noise * jax.random.normal(noise_key, target_action.shape)
    next_action = smoothed_target_action(target_action, noise, cfg.noise_clip)
    next_q = critic.apply(state.target_critic_params, batch.next_observations, next_action).min(axis=0)
    target = losses.td_target(batch.rewards, batch.terminations, next_q, cfg.gamma)

    def critic_loss_fn(params):
        q = critic.apply(params, batch.observations, batch.actions)
        return losses.sac_critic_loss(q, target), q  # sum of the members' MSEs, as CleanRL's qf1 + qf2 loss

    (critic_loss, q), critic_grads = jax.value_and_grad(critic_loss_fn, has_aux=True)(state.critic_params)
    critic_updates, critic_opt_state = critic_opt.update(critic_grads, state.critic_opt_state, state.critic_params)
    critic_params = optax.apply_updates(state.critic_params, critic_updates)
    return (state.replace(critic_params=critic_params, critic_opt_state=critic_opt_state, rng=rng),
            {"critic_loss": critic_loss, "q_mean": jnp.mean(q), "target_mean": jnp.mean(target)})


def delayed_actor_update(cfg: Config, state: State, actor_loss_fn) -> tuple[State, jax.Array, Any, jax.Array]:
    """TD3's delayed actor and target updates, after `critic_update`: on updates number policy_frequency,
    2 policy_frequency, ... (1-based, as CleanRL's global_step % policy_frequency and the TD3 paper's code) a
    gradient step on `actor_loss_fn(actor_params) -> (loss, aux)` and Polyak targets; otherwise nothing is
    computed, and the loss and aux are zeros of their shapes (evaluating the actor loss there only for the
    metrics cost about a tenth of TD3's update on CPU). Returns (state, actor_loss, aux, is_actor_step)."""
    actor_opt, _ = _optimizers(cfg)

    def actor_step(_):
        (actor_loss, aux), grads = jax.value_and_grad(actor_loss_fn, has_aux=True)(state.actor_params)
        updates, actor_opt_state = actor_opt.update(grads, state.actor_opt_state, state.actor_params)
        actor_params = optax.apply_updates(state.actor_params, updates)
        return (actor_params, actor_opt_state,
                optax.incremental_update(actor_params, state.target_actor_params, cfg.tau),
                optax.incremental_update(state.critic_params, state.target_critic_params, cfg.tau),
                actor_loss, aux)

    def no_actor_step(_):
        actor_loss, aux = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype),
                                       jax.eval_shape(actor_loss_fn, state.actor_params))
        return (state.actor_params, state.actor_opt_state, state.target_actor_params, state.target_critic_params,
                actor_loss, aux)

    is_actor_step = (state.step + 1) % cfg.policy_frequency == 0
    actor_params, actor_opt_state, target_actor_params, target_critic_params, actor_loss, aux = jax.lax.cond(
        is_actor_step, actor_step, no_actor_step, None)
    state = state.replace(actor_params=actor_params, actor_opt_state=actor_opt_state,
                          target_actor_params=target_actor_params, target_critic_params=target_critic_params,
                          step=state.step + 1)
    return state, actor_loss, aux, is_actor_step


def update(cfg: Config, state: State, batch: Batch) -> tuple[State, dict[str, jax.Array]]:
    state, critic_metrics = critic_update(cfg, state, batch)
    actor, critic = _actor(cfg, state.action_dim), _critic(cfg)

    def actor_loss_fn(params):
        action = actor.apply(params, batch.observations)
        q1 = ensemble_member_q(critic, state.critic_params, 0, batch.observations, action)
        return losses.deterministic_actor_loss(q1), ()

    state, actor_loss, _, is_actor_step = delayed_actor_update(cfg, state, actor_loss_fn)
    metrics = {"critic_loss": critic_metrics["critic_loss"], "actor_loss": actor_loss,
               "q_mean": critic_metrics["q_mean"], "target_mean": critic_metrics["target_mean"],
               "actor_step": is_actor_step.astype(jnp.float32)}
    return state, metrics


def act(cfg: Config, state: State, obs: jax.Array, key: jax.Array, deterministic: bool) -> jax.Array:
    """Normalized actions [B, A] for observations [B, obs_dim]. `deterministic` is a Python bool.

    Exploration (deterministic=False) adds N(0, exploration_noise^2) to the actor's action and clips to [-1, 1].
    """
    action = _actor(cfg, state.action_dim).apply(state.actor_params, obs, method="mode")
    if deterministic:
        return action
    noise = cfg.exploration_noise * jax.random.normal(key, action.shape)
    return jnp.clip(action + noise, -1.0, 1.0)


def policy_export(cfg: Config, state: State) -> tuple[dict, Any]:
    """(head_config dict, actor variables) — `make_head(**config).apply(variables, obs, method=...)` acts."""
    return head_config(ACTOR_HEAD, state.action_dim, cfg.hidden_dims), state.actor_params
