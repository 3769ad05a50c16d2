"""Proximal policy optimization (Schulman et al. 2017) with GAE(λ), as in CleanRL's ppo_continuous_action.py
(continuous actions) and ppo.py (discrete actions).

The policy is a "gaussian" head with a state-independent log-std (continuous) or a "categorical" head
(discrete), on a 64-64 tanh torso; the value function is a separate 64-64 tanh network. Continuous actions
live in the normalized box [-1, 1]^A: the log-prob is that of the raw, unclipped Gaussian sample, and only
the action sent to the env is clipped (and rescaled to the env's bounds by the loop).

Observation normalization (running mean/var, clipped to ±obs_clip) and reward scaling (by the running std
of the discounted return) live in the State pytree, so they are checkpointed with it, vmapped over seeds,
and the observation statistics are exported with the policy.

Division of labour with train/on_policy.py: the loop steps the envs and calls `rollout_step` on
`acting(state)` once per vector step (which also updates the observation statistics, written back with
`with_acting`); `update` then takes a whole `Rollout` and does reward scaling, GAE and
`update_epochs` x `num_minibatches` gradient steps in one pure function (two nested `lax.scan`s). Rows of
the rollout with `valid == 0` are gymnasium's autoreset steps (the sub-env was reset and ignored the
action); they are masked out of every loss and statistic.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Optional

import flax.struct as struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util
from flax import linen as nn

from understudy.nets.heads import head_config, make_head
from understudy.nets.heads.activations import activation_fn
from understudy.nets.mlp import MLP
from understudy.types import EnvSpec, UnderstudyError

EPS = 1e-8  # added to variances before the square root (as gymnasium's normalization wrappers do)


@dataclasses.dataclass(frozen=True)
class Config:
    """PPO settings. Defaults follow CleanRL's ppo_continuous_action.py (MuJoCo); PRESETS (`--preset NAME`) hold
    CleanRL's ppo.py settings for CartPole-style discrete problems and a Pendulum setting."""

    num_envs: int = 1
    """Sub-environments per seed stepping in parallel; a rollout holds num_envs * num_steps transitions."""
    num_steps: int = 2048
    """Vector-env steps per rollout (per sub-environment) before each update."""
    learning_rate: float = 3e-4
    """Adam learning rate (of the policy and the value network, one optimizer)."""
    anneal_lr: bool = True
    """Decay the learning rate linearly to zero over the run's --steps."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.95
    """λ of generalized advantage estimation (1 gives Monte Carlo returns minus the baseline)."""
    num_minibatches: int = 32
    """Minibatches per epoch; each holds num_envs * num_steps / num_minibatches transitions."""
    update_epochs: int = 10
    """Passes over the rollout per update."""
    normalize_advantages: bool = True
    """Standardize advantages within each minibatch."""
    clip_coef: float = 0.2
    """Clipping range ε of the surrogate objective's probability ratio (and of the value clipping)."""
    clip_value_loss: bool = True
    """Clip the value prediction's change to ±clip_coef around the rollout's value (CleanRL's clip_vloss)."""
    ent_coef: float = 0.0
    """Weight of the entropy bonus."""
    vf_coef: float = 0.5
    """Weight of the value loss."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clip over both networks."""
    hidden_dims: tuple[int, ...] = (64, 64)
    """Hidden layer widths of the policy and of the value network."""
    activation: str = "tanh"
    """Hidden activation of both networks (tanh, relu, elu, gelu, silu)."""
    orthogonal_init: bool = True
    """Orthogonal weights (gain sqrt(2); 0.01 on the policy output, 1 on the value output) and zero biases, as CleanRL."""
    normalize_observations: bool = True
    """Standardize observations by running statistics (kept in the state and exported with the policy)."""
    obs_clip: float = 10.0
    """Clip standardized observations to ±obs_clip during training (the exported policy does not clip)."""
    normalize_rewards: bool = True
    """Divide rewards by the running std of the discounted return."""
    reward_clip: float = 10.0
    """Clip scaled rewards to ±reward_clip."""
    adam_eps: float = 1e-5
    """Adam's epsilon (CleanRL uses 1e-5)."""


