"""What every training loop shares: the common flags, the run directory, evaluation bookkeeping and exports."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Literal, Optional

import jax
import numpy as np

from understudy.checkpoint import TrainCheckpointer, export_policy
from understudy.logging import MetricsLogger, Progress
from understudy.train import run_lock
from understudy.types import EnvSpec, UnderstudyError


@dataclasses.dataclass(frozen=True)
class RunArgs:
    """Flags shared by every `understudy train ALGO` command."""

    env: Optional[str] = None
    """Environment id (e.g. Pendulum-v1, HalfCheetah-v5, walker-walk). Offline algorithms take it from the dataset when omitted."""
    dataset: Optional[str] = None
    """Dataset path (Minari directory or D4RL-style HDF5 file), for offline algorithms."""
    steps: int = 100_000
    """Environment steps per seed (online algorithms) or gradient updates (offline algorithms)."""
    seeds: int = 1
    """Number of seeds trained side by side in one process (vmapped)."""
    seed: int = 0
    """Base seed; seed i of the run uses seed + i (so a 4-seed run matches four 1-seed runs)."""
    out: Optional[str] = None
    """Run directory (default runs/<algo>-<env>-s<seed>)."""
    resume: bool = False
    """Continue a killed run from its last checkpoint in --out."""
    overwrite: bool = False
    """Replace an existing run directory. Without it an existing run is never overwritten."""
    eval_every: int = 5_000
    """Evaluate (and log a metrics.csv row, and checkpoint) every N steps."""
    eval_episodes: int = 10
    """Episodes per seed at each evaluation."""
    final_eval_episodes: Optional[int] = None
    """Episodes per seed (instruct: per task) at the last evaluation (the final/ scores in eval.json), e.g. 100 for published numbers while the curve uses fewer; default --eval-episodes."""
    checkpoint_every: Optional[int] = None
    """Checkpoint every N steps (default: at every evaluation). Rounded to a multiple of --eval-every."""
    snapshot_every: Optional[int] = None
    """Also keep a policy export every N steps in snapshots/step_N/ (e.g. for medium-quality datasets). Rounded to a multiple of --eval-every."""
    snapshot_replay: bool = False
    """With --snapshot-every (off-policy algorithms): also save the replay buffer's transitions at each snapshot, as snapshots/step_N/replay.safetensors (for medium-replay datasets)."""
    obs_noise: float = 0.0
    """Std of Gaussian noise added to observations during evaluation rollouts (robustness checks)."""
    obs_noise_augment: float = 0.0
    """Offline training (bc, td3bc, iql, cql, dt): std of Gaussian noise added on device to every sampled batch's observations (and next observations), in raw observation units like --obs-noise (divided by the normalizer's std when the run standardizes); task-bit features stay exact. 0 = off (understudy.train.augment)."""
    obs_noise_augment_units: Literal["raw", "std"] = "raw"
    """Units of --obs-noise-augment: 'raw' (observation units, as --obs-noise) or 'std' (a fraction of each feature's standard deviation in the dataset, so every feature is perturbed alike)."""
    reward_text: Optional[str] = None
    """Train on a language reward instead of the environment's: the --reward-model's score of the trajectory so far against this sentence (the environment's reward is never seen; evaluation still reports the environment's return and success)."""
    reward_model: Optional[str] = None
    """Reward model directory (from `understudy language train-reward`), used with --reward-text; or alone, an AIRL reward export (an AIRL run's final/seedN, with reward.json) whose learned reward g(s) replaces the environment's."""
    reward_scale: float = 1.0
    """Multiplies the language reward (note 000's scale-up factor)."""
    reward_min: Optional[float] = None
    """Clip the language reward from below."""
    reward_max: Optional[float] = None
    """Clip the language reward from above."""
    reward_mode: Literal["score", "difference"] = "score"
    """'score' (note 000): reward = the score of the trajectory so far, at every step, so the episode's length matters as it does for the sentence (e.g. a low score until the top is reached pays to get there fast); 'difference': reward = the change of the score, so an episode's rewards sum to its whole trajectory's score."""
    video_every: Optional[int] = None
    """Record every N-th training episode (of the first seed's env) to <out>/videos/episode_<k>.mp4."""
    tensorboard: bool = True
    """Write TensorBoard events beside metrics.csv."""
    wandb_project: Optional[str] = None
    """Also log to this Weights & Biases project (needs `pip install 'understudy[wandb]'`)."""
    progress: bool = True
    """Show a progress bar on the console."""


