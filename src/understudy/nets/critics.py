"""State-action value networks: one Q MLP, and an ensemble of them evaluated in one vmapped call."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from understudy.nets.mlp import MLP


class QNetwork(nn.Module):
    """Q(s, a): an MLP on concat(obs, action) with one output. [B, D] x [B, A] -> [B]."""

    hidden_dims: tuple[int, ...] = (256, 256)
    layer_norm: bool = False

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        x = jnp.concatenate([jnp.asarray(obs, jnp.float32), jnp.asarray(action, jnp.float32)], axis=-1)
        return MLP(self.hidden_dims, output_dim=1, layer_norm=self.layer_norm, name="mlp")(x)[..., 0]


class EnsembleQ(nn.Module):
    """`num_qs` independent Q networks whose parameters are stacked on a leading axis. -> [E, B].

    nn.vmap gives each member its own initialization and evaluates all of them in one batched program
    (twin critics for SAC/TD3, larger ensembles for REDQ-style or uncertainty-based methods).
    """

    hidden_dims: tuple[int, ...] = (256, 256)
    num_qs: int = 2
    layer_norm: bool = False

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        ensemble = nn.vmap(QNetwork, variable_axes={"params": 0}, split_rngs={"params": True},
                           in_axes=None, out_axes=0, axis_size=self.num_qs)
        return ensemble(self.hidden_dims, self.layer_norm, name="qs")(obs, action)


def ensemble_member_q(ensemble: EnsembleQ, variables, index: int, obs: jax.Array, action: jax.Array) -> jax.Array:
    """Q of one member of an EnsembleQ, [B], evaluating that member alone.

    Equal to `ensemble.apply(variables, obs, action)[index]`, at 1/num_qs of its cost: TD3's actor ascends the
    first critic only, and slicing the ensemble's output would still run (and differentiate) every member.
    """
    member = jax.tree.map(lambda leaf: leaf[index], variables["params"]["qs"])
    return QNetwork(ensemble.hidden_dims, ensemble.layer_norm).apply({"params": member}, obs, action)
