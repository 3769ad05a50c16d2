"""Tanh-squashed Gaussian action head ("tanh-gaussian"): the SAC actor, also usable for BC."""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from understudy.algos import losses
from understudy.nets.heads.gaussian import bounded_log_std
from understudy.nets.mlp import MLP


class TanhGaussianHead(nn.Module):
    """obs -> a = tanh(u), u ~ N(mean, diag(std^2)); log-probs include the tanh change of variables.

    `sample_and_log_prob` is reparameterized (gradients flow through the sample), which is what SAC's
    actor loss needs. For BC, `loss` is the negative log-likelihood of data actions, clipped just inside
    (-1, 1) so actions recorded at the bounds stay finite; with `nll_beta` > 0 the pre-tanh Gaussian's part
    is the beta-NLL (losses.beta_gaussian_nll; the tanh Jacobian does not depend on the parameters).
    """

    action_dim: int
    hidden_dims: tuple[int, ...] = (256, 256)
    log_std_min: float = -5.0
    log_std_max: float = 2.0
    action_eps: float = 1e-6  # data actions are clipped to [-1 + eps, 1 - eps] before atanh
    nll_beta: float = 0.0  # BC loss: 0 is the negative log-likelihood, > 0 the beta-NLL of the pre-tanh Gaussian

    def setup(self):
        self.torso = MLP(self.hidden_dims)
        self.mean_layer = nn.Dense(self.action_dim)
        self.log_std_layer = nn.Dense(self.action_dim)

    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(mean, log_std) of the pre-tanh Gaussian, each [..., A]."""
        h = self.torso(obs)
        return self.mean_layer(h), bounded_log_std(self.log_std_layer(h), self.log_std_min, self.log_std_max)

    def sample_and_log_prob(self, obs: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        mean, log_std = self(obs)
        return _sample_and_log_prob(mean, log_std, key)

    def samples_and_log_probs(self, obs: jax.Array, key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
        """n samples per observation, [..., n, A], with their log-probs [..., n]: one forward pass, not n.

        Equal to `sample_and_log_prob` on the observations repeated n times along a new axis -2, with the same
        key (CQL's proposal actions), at 1/n of the network's cost.
        """
        mean, log_std = self(obs)
        shape = (*mean.shape[:-1], n, mean.shape[-1])
        return _sample_and_log_prob(jnp.broadcast_to(mean[..., None, :], shape),
                                    jnp.broadcast_to(log_std[..., None, :], shape), key)

    def log_prob(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        mean, log_std = self(obs)
        return losses.tanh_gaussian_log_prob(mean, log_std, jnp.asarray(action, jnp.float32), self.action_eps)

    def loss(self, obs: jax.Array, action: jax.Array, key: Optional[jax.Array] = None) -> jax.Array:
        if not self.nll_beta:
            return -self.log_prob(obs, action)
        mean, log_std = self(obs)
        action = jnp.asarray(action, jnp.float32)
        pre_tanh = jnp.arctanh(jnp.clip(action, -1.0 + self.action_eps, 1.0 - self.action_eps))
        log_jacobian = jnp.sum(losses.log_one_minus_tanh_sq(pre_tanh), axis=-1)
        return losses.beta_gaussian_nll(mean, log_std, pre_tanh, self.nll_beta) + log_jacobian

    def sample(self, obs: jax.Array, key: jax.Array) -> jax.Array:
        return self.sample_and_log_prob(obs, key)[0]

    def mode(self, obs: jax.Array) -> jax.Array:
        mean, _ = self(obs)
        return jnp.tanh(mean)


def _sample_and_log_prob(mean: jax.Array, log_std: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """A reparameterized draw tanh(mean + std * eps) and its log-prob, for Gaussians of any leading shape."""
    pre_tanh = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape, mean.dtype)
    return jnp.tanh(pre_tanh), losses.tanh_gaussian_log_prob_from_pre_tanh(mean, log_std, pre_tanh)
