"""Online loop over whole episodes (REINFORCE, actor-critic), readable top to bottom.

K seeds run side by side, each with M environments. An iteration plays one complete episode in each of the
K x M environments (one jitted, seed-vmapped policy call per time step; finished environments wait), pads
the episodes to the horizon T, and makes one jitted update per seed on the [K, M, T, ...] arrays. Each
seed counts its own environment steps; the run's step (what `--steps`, `--eval-every` and metrics.csv use)
is their mean, and evaluation happens after the first iteration that reaches each mark.

Episode resets are seeded by (seed, iteration, environment) and keys by seed, so seed i of a K-seed run
starts from the same parameters and draws the same resets as a 1-seed run with --seed seed+i, and a resumed
run replays exactly the episodes and updates an uninterrupted run would have (tested).
Checkpoints hold the agents (with any episode store the algorithm keeps), the loop's keys, the per-seed
step counts and the iteration.
"""

from __future__ import annotations

import functools
import json
from types import ModuleType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from understudy.envs import env_spec
from understudy.eval.rollouts import evaluate_seeds
from understudy.policy import to_env_action
from understudy.train.common import RunArgs, RunRecorder, attach_videos, default_out, eval_episodes, eval_steps, \
    make_train_env, mean_metrics, next_video_episode, prepare_run_dir, run_config
from understudy.types import Batch, UnderstudyError


