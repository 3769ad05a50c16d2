"""Observation normalizer: statistics fitted once on data, saved beside the model (policy export)."""

from __future__ import annotations

import numpy as np


def fit_normalizer(observations: np.ndarray, min_std: float = 1e-3) -> dict[str, np.ndarray]:
    """Per-feature mean and std of `observations` [N, ...]; std is floored so constant features stay finite."""
    x = np.asarray(observations, np.float64).reshape(len(observations), -1)
    mean = x.mean(axis=0)
    std = np.maximum(x.std(axis=0), min_std)
    shape = np.asarray(observations).shape[1:]
    return {"mean": mean.reshape(shape).astype(np.float32), "std": std.reshape(shape).astype(np.float32)}


def normalize(observations, normalizer: dict | None):
    """(obs − mean) / std; identity when `normalizer` is None. Works on numpy and jax arrays."""
    if normalizer is None:
        return observations
    return (observations - normalizer["mean"]) / normalizer["std"]
