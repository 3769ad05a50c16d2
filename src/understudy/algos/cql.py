"""Conservative Q-learning (Kumar et al. 2020), CQL(H) on SAC as in CORL's cql.py.

SAC with twin critics and automatic entropy, whose critics also minimize the conservative penalty
(`losses.cql_penalty`): a soft maximum of Q over actions sampled at each dataset state, minus Q at the
dataset's action. The sampled actions are, as in the paper's importance-sampled CQL(H) and CORL,
`num_sampled_actions` each of: uniform actions (log density -A log 2), current-policy actions pi(.|s) and
next-state policy actions pi(.|s'), all evaluated at s and weighted by minus their log densities.
The penalty enters each critic's loss with weight `cql_alpha`; the Lagrangian version (`lagrange`) instead
learns the weight alpha' so that the penalty settles at `target_action_gap`.

As in CORL, every loss of one update is computed from the same (pre-update) parameters: the actor ascends
min_i Q_i(s, a~pi) - alpha log pi, the critics regress on r + gamma (1 - done) min_i Q'_i(s', a'~pi) (no
entropy term unless `backup_entropy`) plus the penalty, and the temperature follows the entropy target.
For the first `bc_steps` updates the actor maximizes the dataset actions' log-likelihood instead of Q.

Actions are in [-1, 1]^A and observations arrive standardized when `normalize_observations` is on (the
offline loop fits the normalizer and stores it with the policy export). The actor is the "tanh-gaussian"
head, so the export loads with `understudy.load_policy`; its greedy action is tanh(mean).
Differences from CORL: default (not orthogonal) initialization, and the tanh-gaussian head's smooth log-std
bounds [-5, 2] (SAC's) instead of CORL's linear log-std offset by -1 and clamped to [-20, 2].
"""

from __future__ import annotations

import dataclasses
import functools
import math
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


@dataclasses.dataclass(frozen=True)
class Config:
    """CQL settings (defaults follow CORL's cql.py and its D4RL locomotion configs)."""

    cql_alpha: float = 10.0
    """Weight of the conservative penalty in each critic's loss (CORL's locomotion configs use 10; the original CQL code and CORL's ContinuousCQL default use 5)."""
    num_sampled_actions: int = 10
    """Actions sampled per state from each of the uniform, current-policy and next-state-policy proposals."""
    importance_sample: bool = True
    """Weight sampled actions by their inverse proposal density (CQL(H) as in the paper); off: a plain logsumexp over the samples and the data action."""
    cql_temperature: float = 1.0
    """Temperature T of the soft maximum T logsumexp(Q / T) in the penalty."""
    lagrange: bool = False
    """Learn the penalty weight alpha' (times cql_alpha) by dual gradient ascent so the penalty approaches target_action_gap."""
    target_action_gap: float = -1.0
    """Target value of the penalty (logsumexp Q - Q(data)) for the Lagrangian version; used only with lagrange."""
    bc_steps: int = 0
    """Behaviour-cloning warm-up: for the first this many updates the actor maximizes the data actions' log-likelihood instead of Q."""
    backup_entropy: bool = False
    """Subtract alpha log pi(a'|s') in the critics' target (SAC's soft backup); CORL's default is off."""
    hidden_dims: tuple[int, ...] = (256, 256, 256)
    """Hidden layer widths of the actor and of each critic (CORL: three layers of 256 for both)."""
    batch_size: int = 256
    """Transitions per gradient update."""
    gamma: float = 0.99
    """Discount factor."""
    tau: float = 0.005
    """Polyak averaging rate of the target critics, every update (CORL's soft_target_update_rate)."""
    actor_lr: float = 3e-5
    """Adam learning rate of the actor (CORL's policy_lr)."""
    critic_lr: float = 3e-4
    """Adam learning rate of the critics (CORL's qf_lr)."""
    alpha_lr: float = 3e-5
    """Adam learning rate of the log temperature (CORL uses policy_lr)."""
    alpha_prime_lr: float = 3e-4
    """Adam learning rate of the Lagrange multiplier's log (CORL uses qf_lr); used only with lagrange."""
    autotune: bool = True
    """Learn the temperature to keep the policy's entropy near `target_entropy`."""
    init_alpha: float = 1.0
    """Starting temperature (CORL starts log alpha at 0); the fixed temperature when autotune is off."""
    target_entropy: Optional[float] = None
    """Entropy target for autotuning; None means -action_dim."""
    num_critics: int = 2
    """Critics in the ensemble; each gets its own penalty, targets and the actor use their minimum."""
    log_std_min: float = -5.0
    """Lower bound of the actor's log standard deviation."""
    log_std_max: float = 2.0
    """Upper bound of the actor's log standard deviation."""
    dataset_reward_scale: float = 1.0
    """Multiply dataset rewards by this inside the update (CORL's reward_scale, applied with normalize_reward)."""
    dataset_reward_bias: float = 0.0
    """Add this to the scaled rewards inside the update (CORL's reward_bias, e.g. -1 for AntMaze)."""
    normalize_observations: bool = True
    """Standardize observations with dataset mean/std (applied by the training loop, saved in the export)."""


