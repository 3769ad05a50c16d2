"""Imitation-seeded SAC (note 001): start SAC from an imitator of the expert instead of from scratch.

1. An imitator (a BC policy with any head from understudy.nets.heads) is fit to expert demonstrations.
2. The imitator acts in the env for a few trajectories; SAC's actor is fit to the imitator's actions
   (MSE of the actor's mode) on those trajectories and on the expert's states, and SAC's critics to the
   discounted rewards-to-go of the trajectories, per state ("calibration"). The target critics are set
   equal to the calibrated critics.
3. Each later iteration, with probability p = p0 * p_decay**iteration, the imitator is re-trained and the
   actor and critics recalibrated; otherwise SAC explores and learns as usual.

The SAC part is understudy.algos.sac unchanged (its init, update and act run on `State.sac`); the imitator
is understudy.algos.bc's state. The loop is understudy.train.seeded.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import flax.struct as struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from understudy.algos import bc, sac
from understudy.nets.heads import HEADS, is_discrete_head
from understudy.types import Batch, EnvSpec, UnderstudyError


@dataclasses.dataclass(frozen=True)
class Config(sac.Config):
    """SAC's settings plus the imitator, the calibration and the seeding-probability schedule."""

    expert: str = ""
    """Expert demonstrations: a policy export directory (rolled out for --expert-episodes episodes) or a
    dataset (Minari directory / D4RL HDF5)."""
    expert_episodes: int = 10
    """Episodes of the expert policy recorded as demonstrations when --expert is a policy export."""
    imitator_head: str = "mse"
    """Imitator's action head (any continuous head from understudy.nets.heads: mse, gaussian, tanh-gaussian)."""
    imitator_lr: float = 1e-3
    """Adam learning rate of the imitator."""
    imitator_updates: int = 2000
    """Imitator gradient steps on the expert data at each seeding (the first and every re-training)."""
    calibration_updates: int = 1000
    """Actor and critic gradient steps fitting the imitator's actions and rewards-to-go at each seeding."""
    calibration_trajectories: int = 5
    """Trajectories (per seed) the imitator plays at each seeding; their env steps count toward --steps."""
    p0: float = 0.5
    """Probability of re-training the imitator and recalibrating at iteration 1 (iteration 0 always seeds)."""
    p_decay: float = 0.8
    """p at iteration i is p0 * p_decay**i (decays so later iterations explore with SAC)."""
    iteration_steps: int = 5000
    """Env steps of SAC exploration in an iteration that does not re-seed."""
    learning_starts: int = 0
    """Env steps before SAC updates begin. No random-action phase: the seeded actor explores from the start."""


class State(struct.PyTreeNode):
    """SAC's state and the imitator's (a BC state); `seedings` counts calibrations done."""

    sac: sac.State
    imitator: bc.State
    seedings: jax.Array  # int32 scalar


def imitator_config(cfg: Config) -> bc.Config:
    """The BC settings of the imitator (observations are not normalized: SAC's actor sees raw ones too)."""
    return bc.Config(head=cfg.imitator_head, hidden_dims=cfg.hidden_dims, lr=cfg.imitator_lr, weight_decay=0.0,
                     batch_size=cfg.batch_size, normalize_observations=False)


def _check(cfg: Config, spec: EnvSpec) -> None:
    if not cfg.expert:
        raise UnderstudyError("seeded-sac needs expert demonstrations: pass --expert PATH (a policy export "
                              "directory such as runs/sac-Pendulum-v1-s0/best, or a Minari dataset directory).")
    if cfg.imitator_head not in HEADS or is_discrete_head(cfg.imitator_head):
        raise UnderstudyError(f"seeded-sac --imitator-head {cfg.imitator_head!r} is not a continuous action head. "
                              f"Choose one of: {', '.join(sorted(h for h in HEADS if not is_discrete_head(h)))}.")
    if not 0.0 <= cfg.p0 <= 1.0 or not 0.0 <= cfg.p_decay <= 1.0:
        raise UnderstudyError(f"seeded-sac --p0 ({cfg.p0}) and --p-decay ({cfg.p_decay}) must lie in [0, 1].")
    for name in ("imitator_updates", "calibration_updates", "calibration_trajectories", "iteration_steps"):
        if getattr(cfg, name) < 1:
            raise UnderstudyError(f"seeded-sac --{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}.")


