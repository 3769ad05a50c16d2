"""MOReL (Kidambi et al. 2020): model-based offline RL in a pessimistic MDP built from a learned dynamics ensemble.

1. Fit an ensemble of dynamics models f_1..f_E (understudy.nets.dynamics: MLPs by default, --model vae for note
   002's VAE model) to the dataset's transitions: each predicts the standardized change of state, the
   standardized reward and (--learn-terminations) a termination logit.
2. The unknown-state detector: u(s, a) = max_{i,j} ||f_i(s, a) - f_j(s, a)||_2 over the members' predicted next
   states (in the policy's standardized observation space). The threshold comes from u over the dataset's own
   (s, a): --threshold-rule max (the paper's choice, times --threshold-scale) or mean-std (mean + k std).
3. The pessimistic MDP: where u(s, a) exceeds the threshold the step goes to HALT: it pays the halting reward
   r_min - kappa (r_min: the dataset's lowest reward) and ends the model episode (no bootstrap); a halted state
   stays halted. kappa defaults to (r_max - r_min) / (1 - gamma), i.e. halting is as bad as the whole reward range
   held forever (MuJoCo-scale rewards give a few hundred, the paper's order); set --kappa for a fixed value.
   Otherwise the step follows one ensemble member (a random one per step, --rollout-member) and its reward,
   clipped to the dataset's reward range.
4. Policy optimisation inside the pessimistic MDP with our SAC (--rl sac: MBPO-style branches of
   --rollout-horizon steps from dataset states written to an on-device replay buffer) or PPO (--rl ppo: vectorized
   model episodes of up to --episode-horizon steps from dataset states, GAE). The loop is
   understudy.train.model_based; `update` below is one policy-optimisation update, `model_update` one ensemble
   step, `model_step` one step of the pessimistic MDP.

Observations are standardized by the dataset's statistics everywhere (model, policy, replay) and the statistics
are saved in the policy export; actions are in [-1, 1].
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, Optional

import flax.struct as struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from understudy.algos import ppo as ppo_algo
from understudy.algos import sac as sac_algo
from understudy.data.normalize import fit_normalizer
from understudy.nets import dynamics
from understudy.types import Batch, EnvSpec, UnderstudyError


@dataclasses.dataclass(frozen=True)
class Config:
    """MOReL settings: the dynamics ensemble, the unknown-state detector and halting, and the RL algorithm inside
    the pessimistic model. `--steps` counts policy-optimisation gradient updates; --model-steps is the separate
    budget of ensemble updates."""

    rl: Literal["sac", "ppo"] = "sac"
    """The RL algorithm trained inside the pessimistic model: sac (short model branches into a replay buffer) or ppo (whole model episodes, on-policy)."""
    sac: sac_algo.Config = sac_algo.Config(buffer_size=250_000)
    """SAC's settings (--rl sac), e.g. --sac.batch-size 512. buffer_size is the model-transition replay's capacity; learning_starts and updates_per_step do not apply (see --rollout-every)."""
    ppo: ppo_algo.Config = ppo_algo.Config(num_envs=64, num_steps=128, normalize_observations=False)
    """PPO's settings (--rl ppo): num_envs model episodes side by side, num_steps model steps per rollout. Its running observation normalization is off by default (observations are already standardized by the dataset's statistics)."""
    model: Literal["mlp", "vae"] = "mlp"
    """Dynamics model of each ensemble member: mlp (mean and log-variance heads) or vae (a conditional VAE, note 002)."""
    ensemble_size: int = 4
    """Members of the dynamics ensemble (at least 2: the detector measures their disagreement)."""
    model_hidden_dims: tuple[int, ...] = (256, 256)
    """Hidden layer widths of each member (the VAE's encoder and decoder each get these); --preset paper uses 512-512."""
    model_loss: Literal["nll", "mse"] = "nll"
    """mlp members: Gaussian negative log-likelihood with learned variances, or mean squared error (the VAE always reconstructs by MSE)."""
    model_lr: float = 1e-3
    """AdamW learning rate of the ensemble."""
    model_weight_decay: float = 1e-5
    """AdamW weight decay of the ensemble."""
    model_batch_size: int = 256
    """Transitions per ensemble member per model update (each member draws its own)."""
    model_steps: int = 20_000
    """Budget of ensemble gradient updates (separate from --steps); training stops earlier when the validation error stops improving (--model-patience)."""
    model_eval_every: int = 1_000
    """Model updates between validation checks (a row of model/metrics.csv each)."""
    model_patience: int = 5
    """Stop fitting the ensemble after this many validation checks without a lower validation error, keeping the best (0: never stop early)."""
    model_validation_fraction: float = 0.1
    """Fraction of the dataset's episodes held out to validate the ensemble (0: none; then no early stopping)."""
    learn_terminations: bool = True
    """Predict episode ends with a termination logit (BCE) so model episodes can end as the env's do (Hopper, Walker2d)."""
    vae_latent_dim: int = 8
    """--model vae: latent dimensions z."""
    vae_kl_weight: float = 1.0
    """--model vae: weight beta of KL(q(z | s, a, y) || N(0, I)) in its loss."""
    threshold_rule: Literal["max", "mean-std"] = "max"
    """Halting threshold from the disagreement over the dataset's (s, a): max (times --threshold-scale; the paper) or mean-std (mean + --threshold-std standard deviations). On 1M-step halfcheetah and hopper medium data the max is an outlier (13-30 std above the mean) and the max rule never halted; mean-std halted 0.2-1.4% of model steps (docs/results/offline-locomotion, session 19)."""
    threshold_scale: float = 1.0
    """--threshold-rule max: threshold = scale * max disagreement on the data (below 1 halts sooner, more pessimistic)."""
    threshold_std: float = 3.0
    """--threshold-rule mean-std: threshold = mean + this many standard deviations of the data's disagreement."""
    kappa: Optional[float] = None
    """Halting penalty: a halting step pays r_min - kappa. None: (r_max - r_min) / (1 - gamma) of the dataset's rewards (scale-aware)."""
    rollout_member: Literal["random", "mean"] = "random"
    """Which prediction a model step follows: a random member's, drawn per step (MBPO, MOReL's per-model rollouts), or the ensemble mean."""
    start_states: Literal["all", "initial"] = "all"
    """Model episodes start from any dataset state (all) or only from the dataset's episode starts (initial)."""
    rollout_batch_size: int = 256
    """--rl sac: model branches started per rollout round (rollout_batch_size * rollout_horizon transitions per round)."""
    rollout_horizon: int = 10
    """--rl sac: model steps per branch (MBPO-style short branches); a branch that halts or terminates restarts from a dataset state."""
    rollout_every: int = 50
    """--rl sac: SAC updates per rollout round (--steps and --eval-every are rounded to multiples of it)."""
    real_ratio: float = 0.0
    """--rl sac: fraction of each SAC batch drawn from the real dataset instead of the model replay (0: model data only, as MOReL)."""
    episode_horizon: int = 200
    """--rl ppo: model episodes are truncated (and bootstrapped) after this many steps."""
    normalize_observations: bool = True
    """Standardize observations by the dataset's mean and std (model and policy; saved in the policy export)."""


PRESETS: dict[str, Config] = {
    "default": Config(),
    # The paper's models (4 members of 512-512, fit by MSE) and planner (an on-policy method, NPG there, PPO here,
    # over whole model episodes from the dataset's initial states).
    "paper": Config(rl="ppo", model_hidden_dims=(512, 512), model_loss="mse", start_states="initial",
                    episode_horizon=500),
}
"""Named settings (`--preset NAME`)."""


class DynamicsState(struct.PyTreeNode):
    """The ensemble: parameters [E, ...], optimizer state, and the statistics that standardize its targets."""

    params: Any
    opt_state: Any
    target_mean: jax.Array  # [D + 1]: change of state, then reward
    target_std: jax.Array
    step: jax.Array  # int32: ensemble updates done


class State(struct.PyTreeNode):
    """The ensemble, the RL algorithm's state (SAC's or PPO's) and the pessimistic MDP's constants."""

    dynamics: DynamicsState
    rl: Any
    threshold: jax.Array  # scalar: disagreement above it halts (+inf until the loop sets it)
    halt_reward: jax.Array  # scalar: r_min - kappa
    reward_low: jax.Array  # scalar: the dataset's reward range, which clips the model's rewards
    reward_high: jax.Array
    step: jax.Array  # int32: policy-optimisation updates done
    obs_dim: int = struct.field(pytree_node=False, default=1)
    action_dim: int = struct.field(pytree_node=False, default=1)


class ModelStep(struct.PyTreeNode):
    """One pessimistic-MDP step of B states."""

    next_observation: jax.Array  # [B, D] (a halted state keeps its observation)
    reward: jax.Array  # [B]
    terminal: jax.Array  # [B] bool: halted or predicted to terminate (no bootstrap)
    halted: jax.Array  # [B] bool: in HALT after this step
    disagreement: jax.Array  # [B] u(s, a)


# -- settings --------------------------------------------------------------------------------------------
def method_name(cfg: Config) -> str:
    return f"morel-{cfg.rl}" + ("-vae" if cfg.model == "vae" else "")


def rl_gamma(cfg: Config) -> float:
    return float(cfg.sac.gamma if cfg.rl == "sac" else cfg.ppo.gamma)


def check(cfg: Config) -> None:
    """Rejects settings that cannot work, naming the flag."""
    if cfg.rl not in ("sac", "ppo"):
        raise UnderstudyError(f"morel --rl must be sac or ppo, got {cfg.rl!r}.")
    if cfg.model not in dynamics.KINDS or cfg.model_loss not in ("nll", "mse"):
        raise UnderstudyError(f"morel --model must be one of {', '.join(dynamics.KINDS)} and --model-loss nll or mse "
                              f"(got {cfg.model!r}, {cfg.model_loss!r}).")
    if cfg.ensemble_size < 2:
        raise UnderstudyError(f"morel --ensemble-size must be >= 2: the unknown-state detector measures the members' "
                              f"disagreement (got {cfg.ensemble_size}; the paper uses 4).")
    positive = ("model_batch_size", "model_steps", "model_eval_every", "rollout_batch_size", "rollout_horizon",
                "rollout_every", "episode_horizon", "vae_latent_dim")
    for name in positive:
        if getattr(cfg, name) < 1:
            raise UnderstudyError(f"morel --{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}.")
    if cfg.model_patience < 0 or not 0.0 <= cfg.model_validation_fraction < 1.0:
        raise UnderstudyError(f"morel --model-patience must be >= 0 and --model-validation-fraction in [0, 1) (got "
                              f"{cfg.model_patience}, {cfg.model_validation_fraction}).")
    if cfg.threshold_rule not in ("max", "mean-std") or cfg.threshold_scale <= 0:
        raise UnderstudyError(f"morel --threshold-rule must be max or mean-std and --threshold-scale > 0 (got "
                              f"{cfg.threshold_rule!r}, {cfg.threshold_scale}).")
    if cfg.kappa is not None and cfg.kappa < 0:
        raise UnderstudyError(f"morel --kappa must be >= 0 (or left out for the scale-aware default), got {cfg.kappa}.")
    if not 0.0 <= cfg.real_ratio < 1.0:
        raise UnderstudyError(f"morel --real-ratio must be in [0, 1) (a SAC batch needs model data), got "
                              f"{cfg.real_ratio}.")
    if cfg.rl == "sac" and cfg.rollout_batch_size * cfg.rollout_horizon > cfg.sac.buffer_size:
        raise UnderstudyError(f"morel: one rollout round writes --rollout-batch-size x --rollout-horizon = "
                              f"{cfg.rollout_batch_size * cfg.rollout_horizon} transitions, more than "
                              f"--sac.buffer-size {cfg.sac.buffer_size}. Raise the buffer or shrink the rounds.")


# -- the dynamics ensemble -------------------------------------------------------------------------------
MODEL_FIELDS = ("model", "ensemble_size", "model_hidden_dims", "model_loss", "model_lr", "model_weight_decay",
                "model_batch_size", "learn_terminations", "vae_latent_dim", "vae_kl_weight")


def model_config(cfg: Config) -> Config:
    """The defaults with only `cfg`'s model settings: the functions of the ensemble read nothing else, so runs
    that differ only in their RL settings share compiled model programs when keyed by this."""
    return dataclasses.replace(Config(), **{name: getattr(cfg, name) for name in MODEL_FIELDS})


def dynamics_net(cfg: Config, obs_dim: int) -> dynamics.DynamicsNet:
    return dynamics.make_dynamics(cfg.model, obs_dim + 1, cfg.model_hidden_dims, gaussian=cfg.model_loss == "nll",
                                  learn_terminations=cfg.learn_terminations, latent_dim=cfg.vae_latent_dim)


def _net(cfg: Config, dyn: DynamicsState) -> dynamics.DynamicsNet:
    return dynamics_net(cfg, dyn.target_mean.shape[-1] - 1)


def model_optimizer(cfg: Config) -> optax.GradientTransformation:
    return optax.adamw(cfg.model_lr, weight_decay=cfg.model_weight_decay)


def targets(obs: jax.Array, next_obs: jax.Array, rewards: jax.Array) -> jax.Array:
    """What the models predict, unstandardized: [s' - s, r] -> [..., D + 1]."""
    return jnp.concatenate([next_obs - obs, rewards[..., None]], axis=-1)


def target_statistics(obs: np.ndarray, next_obs: np.ndarray, rewards: np.ndarray) -> dict[str, np.ndarray]:
    """Mean and std (floored) of the targets over a dataset's (standardized) observations, for `with_data`."""
    y = np.concatenate([np.asarray(next_obs) - np.asarray(obs), np.asarray(rewards)[:, None]], axis=-1)
    return fit_normalizer(y, min_std=1e-4)


def halt_reward(cfg: Config, reward_low: float, reward_high: float) -> float:
    """r_min - kappa; kappa defaults to (r_max - r_min) / (1 - gamma)."""
    kappa = (reward_high - reward_low) / (1.0 - rl_gamma(cfg)) if cfg.kappa is None else cfg.kappa
    return float(reward_low - kappa)


def with_data(cfg: Config, state: State, stats: dict, reward_low: float, reward_high: float) -> State:
    """The state with the dataset's target statistics, reward range and halting reward (one seed)."""
    dyn = state.dynamics.replace(target_mean=jnp.asarray(stats["mean"], jnp.float32),
                                 target_std=jnp.asarray(stats["std"], jnp.float32))
    return state.replace(dynamics=dyn, reward_low=jnp.float32(reward_low), reward_high=jnp.float32(reward_high),
                         halt_reward=jnp.float32(halt_reward(cfg, reward_low, reward_high)))


def _standardized_targets(dyn: DynamicsState, batch: Batch) -> jax.Array:
    return (targets(batch.observations, batch.next_observations, batch.rewards) - dyn.target_mean) / dyn.target_std


def model_update(cfg: Config, dyn: DynamicsState, batch: Batch, key: jax.Array
                 ) -> tuple[DynamicsState, dict[str, jax.Array]]:
    """One gradient step of every member, member i on its own batch: leaves [E, B, ...] (standardized obs)."""
    y = _standardized_targets(dyn, batch)

    def loss_fn(params):
        return dynamics.ensemble_loss(_net(cfg, dyn), params, batch.observations, batch.actions, y,
                                      batch.terminations, key, cfg.model_loss, cfg.vae_kl_weight)

    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(dyn.params)
    updates, opt_state = model_optimizer(cfg).update(grads, dyn.opt_state, dyn.params)
    dyn = dyn.replace(params=optax.apply_updates(dyn.params, updates), opt_state=opt_state, step=dyn.step + 1)
    return dyn, {"loss": loss / cfg.ensemble_size, **metrics}


def model_validation_error(cfg: Config, dyn: DynamicsState, batch: Batch) -> jax.Array:
    """Mean squared error of the members' mean predictions of the standardized targets on a batch [B] (scalar:
    averaged over members), comparable across --model-loss settings."""
    out = dynamics.ensemble_predict(_net(cfg, dyn), dyn.params, batch.observations, batch.actions)
    return jnp.mean(jnp.square(out["mean"] - _standardized_targets(dyn, batch)[None]))


def ensemble_transitions(cfg: Config, dyn: DynamicsState, obs: jax.Array, action: jax.Array):
    """Every member's next state [E, B, D], reward [E, B] and termination probability [E, B] (zeros without
    --learn-terminations)."""
    out = dynamics.ensemble_predict(_net(cfg, dyn), dyn.params, obs, action)
    y = out["mean"] * dyn.target_std + dyn.target_mean
    term = jnp.zeros(y.shape[:-1]) if out["term_logit"] is None else jax.nn.sigmoid(out["term_logit"])
    return obs[None] + y[..., :-1], y[..., -1], term


# -- the unknown-state detector and the pessimistic MDP ---------------------------------------------------
def disagreement(next_obs: jax.Array) -> jax.Array:
    """u = max over member pairs (i, j) of ||f_i - f_j||_2, for predictions [E, B, D] -> [B]."""
    if jnp.ndim(next_obs) != 3:
        raise ValueError(f"disagreement takes predictions [E, B, D], got shape {jnp.shape(next_obs)}")
    diff = next_obs[:, None] - next_obs[None, :]  # [E, E, B, D]
    return jnp.sqrt(jnp.max(jnp.sum(jnp.square(diff), axis=-1), axis=(0, 1)))


def dataset_disagreement(cfg: Config, dyn: DynamicsState, obs: jax.Array, action: jax.Array) -> jax.Array:
    """u(s, a) [B] of dataset pairs."""
    return disagreement(ensemble_transitions(cfg, dyn, obs, action)[0])


def unknown_threshold(u: jax.Array, rule: str, scale: float = 1.0, num_std: float = 3.0) -> jax.Array:
    """The halting threshold from the disagreement u [N] over the dataset: scale * max(u) or mean + num_std * std."""
    if rule == "max":
        return scale * jnp.max(u)
    if rule == "mean-std":
        return jnp.mean(u) + num_std * jnp.std(u)
    raise ValueError(f"unknown threshold rule {rule!r}; expected max or mean-std")


def pessimistic_step(threshold: jax.Array, halt_reward_value: jax.Array, obs: jax.Array, halted: jax.Array,
                     next_obs: jax.Array, reward: jax.Array, terminal: jax.Array, u: jax.Array) -> ModelStep:
    """The P-MDP's rule given the followed prediction (next_obs [B, D], reward, terminal [B]) and u [B]: an
    unknown (s, a) (u > threshold) or an already halted state goes to HALT, which pays the halting reward,
    ends the episode and keeps the state."""
    now_halted = jnp.asarray(halted, bool) | (u > threshold)
    return ModelStep(next_observation=jnp.where(now_halted[:, None], obs, next_obs),
                     reward=jnp.where(now_halted, halt_reward_value, reward),
                     terminal=now_halted | jnp.asarray(terminal, bool), halted=now_halted, disagreement=u)


def model_step(cfg: Config, state: State, obs: jax.Array, action: jax.Array, halted: jax.Array,
               key: jax.Array) -> ModelStep:
    """One step of the pessimistic MDP for B states [B, D] and actions [B, A] in [-1, 1]; halted [B] bool."""
    next_obs, reward, term = ensemble_transitions(cfg, state.dynamics, obs, action)
    reward = jnp.clip(reward, state.reward_low, state.reward_high)
    u = disagreement(next_obs)
    if cfg.rollout_member == "mean":
        pick = lambda x: jnp.mean(x, axis=0)  # noqa: E731
    else:
        member = jax.random.randint(key, (obs.shape[0],), 0, cfg.ensemble_size)
        pick = lambda x: jnp.take_along_axis(x, member.reshape((1, -1) + (1,) * (x.ndim - 2)), axis=0)[0]  # noqa: E731
    return pessimistic_step(state.threshold, state.halt_reward, obs, halted, pick(next_obs), pick(reward),
                            pick(term) > 0.5, u)


# -- the contract ------------------------------------------------------------------------------------------
def init(cfg: Config, spec: EnvSpec, key: jax.Array) -> State:
    check(cfg)
    if spec.discrete:
        raise UnderstudyError(f"MOReL here needs continuous actions, but {spec.env_id} has {spec.num_actions} discrete "
                              "actions. Use bc --head categorical for discrete-action datasets.")
    rl_key, model_key = jax.random.split(key)
    rl = sac_algo.init(cfg.sac, spec, rl_key) if cfg.rl == "sac" else ppo_algo.init(cfg.ppo, spec, rl_key)
    return State(dynamics=_init_dynamics(model_config(cfg), spec.obs_dim, spec.action_dim, model_key), rl=rl,
                 threshold=jnp.float32(jnp.inf), halt_reward=jnp.float32(0.0), reward_low=jnp.float32(-jnp.inf),
                 reward_high=jnp.float32(jnp.inf), step=jnp.zeros((), jnp.int32), obs_dim=spec.obs_dim,
                 action_dim=spec.action_dim)


def _init_dynamics(cfg: Config, obs_dim: int, action_dim: int, key: jax.Array) -> DynamicsState:
    params = dynamics.ensemble_init(dynamics_net(cfg, obs_dim), key, cfg.ensemble_size, obs_dim, action_dim)
    # the optimizer's initial state is zeros (and a zero count): built from its shapes, without compiling
    opt_state = jax.tree.map(lambda x: jnp.asarray(np.zeros(x.shape, x.dtype)),
                             jax.eval_shape(model_optimizer(cfg).init, params))
    return DynamicsState(params=params, opt_state=opt_state,
                         target_mean=jnp.zeros(obs_dim + 1, jnp.float32), target_std=jnp.ones(obs_dim + 1, jnp.float32),
                         step=jnp.zeros((), jnp.int32))


def update(cfg: Config, state: State, batch: Any, lr_scale: jax.Array | float = 1.0
           ) -> tuple[State, dict[str, jax.Array]]:
    """One policy-optimisation update: a SAC step on a Batch of model transitions (--rl sac), or a PPO update on a
    ppo.Rollout of model episodes (--rl ppo; lr_scale anneals its learning rate)."""
    if cfg.rl == "sac":
        rl, metrics = sac_algo.update(cfg.sac, state.rl, batch)
    else:
        rl, metrics = ppo_algo.update(cfg.ppo, state.rl, batch, lr_scale)
    return state.replace(rl=rl, step=state.step + 1), metrics


def act(cfg: Config, state: State, obs: jax.Array, key: jax.Array, deterministic: bool) -> jax.Array:
    """Actions in [-1, 1] for standardized observations [B, D] (the loop standardizes)."""
    if cfg.rl == "sac":
        return sac_algo.act(cfg.sac, state.rl, obs, key, deterministic)
    return ppo_algo.act(cfg.ppo, state.rl, obs, key, deterministic)


def policy_export(cfg: Config, state: State) -> tuple:
    """The RL algorithm's export: (head_config, params) for SAC; PPO adds its own normalizer (None unless
    --ppo.normalize-observations), which the loop composes with the dataset's."""
    return rl_policy_export(cfg, state.rl)


def rl_policy_export(cfg: Config, rl: Any) -> tuple:
    """policy_export from the RL algorithm's state alone (what the loop hands its recorder: slicing one seed out
    of the whole state, models included, would cost a compiled slice per parameter shape)."""
    if cfg.rl == "sac":
        return sac_algo.policy_export(cfg.sac, rl)
    return ppo_algo.policy_export(cfg.ppo, rl)