def learned_reward_export(run: RunArgs) -> Optional[str]:
    """--reward-model without --reward-text naming an AIRL reward export (reward.json): the reward to train on."""
    if run.reward_text is not None or run.reward_model is None:
        return None
    from understudy.algos.airl import is_reward_export

    return run.reward_model if is_reward_export(run.reward_model) else None


def language_reward_config(run: RunArgs):
    """The language reward settings of a run, or None when it trains on the environment's (or an AIRL) reward."""
    if (run.reward_text is None and run.reward_model is None) or learned_reward_export(run):
        return None
    if run.reward_text is None or run.reward_model is None:
        raise UnderstudyError("A language reward needs both --reward-text SENTENCE and --reward-model PATH (a model "
                              "from `understudy language train-reward`); --reward-model alone must be an AIRL reward "
                              f"export (a directory with reward.json, e.g. an AIRL run's final/seed0), which "
                              f"{run.reward_model} is not.")
    from understudy.language.env_reward import LanguageRewardConfig

    return LanguageRewardConfig(text=run.reward_text, model=run.reward_model, scale=run.reward_scale,
                                reward_min=run.reward_min, reward_max=run.reward_max, mode=run.reward_mode)


def make_train_env(run: RunArgs, seed: int, *, record: bool = False):
    """The env a training loop steps: make(run.env), with the language reward in place of the env's reward when
    --reward-text is given, or an AIRL run's learned reward when --reward-model alone names one. `record` makes it renderable for --video-every (see attach_videos)."""
    from understudy.envs import make

    language = language_reward_config(run)  # checked before the env is built
    learned = learned_reward_export(run)
    env = make(run.env, seed=seed, render_mode="rgb_array" if record and run.video_every else None)
    if learned is not None:
        from understudy.algos.airl import AIRLRewardWrapper

        try:
            env = AIRLRewardWrapper(env, learned)
        except Exception:
            env.close()
            raise
    if language is not None:
        from understudy.language.env_reward import LanguageReward

        try:
            env = LanguageReward(env, language)
        except Exception:
            env.close()
            raise
    return env


def attach_videos(env, run: RunArgs, run_dir: Path, first_episode: int = 1):
    """Wraps a training env made with record=True so every --video-every episodes go to run_dir/videos/."""
    if not run.video_every:
        return env
    from understudy.envs.video import EpisodeVideos

    return EpisodeVideos(env, run_dir / "videos", run.video_every, first_episode=first_episode)


def make_train_vector(run: RunArgs, num_envs: int, *, seed: int):
    """make_train_env copies in a SyncVectorEnv (sub-env i gets seed + i; sub-env 0 can record videos)."""
    import gymnasium as gym

    language_reward_config(run)  # a missing flag fails here, before any env is built
    return gym.vector.SyncVectorEnv([lambda i=i: make_train_env(run, seed + i, record=i == 0)
                                     for i in range(num_envs)])


def next_video_episode(run_dir: Path) -> int:
    """Episode number for the next training video: after the last one written (a resumed run never overwrites)."""
    numbers = [int(p.stem.split("_")[-1]) for p in (run_dir / "videos").glob("episode_*.mp4")
               if p.stem.split("_")[-1].isdigit()]
    return max(numbers, default=0) + 1


def default_out(algo: str, env_id: str, seed: int) -> str:
    return str(Path("runs") / f"{algo}-{env_id.replace('/', '_')}-s{seed}")