PRESETS: dict[str, Config] = {
    # CleanRL ppo_continuous_action.py: MuJoCo and other continuous-control tasks (the defaults).
    "mujoco": Config(),
    # CleanRL ppo.py for CartPole-v1 and other small discrete tasks: 4 envs x 128 steps, 4 minibatches x 4 epochs,
    # lr 2.5e-4, entropy bonus 0.01, no observation or reward normalization.
    "classic-discrete": Config(num_envs=4, num_steps=128, learning_rate=2.5e-4, num_minibatches=4, update_epochs=4,
                               ent_coef=0.01, normalize_observations=False, normalize_rewards=False),
    # Pendulum-v1 and similar short-horizon continuous tasks (measured here: about -150 within 30k steps): 4 envs
    # x 256 steps in 16 minibatches, lr 1e-3, gamma 0.9 (rl-baselines3-zoo's choices for Pendulum, without gSDE).
    "pendulum": Config(num_envs=4, num_steps=256, num_minibatches=16, learning_rate=1e-3, gamma=0.9),
}
"""Named settings: `ppo.PRESETS["classic-discrete"]`, or `dataclasses.replace(PRESETS[name], field=value)`."""


class RunningStats(struct.PyTreeNode):
    """Running mean and variance of a stream of batches (Chan et al.'s parallel update), as gymnasium's RunningMeanStd."""

    mean: jax.Array
    var: jax.Array
    count: jax.Array  # float32 scalar; starts at 1e-4 like gymnasium's so the first batch dominates


class State(struct.PyTreeNode):
    """Everything an update changes; `action_dim` and `discrete` are static (they shape the networks)."""

    actor_params: Any
    critic_params: Any
    opt_state: Any  # one optimizer over {"actor": ..., "critic": ...}
    obs_stats: RunningStats  # over raw observations
    return_stats: RunningStats  # over the discounted return (scalar), for reward scaling
    discounted_return: jax.Array  # [num_envs] running discounted return of each sub-env's current episode
    rng: jax.Array
    step: jax.Array  # int32 scalar, number of updates (rollouts) done
    action_dim: int = struct.field(pytree_node=False, default=1)
    discrete: bool = struct.field(pytree_node=False, default=False)


class Rollout(struct.PyTreeNode):
    """One rollout of one seed: leading axes [T = num_steps, N = num_envs]."""

    observations: jax.Array  # [T, N, *obs] standardized (and clipped), exactly as the policy saw them
    actions: jax.Array  # [T, N, A] raw unclipped Gaussian samples, or int32 [T, N]
    log_probs: jax.Array  # [T, N] under the rollout policy
    values: jax.Array  # [T, N] value estimates at rollout time
    rewards: jax.Array  # [T, N] raw env rewards
    terminations: jax.Array  # [T, N] 1.0 where the episode truly ended (no bootstrap)
    truncations: jax.Array  # [T, N] 1.0 where a time limit cut the episode (bootstrap from the final observation)
    valid: jax.Array  # [T, N] 0.0 on gymnasium's autoreset steps (the env reset and ignored the action)
    next_observation: jax.Array  # [N, *obs] raw observation after the last step, to bootstrap from


class Acting(struct.PyTreeNode):
    """The part of the State a rollout step reads (networks) and changes (observation statistics)."""

    actor_params: Any
    critic_params: Any
    obs_stats: RunningStats
    action_dim: int = struct.field(pytree_node=False, default=1)
    discrete: bool = struct.field(pytree_node=False, default=False)


class RolloutStep(struct.PyTreeNode):
    """What `rollout_step` returns for the N sub-envs of one seed."""

    observation: jax.Array  # standardized observation the policy acted on
    action: jax.Array  # raw action (unclipped)
    log_prob: jax.Array
    value: jax.Array


# -- running statistics -----------------------------------------------------------------------------------
def stats_init(shape: tuple[int, ...]) -> RunningStats:
    return RunningStats(mean=jnp.zeros(shape, jnp.float32), var=jnp.ones(shape, jnp.float32),
                        count=jnp.asarray(1e-4, jnp.float32))