# -- the contract ----------------------------------------------------------------------------------
def init(cfg: Config, spec: EnvSpec, key: jax.Array) -> State:
    _check(cfg, spec)
    sac_key, imitator_key = jax.random.split(key)
    return State(sac=sac.init(cfg, spec, sac_key), imitator=bc.init(imitator_config(cfg), spec, imitator_key),
                 seedings=jnp.zeros((), jnp.int32))


def update(cfg: Config, state: State, batch: Batch) -> tuple[State, dict[str, jax.Array]]:
    """One SAC update (understudy.algos.sac.update) on replay transitions."""
    sac_state, metrics = sac.update(cfg, state.sac, batch)
    return state.replace(sac=sac_state), metrics


def act(cfg: Config, state: State, obs: jax.Array, key: jax.Array, deterministic: bool) -> jax.Array:
    return sac.act(cfg, state.sac, obs, key, deterministic)


def policy_export(cfg: Config, state: State) -> tuple[dict, Any]:
    return sac.policy_export(cfg, state.sac)


# -- imitation and calibration ---------------------------------------------------------------------
def imitator_update(cfg: Config, state: State, batch: Batch) -> tuple[State, dict[str, jax.Array]]:
    """One imitator step on expert (observation, normalized action) pairs."""
    imitator, metrics = bc.update(imitator_config(cfg), state.imitator, batch)
    return state.replace(imitator=imitator), {f"imitator_{k}": v for k, v in metrics.items()}


def imitator_act(cfg: Config, state: State, obs: jax.Array) -> jax.Array:
    """The imitator's deterministic actions [B, A] in [-1, 1]."""
    return bc.act(imitator_config(cfg), state.imitator, obs, jax.random.PRNGKey(0), True)


def calibration_losses(cfg: Config, sac_state: sac.State, actor_params: Any, critic_params: Any,
                       batch: Batch) -> tuple[jax.Array, jax.Array]:
    """(actor loss, critic loss) on imitator trajectories.

    batch.actions are the imitator's actions [B, A] and batch.rewards the discounted rewards-to-go [B] of
    the states. Actor: mean squared error of its mode to the imitator's action (summed over action dims).
    Critic: mean over critics and states of (Q(s, a) - rewards_to_go)^2, over the rows whose batch.mask is
    1 (None: all rows); rows with mask 0 are states without a return (see `calibration_batch`).
    """
    B = batch.rewards.shape[0]
    assert batch.actions.shape == (B, sac_state.action_dim), batch.actions.shape
    mode = sac.actor_network(cfg, sac_state.action_dim).apply(actor_params, batch.observations, method="mode")
    actor_loss = jnp.mean(jnp.sum((mode - batch.actions) ** 2, axis=-1))
    q = sac.critic_network(cfg).apply(critic_params, batch.observations, batch.actions)  # [num_critics, B]
    assert q.shape == (cfg.num_critics, B), q.shape
    mask = jnp.ones((B,)) if batch.mask is None else batch.mask
    assert mask.shape == (B,), mask.shape
    critic_loss = jnp.sum(jnp.mean((q - batch.rewards[None]) ** 2, axis=0) * mask) / jnp.maximum(jnp.sum(mask), 1.0)
    return actor_loss, critic_loss


def calibration_batch(cfg: Config, state: State, rollout: Batch, states: jax.Array) -> Batch:
    """Rollout rows (imitator actions, rewards-to-go; mask 1) followed by `states` [M, obs_dim] labelled with
    the imitator's actions (mask 0: they train the actor only). The expert's states widen what the actor
    copies beyond the few imitator trajectories, e.g. to initial states those trajectories missed."""
    labels = imitator_act(cfg, state, states)
    M = states.shape[0]
    return Batch(observations=jnp.concatenate([rollout.observations, states]),
                 actions=jnp.concatenate([rollout.actions, labels]),
                 rewards=jnp.concatenate([rollout.rewards, jnp.zeros((M,))]),
                 terminations=jnp.concatenate([rollout.terminations, jnp.zeros((M,))]),
                 next_observations=jnp.concatenate([rollout.next_observations, states]),
                 mask=jnp.concatenate([jnp.ones_like(rollout.rewards), jnp.zeros((M,))]))