def episode_seed(seed: int, iteration: int, env_index: int) -> int:
    """The reset seed of environment `env_index` of a run seed at an iteration (distinct, reproducible).

    Iteration -1 seeds the environments' construction (their own RNGs, e.g. observation noise)."""
    entropy = [seed % 2**32, iteration + 1, env_index]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def collect_episodes(envs: list[list[Any]], act, spec, length: int, seeds: list[int], iteration: int
                     ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Plays one episode in each env of envs[seed][m], cut at `length` steps.

    act: observations [K, M, obs_dim] -> raw actions [K, M, ...] (continuous ones are clipped here for the env
    and stored unclipped). Returns padded columns [K, M, T, ...] (observations, actions, rewards,
    terminations, next_observations, mask) and the env-reward returns and lengths [K, M].
    """
    K, M = len(envs), len(envs[0])
    obs_shape = spec.obs_shape
    action_shape, action_dtype = ((), np.int32) if spec.discrete else ((spec.action_dim,), np.float32)
    cols = {"observations": np.zeros((K, M, length, *obs_shape), np.float32),
            "actions": np.zeros((K, M, length, *action_shape), action_dtype),
            "rewards": np.zeros((K, M, length), np.float32), "terminations": np.zeros((K, M, length), np.float32),
            "next_observations": np.zeros((K, M, length, *obs_shape), np.float32),
            "mask": np.zeros((K, M, length), np.float32)}
    obs = np.zeros((K, M, *obs_shape), np.float32)
    for s in range(K):
        for m in range(M):
            obs[s, m] = envs[s][m].reset(seed=episode_seed(seeds[s], iteration, m))[0]
    live = np.ones((K, M), bool)
    returns, lengths = np.zeros((K, M)), np.zeros((K, M), np.int64)
    for t in range(length):
        raw = np.asarray(act(obs))
        env_action = raw if spec.discrete else to_env_action(np.clip(raw, -1.0, 1.0), spec)
        for s, m in zip(*np.nonzero(live)):
            o2, r, term, trunc, _ = envs[s][m].step(env_action[s, m])
            cols["observations"][s, m, t] = obs[s, m]
            cols["actions"][s, m, t] = raw[s, m]
            cols["rewards"][s, m, t] = r
            cols["terminations"][s, m, t] = float(term)
            cols["next_observations"][s, m, t] = o2
            cols["mask"][s, m, t] = 1.0
            returns[s, m] += r
            lengths[s, m] += 1
            obs[s, m] = o2
            if term or trunc:
                live[s, m] = False
        if not live.any():
            break
    return cols, returns, lengths


# -- jitted pieces, vmapped over seeds; module-level so runs with the same (algorithm, config) share compilations
@functools.partial(jax.jit, static_argnums=(0, 1))
def _explore_all(algo: ModuleType, cfg: Any, state: Any, obs: jax.Array, keys: jax.Array):
    keys, sub = jax.vmap(jax.random.split, out_axes=1)(keys)
    return jax.vmap(lambda st, o, k: algo.explore(cfg, st, o, k))(state, obs, sub), keys


@functools.partial(jax.jit, static_argnums=(0, 1), donate_argnums=2)
def _update_all(algo: ModuleType, cfg: Any, state: Any, batch: Batch):
    return jax.vmap(lambda st, b: algo.update(cfg, st, b))(state, batch)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _greedy_all(algo: ModuleType, cfg: Any, state: Any, obs: jax.Array):
    return jax.vmap(lambda st, o: algo.act(cfg, st, o, jax.random.PRNGKey(0), True))(state, obs)


def train(algo_name: str, algo: ModuleType, cfg: Any, run: RunArgs, *, method: str | None = None) -> dict:
    if run.env is None:
        raise UnderstudyError(f"`understudy train {algo_name}` is an online algorithm: pass --env ID "
                              "(e.g. --env CartPole-v1).")
    K, M = run.seeds, cfg.episodes_per_iteration
    if K < 1:
        raise UnderstudyError(f"--seeds must be at least 1 (got {K}).")
    seeds = [run.seed + s for s in range(K)]
    envs = [[make_train_env(run, episode_seed(seed, -1, m), record=s == m == 0) for m in range(M)]
            for s, seed in enumerate(seeds)]
    spec = env_spec(envs[0][0])
    length = algo.horizon(cfg, spec)
    method = method or (algo.method_name(cfg) if hasattr(algo, "method_name") else algo_name)
    out = run.out or default_out(algo_name, run.env, run.seed)
    config = run_config(algo_name, method, run.env, run, cfg, extra={"horizon": length, "step_unit": "env_steps"})
    run_dir = prepare_run_dir(out, resume=run.resume, overwrite=run.overwrite, config=config, algo_cfg=cfg)
    envs[0][0] = attach_videos(envs[0][0], run, run_dir, next_video_episode(run_dir))

    # -- agents and loop keys, each with a leading seed axis (init validates the config and the spec) -------
    # seed by seed, then stacked: one compiled init serves every seed (and every run with the same networks)
    state = jax.tree.map(lambda *xs: jnp.stack(xs), *[algo.init(cfg, spec, jax.random.PRNGKey(s)) for s in seeds])
    keys = jnp.stack([jax.random.fold_in(jax.random.PRNGKey(s), 1) for s in seeds])
    env_steps = np.zeros(K, np.int64)  # per seed
    iteration, start = 0, 0
    resume_step, resume_meta = None, None
    if run.resume:
        from understudy.checkpoint import TrainCheckpointer

        ck = TrainCheckpointer(run_dir / "checkpoints")
        like = {"state": state, "keys": keys, "env_steps": jnp.zeros(K, jnp.int32),
                "iteration": jnp.zeros((), jnp.int32)}
        start, tree, resume_meta = ck.restore_latest(like)
        ck.close()
        state, keys = tree["state"], tree["keys"]
        env_steps, iteration = np.asarray(tree["env_steps"], np.int64), int(tree["iteration"])
        resume_step = start
    recorder = RunRecorder(run_dir, run, config=config, spec=spec, export_fn=lambda st: algo.policy_export(cfg, st),
                           resume_step=resume_step, resume_meta=resume_meta)
    if start >= run.steps:
        recorder.progress.print(f"{run_dir} already reached step {start} (asked for {run.steps}); nothing to do.")

    def greedy(state, obs):
        return _greedy_all(algo, cfg, state, obs)

    def evaluate(state, final: bool = False):
        return evaluate_seeds(lambda o: to_env_action(np.asarray(greedy(state, jnp.asarray(o, jnp.float32))), spec),
                              run.env, num_seeds=K, episodes=eval_episodes(run, final), seed=run.seed + 10_000,
                              env_options={"obs_noise": run.obs_noise} if run.obs_noise else None)

    def every(n):  # a multiple of --eval-every, as RunArgs documents
        return None if not n else max(run.eval_every, n // run.eval_every * run.eval_every)

    checkpoint_every, snapshot_every = every(run.checkpoint_every or run.eval_every), every(run.snapshot_every)

    # -- the loop --------------------------------------------------------------------------------------------
    marks = eval_steps(run.steps, run.eval_every, start)
    step, interval_metrics, episode_returns, episode_lengths = start, [], [], []
    last_row, summary = None, None

    def act(obs):
        nonlocal keys
        action, keys = _explore_all(algo, cfg, state, jnp.asarray(obs), keys)
        return action

    while marks:
        cols, returns, lengths = collect_episodes(envs, act, spec, length, seeds, iteration)
        batch = Batch(**{k: jnp.asarray(v) for k, v in cols.items()})
        state, metrics = _update_all(algo, cfg, state, batch)
        interval_metrics.append(jax.device_get(metrics))
        episode_returns.append(returns), episode_lengths.append(lengths)
        iteration += 1
        previous, env_steps = step, env_steps + lengths.sum(axis=1)
        step = int(env_steps.mean())
        recorder.progress.update(step, "" if last_row is None else f"eval return {last_row['eval/return']:.1f}")
        if step < marks[0]:
            continue
        marks = [m for m in marks if m > step]

        results = evaluate(state, final=not marks)
        train_metrics = mean_metrics({k: np.stack([m[k] for m in interval_metrics]) for k in interval_metrics[0]})
        train_metrics["train/episode_return"] = float(np.mean(episode_returns))
        train_metrics["train/episode_length"] = float(np.mean(episode_lengths))
        train_metrics["train/iterations"] = iteration
        if K > 1:
            train_metrics.update({f"train/env_steps/seed{s}": int(n) for s, n in enumerate(env_steps)})
        interval_metrics, episode_returns, episode_lengths = [], [], []
        last_row = recorder.record_eval(step, state, results, train_metrics)
        if snapshot_every and step // snapshot_every > previous // snapshot_every:
            for s, r in enumerate(results):
                recorder.export(f"snapshots/step_{step}", state, s, step, r["mean"])
        if not marks or step // checkpoint_every > previous // checkpoint_every:
            recorder.checkpoint(step, {"state": state, "keys": keys, "env_steps": jnp.asarray(env_steps, jnp.int32),
                                       "iteration": jnp.asarray(iteration, jnp.int32)},
                                extra_meta={"iteration": iteration, "env_steps": [int(n) for n in env_steps]})
        if not marks:
            summary = recorder.finish(step, state, results)
    recorder.close()
    for row in envs:
        for e in row:
            e.close()
    if summary is None:
        return json.loads((run_dir / "eval.json").read_text())
    return summary
