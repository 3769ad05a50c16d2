"""Loop for return-conditioned sequence models (`understudy train dt`): windows of K consecutive steps with
returns-to-go, sampled on device, K updates per jitted call, seeds vmapped; evaluation by autoregressive
rollouts that keep a per-env history.

Read top to bottom: load the dataset and its spec (as the offline loop does); fill the data-dependent config
defaults (target return, timestep table) with `algo.resolve_config`; put on device, per step, the standardized
observation, its return-to-go (to the end of its episode, divided by return_scale) and its timestep within the
episode, with actions in [-1, 1]; run `updates_per_call` updates per call inside `lax.scan`, each drawing
batch_size windows with `sample_windows` (padding before an episode's start is masked); evaluate every seed
with `evaluate_history_seeds`; export best/ and final/ as Decision Transformer policies (dt_policy.py), with
the normalizer and the target return; checkpoint and resume as the offline loop does.
"""

from __future__ import annotations

import functools
import json
from types import ModuleType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from understudy.algos.dt import episode_timesteps, returns_to_go
from understudy.algos.dt_policy import normalize_history, save_dt_policy
from understudy.data.normalize import fit_normalizer, normalize
from understudy.data.samplers import DeviceDataset, episode_start_index, sample_windows
from understudy.eval.dt_rollouts import evaluate_history_seeds
from understudy.policy import from_env_action
from understudy.train.augment import augment_windows, noise_scale, with_obs_noise
from understudy.train.common import RunArgs, RunRecorder, default_out, eval_episodes, eval_steps, mean_metrics, \
    prepare_run_dir, run_config, seed_slice, vmapped_update
from understudy.train.offline import _spec_options, load_training_data
from understudy.types import EnvSpec, UnderstudyError

UPDATES_PER_CALL = 500


def sequence_dataset(ds, spec: EnvSpec, normalizer: dict | None, return_scale: float) -> DeviceDataset:
    """The dataset on device for window sampling: observations {state, return_to_go, timestep} per step (so
    sample_windows gathers and pads all three together), actions in [-1, 1]. Next observations are not needed."""
    if isinstance(ds.observations, dict):
        raise UnderstudyError("The Decision Transformer reads flat vector observations; this dataset has dict "
                              f"observations {sorted(ds.observations)}.")
    n = ds.num_steps
    observations = {"state": normalize(ds.observations.astype(np.float32), normalizer),
                    "return_to_go": returns_to_go(ds.rewards, ds.episode_starts, return_scale),
                    "timestep": episode_timesteps(ds.episode_starts, n)}
    return DeviceDataset(observations=jax.tree.map(jnp.asarray, observations),
                         actions=jnp.asarray(np.asarray(from_env_action(ds.actions, spec), np.float32)),
                         rewards=jnp.asarray(ds.rewards, jnp.float32),
                         terminations=jnp.asarray(ds.terminations, jnp.float32), next_observations=None,
                         episode_start_index=jnp.asarray(episode_start_index(ds.episode_starts, n)))


class SequenceRecorder(RunRecorder):
    """RunRecorder whose best/, final/ and snapshot exports are Decision Transformer policies (dt_policy.py)."""

    def __init__(self, *args, target_return: float, return_scale: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.target_return, self.return_scale = target_return, return_scale

    def export(self, kind: str, state: Any, s: int, step: int, eval_mean: float | None) -> None:
        network, params = self.export_fn(seed_slice(state, s))
        save_dt_policy(self.export_dir(kind, s), network=network, params=params, spec=self.spec,
                       normalizer=self.normalizer, target_return=self.target_return, return_scale=self.return_scale,
                       metadata={"algo": self.config["algo"], "method": self.config["method"], "step": step,
                                 "seed": self.run.seed + s, "eval_return": eval_mean, "run_dir": str(self.run_dir)})


def train(algo_name: str, algo: ModuleType, cfg: Any, run: RunArgs, *, updates_per_call: int = UPDATES_PER_CALL,
          method: str | None = None) -> dict:
    ds, spec = load_training_data(run, algo_name)
    if spec.discrete:
        raise UnderstudyError(f"`train {algo_name}` needs continuous actions; {spec.env_id} has {spec.num_actions} "
                              "discrete actions. Use bc --head categorical.")
    K = run.seeds
    if K < 1:
        raise UnderstudyError(f"--seeds must be at least 1 (got {K}).")
    cfg = algo.resolve_config(cfg, ds, spec)  # recorded in config.json, so a resumed run resolves the same way
    method = method or algo_name
    out = run.out or default_out(algo_name, spec.env_id, run.seed)
    reference = None
    if ds.metadata.get("ref_min_score") is not None and ds.metadata.get("ref_max_score") is not None:
        reference = {"random": float(ds.metadata["ref_min_score"]), "expert": float(ds.metadata["ref_max_score"])}
    config = run_config(algo_name, method, spec.env_id, run, cfg, extra={"dataset_steps": int(ds.num_steps)})
    run_dir = prepare_run_dir(out, resume=run.resume, overwrite=run.overwrite, config=config, algo_cfg=cfg)

    normalizer = fit_normalizer(ds.observations) if cfg.normalize_observations else None
    data = sequence_dataset(ds, spec, normalizer, cfg.return_scale)

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
    recorder = SequenceRecorder(run_dir, run, config=config, spec=spec,
                                export_fn=lambda st: algo.policy_export(cfg, st), normalizer=normalizer,
                                reference=reference, resume_step=start if run.resume else None,
                                resume_meta=resume_meta, target_return=cfg.target_return,
                                return_scale=cfg.return_scale)

    update = vmapped_update(algo, cfg)
    sample = with_obs_noise(lambda k: sample_windows(data, k, cfg.batch_size, cfg.context),
                            noise_scale(run.obs_noise_augment, spec, normalizer,
                                        run.obs_noise_augment_units, ds.observations), augment_windows)

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

    @jax.jit
    def greedy(state, windows):  # windows: leaves [seeds, n, K, ...], raw observations
        windows = normalize_history(windows, normalizer)
        return jax.vmap(lambda st, w: algo.act(cfg, st, w, jax.random.PRNGKey(0), True))(state, windows)

    def evaluate(state, final: bool = False):
        options = dict(_spec_options(ds), **({"obs_noise": run.obs_noise} if run.obs_noise else {}))
        return evaluate_history_seeds(lambda w: np.asarray(greedy(state, jax.tree.map(jnp.asarray, w))), spec,
                                      context=cfg.context, target_return=cfg.target_return,
                                      return_scale=cfg.return_scale, num_seeds=K, episodes=eval_episodes(run, final),
                                      seed=run.seed + 10_000, env_options=options or None)

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
        last = step == run.steps
        results = evaluate(state, final=last)
        recorder.record_eval(step, state, results, train_metrics)
        recorder.maybe_snapshot(step, state, results)
        if step % checkpoint_every == 0 or last:
            recorder.checkpoint(step, {"state": state, "keys": keys})
        if last:
            summary = recorder.finish(step, state, results, extra={"target_return": cfg.target_return})
            break
    recorder.close()
    if summary is None:
        return json.loads((run_dir / "eval.json").read_text())
    return summary
