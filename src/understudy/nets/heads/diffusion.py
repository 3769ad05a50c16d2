"""Diffusion action head ("diffusion"): a DDPM over actions conditioned on the observation.

A network eps(obs, a_t, t) learns to predict the noise mixed into a data action at step t (Ho et al., 2020);
acting runs the T-step reverse chain from Gaussian noise, clipping each predicted clean action to [-1, 1]
(as Diffusion Policy, Diffusion-QL and IDQL do). With few steps (T = 10 by default) the cosine schedule of
Nichol & Dhariwal (2021) spreads the noise levels well; the variance-preserving "vp" schedule of
Diffusion-QL (designed for T around 5) is the alternative. There is no tractable density, so no `log_prob`.
"""

from __future__ import annotations

import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from understudy.algos import losses
from understudy.nets.heads.activations import activation_fn
from understudy.nets.mlp import MLP
from understudy.types import UnderstudyError

BETA_SCHEDULES = ("cosine", "vp")


def beta_schedule(num_steps: int, kind: str = "cosine") -> np.ndarray:
    """Noise variances beta_1..beta_T as float64 [T]; step index i in 0..T-1 below means t = i + 1."""
    if num_steps < 1:
        raise ValueError(f"diffusion num_steps must be >= 1, got {num_steps}.")
    t = np.arange(num_steps + 1, dtype=np.float64)
    if kind == "cosine":  # alpha_bar(t) = cos^2(((t/T + s) / (1 + s)) pi/2), normalized; s keeps beta_1 > 0
        s = 0.008
        f = np.cos((t / num_steps + s) / (1 + s) * math.pi / 2) ** 2
        alpha_bar = f / f[0]
        return np.clip(1.0 - alpha_bar[1:] / alpha_bar[:-1], 0.0, 0.999)
    if kind == "vp":  # Diffusion-QL's discretized VP-SDE with beta_min = 0.1, beta_max = 10
        b_min, b_max, steps = 0.1, 10.0, t[1:]
        return 1.0 - np.exp(-b_min / num_steps - 0.5 * (b_max - b_min) * (2 * steps - 1) / num_steps ** 2)
    raise ValueError(f"Unknown diffusion beta_schedule {kind!r}; choose one of {BETA_SCHEDULES}.")


def ddpm_constants(num_steps: int, kind: str = "cosine") -> dict[str, np.ndarray]:
    """Float32 [T] arrays of the forward process and of the posterior q(a_{t-1} | a_t, a_0) used in sampling."""
    betas = beta_schedule(num_steps, kind)
    alphas = 1.0 - betas
    alphas_cumprod = np.cumprod(alphas)
    prev_cumprod = np.concatenate([[1.0], alphas_cumprod[:-1]])
    return {k: v.astype(np.float32) for k, v in {
        "betas": betas,
        "alphas_cumprod": alphas_cumprod,
        # posterior mean = coef_x0 * a_0 + coef_xt * a_t
        "posterior_coef_x0": betas * np.sqrt(prev_cumprod) / (1.0 - alphas_cumprod),
        "posterior_coef_xt": (1.0 - prev_cumprod) * np.sqrt(alphas) / (1.0 - alphas_cumprod),
        "posterior_std": np.sqrt(betas * (1.0 - prev_cumprod) / (1.0 - alphas_cumprod)),
    }.items()}


def draw_step_and_noise(key: jax.Array, action_shape: tuple[int, ...], num_steps: int) -> tuple[jax.Array, jax.Array]:
    """The training draw for actions [..., A]: a step index int32 [...] uniform in 0..T-1 and noise [..., A]."""
    step_key, noise_key = jax.random.split(key)
    step = jax.random.randint(step_key, action_shape[:-1], 0, num_steps)
    return step, jax.random.normal(noise_key, action_shape, jnp.float32)


def forward_noise(alphas_cumprod: jax.Array, action: jax.Array, step: jax.Array, noise: jax.Array) -> jax.Array:
    """a_t = sqrt(alpha_bar_t) a_0 + sqrt(1 - alpha_bar_t) noise, a sample of q(a_t | a_0): [..., A]."""
    alpha_bar = jnp.asarray(alphas_cumprod)[step][..., None]
    return jnp.sqrt(alpha_bar) * action + jnp.sqrt(1.0 - alpha_bar) * noise


def sinusoidal_embedding(step: jax.Array, dim: int) -> jax.Array:
    """Transformer-style sin/cos features of an integer step: [...] -> [..., dim]."""
    half = dim // 2
    freqs = jnp.exp(-math.log(10_000.0) * jnp.arange(half, dtype=jnp.float32) / max(half - 1, 1))
    angles = jnp.asarray(step, jnp.float32)[..., None] * freqs
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


