"""Categorical head for discrete action spaces ("categorical"); action_dim is the number of actions."""

from __future__ import annotations

from typing import ClassVar, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from understudy.algos import losses
from understudy.nets.heads.activations import activation_fn
from understudy.nets.mlp import MLP


class CategoricalHead(nn.Module):
    """obs -> logits over `action_dim` actions; loss = cross-entropy; actions are int32 [...]."""

    discrete_actions: ClassVar[bool] = True  # read by make_head's users to match heads to action spaces

    action_dim: int
    hidden_dims: tuple[int, ...] = (256, 256)
    activation: str = "relu"  # torso activation by name (see activations.py); PPO uses "tanh"

    def setup(self):
        self.torso = MLP(self.hidden_dims, activation=activation_fn(self.activation))
        self.logits_layer = nn.Dense(self.action_dim)

    def __call__(self, obs: jax.Array) -> jax.Array:
        """Logits [..., N]."""
        return self.logits_layer(self.torso(obs))

    def _labels(self, logits: jax.Array, action: jax.Array) -> jax.Array:
        # Datasets store discrete actions as [B] or [B, 1], integer or float; accept both.
        action = jnp.asarray(action)
        if action.ndim == logits.ndim:
            action = action[..., 0]
        return action.astype(jnp.int32)

    def log_prob(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        logits = self(obs)
        return -losses.categorical_nll(logits, self._labels(logits, action))

    def loss(self, obs: jax.Array, action: jax.Array, key: Optional[jax.Array] = None) -> jax.Array:
        return -self.log_prob(obs, action)

    def sample(self, obs: jax.Array, key: jax.Array) -> jax.Array:
        return jax.random.categorical(key, self(obs), axis=-1).astype(jnp.int32)

    def mode(self, obs: jax.Array) -> jax.Array:
        return jnp.argmax(self(obs), axis=-1).astype(jnp.int32)
