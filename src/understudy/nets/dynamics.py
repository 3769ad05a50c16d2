"""Learned dynamics for model-based RL (MOReL): an ensemble of networks that map (s, a) to the standardized
change of state s' - s, the standardized reward and, optionally, a termination logit.

Two kinds of member, chosen by name:
  mlp  an MLP with a mean per target and, when `gaussian`, a log-variance per target (soft-clamped to
       [min_logvar, max_logvar] as in PETS/MBPO), trained by Gaussian negative log-likelihood or by MSE.
  vae  a conditional VAE (note 002's "VAE model"): encoder q(z | s, a, y) and decoder y = g(s, a, z), trained
       by reconstruction MSE + kl_weight * KL(q || N(0, I)); it predicts with z = 0, the prior's mean.
The members are independent parameter sets stacked on a leading axis [E] (jax.vmap over init and apply), so
each one sees its own minibatches in training and all of them predict in one batched call.

Targets y = [(s' - s), r] are standardized by the caller (understudy.algos.morel keeps their mean and std);
the losses here are pure functions of network outputs and targets, with shape checks.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from understudy.nets.mlp import MLP

KINDS = ("mlp", "vae")


class DynamicsNet(nn.Module):
    """One member. `predict(obs, action)` -> {"mean" [B, T], "logvar" [B, T] | None, "term_logit" [B] | None};
    `__call__(obs, action, target, key)` -> the training outputs (for the VAE also "z_mean", "z_logvar")."""

    kind: str
    target_dim: int
    hidden_dims: tuple[int, ...] = (256, 256)
    gaussian: bool = True  # mlp only: also predict log-variances
    learn_terminations: bool = True
    latent_dim: int = 8  # vae only
    max_logvar: float = 0.5  # in standardized target units: std at most ~1.3 ...
    min_logvar: float = -10.0  # ... and at least ~0.007

    def setup(self):
        extra = 1 if self.learn_terminations else 0
        if self.kind == "mlp":
            self.net = MLP(self.hidden_dims, output_dim=self.target_dim * (2 if self.gaussian else 1) + extra)
        elif self.kind == "vae":
            self.encoder = MLP(self.hidden_dims, output_dim=2 * self.latent_dim)
            self.decoder = MLP(self.hidden_dims, output_dim=self.target_dim + extra)
        else:
            raise ValueError(f"unknown dynamics model kind {self.kind!r}; expected one of {KINDS}")

    def _split(self, out: jax.Array) -> dict:
        T = self.target_dim
        mean, rest = out[..., :T], out[..., T:]
        logvar = None
        if self.kind == "mlp" and self.gaussian:
            raw, rest = rest[..., :T], rest[..., T:]
            logvar = self.max_logvar - jax.nn.softplus(self.max_logvar - raw)
            logvar = self.min_logvar + jax.nn.softplus(logvar - self.min_logvar)
        term_logit = rest[..., 0] if self.learn_terminations else None
        return {"mean": mean, "logvar": logvar, "term_logit": term_logit}

    def _inputs(self, *parts) -> jax.Array:
        return jnp.concatenate([jnp.asarray(p, jnp.float32) for p in parts], axis=-1)

    def predict(self, obs: jax.Array, action: jax.Array) -> dict:
        if self.kind == "mlp":
            return self._split(self.net(self._inputs(obs, action)))
        z = jnp.zeros(obs.shape[:-1] + (self.latent_dim,), jnp.float32)
        return self._split(self.decoder(self._inputs(obs, action, z)))

    def __call__(self, obs: jax.Array, action: jax.Array, target: jax.Array, key: jax.Array) -> dict:
        if self.kind == "mlp":
            return self.predict(obs, action)
        stats = self.encoder(self._inputs(obs, action, target))
        z_mean, z_logvar = stats[..., :self.latent_dim], jnp.clip(stats[..., self.latent_dim:], -10.0, 5.0)
        z = z_mean + jnp.exp(0.5 * z_logvar) * jax.random.normal(key, z_mean.shape)
        return {**self._split(self.decoder(self._inputs(obs, action, z))), "z_mean": z_mean, "z_logvar": z_logvar}


# -- pure losses -----------------------------------------------------------------------------------------
def _check_same_shape(**arrays) -> None:
    shapes = {k: jnp.shape(v) for k, v in arrays.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"these arrays must have one shape, got {shapes}")


def gaussian_nll(mean: jax.Array, logvar: jax.Array, target: jax.Array) -> jax.Array:
    """Mean over every entry of 0.5 * ((y - mu)^2 / var + log var) (the Gaussian NLL without its constant)."""
    _check_same_shape(mean=mean, logvar=logvar, target=target)
    return jnp.mean(0.5 * (jnp.square(target - mean) * jnp.exp(-logvar) + logvar))


def squared_error(mean: jax.Array, target: jax.Array) -> jax.Array:
    """Mean over every entry of (y - mu)^2."""
    _check_same_shape(mean=mean, target=target)
    return jnp.mean(jnp.square(target - mean))


def termination_loss(logit: jax.Array, terminated: jax.Array) -> jax.Array:
    """Binary cross-entropy of the termination logit [B] against the 0/1 labels [B]."""
    _check_same_shape(logit=logit, terminated=terminated)
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logit, jnp.asarray(terminated, jnp.float32)))


def kl_to_standard_normal(z_mean: jax.Array, z_logvar: jax.Array) -> jax.Array:
    """KL(N(m, diag e^lv) || N(0, I)) summed over latent dimensions [..., Z], averaged over the batch."""
    _check_same_shape(z_mean=z_mean, z_logvar=z_logvar)
    return jnp.mean(jnp.sum(0.5 * (jnp.exp(z_logvar) + jnp.square(z_mean) - 1.0 - z_logvar), axis=-1))


def member_loss(net: DynamicsNet, params: Any, obs: jax.Array, action: jax.Array, target: jax.Array,
                terminated: jax.Array, key: jax.Array, loss: str = "nll", kl_weight: float = 1.0
                ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """One member's training loss on a batch [B, ...]: the fit term (Gaussian NLL when the member predicts
    variances and `loss` is "nll", else MSE; the VAE adds kl_weight * KL) plus the termination BCE."""
    out = net.apply(params, obs, action, target, key)
    mse = squared_error(out["mean"], target)
    fit = gaussian_nll(out["mean"], out["logvar"], target) if loss == "nll" and out["logvar"] is not None else mse
    metrics = {"mse": mse}
    if "z_mean" in out:
        kl = kl_to_standard_normal(out["z_mean"], out["z_logvar"])
        fit = fit + kl_weight * kl
        metrics["kl"] = kl
    if out["term_logit"] is not None:
        term = termination_loss(out["term_logit"], terminated)
        fit = fit + term
        metrics["termination_loss"] = term
    return fit, metrics


# -- the ensemble ------------------------------------------------------------------------------------------
def ensemble_init(net: DynamicsNet, key: jax.Array, size: int, obs_dim: int, action_dim: int) -> Any:
    """Parameters of `size` independently initialized members, stacked on a leading axis [E, ...].

    Built from the parameter shapes alone with NumPy, seeded by `key`: every Dense kernel LeCun-normal (flax's
    default: truncated at two standard deviations), every bias zero. XLA would spend seconds on CPU compiling
    flax's random initialization for parameters this small (compare ppo.orthogonal_params).
    """
    obs, action = jnp.zeros((1, obs_dim), jnp.float32), jnp.zeros((1, action_dim), jnp.float32)
    target = jnp.zeros((1, net.target_dim), jnp.float32)
    shapes = jax.eval_shape(net.init, jax.random.PRNGKey(0), obs, action, target, jax.random.PRNGKey(0))
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key), np.uint32).ravel().tolist())
    stddev_correction = 0.87962566103423978  # std of a standard normal truncated to [-2, 2], as flax's

    def leaf(path, shape):
        name = path[-1].key
        if name == "bias":
            return np.zeros((size, *shape.shape), shape.dtype)
        if name != "kernel":
            raise ValueError(f"no initializer for dynamics parameter {jax.tree_util.keystr(path)}")
        draws = rng.standard_normal((size, *shape.shape))
        while np.any(outside := np.abs(draws) > 2.0):  # resample to truncate at two standard deviations
            draws[outside] = rng.standard_normal(int(outside.sum()))
        fan_in = shape.shape[0]
        return (draws * np.sqrt(1.0 / fan_in) / stddev_correction).astype(shape.dtype)

    return jax.tree.map(jnp.asarray, jax.tree_util.tree_map_with_path(leaf, shapes))


def ensemble_predict(net: DynamicsNet, params: Any, obs: jax.Array, action: jax.Array) -> dict:
    """Every member's prediction for the same inputs [B, ...]: leaves with a leading member axis [E, B, ...]."""
    return jax.vmap(lambda p: net.apply(p, obs, action, method="predict"))(params)


