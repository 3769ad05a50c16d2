"""The multilayer perceptron every head and critic is built on."""

from __future__ import annotations

from typing import Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp


class MLP(nn.Module):
    """Dense layers of `hidden_dims` units with `activation`, then an optional linear output layer.

    Inputs of shape [..., D] map to [..., hidden_dims[-1]] (no `output_dim`) or [..., output_dim].
    `activate_final` applies the activation after the last hidden layer when there is no output layer
    (a torso feeding a head's own output layers wants it on).
    """

    hidden_dims: tuple[int, ...] = (256, 256)
    output_dim: Optional[int] = None
    activation: Callable[[jax.Array], jax.Array] = nn.relu
    activate_final: bool = True
    layer_norm: bool = False  # LayerNorm after each hidden Dense (helps some offline critics)
    output_kernel_init: Optional[Callable] = None  # None: flax's default (lecun normal)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.asarray(x, jnp.float32)
        for i, width in enumerate(self.hidden_dims):
            x = nn.Dense(width, name=f"dense_{i}")(x)
            if self.layer_norm:
                x = nn.LayerNorm(name=f"norm_{i}")(x)
            last_hidden = i == len(self.hidden_dims) - 1
            if not last_hidden or self.output_dim is not None or self.activate_final:
                x = self.activation(x)
        if self.output_dim is not None:
            kwargs = {} if self.output_kernel_init is None else {"kernel_init": self.output_kernel_init}
            x = nn.Dense(self.output_dim, name="output", **kwargs)(x)
        return x
