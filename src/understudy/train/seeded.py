"""Imitation-seeded off-policy loop (seeded SAC, note 001), readable top to bottom.

Like train/off_policy.py (K seeds vmapped, replay buffers on device, RunRecorder, resumable checkpoints), but
the run is a sequence of iterations. Iteration 0, and later iteration i with probability p0 * p_decay**i,
is a *seeding*: fit the imitator to the expert, let it play `calibration_trajectories` episodes per seed
(their steps count toward --steps and enter the replay buffer), and calibrate the actor to its actions and
the critics to the rewards-to-go. Any other iteration is `iteration_steps` steps of plain SAC.
The coin for iteration i is drawn from (run seed, i), so a resumed run makes the same choices; all seeds
of a run share it. Evaluations happen at the first chunk boundary at or past each multiple of --eval-every.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from types import ModuleType
from types import SimpleNamespace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from understudy.data.replay import ReplayBuffer, replay_add, replay_init, replay_sample
from understudy.envs import env_spec
from understudy.eval.rollouts import evaluate_seeds
from understudy.policy import to_env_action
from understudy.train.off_policy import TRANSITION_KEYS, stack_transitions, step_envs
from understudy.train.common import RunArgs, RunRecorder, attach_videos, default_out, eval_episodes, make_train_env, \
    mean_metrics, next_video_episode, prepare_run_dir, run_config
from understudy.types import Batch, EnvSpec, UnderstudyError


def train(algo_name: str, algo: ModuleType, cfg: Any, run: RunArgs, *, chunk: int = 50,
          method: str | None = None) -> dict:
    if run.env is None:
        raise UnderstudyError(f"`understudy train {algo_name}` is an online algorithm: pass --env ID (e.g. --env Pendulum-v1).")
    K = run.seeds
    if K < 1:
        raise UnderstudyError(f"--seeds must be at least 1 (got {K}).")
    envs = [make_train_env(run, run.seed + s, record=s == 0) for s in range(K)]
    spec = env_spec(envs[0])
    method = method or algo_name
    out = run.out or default_out(algo_name, run.env, run.seed)
    capacity = min(cfg.buffer_size, run.steps)
    saved_config = Path(out) / "config.json"
    if run.resume and saved_config.exists():
        capacity = json.loads(saved_config.read_text()).get("buffer_capacity", capacity)
    config = run_config(algo_name, method, run.env, run, cfg, extra={"buffer_capacity": capacity})
    run_dir = prepare_run_dir(out, resume=run.resume, overwrite=run.overwrite, config=config, algo_cfg=cfg)
    envs[0] = attach_videos(envs[0], run, run_dir, next_video_episode(run_dir))

    # -- agents (SAC + imitator), buffers and loop keys, each with a leading seed axis; expert data shared --
    seeds = jnp.arange(K) + run.seed
    # one jitted program each (op-by-op initialization compiles dozens of tiny programs)
    state = _init_program(algo, cfg, json.dumps(spec.to_dict(), sort_keys=True))(seeds)
    expert_obs, expert_actions = (jnp.asarray(x) for x in algo.load_expert(cfg, spec, run.env, run.seed))
    buffer = _empty_buffers(seeds, capacity, tuple(spec.obs_shape), spec.action_dim)
    keys = _loop_keys(seeds)
    state, buffer = jax.tree.map(jnp.copy, (state, buffer))
    step, iteration, explore_steps = 0, 0, 0
    resume_step, resume_meta = None, None
    if run.resume:
        from understudy.checkpoint import TrainCheckpointer

        ck = TrainCheckpointer(run_dir / "checkpoints")
        step, tree, resume_meta = ck.restore_latest({"state": state, "buffer": buffer, "keys": keys})
        ck.close()
        state, buffer, keys = tree["state"], tree["buffer"], tree["keys"]
        iteration, explore_steps = resume_meta["iteration"], resume_meta["explore_steps"]
        resume_step = step
    recorder = RunRecorder(run_dir, run, config=config, spec=spec, export_fn=lambda st: algo.policy_export(cfg, st),
                           resume_step=resume_step, resume_meta=resume_meta)

    # -- jitted pieces, cached across calls (a resumed run in the same process reuses most compilations) --
    programs = _programs(algo, cfg, K)
    act_all, imitator_act_all, add_and_update, greedy = (programs.act_all, programs.imitator_act_all,
                                                         programs.add_and_update, programs.greedy)
    fit_imitator = functools.partial(programs.fit_imitator, expert_obs=expert_obs, expert_actions=expert_actions)
    calibrate = functools.partial(programs.calibrate, expert_obs=expert_obs)

    def evaluate(state, final: bool = False):
        return evaluate_seeds(lambda o: to_env_action(np.asarray(greedy(state, jnp.asarray(o, jnp.float32))), spec),
                              run.env, num_seeds=K, episodes=eval_episodes(run, final), seed=run.seed + 10_000,
                              env_options={"obs_noise": run.obs_noise} if run.obs_noise else None)

    def play_imitator(state, buffer, keys):
        """Each seed's imitator plays from fresh resets until every seed has `calibration_trajectories` episodes.

        Seeds step in lockstep (a seed that is done keeps playing, so all add the same number of transitions
        to their replay buffers). Returns the buffers, a per-seed buffer of (obs, imitator action,
        rewards-to-go) holding only the complete episodes, the steps taken and the imitator's mean return.
        """
        cols = {k: [] for k in TRANSITION_KEYS}
        ends, episode_returns = [], [[] for _ in range(K)]
        complete_steps, ep_ret = np.zeros(K, int), np.zeros(K)
        obs = reset_all(step + 1)
        while min(len(r) for r in episode_returns) < cfg.calibration_trajectories:
            action = np.asarray(imitator_act_all(state, jnp.asarray(obs)))
            obs, rewards, end = step_envs(envs, obs, action, spec, cols)
            ep_ret += rewards
            for s in np.flatnonzero(end):
                episode_returns[s].append(ep_ret[s])
                complete_steps[s] = len(ends) + 1
            ep_ret[end] = 0.0
            ends.append(end)
        taken = len(ends)
        transitions = stack_transitions(cols, taken, K)
        state, buffer, keys, _ = add_and_update(state, buffer, keys, transitions, num_updates=0)
        rewards, ends = np.asarray(transitions[2]), np.stack(ends, axis=1)  # [K, taken]
        rtg = np.stack([algo.rewards_to_go(rewards[s], ends[s], cfg.gamma) for s in range(K)])
        trajectories = ReplayBuffer(observations=transitions[0], actions=transitions[1], rewards=jnp.asarray(rtg),
                                    terminations=transitions[3], next_observations=transitions[4],
                                    ptr=jnp.zeros(K, jnp.int32), size=jnp.asarray(complete_steps, jnp.int32))
        imitator_return = float(np.mean([np.mean(r) for r in episode_returns]))
        return state, buffer, keys, trajectories, taken, imitator_return

    def updates_due(n: int) -> int:
        """SAC updates owed after `n` exploration steps (fractional updates_per_step allowed)."""
        return int(max(0, n - cfg.learning_starts) * cfg.updates_per_step)

    def reset_all(at_step: int) -> np.ndarray:
        return np.stack([e.reset(seed=run.seed + s + 7919 * at_step)[0] for s, e in enumerate(envs)]).astype(np.float32)

    # -- the loop ---------------------------------------------------------------------------------------
    interval_metrics: list[dict] = []
    finished_returns: list[float] = []
    seed_metrics: dict[str, float] = {}
    every = run.eval_every
    checkpoint_every = max(every, (run.checkpoint_every or every) // every * every)
    next_eval, last_checkpoint, summary = (step // every + 1) * every, step, None

    def evaluate_if_due(iteration: int, iteration_end: int) -> None:
        """At the first chance at or past each --eval-every multiple (and at the end): eval, log, export, checkpoint.

        The checkpoint records the iteration to run next and, if an exploring iteration is unfinished, its end.
        """
        nonlocal next_eval, last_checkpoint, summary, interval_metrics, finished_returns, seed_metrics
        if step < next_eval and step < run.steps:
            return
        results = evaluate(state, final=step >= run.steps)
        train_metrics = dict(seed_metrics)
        if interval_metrics:
            train_metrics.update(mean_metrics({k: np.concatenate([np.ravel(m[k]) for m in interval_metrics])
                                               for k in interval_metrics[0]}))
        if finished_returns:
            train_metrics["train/episode_return"] = float(np.mean(finished_returns))
        interval_metrics, finished_returns, seed_metrics = [], [], {}
        recorder.record_eval(step, state, results, train_metrics)
        recorder.maybe_snapshot(step, state, results)
        next_eval = (step // every + 1) * every
        if step // checkpoint_every > last_checkpoint // checkpoint_every or step >= run.steps:
            meta = {"iteration": iteration, "iteration_end": iteration_end, "explore_steps": explore_steps}
            recorder.checkpoint(step, {"state": state, "buffer": buffer, "keys": keys}, meta)
            last_checkpoint = step
        if step >= run.steps:
            summary = recorder.finish(step, state, results)

    if step >= run.steps:
        recorder.progress.print(f"{run_dir} already reached step {step} (asked for {run.steps}); nothing to do.")
    # a resumed run first finishes the exploring iteration its checkpoint interrupted
    pending_end = resume_meta.get("iteration_end", step) if resume_meta else step
    obs, ep_return = reset_all(step), np.zeros(K)
    while step < run.steps:
        if step < pending_end:
            iteration_end, pending_end = pending_end, step
        elif np.random.default_rng([run.seed, iteration]).random() < algo.seeding_probability(cfg, iteration):
            state, keys, imitation = fit_imitator(state, keys)
            state, buffer, keys, trajectories, taken, imitator_return = play_imitator(state, buffer, keys)
            state, keys, calibration = calibrate(state, keys, trajectories)
            step += taken
            seedings = int(np.asarray(state.seedings)[0])
            seed_metrics = {**mean_metrics({k: v[-100:] for k, v in {**imitation, **calibration}.items()}),
                            "train/imitator_return": imitator_return, "train/seedings": float(seedings)}
            obs, ep_return = reset_all(step), np.zeros(K)
            iteration += 1
            recorder.progress.update(step, f"seeding {seedings}: imitator return {imitator_return:.1f}")
            evaluate_if_due(iteration, step)
            continue
        else:
            iteration_end = min(step + cfg.iteration_steps, run.steps)
        while step < iteration_end:  # one exploring iteration of SAC, in chunks
            n = min(chunk, iteration_end - step, next_eval - step)
            cols = {k: [] for k in TRANSITION_KEYS}
            for _ in range(n):
                action, keys = act_all(state, obs, keys)  # numpy in: cheaper than jnp.asarray first
                obs, rewards, ended = step_envs(envs, obs, np.asarray(action), spec, cols)
                ep_return += rewards
                finished_returns.extend(ep_return[ended])
                ep_return[ended] = 0.0
                step += 1
            explore_steps += n
            updates = updates_due(explore_steps) - updates_due(explore_steps - n)
            state, buffer, keys, metrics = add_and_update(state, buffer, keys, stack_transitions(cols, n, K), num_updates=updates)
            if metrics:
                interval_metrics.append(jax.device_get(metrics))
            if step >= iteration_end:
                iteration += 1
            recorder.progress.update(step)
            evaluate_if_due(iteration, iteration_end)
    recorder.close()
    for e in envs:
        e.close()
    if summary is None:
        return json.loads((run_dir / "eval.json").read_text())
    return summary


@functools.lru_cache(maxsize=4)
def _programs(algo: ModuleType, cfg: Any, K: int) -> SimpleNamespace:
    """The loop's jitted functions for one (algorithm, config, seed count)."""
    @jax.jit
    def act_all(state, obs, keys):
        keys, sub = jax.vmap(jax.random.split, out_axes=1)(keys)
        action = jax.vmap(lambda st, o, k: algo.act(cfg, st, o[None], k, False)[0])(state, obs, sub)
        return action, keys

    @jax.jit
    def imitator_act_all(state, obs):
        return jax.vmap(lambda st, o: algo.imitator_act(cfg, st, o[None])[0])(state, obs)

    def scanned(step_fn, state, keys, sample, num_updates):
        """`num_updates` steps of `step_fn(state, batch)` per seed, batches drawn by `sample(seed index, key)`."""
        def one(carry, _):
            state, keys = carry
            keys, sub = jax.vmap(jax.random.split, out_axes=1)(keys)
            batch = jax.vmap(sample)(jnp.arange(K), sub)
            state, metrics = jax.vmap(step_fn)(state, batch)
            return (state, keys), metrics

        (state, keys), metrics = jax.lax.scan(one, (state, keys), None, length=num_updates)
        return state, keys, metrics

    @functools.partial(jax.jit, static_argnames="num_updates", donate_argnames=("state", "buffer"))
    def add_and_update(state, buffer, keys, transitions, num_updates):
        buffer = jax.vmap(replay_add)(buffer, *transitions)
        if num_updates == 0:
            return state, buffer, keys, {}
        state, keys, metrics = scanned(lambda st, b: algo.update(cfg, st, b), state, keys,
                                       lambda s, k: replay_sample(jax.tree.map(lambda x: x[s], buffer), k,
                                                                  cfg.batch_size), num_updates)
        return state, buffer, keys, metrics

    @functools.partial(jax.jit, donate_argnames="state")
    def fit_imitator(state, keys, expert_obs, expert_actions):
        def sample(_, key):
            idx = jax.random.randint(key, (cfg.batch_size,), 0, expert_obs.shape[0])
            return Batch(observations=expert_obs[idx], actions=expert_actions[idx], rewards=None, terminations=None,
                     next_observations=None)

        return scanned(lambda st, b: algo.imitator_update(cfg, st, b), state, keys, sample, cfg.imitator_updates)

    @functools.partial(jax.jit, donate_argnames="state")
    def calibrate(state, keys, trajectories, expert_obs):
        # trajectories: a per-seed replay buffer whose `rewards` hold rewards-to-go; each batch also carries
        # as many expert states, which the actor fits to the imitator's actions
        def sample(s, key):
            rollout_key, expert_key = jax.random.split(key)
            idx = jax.random.randint(expert_key, (cfg.batch_size,), 0, expert_obs.shape[0])
            return replay_sample(jax.tree.map(lambda x: x[s], trajectories), rollout_key, cfg.batch_size), expert_obs[idx]

        state, keys, metrics = scanned(
            lambda st, b: algo.calibration_update(cfg, st, algo.calibration_batch(cfg, st, *b)), state, keys,
            sample, cfg.calibration_updates)
        return state.replace(seedings=state.seedings + 1), keys, metrics

    @jax.jit
    def greedy(state, obs):
        return jax.vmap(lambda st, o: algo.act(cfg, st, o, jax.random.PRNGKey(0), True))(state, obs)

    return SimpleNamespace(act_all=act_all, imitator_act_all=imitator_act_all, add_and_update=add_and_update,
                           fit_imitator=fit_imitator, calibrate=calibrate, greedy=greedy)


@functools.lru_cache(maxsize=4)
def _init_program(algo: ModuleType, cfg: Any, spec_json: str):
    """Jitted seeds -> agent states (initializing op by op compiles dozens of tiny programs)."""
    spec = EnvSpec.from_dict(json.loads(spec_json))
    return jax.jit(jax.vmap(lambda s: algo.init(cfg, spec, jax.random.PRNGKey(s))))


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _empty_buffers(seeds, capacity: int, obs_shape: tuple, action_dim: int):
    return jax.vmap(lambda _: replay_init(capacity, obs_shape, (action_dim,)))(seeds)


@jax.jit
def _loop_keys(seeds):
    return jax.vmap(lambda s: jax.random.fold_in(jax.random.PRNGKey(s), 1))(seeds)
