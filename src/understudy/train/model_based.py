"""Model-based offline loop (`understudy train morel`), readable top to bottom.

1. Data: the dataset and its env spec as the offline loop loads them; observations standardized by the dataset's
   statistics, actions in [-1, 1]. --model-validation-fraction of the episodes are held out to validate the models.
2. Models: every seed fits its own dynamics ensemble (algo.model_update), --model-eval-every updates per jitted
   lax.scan call with batches sampled on device, seeds vmapped. Each call ends with the held-out error, logged to
   model/metrics.csv; training stops after --model-patience checks without improvement (or at --model-steps)
   and keeps each seed's best-validation ensemble.
3. Detector: u(s, a) over every dataset pair gives each seed's halting threshold (algo.unknown_threshold).
4. Policy: --rl sac runs rounds of (one model rollout of rollout_batch_size branches x rollout_horizon steps from
   dataset states into an on-device replay buffer, then rollout_every SAC updates); --rl ppo runs iterations of
   (num_steps steps of num_envs vectorized model episodes, then one PPO update: GAE, epochs x minibatches), with
   gymnasium's next-step autoreset so PPO's GAE applies unchanged. Several rounds / iterations per jitted call.
   --steps counts gradient updates (SAC updates, or PPO minibatch steps) and is rounded, like --eval-every, to
   whole rounds / iterations. The model-fitting budget is --model-steps.
5. Evaluation in the real env through each seed's policy export (so eval.json agrees with `understudy eval`);
   best/ and final/ exports; eval.json also records the models' validation errors and thresholds.

Resuming: a checkpoint is written right after the models are fitted (step 0) and at every evaluation; it holds
agents (models, thresholds, RL state), RNG keys and SAC's replay buffers or PPO's model episodes. A run killed
while fitting its models fits them again.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from types import ModuleType, SimpleNamespace
from typing import Any

import flax.struct as struct
import jax
import jax.numpy as jnp
import numpy as np

from understudy.algos import ppo as ppo_algo
from understudy.data.episodes import train_val_split
from understudy.data.normalize import fit_normalizer
from understudy.data.replay import replay_add, replay_init_batched, replay_sample
from understudy.data.samplers import sample_transitions, to_device
from understudy.eval.rollouts import evaluate_seeds
from understudy.logging import MetricsLogger, Progress
from understudy.policy import Policy
from understudy.train.adversarial import compose_normalizers
from understudy.train.common import RunArgs, RunRecorder, default_out, eval_episodes, eval_steps, mean_metrics, \
    prepare_run_dir, run_config, seed_slice
from understudy.train.offline import EarlyStopping, select_seeds, _spec_options, _validation_batch, dataset_columns, \
    load_training_data
from understudy.train.on_policy import schedule, stack
from understudy.types import Batch, UnderstudyError

UPDATES_PER_CALL = 1000  # policy gradient updates per jitted call (rounded to whole rounds / iterations)
DISAGREEMENT_CHUNK = 4096  # dataset pairs per jitted disagreement call


class ModelEpisodes(struct.PyTreeNode):
    """--rl ppo: one seed's num_envs model episodes in progress."""

    obs: jax.Array  # [N, D] standardized
    t: jax.Array  # [N] int32 steps into the episode
    resetting: jax.Array  # [N] bool: the last step ended the episode, so the next one is gymnasium's reset step


# -- device programs --------------------------------------------------------------------------------------------
def _split(keys):
    return jax.vmap(jax.random.split, out_axes=1)(keys)


def _draw_starts(data, start_index: jax.Array, key: jax.Array, n: int) -> jax.Array:
    return data.observations[start_index[jax.random.randint(key, (n,), 0, start_index.shape[0])]]


