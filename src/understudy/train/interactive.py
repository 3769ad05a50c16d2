"""Interactive imitation loop (DAgger), readable top to bottom.

K seeds run side by side: each has its own learner, env and aggregated dataset (on device, preallocated to
its final size so every jitted call keeps its shapes). One iteration:
  1. roll out `steps_per_iteration` steps per seed, the expert acting with probability β_i at each step and
     the learner (greedy) otherwise; every visited state is labelled with the expert's action;
  2. append the pairs to each seed's dataset;
  3. run `updates_per_iteration` BC updates (lax.scan, seeds vmapped) on batches drawn from the whole dataset;
  4. evaluate the learner when an --eval-every mark is passed, and checkpoint.
`--steps` counts rollout steps per seed (expert demonstrations given with --dataset are extra, as D_0).
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from types import ModuleType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from understudy.data.normalize import fit_normalizer
from understudy.envs import env_spec, make
from understudy.eval.rollouts import evaluate_seeds
from understudy.policy import from_env_action, load_policy, to_env_action
from understudy.train.common import RunArgs, RunRecorder, default_out, eval_episodes, mean_metrics, prepare_run_dir, \
    run_config, vmapped_update
from understudy.types import Batch, UnderstudyError


def _check_expert(expert, spec, path: str) -> None:
    e = expert.spec
    if tuple(e.obs_shape) != tuple(spec.obs_shape) or e.discrete != spec.discrete or e.action_dim != spec.action_dim:
        raise UnderstudyError(f"The expert {path} was trained on {e.env_id} (observation {tuple(e.obs_shape)}, "
                              f"{e.action_dim} action dims) but {spec.env_id} has observation {tuple(spec.obs_shape)} "
                              f"and {spec.action_dim} action dims. Give an expert for this environment.")


def _initial_data(run: RunArgs, spec) -> tuple[np.ndarray, np.ndarray]:
    """Expert demonstrations from --dataset as D_0 (observations, actions in [-1, 1] or ints), or empty."""
    if run.dataset is None:
        shape = () if spec.discrete else (spec.action_dim,)
        return np.zeros((0, *spec.obs_shape), np.float32), np.zeros((0, *shape), np.float32)
    from understudy.data import load_dataset
    from understudy.data.validate import check_compatible

    ds = load_dataset(run.dataset)
    check_compatible(ds, spec)
    actions = ds.actions if spec.discrete else from_env_action(ds.actions, spec)
    return ds.observations.astype(np.float32), np.asarray(actions, np.float32)


def train(algo_name: str, algo: ModuleType, cfg: Any, run: RunArgs, *, method: str | None = None) -> dict:
    if run.env is None:
        raise UnderstudyError(f"`understudy train {algo_name}` rolls out the learner: pass --env ID.")
    if not cfg.expert:
        raise UnderstudyError(f"`understudy train {algo_name}` needs --expert POLICY_DIR (any policy export, e.g. "
                              "experts/Pendulum-v1 or a run's final/).")
    if getattr(cfg, "validation_fraction", 0.0) or getattr(cfg, "early_stopping_patience", 0):
        raise UnderstudyError(f"`understudy train {algo_name}` retrains on every relabelled state and holds none out: "
                              "--validation-fraction and --early-stopping-patience apply to `understudy train bc`. "
                              "Remove them.")
    K, P = run.seeds, cfg.steps_per_iteration
    if K < 1 or P < 1 or cfg.updates_per_iteration < 0:
        raise UnderstudyError("--seeds and --steps-per-iteration must be at least 1, --updates-per-iteration >= 0.")
    envs = [make(run.env, seed=run.seed + s) for s in range(K)]
    spec = env_spec(envs[0])
    expert = load_policy(cfg.expert, seed=run.seed)
    _check_expert(expert, spec, cfg.expert)
    d0_obs, d0_actions = _initial_data(run, spec)
    iterations = math.ceil(run.steps / P)
    first = 1 if len(d0_obs) else 0  # with demonstrations, they are iteration 0 and rollouts start at 1
    capacity = len(d0_obs) + run.steps
    method = method or algo_name
    out = run.out or default_out(algo_name, run.env, run.seed)
    config = run_config(algo_name, method, run.env, run, cfg,
                        extra={"iterations": iterations, "capacity": capacity, "demonstrations": len(d0_obs),
                               "step_unit": "env_steps"})
    saved_config = Path(out) / "config.json"
    if run.resume and saved_config.exists():
        saved = json.loads(saved_config.read_text()).get("capacity")
        if saved is not None and saved != capacity:
            raise UnderstudyError(f"{out} was started with room for {saved} aggregated steps; DAgger preallocates its "
                                  "dataset for the run's --steps, so resume it with the same --steps (and --dataset).")
    run_dir = prepare_run_dir(out, resume=run.resume, overwrite=run.overwrite, config=config, algo_cfg=cfg)

    # -- learners, keys and aggregated datasets, each with a leading seed axis ------------------------------
    seeds = jnp.arange(K) + run.seed
    state = jax.vmap(lambda s: algo.init(cfg, spec, jax.random.PRNGKey(s)))(seeds)
    fresh_state = state
    keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.PRNGKey(s), 1))(seeds)
    action_shape = () if spec.discrete else (spec.action_dim,)
    data_obs = np.zeros((K, capacity, *spec.obs_shape), np.float32)
    data_actions = np.zeros((K, capacity, *action_shape), np.float32)
    data_obs[:, :len(d0_obs)], data_actions[:, :len(d0_obs)] = d0_obs, d0_actions
    size, iteration, normalizer = len(d0_obs), 0, None
    resume_meta = None
    if run.resume:
        from understudy.checkpoint import TrainCheckpointer

        ck = TrainCheckpointer(run_dir / "checkpoints")
        _, tree, resume_meta = ck.restore_latest({"state": state, "keys": keys, "obs": jnp.asarray(data_obs),
                                                  "actions": jnp.asarray(data_actions)})
        ck.close()
        state, keys = tree["state"], tree["keys"]
        data_obs, data_actions = np.array(tree["obs"]), np.array(tree["actions"])
        size, iteration = int(resume_meta["size"]), int(resume_meta["iteration"])
        normalizer = {k: np.asarray(v, np.float32) for k, v in resume_meta["normalizer"].items()} \
            if resume_meta.get("normalizer") else None
    step = iteration * P if iteration < iterations else run.steps
    recorder = RunRecorder(run_dir, run, config=config, spec=spec, export_fn=lambda st: algo.policy_export(cfg, st),
                           resume_step=step if run.resume else None, resume_meta=resume_meta)
    recorder.normalizer = normalizer

    # -- jitted pieces ----------------------------------------------------------------------------------------
    update = vmapped_update(algo, cfg)

    @functools.partial(jax.jit, static_argnames="num_updates")
    def train_many(state, keys, obs, actions, size, mean, std, num_updates):
        def one_update(carry, _):
            state, keys = carry
            keys, sub = jax.vmap(jax.random.split, out_axes=1)(keys)

            def batch_of(o, a, k):
                idx = jax.random.randint(k, (cfg.batch_size,), 0, size)
                a = a[idx].astype(jnp.int32) if spec.discrete else a[idx]
                zeros = jnp.zeros((cfg.batch_size,))  # BC reads observations and actions only
                return Batch(observations=(o[idx] - mean) / std, actions=a, rewards=zeros, terminations=zeros,
                             next_observations=None)
            state, metrics = update(state, jax.vmap(batch_of)(obs, actions, sub))
            return (state, keys), metrics

        (state, keys), metrics = jax.lax.scan(one_update, (state, keys), None, length=num_updates)
        return state, keys, metrics

    @jax.jit
    def greedy(state, obs, mean, std):
        """Learner actions in [-1, 1] for observations [K, n, ...] (seed s acts on obs[s])."""
        return jax.vmap(lambda st, o: algo.act(cfg, st, (o - mean) / std, jax.random.PRNGKey(0), True))(state, obs)

    def stats():
        if normalizer is None:
            return jnp.zeros(spec.obs_shape), jnp.ones(spec.obs_shape)
        return jnp.asarray(normalizer["mean"]), jnp.asarray(normalizer["std"])

    def evaluate(state, final: bool = False):
        mean, std = stats()
        return evaluate_seeds(lambda o: to_env_action(np.asarray(greedy(state, jnp.asarray(o, jnp.float32), mean, std)),
                                                      spec),
                              run.env, num_seeds=K, episodes=eval_episodes(run, final), seed=run.seed + 10_000)

    # -- the loop ---------------------------------------------------------------------------------------------
    next_eval = (step // run.eval_every + 1) * run.eval_every
    summary = None
    while iteration < iterations:
        n = min(P, run.steps - iteration * P)
        beta = algo.beta_at(cfg, iteration + first)
        rng = np.random.default_rng(run.seed + 7919 * iteration)  # per iteration, so a resumed run mixes the same
        obs = np.stack([e.reset(seed=run.seed + s + 7919 * (iteration + 1))[0] for s, e in enumerate(envs)])
        mean, std = stats()
        expert_acted, disagreement = 0, []
        for t in range(n):
            labels = np.asarray(expert(obs, deterministic=not cfg.stochastic_expert))  # env actions [K, ...]
            use_expert = rng.random(K) < beta
            learner = None  # with beta = 1 (iteration 0) the learner never acts
            if beta < 1.0:
                learner = to_env_action(np.asarray(greedy(state, jnp.asarray(obs[:, None], jnp.float32), mean, std))[:, 0],
                                        spec)
            label_norm = labels if spec.discrete else from_env_action(labels, spec)
            data_obs[:, size + t], data_actions[:, size + t] = obs, label_norm
            if learner is not None:
                learner_norm = learner if spec.discrete else from_env_action(learner, spec)
                disagreement.append(np.mean(learner_norm != label_norm) if spec.discrete
                                    else np.mean(np.abs(learner_norm - label_norm)))
            action = labels if learner is None else np.where(
                use_expert.reshape(-1, *([1] * (labels.ndim - 1))), labels, learner)
            expert_acted += int(use_expert.sum())
            for s, e in enumerate(envs):
                o2, _, term, trunc, _ = e.step(action[s])
                obs[s] = e.reset()[0] if (term or trunc) else o2
        size += n
        iteration += 1
        step = min(iteration * P, run.steps)
        if normalizer is None and cfg.normalize_observations:
            normalizer = fit_normalizer(data_obs[0, :size])  # from D_0 or the expert's first rollouts; then fixed
            recorder.normalizer = normalizer
        if cfg.reinitialize:
            state = fresh_state
        mean, std = stats()
        state, keys, metrics = train_many(state, keys, jnp.asarray(data_obs), jnp.asarray(data_actions), size, mean,
                                          std, num_updates=cfg.updates_per_iteration)
        recorder.progress.update(step, f"iteration {iteration}/{iterations}")
        if step >= next_eval or iteration == iterations:
            next_eval = (step // run.eval_every + 1) * run.eval_every
            train_metrics = mean_metrics(jax.device_get(metrics)) if cfg.updates_per_iteration else {}
            train_metrics.update({"dagger/iteration": iteration, "dagger/beta": beta, "dagger/dataset_size": size,
                                  "dagger/expert_share": expert_acted / (n * K)})
            if disagreement:
                train_metrics["dagger/learner_expert_gap"] = float(np.mean(disagreement))
            results = evaluate(state, final=iteration == iterations)
            recorder.record_eval(step, state, results, train_metrics)
            recorder.maybe_snapshot(step, state, results)
            recorder.checkpoint(step, {"state": state, "keys": keys, "obs": jnp.asarray(data_obs),
                                       "actions": jnp.asarray(data_actions)},
                                extra_meta={"size": size, "iteration": iteration,
                                            "normalizer": None if normalizer is None
                                            else {k: v.tolist() for k, v in normalizer.items()}})
            if iteration == iterations:
                summary = recorder.finish(step, state, results)
    recorder.close()
    for e in envs:
        e.close()
    if summary is None:
        return json.loads((Path(run_dir) / "eval.json").read_text())
    return summary
