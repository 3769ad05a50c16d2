"""Adversarial imitation loop (GAIL, AIRL) around SAC or PPO, readable top to bottom.

The expert's transitions come from --dataset (env id from its metadata unless --env is given) and live on
device; observations are standardized by the expert data's statistics everywhere (policy, critic,
discriminator), and the statistics are saved in the policy export. The environment's reward is never used
for training (evaluation still reports it).

--rl sac (like train/off_policy.py: K seeds vmapped, replay buffers on device, chunks of env steps followed by
one jitted call that appends them and runs the owed updates inside lax.scan). Each update first runs a
discriminator round (every --disc-every updates: --disc-updates steps, an expert batch vs a replay batch drawn
uniformly from the buffer, or from its newest --disc-recent transitions), then relabels a replay batch with the
current discriminator's rewards and makes one SAC update on it; the stored env reward is never read.

--rl ppo (like train/on_policy.py, whose compiled rollout and update programs it reuses: K x num_envs
sub-envs in one vector env). After each rollout one jitted call trains the discriminator on the rollout's
valid rows vs expert batches, then computes the rollout's rewards with it; those replace the env's rewards
in PPO's update (reward scaling, GAE, epochs).

AIRL needs log pi(a|s) of the current policy: SAC's tanh-Gaussian density (actions clipped to +-0.999 so a
saturated expert action keeps a finite density) or PPO's Gaussian/categorical one. AIRL runs also write
reward.safetensors + reward.json beside each policy export (understudy.algos.airl.load_reward).
Resuming restores agents, discriminators, optimizers, RNG keys (and SAC's replay buffers); envs restart
from a fresh reset.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import flax.struct as struct
import jax
import jax.numpy as jnp
import numpy as np

from understudy.algos import discriminator
from understudy.algos import ppo as ppo_algo
from understudy.algos import sac as sac_algo
from understudy.data.normalize import fit_normalizer, normalize
from understudy.data.replay import replay_add, replay_init, replay_sample
from understudy.data.samplers import DeviceDataset, sample_transitions, to_device
from understudy.envs import env_spec
from understudy.eval.rollouts import evaluate_seeds
from understudy.policy import Policy, to_env_action
from understudy.train import on_policy
from understudy.train.common import RunArgs, RunRecorder, attach_videos, default_out, eval_episodes, eval_steps, \
    make_train_env, make_train_vector, mean_metrics, next_video_episode, prepare_run_dir, run_config, seed_slice
from understudy.train.off_policy import TRANSITION_KEYS, stack_transitions, step_envs
from understudy.types import Batch, EnvSpec, UnderstudyError

SAC_LOG_PROB_ACTION_LIMIT = 0.999  # AIRL with SAC: log pi of actions clipped to this (finite at saturated actions)


class Agent(struct.PyTreeNode):
    """One seed's learner: the RL algorithm's state and the discriminator's."""

    rl: Any
    disc: discriminator.DiscState


# -- expert data ----------------------------------------------------------------------------------------------------
def load_expert(cfg: Any, run: RunArgs, algo_name: str):
    """The expert dataset (its first --expert-episodes episodes) and the env id to train on."""
    from understudy.data import load_dataset

    if run.dataset is None:
        raise UnderstudyError(f"`understudy train {algo_name}` imitates expert demonstrations: pass --dataset PATH "
                              "(make one with `understudy collect --env ID --policy experts/ID --episodes 25 --out "
                              "PATH`).")
    if run.reward_text is not None or run.reward_model is not None:
        raise UnderstudyError(f"{algo_name} learns its own reward from the demonstrations; --reward-text and "
                              "--reward-model do not apply. Drop them.")
    ds = load_dataset(run.dataset)
    if isinstance(ds.observations, dict):
        raise UnderstudyError(f"{run.dataset} has dict observations; {algo_name} needs array observations.")
    if cfg.expert_episodes is not None:
        if cfg.expert_episodes > ds.num_episodes:
            raise UnderstudyError(f"--expert-episodes {cfg.expert_episodes} asks for more episodes than {run.dataset} "
                                  f"holds ({ds.num_episodes}). Lower it or collect more.")
        ds = ds.select_episodes(np.arange(cfg.expert_episodes))
    env_id = run.env or ds.metadata.get("env_id")
    if not env_id:
        raise UnderstudyError(f"{run.dataset} does not record which environment it came from (metadata env_id): "
                              "pass --env ID.")
    return ds, env_id