def stats_update(stats: RunningStats, x: jax.Array, mask: Optional[jax.Array] = None) -> RunningStats:
    """Folds the batch x [B, *shape] (rows where mask [B] is 0 are ignored) into the running statistics."""
    mask = jnp.ones(x.shape[:1], jnp.float32) if mask is None else jnp.asarray(mask, jnp.float32)
    if mask.shape != x.shape[:1]:
        raise ValueError(f"mask has shape {mask.shape} but the batch has {x.shape[0]} rows.")
    w = mask.reshape(mask.shape + (1,) * (x.ndim - 1))
    n = jnp.sum(mask)
    safe_n = jnp.maximum(n, 1.0)
    batch_mean = jnp.sum(w * x, axis=0) / safe_n
    batch_var = jnp.sum(w * jnp.square(x - batch_mean), axis=0) / safe_n
    total = stats.count + n
    delta = batch_mean - stats.mean
    mean = stats.mean + delta * n / total
    m2 = stats.var * stats.count + batch_var * n + jnp.square(delta) * stats.count * n / total
    new = RunningStats(mean=mean, var=m2 / total, count=total)
    return jax.tree.map(lambda a, b: jnp.where(n > 0, a, b), new, stats)


def standardize(stats: RunningStats, x: jax.Array) -> jax.Array:
    return (x - stats.mean) / jnp.sqrt(stats.var + EPS)


# -- pure losses ------------------------------------------------------------------------------------------
def _same_shapes(**arrays) -> None:
    shapes = {k: jnp.shape(v) for k, v in arrays.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"these arrays must have one shape, got {shapes}")


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    _same_shapes(x=x, mask=mask)
    return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def gae(rewards: jax.Array, values: jax.Array, next_value: jax.Array, terminations: jax.Array,
        truncations: jax.Array, valid: jax.Array, gamma: float, lam: float) -> tuple[jax.Array, jax.Array]:
    """Generalized advantage estimates and value targets (advantages + values), each [T, N].

    rewards, values, terminations, truncations, valid: [T, N]; next_value: [N], the value of the observation
    after the last step. Row t bootstraps from values[t + 1] (next_value for the last row) unless it
    terminated; with gymnasium's next-step autoreset, the observation of row t + 1 after a done row t is the
    episode's final observation, so a truncated episode bootstraps from its true final state. The
    recursion stops at every done (termination or truncation); invalid rows get advantage 0.
    """
    _same_shapes(rewards=rewards, values=values, terminations=terminations, truncations=truncations, valid=valid)
    if jnp.shape(next_value) != jnp.shape(values)[1:]:
        raise ValueError(f"next_value has shape {jnp.shape(next_value)}, expected {jnp.shape(values)[1:]}")
    following_values = jnp.concatenate([values[1:], next_value[None]], axis=0)
    dones = jnp.maximum(terminations, truncations)
    deltas = rewards + gamma * following_values * (1.0 - terminations) - values

    def backward(advantage_after, xs):
        delta, done, ok = xs
        advantage = ok * (delta + gamma * lam * (1.0 - done) * advantage_after)
        return advantage, advantage

    _, advantages = jax.lax.scan(backward, jnp.zeros_like(next_value), (deltas, dones, valid), reverse=True)
    return advantages, advantages + values


