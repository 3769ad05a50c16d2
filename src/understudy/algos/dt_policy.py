"""A saved Decision Transformer policy: `dt_policy.safetensors` (parameters, observation normalizer) +
`dt_policy.json` (network, spec, target return, return scale, metadata). No pickle.

    policy = DTPolicy.load("runs/dt-x/final")
    result = policy.evaluate("Hopper-v5", episodes=10)            # autoregressive rollouts with a history
    actions = policy.act(history)                                  # one step for a batch of history windows

`understudy eval DIR --env ID` runs these exports (cli.py checks `is_dt_policy(DIR)`). The history the policy
reads holds raw observations; it standardizes them with the saved normalizer, as in training.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from understudy.checkpoint import flatten_params, read_export_files, unflatten_params, write_export
from understudy.types import EnvSpec, UnderstudyError

FORMAT = "understudy-dt-policy"
STEM = "dt_policy"
_REDO = "re-export it from its run (final/ or best/)"


def normalize_history(history: dict, normalizer: Optional[dict]) -> dict:
    """The history with its states standardized (padding positions stay zero, as in training windows)."""
    if normalizer is None:
        return history
    mask = history["mask"].astype(bool)[..., None]
    state = jnp.where(mask, (history["state"] - normalizer["mean"]) / normalizer["std"], 0.0)
    return {**history, "state": state}


@functools.partial(jax.jit, static_argnums=0)  # one compilation for every policy with the same network
def _newest_action(net, params: Any, history: dict, normalizer: Optional[dict]) -> jax.Array:
    from understudy.algos.dt import apply_network

    return apply_network(net, params, normalize_history(history, normalizer))[:, -1]


def is_dt_policy(directory: str | Path) -> bool:
    return (Path(directory) / f"{STEM}.json").exists()


def save_dt_policy(directory: str | Path, *, network: dict, params: Any, spec: EnvSpec, normalizer: Optional[dict],
                   target_return: float, return_scale: float, metadata: Optional[dict] = None) -> Path:
    """Writes the export atomically (readers see the old export or the new one, never a mix)."""
    tensors = flatten_params(jax.device_get(params))
    if normalizer is not None:
        tensors["normalizer/mean"] = np.asarray(normalizer["mean"], np.float32)
        tensors["normalizer/std"] = np.asarray(normalizer["std"], np.float32)
    description = {"format": FORMAT, "version": 1, "network": dict(network), "spec": spec.to_dict(),
                   "normalizer": normalizer is not None, "target_return": float(target_return),
                   "return_scale": float(return_scale), "metadata": dict(metadata or {})}
    return write_export(directory, tensors, description, STEM)


class DTPolicy:
    """A loaded Decision Transformer with its normalizer, target return and action scaling."""

    def __init__(self, network: dict, params: Any, spec: EnvSpec, normalizer: Optional[dict], target_return: float,
                 return_scale: float, metadata: Optional[dict] = None):
        from understudy.algos.dt import build_network

        self.network = dict(network)
        self.net = build_network(self.network)
        self.params = jax.device_put(params)
        self.spec = spec
        self.normalizer = None if normalizer is None else {k: jnp.asarray(v) for k, v in normalizer.items()}
        self.target_return, self.return_scale = float(target_return), float(return_scale)
        self.metadata = dict(metadata or {})

    @property
    def context(self) -> int:
        return int(self.network["context"])

    def act(self, history: dict) -> np.ndarray:
        """Actions in [-1, 1] [B, A] for the newest step of history windows [B, K, ...] (keys: state, action,
        return_to_go (scaled), timestep, mask; see understudy.eval.dt_rollouts)."""
        history = {k: jnp.asarray(v) for k, v in history.items()}
        return np.asarray(_newest_action(self.net, self.params, history, self.normalizer))

    def evaluate(self, env_id: Optional[str] = None, *, episodes: int = 10, seed: int = 0,
                 env_options: Optional[dict] = None, target_return: Optional[float] = None) -> dict:
        """{returns, lengths, mean, std, success_rate} over `episodes` rollouts asking for `target_return`
        (default: the one saved with the policy)."""
        from understudy.eval.dt_rollouts import evaluate_history_seeds

        def act(windows):  # leading axes [1, n]
            flat = {k: v[0] for k, v in windows.items()}
            return self.act(flat)[None]

        target = self.target_return if target_return is None else float(target_return)
        return evaluate_history_seeds(act, self.spec, context=self.context, target_return=target,
                                      return_scale=self.return_scale, num_seeds=1, episodes=episodes, seed=seed,
                                      env_id=env_id, env_options=env_options)[0]

    def save(self, directory: str | Path) -> Path:
        return save_dt_policy(directory, network=self.network, params=self.params, spec=self.spec,
                              normalizer=self.normalizer, target_return=self.target_return,
                              return_scale=self.return_scale, metadata=self.metadata)

    @classmethod
    def load(cls, directory: str | Path) -> "DTPolicy":
        directory = Path(directory)
        if not directory.exists():
            raise UnderstudyError(f"Policy directory {directory} does not exist. Pass a Decision Transformer run's "
                                  "best/ or final/ directory (holding dt_policy.json and dt_policy.safetensors).")
        if not is_dt_policy(directory):
            seeds = sorted(p.name for p in directory.glob("seed*") if is_dt_policy(p))
            hint = f" It holds one export per seed: pass one of them, e.g. {directory / seeds[0]}." if seeds else ""
            raise UnderstudyError(f"{directory} is not a Decision Transformer export (no {STEM}.json).{hint}")
        description, tensors = read_export_files(
            directory, STEM, FORMAT, required=("network", "spec", "target_return", "return_scale"), redo=_REDO)
        json_path = directory / f"{STEM}.json"
        try:
            spec = EnvSpec.from_dict(description["spec"])
            network = dict(description["network"])
            target_return, return_scale = float(description["target_return"]), float(description["return_scale"])
        except (KeyError, TypeError, ValueError) as e:
            raise UnderstudyError(f"{json_path} is malformed ({e}); {_REDO}.") from None
        normalizer = None
        if description.get("normalizer"):
            if "normalizer/mean" not in tensors or "normalizer/std" not in tensors:
                raise UnderstudyError(f"{directory / (STEM + '.safetensors')} lacks the observation normalizer that "
                                      f"{json_path} declares; the export is incomplete: {_REDO}.")
            normalizer = {"mean": tensors.pop("normalizer/mean"), "std": tensors.pop("normalizer/std")}
        try:
            policy = cls(network, unflatten_params(tensors), spec, normalizer, target_return, return_scale,
                         description.get("metadata"))
        except (TypeError, KeyError, ValueError) as e:
            raise UnderstudyError(f"{json_path}: field 'network' does not describe a Decision Transformer ({e}); "
                                  f"{_REDO}.") from None
        _check_params_match(policy, directory)
        return policy


def _check_params_match(policy: DTPolicy, directory: Path) -> None:
    """The stored weights must have exactly the names and shapes the described network expects."""
    K, d = policy.context, policy.network
    expected = jax.eval_shape(policy.net.init, jax.random.PRNGKey(0), jnp.zeros((1, K, d["obs_dim"])),
                              jnp.zeros((1, K, d["action_dim"])), jnp.zeros((1, K)), jnp.zeros((1, K), jnp.int32),
                              jnp.ones((1, K)))
    want = jax.tree_util.tree_map(lambda x: tuple(x.shape), dict(expected))
    have = jax.tree_util.tree_map(lambda x: tuple(np.shape(x)), dict(policy.params))
    if want != have:
        raise UnderstudyError(f"{directory / (STEM + '.safetensors')}: the stored weights do not match the network "
                              f"described in {directory / (STEM + '.json')} (different names or shapes). The export "
                              f"is mis-shaped or was edited by hand; {_REDO}.")
    if tuple(policy.spec.obs_shape) != (d["obs_dim"],) or policy.spec.action_dim != d["action_dim"]:
        raise UnderstudyError(f"{directory / (STEM + '.json')}: the network ({d['obs_dim']} observation, "
                              f"{d['action_dim']} action dims) does not match its spec ({policy.spec.env_id}); "
                              f"{_REDO}.")