def expert_on_device(cfg: Any, ds, spec: EnvSpec) -> tuple[DeviceDataset, dict | None]:
    """Expert transitions on device (observations standardized, actions in [-1, 1] or int32) and the normalizer."""
    from understudy.data.validate import check_compatible
    from understudy.train.offline import dataset_columns

    check_compatible(ds, spec)
    normalizer = fit_normalizer(ds.observations) if cfg.normalize_observations else None
    return to_device(dataset_columns(ds, spec, normalizer)), normalizer


def disc_inputs(spec: EnvSpec, obs, actions, next_obs, terminations) -> Batch:
    """A discriminator batch: actions as features (one-hot for discrete actions)."""
    return Batch(observations=obs, actions=discriminator.action_features(actions, spec), rewards=None,
                 terminations=jnp.asarray(terminations, jnp.float32), next_observations=next_obs)


def compose_normalizers(outer: dict | None, inner: dict | None) -> dict | None:
    """One normalizer equal to `inner` applied after `outer`: ((x - m1) / s1 - m2) / s2 = (x - m) / s."""
    if inner is None or outer is None:
        return outer if inner is None else inner
    return {"mean": np.asarray(outer["mean"] + outer["std"] * inner["mean"], np.float32),
            "std": np.asarray(outer["std"] * inner["std"], np.float32)}