def prepare_run_dir(out: str, *, resume: bool, overwrite: bool, config: dict, algo_cfg: Any = None) -> Path:
    """Creates the run directory, refusing to overwrite an existing run unless asked, and locks it for this process
    (`run_lock`: a second process resuming or overwriting it gets an error instead of corrupting it).

    algo_cfg (the run's algorithm config) lets a run saved by an older understudy resume: a config field added
    since then is missing from its config.json and is taken to have had its default."""
    run_dir = Path(out)
    final_episodes = (config.get("run") or {}).get("final_eval_episodes")
    if final_episodes is not None and final_episodes < 1:
        raise UnderstudyError(f"--final-eval-episodes must be at least 1 (got {final_episodes}); leave it out to use "
                              "--eval-episodes.")
    if resume and overwrite:
        raise UnderstudyError("--resume and --overwrite contradict each other: --resume continues the run in --out, "
                              "--overwrite deletes it. Pass one of them.")
    if resume:
        if not (run_dir / "config.json").exists():
            raise UnderstudyError(f"Cannot resume: {run_dir} holds no run (no config.json). Start it without --resume.")
        saved = json.loads((run_dir / "config.json").read_text())
        differences = _config_differences(saved, config, _config_defaults(algo_cfg))
        if differences:
            raise UnderstudyError(f"Cannot resume {run_dir}: its config differs from these flags in {', '.join(differences)}. "
                                  "Resume with the same flags (only --steps may change), or start a new run.")
        run_lock.acquire(run_dir)
        (run_dir / "config.json").write_text(json.dumps(config, indent=2))  # records a changed --steps
        return run_dir
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise UnderstudyError(f"Run directory {run_dir} already exists. Pass --resume to continue it, --overwrite "
                                  "to replace it, or choose another --out.")
        run_lock.acquire(run_dir)  # never delete a run that another process is still writing
        shutil.rmtree(run_dir)
        run_lock.release(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    run_lock.acquire(run_dir)
    (run_dir / "config.json").write_text(json.dumps(config, indent=2))
    return run_dir


def _config_defaults(algo_cfg: Any) -> dict:
    """The defaults of algo_cfg's dataclass, as run_config records them ({} when it has required fields)."""
    if algo_cfg is None or not dataclasses.is_dataclass(algo_cfg):
        return {}
    try:
        return _jsonable(dataclasses.asdict(type(algo_cfg)()))
    except TypeError:
        return {}


def _fill_missing(saved: Any, defaults: Any) -> Any:
    """saved with the keys that only defaults has added, at every level of nesting."""
    if not isinstance(saved, dict) or not isinstance(defaults, dict):
        return saved
    filled = {k: _fill_missing(v, defaults.get(k)) for k, v in saved.items()}
    return {**{k: v for k, v in defaults.items() if k not in saved}, **filled}


def _config_differences(saved: dict, new: dict, config_defaults: dict | None = None) -> list[str]:
    # a run may move, stop later, or end with a longer final evaluation
    ignore = {"steps", "out", "resume", "overwrite", "progress", "wandb_project", "tensorboard", "final_eval_episodes"}
    # A run flag that a newer understudy added is absent from an older run's config; left at its default it
    # changes nothing, so such a run still resumes.
    run_defaults = {f.name: f.default for f in dataclasses.fields(RunArgs) if f.default is not dataclasses.MISSING}
    # Without a language reward the reward-shaping flags are unused, whatever an older version recorded for them.
    uses_language_reward = any(saved.get("run", {}).get(k) or new.get("run", {}).get(k)
                               for k in ("reward_text", "reward_model"))
    diffs = []
    for section in ("config", "run"):
        a, b = saved.get(section, {}), new.get(section, {})
        if section == "config" and config_defaults:
            a = _fill_missing(a, config_defaults)
        for k in sorted(set(a) | set(b)):
            if section == "run" and k not in a and k in run_defaults and b.get(k) == run_defaults[k]:
                continue
            if section == "run" and k.startswith("reward_") and not uses_language_reward:
                continue
            if k not in ignore and a.get(k) != b.get(k):
                diffs.append(f"{section}.{k} ({a.get(k)!r} -> {b.get(k)!r})")
    for k in ("algo", "env_id"):
        if saved.get(k) != new.get(k):
            diffs.append(f"{k} ({saved.get(k)!r} -> {new.get(k)!r})")
    return diffs


def seed_slice(tree: Any, s: int) -> Any:
    return jax.tree.map(lambda x: x[s], tree)


def run_config(algo: str, method: str, env_id: str, run: RunArgs, algo_cfg: Any, extra: dict | None = None) -> dict:
    return {"command": "train", "algo": algo, "method": method, "env_id": env_id, "dataset": run.dataset,
            "seeds": run.seeds, "steps": run.steps, "run": dataclasses.asdict(run),
            "config": _jsonable(dataclasses.asdict(algo_cfg)), **(extra or {})}


def _jsonable(d):
    return json.loads(json.dumps(d, default=lambda x: list(x) if isinstance(x, tuple) else str(x)))


class RunRecorder:
    """Evaluation bookkeeping for a run of K seeds: metrics rows, best/final exports, checkpoints, eval.json."""

    def __init__(self, run_dir: Path, run: RunArgs, *, config: dict, spec: EnvSpec, export_fn: Callable,
                 normalizer: dict | None = None, reference: dict | None = None, resume_step: int | None = None,
                 resume_meta: dict | None = None):
        self.run_dir, self.run, self.spec, self.config = run_dir, run, spec, config
        # (state of one seed) -> (head_config, actor params), or (head_config, params, normalizer) for algorithms
        # that learn their observation normalizer (PPO); a returned normalizer replaces `normalizer` for that seed
        self.export_fn = export_fn
        self.normalizer, self.reference = normalizer, reference
        self.logger = MetricsLogger(run_dir, resume_step=resume_step, tensorboard=run.tensorboard,
                                    wandb_project=run.wandb_project, config=config)
        self.checkpointer = TrainCheckpointer(run_dir / "checkpoints")
        meta = resume_meta or {}
        self.best = meta.get("best") or [None] * run.seeds  # per seed: {"step", "mean", "result"}
        self.elapsed_before = float(meta.get("time_s", 0.0))
        self.started = time.time()
        self.progress = Progress(run.steps, f"{config['method']} {config['env_id']}", start=resume_step or 0,
                                 enabled=run.progress)

    def time_s(self) -> float:
        return self.elapsed_before + time.time() - self.started

    def export_dir(self, kind: str, s: int) -> Path:
        return self.run_dir / kind if self.run.seeds == 1 else self.run_dir / kind / f"seed{s}"

    def export(self, kind: str, state: Any, s: int, step: int, eval_mean: float | None) -> None:
        exported = self.export_fn(seed_slice(state, s))
        head_config, params = exported[:2]
        normalizer = exported[2] if len(exported) > 2 else self.normalizer
        export_policy(self.export_dir(kind, s), head_config=head_config, params=params, spec=self.spec,
                      normalizer=normalizer,
                      metadata={"algo": self.config["algo"], "method": self.config["method"], "step": step,
                                "seed": self.run.seed + s, "eval_return": eval_mean, "run_dir": str(self.run_dir)})

    def record_eval(self, step: int, state: Any, results: list[dict], train_metrics: dict[str, float]) -> dict:
        """Logs a metrics row and updates best/ exports from per-seed evaluation results."""
        row = {"time_s": round(self.time_s(), 2), **train_metrics}
        means = [r["mean"] for r in results]
        row["eval/return"] = float(np.mean(means))
        row["eval/return_std"] = float(np.mean([r["std"] for r in results]))
        if results[0]["success_rate"] is not None:
            row["eval/success_rate"] = float(np.mean([r["success_rate"] for r in results]))
        for s, m in enumerate(means):
            row[f"eval/return/seed{s}"] = m
        self.logger.log(step, row)
        for s, r in enumerate(results):
            if self.best[s] is None or r["mean"] > self.best[s]["mean"]:
                self.best[s] = {"step": step, "mean": r["mean"], "result": r}
                self.export("best", state, s, step, r["mean"])
        headline = f"eval return {row['eval/return']:.1f}"
        self.progress.update(step, headline)
        return row

    def maybe_snapshot(self, step: int, state: Any, results: list[dict]) -> None:
        """Keeps a policy export in snapshots/step_<step>/ every --snapshot-every steps."""
        every = self.run.snapshot_every
        if not every:
            return
        every = max(self.run.eval_every, every // self.run.eval_every * self.run.eval_every)
        if step % every == 0:
            for s, r in enumerate(results):
                self.export(f"snapshots/step_{step}", state, s, step, r["mean"])

    def checkpoint(self, step: int, tree: Any, extra_meta: dict | None = None) -> None:
        meta = {"step": step, "best": self.best, "time_s": self.time_s(), **(extra_meta or {})}
        self.checkpointer.save(step, tree, json.loads(json.dumps(meta)))

    def finish(self, step: int, state: Any, results: list[dict], extra: dict | None = None) -> dict:
        """Writes final/ exports and eval.json (final and best results per seed, plus `extra`'s entries)."""
        for s, r in enumerate(results):
            self.export("final", state, s, step, r["mean"])
        summary = {"method": self.config["method"], "algo": self.config["algo"], "env_id": self.config["env_id"],
                   "step": step, "reference": self.reference, "time_s": round(self.time_s(), 2),
                   "final": {"seeds": [{"seed": self.run.seed + s, **r} for s, r in enumerate(results)]},
                   "best": {"seeds": [{"seed": self.run.seed + s, "step": b["step"], **b["result"]}
                                      for s, b in enumerate(self.best) if b is not None]}, **(extra or {})}
        (self.run_dir / "eval.json").write_text(json.dumps(summary, indent=2))
        return summary

    def close(self) -> None:
        self.progress.close()
        self.logger.close()
        self.checkpointer.close()
        run_lock.release(self.run_dir)  # a finished run may be resumed by another process at once


def vmapped_update(algo, cfg):
    """`algo.update` vmapped over seeds, with the update counter `state.step` kept unbatched.

    Every seed of a run has done the same number of updates, so the counter is shared; keeping it out of the
    vmap lets step-dependent branches (e.g. TD3's delayed actor update via lax.cond) stay real branches
    instead of turning into selects that compute both sides.
    """
    def update(state, batch):
        return jax.vmap(lambda st, b, step: algo.update(cfg, st.replace(step=step), b),
                        in_axes=(0, 0, None))(state, batch, state.step[0])

    return update


def acting_view(algo, state):
    """`state` with only the fields `algo.act` reads (the module's ACT_READS) and the others set to None.

    A loop acts once per env step, and a jitted call's dispatch cost grows with the arrays passed to it: on CPU,
    passing the whole SAC or TD3 state (critics, targets, optimizer moments: 50-odd arrays) costs about 20 µs
    per call more than passing the actor alone, ~1% of a HalfCheetah step. A module without ACT_READS gets
    its whole state back. Build the view again after every update: updates donate the state's buffers.
    """
    reads = getattr(algo, "ACT_READS", None)
    if reads is None:
        return state
    return state.replace(**{f.name: None for f in dataclasses.fields(state)
                            if f.metadata.get("pytree_node", True) and f.name not in reads})


def eval_episodes(run: RunArgs, final: bool) -> int:
    """Episodes per seed for an evaluation: --final-eval-episodes at the run's last one when given."""
    return run.final_eval_episodes if final and run.final_eval_episodes else run.eval_episodes


def eval_steps(total: int, every: int, start: int = 0) -> list[int]:
    """The steps at which a run of `total` steps evaluates: multiples of `every`, and the last step."""
    marks = list(range(every, total, every)) + [total]
    return [m for m in marks if m > start]


# Metrics that TD3-style delayed updates produce only on actor steps; the `actor_step` metric (1 or 0 per
# update) marks those, and the other updates report 0 for them (algos/td3.py, delayed_actor_update).
ACTOR_STEP_METRICS = ("actor_loss", "lambda", "bc_mse")


def mean_metrics(metrics: dict) -> dict[str, float]:
    """Averages device metrics over every axis (updates, seeds) and prefixes them with train/. Where an
    `actor_step` metric is present, ACTOR_STEP_METRICS are averaged over the actor steps alone."""
    means = {f"train/{k}": float(np.mean(np.asarray(v))) for k, v in metrics.items()}
    weights = np.asarray(metrics.get("actor_step", 0.0), np.float64)
    if weights.sum() > 0:
        for k in ACTOR_STEP_METRICS:
            if k in metrics:
                means[f"train/{k}"] = float(np.sum(np.asarray(metrics[k]) * weights) / weights.sum())
    return means