def clipped_surrogate_loss(log_prob: jax.Array, old_log_prob: jax.Array, advantages: jax.Array, clip_coef: float,
                           mask: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """PPO's clipped policy loss, mean over mask: max(-A r, -A clip(r, 1-ε, 1+ε)), r = π/π_old; plus KL diagnostics."""
    _same_shapes(log_prob=log_prob, old_log_prob=old_log_prob, advantages=advantages, mask=mask)
    log_ratio = log_prob - old_log_prob
    ratio = jnp.exp(log_ratio)
    loss = masked_mean(jnp.maximum(-advantages * ratio, -advantages * jnp.clip(ratio, 1 - clip_coef, 1 + clip_coef)),
                       mask)
    diagnostics = {"approx_kl": masked_mean((ratio - 1.0) - log_ratio, mask),
                   "clipfrac": masked_mean((jnp.abs(ratio - 1.0) > clip_coef).astype(jnp.float32), mask)}
    return loss, diagnostics


def value_loss(values: jax.Array, old_values: jax.Array, returns: jax.Array, clip_coef: Optional[float],
               mask: jax.Array) -> jax.Array:
    """0.5 * mean squared error to the returns; with clip_coef, the max of the clipped and unclipped errors."""
    _same_shapes(values=values, old_values=old_values, returns=returns, mask=mask)
    error = jnp.square(values - returns)
    if clip_coef is not None:
        clipped = old_values + jnp.clip(values - old_values, -clip_coef, clip_coef)
        error = jnp.maximum(error, jnp.square(clipped - returns))
    return 0.5 * masked_mean(error, mask)


def standardize_advantages(advantages: jax.Array, mask: jax.Array) -> jax.Array:
    """(A - mean) / (std + 1e-8) over the valid entries (std with Bessel's correction, as torch's .std())."""
    n = jnp.sum(mask)
    mean = masked_mean(advantages, mask)
    std = jnp.sqrt(jnp.sum(mask * jnp.square(advantages - mean)) / jnp.maximum(n - 1.0, 1.0))
    return (advantages - mean) / (std + 1e-8)


def scale_rewards(stats: RunningStats, discounted_return: jax.Array, rewards: jax.Array, dones: jax.Array,
                  valid: jax.Array, gamma: float, clip: float) -> tuple[RunningStats, jax.Array, jax.Array]:
    """Reward scaling as gymnasium's NormalizeReward, step by step: (stats, discounted_return [N], scaled [T, N]).

    At each valid step the discounted return G <- gamma G + r is folded into `stats`, and r is divided by the
    std of G; G restarts at 0 after every done.
    """
    _same_shapes(rewards=rewards, dones=dones, valid=valid)

    def step(carry, xs):
        stats, g = carry
        r, done, ok = xs
        g = jnp.where(ok > 0, gamma * g + r, g)
        stats = stats_update(stats, g, ok)
        scaled = jnp.clip(r / jnp.sqrt(stats.var + EPS), -clip, clip)
        g = jnp.where((ok > 0) & (done > 0), 0.0, g)
        return (stats, g), scaled

    (stats, discounted_return), scaled = jax.lax.scan(step, (stats, discounted_return), (rewards, dones, valid))
    return stats, discounted_return, scaled


# -- networks -----------------------------------------------------------------------------------------------
def _head_name(discrete: bool) -> str:
    return "categorical" if discrete else "gaussian"


def _head_kwargs(cfg: Config, discrete: bool) -> dict:
    return {"activation": cfg.activation} if discrete else {"activation": cfg.activation, "state_dependent_std": False}


def _actor(cfg: Config, action_dim: int, discrete: bool) -> nn.Module:
    return make_head(_head_name(discrete), action_dim=action_dim, hidden_dims=cfg.hidden_dims,
                     **_head_kwargs(cfg, discrete))


def _critic(cfg: Config) -> nn.Module:
    return MLP(cfg.hidden_dims, output_dim=1, activation=activation_fn(cfg.activation))


def _optimizer(cfg: Config) -> optax.GradientTransformation:
    # the learning rate (with its annealing) is applied by `update`, so it can vary without recompiling
    return optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), optax.scale_by_adam(eps=cfg.adam_eps))


OUTPUT_LAYERS = ("mean_layer", "logits_layer", "output")  # the heads' and the critic MLP's last layers


def orthogonal_params(module: nn.Module, key: jax.Array, obs: jax.Array, output_gain: float) -> Any:
    """CleanRL's layer_init for every Dense layer of `module`: orthogonal kernels (gain sqrt(2), `output_gain` on
    the output layer) and zero biases; other parameters (the Gaussian head's log_std) start at zero.

    Built from the parameter shapes alone: flax's own random initialization would be thrown away, and
    compiling it costs seconds on CPU.
    """
    shapes = traverse_util.flatten_dict(jax.eval_shape(module.init, jax.random.PRNGKey(0), obs))
    keys = jax.random.split(key, len(shapes))
    params = {}
    for k, path in zip(keys, sorted(shapes)):
        shape, dtype = shapes[path].shape, shapes[path].dtype
        if path[-1] == "kernel":
            gain = output_gain if any(p in OUTPUT_LAYERS for p in path) else math.sqrt(2.0)
            params[path] = nn.initializers.orthogonal(gain)(k, shape, dtype)
        else:
            params[path] = jnp.zeros(shape, dtype)
    return traverse_util.unflatten_dict(params)


