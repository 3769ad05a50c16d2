"""Online off-policy loop (SAC and kin), readable top to bottom.

K seeds run side by side: each seed has its own env, replay buffer (on device) and agent; agents and
buffers carry a leading seed axis and every device call is vmapped over it. The loop alternates:
collect `chunk` env steps per seed (one jitted act per step), then one jitted call that appends the chunk
to the replay buffers and runs `chunk * updates_per_step` updates inside `lax.scan`.
Resuming restores agents, optimizers, RNG keys and replay buffers; envs restart from a fresh reset.
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

from understudy.data.replay import replay_add, replay_init, replay_sample
from understudy.envs import env_spec
from understudy.eval.rollouts import evaluate_seeds
from understudy.policy import to_env_action
from understudy.train.common import RunArgs, RunRecorder, attach_videos, default_out, eval_episodes, eval_steps, \
    make_train_env, mean_metrics, next_video_episode, prepare_run_dir, run_config, seed_slice, vmapped_update, \
    acting_view
from understudy.types import UnderstudyError


TRANSITION_KEYS = ("obs", "action", "reward", "term", "next_obs")


def step_envs(envs: list, obs: np.ndarray, action: np.ndarray, spec, cols: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps seed s's env with action[s] (normalized), appends each transition to `cols` and resets envs whose
    episode ended. Returns (next observations [K, ...], rewards [K], episode-ended flags [K])."""
    env_action = to_env_action(action, spec)
    next_obs, rewards, ended = np.empty_like(obs), np.zeros(len(envs)), np.zeros(len(envs), bool)
    for s, e in enumerate(envs):
        o2, r, term, trunc, _ = e.step(env_action[s])
        for k, v in zip(TRANSITION_KEYS, (obs[s], action[s], r, float(term), o2)):
            cols[k].append(v)
        rewards[s], ended[s] = r, term or trunc
        if ended[s]:
            o2, _ = e.reset()
        next_obs[s] = o2
    return next_obs, rewards, ended


def stack_transitions(cols: dict, n: int, K: int, action_dtype=np.float32) -> tuple:
    """Columns appended step-major, seed-minor by `step_envs` -> device arrays [K, n, ...]."""
    return tuple(jnp.asarray(np.asarray(cols[k], action_dtype if k == "action" else np.float32)
                             .reshape(n, K, *np.shape(cols[k][0])).swapaxes(0, 1)) for k in TRANSITION_KEYS)


