"""A loaded policy export: `policy = understudy.load_policy(path); action = policy(obs)`."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from understudy.checkpoint import read_policy_files, unflatten_params
from understudy.data.normalize import normalize
from understudy.types import ArraySpec, EnvSpec, UnderstudyError


@functools.lru_cache(maxsize=256)
def _bounds_affine(action: ArraySpec) -> tuple[np.ndarray, np.ndarray] | None:
    """(low, (high - low) / 2) of a bounded Box action spec, else None; cached because training loops map an
    action every env step, and rebuilding these arrays and checks on each call cost more than the mapping."""
    if action.low is None or action.high is None:
        return None
    low, high = np.asarray(action.low, np.float32), np.asarray(action.high, np.float32)
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        return None
    half_range = 0.5 * (high - low)
    low.flags.writeable = half_range.flags.writeable = False  # shared by every caller
    return low, half_range


def to_env_action(action, spec: EnvSpec):
    """Maps a normalized action in [-1, 1] to the env's bounds (identity for discrete or unbounded spaces)."""
    if spec.discrete:
        return action
    affine = _bounds_affine(spec.action)
    if affine is None:
        return action
    low, half_range = affine
    return low + (action + 1.0) * half_range


def from_env_action(action, spec: EnvSpec):
    """Inverse of `to_env_action`: env-bounded actions -> [-1, 1] (clipped)."""
    if spec.discrete:
        return action
    affine = _bounds_affine(spec.action)
    if affine is None:
        return action
    low, half_range = affine
    return np.clip((np.asarray(action, np.float32) - low) / half_range - 1.0, -1.0, 1.0)


class Policy:
    """A policy network with its observation normalizer and action scaling, callable on numpy observations.

    `policy(obs)` takes one observation or a batch and returns env actions of the same batching.
    Deterministic (the head's mode) by default; `deterministic=False` samples using the policy's own key.
    """

    def __init__(self, head_config: dict, params: Any, spec: EnvSpec, normalizer: dict | None = None,
                 metadata: dict | None = None, seed: int = 0):
        from understudy.nets.heads import make_head

        self.head_config = dict(head_config)
        self.module = make_head(**self.head_config)
        self.params = jax.device_put(params)
        self.spec = spec
        self.normalizer = None if normalizer is None else {k: jnp.asarray(v) for k, v in normalizer.items()}
        self.metadata = metadata or {}
        self._key = jax.random.PRNGKey(seed)
        module, norm = self.module, self.normalizer

        def mode(params, obs):
            return module.apply(params, normalize(obs, norm), method=module.mode)

        def sample(params, obs, key):
            return module.apply(params, normalize(obs, norm), key, method=module.sample)

        self._mode = jax.jit(mode)
        self._sample = jax.jit(sample)

    def __call__(self, obs, deterministic: bool = True):
        obs = np.asarray(obs, np.float32)
        single = obs.shape == tuple(self.spec.obs_shape)
        batch = obs[None] if single else obs
        if batch.shape[1:] != tuple(self.spec.obs_shape):
            raise UnderstudyError(f"Observation shape {obs.shape} does not match the policy's observation shape "
                                  f"{tuple(self.spec.obs_shape)} (env {self.spec.env_id}, options {self.spec.options}). "
                                  "Make the env with the same options (task bit, wrappers) as in training.")
        if deterministic:
            action = self._mode(self.params, batch)
        else:
            self._key, key = jax.random.split(self._key)
            action = self._sample(self.params, batch, key)
        action = to_env_action(np.asarray(action), self.spec)
        return action[0] if single else action

    def __repr__(self) -> str:
        return f"Policy(env={self.spec.env_id}, head={self.head_config.get('name')}, normalizer={self.normalizer is not None})"


def load_policy(path: str | os.PathLike, seed: int = 0) -> Policy:
    """Loads a policy export directory (policy.json + policy.safetensors). Errors name the file and the fix."""
    description, tensors = read_policy_files(path)
    json_path = Path(path) / "policy.json"
    try:
        spec = EnvSpec.from_dict(description["spec"])
    except (KeyError, TypeError, ValueError) as e:
        raise UnderstudyError(f"{json_path}: field 'spec' is malformed ({e}); re-export the policy from its run.") from None
    params = unflatten_params(tensors)
    normalizer = None
    if description.get("normalizer"):
        if "normalizer/mean" not in tensors or "normalizer/std" not in tensors:
            raise UnderstudyError(f"{Path(path) / 'policy.safetensors'} lacks the observation normalizer that "
                                  f"{json_path} declares; the export is incomplete. Re-export it from its run.")
        normalizer = {"mean": tensors["normalizer/mean"], "std": tensors["normalizer/std"]}
    try:
        policy = Policy(description["head"], params, spec, normalizer, description.get("metadata"), seed=seed)
    except UnderstudyError:
        raise
    except (TypeError, KeyError, ValueError) as e:
        raise UnderstudyError(f"{json_path}: field 'head' does not describe a known network ({e}). "
                              "Re-export the policy with this version of understudy.") from None
    _check_params_match(policy, Path(path))
    return policy


def _check_params_match(policy: Policy, path: Path) -> None:
    """The stored weights must have exactly the shapes that the described network expects."""
    dummy = jnp.zeros((1, *policy.spec.obs_shape), jnp.float32)
    expected = jax.eval_shape(policy.module.init, jax.random.PRNGKey(0), dummy)
    want = jax.tree_util.tree_map(lambda x: tuple(x.shape), dict(expected))
    have = jax.tree_util.tree_map(lambda x: tuple(np.shape(x)), policy.params)
    if want != have:
        raise UnderstudyError(f"{path / 'policy.safetensors'}: the stored weights do not match the network described "
                              f"in {path / 'policy.json'} (different names or shapes). The export is mis-shaped or was "
                              "edited by hand; re-export the policy from its run.")
