"""Policy heads: complete policy networks (MLP torso + output distribution) chosen by name.

Every head is a flax linen Module with fields `action_dim` and `hidden_dims` (plus its own options) and the
methods, called as `module.apply(params, ..., method="name")`:
    __call__(obs)                 distribution parameters (used by `init`)
    loss(obs, action, key)   [B]  per-example training loss (negative log-likelihood, or MSE)
    sample(obs, key)      [B, A]  a stochastic action in [-1, 1]^A (int32 [B] for categorical)
    mode(obs)             [B, A]  the deterministic action: the most likely one (gmm: optionally the expected one)
    log_prob(obs, action)    [B]  where a density exists
and tanh-gaussian also has `sample_and_log_prob(obs, key)` (reparameterized, for SAC).

`head_config(...)` returns a JSON-ready dict and `make_head(**config)` rebuilds the same module; the policy
export stores that dict. New heads register with `register_head(name, cls)` (or an entry below).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn

from understudy.nets.heads.autoregressive import AutoregressiveHead
from understudy.nets.heads.categorical import CategoricalHead
from understudy.nets.heads.deterministic import DeterministicHead
from understudy.nets.heads.diffusion import DiffusionHead
from understudy.nets.heads.ensemble import EnsembleHead
from understudy.nets.heads.gaussian import GaussianHead
from understudy.nets.heads.gmm import GMMHead
from understudy.nets.heads.tanh_gaussian import TanhGaussianHead
from understudy.types import UnderstudyError

HEADS: dict[str, type[nn.Module]] = {
    "mse": DeterministicHead,
    "gaussian": GaussianHead,
    "tanh-gaussian": TanhGaussianHead,
    "categorical": CategoricalHead,
    "gmm": GMMHead,
    "diffusion": DiffusionHead,
    "autoregressive": AutoregressiveHead,
    "ensemble": EnsembleHead,  # copies of another head (BC --ensemble-size), acting with their mean
}

# Fields every head has, set by make_head's named arguments rather than **kw.
_COMMON_FIELDS = ("action_dim", "hidden_dims")


def register_head(name: str, cls: type[nn.Module]) -> type[nn.Module]:
    """Add a head class under `name` (a later registration of the same name replaces the earlier one)."""
    HEADS[name] = cls
    return cls


def is_discrete_head(name: str) -> bool:
    """True for heads over a finite set of actions (categorical), False for continuous-action heads."""
    return bool(getattr(_head_class(name), "discrete_actions", False))


def _head_class(name: str) -> type[nn.Module]:
    if name not in HEADS:
        raise UnderstudyError(f"Unknown action head {name!r}. Choose one of: {', '.join(sorted(HEADS))} "
                              "(for example `--head mse`).")
    return HEADS[name]


def _hashable(value: Any) -> Any:
    # JSON turns tuples into lists; module fields must be hashable (jit static arguments), so undo that.
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


def make_head(name: str, *, action_dim: int, hidden_dims: tuple[int, ...] = (256, 256), **kw: Any) -> nn.Module:
    """Build the head registered as `name` (see HEADS) for `action_dim` actions with an MLP torso."""
    cls = _head_class(name)
    fields = {f.name for f in dataclasses.fields(cls)} - {"parent", "name"}
    unknown = sorted(set(kw) - fields)
    if unknown:
        options = sorted(fields - set(_COMMON_FIELDS))
        raise UnderstudyError(f"Action head {name!r} has no option(s) {unknown}; its options are {options}. "
                              "Remove the unknown option(s) (check the head name and the policy.json file).")
    if int(action_dim) < 1:
        raise UnderstudyError(f"Action head {name!r} needs action_dim >= 1, got {action_dim}.")
    kw = {k: _hashable(v) for k, v in kw.items()}
    return cls(action_dim=int(action_dim), hidden_dims=tuple(int(h) for h in hidden_dims), **kw)


def head_config(name: str, action_dim: int, hidden_dims: tuple[int, ...] = (256, 256), **kw: Any) -> dict:
    """A JSON-ready dict such that `make_head(**head_config(...))` rebuilds the same module."""
    make_head(name, action_dim=action_dim, hidden_dims=hidden_dims, **kw)  # validate now, not at load time
    return {"name": name, "action_dim": int(action_dim), "hidden_dims": [int(h) for h in hidden_dims],
            **{k: _jsonable(v) for k, v in kw.items()}}


__all__ = ["HEADS", "make_head", "head_config", "register_head", "is_discrete_head", "DeterministicHead",
           "GaussianHead", "TanhGaussianHead", "CategoricalHead", "GMMHead", "DiffusionHead",
           "AutoregressiveHead", "EnsembleHead"]
