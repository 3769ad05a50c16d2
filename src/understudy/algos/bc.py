"""Behavior cloning: fit a policy head to (observation, action) pairs by its own loss.

The head is chosen by name (`mse`, `gaussian`, `tanh-gaussian`, `categorical`, and any head registered
later), so one algorithm covers deterministic regression, likelihood training and discrete actions.
Observations arrive normalized when `normalize_observations` is on (the offline loop fits and applies the
normalizer and stores it with the policy export).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Literal, Optional

import flax.struct as struct
import jax
import jax.numpy as jnp
import optax

from understudy.nets.heads import HEADS, head_config, is_discrete_head, make_head
from understudy.types import Batch, EnvSpec, UnderstudyError


@dataclasses.dataclass(frozen=True)
class Config:
    """Behavior cloning settings."""

    head: str = "mse"
    """Action head: mse, gaussian, tanh-gaussian, gmm, diffusion, autoregressive (continuous actions) or categorical (discrete actions)."""
    num_components: int = 5
    """--head gmm: mixture components."""
    gmm_mode_rule: Literal["top-component", "mixture-mean"] = "top-component"
    """--head gmm: the deterministic action (evaluation, export): top-component, the mean of the most probable component, or mixture-mean, the weights' average of the component means (the expected action, which changes smoothly where the top component switches). Over 3 seeds on 25 expert episodes it raised HalfCheetah from 0.890 to 0.919, left Hopper and Ant level and lowered Walker2d (docs/results/bc-heads-halfcheetah)."""
    nll_beta: float = 0.5
    """--head gaussian, tanh-gaussian and gmm: the beta-NLL loss (Seitzer et al. 2022), each dimension's NLL weighted by std^(2 beta), so the mean keeps fitting where the std is wide; 0 is the plain negative log-likelihood (on 25 Hopper expert episodes: 0.22 of the expert's normalized return with 0, 1.00 with 0.5; docs/results/bc-hopper)."""
    log_std_min: float = -5.0
    """--head gaussian, tanh-gaussian and gmm: lower bound of each std's log (-5: std >= 0.0067). On deterministic expert data the likelihood keeps shrinking the std toward this floor; a higher floor keeps every std wide enough that the mean is fitted by an MSE-like loss. (On 25 HalfCheetah expert episodes the GMM head scored 0.900 with -3 and 0.851 with -2, against 0.873 with -5: within the spread between runs.)"""
    diffusion_steps: int = 10
    """--head diffusion: denoising steps T of the DDPM."""
    num_bins: int = 20
    """--head autoregressive: bins per action dimension."""
    hidden_dims: tuple[int, ...] = (256, 256)
    """Hidden layer widths of the policy network."""
    lr: float = 3e-4
    """AdamW learning rate (1e-3 makes the Gaussian head's likelihood training unstable once its std is small)."""
    weight_decay: float = 1e-4
    """AdamW decoupled weight decay (0 gives plain Adam)."""
    max_grad_norm: Optional[float] = None
    """Clip gradients to this global norm; None disables clipping."""
    batch_size: int = 256
    """(observation, action) pairs per gradient update."""
    ensemble_size: int = 1
    """Train this many independently initialized copies of the head on the same batches and act with the mean of their modes (an ensemble head in the export); 1 is a single head. On 25 HalfCheetah expert episodes, 5 MSE members scored 0.963 of the expert's normalized return against 0.939 for one."""
    ensemble_bootstrap: bool = False
    """With --ensemble-size > 1: each member weighs every training example by its own Poisson(1) draw, fresh for each batch (online bagging, Oza & Russell 2001), so the members learn from different resamples of the demonstrations, as separately trained policies would; the validation loss is unweighted. (On 25 HalfCheetah expert episodes, 5 members: MSE 0.949 against 0.963 without, GMM 0.942 against 0.927; both within the spread between seeds.)"""
    ema_decay: float = 0.0
    """Act, export and validate with an exponential moving average of the parameters, updated after every gradient step with this decay (e.g. 0.999, about the last 1000 updates); 0 uses the parameters themselves. (On 25 HalfCheetah expert episodes it left the MSE head's score unchanged: 0.940 against 0.939.)"""
    normalize_observations: bool = True
    """Standardize observations with dataset mean/std (applied by the training loop, saved in the export)."""
    validation_fraction: float = 0.0
    """Hold out this fraction of the dataset's episodes (whole episodes, fixed split) and log their loss (val/loss) at every evaluation; 0 trains on everything."""
    early_stopping_patience: int = 0
    """Stop once the validation loss has not improved for this many evaluations (every seed), and export each seed's lowest-validation-loss state as final/; 0 disables. Needs --validation-fraction."""


