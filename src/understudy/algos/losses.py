"""Small pure loss functions shared by heads and algorithms.

Every function checks the shapes it is given (at trace time, so the checks cost nothing inside jit)
because a silently broadcast [B] against [B, 1] is the classic way an RL loss goes wrong without an error.
Per-example functions return [B]; the reductions to a scalar are the callers' (or the `*_loss` functions').
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

_LOG_2PI = math.log(2.0 * math.pi)
_LOG_2 = math.log(2.0)


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(message)


def _same_shape(name_a: str, a: jax.Array, name_b: str, b: jax.Array) -> None:
    _check(jnp.shape(a) == jnp.shape(b), f"{name_a} has shape {jnp.shape(a)} but {name_b} has shape {jnp.shape(b)}; "
                                         "they must match.")


# --------------------------------------------------------------------------------------------------
# Likelihoods and regression (the action-head losses)
# --------------------------------------------------------------------------------------------------
def mse(prediction: jax.Array, target: jax.Array) -> jax.Array:
    """Per-example mean squared error over the last (action) axis: [..., A] x [..., A] -> [...]."""
    _same_shape("prediction", prediction, "target", target)
    return jnp.mean(jnp.square(prediction - target), axis=-1)


def gaussian_log_prob(mean: jax.Array, log_std: jax.Array, x: jax.Array) -> jax.Array:
    """Log density of x under a diagonal Gaussian, summed over the last axis: [..., A] -> [...]."""
    _same_shape("mean", mean, "x", x)
    _same_shape("log_std", log_std, "x", x)
    z = (x - mean) * jnp.exp(-log_std)
    return jnp.sum(-0.5 * jnp.square(z) - log_std - 0.5 * _LOG_2PI, axis=-1)


def gaussian_nll(mean: jax.Array, log_std: jax.Array, x: jax.Array) -> jax.Array:
    """Negative log-likelihood of x under a diagonal Gaussian: [..., A] -> [...]."""
    return -gaussian_log_prob(mean, log_std, x)


def beta_gaussian_nll(mean: jax.Array, log_std: jax.Array, x: jax.Array, beta: float) -> jax.Array:
    """beta-NLL (Seitzer et al., 2022): each dimension's NLL weighted by stop_gradient(std^(2 beta)): [..., A] -> [...].

    Plain NLL (beta = 0) scales the mean's gradient by 1/std^2, so a network that is unsure about some states
    widens their std and then stops fitting their mean: on deterministic expert data the behaviour-cloned
    mean stays poor exactly where the policy is hard. beta = 1 gives the mean the gradient of MSE; beta = 0.5
    is the paper's recommended middle. The value, for beta > 0, is not a log-likelihood (use it for training only).
    """
    _same_shape("mean", mean, "x", x)
    _same_shape("log_std", log_std, "x", x)
    z = (x - mean) * jnp.exp(-log_std)
    per_dim = 0.5 * jnp.square(z) + log_std + 0.5 * _LOG_2PI
    if beta:
        per_dim = per_dim * jax.lax.stop_gradient(jnp.exp(2.0 * beta * log_std))
    return jnp.sum(per_dim, axis=-1)


def log_one_minus_tanh_sq(pre_tanh: jax.Array) -> jax.Array:
    """log(1 - tanh(u)^2), computed stably as 2 (log 2 - u - softplus(-2u)) (exact, no 1 - 1 cancellation)."""
    return 2.0 * (_LOG_2 - pre_tanh - jax.nn.softplus(-2.0 * pre_tanh))


def tanh_gaussian_log_prob_from_pre_tanh(mean: jax.Array, log_std: jax.Array, pre_tanh: jax.Array) -> jax.Array:
    """Log density of a = tanh(u) where u ~ N(mean, std), given u: change of variables, [..., A] -> [...].

    log p(a) = log N(u) - sum_i log(1 - tanh(u_i)^2). Use this when u is at hand (sampling), since recovering
    u = atanh(a) from a saturated action loses precision.
    """
    _same_shape("pre_tanh", pre_tanh, "mean", mean)
    return gaussian_log_prob(mean, log_std, pre_tanh) - jnp.sum(log_one_minus_tanh_sq(pre_tanh), axis=-1)


def tanh_gaussian_log_prob(mean: jax.Array, log_std: jax.Array, action: jax.Array, eps: float = 1e-6) -> jax.Array:
    """Log density of an action in (-1, 1) under a tanh-squashed diagonal Gaussian: [..., A] -> [...].

    Actions are clipped to [-1 + eps, 1 - eps] first: data recorded at the bounds (clipped expert actions)
    would otherwise have infinite pre-tanh values.
    """
    _same_shape("mean", mean, "action", action)
    pre_tanh = jnp.arctanh(jnp.clip(action, -1.0 + eps, 1.0 - eps))
    return tanh_gaussian_log_prob_from_pre_tanh(mean, log_std, pre_tanh)


def categorical_nll(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Cross-entropy of integer labels under logits: [..., N] x [...] -> [...]."""
    _check(jnp.shape(labels) == jnp.shape(logits)[:-1],
           f"labels have shape {jnp.shape(labels)} but logits have shape {jnp.shape(logits)}; labels must be the "
           "logits' shape without the last (action) axis.")
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(log_probs, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]


