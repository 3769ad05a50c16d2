"""Offline loop (BC, and later CQL / TD3+BC / IQL): the whole dataset on device, K updates per jitted call.

Seeds are a vmap axis over agents and RNG keys; the dataset is shared. Between evaluations one jitted call
runs `updates_per_call` updates inside `lax.scan`, sampling batches on device.
"""

from __future__ import annotations

import dataclasses
import functools
from types import ModuleType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from understudy.data.episodes import train_val_split
from understudy.data.normalize import fit_normalizer, normalize
from understudy.data.samplers import sample_transitions, to_device
from understudy.eval.rollouts import evaluate_seeds
from understudy.policy import from_env_action, to_env_action
from understudy.train.augment import noise_scale, with_obs_noise
from understudy.train.common import RunArgs, RunRecorder, default_out, eval_episodes, eval_steps, mean_metrics, \
    prepare_run_dir, run_config, vmapped_update
from understudy.types import Batch, EnvSpec, UnderstudyError


def load_training_data(run: RunArgs, algo_name: str):
    """Loads the dataset and the env spec it must match (from --env, else from the dataset's metadata).

    Every offline algorithm but BC needs the actions that were executed, not noise-free labels."""
    from understudy.data import load_dataset
    from understudy.data.validate import check_compatible, require_executed_actions
    from understudy.envs import make_spec

    if run.dataset is None:
        raise UnderstudyError("Offline training needs --dataset PATH (a Minari dataset directory or a D4RL-style "
                              "HDF5 file). Make one with `understudy collect`.")
    ds = load_dataset(run.dataset)
    env_id = run.env or ds.metadata.get("env_id")
    if not env_id:
        raise UnderstudyError(f"{run.dataset} does not record which environment it came from (metadata env_id): "
                              "pass --env ID.")
    spec = make_spec(env_id, **_spec_options(ds))
    check_compatible(ds, spec)
    if algo_name != "bc":
        require_executed_actions(ds, algo_name, str(run.dataset))
    return ds, spec


def _spec_options(ds) -> dict:
    saved = (ds.metadata.get("spec") or {}).get("options") or {}
    return {k: v for k, v in saved.items() if k in ("task_bit",)}


LOCOMOTION_HORIZON = 1000  # the MuJoCo locomotion time limit that the IQL paper's reward normalization uses


def reward_scale_from_returns(cfg: Any, ds) -> Any:
    """cfg with dataset_reward_scale = 1000 / (max - min episode return) when cfg.normalize_reward_by_returns.

    The IQL paper (and CORL for locomotion) normalize rewards this way, so that the advantages, and with them the
    actor's weights exp(beta A), have the same scale on every dataset whatever its reward units."""
    if not getattr(cfg, "normalize_reward_by_returns", False):
        return cfg
    if cfg.dataset_reward_scale != 1.0:
        raise UnderstudyError(f"--normalize-reward-by-returns sets the reward scale from the dataset; it cannot be "
                              f"combined with --dataset-reward-scale {cfg.dataset_reward_scale}. Drop one of them.")
    returns = ds.episode_returns()
    spread = float(returns.max() - returns.min()) if returns.size else 0.0
    if returns.size < 2 or not spread > 0:
        raise UnderstudyError(f"--normalize-reward-by-returns needs episodes with different returns; this dataset has "
                              f"{returns.size} episode(s) spanning {spread:g}. Use --dataset-reward-scale instead.")
    return dataclasses.replace(cfg, dataset_reward_scale=LOCOMOTION_HORIZON / spread)


def dataset_columns(ds, spec: EnvSpec, normalizer: dict | None) -> dict:
    """Flat numpy columns for the device: normalized observations, actions scaled to [-1, 1]."""
    actions = ds.actions if spec.discrete else from_env_action(ds.actions, spec)
    return {"observations": normalize(ds.observations.astype(np.float32), normalizer),
            "actions": np.asarray(actions, np.int32 if spec.discrete else np.float32),
            "rewards": ds.rewards.astype(np.float32), "terminations": ds.terminations.astype(np.float32),
            "next_observations": normalize(ds.next_observations.astype(np.float32), normalizer),
            "episode_starts": ds.episode_starts}


MAX_VALIDATION_STEPS = 10_000  # a fixed subset of the held-out steps: one cheap jitted loss per evaluation


def _validation_settings(cfg: Any) -> tuple[float, int]:
    """(validation_fraction, early_stopping_patience) of algorithms that have them (BC), else (0, 0)."""
    fraction = float(getattr(cfg, "validation_fraction", 0.0))
    patience = int(getattr(cfg, "early_stopping_patience", 0))
    if patience < 0:
        raise UnderstudyError(f"--early-stopping-patience must be >= 0 evaluations (got {patience}).")
    if patience and not fraction:
        raise UnderstudyError("--early-stopping-patience needs held-out episodes to watch: set --validation-fraction "
                              "(e.g. 0.1).")
    return fraction, patience