class State(struct.PyTreeNode):
    """Policy parameters, their moving average (the acting ones when ema_decay > 0), optimizer state, rng and
    update count. `action_dim` is static."""

    params: Any
    ema_params: Any
    opt_state: Any
    rng: jax.Array
    step: jax.Array  # int32 scalar
    action_dim: int = struct.field(pytree_node=False, default=1)


def head_options(cfg: Config) -> dict:
    """The options of the chosen head that the config sets (each head has its own)."""
    likelihood = {"nll_beta": cfg.nll_beta, "log_std_min": cfg.log_std_min}
    return {"gaussian": likelihood, "tanh-gaussian": likelihood, "gmm": {"num_components": cfg.num_components, "mode_rule": cfg.gmm_mode_rule, **likelihood},
            "diffusion": {"num_steps": cfg.diffusion_steps}, "autoregressive": {"num_bins": cfg.num_bins}}.get(cfg.head, {})


def _head_spec(cfg: Config) -> tuple[str, dict]:
    """(head name, options) of the policy: the chosen head, or an ensemble of copies of it."""
    if cfg.ensemble_size == 1:
        return cfg.head, head_options(cfg)
    return "ensemble", {"member": cfg.head, "members": cfg.ensemble_size,
                        "member_options": tuple(sorted(head_options(cfg).items()))}


def _head(cfg: Config, action_dim: int):
    name, options = _head_spec(cfg)
    return make_head(name, action_dim=action_dim, hidden_dims=cfg.hidden_dims, **options)


def _optimizer(cfg: Config) -> optax.GradientTransformation:
    adamw = optax.adamw(cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.max_grad_norm is None:
        return adamw
    return optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), adamw)


def _check_head_fits(cfg: Config, spec: EnvSpec) -> None:
    if cfg.head not in HEADS or cfg.head == "ensemble":
        raise UnderstudyError(f"BC --head {cfg.head!r} is not an action head. Choose one of: "
                              f"{', '.join(sorted(set(HEADS) - {'ensemble'}))} (an ensemble of any of them: "
                              "--ensemble-size N).")
    if cfg.ensemble_size < 1:
        raise UnderstudyError(f"BC --ensemble-size must be >= 1 (1 trains a single head), got {cfg.ensemble_size}.")
    if cfg.ensemble_bootstrap and cfg.ensemble_size == 1:
        raise UnderstudyError("BC --ensemble-bootstrap resamples the data per ensemble member; with --ensemble-size 1 "
                              "there is one member. Pass --ensemble-size N (e.g. 5), or leave the flag out.")
    if cfg.ensemble_size > 1 and is_discrete_head(cfg.head):
        raise UnderstudyError(f"BC --ensemble-size averages continuous actions; --head {cfg.head} is discrete. "
                              "Use --ensemble-size 1.")
    if spec.discrete and not is_discrete_head(cfg.head):
        raise UnderstudyError(f"{spec.env_id} has {spec.num_actions} discrete actions but BC --head is "
                              f"{cfg.head!r}, a continuous-action head. Use `--head categorical`.")
    if not spec.discrete and is_discrete_head(cfg.head):
        raise UnderstudyError(f"{spec.env_id} has continuous actions but BC --head is {cfg.head!r}, a "
                              "discrete-action head. Use `--head mse` (or gaussian, tanh-gaussian, gmm, diffusion, "
                              "autoregressive).")


def _mean_loss(cfg: Config, state: State, params: Any, batch: Batch, key: jax.Array) -> jax.Array:
    per_example = _head(cfg, state.action_dim).apply(params, batch.observations, batch.actions, key, method="loss")
    return jnp.mean(per_example)