# --------------------------------------------------------------------------------------------------
# Soft actor-critic
# --------------------------------------------------------------------------------------------------
def soft_td_target(rewards: jax.Array, terminations: jax.Array, next_q: jax.Array, next_log_prob: jax.Array,
                   alpha: jax.Array | float, gamma: float) -> jax.Array:
    """Soft Bellman target r + gamma (1 - done) (Q'(s', a') - alpha log pi(a'|s')): all [B] -> [B].

    `terminations` is 1.0 only for true episode ends; truncated transitions keep bootstrapping.
    """
    for name, value in (("terminations", terminations), ("next_q", next_q), ("next_log_prob", next_log_prob)):
        _same_shape("rewards", rewards, name, value)
    _check(jnp.ndim(rewards) == 1, f"rewards must be [B], got shape {jnp.shape(rewards)}.")
    _check(jnp.ndim(alpha) == 0, f"alpha must be a scalar, got shape {jnp.shape(alpha)}.")
    soft_value = next_q - alpha * next_log_prob
    return rewards + gamma * (1.0 - terminations) * soft_value


def sac_critic_loss(q_predictions: jax.Array, target: jax.Array) -> jax.Array:
    """Sum over the critic ensemble of each critic's mean squared TD error: [E, B] x [B] -> scalar.

    Matches CleanRL's qf1_loss + qf2_loss. The target is treated as a constant (gradient stopped here).
    """
    _check(jnp.ndim(q_predictions) == 2 and jnp.shape(q_predictions)[1:] == jnp.shape(target),
           f"q_predictions must be [E, B] and target [B]; got shapes {jnp.shape(q_predictions)} and "
           f"{jnp.shape(target)}.")
    errors = q_predictions - jax.lax.stop_gradient(target)[None, :]
    return jnp.sum(jnp.mean(jnp.square(errors), axis=1))


def sac_actor_loss(log_prob: jax.Array, q: jax.Array, alpha: jax.Array | float) -> jax.Array:
    """mean(alpha log pi(a|s) - Q(s, a)) over the batch, a ~ pi reparameterized: [B] x [B] -> scalar."""
    _same_shape("log_prob", log_prob, "q", q)
    _check(jnp.ndim(log_prob) == 1, f"log_prob must be [B], got shape {jnp.shape(log_prob)}.")
    _check(jnp.ndim(alpha) == 0, f"alpha must be a scalar, got shape {jnp.shape(alpha)}.")
    return jnp.mean(alpha * log_prob - q)


