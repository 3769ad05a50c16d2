"""What GAIL and AIRL share: their common settings, the discriminator's networks, loss, gradient penalty,
reward transforms and one gradient step.

The discriminator D(s, a[, s']) = sigmoid(logit) tells expert transitions (label 1) from the policy's (label 0).
Each algorithm module (understudy.algos.gail, understudy.algos.airl) offers the loop:
    Config (an AdversarialConfig), check(cfg), method_name(cfg)
    init_params(cfg, spec, key)                the discriminator's parameters
    learned_logit(cfg, params, batch, gamma)   the learned part: GAIL's D logit, AIRL's f(s, a, s')
    logits(cfg, params, batch, log_pi, gamma)  the logit the loss sees (AIRL subtracts log pi(a|s))
    policy_reward(cfg, params, batch, log_pi, gamma)  the reward the RL algorithm is trained on
    USES_LOG_PROB                              whether log pi(a|s) is needed (AIRL)
    export_reward(cfg, params, spec, normalizer, directory, metadata)  optional (AIRL): save the learned reward
The gradient penalty differentiates learned_logit (AIRL's log pi is a constant input, not part of the net).
`batch` is a understudy.types.Batch of discriminator inputs: observations already standardized by the loop
(the discriminator clips them to +-obs_clip), actions as features (continuous actions in [-1, 1]; discrete ones
one-hot, see `action_features`), next_observations and terminations. Its `rewards` are never read.

The loop is understudy.train.adversarial.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, Optional

import flax.linen as nn
import flax.struct as struct
import jax
import jax.numpy as jnp
import optax

from understudy.algos import ppo as ppo_algo
from understudy.algos import sac as sac_algo
from understudy.nets.mlp import MLP
from understudy.types import Batch, EnvSpec, UnderstudyError


@dataclasses.dataclass(frozen=True)
class AdversarialConfig:
    """Settings GAIL and AIRL share: the RL algorithm they wrap and the discriminator's training."""

    rl: Literal["sac", "ppo"] = "sac"
    """The RL algorithm trained on the discriminator's reward: sac (off-policy, rewards relabelled at sample time) or ppo (on-policy, rewards replaced before GAE)."""
    sac: sac_algo.Config = sac_algo.Config()
    """SAC's settings (with --rl sac), e.g. --sac.learning-starts 1000."""
    ppo: ppo_algo.Config = ppo_algo.Config(normalize_observations=False)
    """PPO's settings (with --rl ppo). Its own running observation normalization is off by default: observations are already standardized by the expert data's statistics (--normalize-observations)."""
    disc_hidden_dims: tuple[int, ...] = (256, 256)
    """Hidden layer widths of the discriminator (GAIL) or of AIRL's reward term g."""
    disc_lr: float = 3e-4
    """Adam learning rate of the discriminator."""
    disc_batch_size: int = 256
    """Expert transitions per discriminator step, and as many policy transitions."""
    disc_updates: Optional[int] = None
    """Discriminator gradient steps per round. None: 1 with --rl sac (a round every --disc-every SAC updates); with --rl ppo (a round per rollout) one pass over the rollout, rollout size / --disc-batch-size steps."""
    disc_every: int = 1
    """--rl sac: SAC updates between discriminator rounds (1: one round before every SAC update)."""
    disc_recent: Optional[int] = None
    """--rl sac: the discriminator's policy transitions come from the newest N replay transitions (None: the whole buffer, as in DAC)."""
    grad_penalty: float = 10.0
    """Weight of the gradient penalty E[(||grad_x logit(x)|| - 1)^2] at random interpolates x of expert and policy inputs (Gulrajani et al. 2017, as in DAC); 0 turns it off."""
    normalize_observations: bool = True
    """Standardize observations by the expert data's mean and std (for the policy, saved in its export, and for the discriminator)."""
    obs_clip: float = 10.0
    """Clip standardized observations to +-obs_clip at the discriminator's input (states far from the expert's)."""
    expert_episodes: Optional[int] = None
    """Use only the first N episodes of --dataset as expert demonstrations (None: all)."""


class DiscState(struct.PyTreeNode):
    """The discriminator's parameters and optimizer state (one per seed)."""

    params: Any
    opt_state: Any


class ScalarMLP(nn.Module):
    """An MLP with one output: [..., D] -> [...]."""

    hidden_dims: tuple[int, ...]

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return MLP(self.hidden_dims, output_dim=1, name="mlp")(x)[..., 0]


# -- settings derived from the config -----------------------------------------------------------------------------
def rl_config(cfg: AdversarialConfig):
    """The wrapped RL algorithm's config."""
    return cfg.sac if cfg.rl == "sac" else cfg.ppo