@functools.lru_cache(maxsize=8)
def _model_programs(algo: ModuleType, model_cfg: Any) -> SimpleNamespace:
    """Fitting, validation and disagreement programs over the seeds' ensembles (algo.DynamicsState [K]), keyed
    by the model settings alone (algo.model_config), so runs that differ only in their RL settings share them."""
    cfg, E, B = model_cfg, model_cfg.ensemble_size, model_cfg.model_batch_size

    def seed_update(dyn, data, key):
        batch_key, loss_key = jax.random.split(key)
        batch = sample_transitions(data, batch_key, E * B)
        batch = jax.tree.map(lambda x: x.reshape(E, B, *x.shape[1:]), batch)  # member i trains on its own rows
        return algo.model_update(cfg, dyn, batch, loss_key)

    @functools.partial(jax.jit, static_argnames="num_updates", donate_argnames="dyn")
    def fit(dyn, keys, data, num_updates):
        def one(carry, _):
            dyn, keys = carry
            keys, sub = _split(keys)
            dyn, metrics = jax.vmap(seed_update, in_axes=(0, None, 0))(dyn, data, sub)
            return (dyn, keys), metrics

        (dyn, keys), metrics = jax.lax.scan(one, (dyn, keys), None, length=num_updates)
        return dyn, keys, metrics

    validation = jax.jit(jax.vmap(lambda d, b: algo.model_validation_error(cfg, d, b), in_axes=(0, None)))
    disagreement = jax.jit(jax.vmap(lambda d, o, a: algo.dataset_disagreement(cfg, d, o, a), in_axes=(0, None, None)))
    return SimpleNamespace(fit=fit, validation=validation, disagreement=disagreement)


@functools.lru_cache(maxsize=8)
def _sac_programs(algo: ModuleType, cfg: Any) -> SimpleNamespace:
    """`rounds(state, buffer, keys, data, start_index, num_rounds)`: rollout rounds, each followed by
    rollout_every SAC updates, every seed vmapped; metrics [num_rounds, seeds] averaged within each round."""
    scfg, B, H = cfg.sac, cfg.rollout_batch_size, cfg.rollout_horizon
    n_real = int(round(cfg.real_ratio * scfg.batch_size))

    def rollout(state, buffer, data, start_index, key):  # one seed: B branches of H model steps
        start_key, steps_key = jax.random.split(key)

        def step(obs, k):
            act_key, model_key, reset_key = jax.random.split(k, 3)
            action = algo.act(cfg, state, obs, act_key, False)
            ms = algo.model_step(cfg, state, obs, action, jnp.zeros(B, bool), model_key)
            following = jnp.where(ms.terminal[:, None], _draw_starts(data, start_index, reset_key, B),
                                  ms.next_observation)
            return following, (obs, action, ms.reward, ms.terminal.astype(jnp.float32), ms.next_observation,
                               ms.halted.astype(jnp.float32), ms.disagreement)

        obs0 = _draw_starts(data, start_index, start_key, B)
        _, (obs, action, reward, term, next_obs, halted, u) = jax.lax.scan(step, obs0, jax.random.split(steps_key, H))
        flat = lambda x: x.reshape(H * B, *x.shape[2:])  # noqa: E731
        buffer = replay_add(buffer, flat(obs), flat(action), flat(reward), flat(term), flat(next_obs))
        stats = {"model/halt_rate": jnp.mean(halted), "model/terminal_rate": jnp.mean(term),
                 "model/reward": jnp.mean(reward), "model/disagreement": jnp.mean(u)}
        return buffer, stats

    def sac_batch(buffer, data, key):
        model_key, real_key = jax.random.split(key)
        batch = replay_sample(buffer, model_key, scfg.batch_size - n_real)
        if n_real == 0:
            return batch
        real = sample_transitions(data, real_key, n_real)
        return Batch(*(jnp.concatenate([getattr(batch, k), getattr(real, k)]) for k in
                       ("observations", "actions", "rewards", "terminations", "next_observations")))

    @functools.partial(jax.jit, static_argnames="num_rounds", donate_argnames=("state", "buffer"))
    def rounds(state, buffer, keys, data, start_index, num_rounds):
        def one_update(carry, _):
            state, buffer, keys = carry
            keys, sub = _split(keys)
            batch = jax.vmap(sac_batch, in_axes=(0, None, 0))(buffer, data, sub)
            state, metrics = jax.vmap(lambda st, b: algo.update(cfg, st, b))(state, batch)
            return (state, buffer, keys), metrics

        def one_round(carry, _):
            state, buffer, keys = carry
            keys, sub = _split(keys)
            buffer, stats = jax.vmap(rollout, in_axes=(0, 0, None, None, 0))(state, buffer, data, start_index, sub)
            (state, buffer, keys), metrics = jax.lax.scan(one_update, (state, buffer, keys), None,
                                                          length=cfg.rollout_every)
            return (state, buffer, keys), {**jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics), **stats}

        (state, buffer, keys), metrics = jax.lax.scan(one_round, (state, buffer, keys), None, length=num_rounds)
        return state, buffer, keys, metrics

    return SimpleNamespace(rounds=rounds)


