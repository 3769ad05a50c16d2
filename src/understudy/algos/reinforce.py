"""REINFORCE (Williams 1992), plain or with a learned value baseline, with the options of note 001.

An update eats whole episodes: a Batch whose leaves have leading axes [M, T] (M episodes padded to the
horizon T, `mask` 1.0 on real steps and 0.0 on the padding after each episode's end). The update computes
returns-to-go, takes one policy-gradient step, and (with `baseline`) regresses a value network on the
returns; `actor_critic.py` reuses this machinery with TD(lambda) advantages instead of Monte-Carlo returns.

Note 001's options, each off by default:
- `length_bonus` c adds c * (steps left in the episode, counting the current one) to every reward,
  favouring states from which the policy keeps going;
- `anneal_gradient_weight` multiplies each policy update by alpha = sqrt(1 / (1 + env_steps / scale));
- `replay_trajectories` N re-trains on N random past episodes per update, drawn from an episode store of
  `replay_capacity` episodes kept in the State (so checkpoints carry it). Replayed episodes come from older
  policies and are used as if on-policy, as the note does: a deliberate bias against forgetting.

Continuous actions use the "gaussian" head in the normalized box (its sample and mode clip to [-1, 1]);
the loop trains on the unclipped sample from `explore`, whose density is the head's log_prob. Discrete
actions use the "categorical" head. Policy exports load with `understudy.load_policy`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Optional

import flax.struct as struct
import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from understudy.algos import losses
from understudy.nets.heads import head_config, make_head
from understudy.nets.mlp import MLP
from understudy.types import Batch, EnvSpec, UnderstudyError

_LOG_2PI_E = math.log(2.0 * math.pi * math.e)


@dataclasses.dataclass(frozen=True)
class Config:
    """REINFORCE settings (note 001's options are `length_bonus`, `anneal_gradient_weight`, `replay_trajectories`)."""

    baseline: bool = False
    """Learn a value network V(s) and use G_t - V(s_t) as the advantage (REINFORCE with baseline)."""
    hidden_dims: tuple[int, ...] = (64, 64)
    """Hidden layer widths of the policy and of the value network."""
    episodes_per_iteration: int = 8
    """Whole episodes collected per seed before each update."""
    gamma: float = 0.99
    """Discount factor of the returns-to-go."""
    lr: float = 1e-3
    """Adam learning rate of the policy."""
    value_lr: float = 1e-3
    """Adam learning rate of the value network (baseline only)."""
    value_updates: int = 10
    """Full-batch gradient steps on the value network per update (baseline only)."""
    normalize_advantages: bool = True
    """Standardize advantages over the real steps of each update (a constant baseline; keeps step sizes steady)."""
    entropy_coef: float = 0.0
    """Weight of the policy-entropy bonus in the policy loss."""
    max_grad_norm: Optional[float] = 1.0
    """Clip each network's gradient to this global norm; None disables clipping."""
    reward_scale: float = 1.0
    """Multiply environment rewards by this before computing returns (e.g. 0.1 for Pendulum's large costs)."""
    bootstrap_truncated: bool = True
    """With a baseline: end a time-limit-truncated episode's return with gamma * V(last next observation)."""
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


# -- pure pieces (all [..., T] with the time axis last; padding has mask 0) ----------------------------
def _check_time_major(name: str, x: jax.Array, mask: jax.Array) -> None:
    if jnp.shape(x) != jnp.shape(mask):
        raise ValueError(f"{name} has shape {jnp.shape(x)} but mask has shape {jnp.shape(mask)}; "
                         "both must be [..., T].")


def _next_step(x: jax.Array) -> jax.Array:
    """x shifted one step earlier along the last axis, zero-filled: result[..., t] = x[..., t + 1]."""
    return jnp.concatenate([x[..., 1:], jnp.zeros_like(x[..., :1])], axis=-1)


def _reverse_scan(step: Callable, xs: tuple[jax.Array, ...]) -> jax.Array:
    """Runs `carry = step(carry, *x_t)` from the last time step back to the first; returns carries [..., T]."""
    time_major = tuple(jnp.moveaxis(x, -1, 0) for x in xs)

    def body(carry, x):
        carry = step(carry, *x)
        return carry, carry

    _, out = jax.lax.scan(body, jnp.zeros_like(time_major[0][0]), time_major, reverse=True)
    return jnp.moveaxis(out, 0, -1)


def returns_to_go(rewards: jax.Array, mask: jax.Array, gamma: float,
                  bootstrap: Optional[jax.Array] = None) -> jax.Array:
    """G_t = r_t + gamma r_{t+1} + ... to the episode's end: [..., T] -> [..., T] (0 on padding).

    bootstrap [..., T]: a value added as gamma * bootstrap_t after the episode's last real step t (the value
    of the state a truncated episode stopped in; 0 for true terminations). Entries elsewhere are ignored.
    """
    _check_time_major("rewards", rewards, mask)
    bootstrap = jnp.zeros_like(rewards) if bootstrap is None else bootstrap
    _check_time_major("bootstrap", bootstrap, mask)
    continues = _next_step(mask)  # 1 where step t + 1 belongs to the same episode

    def step(g_next, r, m, cont, boot):
        return m * (r + gamma * (cont * g_next + (1.0 - cont) * boot))

    return _reverse_scan(step, (rewards, mask, continues, bootstrap))


def remaining_length(mask: jax.Array) -> jax.Array:
    """Steps left in the episode counting the current one, T_ep - t for t = 0..T_ep-1 (0 on padding): [..., T]."""
    return jnp.flip(jnp.cumsum(jnp.flip(mask, -1), axis=-1), -1) * mask


def length_bonus(mask: jax.Array, coef: float) -> jax.Array:
    """Note 001's reward bonus: coef * remaining_length(mask)."""
    return coef * remaining_length(mask)


def gae_advantages(rewards: jax.Array, values: jax.Array, next_values: jax.Array, terminations: jax.Array,
                   mask: jax.Array, gamma: float, lam: float) -> jax.Array:
    """Generalized advantage estimates (Schulman et al. 2016) within each padded episode: [..., T] -> [..., T].

    delta_t = r_t + gamma (1 - term_t) V(s'_t) - V(s_t); A_t = delta_t + gamma lam A_{t+1} inside the episode.
    lam = 0 is the one-step TD error, lam = 1 the bootstrapped Monte-Carlo return minus V(s_t).
    """
    for name, x in (("rewards", rewards), ("values", values), ("next_values", next_values),
                    ("terminations", terminations)):
        _check_time_major(name, x, mask)
    deltas = rewards + gamma * (1.0 - terminations) * next_values - values
    continues = _next_step(mask)

    def step(a_next, delta, m, cont):
        return m * (delta + gamma * lam * cont * a_next)

    return _reverse_scan(step, (deltas, mask, continues))


def gradient_weight(env_steps: jax.Array, scale: float = 1000.0) -> jax.Array:
    """Note 001's annealing: alpha = sqrt(1 / (1 + env_steps / scale))."""
    return jnp.sqrt(1.0 / (1.0 + jnp.asarray(env_steps, jnp.float32) / scale))


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    _check_time_major("x", x, mask)
    return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def masked_standardize(x: jax.Array, mask: jax.Array, eps: float = 1e-8) -> jax.Array:
    """(x - mean) / std over the real steps; padding stays 0."""
    mean = masked_mean(x, mask)
    std = jnp.sqrt(masked_mean(jnp.square(x - mean), mask))
    return (x - mean) / (std + eps) * mask


def policy_gradient_loss(log_prob: jax.Array, advantages: jax.Array, mask: jax.Array) -> jax.Array:
    """-mean over real steps of log pi(a_t|s_t) A_t, advantages held constant: [..., T] x 2 -> scalar."""
    _check_time_major("log_prob", log_prob, mask)
    return -masked_mean(log_prob * jax.lax.stop_gradient(advantages), mask)


# -- the episode store (note 001's "replay buffer" of whole trajectories) ------------------------------
class EpisodeStore(struct.PyTreeNode):
    """A ring of `capacity` padded episodes ([C, T, ...] leaves of a Batch) and how many are filled."""

    episodes: Batch
    count: jax.Array  # int32 scalar: episodes stored so far, capped at capacity
    pointer: jax.Array  # int32 scalar: next slot to write


def store_init(capacity: int, horizon: int, obs_shape: tuple[int, ...], action_shape: tuple[int, ...],
               action_dtype) -> EpisodeStore:
    lead = (capacity, horizon)
    zeros = functools.partial(jnp.zeros, dtype=jnp.float32)
    episodes = Batch(observations=zeros((*lead, *obs_shape)), actions=jnp.zeros((*lead, *action_shape), action_dtype),
                     rewards=zeros(lead), terminations=zeros(lead), next_observations=zeros((*lead, *obs_shape)),
                     mask=zeros(lead))
    return EpisodeStore(episodes=episodes, count=jnp.zeros((), jnp.int32), pointer=jnp.zeros((), jnp.int32))


def store_add(store: EpisodeStore, batch: Batch) -> EpisodeStore:
    """Writes the M episodes of `batch` ([M, T, ...]) over the oldest slots."""
    capacity = store.episodes.mask.shape[0]
    m = batch.mask.shape[0]
    slots = (store.pointer + jnp.arange(m)) % capacity
    episodes = jax.tree.map(lambda s, x: s.at[slots].set(x.astype(s.dtype)), store.episodes,
                            _store_fields(batch))
    return store.replace(episodes=episodes, count=jnp.minimum(store.count + m, capacity),
                         pointer=(store.pointer + m) % capacity)


def store_sample(store: EpisodeStore, key: jax.Array, n: int) -> Batch:
    """n episodes drawn uniformly (with replacement) from the filled slots; all-padding while the store is empty."""
    index = jax.random.randint(key, (n,), 0, jnp.maximum(store.count, 1))
    sample = jax.tree.map(lambda x: x[index], store.episodes)
    return sample.replace(mask=sample.mask * (store.count > 0))


def _store_fields(batch: Batch) -> Batch:
    return Batch(observations=batch.observations, actions=batch.actions, rewards=batch.rewards,
                 terminations=batch.terminations, next_observations=batch.next_observations, mask=batch.mask)


def _concat_episodes(a: Batch, b: Batch) -> Batch:
    return jax.tree.map(lambda x, y: jnp.concatenate([x, y.astype(x.dtype)], axis=0), _store_fields(a),
                        _store_fields(b))


# -- networks and the state ----------------------------------------------------------------------------
class State(struct.PyTreeNode):
    """Policy (and value) parameters, optimizer states, the episode store, env steps seen, rng, update count."""

    actor_params: Any
    value_params: Any  # None without a value network
    actor_opt_state: Any
    value_opt_state: Any
    store: Optional[EpisodeStore]  # None unless replay_trajectories > 0
    env_steps: jax.Array  # int32 scalar: real env steps in the episodes given to `update` so far
    rng: jax.Array
    step: jax.Array  # int32 scalar, number of updates done
    action_dim: int = struct.field(pytree_node=False, default=1)
    discrete: bool = struct.field(pytree_node=False, default=False)


def head_name(discrete: bool) -> str:
    return "categorical" if discrete else "gaussian"


def _head_kwargs(cfg, discrete: bool) -> dict:
    if discrete:
        return {}
    return {"log_std_min": cfg.log_std_min, "log_std_max": cfg.log_std_max,
            "state_dependent_std": cfg.state_dependent_std}


def _actor(cfg, action_dim: int, discrete: bool):
    return _make_actor(cfg.hidden_dims, action_dim, discrete, tuple(_head_kwargs(cfg, discrete).items()))


def _make_actor(hidden_dims, action_dim: int, discrete: bool, head_kwargs: tuple):
    return make_head(head_name(discrete), action_dim=action_dim, hidden_dims=hidden_dims, **dict(head_kwargs))


def _value_net(cfg) -> MLP:
    return MLP(cfg.hidden_dims, output_dim=1)


def _optimizer(cfg, lr: float) -> optax.GradientTransformation:
    return _make_optimizer(lr, cfg.max_grad_norm)


def _make_optimizer(lr: float, max_grad_norm: Optional[float]) -> optax.GradientTransformation:
    adam = optax.adam(lr)
    return adam if max_grad_norm is None else optax.chain(optax.clip_by_global_norm(max_grad_norm), adam)


# The optimizers work on the parameters raveled into one vector: the same arithmetic in a handful of XLA ops
# instead of a few per parameter array, which roughly halves their share of the update's compile time.
def _optimizer_init(optimizer: optax.GradientTransformation, params: Any) -> Any:
    return optimizer.init(ravel_pytree(params)[0])


def _optimizer_step(optimizer: optax.GradientTransformation, params: Any, grads: Any, opt_state: Any,
                    weight: jax.Array | float = 1.0) -> tuple[Any, Any]:
    """(params + weight * update, new optimizer state)."""
    flat, unravel = ravel_pytree(params)
    updates, opt_state = optimizer.update(ravel_pytree(grads)[0], opt_state, flat)
    return unravel(flat + weight * updates), opt_state


def uses_value(cfg) -> bool:
    """Whether this config trains a value network (REINFORCE's baseline, or any actor-critic)."""
    return bool(getattr(cfg, "baseline", True))


def horizon(cfg, spec: EnvSpec) -> int:
    """Padded episode length: the env's time limit, else cfg.max_episode_steps."""
    return int(spec.max_episode_steps or cfg.max_episode_steps)


def check_config(cfg, name: str) -> None:
    for field, low in (("episodes_per_iteration", 1), ("value_updates", 0), ("replay_trajectories", 0),
                       ("replay_capacity", 1), ("max_episode_steps", 1)):
        if getattr(cfg, field) < low:
            raise UnderstudyError(f"{name} --{field.replace('_', '-')} must be at least {low}, "
                                  f"got {getattr(cfg, field)}.")
    if not 0.0 <= cfg.gamma <= 1.0:
        raise UnderstudyError(f"{name} --gamma must lie in [0, 1], got {cfg.gamma}.")
    if cfg.gradient_weight_scale <= 0:
        raise UnderstudyError(f"{name} --gradient-weight-scale must be positive, got {cfg.gradient_weight_scale}.")


@dataclasses.dataclass(frozen=True)
class _Layout:
    """What the initial state depends on: configs that differ only in rates or loss options share one compiled init."""

    obs_dim: int
    action_dim: int
    discrete: bool
    horizon: int
    hidden_dims: tuple[int, ...]
    head_kwargs: tuple
    value: bool
    clip: bool  # gradient clipping adds a (stateless) stage to the optimizer state
    store_capacity: int  # 0: no episode store


def init(cfg: Config, spec: EnvSpec, key: jax.Array) -> State:
    check_config(cfg, "reinforce")
    return init_state(cfg, spec, key)


def init_state(cfg, spec: EnvSpec, key: jax.Array) -> State:
    """Shared by REINFORCE and actor-critic: networks, optimizers and (when replaying) the episode store."""
    if len(spec.obs_shape) != 1:
        raise UnderstudyError(f"Policy-gradient algorithms need flat vector observations; {spec.env_id} has "
                              f"observations of shape {spec.obs_shape}. Use an environment with Box(n,) observations.")
    layout = _Layout(obs_dim=spec.obs_dim, action_dim=spec.action_dim, discrete=spec.discrete,
                     horizon=horizon(cfg, spec), hidden_dims=tuple(cfg.hidden_dims),
                     head_kwargs=tuple(_head_kwargs(cfg, spec.discrete).items()), value=uses_value(cfg),
                     clip=cfg.max_grad_norm is not None,
                     store_capacity=cfg.replay_capacity if cfg.replay_trajectories > 0 else 0)
    return _init_state(layout, key)


@functools.partial(jax.jit, static_argnums=0)
def _init_state(layout: _Layout, key: jax.Array) -> State:
    # Jitted: initializing op by op dispatches many tiny computations (seconds on CPU).
    key, actor_key, value_key = jax.random.split(key, 3)
    obs = jnp.zeros((1, layout.obs_dim), jnp.float32)
    actor_params = _make_actor(layout.hidden_dims, layout.action_dim, layout.discrete,
                               layout.head_kwargs).init(actor_key, obs)
    value_params = MLP(layout.hidden_dims, output_dim=1).init(value_key, obs) if layout.value else None
    optimizer = _make_optimizer(0.0, 1.0 if layout.clip else None)  # neither rate nor norm enters the state
    store = None
    if layout.store_capacity:
        action_shape, action_dtype = ((), jnp.int32) if layout.discrete else ((layout.action_dim,), jnp.float32)
        store = store_init(layout.store_capacity, layout.horizon, (layout.obs_dim,), action_shape, action_dtype)
    return State(actor_params=actor_params, value_params=value_params,
                 actor_opt_state=_optimizer_init(optimizer, actor_params),
                 value_opt_state=None if value_params is None else _optimizer_init(optimizer, value_params),
                 store=store, env_steps=jnp.zeros((), jnp.int32), rng=key, step=jnp.zeros((), jnp.int32),
                 action_dim=layout.action_dim, discrete=layout.discrete)


# -- the update ------------------------------------------------------------------------------------------
def log_prob_and_entropy(cfg, state: State, params, obs: jax.Array, actions: jax.Array):
    """log pi(a|s) and the policy's entropy per step, [..., T] each, from one forward pass of the head.

    Equal to the head's `log_prob` (tested); computed here so the policy loss runs the network once.
    """
    out = _actor(cfg, state.action_dim, state.discrete).apply(params, obs)
    if state.discrete:
        log_p = jax.nn.log_softmax(out, axis=-1)
        log_prob = jnp.take_along_axis(log_p, actions.astype(jnp.int32)[..., None], axis=-1)[..., 0]
        return log_prob, -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)
    mean, log_std = out
    log_prob = losses.gaussian_log_prob(mean, log_std, actions.astype(jnp.float32))
    return log_prob, jnp.sum(log_std + 0.5 * _LOG_2PI_E, axis=-1)


