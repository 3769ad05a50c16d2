"""Deterministic action head trained by mean squared error ("mse")."""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from understudy.algos import losses
from understudy.nets.mlp import MLP


class DeterministicHead(nn.Module):
    """obs -> action, tanh-squashed into [-1, 1]; loss = per-example MSE against the data action.

    There is no likelihood, so no `log_prob`; `sample` returns the mode (the key is unused).
    """

    action_dim: int
    hidden_dims: tuple[int, ...] = (256, 256)
    squash: bool = True  # tanh on the output so actions stay inside the normalized box

    def setup(self):
        self.torso = MLP(self.hidden_dims)
        self.action_layer = nn.Dense(self.action_dim)

    def __call__(self, obs: jax.Array) -> jax.Array:
        out = self.action_layer(self.torso(obs))
        return jnp.tanh(out) if self.squash else out

    def loss(self, obs: jax.Array, action: jax.Array, key: Optional[jax.Array] = None) -> jax.Array:
        return losses.mse(self(obs), jnp.asarray(action, jnp.float32))

    def sample(self, obs: jax.Array, key: Optional[jax.Array] = None) -> jax.Array:
        return self.mode(obs)

    def mode(self, obs: jax.Array) -> jax.Array:
        return jnp.clip(self(obs), -1.0, 1.0)