def ensemble_loss(net: DynamicsNet, params: Any, obs: jax.Array, action: jax.Array, target: jax.Array,
                  terminated: jax.Array, key: jax.Array, loss: str = "nll", kl_weight: float = 1.0,
                  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The sum over members of `member_loss`, member i on its own batch (inputs [E, B, ...]); metrics averaged."""
    size = jax.tree.leaves(params)[0].shape[0]
    if jnp.shape(obs)[0] != size:
        raise ValueError(f"obs has leading size {jnp.shape(obs)[0]}, expected one batch per member ({size})")
    losses, metrics = jax.vmap(lambda p, o, a, y, d, k: member_loss(net, p, o, a, y, d, k, loss, kl_weight))(
        params, obs, action, target, terminated, jax.random.split(key, size))
    return jnp.sum(losses), {k: jnp.mean(v) for k, v in metrics.items()}


def make_dynamics(kind: str, target_dim: int, hidden_dims: tuple[int, ...], *, gaussian: bool = True,
                  learn_terminations: bool = True, latent_dim: int = 8) -> DynamicsNet:
    if kind not in KINDS:
        raise ValueError(f"unknown dynamics model kind {kind!r}; expected one of {KINDS}")
    return DynamicsNet(kind=kind, target_dim=target_dim, hidden_dims=tuple(hidden_dims), gaussian=gaussian,
                       learn_terminations=learn_terminations, latent_dim=latent_dim)


__all__ = ["DynamicsNet", "KINDS", "ensemble_init", "ensemble_loss", "ensemble_predict", "gaussian_nll",
           "kl_to_standard_normal", "make_dynamics", "member_loss", "squared_error", "termination_loss"]