@functools.lru_cache(maxsize=8)
def _ppo_programs(algo: ModuleType, cfg: Any) -> SimpleNamespace:
    """`iterations(state, episodes, keys, data, start_index, lr_scales)`: per lr scale, one PPO iteration (a
    rollout of num_steps steps in num_envs model episodes, then one update) of every seed, vmapped."""
    pcfg, N, T = cfg.ppo, cfg.ppo.num_envs, cfg.ppo.num_steps

    def reset(data, start_index, key) -> ModelEpisodes:  # one seed
        return ModelEpisodes(obs=_draw_starts(data, start_index, key, N), t=jnp.zeros(N, jnp.int32),
                             resetting=jnp.zeros(N, bool))

    def env_step(state, episodes, action, data, start_index, key):  # one seed, gymnasium's next-step autoreset
        model_key, reset_key = jax.random.split(key)
        ms = algo.model_step(cfg, state, episodes.obs, action, jnp.zeros(N, bool), model_key)
        resetting = episodes.resetting
        t = jnp.where(resetting, 0, episodes.t + 1)
        terminated = ms.terminal & ~resetting
        truncated = (t >= cfg.episode_horizon) & ~ms.terminal & ~resetting
        obs = jnp.where(resetting[:, None], _draw_starts(data, start_index, reset_key, N), ms.next_observation)
        columns = {"rewards": jnp.where(resetting, 0.0, ms.reward), "terminations": terminated.astype(jnp.float32),
                   "truncations": truncated.astype(jnp.float32), "valid": (~resetting).astype(jnp.float32),
                   "halted": (ms.halted & ~resetting).astype(jnp.float32), "disagreement": ms.disagreement}
        return ModelEpisodes(obs=obs, t=t, resetting=terminated | truncated), columns

    @jax.jit
    def start(state, keys, data, start_index):
        return jax.vmap(reset, in_axes=(None, None, 0))(data, start_index, keys)

    def iteration(carry, lr_scale, data, start_index):
        state, episodes, keys = carry
        acting = jax.vmap(ppo_algo.acting)(state.rl)

        def step(inner, _):
            acting, episodes, keys = inner
            keys, act_keys = _split(keys)
            keys, env_keys = _split(keys)
            acting, rs = jax.vmap(lambda a, o, k: ppo_algo.rollout_step(pcfg, a, o, k))(acting, episodes.obs, act_keys)
            action = jnp.clip(rs.action, -1.0, 1.0)
            episodes, columns = jax.vmap(env_step, in_axes=(0, 0, 0, None, None, 0))(state, episodes, action, data,
                                                                                     start_index, env_keys)
            return (acting, episodes, keys), (rs, columns)

        (acting, episodes, keys), (rs, columns) = jax.lax.scan(step, (acting, episodes, keys), None, length=T)
        seed_major = lambda x: jnp.swapaxes(x, 0, 1)  # noqa: E731  [T, K, ...] -> [K, T, ...]
        rs, columns = jax.tree.map(seed_major, (rs, columns))
        rollout = ppo_algo.Rollout(observations=rs.observation, actions=rs.action, log_probs=rs.log_prob,
                                   values=rs.value, rewards=columns["rewards"], terminations=columns["terminations"],
                                   truncations=columns["truncations"], valid=columns["valid"],
                                   next_observation=episodes.obs)
        state = state.replace(rl=jax.vmap(ppo_algo.with_acting)(state.rl, acting))
        state, metrics = jax.vmap(lambda st, ro: algo.update(cfg, st, ro, lr_scale))(state, rollout)
        valid = jnp.maximum(jnp.sum(columns["valid"], axis=(1, 2)), 1.0)
        metrics.update({"model/halt_rate": jnp.sum(columns["halted"], axis=(1, 2)) / valid,
                        "model/terminal_rate": jnp.sum(columns["terminations"], axis=(1, 2)) / valid,
                        "model/reward": jnp.sum(columns["rewards"], axis=(1, 2)) / valid,
                        "model/disagreement": jnp.mean(columns["disagreement"], axis=(1, 2))})
        return (state, episodes, keys), metrics

    @functools.partial(jax.jit, donate_argnames=("state", "episodes"))
    def iterations(state, episodes, keys, data, start_index, lr_scales):
        (state, episodes, keys), metrics = jax.lax.scan(
            functools.partial(iteration, data=data, start_index=start_index), (state, episodes, keys), lr_scales)
        return state, episodes, keys, metrics

    return SimpleNamespace(start=start, iterations=iterations)