def monte_carlo_advantages(cfg, rewards, values, next_values, batch: Batch):
    """REINFORCE: returns-to-go (bootstrapped at truncation with a baseline), minus V(s_t) with a baseline."""
    bootstrap = None
    if values is not None and cfg.bootstrap_truncated:
        bootstrap = (1.0 - batch.terminations) * next_values
    returns = returns_to_go(rewards, batch.mask, cfg.gamma, bootstrap)
    advantages = returns if values is None else returns - values
    return advantages, returns


def update(cfg: Config, state: State, batch: Batch) -> tuple[State, dict[str, jax.Array]]:
    """One policy-gradient step (and `value_updates` value steps) on M padded episodes: leaves [M, T, ...]."""
    return policy_gradient_update(cfg, state, batch, monte_carlo_advantages)


def policy_gradient_update(cfg, state: State, batch: Batch, advantage_fn: Callable) -> tuple[State, dict]:
    """The update shared by REINFORCE and actor-critic; `advantage_fn` -> (advantages, value targets) [N, T]."""
    if batch.mask is None or jnp.ndim(batch.mask) != 2:
        raise ValueError("policy-gradient updates take whole padded episodes: batch.mask must be [M, T], got "
                         f"{None if batch.mask is None else jnp.shape(batch.mask)}.")
    rng, replay_key = jax.random.split(state.rng)
    fresh_steps = jnp.sum(batch.mask).astype(jnp.int32)
    episodes, store = _store_fields(batch), state.store
    if cfg.replay_trajectories > 0:
        episodes = _concat_episodes(episodes, store_sample(store, replay_key, cfg.replay_trajectories))
        store = store_add(store, batch)
    mask = episodes.mask
    rewards = cfg.reward_scale * episodes.rewards
    if cfg.length_bonus:
        rewards = rewards + length_bonus(mask, cfg.length_bonus)

    value_net = _value_net(cfg)
    values = next_values = None
    if state.value_params is not None:
        both = jnp.stack([episodes.observations, episodes.next_observations])  # one pass for V(s) and V(s')
        values, next_values = value_net.apply(state.value_params, both)[..., 0]
    advantages, value_targets = advantage_fn(cfg, rewards, values, next_values, episodes)
    advantages = jax.lax.stop_gradient(advantages * mask)
    raw_advantage_mean = masked_mean(advantages, mask)
    if cfg.normalize_advantages:
        advantages = masked_standardize(advantages, mask)

    # Policy: one step; note 001's alpha weights the update itself (Adam would cancel a weight on the gradient).
    def actor_loss_fn(params):
        log_prob, entropy = log_prob_and_entropy(cfg, state, params, episodes.observations, episodes.actions)
        entropy = masked_mean(entropy, mask)
        return policy_gradient_loss(log_prob, advantages, mask) - cfg.entropy_coef * entropy, entropy

    (actor_loss, entropy), grads = jax.value_and_grad(actor_loss_fn, has_aux=True)(state.actor_params)
    weight = gradient_weight(state.env_steps, cfg.gradient_weight_scale) if cfg.anneal_gradient_weight \
        else jnp.ones((), jnp.float32)
    actor_params, actor_opt_state = _optimizer_step(_optimizer(cfg, cfg.lr), state.actor_params, grads,
                                                    state.actor_opt_state, weight)
    metrics = {"actor_loss": actor_loss, "entropy": entropy, "gradient_weight": weight,
               "advantage_mean": raw_advantage_mean, "grad_norm": optax.global_norm(grads),
               "episodes_trained": jnp.sum(jnp.any(mask > 0, axis=-1)).astype(jnp.float32)}

    # Value: full-batch regression on the targets computed with the value network before this update.
    value_params, value_opt_state = state.value_params, state.value_opt_state
    if value_params is not None:
        targets = jax.lax.stop_gradient(value_targets)
        value_opt = _optimizer(cfg, cfg.value_lr)

        def value_loss_fn(params):
            return masked_mean(jnp.square(value_net.apply(params, episodes.observations)[..., 0] - targets), mask)

        def value_step(carry, _):
            params, opt_state = carry
            loss, g = jax.value_and_grad(value_loss_fn)(params)
            return _optimizer_step(value_opt, params, g, opt_state), loss

        (value_params, value_opt_state), value_losses = jax.lax.scan(
            value_step, (value_params, value_opt_state), None, length=cfg.value_updates)
        metrics["value_loss"] = value_losses[0] if cfg.value_updates else value_loss_fn(value_params)
        metrics["value_mean"] = masked_mean(values, mask)

    new_state = state.replace(actor_params=actor_params, value_params=value_params, actor_opt_state=actor_opt_state,
                              value_opt_state=value_opt_state, store=store, env_steps=state.env_steps + fresh_steps,
                              rng=rng, step=state.step + 1)
    return new_state, metrics


