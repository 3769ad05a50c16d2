"""A saved instruction-following policy: `instruct_policy.safetensors` (parameters, observation normalizer) +
`instruct_policy.json` (network, instruction encoder, action spec, tasks with their instructions).

`InstructPolicy.act(obs_window, window_mask, instructions)` maps a batch of observation windows and their
instruction sentences to env actions; sentences are encoded once and remembered.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from understudy.checkpoint import flatten_params, read_export_files, unflatten_params, write_export
from understudy.instruct.model import InstructNet, build_net, net_description
from understudy.instruct.text import InstructionEncoder
from understudy.policy import to_env_action
from understudy.types import EnvSpec

FORMAT = "understudy-instruct-policy"
STEM = "instruct_policy"


def normalize_observation(obs: Any, normalizer: Optional[dict]) -> Any:
    """Standardizes the float state part ('state' kind: the array; 'pixels' kind: obs['state'])."""
    if normalizer is None:
        return obs
    if isinstance(obs, dict):
        return {**obs, "state": (obs["state"] - normalizer["mean"]) / normalizer["std"]}
    return (obs - normalizer["mean"]) / normalizer["std"]


class InstructPolicy:
    def __init__(self, net: InstructNet, params: Any, encoder: InstructionEncoder, spec: EnvSpec,
                 normalizer: Optional[dict], tasks: list[dict], metadata: Optional[dict] = None):
        self.net, self.params, self.encoder, self.spec = net, params, encoder, spec
        self.normalizer, self.tasks, self.metadata = normalizer, tasks, dict(metadata or {})
        self._encoded: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._mode = jax.jit(lambda p, o, m, i, im: net.apply(p, o, m, i, im, method="mode"))

    @property
    def window(self) -> int:
        return self.net.window

    def encode(self, sentences: list[str]) -> tuple[np.ndarray, np.ndarray]:
        missing = [s for s in dict.fromkeys(sentences) if s not in self._encoded]
        if missing:
            encoded, mask = self.encoder.encode(missing)
            for s, e, m in zip(missing, encoded, mask):
                self._encoded[s] = (e, m)
        return (np.stack([self._encoded[s][0] for s in sentences]), np.stack([self._encoded[s][1] for s in sentences]))

    def act(self, obs_window: Any, window_mask: np.ndarray, instructions: list[str]) -> np.ndarray:
        """obs_window: [B, W, ...] (a dict of such arrays for dict observations); returns env actions [B, ...]."""
        instruction, instruction_mask = self.encode(list(instructions))
        obs = jax.tree.map(jnp.asarray, normalize_observation(obs_window, self.normalizer))
        action = np.asarray(self._mode(self.params, obs, jnp.asarray(window_mask, jnp.float32),
                                       jnp.asarray(instruction), jnp.asarray(instruction_mask)))
        return action if self.spec.discrete else to_env_action(action, self.spec)

    def save(self, directory: str | Path) -> Path:
        tensors = flatten_params(jax.device_get(self.params))
        if self.normalizer is not None:
            tensors["normalizer/mean"] = np.asarray(self.normalizer["mean"], np.float32)
            tensors["normalizer/std"] = np.asarray(self.normalizer["std"], np.float32)
        description = {"format": FORMAT, "version": 1, "network": net_description(self.net),
                       "instruction_encoder": self.encoder.to_json(), "spec": self.spec.to_dict(),
                       "normalizer": self.normalizer is not None, "tasks": self.tasks, "metadata": self.metadata}
        return write_export(directory, tensors, description, STEM)

    @classmethod
    def load(cls, directory: str | Path, text_cache: Optional[str] = None) -> "InstructPolicy":
        description, tensors = read_export_files(
            Path(directory), STEM, FORMAT, required=("network", "instruction_encoder", "spec", "tasks"),
            redo="re-export it from its run (final/ or best/)")
        normalizer = None
        if description.get("normalizer"):
            normalizer = {"mean": tensors.pop("normalizer/mean"), "std": tensors.pop("normalizer/std")}
        net = build_net(description["network"])
        params = jax.tree.map(jnp.asarray, unflatten_params(tensors))
        encoder = InstructionEncoder.from_json(description["instruction_encoder"], cache_dir=text_cache)
        return cls(net, params, encoder, EnvSpec.from_dict(description["spec"]), normalizer,
                   description["tasks"], description.get("metadata"))


def is_instruct_policy(directory: str | Path) -> bool:
    return (Path(directory) / f"{STEM}.json").exists()