def _validation_batch(ds_val, spec: EnvSpec, normalizer: dict | None) -> Batch:
    """The held-out steps (at most MAX_VALIDATION_STEPS, a fixed subset) as one device Batch."""
    columns = dataset_columns(ds_val, spec, normalizer)
    n = len(columns["actions"])
    keep = np.sort(np.random.default_rng(0).permutation(n)[:MAX_VALIDATION_STEPS])
    return Batch(**{k: jnp.asarray(columns[k][keep]) for k in ("observations", "actions", "rewards", "terminations",
                                                                "next_observations")})


def select_seeds(mask: Any, new: Any, old: Any) -> Any:
    """Per seed (the leading axis of every leaf): `new` where mask [K] is true, else `old`."""
    mask = jnp.asarray(mask)
    return jax.tree.map(lambda a, b: jnp.where(mask.reshape((-1,) + (1,) * (a.ndim - 1)), a, b), new, old)


class EarlyStopping:
    """Per seed: the lowest validation loss so far, the state at it, and the evaluations since it improved.

    Training stops once every seed has gone `patience` evaluations without a lower validation loss; the final
    export of each seed is then its best-validation state (what early stopping is for), not the last one. A seed
    that has run out of patience keeps that best state even if the others train on and its loss dips again later,
    so each seed of a K-seed run ends as it would in a run of its own.
    """

    def __init__(self, patience: int, state: Any):
        num_seeds = int(jax.tree.leaves(state)[0].shape[0])
        self.patience = patience
        self.best_loss = np.full(num_seeds, np.inf)
        self.best_step = np.zeros(num_seeds, np.int64)
        self.stale = np.zeros(num_seeds, np.int64)
        self.best_state = jax.tree.map(jnp.copy, state)

    def observe(self, step: int, losses: np.ndarray, state: Any) -> bool:
        """Takes the seeds' validation losses at `step`; True when every seed has run out of patience."""
        improved = (losses < self.best_loss) & ~self.stopped()
        self.best_loss = np.where(improved, losses, self.best_loss)
        self.best_step = np.where(improved, step, self.best_step)
        self.stale = np.where(improved, 0, self.stale + 1)
        if improved.any():
            self.best_state = select_seeds(improved, state, self.best_state)
        return bool(self.stopped().all())

    def stopped(self) -> np.ndarray:
        """[K] bool: the seeds that have run out of patience (a run of their own would have ended there)."""
        return self.stale >= self.patience

    def meta(self) -> dict:
        return {"patience": self.patience, "best_validation_loss": self.best_loss.tolist(),
                "best_validation_step": self.best_step.tolist(), "evaluations_since_best": self.stale.tolist()}

    def restore(self, best_state: Any, meta: dict) -> None:
        self.best_state = best_state
        if meta:
            self.best_loss = np.asarray(meta["best_validation_loss"], np.float64)
            self.best_step = np.asarray(meta["best_validation_step"], np.int64)
            self.stale = np.asarray(meta["evaluations_since_best"], np.int64)


def _stopper_tree(stopper: EarlyStopping | None) -> dict:
    return {} if stopper is None else {"best_state": stopper.best_state}


def init_agents(algo: ModuleType, cfg: Any, spec: EnvSpec, seed: int, num_seeds: int):
    """(state, keys) of `num_seeds` agents stacked on a leading seed axis (seeds seed .. seed + num_seeds - 1)."""
    seeds = jnp.arange(num_seeds) + seed
    state = jax.vmap(lambda s: algo.init(cfg, spec, jax.random.PRNGKey(s)))(seeds)
    keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.PRNGKey(s), 1))(seeds)
    return jax.tree.map(jnp.copy, state), keys  # donation needs every leaf in its own buffer


def make_update_many(algo: ModuleType, cfg: Any, data, obs_noise_scale: np.ndarray | None = None):
    """The jitted `update_many(state, keys, num_updates)`: that many updates of every seed in one lax.scan, each on
    a batch sampled on device from `data` (a DeviceDataset), with observation noise of per-feature std
    `obs_noise_scale` when given (train/augment.py). Returns (state, keys, metrics [num_updates, seeds])."""
    update = vmapped_update(algo, cfg)
    sample = with_obs_noise(lambda k: sample_transitions(data, k, cfg.batch_size), obs_noise_scale)

    @functools.partial(jax.jit, static_argnames="num_updates", donate_argnames="state")
    def update_many(state, keys, num_updates):
        def one_update(carry, _):
            state, keys = carry
            keys, sub = jax.vmap(jax.random.split, out_axes=1)(keys)
            batch = jax.vmap(sample)(sub)
            state, metrics = update(state, batch)
            return (state, keys), metrics

        (state, keys), metrics = jax.lax.scan(one_update, (state, keys), None, length=num_updates)
        return state, keys, metrics

    return update_many


