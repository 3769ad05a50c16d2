"""Generative adversarial imitation learning (Ho & Ermon 2016) around SAC or PPO.

A discriminator D(s, a) = sigmoid(MLP(s, a)) learns to tell the expert's transitions (from --dataset) from the
policy's; the policy is trained by the wrapped RL algorithm on the reward -log(1 - D(s, a)) (or, with
--reward-form logit, log D - log(1 - D)); the environment's reward is never used. With --rl sac the rewards of
replay batches are computed by the current discriminator inside each jitted update; with --rl ppo each
rollout's rewards are replaced before GAE. The loop is understudy.train.adversarial; the shared pieces
(settings, loss, gradient penalty) are in understudy.algos.discriminator.

Why -log(1 - D) by default (the imitation library's GAIL reward, -logsigmoid(-logit)): it is positive, so in a
terminating env (Hopper) staying alive pays, and it is bounded below by 0 where the policy is far from the
expert (log D would go to -inf there). --reward-form logit gives log D - log(1 - D), AIRL's form, which has no
survival bonus (suited to tasks that should end early).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import jax
import jax.numpy as jnp

from understudy.algos import discriminator
from understudy.algos.discriminator import AdversarialConfig, ScalarMLP
from understudy.types import Batch, EnvSpec

USES_LOG_PROB = False  # GAIL's discriminator does not look at the policy's density


@dataclasses.dataclass(frozen=True)
class Config(AdversarialConfig):
    """GAIL: discriminator D(s, a) around --rl sac|ppo, expert data from --dataset."""

    reward_form: Literal["positive", "logit"] = "positive"
    """Policy reward from D: positive = -log(1 - D(s, a)) (>= 0); logit = log D - log(1 - D)."""
    state_only: bool = False
    """Discriminate on states alone, D(s) (imitation from observations); default D(s, a)."""


def method_name(cfg: Config) -> str:
    return f"gail-{cfg.rl}"


def check(cfg: Config) -> None:
    discriminator.check_config(cfg, "gail")


def _inputs(cfg: Config, batch: Batch) -> jax.Array:
    obs = discriminator.clip_observations(cfg, batch.observations)
    return obs if cfg.state_only else jnp.concatenate([obs, jnp.asarray(batch.actions, jnp.float32)], axis=-1)


def _network(cfg: Config) -> ScalarMLP:
    return ScalarMLP(cfg.disc_hidden_dims)


def init_params(cfg: Config, spec: EnvSpec, key: jax.Array) -> Any:
    """Discriminator parameters for observations of spec.obs_dim numbers and action features of spec.action_dim."""
    width = spec.obs_dim + (0 if cfg.state_only else spec.action_dim)
    return _network(cfg).init(key, jnp.zeros((1, width), jnp.float32))


def learned_logit(cfg: Config, params: Any, batch: Batch, gamma: float) -> jax.Array:
    """The discriminator's logit [B]: D = sigmoid(logit) is the probability the transition is the expert's."""
    del gamma
    return _network(cfg).apply(params, _inputs(cfg, batch))


def logits(cfg: Config, params: Any, batch: Batch, log_pi: Any, gamma: float) -> jax.Array:
    del log_pi
    return learned_logit(cfg, params, batch, gamma)


def policy_reward(cfg: Config, params: Any, batch: Batch, log_pi: Any, gamma: float) -> jax.Array:
    """The reward [B] the RL algorithm sees (a constant: no gradient flows into the discriminator)."""
    logit = logits(cfg, params, batch, log_pi, gamma)
    return jax.lax.stop_gradient(discriminator.gail_reward(logit, cfg.reward_form))