# Named alternatives to the defaults, for `understudy train cql --preset NAME`.
PRESETS: dict[str, Config] = {
    "corl": Config(),
    # Small problems on CPU. The penalty evaluates the critics at 3 x 10 sampled actions per state, so an update
    # with CORL's 256-256-256 networks costs ~0.25 s of one CPU core (~18 ms with 64-64). The penalty weight 5 is
    # the CQL paper's and its reference code's; the faster actor (and temperature) make up for runs of 10^4
    # rather than 10^6 updates. Measured: Pendulum-v1 from a 50/50 noisy-expert/random mixture, -110 after
    # 12k-15k updates (CORL's defaults on 64-64 networks: ~ -1000 after 5k).
    "small": Config(hidden_dims=(64, 64), cql_alpha=5.0, actor_lr=1e-4, alpha_lr=1e-4),
}


class State(struct.PyTreeNode):
    """Everything an update changes. `action_dim` is static (it shapes the networks)."""

    actor_params: Any
    critic_params: Any
    target_critic_params: Any
    log_alpha: jax.Array  # scalar, SAC temperature
    log_alpha_prime: jax.Array  # scalar, Lagrange multiplier of the penalty (stays put unless cfg.lagrange)
    actor_opt_state: Any
    critic_opt_state: Any
    alpha_opt_state: Any
    alpha_prime_opt_state: Any
    rng: jax.Array
    step: jax.Array  # int32 scalar, number of updates done
    action_dim: int = struct.field(pytree_node=False, default=1)


# -- networks and optimizers, rebuilt from the config (cheap Python, traced once) ---------------------
def _actor_kwargs(cfg: Config) -> dict:
    return {"log_std_min": cfg.log_std_min, "log_std_max": cfg.log_std_max}


def _actor(cfg: Config, action_dim: int):
    return make_head(ACTOR_HEAD, action_dim=action_dim, hidden_dims=cfg.hidden_dims, **_actor_kwargs(cfg))


def _critic(cfg: Config) -> EnsembleQ:
    return EnsembleQ(hidden_dims=cfg.hidden_dims, num_qs=cfg.num_critics)


def _optimizers(cfg: Config):
    return (optax.adam(cfg.actor_lr), optax.adam(cfg.critic_lr), optax.adam(cfg.alpha_lr),
            optax.adam(cfg.alpha_prime_lr))


def _target_entropy(cfg: Config, action_dim: int) -> float:
    return -float(action_dim) if cfg.target_entropy is None else float(cfg.target_entropy)


def _repeat(x: jax.Array, n: int) -> jax.Array:
    """[B, D] -> [B, n, D]: each row repeated n times (networks broadcast over the extra axis)."""
    return jnp.broadcast_to(x[:, None, :], (x.shape[0], n, x.shape[-1]))


# -- the contract ----------------------------------------------------------------------------------
def init(cfg: Config, spec: EnvSpec, key: jax.Array) -> State:
    if spec.discrete:
        raise UnderstudyError(f"CQL needs continuous actions, but {spec.env_id} has {spec.num_actions} discrete "
                              "actions. Use bc --head categorical for discrete-action datasets.")
    if cfg.num_critics < 1:
        raise UnderstudyError(f"CQL --num-critics must be >= 1, got {cfg.num_critics}.")
    if cfg.num_sampled_actions < 1:
        raise UnderstudyError(f"CQL --num-sampled-actions must be >= 1 (CORL uses 10), got {cfg.num_sampled_actions}.")
    if cfg.cql_temperature <= 0:
        raise UnderstudyError(f"CQL --cql-temperature must be > 0 (CORL uses 1.0), got {cfg.cql_temperature}.")
    if cfg.init_alpha <= 0:
        raise UnderstudyError(f"CQL --init-alpha must be > 0 (its log is learned), got {cfg.init_alpha}.")
    return _init_state(cfg, spec.obs_dim, spec.action_dim, key)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _init_state(cfg: Config, obs_dim: int, action_dim: int, key: jax.Array) -> State:
    # Jitted: initializing op by op dispatches hundreds of tiny computations (seconds on CPU).
    obs = jnp.zeros((1, obs_dim), jnp.float32)
    action = jnp.zeros((1, action_dim), jnp.float32)
    key, actor_key, critic_key = jax.random.split(key, 3)
    actor_params = _actor(cfg, action_dim).init(actor_key, obs)
    critic_params = _critic(cfg).init(critic_key, obs, action)
    log_alpha = jnp.asarray(math.log(cfg.init_alpha), jnp.float32)
    log_alpha_prime = jnp.asarray(1.0, jnp.float32)  # CORL: Scalar(1.0), so alpha' starts at e
    actor_opt, critic_opt, alpha_opt, alpha_prime_opt = _optimizers(cfg)
    return State(actor_params=actor_params, critic_params=critic_params, target_critic_params=critic_params,
                 log_alpha=log_alpha, log_alpha_prime=log_alpha_prime, actor_opt_state=actor_opt.init(actor_params),
                 critic_opt_state=critic_opt.init(critic_params), alpha_opt_state=alpha_opt.init(log_alpha),
                 alpha_prime_opt_state=alpha_prime_opt.init(log_alpha_prime), rng=key,
                 step=jnp.zeros((), jnp.int32), action_dim=action_dim)