def _sample(dist, key: jax.Array, discrete: bool) -> jax.Array:
    if discrete:
        return jax.random.categorical(key, dist, axis=-1).astype(jnp.int32)
    mean, log_std = dist
    return mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape, mean.dtype)


def _log_prob(dist, action: jax.Array, discrete: bool) -> jax.Array:
    if discrete:
        log_probs = jax.nn.log_softmax(dist, axis=-1)
        return jnp.take_along_axis(log_probs, action[..., None].astype(jnp.int32), axis=-1)[..., 0]
    mean, log_std = dist
    z = (action - mean) * jnp.exp(-log_std)
    return jnp.sum(-0.5 * jnp.square(z) - log_std - 0.5 * math.log(2.0 * math.pi), axis=-1)


def _entropy(dist, discrete: bool) -> jax.Array:
    if discrete:
        log_probs = jax.nn.log_softmax(dist, axis=-1)
        return -jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1)
    mean, log_std = dist
    return jnp.sum(jnp.broadcast_to(log_std, mean.shape) + 0.5 * (1.0 + math.log(2.0 * math.pi)), axis=-1)


def _value(cfg: Config, params: Any, obs: jax.Array) -> jax.Array:
    return _critic(cfg).apply(params, obs)[..., 0]


def _training_obs(cfg: Config, obs_stats: RunningStats, obs: jax.Array) -> jax.Array:
    """Standardized and clipped observations, as the networks see them in training."""
    if not cfg.normalize_observations:
        return jnp.asarray(obs, jnp.float32)
    return jnp.clip(standardize(obs_stats, obs), -cfg.obs_clip, cfg.obs_clip)


# -- the contract ---------------------------------------------------------------------------------------------
def init(cfg: Config, spec: EnvSpec, key: jax.Array) -> State:
    if isinstance(spec.observation, dict):
        raise UnderstudyError(f"PPO needs array observations, but {spec.env_id} has dict observations "
                              f"{sorted(spec.observation)}. Use an environment with a Box observation space.")
    batch = cfg.num_envs * cfg.num_steps
    if cfg.num_envs < 1 or cfg.num_steps < 1 or cfg.num_minibatches < 1 or cfg.update_epochs < 1:
        raise UnderstudyError(f"PPO needs --num-envs, --num-steps, --num-minibatches and --update-epochs >= 1 (got "
                              f"{cfg.num_envs}, {cfg.num_steps}, {cfg.num_minibatches}, {cfg.update_epochs}).")
    if batch < cfg.num_minibatches:
        raise UnderstudyError(f"PPO's rollout of --num-envs {cfg.num_envs} x --num-steps {cfg.num_steps} = {batch} "
                              f"transitions cannot be split into --num-minibatches {cfg.num_minibatches}; lower "
                              "--num-minibatches or raise --num-steps.")
    activation_fn(cfg.activation)  # reject an unknown name now
    return _init_state(cfg, spec.obs_shape, spec.action_dim, spec.discrete, key)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _init_state(cfg: Config, obs_shape: tuple[int, ...], action_dim: int, discrete: bool, key: jax.Array) -> State:
    obs = jnp.zeros((1, *obs_shape), jnp.float32)
    key, actor_key, critic_key = jax.random.split(key, 3)
    actor, critic = _actor(cfg, action_dim, discrete), _critic(cfg)
    if cfg.orthogonal_init:
        actor_params = orthogonal_params(actor, actor_key, obs, output_gain=0.01)
        critic_params = orthogonal_params(critic, critic_key, obs, output_gain=1.0)
    else:
        actor_params, critic_params = actor.init(actor_key, obs), critic.init(critic_key, obs)
    opt_state = _optimizer(cfg).init({"actor": actor_params, "critic": critic_params})
    return State(actor_params=actor_params, critic_params=critic_params, opt_state=opt_state,
                 obs_stats=stats_init(obs_shape), return_stats=stats_init(()),
                 discounted_return=jnp.zeros((cfg.num_envs,), jnp.float32), rng=key, step=jnp.zeros((), jnp.int32),
                 action_dim=action_dim, discrete=discrete)


