"""Offline loop (BC, and later CQL / TD3+BC / IQL): the whole dataset on device, K updates per jitted call.

Seeds are a vmap axis over agents and RNG keys; the dataset is shared. Between evaluations one jitted call
runs `updates_per_call` updates inside `lax.scan`, sampling batches on device.
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from understudy.data.normalize import fit_normalizer, normalize
from understudy.data.samplers import sample_transitions, to_device
from understudy.eval.rollouts import evaluate_seeds
from understudy.policy import from_env_action, to_env_action
from understudy.train.common import RunArgs, RunRecorder, default_out, eval_steps, mean_metrics, prepare_run_dir, \
    run_config, vmapped_update
from understudy.types import EnvSpec, UnderstudyError


def load_training_data(run: RunArgs):
    """Loads the dataset and the env spec it must match (from --env, else from the dataset's metadata)."""
    from understudy.data import load_dataset
    from understudy.data.validate import check_compatible
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
    return ds, spec


def _spec_options(ds) -> dict:
    saved = (ds.metadata.get("spec") or {}).get("options") or {}
    return {k: v for k, v in saved.items() if k in ("task_bit",)}


def dataset_columns(ds, spec: EnvSpec, normalizer: dict | None) -> dict:
    """Flat numpy columns for the device: normalized observations, actions scaled to [-1, 1]."""
    actions = ds.actions if spec.discrete else from_env_action(ds.actions, spec)
    return {"observations": normalize(ds.observations.astype(np.float32), normalizer),
            "actions": np.asarray(actions, np.int32 if spec.discrete else np.float32),
            "rewards": ds.rewards.astype(np.float32), "terminations": ds.terminations.astype(np.float32),
            "next_observations": normalize(ds.next_observations.astype(np.float32), normalizer),
            "episode_starts": ds.episode_starts}


def train(algo_name: str, algo: ModuleType, cfg: Any, run: RunArgs, *, updates_per_call: int = 1000,
          method: str | None = None) -> dict:
    ds, spec = load_training_data(run)
    K = run.seeds
    if K < 1:
        raise UnderstudyError(f"--seeds must be at least 1 (got {K}).")
    method = method or algo_name
    out = run.out or default_out(algo_name, spec.env_id, run.seed)
    reference = None
    if ds.metadata.get("ref_min_score") is not None and ds.metadata.get("ref_max_score") is not None:
        reference = {"random": float(ds.metadata["ref_min_score"]), "expert": float(ds.metadata["ref_max_score"])}
    config = run_config(algo_name, method, spec.env_id, run, cfg, extra={"dataset_steps": int(ds.num_steps)})
    run_dir = prepare_run_dir(out, resume=run.resume, overwrite=run.overwrite, config=config)

    normalizer = fit_normalizer(ds.observations) if getattr(cfg, "normalize_observations", False) else None
    data = to_device(dataset_columns(ds, spec, normalizer))

    seeds = jnp.arange(K) + run.seed
    state = jax.vmap(lambda s: algo.init(cfg, spec, jax.random.PRNGKey(s)))(seeds)
    keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.PRNGKey(s), 1))(seeds)
    state = jax.tree.map(jnp.copy, state)  # donation needs every leaf in its own buffer
    start, resume_meta = 0, None
    if run.resume:
        from understudy.checkpoint import TrainCheckpointer

        ck = TrainCheckpointer(run_dir / "checkpoints")
        start, tree, resume_meta = ck.restore_latest({"state": state, "keys": keys})
        ck.close()
        state, keys = tree["state"], tree["keys"]
    recorder = RunRecorder(run_dir, run, config=config, spec=spec, export_fn=lambda st: algo.policy_export(cfg, st),
                           normalizer=normalizer, reference=reference, resume_step=start if run.resume else None,
                           resume_meta=resume_meta)

    update = vmapped_update(algo, cfg)

    @functools.partial(jax.jit, static_argnames="num_updates", donate_argnames="state")
    def update_many(state, keys, num_updates):
        def one_update(carry, _):
            state, keys = carry
            keys, sub = jax.vmap(jax.random.split, out_axes=1)(keys)
            batch = jax.vmap(lambda k: sample_transitions(data, k, cfg.batch_size))(sub)
            state, metrics = update(state, batch)
            return (state, keys), metrics

        (state, keys), metrics = jax.lax.scan(one_update, (state, keys), None, length=num_updates)
        return state, keys, metrics

    @jax.jit
    def greedy(state, obs):
        obs = normalize(obs, normalizer)
        return jax.vmap(lambda st, o: algo.act(cfg, st, o, jax.random.PRNGKey(0), True))(state, obs)

    def evaluate(state):
        def act(o):
            a = np.asarray(greedy(state, jnp.asarray(o, jnp.float32)))
            return a if spec.discrete else to_env_action(a, spec)

        options = dict(_spec_options(ds), **({"obs_noise": run.obs_noise} if run.obs_noise else {}))
        return evaluate_seeds(act, spec.env_id, num_seeds=K, episodes=run.eval_episodes, seed=run.seed + 10_000,
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
        results = evaluate(state)
        recorder.record_eval(step, state, results, train_metrics)
        recorder.maybe_snapshot(step, state, results)
        if step % checkpoint_every == 0 or step == run.steps:
            recorder.checkpoint(step, {"state": state, "keys": keys})
        if step == run.steps:
            summary = recorder.finish(step, state, results)
    recorder.close()
    if summary is None:
        import json

        return json.loads((run_dir / "eval.json").read_text())
    return summary