# -- acting and export -----------------------------------------------------------------------------------
def explore(cfg, state: State, obs: jax.Array, key: jax.Array) -> jax.Array:
    """The action to train on for observations [B, obs_dim]: an unclipped Gaussian sample [B, A] (the loop clips
    it for the env) or int32 [B]; its density under the policy is the head's log_prob."""
    actor = _actor(cfg, state.action_dim, state.discrete)
    if state.discrete:
        return actor.apply(state.actor_params, obs, key, method="sample")
    mean, log_std = actor.apply(state.actor_params, obs)
    return mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape, mean.dtype)


def act(cfg, state: State, obs: jax.Array, key: jax.Array, deterministic: bool) -> jax.Array:
    """Actions for observations [B, obs_dim]: [B, A] in [-1, 1], or int32 [B]. `deterministic`: the head's mode."""
    actor = _actor(cfg, state.action_dim, state.discrete)
    if deterministic:
        return actor.apply(state.actor_params, obs, method="mode")
    return actor.apply(state.actor_params, obs, key, method="sample")


def policy_export(cfg, state: State) -> tuple[dict, Any]:
    """(head_config dict, policy variables) — `make_head(**config).apply(variables, obs, method=...)` acts."""
    return (head_config(head_name(state.discrete), state.action_dim, cfg.hidden_dims,
                        **_head_kwargs(cfg, state.discrete)), state.actor_params)


def method_name(cfg: Config) -> str:
    """The run's method label: reinforce or reinforce-baseline."""
    return "reinforce-baseline" if cfg.baseline else "reinforce"