def acting(state: State) -> Acting:
    """What `rollout_step` needs of the state (the loop passes only this, flattened, to each step)."""
    return Acting(actor_params=state.actor_params, critic_params=state.critic_params, obs_stats=state.obs_stats,
                  action_dim=state.action_dim, discrete=state.discrete)


def with_acting(state: State, acting: Acting) -> State:
    """The state with the observation statistics a rollout accumulated (the networks do not change while acting)."""
    return state.replace(obs_stats=acting.obs_stats)


def rollout_step(cfg: Config, acting: Acting, obs: jax.Array, key: jax.Array) -> tuple[Acting, RolloutStep]:
    """One exploration step for the N sub-envs of a seed: fold raw obs [N, *obs] into the observation statistics
    (when normalizing), then sample raw actions. Returns the new Acting and what the rollout stores."""
    obs = jnp.asarray(obs, jnp.float32)
    if cfg.normalize_observations:
        acting = acting.replace(obs_stats=stats_update(acting.obs_stats, obs))
    x = _training_obs(cfg, acting.obs_stats, obs)
    dist = _actor(cfg, acting.action_dim, acting.discrete).apply(acting.actor_params, x)
    action = _sample(dist, key, acting.discrete)
    return acting, RolloutStep(observation=x, action=action, log_prob=_log_prob(dist, action, acting.discrete),
                               value=_value(cfg, acting.critic_params, x))


def env_action(action, discrete: bool):
    """The action to send to the env (still normalized to [-1, 1]): the raw Gaussian sample clipped to the box."""
    return action if discrete else np.clip(action, -1.0, 1.0)


