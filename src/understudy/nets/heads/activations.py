"""Torso activations by name, so a head's JSON config (policy.json) can say which one it uses."""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax

from understudy.types import UnderstudyError

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {"relu": nn.relu, "tanh": nn.tanh, "elu": nn.elu,
                                                            "gelu": nn.gelu, "silu": nn.silu}


def activation_fn(name: str) -> Callable[[jax.Array], jax.Array]:
    """The activation called `name` (e.g. "relu", the default of every head, or "tanh" for PPO's networks)."""
    if name not in ACTIVATIONS:
        raise UnderstudyError(f"Unknown activation {name!r}; choose one of {', '.join(sorted(ACTIVATIONS))}.")
    return ACTIVATIONS[name]