class _Recorder(RunRecorder):
    """RunRecorder that also writes the learned reward (AIRL) beside every policy export."""

    def __init__(self, *args, reward_export=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.reward_export = reward_export

    def export(self, kind: str, state: Any, s: int, step: int, eval_mean: float | None) -> None:
        super().export(kind, state, s, step, eval_mean)
        if self.reward_export is not None:
            self.reward_export(self.export_dir(kind, s), seed_slice(state, s),
                               {"algo": self.config["algo"], "method": self.config["method"], "step": step,
                                "seed": self.run.seed + s, "run_dir": str(self.run_dir)})


def _reward_export(algo: ModuleType, cfg: Any, spec: EnvSpec, normalizer: dict | None):
    if not hasattr(algo, "export_reward"):
        return None
    return lambda directory, agent, meta: algo.export_reward(cfg, jax.device_get(agent.disc.params), spec, normalizer,
                                                              directory, meta)


def _evaluate(exports: list, spec: EnvSpec, run: RunArgs, final: bool) -> list[dict]:
    """Acts through each seed's policy export itself, so eval.json agrees with `understudy eval` of best/ and final/."""
    policies = [Policy(head, params, spec, normalizer=norm) for head, params, norm in exports]
    return evaluate_seeds(lambda o: np.stack([policy(o[s]) for s, policy in enumerate(policies)]), run.env,
                          num_seeds=len(policies), episodes=eval_episodes(run, final), seed=run.seed + 10_000,
                          env_options={"obs_noise": run.obs_noise} if run.obs_noise else None)


@functools.lru_cache(maxsize=8)
def _disc_init_program(algo: ModuleType, cfg: Any, spec_json: str):
    spec = EnvSpec.from_json(spec_json)
    return jax.jit(lambda key: discriminator.init_state(algo.init_params(cfg, spec, key), cfg))


def _init_discriminators(algo: ModuleType, cfg: Any, spec: EnvSpec, seeds: list[int]) -> discriminator.DiscState:
    """One discriminator per seed (seed by seed, then stacked: one compiled init serves every seed count; the RL
    settings do not shape the discriminator, so runs that differ only in them share the compiled init)."""
    defaults = discriminator.AdversarialConfig()
    shape_cfg = dataclasses.replace(cfg, rl=defaults.rl, sac=defaults.sac, ppo=defaults.ppo)
    init = _disc_init_program(algo, shape_cfg, spec.to_json())
    return on_policy.stack([init(jax.random.fold_in(jax.random.PRNGKey(s), 2)) for s in seeds])


def _aggregate(interval_metrics: list[dict]) -> dict[str, float]:
    return mean_metrics({k: np.concatenate([np.ravel(m[k]) for m in interval_metrics]) for k in interval_metrics[0]})


# -- the entry point ----------------------------------------------------------------------------------------------
def train(algo_name: str, algo: ModuleType, cfg: Any, run: RunArgs, *, method: str | None = None,
          chunk: int = 50) -> dict:
    algo.check(cfg)
    if run.seeds < 1:
        raise UnderstudyError(f"--seeds must be at least 1 (got {run.seeds}).")
    ds, env_id = load_expert(cfg, run, algo_name)
    run = dataclasses.replace(run, env=env_id)
    method = method or algo.method_name(cfg)
    if cfg.rl == "sac":
        return _train_sac(algo_name, algo, cfg, run, ds, method, chunk)
    return _train_ppo(algo_name, algo, cfg, run, ds, method)


# ==================================================================================================================
# --rl sac
# ==================================================================================================================
def _sac_log_prob(scfg: sac_algo.Config, rl: sac_algo.State, obs: jax.Array, actions: jax.Array) -> jax.Array:
    actor = sac_algo.actor_network(scfg, rl.action_dim)
    actions = jnp.clip(actions, -SAC_LOG_PROB_ACTION_LIMIT, SAC_LOG_PROB_ACTION_LIMIT)
    return jax.lax.stop_gradient(actor.apply(rl.actor_params, obs, actions, method="log_prob"))


def scan_steps(step_fn, disc, key: jax.Array, n: int):
    """`n` discriminator steps `step_fn(disc, key)` in lax.scan; their metrics averaged. One step needs no loop
    (and compiles faster without one)."""
    if n == 1:
        return step_fn(disc, key)
    disc, metrics = jax.lax.scan(step_fn, disc, jax.random.split(key, n))
    return disc, jax.tree.map(jnp.mean, metrics)


def replay_sample_recent(buf, key: jax.Array, batch_size: int, recent: int | None) -> Batch:
    """`batch_size` transitions uniform over the newest `recent` ones in the ring buffer (None: all filled ones)."""
    if recent is None:
        return replay_sample(buf, key, batch_size)
    capacity = buf.rewards.shape[0]
    count = jnp.maximum(jnp.minimum(buf.size, recent), 1)
    idx = (buf.ptr - 1 - jax.random.randint(key, (batch_size,), 0, count)) % capacity
    return Batch(observations=buf.observations[idx], actions=buf.actions[idx], rewards=buf.rewards[idx],
                 terminations=buf.terminations[idx], next_observations=buf.next_observations[idx])


def sac_update(algo: ModuleType, cfg: Any, spec: EnvSpec, agent: Agent, buffer, expert: DeviceDataset,
               key: jax.Array, step: jax.Array) -> tuple[Agent, dict[str, jax.Array]]:
    """One seed's update: a discriminator round when `step` % disc_every == 0 (else only its metrics), then one
    SAC update on a replay batch whose rewards the (updated) discriminator computes. `step` is shared by seeds."""
    scfg, gamma = cfg.sac, discriminator.rl_gamma(cfg)
    rl = agent.rl.replace(step=step)
    rl_key, round_key = jax.random.split(key)
    n_updates = discriminator.disc_updates_per_round(cfg)

    def log_pi(obs, actions):
        return _sac_log_prob(scfg, rl, obs, actions) if algo.USES_LOG_PROB else jnp.zeros(obs.shape[:1])

    def batches(k):
        expert_key, policy_key, penalty_key = jax.random.split(k, 3)
        e = sample_transitions(expert, expert_key, cfg.disc_batch_size)
        p = replay_sample_recent(buffer, policy_key, cfg.disc_batch_size, cfg.disc_recent)
        return (disc_inputs(spec, e.observations, e.actions, e.next_observations, e.terminations),
                disc_inputs(spec, p.observations, p.actions, p.next_observations, p.terminations),
                log_pi(e.observations, e.actions), log_pi(p.observations, p.actions), penalty_key)

    def disc_round(disc):
        return scan_steps(lambda d, k: discriminator.step(algo, cfg, d, *batches(k)), disc, round_key, n_updates)

    def no_round(disc):
        return disc, discriminator.evaluate(algo, cfg, disc, *batches(round_key))

    if n_updates == 0:
        disc, disc_metrics = no_round(agent.disc)
    elif cfg.disc_every == 1:
        disc, disc_metrics = disc_round(agent.disc)
    else:
        disc, disc_metrics = jax.lax.cond(step % cfg.disc_every == 0, disc_round, no_round, agent.disc)
    batch = replay_sample(buffer, rl_key, scfg.batch_size)
    rewards = algo.policy_reward(cfg, disc.params, disc_inputs(spec, batch.observations, batch.actions,
                                                               batch.next_observations, batch.terminations),
                                 log_pi(batch.observations, batch.actions), gamma)
    rl, rl_metrics = sac_algo.update(scfg, rl, batch.replace(rewards=rewards))
    return Agent(rl=rl, disc=disc), {**rl_metrics, **disc_metrics, "disc_reward": jnp.mean(rewards)}


def _train_sac(algo_name: str, algo: ModuleType, cfg: Any, run: RunArgs, ds, method: str, chunk: int) -> dict:
    scfg, K = cfg.sac, run.seeds
    envs = [make_train_env(run, run.seed + s, record=s == 0) for s in range(K)]
    spec = env_spec(envs[0])
    expert, normalizer = expert_on_device(cfg, ds, spec)
    out = run.out or default_out(algo_name, run.env, run.seed)
    capacity = min(scfg.buffer_size, run.steps)
    saved_config = Path(out) / "config.json"
    if run.resume and saved_config.exists():
        capacity = json.loads(saved_config.read_text()).get("buffer_capacity", capacity)
    config = run_config(algo_name, method, run.env, run, cfg,
                        extra={"buffer_capacity": capacity, "expert_steps": int(ds.num_steps),
                               "expert_episodes": int(ds.num_episodes)})
    run_dir = prepare_run_dir(out, resume=run.resume, overwrite=run.overwrite, config=config, algo_cfg=cfg)
    envs[0] = attach_videos(envs[0], run, run_dir, next_video_episode(run_dir))
    chunk = math.gcd(chunk, run.eval_every)

    # -- agents, buffers and loop keys, each with a leading seed axis ----------------------------------------
    seeds = [run.seed + s for s in range(K)]
    rl = on_policy.stack([sac_algo.init(scfg, spec, jax.random.PRNGKey(s)) for s in seeds])
    agent = Agent(rl=rl, disc=_init_discriminators(algo, cfg, spec, seeds))
    buffer = _empty_buffers(K, capacity, tuple(spec.obs_shape), spec.action_dim)
    keys = on_policy.stack([jax.random.fold_in(jax.random.PRNGKey(s), 1) for s in seeds])
    agent, buffer = jax.tree.map(jnp.copy, (agent, buffer))  # donation needs every leaf in its own buffer
    start, resume_step, resume_meta = 0, None, None
    if run.resume:
        from understudy.checkpoint import TrainCheckpointer

        ck = TrainCheckpointer(run_dir / "checkpoints")
        start, tree, resume_meta = ck.restore_latest({"agent": agent, "buffer": buffer, "keys": keys})
        ck.close()
        # uncommitted copies, like fresh arrays, reuse the compiled programs
        agent, buffer, keys = jax.tree.map(lambda x: jnp.asarray(np.asarray(x)),
                                           (tree["agent"], tree["buffer"], tree["keys"]))
        resume_step = start

    def export_fn(ag):
        return sac_algo.policy_export(scfg, ag.rl)

    recorder = _Recorder(run_dir, run, config=config, spec=spec, export_fn=export_fn, normalizer=normalizer,
                         resume_step=resume_step, resume_meta=resume_meta,
                         reward_export=_reward_export(algo, cfg, spec, normalizer))
    if start >= run.steps:
        recorder.progress.print(f"{run_dir} already reached step {start} (asked for {run.steps}); nothing to do.")

    programs = _sac_programs(algo, cfg, spec.to_json(), K)
    norm = None if normalizer is None else {k: jnp.asarray(v) for k, v in normalizer.items()}

    def evaluate(agent, final: bool):
        return _evaluate([(*sac_algo.policy_export(scfg, seed_slice(agent.rl, s)), normalizer) for s in range(K)],
                         spec, run, final)

    def updates_due(env_step: int) -> int:
        return int(max(0, env_step - scfg.learning_starts) * scfg.updates_per_step)

    # -- the loop -------------------------------------------------------------------------------------------------
    obs = np.stack([e.reset(seed=run.seed + s + 7919 * start)[0] for s, e in enumerate(envs)]).astype(np.float32)
    ep_return, finished_returns, interval_metrics = np.zeros(K), [], []
    checkpoint_every = max(run.eval_every, (run.checkpoint_every or run.eval_every) // run.eval_every * run.eval_every)
    step, last_row, summary = start, None, None
    for mark in eval_steps(run.steps, run.eval_every, start):
        while step < mark:
            n = min(chunk, mark - step)
            cols = {k: [] for k in TRANSITION_KEYS}
            for _ in range(n):
                action, keys = programs.act_all(agent, obs, keys, norm,
                                                explore_randomly=step < scfg.learning_starts)
                obs, rewards, ended = step_envs(envs, obs, np.asarray(action), spec, cols)
                ep_return += rewards
                finished_returns.extend(ep_return[ended])
                ep_return[ended] = 0.0
                step += 1
            updates = updates_due(step) - updates_due(step - n)
            agent, buffer, keys, metrics = programs.add_and_update(agent, buffer, keys, expert, norm,
                                                                   stack_transitions(cols, n, K), num_updates=updates)
            if metrics:
                interval_metrics.append(jax.device_get(metrics))
            recorder.progress.update(step, "" if last_row is None else f"eval return {last_row['eval/return']:.1f}")

        results = evaluate(agent, final=step == run.steps)
        train_metrics = _aggregate(interval_metrics) if interval_metrics else {}
        if finished_returns:
            train_metrics["train/episode_return"] = float(np.mean(finished_returns))  # the env's reward
        interval_metrics, finished_returns = [], []
        last_row = recorder.record_eval(step, agent, results, train_metrics)
        recorder.maybe_snapshot(step, agent, results)
        if step % checkpoint_every == 0 or step == run.steps:
            recorder.checkpoint(step, {"agent": agent, "buffer": buffer, "keys": keys})
        if step == run.steps:
            summary = recorder.finish(step, agent, results)
    recorder.close()
    for e in envs:
        e.close()
    if summary is None:
        return json.loads((run_dir / "eval.json").read_text())
    return summary


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _empty_buffers(K: int, capacity: int, obs_shape: tuple, action_dim: int):
    return jax.vmap(lambda _: replay_init(capacity, obs_shape, (action_dim,)))(jnp.arange(K))


@functools.lru_cache(maxsize=8)
def _sac_programs(algo: ModuleType, cfg: Any, spec_json: str, K: int) -> SimpleNamespace:
    """The SAC variant's jitted functions for K seeds, cached so a resumed or repeated run in one process compiles
    once. `norm` (the expert normalizer {mean, std}, or None) is an argument, not a constant."""
    spec, scfg = EnvSpec.from_json(spec_json), cfg.sac

    @functools.partial(jax.jit, static_argnames="explore_randomly")
    def act_all(agent, obs, keys, norm, explore_randomly):
        keys, sub = jax.vmap(jax.random.split, out_axes=1)(keys)
        if explore_randomly:
            action = jax.vmap(lambda k: jax.random.uniform(k, (spec.action_dim,), minval=-1.0, maxval=1.0))(sub)
        else:
            obs = normalize(obs, norm)
            action = jax.vmap(lambda st, o, k: sac_algo.act(scfg, st, o[None], k, False)[0])(agent.rl, obs, sub)
        return action, keys

    update = jax.vmap(functools.partial(sac_update, algo, cfg, spec), in_axes=(0, 0, None, 0, None))

    @functools.partial(jax.jit, static_argnames="num_updates", donate_argnames=("agent", "buffer"))
    def add_and_update(agent, buffer, keys, expert, norm, transitions, num_updates):
        obs, action, reward, term, next_obs = transitions
        buffer = jax.vmap(replay_add)(buffer, normalize(obs, norm), action, reward, term, normalize(next_obs, norm))
        if num_updates == 0:
            return agent, buffer, keys, {}

        def one_update(carry, _):
            agent, keys = carry
            keys, sub = jax.vmap(jax.random.split, out_axes=1)(keys)
            agent, metrics = update(agent, buffer, expert, sub, agent.rl.step[0])
            return (agent, keys), metrics

        (agent, keys), metrics = jax.lax.scan(one_update, (agent, keys), None, length=num_updates)
        return agent, buffer, keys, metrics

    return SimpleNamespace(act_all=act_all, add_and_update=add_and_update)


# ==================================================================================================================
# --rl ppo
# ==================================================================================================================
def _ppo_log_prob(pcfg: ppo_algo.Config, rl: ppo_algo.State, obs: jax.Array, actions: jax.Array) -> jax.Array:
    # PPO's own pieces: the observations as its networks see them, its policy head, its density
    x = ppo_algo._training_obs(pcfg, rl.obs_stats, obs)
    dist = ppo_algo._actor(pcfg, rl.action_dim, rl.discrete).apply(rl.actor_params, x)
    return jax.lax.stop_gradient(ppo_algo._log_prob(dist, actions, rl.discrete))


def ppo_discriminator_round(algo: ModuleType, cfg: Any, spec: EnvSpec, agent: Agent, expert: DeviceDataset,
                            obs: jax.Array, actions: jax.Array, sampled_actions: jax.Array, final_obs: jax.Array,
                            terminations: jax.Array, valid: jax.Array, key: jax.Array):
    """One seed, one rollout [T, N]: --disc-updates discriminator steps (policy rows drawn uniformly from the valid
    rows, expert rows from the dataset), then the rollout's rewards [T, N] from the updated discriminator.

    obs: standardized observations [T, N, *obs]; actions: the executed (clipped) actions, which the discriminator
    sees; sampled_actions: the policy's own draws before clipping, whose log pi AIRL's logit takes (the density of a
    clipped action is that of a draw far past the box edge: a policy whose mean left the box would be paid a large
    -log pi for acting bang-bang, a Hopper AIRL run learned exactly that and collapsed); final_obs [N, *obs]:
    the observation after the last step. With gymnasium's next-step autoreset the observation after row t is
    row t + 1's (a done row's is its episode's final observation); autoreset rows (valid 0) are never sampled.
    """
    pcfg, gamma = cfg.ppo, discriminator.rl_gamma(cfg)
    T, N = valid.shape
    next_obs = jnp.concatenate([obs[1:], final_obs[None]], axis=0)

    def flat(x):
        return x.reshape(T * N, *x.shape[2:])

    rollout = disc_inputs(spec, flat(obs), flat(actions), flat(next_obs), flat(terminations))

    def log_pi(o, a):
        return _ppo_log_prob(pcfg, agent.rl, o, a) if algo.USES_LOG_PROB else jnp.zeros(o.shape[:1])

    rollout_log_pi = log_pi(flat(obs), flat(sampled_actions))
    weights = flat(valid) / jnp.maximum(jnp.sum(valid), 1.0)

    def batches(k):
        expert_key, policy_key, penalty_key = jax.random.split(k, 3)
        e = sample_transitions(expert, expert_key, cfg.disc_batch_size)
        rows = jax.random.choice(policy_key, T * N, (cfg.disc_batch_size,), p=weights)
        return (disc_inputs(spec, e.observations, e.actions, e.next_observations, e.terminations),
                jax.tree.map(lambda x: x[rows], rollout), log_pi(e.observations, e.actions), rollout_log_pi[rows],
                penalty_key)

    n_updates = discriminator.disc_updates_per_round(cfg)
    if n_updates == 0:
        disc, metrics = agent.disc, discriminator.evaluate(algo, cfg, agent.disc, *batches(key))
    else:
        disc, metrics = scan_steps(lambda d, k: discriminator.step(algo, cfg, d, *batches(k)), agent.disc, key,
                                   n_updates)
    rewards = algo.policy_reward(cfg, disc.params, rollout, rollout_log_pi, gamma)
    metrics["disc_reward"] = jnp.sum(rewards * flat(valid)) / jnp.maximum(jnp.sum(valid), 1.0)
    return agent.replace(disc=disc), rewards.reshape(T, N), metrics


@functools.lru_cache(maxsize=8)
def _ppo_disc_program(algo: ModuleType, cfg: Any, spec_json: str):
    """ppo_discriminator_round vmapped over seeds and jitted (cached, like on_policy.compiled_programs)."""
    round_ = functools.partial(ppo_discriminator_round, algo, cfg, EnvSpec.from_json(spec_json))
    return jax.jit(jax.vmap(round_, in_axes=(0, None, 0, 0, 0, 0, 0, 0, 0)))


@jax.jit
def _split_keys(keys):
    return jax.vmap(jax.random.split, out_axes=1)(keys)


def _train_ppo(algo_name: str, algo: ModuleType, cfg: Any, run: RunArgs, ds, method: str) -> dict:
    pcfg, K = cfg.ppo, run.seeds
    N, T = pcfg.num_envs, pcfg.num_steps
    if N < 1 or T < 1:
        raise UnderstudyError(f"--ppo.num-envs and --ppo.num-steps must be at least 1 (got {N} and {T}).")
    envs = make_train_vector(run, K * N, seed=run.seed * N)  # sub-env j of seed s: env seed (run.seed + s) * N + j
    spec = env_spec(envs.envs[0])
    expert, normalizer = expert_on_device(cfg, ds, spec)
    out = run.out or default_out(algo_name, run.env, run.seed)
    plan = on_policy.schedule(run, T * N)
    config = run_config(algo_name, method, run.env, run, cfg,
                        extra={"schedule": plan, "expert_steps": int(ds.num_steps),
                               "expert_episodes": int(ds.num_episodes)})
    run_dir = prepare_run_dir(out, resume=run.resume, overwrite=run.overwrite, config=config, algo_cfg=cfg)
    envs.envs[0] = attach_videos(envs.envs[0], run, run_dir, next_video_episode(run_dir))
    total, every = plan["total"], plan["eval_every"]
    recorder_run = dataclasses.replace(run, steps=total, eval_every=every, snapshot_every=plan["snapshot_every"])

    seeds = [run.seed + s for s in range(K)]
    rl = on_policy.stack([ppo_algo.init(pcfg, spec, jax.random.PRNGKey(s)) for s in seeds])
    agent = Agent(rl=rl, disc=_init_discriminators(algo, cfg, spec, seeds))
    keys = on_policy.stack([jax.random.fold_in(jax.random.PRNGKey(s), 1) for s in seeds])
    start, resume_step, resume_meta = 0, None, None
    if run.resume:
        from understudy.checkpoint import TrainCheckpointer

        ck = TrainCheckpointer(run_dir / "checkpoints")
        start, tree, resume_meta = ck.restore_latest({"agent": agent, "keys": keys})
        ck.close()
        agent, keys = jax.tree.map(lambda x: jnp.asarray(np.asarray(x)), (tree["agent"], tree["keys"]))
        resume_step = start
        # the envs restart from a reset, so the running discounted returns of their old episodes are void
        agent = agent.replace(rl=agent.rl.replace(discounted_return=jnp.zeros_like(agent.rl.discounted_return)))

    def export_fn(ag):
        head, params, inner = ppo_algo.policy_export(pcfg, ag.rl)
        return head, params, compose_normalizers(normalizer, inner)

    recorder = _Recorder(run_dir, recorder_run, config=config, spec=spec, export_fn=export_fn, normalizer=normalizer,
                         resume_step=resume_step, resume_meta=resume_meta,
                         reward_export=_reward_export(algo, cfg, spec, normalizer))
    if start >= total:
        recorder.progress.print(f"{run_dir} already reached step {start} (asked for {total}); nothing to do.")

    programs = on_policy.compiled_programs(ppo_algo, pcfg, spec.to_json(), K)  # rollout steps and PPO's update
    disc_round = _ppo_disc_program(algo, cfg, spec.to_json())

    def evaluate(agent, final: bool):
        return _evaluate([export_fn(seed_slice(agent, s)) for s in range(K)], spec, run, final)

    def lr_scale(step: int) -> float:
        return 1.0 - step / total if pcfg.anneal_lr else 1.0

    # -- the loop -----------------------------------------------------------------------------------------------
    obs_shape = spec.obs_shape
    action_shape = () if spec.discrete else (spec.action_dim,)
    rows = np.zeros((T, K, N, programs.row_width), np.float32)
    env_columns = np.zeros((4, T, K, N), np.float32)  # rewards (replaced), terminations, truncations, valid
    seen_obs = np.zeros((T, K, N, *obs_shape), np.float32)  # standardized, as the discriminator sees them
    # the policy's draws before clipping (AIRL's log pi is their density); the discriminator sees them clipped
    sampled = np.zeros((T, K, N, *action_shape), np.int32 if spec.discrete else np.float32)
    raw_obs, _ = envs.reset(seed=run.seed * N + 7919 * start)
    resetting = np.zeros(K * N, bool)
    ep_return = np.zeros(K * N)
    finished_returns: list[float] = []
    interval_metrics: list[dict] = []
    busy_s, step, interval_start, last_row, summary = 0.0, start, start, None, None

    def standardized(o):
        return np.asarray(normalize(np.asarray(o, np.float32), normalizer), np.float32).reshape(K, N, *obs_shape)

    for mark in eval_steps(total, every, start):
        while step < mark:
            t0 = time.time()
            acting = programs.acting_of(agent.rl)
            for t in range(T):
                seen_obs[t] = standardized(raw_obs)
                acting, rows_t, action, keys = programs.explore(acting, jnp.asarray(seen_obs[t]), keys)
                rows[t] = rows_t
                sampled[t] = np.asarray(action).reshape(K, N, *action_shape)
                action = ppo_algo.env_action(np.asarray(action).reshape(K * N, *action_shape), spec.discrete)
                raw_obs, reward, terminated, truncated, _ = envs.step(to_env_action(action, spec))
                valid = ~resetting
                env_columns[:, t] = np.stack([reward, terminated, truncated, valid]).reshape(4, K, N)
                ep_return[valid] += reward[valid]
                for i in np.flatnonzero(valid & (terminated | truncated)):
                    finished_returns.append(float(ep_return[i]))
                    ep_return[i] = 0.0
                resetting = terminated | truncated
            final_obs = jnp.asarray(standardized(raw_obs))
            columns = jnp.asarray(env_columns.swapaxes(1, 2))  # [4, K, T, N]
            keys, disc_keys = _split_keys(keys)
            executed = ppo_algo.env_action(sampled, spec.discrete)  # what the envs were sent
            agent, rewards, disc_metrics = disc_round(agent, expert, jnp.asarray(seen_obs.swapaxes(0, 1)),
                                                      jnp.asarray(executed.swapaxes(0, 1)),
                                                      jnp.asarray(sampled.swapaxes(0, 1)), final_obs, columns[1],
                                                      columns[3], disc_keys)
            rl, metrics = programs.update(agent.rl, acting, jnp.asarray(rows.swapaxes(0, 1)),
                                          columns.at[0].set(rewards), final_obs, jnp.float32(lr_scale(step)))
            agent = agent.replace(rl=rl)
            interval_metrics.append(jax.device_get({**metrics, **disc_metrics}))
            step += T * N
            busy_s += time.time() - t0
            recorder.progress.update(step, "" if last_row is None else f"eval return {last_row['eval/return']:.1f}")

        results = evaluate(agent, final=step == total)
        train_metrics = _aggregate(interval_metrics)
        if finished_returns:
            train_metrics["train/episode_return"] = float(np.mean(finished_returns))  # the env's reward
        train_metrics["train/steps_per_s"] = (step - interval_start) * K / max(busy_s, 1e-9)
        interval_metrics, finished_returns, busy_s, interval_start = [], [], 0.0, step
        last_row = recorder.record_eval(step, agent, results, train_metrics)
        recorder.maybe_snapshot(step, agent, results)
        if step % plan["checkpoint_every"] == 0 or step == total:
            recorder.checkpoint(step, {"agent": agent, "keys": keys})
        if step == total:
            summary = recorder.finish(step, agent, results)
    recorder.close()
    envs.close()
    if summary is None:
        return json.loads((run_dir / "eval.json").read_text())
    return summary