def train(algo_name: str, algo: ModuleType, cfg: Any, run: RunArgs, *, chunk: int = 50,
          method: str | None = None) -> dict:
    if run.env is None:
        raise UnderstudyError(f"`understudy train {algo_name}` is an online algorithm: pass --env ID (e.g. --env Pendulum-v1).")
    K = run.seeds
    if K < 1:
        raise UnderstudyError(f"--seeds must be at least 1 (got {K}).")
    if run.snapshot_replay and not run.snapshot_every:
        raise UnderstudyError("--snapshot-replay saves the replay buffer at each policy snapshot: add "
                              "--snapshot-every N.")
    envs = [make_train_env(run, run.seed + s, record=s == 0) for s in range(K)]
    spec = env_spec(envs[0])  # the algorithm's init rejects action spaces it cannot handle
    method = method or algo_name
    out = run.out or default_out(algo_name, run.env, run.seed)
    # a buffer larger than the run is wasted memory; a resumed run keeps the capacity it was started with
    capacity = min(cfg.buffer_size, run.steps)
    saved_config = Path(out) / "config.json"
    if run.resume and saved_config.exists():
        capacity = json.loads(saved_config.read_text()).get("buffer_capacity", capacity)
    config = run_config(algo_name, method, run.env, run, cfg, extra={"buffer_capacity": capacity})
    run_dir = prepare_run_dir(out, resume=run.resume, overwrite=run.overwrite, config=config, algo_cfg=cfg)
    envs[0] = attach_videos(envs[0], run, run_dir, next_video_episode(run_dir))
    chunk = math.gcd(chunk, run.eval_every)  # evaluation steps fall on chunk boundaries

    # -- agents, buffers and loop keys, each with a leading seed axis -------------------------------
    seeds = jnp.arange(K) + run.seed
    state = jax.vmap(lambda s: algo.init(cfg, spec, jax.random.PRNGKey(s)))(seeds)
    action_shape, action_dtype = ((), jnp.int32) if spec.discrete else ((spec.action_dim,), jnp.float32)
    buffer = jax.vmap(lambda _: replay_init(capacity, spec.obs_shape, action_shape, action_dtype))(seeds)
    keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.PRNGKey(s), 1))(seeds)
    # donation needs every leaf in its own buffer (init may alias e.g. target params to params)
    state, buffer = jax.tree.map(jnp.copy, (state, buffer))
    start = 0
    resume_step, resume_meta = None, None
    recorder_kwargs = dict(config=config, spec=spec, export_fn=lambda st: algo.policy_export(cfg, st))
    if run.resume:
        from understudy.checkpoint import TrainCheckpointer

        ck = TrainCheckpointer(run_dir / "checkpoints")
        start, tree, resume_meta = ck.restore_latest({"state": state, "buffer": buffer, "keys": keys})
        ck.close()
        state, buffer, keys = tree["state"], tree["buffer"], tree["keys"]
        resume_step = start
    recorder = RunRecorder(run_dir, run, resume_step=resume_step, resume_meta=resume_meta, **recorder_kwargs)
    if start >= run.steps:
        recorder.progress.print(f"{run_dir} already reached step {start} (asked for {run.steps}); nothing to do.")

    # -- jitted pieces --------------------------------------------------------------------------------
    @functools.partial(jax.jit, static_argnames="explore_randomly")
    def act_all(state, obs, keys, explore_randomly):
        keys, sub = jax.vmap(jax.random.split, out_axes=1)(keys)
        if explore_randomly and spec.discrete:
            action = jax.vmap(lambda k: jax.random.randint(k, (), 0, spec.num_actions))(sub)
        elif explore_randomly:
            action = jax.vmap(lambda k: jax.random.uniform(k, (spec.action_dim,), minval=-1.0, maxval=1.0))(sub)
        else:
            action = jax.vmap(lambda st, o, k: algo.act(cfg, st, o[None], k, False)[0])(state, obs, sub)
        return action, keys

    update = vmapped_update(algo, cfg)

    @functools.partial(jax.jit, static_argnames="num_updates", donate_argnames=("state", "buffer"))
    def add_and_update(state, buffer, keys, transitions, num_updates):
        buffer = jax.vmap(replay_add)(buffer, *transitions)
        if num_updates == 0:
            return state, buffer, keys, {}

        def one_update(carry, _):
            state, keys = carry
            keys, sub = jax.vmap(jax.random.split, out_axes=1)(keys)
            batch = jax.vmap(lambda b, k: replay_sample(b, k, cfg.batch_size))(buffer, sub)
            state, metrics = update(state, batch)
            return (state, keys), metrics

        (state, keys), metrics = jax.lax.scan(one_update, (state, keys), None, length=num_updates)
        return state, buffer, keys, metrics

    @jax.jit
    def greedy(state, obs):
        return jax.vmap(lambda st, o: algo.act(cfg, st, o, jax.random.PRNGKey(0), True))(state, obs)

    def evaluate(state, final: bool = False):
        acting = acting_view(algo, state)
        return evaluate_seeds(lambda o: to_env_action(np.asarray(greedy(acting, np.asarray(o, np.float32))), spec),
                              run.env, num_seeds=K, episodes=eval_episodes(run, final), seed=run.seed + 10_000,
                              env_options={"obs_noise": run.obs_noise} if run.obs_noise else None)

    def updates_due(env_step: int) -> int:
        """Updates owed after `env_step` steps: `updates_per_step` (may be fractional) per step past learning_starts."""
        return int(max(0, env_step - cfg.learning_starts) * cfg.updates_per_step)

    # -- the loop --------------------------------------------------------------------------------------
    obs = np.stack([e.reset(seed=run.seed + s + 7919 * start)[0] for s, e in enumerate(envs)]).astype(np.float32)
    ep_return, finished_returns = np.zeros(K), []
    interval_metrics: list[dict] = []
    checkpoint_every = max(run.eval_every, (run.checkpoint_every or run.eval_every) // run.eval_every * run.eval_every)
    step = start
    last_row = None
    hold, held_action = getattr(cfg, "random_action_hold", 1), None
    acting = acting_view(algo, state)  # what act reads, rebuilt after each update call
    for mark in eval_steps(run.steps, run.eval_every, start):
        while step < mark:
            n = min(chunk, mark - step)
            cols = {k: [] for k in TRANSITION_KEYS}
            for _ in range(n):
                explore_randomly = step < cfg.learning_starts
                if explore_randomly and held_action is not None and step % hold:
                    action = held_action  # --random-action-hold: keep the random action a few steps more
                else:
                    # obs goes in as numpy: jit's own transfer is cheaper than a jnp.asarray first
                    action, keys = act_all(acting, obs, keys, explore_randomly=explore_randomly)
                    held_action = action if explore_randomly else None
                obs, rewards, ended = step_envs(envs, obs, np.asarray(action), spec, cols)
                ep_return += rewards
                finished_returns.extend(ep_return[ended])
                ep_return[ended] = 0.0
                step += 1
            transitions = stack_transitions(cols, n, K, action_dtype)
            updates = updates_due(step) - updates_due(step - n)
            state, buffer, keys, metrics = add_and_update(state, buffer, keys, transitions, num_updates=updates)
            acting = acting_view(algo, state)
            if metrics:
                interval_metrics.append(jax.device_get(metrics))
            recorder.progress.update(step, "" if last_row is None else f"eval return {last_row['eval/return']:.1f}")

        results = evaluate(state, final=step == run.steps)
        train_metrics = {}
        if interval_metrics:
            train_metrics = mean_metrics({k: np.concatenate([np.ravel(m[k]) for m in interval_metrics])
                                          for k in interval_metrics[0]})
        if finished_returns:
            train_metrics["train/episode_return"] = float(np.mean(finished_returns))
        interval_metrics, finished_returns = [], []
        last_row = recorder.record_eval(step, state, results, train_metrics)
        recorder.maybe_snapshot(step, state, results)
        if run.snapshot_replay and (run_dir / "snapshots" / f"step_{step}").is_dir():  # a snapshot step
            from understudy.data.recipes import save_replay_snapshot

            for s in range(K):
                save_replay_snapshot(recorder.export_dir(f"snapshots/step_{step}", s), seed_slice(buffer, s),
                                     step=step, spec=spec)
        if step % checkpoint_every == 0 or step == run.steps:
            recorder.checkpoint(step, {"state": state, "buffer": buffer, "keys": keys})
        if step == run.steps:
            summary = recorder.finish(step, state, results)
    recorder.close()
    for e in envs:
        e.close()
    if start >= run.steps:
        return json.loads((run_dir / "eval.json").read_text())
    return summary