def temperature_loss(log_alpha: jax.Array, log_prob: jax.Array, target_entropy: float) -> jax.Array:
    """-mean(alpha (log pi + target_entropy)) with alpha = exp(log_alpha), as in CleanRL: scalar x [B] -> scalar.

    Its gradient raises alpha while the policy's entropy (-log pi) is below the target and lowers it above.
    log_prob is treated as a constant.
    """
    _check(jnp.ndim(log_alpha) == 0, f"log_alpha must be a scalar, got shape {jnp.shape(log_alpha)}.")
    _check(jnp.ndim(log_prob) == 1, f"log_prob must be [B], got shape {jnp.shape(log_prob)}.")
    return -jnp.mean(jnp.exp(log_alpha) * (jax.lax.stop_gradient(log_prob) + target_entropy))


# --------------------------------------------------------------------------------------------------
# TD3 and DQN
# --------------------------------------------------------------------------------------------------
def td_target(rewards: jax.Array, terminations: jax.Array, next_value: jax.Array, gamma: float) -> jax.Array:
    """One-step Bellman target r + gamma (1 - done) V(s'): all [B] -> [B].

    `terminations` is 1.0 only for true episode ends; truncated transitions keep bootstrapping.
    """
    _same_shape("rewards", rewards, "terminations", terminations)
    _same_shape("rewards", rewards, "next_value", next_value)
    _check(jnp.ndim(rewards) == 1, f"rewards must be [B], got shape {jnp.shape(rewards)}.")
    return rewards + gamma * (1.0 - terminations) * next_value


def deterministic_actor_loss(q: jax.Array) -> jax.Array:
    """-mean Q(s, pi(s)) (TD3/DDPG actor): [B] -> scalar."""
    _check(jnp.ndim(q) == 1, f"q must be [B], got shape {jnp.shape(q)}.")
    return -jnp.mean(q)


def q_of_actions(q_values: jax.Array, actions: jax.Array) -> jax.Array:
    """Picks Q(s, a) for integer actions from a table of action values: [B, N] x [B] -> [B]."""
    _check(jnp.ndim(q_values) == 2 and jnp.shape(actions) == jnp.shape(q_values)[:1],
           f"q_values must be [B, N] and actions [B]; got shapes {jnp.shape(q_values)} and {jnp.shape(actions)}.")
    return jnp.take_along_axis(q_values, jnp.asarray(actions, jnp.int32)[:, None], axis=1)[:, 0]


def next_state_value(target_q_next: jax.Array, online_q_next: jax.Array | None = None) -> jax.Array:
    """V(s') for a DQN target: [B, N] -> [B].

    Double DQN (van Hasselt et al. 2016) when `online_q_next` is given: the online network picks the action
    and the target network evaluates it, which removes the max operator's upward bias. Otherwise the
    target network's own maximum (Mnih et al. 2015).
    """
    _check(jnp.ndim(target_q_next) == 2, f"target_q_next must be [B, N], got shape {jnp.shape(target_q_next)}.")
    if online_q_next is None:
        return jnp.max(target_q_next, axis=1)
    _same_shape("online_q_next", online_q_next, "target_q_next", target_q_next)
    return q_of_actions(target_q_next, jnp.argmax(online_q_next, axis=1))


def huber(x: jax.Array, delta: float = 1.0) -> jax.Array:
    """Elementwise Huber loss: x^2 / 2 for |x| <= delta, else delta (|x| - delta / 2) (torch's smooth_l1 at delta 1)."""
    abs_x = jnp.abs(x)
    return jnp.where(abs_x <= delta, 0.5 * jnp.square(x), delta * (abs_x - 0.5 * delta))


def q_regression_loss(q: jax.Array, target: jax.Array, kind: str = "mse") -> jax.Array:
    """Mean TD regression loss of Q(s, a) [B] on a target [B] ("mse" or "huber"); the target gets no gradient."""
    _same_shape("q", q, "target", target)
    _check(jnp.ndim(q) == 1, f"q must be [B], got shape {jnp.shape(q)}.")
    error = q - jax.lax.stop_gradient(target)
    if kind == "mse":
        return jnp.mean(jnp.square(error))
    if kind == "huber":
        return jnp.mean(huber(error))
    raise ValueError(f"Unknown Q regression loss {kind!r}; use 'mse' or 'huber'.")