def rl_gamma(cfg: AdversarialConfig) -> float:
    """The RL discount, which AIRL's shaping term also uses."""
    return float(rl_config(cfg).gamma)


def disc_updates_per_round(cfg: AdversarialConfig) -> int:
    if cfg.disc_updates is not None:
        return cfg.disc_updates
    if cfg.rl == "sac":
        return 1
    return max(1, (cfg.ppo.num_envs * cfg.ppo.num_steps) // cfg.disc_batch_size)


def check_config(cfg: AdversarialConfig, algo_name: str) -> None:
    """Rejects settings that cannot work, naming the flag."""
    if cfg.rl not in ("sac", "ppo"):
        raise UnderstudyError(f"{algo_name} --rl must be sac or ppo, got {cfg.rl!r}.")
    for name in ("disc_batch_size", "disc_every"):
        if getattr(cfg, name) < 1:
            raise UnderstudyError(f"{algo_name} --{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}.")
    if cfg.disc_recent is not None and cfg.disc_recent < 1:
        raise UnderstudyError(f"{algo_name} --disc-recent must be >= 1 (or left out for the whole buffer), got "
                              f"{cfg.disc_recent}.")
    if cfg.disc_updates is not None and cfg.disc_updates < 0:
        raise UnderstudyError(f"{algo_name} --disc-updates must be >= 0 (0 freezes the discriminator), got "
                              f"{cfg.disc_updates}.")
    if cfg.grad_penalty < 0 or cfg.obs_clip <= 0:
        raise UnderstudyError(f"{algo_name} --grad-penalty must be >= 0 and --obs-clip > 0 (got {cfg.grad_penalty} "
                              f"and {cfg.obs_clip}).")
    if cfg.expert_episodes is not None and cfg.expert_episodes < 1:
        raise UnderstudyError(f"{algo_name} --expert-episodes must be >= 1 (or left out for all), got "
                              f"{cfg.expert_episodes}.")


def action_features(actions: jax.Array, spec: EnvSpec) -> jax.Array:
    """What the discriminator sees of an action: continuous [B, A] as is (in [-1, 1]), discrete [B] one-hot."""
    if spec.discrete:
        return jax.nn.one_hot(actions, spec.num_actions, dtype=jnp.float32)
    return jnp.asarray(actions, jnp.float32)


def clip_observations(cfg: AdversarialConfig, obs: jax.Array) -> jax.Array:
    return jnp.clip(jnp.asarray(obs, jnp.float32), -cfg.obs_clip, cfg.obs_clip)


def _check_vector(name: str, x: jax.Array) -> None:
    if jnp.ndim(x) != 1:
        raise ValueError(f"{name} must be a vector [B], got shape {jnp.shape(x)}")


# -- pure losses and reward transforms -----------------------------------------------------------------------------
def discriminator_loss(expert_logits: jax.Array, policy_logits: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Binary cross-entropy of D = sigmoid(logit) on a balanced batch, expert = 1, policy = 0:
    0.5 * (mean -log D(expert) + mean -log(1 - D(policy))), with accuracies (D > 0.5 on expert, < 0.5 on policy).

    expert_logits [B_e], policy_logits [B_p]. -log sigmoid(x) = softplus(-x) and -log(1 - sigmoid(x)) = softplus(x)
    keep it finite for any logit. A discriminator that cannot tell them apart scores log 2.
    """
    _check_vector("expert_logits", expert_logits)
    _check_vector("policy_logits", policy_logits)
    loss = 0.5 * (jnp.mean(jax.nn.softplus(-expert_logits)) + jnp.mean(jax.nn.softplus(policy_logits)))
    return loss, {"disc_loss": loss, "expert_accuracy": jnp.mean((expert_logits > 0).astype(jnp.float32)),
                  "policy_accuracy": jnp.mean((policy_logits < 0).astype(jnp.float32))}


def gradient_penalty(logit_fn, expert_inputs: tuple, policy_inputs: tuple, key: jax.Array) -> jax.Array:
    """E[(||grad_x logit_fn(x)||_2 - 1)^2] at x = eps * expert + (1 - eps) * policy, eps ~ U[0, 1] per row.

    logit_fn(*inputs) -> [B] must treat rows independently (an MLP does), so the gradient of the summed logits
    holds each row's own gradient. The norm is over all inputs of a row together.
    """
    if len(expert_inputs) != len(policy_inputs):
        raise ValueError(f"expert_inputs has {len(expert_inputs)} arrays but policy_inputs has {len(policy_inputs)}")
    for e, p in zip(expert_inputs, policy_inputs):
        if jnp.shape(e) != jnp.shape(p):
            raise ValueError(f"expert and policy inputs must have one shape, got {jnp.shape(e)} and {jnp.shape(p)}")
    rows = jnp.shape(expert_inputs[0])[0]
    eps = jax.random.uniform(key, (rows,))
    mixed = tuple(eps.reshape((rows,) + (1,) * (jnp.ndim(e) - 1)) * e
                  + (1.0 - eps.reshape((rows,) + (1,) * (jnp.ndim(e) - 1))) * p
                  for e, p in zip(expert_inputs, policy_inputs))
    grads = jax.grad(lambda xs: jnp.sum(logit_fn(*xs)))(mixed)
    squared = sum(jnp.sum(jnp.square(g).reshape(rows, -1), axis=1) for g in grads)
    norm = jnp.sqrt(squared + 1e-12)  # the epsilon keeps the gradient finite at a zero gradient
    return jnp.mean(jnp.square(norm - 1.0))


def gail_reward(logits: jax.Array, form: str) -> jax.Array:
    """GAIL's policy reward from D = sigmoid(logit): 'positive' -log(1 - D) = softplus(logit) (>= 0, so surviving
    pays, as in Ho & Ermon's implementation and the imitation library), or 'logit' log D - log(1 - D) = logit."""
    _check_vector("logits", logits)
    if form == "positive":
        return jax.nn.softplus(logits)
    if form == "logit":
        return logits
    raise ValueError(f"unknown GAIL reward form {form!r}")


def shaped_reward(g: jax.Array, h: jax.Array, next_h: jax.Array, terminations: jax.Array, gamma: float) -> jax.Array:
    """AIRL's f(s, a, s') = g(s, a) + gamma * (1 - terminated) * h(s') - h(s): no potential after a true end."""
    for name, x in (("g", g), ("h", h), ("next_h", next_h), ("terminations", terminations)):
        _check_vector(name, x)
        if jnp.shape(x) != jnp.shape(g):
            raise ValueError(f"{name} has shape {jnp.shape(x)} but g has {jnp.shape(g)}")
    return g + gamma * (1.0 - terminations) * next_h - h


# -- one gradient step --------------------------------------------------------------------------------------------
def optimizer(cfg: AdversarialConfig) -> optax.GradientTransformation:
    return optax.adam(cfg.disc_lr)


def init_state(params: Any, cfg: AdversarialConfig) -> DiscState:
    return DiscState(params=params, opt_state=optimizer(cfg).init(params))


def _loss(algo, cfg, params, expert: Batch, policy: Batch, expert_log_pi, policy_log_pi, key):
    gamma = rl_gamma(cfg)
    expert_logits = algo.logits(cfg, params, expert, expert_log_pi, gamma)
    policy_logits = algo.logits(cfg, params, policy, policy_log_pi, gamma)
    loss, metrics = discriminator_loss(expert_logits, policy_logits)
    if cfg.grad_penalty > 0:
        # AIRL's f also reads terminations; the interpolates take the policy rows' (they are not differentiated)
        def logit_fn(obs, actions, next_obs):
            return algo.learned_logit(cfg, params, policy.replace(observations=obs, actions=actions,
                                                                  next_observations=next_obs), gamma)

        penalty = gradient_penalty(logit_fn, (expert.observations, expert.actions, expert.next_observations),
                                   (policy.observations, policy.actions, policy.next_observations), key)
        loss = loss + cfg.grad_penalty * penalty
        metrics["grad_penalty"] = penalty
    return loss, metrics


def evaluate(algo, cfg: AdversarialConfig, disc: DiscState, expert: Batch, policy: Batch, expert_log_pi: jax.Array,
             policy_log_pi: jax.Array, key: jax.Array) -> dict[str, jax.Array]:
    """The loss and accuracies of the current discriminator on these batches, without a step."""
    return _loss(algo, cfg, disc.params, expert, policy, expert_log_pi, policy_log_pi, key)[1]


def step(algo, cfg: AdversarialConfig, disc: DiscState, expert: Batch, policy: Batch, expert_log_pi: jax.Array,
         policy_log_pi: jax.Array, key: jax.Array) -> tuple[DiscState, dict[str, jax.Array]]:
    """One Adam step on the discriminator loss (+ gradient penalty). Metrics are those before the step."""
    grads, metrics = jax.grad(lambda p: _loss(algo, cfg, p, expert, policy, expert_log_pi, policy_log_pi, key),
                              has_aux=True)(disc.params)
    updates, opt_state = optimizer(cfg).update(grads, disc.opt_state, disc.params)
    return DiscState(params=optax.apply_updates(disc.params, updates), opt_state=opt_state), metrics