def update(cfg: Config, state: State, rollout: Rollout, lr_scale: jax.Array | float = 1.0
           ) -> tuple[State, dict[str, jax.Array]]:
    """One PPO update on a rollout [T, N]: reward scaling, GAE, then update_epochs x num_minibatches steps.

    lr_scale multiplies the learning rate (the loop passes the linear annealing factor).
    """
    T, N = rollout.rewards.shape
    if N != cfg.num_envs or T != cfg.num_steps:
        raise ValueError(f"rollout has shape [{T}, {N}] but the config asks for [{cfg.num_steps}, {cfg.num_envs}]")
    discrete = state.discrete
    rewards = rollout.rewards
    return_stats, discounted_return = state.return_stats, state.discounted_return
    if cfg.normalize_rewards:
        dones = jnp.maximum(rollout.terminations, rollout.truncations)
        return_stats, discounted_return, rewards = scale_rewards(return_stats, discounted_return, rewards, dones,
                                                                 rollout.valid, cfg.gamma, cfg.reward_clip)
    next_value = _value(cfg, state.critic_params, _training_obs(cfg, state.obs_stats, rollout.next_observation))
    advantages, returns = gae(rewards, rollout.values, next_value, rollout.terminations, rollout.truncations,
                              rollout.valid, cfg.gamma, cfg.gae_lambda)

    flat = jax.tree.map(lambda x: x.reshape(T * N, *x.shape[2:]),
                        {"obs": rollout.observations, "actions": rollout.actions, "log_probs": rollout.log_probs,
                         "values": rollout.values, "advantages": advantages, "returns": returns,
                         "mask": rollout.valid})
    minibatch_size = (T * N) // cfg.num_minibatches
    optimizer = _optimizer(cfg)
    learning_rate = cfg.learning_rate * lr_scale
    actor = _actor(cfg, state.action_dim, discrete)

    def loss_fn(params, mb):
        dist = actor.apply(params["actor"], mb["obs"])
        log_prob = _log_prob(dist, mb["actions"], discrete)
        adv = standardize_advantages(mb["advantages"], mb["mask"]) if cfg.normalize_advantages else mb["advantages"]
        pg_loss, diagnostics = clipped_surrogate_loss(log_prob, mb["log_probs"], adv, cfg.clip_coef, mb["mask"])
        v_loss = value_loss(_value(cfg, params["critic"], mb["obs"]), mb["values"], mb["returns"],
                            cfg.clip_coef if cfg.clip_value_loss else None, mb["mask"])
        entropy = masked_mean(_entropy(dist, discrete), mb["mask"])
        loss = pg_loss - cfg.ent_coef * entropy + cfg.vf_coef * v_loss
        return loss, {"policy_loss": pg_loss, "value_loss": v_loss, "entropy": entropy, **diagnostics}

    def minibatch_step(carry, indices):
        params, opt_state = carry
        mb = jax.tree.map(lambda x: x[indices], flat)
        grads, metrics = jax.grad(loss_fn, has_aux=True)(params, mb)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = jax.tree.map(lambda p, u: p - learning_rate * u, params, updates)
        return (params, opt_state), {**metrics, "grad_norm": optax.global_norm(grads)}

    def epoch(carry, key):
        order = jax.random.permutation(key, T * N)[: cfg.num_minibatches * minibatch_size]
        return jax.lax.scan(minibatch_step, carry, order.reshape(cfg.num_minibatches, minibatch_size))

    rng, epoch_key = jax.random.split(state.rng)
    params = {"actor": state.actor_params, "critic": state.critic_params}
    (params, opt_state), metrics = jax.lax.scan(epoch, (params, state.opt_state),
                                                jax.random.split(epoch_key, cfg.update_epochs))
    metrics = jax.tree.map(jnp.mean, metrics)
    residual_var = _masked_var(flat["returns"] - flat["values"], flat["mask"])
    metrics["explained_variance"] = 1.0 - residual_var / jnp.maximum(_masked_var(flat["returns"], flat["mask"]), EPS)
    metrics["learning_rate"] = jnp.asarray(learning_rate, jnp.float32)
    metrics["return_std"] = jnp.sqrt(return_stats.var)
    metrics["advantage_mean"] = masked_mean(flat["advantages"], flat["mask"])
    new_state = state.replace(actor_params=params["actor"], critic_params=params["critic"], opt_state=opt_state,
                              return_stats=return_stats, discounted_return=discounted_return, rng=rng,
                              step=state.step + 1)
    return new_state, metrics


def _masked_var(x: jax.Array, mask: jax.Array) -> jax.Array:
    return masked_mean(jnp.square(x - masked_mean(x, mask)), mask)


def act(cfg: Config, state: State, obs: jax.Array, key: jax.Array, deterministic: bool) -> jax.Array:
    """Actions for raw observations [B, *obs]: in [-1, 1]^A (clipped) or int32 [B]; the mean/argmax when deterministic.

    Observations are standardized exactly as the exported policy does it (no ±obs_clip), so evaluation here
    and `understudy eval` of the export agree.
    """
    actor = _actor(cfg, state.action_dim, state.discrete)
    x = _export_standardize(cfg, state, jnp.asarray(obs, jnp.float32))
    if deterministic:
        return actor.apply(state.actor_params, x, method="mode")
    return actor.apply(state.actor_params, x, key, method="sample")


def _export_standardize(cfg: Config, state: State, obs: jax.Array) -> jax.Array:
    if not cfg.normalize_observations:
        return obs
    return (obs - state.obs_stats.mean) / jnp.sqrt(state.obs_stats.var + EPS)


def policy_export(cfg: Config, state: State) -> tuple[dict, Any, Optional[dict]]:
    """(head_config, actor params, normalizer {mean, std} or None): `understudy.load_policy` rebuilds `act`."""
    config = head_config(_head_name(state.discrete), state.action_dim, cfg.hidden_dims,
                         **_head_kwargs(cfg, state.discrete))
    normalizer = None
    if cfg.normalize_observations:
        stats = jax.device_get(state.obs_stats)
        normalizer = {"mean": np.asarray(stats.mean, np.float32),
                      "std": np.sqrt(np.asarray(stats.var, np.float32) + np.float32(EPS))}
    return config, state.actor_params, normalizer