def train(algo_name: str, algo: ModuleType, cfg: Any, run: RunArgs, *, updates_per_call: int = 1000,
          method: str | None = None) -> dict:
    ds, spec = load_training_data(run, algo_name)
    validation_fraction, patience = _validation_settings(cfg)
    ds_val = None
    if validation_fraction:
        ds, ds_val = train_val_split(ds, validation_fraction, seed=0)
    cfg = reward_scale_from_returns(cfg, ds)
    K = run.seeds
    if K < 1:
        raise UnderstudyError(f"--seeds must be at least 1 (got {K}).")
    method = method or algo_name
    out = run.out or default_out(algo_name, spec.env_id, run.seed)
    reference = None
    if ds.metadata.get("ref_min_score") is not None and ds.metadata.get("ref_max_score") is not None:
        reference = {"random": float(ds.metadata["ref_min_score"]), "expert": float(ds.metadata["ref_max_score"])}
    extra = {"dataset_steps": int(ds.num_steps)}
    if ds_val is not None:
        extra["validation_steps"] = int(ds_val.num_steps)
    config = run_config(algo_name, method, spec.env_id, run, cfg, extra=extra)
    run_dir = prepare_run_dir(out, resume=run.resume, overwrite=run.overwrite, config=config, algo_cfg=cfg)

    normalizer = fit_normalizer(ds.observations) if getattr(cfg, "normalize_observations", False) else None
    data = to_device(dataset_columns(ds, spec, normalizer))

    state, keys = init_agents(algo, cfg, spec, run.seed, K)
    stopper = EarlyStopping(patience, state) if patience else None
    start, resume_meta = 0, None
    if run.resume:
        from understudy.checkpoint import TrainCheckpointer

        ck = TrainCheckpointer(run_dir / "checkpoints")
        start, tree, resume_meta = ck.restore_latest({"state": state, "keys": keys, **_stopper_tree(stopper)})
        ck.close()
        state, keys = tree["state"], tree["keys"]
        if stopper is not None:
            stopper.restore(tree["best_state"], resume_meta.get("early_stopping") or {})
    recorder = RunRecorder(run_dir, run, config=config, spec=spec, export_fn=lambda st: algo.policy_export(cfg, st),
                           normalizer=normalizer, reference=reference, resume_step=start if run.resume else None,
                           resume_meta=resume_meta)

    update_many = make_update_many(algo, cfg, data, noise_scale(run.obs_noise_augment, spec, normalizer, run.obs_noise_augment_units, ds.observations))

    @jax.jit
    def greedy(state, obs):
        obs = normalize(obs, normalizer)
        return jax.vmap(lambda st, o: algo.act(cfg, st, o, jax.random.PRNGKey(0), True))(state, obs)

    validation_loss = None
    if ds_val is not None:
        val_batch = _validation_batch(ds_val, spec, normalizer)
        validation_loss = jax.jit(lambda st: jax.vmap(lambda one: algo.evaluate_loss(cfg, one, val_batch))(st))

    def evaluate(state, final: bool = False):
        def act(o):
            a = np.asarray(greedy(state, jnp.asarray(o, jnp.float32)))
            return a if spec.discrete else to_env_action(a, spec)

        options = dict(_spec_options(ds), **({"obs_noise": run.obs_noise} if run.obs_noise else {}))
        return evaluate_seeds(act, spec.env_id, num_seeds=K, episodes=eval_episodes(run, final), seed=run.seed + 10_000,
                              env_options=options or None)

    checkpoint_every = max(run.eval_every, (run.checkpoint_every or run.eval_every) // run.eval_every * run.eval_every)
    step, summary = start, None
    for mark in eval_steps(run.steps, run.eval_every, start):
        collected = []
        while step < mark:
            n = min(updates_per_call, mark - step)
            state, keys, metrics = update_many(state, keys, num_updates=n)
            collected.append(jax.device_get(metrics))
            step += n
            recorder.progress.update(step)
        train_metrics = mean_metrics({k: np.concatenate([np.ravel(m[k]) for m in collected]) for k in collected[0]})
        stop = False
        if validation_loss is not None:
            losses = np.asarray(validation_loss(state), np.float64)
            train_metrics["val/loss"] = float(np.mean(losses))
            if stopper is not None:
                stop = stopper.observe(step, losses, state)
        last = step == run.steps or stop
        results = evaluate(state, final=last and stopper is None)  # with early stopping, the best state's is final
        recorder.record_eval(step, state, results, train_metrics)
        recorder.maybe_snapshot(step, state, results)
        if step % checkpoint_every == 0 or last:
            recorder.checkpoint(step, {"state": state, "keys": keys, **_stopper_tree(stopper)},
                                extra_meta={"early_stopping": stopper.meta()} if stopper is not None else None)
        if last:
            if stopper is None:
                summary = recorder.finish(step, state, results)
            else:  # the exported final policy of each seed is its state at its lowest validation loss
                summary = recorder.finish(step, stopper.best_state, evaluate(stopper.best_state, final=True),
                                          extra={"early_stopping": {"stopped_early": stop, **stopper.meta()}})
            break
    recorder.close()
    if summary is None:
        import json

        return json.loads((run_dir / "eval.json").read_text())
    return summary