# -- the phases --------------------------------------------------------------------------------------------------
def fit_models(algo: ModuleType, cfg: Any, dyn, keys, fit_data, val_batch, log_dir, progress: bool):
    """Fits every seed's ensemble (dyn: algo.DynamicsState [K]); returns (each seed's best-validation ensemble,
    keys, summary). Rows of log_dir/metrics.csv: training loss and held-out error every --model-eval-every."""
    programs = _model_programs(algo, algo.model_config(cfg))
    log_dir.mkdir(parents=True, exist_ok=True)
    logger = MetricsLogger(log_dir, tensorboard=False)
    bar = Progress(cfg.model_steps, "morel models", enabled=progress)
    # patience 0 (never stop early) still keeps each seed's best-validation ensemble
    stopper = None if val_batch is None else EarlyStopping(cfg.model_patience or cfg.model_steps + 1, dyn)
    step, stopped = 0, False
    keys_at_stop = keys  # a seed that stops keeps its keys from then on, so a K-seed run equals K runs of one seed
    try:
        while step < cfg.model_steps and not stopped:
            n = min(cfg.model_eval_every, cfg.model_steps - step)
            dyn, keys, metrics = programs.fit(dyn, keys, fit_data, num_updates=n)
            step += n
            row = mean_metrics(jax.device_get(metrics))
            if stopper is not None:
                losses = np.asarray(programs.validation(dyn, val_batch), np.float64)
                row["val/mse"] = float(np.mean(losses))
                row.update({f"val/mse/seed{s}": float(v) for s, v in enumerate(losses)})
                still_training = ~stopper.stopped()
                stopped = stopper.observe(step, losses, dyn)
                keys_at_stop = select_seeds(still_training, keys, keys_at_stop)
            logger.log(step, row)
            bar.update(step, f"validation mse {row['val/mse']:.4f}" if "val/mse" in row else "")
    finally:
        bar.close()
        logger.close()
    summary = {"updates": step, "stopped_early": bool(stopped and step < cfg.model_steps)}
    if stopper is not None:
        dyn, keys = stopper.best_state, keys_at_stop
        summary.update({"validation_mse": stopper.best_loss.tolist(), "best_step": stopper.best_step.tolist()})
    return dyn, keys, summary


def thresholds(algo: ModuleType, cfg: Any, dyn, obs: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, dict]:
    """Each seed's halting threshold [K] from its ensemble's disagreement over every dataset pair, and a summary."""
    programs = _model_programs(algo, algo.model_config(cfg))
    n = len(obs)
    chunk = min(n, DISAGREEMENT_CHUNK)
    pad = -n % chunk  # the last chunk is padded so that one compiled program serves every chunk
    obs, actions = (np.concatenate([x, np.repeat(x[-1:], pad, axis=0)]) for x in (obs, actions))
    u = np.concatenate([np.asarray(programs.disagreement(dyn, jnp.asarray(obs[i:i + chunk]),
                                                         jnp.asarray(actions[i:i + chunk])))
                        for i in range(0, len(obs), chunk)], axis=1)[:, :n]
    values = np.array([float(algo.unknown_threshold(jnp.asarray(row), cfg.threshold_rule, cfg.threshold_scale,
                                                    cfg.threshold_std)) for row in u], np.float32)
    summary = {"threshold": values.tolist(), "disagreement_mean": u.mean(axis=1).tolist(),
               "disagreement_std": u.std(axis=1).tolist(), "disagreement_max": u.max(axis=1).tolist()}
    return values, summary