def calibration_update(cfg: Config, state: State, batch: Batch) -> tuple[State, dict[str, jax.Array]]:
    """One step of the actor toward the imitator and the critics toward rewards-to-go, with SAC's optimizers.

    The target critics are set to the calibrated critics, so SAC's first targets agree with them.
    """
    s = state.sac
    actor_opt, critic_opt, _ = sac.optimizers(cfg)
    def total_loss(actor_params, critic_params):
        actor_loss, critic_loss = calibration_losses(cfg, s, actor_params, critic_params, batch)
        return actor_loss + critic_loss, (actor_loss, critic_loss)  # disjoint parameters: one backward pass

    (_, (actor_loss, critic_loss)), (actor_grads, critic_grads) = jax.value_and_grad(
        total_loss, argnums=(0, 1), has_aux=True)(s.actor_params, s.critic_params)
    actor_updates, actor_opt_state = actor_opt.update(actor_grads, s.actor_opt_state, s.actor_params)
    critic_updates, critic_opt_state = critic_opt.update(critic_grads, s.critic_opt_state, s.critic_params)
    actor_params = optax.apply_updates(s.actor_params, actor_updates)
    critic_params = optax.apply_updates(s.critic_params, critic_updates)
    new_sac = s.replace(actor_params=actor_params, critic_params=critic_params, target_critic_params=critic_params,
                        actor_opt_state=actor_opt_state, critic_opt_state=critic_opt_state)
    return state.replace(sac=new_sac), {"calibration_actor_loss": actor_loss, "calibration_critic_loss": critic_loss}


def seeding_probability(cfg: Config, iteration: int) -> float:
    """Probability that iteration `iteration` re-trains the imitator and recalibrates (1 at iteration 0)."""
    return 1.0 if iteration == 0 else float(cfg.p0 * cfg.p_decay ** iteration)


def rewards_to_go(rewards: np.ndarray, episode_ends: np.ndarray, gamma: float) -> np.ndarray:
    """Discounted sum of the rewards from each step to the end of its episode.

    rewards [T]; episode_ends [T] bool, True at each episode's last step (the last step of the array always
    ends one). An episode cut by a time limit gets no bootstrap: the imitator's trajectories are complete.
    """
    rewards = np.asarray(rewards, np.float64)
    out = np.zeros_like(rewards)
    running = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        if episode_ends[t] or t == len(rewards) - 1:
            running = 0.0
        running = rewards[t] + gamma * running
        out[t] = running
    return out.astype(np.float32)


# -- expert demonstrations -------------------------------------------------------------------------
def load_expert(cfg: Config, spec: EnvSpec, env_id: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Expert (observations [N, obs_dim], actions [N, A] in [-1, 1]) from a policy export or a dataset."""
    from understudy.policy import from_env_action

    path = Path(cfg.expert)
    if (path / "policy.json").exists():
        obs, actions = _roll_out_expert(path, env_id, cfg.expert_episodes, seed)
    elif path.exists():
        from understudy.data.storage import load_dataset

        ds = load_dataset(path)
        if isinstance(ds.observations, dict):
            raise UnderstudyError(f"seeded-sac --expert {path}: dict observations are not supported; use a dataset "
                                  "with flat vector observations.")
        obs, actions = ds.observations, ds.actions
    else:
        raise UnderstudyError(f"seeded-sac --expert {path} does not exist. Pass a policy export directory (holding "
                              "policy.json) or a Minari dataset directory.")
    obs = np.asarray(obs, np.float32).reshape(len(obs), -1)
    if obs.shape[1] != spec.obs_dim or np.shape(actions)[1:] != (spec.action_dim,):
        raise UnderstudyError(f"seeded-sac --expert {path}: observations {obs.shape[1:]} / actions "
                              f"{np.shape(actions)[1:]} do not match {env_id}'s ({spec.obs_dim},) / "
                              f"({spec.action_dim},). Use demonstrations recorded on the same environment.")
    return obs, np.asarray(from_env_action(actions, spec), np.float32)


def _roll_out_expert(path: Path, env_id: str, episodes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from understudy.envs import make
    from understudy.policy import load_policy

    policy, env = load_policy(path), make(env_id, seed=seed + 20_000)
    obs_list, action_list = [], []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + 20_000 + episode)
        done = False
        while not done:
            action = policy(obs)
            obs_list.append(np.asarray(obs, np.float32)), action_list.append(np.asarray(action, np.float32))
            obs, _, term, trunc, _ = env.step(action)
            done = term or trunc
    env.close()
    return np.stack(obs_list), np.stack(action_list)
