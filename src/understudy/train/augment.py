"""Observation-noise augmentation for offline training (`--obs-noise-augment SIGMA`).

Every sampled batch gets Gaussian noise on its state observations, drawn on device inside the jitted update, so
a policy learns to act on observations as noisy as those `--obs-noise SIGMA` (or `envs.make(obs_noise=...)`)
gives it at evaluation. SIGMA is in the environment's raw observation units, the units of `--obs-noise`:
when a run standardizes observations (x - mean) / std, the noise added to the standardized batch is
N(0, (SIGMA / std)^2) per feature, which is exactly raw noise of std SIGMA passed through the normalizer.
With `--obs-noise-augment-units std`, SIGMA is instead a fraction of each feature's standard deviation in the
dataset (raw noise SIGMA * std_i): a regulariser that perturbs every feature alike, however small its spread
(HalfCheetah's first feature has std 0.03, so raw noise of 0.1 swamps it). The
task-bit one-hot (the last `num_tasks` features when the spec has one) stays exact, as the env's ObservationNoise
wrapper leaves it.

Transitions: `observations` and `next_observations` get independent noise (the critics see noisy s and s', as in
S4RL's Gaussian augmentation). Windows (Decision Transformer): the `state` leaf of every real step; padding stays
zero. The noise key is folded from the sampling key, so turning augmentation on leaves the sampling stream (and
with SIGMA = 0, every number of a run) unchanged.
"""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from understudy.data.normalize import fit_normalizer
from understudy.types import Batch, EnvSpec, UnderstudyError

NOISE_STREAM = 0x61756700  # folded into the sampling key: the noise never reuses the sampling draws
LOOPS_WITH_AUGMENTATION = ("offline", "sequence")  # the training loops that read --obs-noise-augment


NOISE_UNITS = ("raw", "std")


def noise_scale(sigma: float, spec: EnvSpec, normalizer: Optional[dict], units: str = "raw",
                observations: Optional[np.ndarray] = None) -> Optional[np.ndarray]:
    """Per-feature std of the noise in the units the algorithm sees [obs_dim] float32, or None when sigma is 0.

    units "raw": sigma in raw observation units; "std": sigma times each feature's dataset std (taken from
    `normalizer`, or from `observations` [N, obs_dim] when the run does not standardize)."""
    if units not in NOISE_UNITS:
        raise UnderstudyError(f"--obs-noise-augment-units must be one of {', '.join(NOISE_UNITS)}, got {units!r}.")
    if isinstance(sigma, bool) or not np.isfinite(sigma) or sigma < 0:
        raise UnderstudyError(f"--obs-noise-augment must be a standard deviation >= 0 (0 turns it off), got {sigma!r}.")
    if not sigma:
        return None
    if isinstance(spec.observation, dict) or len(spec.obs_shape) != 1:
        raise UnderstudyError(f"--obs-noise-augment adds noise to flat vector observations, but {spec.env_id} observes "
                              f"{spec.observation}; drop --obs-noise-augment for it.")
    scale = np.full(spec.obs_shape, float(sigma), np.float32)
    if units == "std":
        if normalizer is None:  # the algorithm sees raw features: noise of sigma times each feature's spread
            if observations is None:
                raise UnderstudyError("--obs-noise-augment-units std needs the dataset's observations or a normalizer.")
            scale = scale * fit_normalizer(np.asarray(observations, np.float32))["std"].reshape(spec.obs_shape)
        # else: standardized features have std 1, so sigma is already in the units the algorithm sees
    elif normalizer is not None:
        scale = scale / np.asarray(normalizer["std"], np.float32).reshape(spec.obs_shape)
    if spec.num_tasks:
        scale[-int(spec.num_tasks):] = 0.0
    return scale.astype(np.float32)


def _noisy(x: jax.Array, scale: jax.Array, key: jax.Array) -> jax.Array:
    return x + scale * jax.random.normal(key, x.shape, x.dtype)


def augment_transitions(batch: Batch, scale: jax.Array, key: jax.Array) -> Batch:
    """`batch` [B, obs_dim] with independent noise of per-feature std `scale` on observations and next ones."""
    k_obs, k_next = jax.random.split(key)
    return batch.replace(observations=_noisy(batch.observations, scale, k_obs),
                         next_observations=_noisy(batch.next_observations, scale, k_next))


def augment_windows(batch: Batch, scale: jax.Array, key: jax.Array) -> Batch:
    """`batch` of windows [B, W, ...] whose observations are {"state", ...}: noise on the real steps' states."""
    state = batch.observations["state"]
    noisy = _noisy(state, scale, key) * batch.mask[..., None] if batch.mask is not None else _noisy(state, scale, key)
    return batch.replace(observations={**batch.observations, "state": noisy})


def with_obs_noise(sample: Callable[[jax.Array], Batch], scale: Optional[np.ndarray],
                   augment: Callable = augment_transitions) -> Callable[[jax.Array], Batch]:
    """A sampler key -> Batch that also adds the noise (`sample` itself when scale is None: nothing changes)."""
    if scale is None:
        return sample
    scale = jnp.asarray(scale)

    def sample_noisy(key: jax.Array) -> Batch:
        return augment(sample(key), scale, jax.random.fold_in(key, NOISE_STREAM))

    return sample_noisy


def check_supported(loop_name: str, sigma: float) -> None:
    """Refuses a negative --obs-noise-augment, and any for an algorithm whose training loop does not read it
    (checked by `understudy train` before a run directory is made)."""
    if isinstance(sigma, bool) or not np.isfinite(sigma) or sigma < 0:
        raise UnderstudyError(f"--obs-noise-augment must be a standard deviation >= 0 (0 turns it off), got {sigma!r}.")
    if sigma and loop_name not in LOOPS_WITH_AUGMENTATION:
        raise UnderstudyError(f"--obs-noise-augment applies to offline training (bc, td3bc, iql, cql, dt); this "
                              f"algorithm trains with the {loop_name} loop, which does not augment. Drop the flag.")