class NoiseNet(nn.Module):
    """eps(obs, a_t, t): an MLP over [obs, a_t, time features], the time features from a small MLP on sin/cos."""

    action_dim: int
    hidden_dims: tuple[int, ...]
    time_dim: int
    activation: str
    layer_norm: bool

    @nn.compact
    def __call__(self, obs: jax.Array, noisy_action: jax.Array, step: jax.Array) -> jax.Array:
        act = activation_fn(self.activation)
        time = nn.Dense(self.time_dim, name="time_out")(act(nn.Dense(2 * self.time_dim, name="time_in")(
            sinusoidal_embedding(step, self.time_dim))))
        x = jnp.concatenate([jnp.asarray(obs, jnp.float32), noisy_action, time], axis=-1)
        return MLP(self.hidden_dims, output_dim=self.action_dim, activation=act, layer_norm=self.layer_norm,
                   name="mlp")(x)


class DiffusionHead(nn.Module):
    """DDPM policy: loss = MSE between injected and predicted noise at one random step per example.

    `sample` runs the full reverse chain from a_T ~ N(0, I), adding the posterior noise at every step but
    the last. `mode` runs the same chain from a_T = 0 with no noise added: a deterministic action (the
    chain's noise-free path), not the density's peak, which a diffusion model cannot compute.
    """

    action_dim: int
    hidden_dims: tuple[int, ...] = (256, 256)
    num_steps: int = 10
    beta_schedule: str = "cosine"
    time_dim: int = 32  # width of the time embedding
    activation: str = "silu"  # smooth activations are the usual choice for denoisers (mish in Diffusion-QL)
    layer_norm: bool = False

    def __post_init__(self):
        if self.num_steps < 1 or self.beta_schedule not in BETA_SCHEDULES:
            raise UnderstudyError(f"diffusion head options: num_steps must be >= 1 (got {self.num_steps}) and "
                                  f"beta_schedule one of {BETA_SCHEDULES} (got {self.beta_schedule!r}).")
        super().__post_init__()

    def setup(self):
        self.noise_net = NoiseNet(self.action_dim, self.hidden_dims, self.time_dim, self.activation, self.layer_norm)

    @property
    def constants(self) -> dict[str, jax.Array]:
        return {k: jnp.asarray(v) for k, v in ddpm_constants(self.num_steps, self.beta_schedule).items()}

    def __call__(self, obs: jax.Array, noisy_action: Optional[jax.Array] = None,
                 step: Optional[jax.Array] = None) -> jax.Array:
        """Predicted noise [..., A] (inputs default to a_t = 0 at the last step, enough for `init`)."""
        batch = obs.shape[:-1]
        if noisy_action is None:
            noisy_action = jnp.zeros(batch + (self.action_dim,), jnp.float32)
        if step is None:
            step = jnp.full(batch, self.num_steps - 1, jnp.int32)
        return self.noise_net(obs, noisy_action, step)

    def loss(self, obs: jax.Array, action: jax.Array, key: Optional[jax.Array] = None) -> jax.Array:
        if key is None:
            raise ValueError("The diffusion head's loss draws noise and needs a PRNG key; pass `key`.")
        action = jnp.asarray(action, jnp.float32)
        if action.shape != obs.shape[:-1] + (self.action_dim,):
            raise ValueError(f"diffusion loss: action has shape {action.shape}, want "
                             f"{obs.shape[:-1] + (self.action_dim,)} for observations {obs.shape}.")
        step, noise = draw_step_and_noise(key, action.shape, self.num_steps)
        noisy = forward_noise(self.constants["alphas_cumprod"], action, step, noise)
        return losses.mse(self(obs, noisy, step), noise)

    def sample(self, obs: jax.Array, key: jax.Array) -> jax.Array:
        start_key, chain_key = jax.random.split(key)
        start = jax.random.normal(start_key, obs.shape[:-1] + (self.action_dim,), jnp.float32)
        return self._reverse_chain(obs, start, chain_key)

    def mode(self, obs: jax.Array) -> jax.Array:
        return self._reverse_chain(obs, jnp.zeros(obs.shape[:-1] + (self.action_dim,), jnp.float32), None)

    def _reverse_chain(self, obs: jax.Array, start: jax.Array, key: Optional[jax.Array]) -> jax.Array:
        """a_T = start, then a_{t-1} ~ q(a_{t-1} | a_t, clip(predicted a_0)) for t = T..1 (noise-free without key)."""
        c = self.constants
        obs = jnp.asarray(obs, jnp.float32)

        def denoise(i, action):
            step = self.num_steps - 1 - i
            eps = self(obs, action, jnp.full(obs.shape[:-1], step, jnp.int32))
            alpha_bar = c["alphas_cumprod"][step]
            clean = jnp.clip((action - jnp.sqrt(1.0 - alpha_bar) * eps) / jnp.sqrt(alpha_bar), -1.0, 1.0)
            mean = c["posterior_coef_x0"][step] * clean + c["posterior_coef_xt"][step] * action
            if key is None:
                return mean
            # posterior_std is 0 at the last step (t = 1), so the returned action is the clipped a_0 estimate.
            return mean + c["posterior_std"][step] * jax.random.normal(jax.random.fold_in(key, i), mean.shape)

        return jnp.clip(jax.lax.fori_loop(0, self.num_steps, denoise, start), -1.0, 1.0)