def _reference(ds) -> dict | None:
    lo, hi = ds.metadata.get("ref_min_score"), ds.metadata.get("ref_max_score")
    return None if lo is None or hi is None else {"random": float(lo), "expert": float(hi)}


# -- the entry point ----------------------------------------------------------------------------------------------
def train(algo_name: str, algo: ModuleType, cfg: Any, run: RunArgs, *, method: str | None = None,
          updates_per_call: int = UPDATES_PER_CALL) -> dict:
    algo.check(cfg)
    K = run.seeds
    if K < 1:
        raise UnderstudyError(f"--seeds must be at least 1 (got {K}).")
    if run.obs_noise_augment:
        raise UnderstudyError("`train morel` does not support --obs-noise-augment (its models and policy train on "
                              "model rollouts, not on the dataset's batches). Drop the flag.")
    ds, spec = load_training_data(run, algo_name)
    if spec.discrete or isinstance(spec.observation, dict):
        raise UnderstudyError(f"`train {algo_name}` needs vector observations and continuous actions; {spec.env_id} "
                              "has discrete actions or dict observations.")
    ds_fit, ds_val = ds, None
    if cfg.model_validation_fraction:
        ds_fit, ds_val = train_val_split(ds, cfg.model_validation_fraction, seed=0)
    method = method or algo.method_name(cfg)
    out = run.out or default_out(algo_name, spec.env_id, run.seed)
    unit = cfg.rollout_every if cfg.rl == "sac" else cfg.ppo.update_epochs * cfg.ppo.num_minibatches
    plan = schedule(run, unit)
    extra = {"dataset_steps": int(ds.num_steps), "model_fit_steps": int(ds_fit.num_steps), "schedule": plan}
    if ds_val is not None:
        extra["model_validation_steps"] = int(ds_val.num_steps)
    config = run_config(algo_name, method, spec.env_id, run, cfg, extra=extra)
    run_dir = prepare_run_dir(out, resume=run.resume, overwrite=run.overwrite, config=config, algo_cfg=cfg)
    total, every = plan["total"], plan["eval_every"]
    recorder_run = dataclasses.replace(run, steps=total, eval_every=every, snapshot_every=plan["snapshot_every"])

    # -- data on device ---------------------------------------------------------------------------------------
    normalizer = fit_normalizer(ds.observations) if cfg.normalize_observations else None
    columns = dataset_columns(ds, spec, normalizer)
    data = to_device(columns)
    fit_columns = columns if ds_val is None else dataset_columns(ds_fit, spec, normalizer)
    fit_data = data if ds_val is None else to_device(fit_columns)
    val_batch = None if ds_val is None else _validation_batch(ds_val, spec, normalizer)
    start_index = jnp.asarray(np.arange(ds.num_steps) if cfg.start_states == "all" else ds.episode_starts, jnp.int32)
    stats = algo.target_statistics(fit_columns["observations"], fit_columns["next_observations"],
                                   fit_columns["rewards"])
    reward_low, reward_high = float(ds.rewards.min()), float(ds.rewards.max())

    # -- agents (seed by seed, then stacked: one compiled init serves every seed count) -------------------------
    seeds = [run.seed + s for s in range(K)]
    state = stack([algo.with_data(cfg, algo.init(cfg, spec, jax.random.PRNGKey(s)), stats, reward_low, reward_high)
                   for s in seeds])
    keys = stack([jax.random.fold_in(jax.random.PRNGKey(s), 1) for s in seeds])
    if cfg.rl == "sac":
        programs = _sac_programs(algo, cfg)
        rollouts = replay_init_batched(K, cfg.sac.buffer_size, spec.obs_shape, (spec.action_dim,))
    else:
        programs = _ppo_programs(algo, cfg)
        # their own keys, so the models fit the same way whatever the RL algorithm
        rollouts = programs.start(state, stack([jax.random.fold_in(jax.random.PRNGKey(s), 2) for s in seeds]), data,
                                  start_index)
    state, rollouts = jax.tree.map(jnp.copy, (state, rollouts))  # donation needs every leaf in its own buffer

    start, resume_meta, model_summary = None, None, None
    if run.resume:
        from understudy.checkpoint import TrainCheckpointer

        ck = TrainCheckpointer(run_dir / "checkpoints")
        if ck.steps():  # none yet: the run was killed while fitting its models, which start again
            start, tree, resume_meta = ck.restore_latest({"state": state, "rollouts": rollouts, "keys": keys})
            state, rollouts, keys = jax.tree.map(lambda x: jnp.asarray(np.asarray(x)),
                                                 (tree["state"], tree["rollouts"], tree["keys"]))
            model_summary = resume_meta.get("model")
        ck.close()

    def export_fn(rl):  # the recorder is handed state.rl, the only part an export reads
        head, params, *inner = algo.rl_policy_export(cfg, rl)
        return head, params, compose_normalizers(normalizer, inner[0] if inner else None)

    if start is None:
        dyn, keys, model_summary = fit_models(algo, cfg, state.dynamics, keys, fit_data, val_batch,
                                              run_dir / "model", run.progress)
        values, detector = thresholds(algo, cfg, dyn, columns["observations"], columns["actions"])
        state = state.replace(dynamics=dyn, threshold=jnp.asarray(values))
        model_summary.update(detector, halt_reward=float(np.asarray(state.halt_reward)[0]))
    recorder = RunRecorder(run_dir, recorder_run, config=config, spec=spec, export_fn=export_fn, normalizer=normalizer,
                           reference=_reference(ds), resume_step=start, resume_meta=resume_meta)
    checkpoint_meta = {"model": model_summary}
    if start is None:
        start = 0
        recorder.checkpoint(0, {"state": state, "rollouts": rollouts, "keys": keys}, extra_meta=checkpoint_meta)
    if start >= total:
        recorder.progress.print(f"{run_dir} already reached step {start} (asked for {total}); nothing to do.")

    model_metrics = {"model/threshold": float(np.mean(model_summary["threshold"]))}
    if "validation_mse" in model_summary:
        model_metrics["model/validation_mse"] = float(np.mean(model_summary["validation_mse"]))

    def evaluate(state, final: bool):
        policies = [Policy(head, params, spec, normalizer=norm)
                    for head, params, norm in (export_fn(seed_slice(state.rl, s)) for s in range(K))]
        options = dict(_spec_options(ds), **({"obs_noise": run.obs_noise} if run.obs_noise else {}))
        return evaluate_seeds(lambda o: np.stack([policy(o[s]) for s, policy in enumerate(policies)]), spec.env_id,
                              num_seeds=K, episodes=eval_episodes(run, final), seed=run.seed + 10_000,
                              env_options=options or None)

    # -- policy optimisation inside the pessimistic model ------------------------------------------------------
    per_call = max(1, updates_per_call // unit)
    step, summary = start, None
    for mark in eval_steps(total, every, start):
        collected = []
        while step < mark:
            n = min(per_call, (mark - step) // unit)
            if cfg.rl == "sac":
                state, rollouts, keys, metrics = programs.rounds(state, rollouts, keys, data, start_index,
                                                                 num_rounds=n)
            else:
                lr = [1.0 - (step + i * unit) / total if cfg.ppo.anneal_lr else 1.0 for i in range(n)]
                state, rollouts, keys, metrics = programs.iterations(state, rollouts, keys, data, start_index,
                                                                     jnp.asarray(lr, jnp.float32))
            collected.append(jax.device_get(metrics))
            step += n * unit
            recorder.progress.update(step)
        train_metrics = {**mean_metrics({k: np.concatenate([np.ravel(m[k]) for m in collected])
                                         for k in collected[0]}), **model_metrics}
        last = step == total
        results = evaluate(state, final=last)
        recorder.record_eval(step, state.rl, results, train_metrics)
        recorder.maybe_snapshot(step, state.rl, results)
        if step % plan["checkpoint_every"] == 0 or last:
            recorder.checkpoint(step, {"state": state, "rollouts": rollouts, "keys": keys}, extra_meta=checkpoint_meta)
        if last:
            summary = recorder.finish(step, state.rl, results, extra={"model": model_summary})
    recorder.close()
    if summary is None:
        return json.loads((run_dir / "eval.json").read_text())
    return summary