def _training_loss(cfg: Config, state: State, params: Any, batch: Batch, key: jax.Array) -> jax.Array:
    """The loss that update differentiates: _mean_loss, or with --ensemble-bootstrap each member's examples
    weighed by Poisson(1) draws [E, B] (their mean is 1, so the loss keeps its scale)."""
    if not cfg.ensemble_bootstrap:  # init refuses it without an ensemble
        return _mean_loss(cfg, state, params, batch, key)
    loss_key, weight_key = jax.random.split(key)
    per_member = _head(cfg, state.action_dim).apply(params, batch.observations, batch.actions, loss_key,
                                                    method="member_losses")
    weights = jax.random.poisson(weight_key, 1.0, per_member.shape).astype(per_member.dtype)
    return jnp.mean(weights * per_member)


def init(cfg: Config, spec: EnvSpec, key: jax.Array) -> State:
    _check_head_fits(cfg, spec)
    if not 0.0 <= cfg.ema_decay < 1.0:
        raise UnderstudyError(f"BC --ema-decay must be in [0, 1) (0 turns the moving average off; 0.999 averages "
                              f"about the last 1000 updates), got {cfg.ema_decay}.")
    return _init_state(cfg, spec.obs_dim, spec.action_dim, key)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _init_state(cfg: Config, obs_dim: int, action_dim: int, key: jax.Array) -> State:
    # Jitted: initializing op by op dispatches many tiny computations (seconds on CPU).
    key, init_key = jax.random.split(key)
    params = _head(cfg, action_dim).init(init_key, jnp.zeros((1, obs_dim), jnp.float32))
    return State(params=params, ema_params=params, opt_state=_optimizer(cfg).init(params), rng=key,
                 step=jnp.zeros((), jnp.int32), action_dim=action_dim)


def update(cfg: Config, state: State, batch: Batch) -> tuple[State, dict[str, jax.Array]]:
    rng, loss_key = jax.random.split(state.rng)
    loss, grads = jax.value_and_grad(lambda p: _training_loss(cfg, state, p, batch, loss_key))(state.params)
    updates, opt_state = _optimizer(cfg).update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema_params = moving_average(state.ema_params, params, cfg.ema_decay, state.step) if cfg.ema_decay else params
    new_state = state.replace(params=params, ema_params=ema_params, opt_state=opt_state, rng=rng,
                              step=state.step + 1)
    return new_state, {"loss": loss, "grad_norm": optax.global_norm(grads)}


def moving_average(average: Any, params: Any, decay: float, step: jax.Array) -> Any:
    """One step of the parameters' exponential moving average. The decay ramps up as min(decay, (1 + t) / (10 + t))
    (TensorFlow's ExponentialMovingAverage with num_updates), so the first updates are not averaged with the
    random initialization."""
    d = jnp.minimum(decay, (1.0 + step) / (10.0 + step))
    return jax.tree.map(lambda a, p: d * a + (1.0 - d) * p, average, params)


def evaluate_loss(cfg: Config, state: State, batch: Batch) -> jax.Array:
    """Mean head loss of the acting parameters on a (validation) batch, without gradients or a state change."""
    # A fixed key derived from the state: heads whose loss samples (diffusion) stay reproducible.
    return _mean_loss(cfg, state, state.ema_params, batch, jax.random.fold_in(state.rng, 0x5EED))


def act(cfg: Config, state: State, obs: jax.Array, key: jax.Array, deterministic: bool) -> jax.Array:
    """Actions for observations [B, obs_dim]: [B, A] in [-1, 1], or int32 [B] for categorical.

    `deterministic` is a Python bool: the head's mode, else a sample.
    """
    head = _head(cfg, state.action_dim)
    if deterministic:
        return head.apply(state.ema_params, obs, method="mode")
    return head.apply(state.ema_params, obs, key, method="sample")


def policy_export(cfg: Config, state: State) -> tuple[dict, Any]:
    """(head_config dict, policy variables) — `make_head(**config).apply(variables, obs, method=...)` acts."""
    name, options = _head_spec(cfg)
    return head_config(name, state.action_dim, cfg.hidden_dims, **options), state.ema_params