def linear_schedule(start: float, end: float, duration: float, t: jax.Array) -> jax.Array:
    """start + (end - start) min(t / duration, 1): a linear ramp that then holds `end` (epsilon-greedy schedules)."""
    t = jnp.asarray(t, jnp.float32)
    if duration <= 0:  # no ramp: the final value from the start
        return jnp.full_like(t, end)
    return start + (end - start) * jnp.clip(t / float(duration), 0.0, 1.0)


# --------------------------------------------------------------------------------------------------
# Offline RL: IQL, TD3+BC, CQL
# --------------------------------------------------------------------------------------------------
def expectile_loss(diff: jax.Array, tau: float) -> jax.Array:
    """IQL's asymmetric squared loss |tau - 1(diff < 0)| diff^2, elementwise (same shape as diff).

    With diff = Q(s, a) - V(s), minimizing its mean over the data makes V the tau-expectile of Q: tau > 0.5
    weighs underestimates (diff > 0) more, so V approaches an upper expectile (the max over in-data actions
    as tau -> 1) without querying Q at actions outside the data.
    """
    _check(0.0 < tau < 1.0, f"The expectile tau must lie in (0, 1), got {tau}.")
    weight = jnp.where(diff < 0, 1.0 - tau, tau)
    return weight * jnp.square(diff)


def td3bc_actor_loss(q: jax.Array, pi: jax.Array, data_actions: jax.Array, alpha: float) -> jax.Array:
    """TD3+BC actor loss -lambda mean Q(s, pi(s)) + mean (pi(s) - a)^2, lambda = alpha / mean |Q| (no gradient).

    q [B] is Q(s, pi(s)); pi and data_actions are [B, A]. Dividing by mean |Q| makes the Q term independent of
    the reward scale, so one alpha (2.5 in the paper) balances it against the behaviour-cloning term.
    """
    _check(jnp.ndim(q) == 1, f"q must be [B], got shape {jnp.shape(q)}.")
    _same_shape("pi", pi, "data_actions", data_actions)
    _check(jnp.ndim(pi) == 2 and jnp.shape(pi)[0] == jnp.shape(q)[0],
           f"pi must be [B, A] with B = len(q) = {jnp.shape(q)[0]}, got shape {jnp.shape(pi)}.")
    lmbda = jax.lax.stop_gradient(alpha / jnp.mean(jnp.abs(q)))
    return -lmbda * jnp.mean(q) + jnp.mean(jnp.square(pi - data_actions))


def cql_penalty(q_sampled: jax.Array, log_weights: jax.Array, q_data: jax.Array, temperature: float = 1.0) -> jax.Array:
    """CQL(H)'s conservative penalty: mean over the batch of T logsumexp((Q(s, a_j) + log w_j) / T) - Q(s, a_data).

    q_sampled [..., B, M]: Q at M sampled actions per state; log_weights [..., B, M]: log importance weights of
    those samples (minus the log density of the distribution each was drawn from, as in the paper's
    importance-sampled estimate of log integral exp Q(s, a) da); q_data [..., B]: Q at the dataset actions.
    Returns [...] (e.g. one penalty per critic). Pushing it down lowers Q on sampled (possibly unseen)
    actions and raises it on the data's.
    """
    _same_shape("q_sampled", q_sampled, "log_weights", log_weights)
    _check(jnp.ndim(q_sampled) >= 2 and jnp.shape(q_sampled)[:-1] == jnp.shape(q_data),
           f"q_sampled must be [..., B, M] and q_data [..., B]; got shapes {jnp.shape(q_sampled)} and "
           f"{jnp.shape(q_data)}.")
    soft_max = temperature * jax.nn.logsumexp((q_sampled + log_weights) / temperature, axis=-1)
    return jnp.mean(soft_max - q_data, axis=-1)
