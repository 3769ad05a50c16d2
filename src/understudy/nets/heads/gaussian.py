"""Diagonal Gaussian action head trained by log-likelihood ("gaussian")."""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from understudy.algos import losses
from understudy.nets.heads.activations import activation_fn
from understudy.nets.mlp import MLP


def bounded_log_std(raw: jax.Array, log_std_min: float, log_std_max: float) -> jax.Array:
    """Map an unbounded network output smoothly into [log_std_min, log_std_max] (as CleanRL's SAC does)."""
    return log_std_min + 0.5 * (log_std_max - log_std_min) * (jnp.tanh(raw) + 1.0)


class GaussianHead(nn.Module):
    """obs -> N(mean, diag(std^2)) over the normalized action; loss = negative log-likelihood.

    The mean is unbounded (the likelihood of data at the box edge stays finite); `sample` and `mode` clip
    to [-1, 1]. `log_prob` is the density of the unclipped Gaussian.
    """

    action_dim: int
    hidden_dims: tuple[int, ...] = (256, 256)
    log_std_min: float = -5.0
    log_std_max: float = 2.0
    state_dependent_std: bool = True  # False: one learned log-std vector shared by every state
    activation: str = "relu"  # torso activation by name (see activations.py); PPO uses "tanh"
    nll_beta: float = 0.0  # training loss: 0 is the negative log-likelihood, > 0 the beta-NLL (losses.beta_gaussian_nll)

    def setup(self):
        self.torso = MLP(self.hidden_dims, activation=activation_fn(self.activation))
        self.mean_layer = nn.Dense(self.action_dim)
        if self.state_dependent_std:
            self.log_std_layer = nn.Dense(self.action_dim)
        else:
            self.log_std_param = self.param("log_std", nn.initializers.zeros, (self.action_dim,))

    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(mean, log_std), each [..., A]."""
        h = self.torso(obs)
        mean = self.mean_layer(h)
        if self.state_dependent_std:
            log_std = bounded_log_std(self.log_std_layer(h), self.log_std_min, self.log_std_max)
        else:
            log_std = jnp.broadcast_to(jnp.clip(self.log_std_param, self.log_std_min, self.log_std_max), mean.shape)
        return mean, log_std

    def log_prob(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        mean, log_std = self(obs)
        return losses.gaussian_log_prob(mean, log_std, jnp.asarray(action, jnp.float32))

    def loss(self, obs: jax.Array, action: jax.Array, key: Optional[jax.Array] = None) -> jax.Array:
        mean, log_std = self(obs)
        return losses.beta_gaussian_nll(mean, log_std, jnp.asarray(action, jnp.float32), self.nll_beta)

    def sample(self, obs: jax.Array, key: jax.Array) -> jax.Array:
        mean, log_std = self(obs)
        noise = jax.random.normal(key, mean.shape, mean.dtype)
        return jnp.clip(mean + jnp.exp(log_std) * noise, -1.0, 1.0)

    def mode(self, obs: jax.Array) -> jax.Array:
        mean, _ = self(obs)
        return jnp.clip(mean, -1.0, 1.0)