def sampled_actions(cfg: Config, state: State, batch: Batch, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The penalty's proposal actions [B, 3N, A] (uniform, pi(.|s), pi(.|s')) and their log importance weights [B, 3N].

    The weights are minus each sample's log density under its proposal (uniform: A log 2), from the current
    actor without gradient, as CORL detaches them.
    """
    actor, n = _actor(cfg, state.action_dim), cfg.num_sampled_actions
    batch_size, action_dim = batch.actions.shape
    uniform_key, current_key, next_key = jax.random.split(key, 3)
    uniform = jax.random.uniform(uniform_key, (batch_size, n, action_dim), minval=-1.0, maxval=1.0)
    # the actor runs once per state and draws n samples from each Gaussian (as d3rlpy does), not on n copies
    current, current_log_prob = actor.apply(state.actor_params, batch.observations, current_key, n,
                                            method="samples_and_log_probs")
    following, following_log_prob = actor.apply(state.actor_params, batch.next_observations, next_key, n,
                                                 method="samples_and_log_probs")
    actions = jnp.concatenate([uniform, current, following], axis=1)
    uniform_log_weight = jnp.full((batch_size, n), action_dim * math.log(2.0))
    log_weights = jnp.concatenate([uniform_log_weight, -current_log_prob, -following_log_prob], axis=1)
    return jax.lax.stop_gradient(actions), jax.lax.stop_gradient(log_weights)


def update(cfg: Config, state: State, batch: Batch) -> tuple[State, dict[str, jax.Array]]:
    actor, critic = _actor(cfg, state.action_dim), _critic(cfg)
    actor_opt, critic_opt, alpha_opt, alpha_prime_opt = _optimizers(cfg)
    rng, pi_key, next_key, sample_key = jax.random.split(state.rng, 4)
    alpha = jnp.exp(state.log_alpha)
    rewards = batch.rewards * cfg.dataset_reward_scale + cfg.dataset_reward_bias

    # Actor (against the pre-update critics, as CORL): SAC's objective, or the data's likelihood while warming up.
    def actor_loss_fn(params):
        action, log_prob = actor.apply(params, batch.observations, pi_key, method="sample_and_log_prob")
        objective = critic.apply(state.critic_params, batch.observations, action).min(axis=0)
        if cfg.bc_steps > 0:
            data_log_prob = actor.apply(params, batch.observations, batch.actions, method="log_prob")
            objective = jnp.where(state.step < cfg.bc_steps, data_log_prob, objective)
        return losses.sac_actor_loss(log_prob, objective, alpha), log_prob

    (actor_loss, log_prob), actor_grads = jax.value_and_grad(actor_loss_fn, has_aux=True)(state.actor_params)

    # Critics: TD regression on the target critics' minimum plus the conservative penalty per critic.
    next_action, next_log_prob = actor.apply(state.actor_params, batch.next_observations, next_key,
                                             method="sample_and_log_prob")
    next_q = critic.apply(state.target_critic_params, batch.next_observations, next_action).min(axis=0)
    if cfg.backup_entropy:
        next_q = next_q - alpha * next_log_prob
    target = losses.td_target(rewards, batch.terminations, next_q, cfg.gamma)
    proposals, log_weights = sampled_actions(cfg, state, batch, sample_key)
    alpha_prime = jnp.clip(jnp.exp(state.log_alpha_prime), 0.0, 1e6) if cfg.lagrange else jnp.ones(())

    def critic_loss_fn(params):
        q = critic.apply(params, batch.observations, batch.actions)  # [E, B]
        q_sampled = critic.apply(params, _repeat(batch.observations, proposals.shape[1]), proposals)  # [E, B, 3N]
        if cfg.importance_sample:
            weights = jnp.broadcast_to(log_weights, q_sampled.shape)
        else:  # CQL(H) without importance weights: a plain soft maximum that also includes the data action
            q_sampled = jnp.concatenate([q_sampled, q[..., None]], axis=-1)
            weights = jnp.zeros_like(q_sampled)
        gap = losses.cql_penalty(q_sampled, weights, q, cfg.cql_temperature)  # [E]
        offset = cfg.target_action_gap if cfg.lagrange else 0.0
        conservative = jnp.sum(jax.lax.stop_gradient(alpha_prime) * cfg.cql_alpha * (gap - offset))
        td_loss = losses.sac_critic_loss(q, target)  # CORL: qf1_loss + qf2_loss
        return td_loss + conservative, (td_loss, gap, q, q_sampled)

    (critic_loss, (td_loss, gap, q, q_sampled)), critic_grads = jax.value_and_grad(
        critic_loss_fn, has_aux=True)(state.critic_params)

    # Temperature (CORL's form: -log_alpha (log pi + target entropy)), and the Lagrange multiplier.
    target_entropy = _target_entropy(cfg, state.action_dim)
    alpha_loss, alpha_grad = jax.value_and_grad(
        lambda la: -la * jnp.mean(jax.lax.stop_gradient(log_prob) + target_entropy))(state.log_alpha)

    def alpha_prime_loss_fn(log_alpha_prime):
        multiplier = jnp.clip(jnp.exp(log_alpha_prime), 0.0, 1e6)
        # Ascent on the dual: raise alpha' while the penalty exceeds the target gap. CORL: -(l1 + l2) / 2.
        return -0.5 * jnp.sum(multiplier * cfg.cql_alpha * (jax.lax.stop_gradient(gap) - cfg.target_action_gap))

    alpha_prime_loss, alpha_prime_grad = jax.value_and_grad(alpha_prime_loss_fn)(state.log_alpha_prime)

    # Apply every step from the same pre-update parameters.
    actor_updates, actor_opt_state = actor_opt.update(actor_grads, state.actor_opt_state, state.actor_params)
    actor_params = optax.apply_updates(state.actor_params, actor_updates)
    critic_updates, critic_opt_state = critic_opt.update(critic_grads, state.critic_opt_state, state.critic_params)
    critic_params = optax.apply_updates(state.critic_params, critic_updates)
    target_critic_params = optax.incremental_update(critic_params, state.target_critic_params, cfg.tau)
    log_alpha, alpha_opt_state = state.log_alpha, state.alpha_opt_state
    if cfg.autotune:
        alpha_update, alpha_opt_state = alpha_opt.update(alpha_grad, state.alpha_opt_state, state.log_alpha)
        log_alpha = optax.apply_updates(state.log_alpha, alpha_update)
    log_alpha_prime, alpha_prime_opt_state = state.log_alpha_prime, state.alpha_prime_opt_state
    if cfg.lagrange:
        alpha_prime_update, alpha_prime_opt_state = alpha_prime_opt.update(
            alpha_prime_grad, state.alpha_prime_opt_state, state.log_alpha_prime)
        log_alpha_prime = optax.apply_updates(state.log_alpha_prime, alpha_prime_update)

    new_state = state.replace(actor_params=actor_params, critic_params=critic_params,
                              target_critic_params=target_critic_params, log_alpha=log_alpha,
                              log_alpha_prime=log_alpha_prime, actor_opt_state=actor_opt_state,
                              critic_opt_state=critic_opt_state, alpha_opt_state=alpha_opt_state,
                              alpha_prime_opt_state=alpha_prime_opt_state, rng=rng, step=state.step + 1)
    metrics = {"critic_loss": critic_loss, "td_loss": td_loss, "cql_gap": jnp.mean(gap), "actor_loss": actor_loss,
               "alpha_loss": alpha_loss, "alpha": alpha, "alpha_prime": alpha_prime,
               "alpha_prime_loss": alpha_prime_loss, "entropy": -jnp.mean(log_prob), "q_mean": jnp.mean(q),
               "q_sampled_mean": jnp.mean(q_sampled), "target_mean": jnp.mean(target)}
    return new_state, metrics


def act(cfg: Config, state: State, obs: jax.Array, key: jax.Array, deterministic: bool) -> jax.Array:
    """Normalized actions [B, A] for (normalized) observations [B, obs_dim].

    `deterministic` is a Python bool: tanh(mean), else a sample of the tanh-squashed Gaussian.
    """
    actor = _actor(cfg, state.action_dim)
    if deterministic:
        return actor.apply(state.actor_params, obs, method="mode")
    return actor.apply(state.actor_params, obs, key, method="sample")


def policy_export(cfg: Config, state: State) -> tuple[dict, Any]:
    """(head_config dict, actor variables) — `make_head(**config).apply(variables, obs, method=...)` acts."""
    return head_config(ACTOR_HEAD, state.action_dim, cfg.hidden_dims, **_actor_kwargs(cfg)), state.actor_params
