"""Gaussian mixture action head ("gmm"): k diagonal Gaussians per state, trained by log-likelihood.

The mixture lives directly in the normalized action box, not over atanh-squashed actions: expert data
often sit exactly on the bounds (clipped actions), where atanh diverges and a squashed model must put its
mass at pre-tanh values of +-7 or more. Modelled directly, an action on the bound has a finite likelihood
and a component mean may sit on (or just beyond) the bound. `sample` and `mode` clip to [-1, 1];
`log_prob` is the exact density of the unclipped mixture (the same convention as the "gaussian" head).
"""

from __future__ import annotations

import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from understudy.nets.heads.activations import activation_fn
from understudy.nets.heads.gaussian import bounded_log_std
from understudy.nets.mlp import MLP
from understudy.types import UnderstudyError

_LOG_2PI = math.log(2.0 * math.pi)


def gmm_log_prob(logits: jax.Array, means: jax.Array, log_stds: jax.Array, action: jax.Array) -> jax.Array:
    """log sum_k softmax(logits)_k N(action; means_k, diag(exp(log_stds_k))^2).

    Shapes: logits [..., K], means and log_stds [..., K, A], action [..., A] -> [...].
    """
    if (means.shape != log_stds.shape or means.shape[:-1] != logits.shape
            or means.shape[:-2] + means.shape[-1:] != action.shape):
        raise ValueError(f"GMM shapes disagree: logits {logits.shape} (want [..., K]), means {means.shape} and "
                         f"log_stds {log_stds.shape} (want [..., K, A]), action {action.shape} (want [..., A]).")
    z = (action[..., None, :] - means) * jnp.exp(-log_stds)
    component_log_prob = jnp.sum(-0.5 * jnp.square(z) - log_stds - 0.5 * _LOG_2PI, axis=-1)  # [..., K]
    return jax.nn.logsumexp(jax.nn.log_softmax(logits, axis=-1) + component_log_prob, axis=-1)


def beta_gmm_nll(logits: jax.Array, means: jax.Array, log_stds: jax.Array, action: jax.Array, beta: float) -> jax.Array:
    """The mixture's negative log-likelihood (beta = 0), or its beta-NLL (Seitzer et al., 2022) for beta > 0: [...].

    The NLL's gradient is that of sum_k r_k * -log(w_k N_k(action)) with the responsibilities r_k held fixed
    (the EM identity). beta-NLL weights each component's per-dimension Gaussian term of that sum by
    stop_gradient(std_kd^(2 beta)), as `losses.beta_gaussian_nll` does for one Gaussian, so a wide component
    keeps fitting its mean. Its value, for beta > 0, is a training loss, not a likelihood.
    """
    if not beta:
        return -gmm_log_prob(logits, means, log_stds, action)
    log_weights = jax.nn.log_softmax(logits, axis=-1)
    z = (action[..., None, :] - means) * jnp.exp(-log_stds)
    per_dim_nll = 0.5 * jnp.square(z) + log_stds + 0.5 * _LOG_2PI  # [..., K, A]
    responsibilities = jax.lax.stop_gradient(jax.nn.softmax(log_weights - jnp.sum(per_dim_nll, axis=-1), axis=-1))
    weighted = per_dim_nll * jax.lax.stop_gradient(jnp.exp(2.0 * beta * log_stds))
    return jnp.sum(responsibilities * (jnp.sum(weighted, axis=-1) - log_weights), axis=-1)


GMM_MODE_RULES = ("top-component", "mixture-mean")


class GMMHead(nn.Module):
    """obs -> mixture weights [..., K], means [..., K, A] and log-stds [..., K, A]; loss = -log_prob.

    `mode`, the deterministic action, follows `mode_rule`. "top-component" (the default) is the (clipped) mean
    of the most probable component: for a well-separated mixture it is the mixture's highest peak (the exact
    mixture mode has no closed form). "mixture-mean" is the weighted mean of the component means, the expected
    action: it moves smoothly as the weights shift between components, where the top component's mean jumps.
    `sample` picks a component by its weight, then draws from that Gaussian and clips to [-1, 1].
    """

    action_dim: int
    hidden_dims: tuple[int, ...] = (256, 256)
    num_components: int = 5
    log_std_min: float = -5.0  # std >= 0.0067: keeps the likelihood bounded on repeated (clipped) actions
    log_std_max: float = 2.0
    activation: str = "relu"
    nll_beta: float = 0.0  # training loss: 0 is the negative log-likelihood, > 0 the beta-NLL (beta_gmm_nll)
    mode_rule: str = "top-component"  # the deterministic action: top-component or mixture-mean (see above)

    def __post_init__(self):
        if self.num_components < 1 or not self.log_std_min < self.log_std_max:
            raise UnderstudyError(f"gmm head options: num_components must be >= 1 (got {self.num_components}) and "
                                  f"log_std_min < log_std_max (got {self.log_std_min}, {self.log_std_max}).")
        if self.mode_rule not in GMM_MODE_RULES:
            raise UnderstudyError(f"gmm head option mode_rule must be one of {', '.join(GMM_MODE_RULES)}, "
                                  f"got {self.mode_rule!r} (BC: --gmm-mode-rule).")
        super().__post_init__()

    def setup(self):
        self.torso = MLP(self.hidden_dims, activation=activation_fn(self.activation))
        self.logits_layer = nn.Dense(self.num_components)
        self.means_layer = nn.Dense(self.num_components * self.action_dim)
        self.log_stds_layer = nn.Dense(self.num_components * self.action_dim)

    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(logits [..., K], means [..., K, A], log_stds [..., K, A])."""
        h = self.torso(obs)
        shape = h.shape[:-1] + (self.num_components, self.action_dim)
        means = self.means_layer(h).reshape(shape)
        log_stds = bounded_log_std(self.log_stds_layer(h).reshape(shape), self.log_std_min, self.log_std_max)
        return self.logits_layer(h), means, log_stds

    def log_prob(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        logits, means, log_stds = self(obs)
        return gmm_log_prob(logits, means, log_stds, jnp.asarray(action, jnp.float32))

    def loss(self, obs: jax.Array, action: jax.Array, key: Optional[jax.Array] = None) -> jax.Array:
        logits, means, log_stds = self(obs)
        return beta_gmm_nll(logits, means, log_stds, jnp.asarray(action, jnp.float32), self.nll_beta)

    def sample(self, obs: jax.Array, key: jax.Array) -> jax.Array:
        logits, means, log_stds = self(obs)
        component_key, noise_key = jax.random.split(key)
        component = jax.random.categorical(component_key, logits, axis=-1)
        mean, log_std = _pick(means, component), _pick(log_stds, component)
        noise = jax.random.normal(noise_key, mean.shape, mean.dtype)
        return jnp.clip(mean + jnp.exp(log_std) * noise, -1.0, 1.0)

    def mode(self, obs: jax.Array) -> jax.Array:
        logits, means, _ = self(obs)
        if self.mode_rule == "mixture-mean":
            return jnp.clip(jnp.sum(jax.nn.softmax(logits, axis=-1)[..., None] * means, axis=-2), -1.0, 1.0)
        return jnp.clip(_pick(means, jnp.argmax(logits, axis=-1)), -1.0, 1.0)


def _pick(per_component: jax.Array, component: jax.Array) -> jax.Array:
    """[..., K, A] at integer [...] -> [..., A]."""
    return jnp.take_along_axis(per_component, component[..., None, None], axis=-2)[..., 0, :]
