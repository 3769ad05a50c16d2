"""Online on-policy loop (PPO and kin), readable top to bottom, like CleanRL's ppo_continuous_action.py but jitted.

K seeds run side by side in one Gymnasium vector env of K x num_envs sub-envs (sub-env s * num_envs + j
is sub-env j of seed s). Each iteration collects a rollout of num_steps vector steps (one jitted, vmapped
`algo.rollout_step` per step, which also updates each seed's observation statistics), then makes one jitted
call to `algo.update`, vmapped over seeds, that does the whole update (epochs x minibatches in lax.scan).

Gymnasium's default next-step autoreset: the step that ends an episode returns its final observation with
terminated/truncated set; the following step resets that sub-env (ignoring its action) and returns the new
first observation with reward 0. The loop marks that reset step `valid = 0`, so it is left out of every
loss, and the final observation it acted on is the bootstrap value of a truncated episode.

Env steps count vector-env step calls per sub-env, resets included, per seed; --steps is rounded down and
--eval-every to the nearest whole rollout (num_steps x num_envs). Evaluation acts through each seed's
exported policy, so eval.json matches `understudy eval` of best/ and final/. Resuming restores agents
(with their normalizers), optimizers and RNG keys; envs restart from a fresh reset.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from types import ModuleType, SimpleNamespace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from understudy.envs import env_spec
from understudy.eval.rollouts import evaluate_seeds
from understudy.policy import Policy, to_env_action
from understudy.train.common import RunArgs, RunRecorder, attach_videos, default_out, eval_episodes, eval_steps, \
    make_train_vector, mean_metrics, next_video_episode, prepare_run_dir, run_config, seed_slice
from understudy.types import EnvSpec, UnderstudyError


def schedule(run: RunArgs, rollout_steps: int) -> dict[str, int]:
    """Run lengths in env steps per seed, rounded to whole rollouts: total (down, at least one rollout), eval
    interval (nearest), checkpoint and snapshot intervals (multiples of the eval interval)."""
    total = max(1, run.steps // rollout_steps) * rollout_steps
    every = max(1, round(run.eval_every / rollout_steps)) * rollout_steps

    def multiple_of_every(n):
        return None if not n else max(1, round(n / every)) * every

    return {"total": total, "eval_every": every, "checkpoint_every": multiple_of_every(run.checkpoint_every) or every,
            "snapshot_every": multiple_of_every(run.snapshot_every)}


def stack(trees: list) -> Any:
    """Stacks pytrees of arrays along a new leading (seed) axis, on the host (no per-shape compilation)."""
    return jax.tree.map(lambda *xs: jnp.asarray(np.stack([np.asarray(x) for x in xs])), *trees)


@functools.lru_cache(maxsize=8)
def compiled_programs(algo: ModuleType, cfg: Any, spec_json: str, K: int) -> SimpleNamespace:
    """The loop's jitted functions for K seeds, cached so a resumed or repeated run in one process compiles once.

    A jitted call costs tens of microseconds per array argument on CPU, and a rollout makes one call per
    vector step. So a step takes the part of the state it uses (algo.acting: networks, observation
    statistics) as one flat vector per seed, and returns what the rollout stores as one packed row per
    sub-env (plus the actions, which the envs need at once); the update unpacks the rows on device.
    """
    spec = EnvSpec.from_json(spec_json)
    N, obs_shape = cfg.num_envs, spec.obs_shape
    zeros_like = functools.partial(jax.tree.map, lambda x: jnp.zeros(x.shape, x.dtype))
    acting_example = zeros_like(jax.eval_shape(lambda k: algo.acting(algo.init(cfg, spec, k)), jax.random.PRNGKey(0)))
    step_shapes = jax.eval_shape(lambda a: algo.rollout_step(cfg, a, jnp.zeros((N, *obs_shape)), jax.random.PRNGKey(0))[1],
                                 acting_example)
    row_example = jax.tree.map(lambda x: jnp.zeros(x.shape[1:], x.dtype), step_shapes)  # one sub-env's row
    unravel_acting, unravel_row = ravel_pytree(acting_example)[1], ravel_pytree(row_example)[1]

    def flatten(tree):
        return ravel_pytree(tree)[0]

    @jax.jit
    def acting_of(state):
        return jax.vmap(lambda st: flatten(algo.acting(st)))(state)

    @jax.jit
    def explore(acting, obs, keys):
        """acting [K, P], raw obs [K, N, *obs] -> (acting, packed rows [K, N, D], actions [K, N, ...], keys)."""
        keys, sub = jax.vmap(jax.random.split, out_axes=1)(keys)

        def one_seed(flat, o, k):
            new_acting, step = algo.rollout_step(cfg, unravel_acting(flat), o, k)
            return flatten(new_acting), jax.vmap(flatten)(step), step.action

        acting, rows, actions = jax.vmap(one_seed)(acting, obs, sub)
        return acting, rows, actions, keys

    @functools.partial(jax.jit, donate_argnames="state")
    def update(state, acting, rows, env_columns, next_obs, lr_scale):
        """rows [K, T, N, D] and env_columns (rewards, terminations, truncations, valid) [K, T, N] -> one update per seed."""
        state = jax.vmap(algo.with_acting)(state, jax.vmap(unravel_acting)(acting))
        steps = jax.vmap(jax.vmap(jax.vmap(unravel_row)))(rows)
        rewards, terminations, truncations, valid = env_columns
        rollout = algo.Rollout(observations=steps.observation, actions=steps.action, log_probs=steps.log_prob,
                               values=steps.value, rewards=rewards, terminations=terminations,
                               truncations=truncations, valid=valid, next_observation=next_obs)
        return jax.vmap(lambda st, ro: algo.update(cfg, st, ro, lr_scale))(state, rollout)

    row_width = sum(x.size for x in jax.tree.leaves(row_example))
    return SimpleNamespace(acting_of=acting_of, explore=explore, update=update, row_width=row_width)


def train(algo_name: str, algo: ModuleType, cfg: Any, run: RunArgs, *, method: str | None = None) -> dict:
    if run.env is None:
        raise UnderstudyError(f"`understudy train {algo_name}` is an online algorithm: pass --env ID (e.g. --env CartPole-v1).")
    K, N, T = run.seeds, cfg.num_envs, cfg.num_steps
    if K < 1:
        raise UnderstudyError(f"--seeds must be at least 1 (got {K}).")
    if N < 1 or T < 1:
        raise UnderstudyError(f"--num-envs and --num-steps must be at least 1 (got {N} and {T}).")
    # sub-env j of seed s gets env seed (run.seed + s) * N + j, so a K-seed run matches K one-seed runs
    envs = make_train_vector(run, K * N, seed=run.seed * N)
    spec = env_spec(envs.envs[0])  # the algorithm's init rejects spaces it cannot handle
    method = method or algo_name
    out = run.out or default_out(algo_name, run.env, run.seed)
    plan = schedule(run, T * N)
    config = run_config(algo_name, method, run.env, run, cfg, extra={"schedule": plan})
    run_dir = prepare_run_dir(out, resume=run.resume, overwrite=run.overwrite, config=config, algo_cfg=cfg)
    envs.envs[0] = attach_videos(envs.envs[0], run, run_dir, next_video_episode(run_dir))
    total, every = plan["total"], plan["eval_every"]
    # the recorder sees the rounded schedule, so its snapshots and progress bar fall on rollout boundaries
    recorder_run = dataclasses.replace(run, steps=total, eval_every=every, snapshot_every=plan["snapshot_every"])

    # -- agents and loop keys, each with a leading seed axis -------------------------------------------
    # seed by seed, then stacked on the host: one compiled init serves every seed count
    seeds = [run.seed + s for s in range(K)]
    state = stack([algo.init(cfg, spec, jax.random.PRNGKey(s)) for s in seeds])
    keys = stack([jax.random.fold_in(jax.random.PRNGKey(s), 1) for s in seeds])
    start, resume_step, resume_meta = 0, None, None
    if run.resume:
        from understudy.checkpoint import TrainCheckpointer

        ck = TrainCheckpointer(run_dir / "checkpoints")
        start, tree, resume_meta = ck.restore_latest({"state": state, "keys": keys})
        ck.close()
        # restored arrays come back committed to a device; uncommitted copies, like fresh ones, reuse the compiled programs
        state, keys = jax.tree.map(lambda x: jnp.asarray(np.asarray(x)), (tree["state"], tree["keys"]))
        resume_step = start
        # the envs restart from a reset, so the running discounted returns of their old episodes are void
        state = state.replace(discounted_return=jnp.zeros_like(state.discounted_return))
    recorder = RunRecorder(run_dir, recorder_run, config=config, spec=spec, resume_step=resume_step,
                           resume_meta=resume_meta, export_fn=lambda st: algo.policy_export(cfg, st))
    if start >= total:
        recorder.progress.print(f"{run_dir} already reached step {start} (asked for {total}); nothing to do.")

    programs = compiled_programs(algo, cfg, spec.to_json(), K)
    obs_shape = spec.obs_shape

    def evaluate(state, final: bool = False):
        # Act through each seed's exported policy itself (understudy.policy.Policy), so that eval.json agrees with
        # `understudy eval` of the export to the last digit: with the normalizer compiled in as a constant, XLA
        # rounds differently than the training program does, and chaotic envs (HalfCheetah) amplify that.
        policies = [Policy(*export[:2], spec, normalizer=export[2] if len(export) > 2 else None)
                    for export in (algo.policy_export(cfg, seed_slice(state, s)) for s in range(K))]
        return evaluate_seeds(lambda o: np.stack([policy(o[s]) for s, policy in enumerate(policies)]),
                              run.env, num_seeds=K, episodes=eval_episodes(run, final), seed=run.seed + 10_000,
                              env_options={"obs_noise": run.obs_noise} if run.obs_noise else None)

    def lr_scale(step: int) -> float:
        """CleanRL's linear annealing: 1 for the first rollout, 1/num_rollouts for the last."""
        return 1.0 - step / total if cfg.anneal_lr else 1.0

    # -- the loop --------------------------------------------------------------------------------------------
    rows = np.zeros((T, K, N, programs.row_width), np.float32)  # what each step stored, packed
    env_columns = np.zeros((4, T, K, N), np.float32)  # rewards, terminations, truncations, valid
    obs, _ = envs.reset(seed=run.seed * N + 7919 * start)
    resetting = np.zeros(K * N, bool)  # sub-envs whose next step() is gymnasium's autoreset
    ep_return = np.zeros(K * N)
    finished_returns: list[float] = []
    interval_metrics: list[dict] = []
    busy_s = 0.0  # wall time spent collecting and updating (not evaluating), for steps/s
    step = start
    interval_start = start
    last_row = None
    for mark in eval_steps(total, every, start):
        while step < mark:
            t0 = time.time()
            acting = programs.acting_of(state)
            for t in range(T):
                acting, rows_t, action, keys = programs.explore(acting, jnp.asarray(obs.reshape(K, N, *obs_shape)), keys)
                rows[t] = rows_t
                action = np.asarray(action).reshape(K * N, *np.shape(action)[2:])
                obs, reward, terminated, truncated, _ = envs.step(to_env_action(algo.env_action(action, spec.discrete),
                                                                                spec))
                valid = ~resetting
                env_columns[:, t] = np.stack([reward, terminated, truncated, valid]).reshape(4, K, N)
                ep_return[valid] += reward[valid]
                for i in np.flatnonzero(valid & (terminated | truncated)):
                    finished_returns.append(float(ep_return[i]))
                    ep_return[i] = 0.0
                resetting = terminated | truncated
            # obs is now the observation after the last step: the bootstrap of the rollout's last row
            state, metrics = programs.update(state, acting, jnp.asarray(rows.swapaxes(0, 1)),
                                             jnp.asarray(env_columns.swapaxes(1, 2)),
                                             jnp.asarray(obs.reshape(K, N, *obs_shape), jnp.float32),
                                             jnp.float32(lr_scale(step)))
            interval_metrics.append(jax.device_get(metrics))
            step += T * N
            busy_s += time.time() - t0
            recorder.progress.update(step, "" if last_row is None else f"eval return {last_row['eval/return']:.1f}")

        results = evaluate(state, final=step == total)
        train_metrics = mean_metrics({k: np.stack([m[k] for m in interval_metrics]) for k in interval_metrics[0]})
        if finished_returns:
            train_metrics["train/episode_return"] = float(np.mean(finished_returns))
        train_metrics["train/steps_per_s"] = (step - interval_start) * K / max(busy_s, 1e-9)
        interval_metrics, finished_returns, busy_s, interval_start = [], [], 0.0, step
        last_row = recorder.record_eval(step, state, results, train_metrics)
        recorder.maybe_snapshot(step, state, results)
        if step % plan["checkpoint_every"] == 0 or step == total:
            recorder.checkpoint(step, {"state": state, "keys": keys})
        if step == total:
            summary = recorder.finish(step, state, results)
    recorder.close()
    envs.close()
    if start >= total:
        return json.loads((run_dir / "eval.json").read_text())
    return summary
