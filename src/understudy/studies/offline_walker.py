"""`understudy study offline-walker`: offline RL on dm_control walker walk / run / walk+run, with and without the
task bit, several dataset recipes, and robustness to observation noise (issue 5; note 002's experiments).

1. data       per task env (walker-walk, walker-run) and recipe, <data>/<walk|run>-<recipe> made with the D4RL
              recipes from the expert in <experts-dir>/<ENV_ID> (its medium/ snapshot and replay buffer for the
              medium recipes); then the variants trained on: <task>-<recipe>[-bit], where task is walk, run or
              walkrun (both datasets concatenated, data/tasks.py) and -bit appends the task bit, task 0 =
              walker-walk, task 1 = walker-run, always of 2 (so a walk policy with the bit sees (0, 2) as the
              mixed one does). Datasets already there are reused.
2. training   one run per (algorithm [+ noise augmentation], dataset variant, seed) through the study runner:
              finished runs are not redone, killed runs resume, --ray-address sends them to a Ray cluster.
              Training-time evaluation (the curves, and which export is best/) runs on task 0's env of the
              variant: walker-walk for walk and walkrun, walker-run for run.
3. evaluation every run's final/ (last) and best/ exports, on each env of its variant (walkrun: both, each
              with its own task bit), over --final-eval-episodes episodes, under each --obs-noise scale (noise
              std in raw observation units; the task bit stays exact). Results go to runs/<run>/study_eval/ and
              are not redone. They run in this process (not through Ray), after the grid. On the env it did not
              train on (walkrun's walker-run), a Decision Transformer asks for that env's expert return.
4. report     report.md, results.json, robustness.png and curves.png (offline_walker_report.py).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Optional

from understudy.studies.common import NOT_SETTINGS, check_action_mode, check_same_settings, log, parse_study_args, \
    record_wall_times, split_choices, split_extra_args, stored_metadata, study_command
from understudy.types import UnderstudyError

TASK_ENVS = ("walker-walk", "walker-run")  # task id = index; the task bit is (index, len(TASK_ENVS))
TASKS = {"walk": ("walk",), "run": ("run",), "walk+run": ("walk", "run")}  # --tasks name -> env tokens
ENV_OF = {"walk": "walker-walk", "run": "walker-run"}
RECIPES = ("expert", "medium", "medium-replay", "medium-expert", "random")
BITS = ("without", "with")
ALGOS = ("bc", "td3bc", "iql", "cql", "dt", "morel")
EVAL_CHECKPOINTS = ("final", "best")
# flags a continued study may change: they add or drop cells and evaluations, never change a finished one
GRID_FLAGS = NOT_SETTINGS + ("algos", "tasks", "task_bits", "recipes", "train_obs_noise", "obs_noise",
                             "eval_checkpoints")
_STUDY_FLAGS = ("--out", "--resume", "--overwrite", "--seed", "--seeds", "--dataset", "--env", "--steps",
                "--eval-every", "--eval-episodes", "--final-eval-episodes", "--obs-noise", "--obs-noise-augment")


@dataclasses.dataclass(frozen=True)
class OfflineWalkerStudyArgs:
    """Offline RL (BC, CQL, TD3+BC, IQL, DT, MOReL) on dm_control walker walk / run / walk+run datasets, with and
    without the task bit, evaluated under observation noise; note 002's tables and numbers beside ours."""

    out: str = "runs/study-offline-walker"
    """Study directory (running again continues a killed study: finished runs and evaluations are not redone)."""
    tasks: str = "walk,run,walk+run"
    """Comma-separated training data: walk, run, walk+run (both concatenated; evaluated on both envs)."""
    task_bits: str = "without,with"
    """Comma-separated: without, with (the task bit (task id, 2) appended to observations: walk 0, run 1)."""
    recipes: str = "expert,medium,medium-replay"
    """Comma-separated D4RL recipes: expert, medium, medium-replay, medium-expert, random (note 002: expert)."""
    algos: str = "bc,cql,td3bc,iql,dt,morel"
    """Comma-separated algorithms: bc, td3bc, iql, cql, dt, morel."""
    seeds: int = 3
    """Seeds per (algorithm, dataset variant), one run (process) each."""
    seed: int = 0
    """Seed of the data collection and of the first run (run i uses seed + i)."""
    experts_dir: str = "experts"
    """Where the experts are: <experts-dir>/walker-walk and <experts-dir>/walker-run (with medium/ for the medium recipes)."""
    dataset_steps: int = 1_000_000
    """Environment steps per task dataset (D4RL: 1M; walk+run holds both, medium-expert is medium + expert)."""
    stochastic: bool = False
    """Collect with actions sampled from the experts' (and medium policies') stochastic heads, as `understudy collect
    --stochastic`, instead of their modes. CQL needs it: on mode-action data its penalty drives Q far below the
    returns and it stays at random level (docs/results/offline-walker). Datasets already in --data-dir must match."""
    data_dir: Optional[str] = None
    """Where the datasets are (and are collected to when missing): <data-dir>/<walk|run|walkrun>-<recipe>[-bit]. Default <out>/data."""
    steps: int = 1_000_000
    """Gradient updates per run."""
    eval_every: int = 50_000
    """Evaluate every N updates during training (the curves and the best/ export)."""
    eval_episodes: int = 10
    """Episodes per evaluation during training (what best/ is chosen on)."""
    final_eval_episodes: int = 100
    """Episodes of every reported evaluation: last and best exports, each noise scale, each env."""
    obs_noise: str = "0,0.05,0.1,0.2"
    """Comma-separated observation-noise stds (raw observation units) the exports (--eval-checkpoints) are evaluated under."""
    train_obs_noise: str = ""
    """Comma-separated stds: for each, also train every cell with --obs-noise-augment STD (e.g. "0.1"); empty: none."""
    eval_checkpoints: str = "final,best"
    """Comma-separated exports evaluated under noise: final (last), best. Without noise both always are."""
    bc_args: str = ""
    """Extra `understudy train bc` flags, as one string."""
    td3bc_args: str = ""
    """Extra `understudy train td3bc` flags."""
    iql_args: str = ""
    """Extra `understudy train iql` flags."""
    cql_args: str = ""
    """Extra `understudy train cql` flags (e.g. "--preset small" on a CPU)."""
    dt_args: str = ""
    """Extra `understudy train dt` flags."""
    morel_args: str = ""
    """Extra `understudy train morel` flags."""
    workers: int = 1
    """Runs at the same time on this machine."""
    ray_address: Optional[str] = None
    """Dispatch the training runs through Ray ("auto" or a cluster address; the study directory must be shared)."""
    report_only: bool = False
    """Only rebuild the report from the run directories; collect, train and evaluate nothing."""
    progress: bool = True
    """Progress bars while collecting."""


# ---------------------------------------------------------------------------------------------------------
# flags
# ---------------------------------------------------------------------------------------------------------
def _sigmas(value: str, flag: str, allow_empty: bool) -> list[float]:
    try:
        sigmas = [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise UnderstudyError(f"{flag} {value!r} must be comma-separated numbers, e.g. \"0,0.05,0.1,0.2\".") from None
    if (not sigmas and not allow_empty) or any(not s >= 0 or s != s or s == float("inf") for s in sigmas):
        raise UnderstudyError(f"{flag} {value!r} must list finite standard deviations >= 0.")
    return list(dict.fromkeys(sigmas))


def noise_scales(args: OfflineWalkerStudyArgs) -> list[float]:
    """The evaluation noise scales, 0 always first (the tables without noise)."""
    return [0.0] + [s for s in _sigmas(args.obs_noise, "--obs-noise", True) if s > 0]


def augment_scales(args: OfflineWalkerStudyArgs) -> list[float]:
    """0 (plain training) and each --train-obs-noise std."""
    return [0.0] + [s for s in _sigmas(args.train_obs_noise, "--train-obs-noise", True) if s > 0]


def check_args(args: OfflineWalkerStudyArgs) -> None:
    from understudy.algos import ALGORITHMS

    for value, known, flag in ((args.tasks, tuple(TASKS), "--tasks"), (args.task_bits, BITS, "--task-bits"),
                               (args.recipes, RECIPES, "--recipes"),
                               (args.eval_checkpoints, EVAL_CHECKPOINTS, "--eval-checkpoints")):
        split_choices(value, known, flag)
    missing = [a for a in split_choices(args.algos, ALGOS, "--algos") if a not in ALGORITHMS]
    if missing:
        raise UnderstudyError(f"This version of understudy has no {', '.join(missing)}; leave it out of --algos.")
    noise_scales(args)
    augment_scales(args)
    if min(args.seeds, args.dataset_steps, args.steps, args.eval_every, args.eval_episodes,
           args.final_eval_episodes) < 1:
        raise UnderstudyError("--seeds, --dataset-steps, --steps, --eval-every, --eval-episodes and "
                              "--final-eval-episodes must all be at least 1.")


# ---------------------------------------------------------------------------------------------------------
# datasets
# ---------------------------------------------------------------------------------------------------------
def _data_root(args: OfflineWalkerStudyArgs) -> Path:
    return Path(args.data_dir or Path(args.out) / "data").resolve()


def variant_name(task: str, recipe: str, bit: bool) -> str:
    return "".join(TASKS[task]) + f"-{recipe}" + ("-bit" if bit else "")


def dataset_plan(args: OfflineWalkerStudyArgs) -> tuple[dict[str, dict], dict[str, dict]]:
    """(base, variants). base: <walk|run>-<recipe> -> {env_id, recipe, expert, path}, collected from the experts.
    variants: <task>-<recipe>[-bit] -> {task, recipe, bit, path, sources (base names), evals: [{env_id, task_bit}]}."""
    root = _data_root(args)
    recipes = split_choices(args.recipes, RECIPES, "--recipes")
    base, variants = {}, {}
    for task in split_choices(args.tasks, tuple(TASKS), "--tasks"):
        for recipe in recipes:
            for bit in (b == "with" for b in split_choices(args.task_bits, BITS, "--task-bits")):
                sources = [f"{token}-{recipe}" for token in TASKS[task]]
                for token, name in zip(TASKS[task], sources):
                    env_id = ENV_OF[token]
                    base[name] = {"env_id": env_id, "recipe": recipe, "path": str(root / name),
                                  "expert": str(Path(args.experts_dir) / env_id)}
                name = variant_name(task, recipe, bit)
                evals = [{"env_id": ENV_OF[t],
                          "task_bit": [TASK_ENVS.index(ENV_OF[t]), len(TASK_ENVS)] if bit else None}
                         for t in TASKS[task]]
                variants[name] = {"task": task, "recipe": recipe, "bit": bit, "path": str(root / name),
                                  "sources": sources, "evals": evals}
    return base, variants


def _is_dataset(path: str | Path) -> bool:
    return (Path(path) / "data").exists()


def train_expert_hint(env_id: str) -> str:
    run = f"runs/sac-{env_id}"
    return (f"`understudy train sac --env {env_id} --steps 1000000 --eval-every 25000 --eval-episodes 10 "
            f"--snapshot-every 25000 --snapshot-replay --out {run}` then `python experts/ship.py --run {run} "
            f"--env {env_id} --out experts/{env_id} --command \"understudy train sac --env {env_id} ...\"`")


def check_experts(base: dict[str, dict]) -> None:
    """Every dataset still to collect has its expert (and, for the medium recipes, the medium snapshot); checked
    before anything is collected, so a missing expert fails in seconds, not after an hour of collecting."""
    from understudy.data.recipes import find_sources, has_medium_replay, replay_buffer_note

    missing_experts, missing_medium = {}, {}
    for name, entry in base.items():
        if _is_dataset(entry["path"]):
            continue
        expert = Path(entry["expert"])
        if not (expert / "policy.json").exists():
            missing_experts.setdefault(entry["env_id"], (expert, []))[1].append(name)
            continue
        if entry["recipe"] in ("medium", "medium-expert", "medium-replay"):
            sources = find_sources(expert)
            if not (has_medium_replay(sources) if entry["recipe"] == "medium-replay"
                    else sources.medium or sources.snapshots):
                missing_medium.setdefault(str(expert), []).append(name)
    if missing_experts:
        parts = [f"{expert} (for {', '.join(names)}); train one with {train_expert_hint(env_id)}"
                 for env_id, (expert, names) in missing_experts.items()]
        raise UnderstudyError("The offline-walker study collects its datasets from the experts, and these are "
                              f"missing (no policy.json): {'; '.join(parts)}. Or pass --experts-dir DIR holding "
                              "walker-walk/ and walker-run/, or --data-dir with the datasets made elsewhere "
                              "(<data-dir>/walk-expert, run-expert, ...).")
    if missing_medium:
        where = "; ".join(f"{e} (for {', '.join(n)})" for e, n in missing_medium.items())
        raise UnderstudyError(f"The medium recipes need the expert's medium/ snapshot (and medium/replay.safetensors "
                              f"for medium-replay), missing in: {where}. Ship the expert with experts/ship.py from a "
                              "run trained with --snapshot-every N --snapshot-replay, or leave those recipes out of "
                              "--recipes." + "".join(replay_buffer_note(Path(e) / "medium") for e in missing_medium))


def collect_base(args: OfflineWalkerStudyArgs, base: dict[str, dict]) -> None:
    from understudy.data import save_dataset
    from understudy.data.recipes import collect_recipe

    for name, entry in base.items():
        path = Path(entry["path"])
        if _is_dataset(path):
            if entry["recipe"] != "medium-replay":  # a replay buffer, whatever the flag (older ones record it)
                check_action_mode(path, args.stochastic)
            log(f"reusing {name}: {path}")
            continue
        steps = None if entry["recipe"] == "medium-replay" else args.dataset_steps
        log(f"collecting {name}: understudy collect --env {entry['env_id']} --policy {entry['expert']} --recipe "
            f"{entry['recipe']}" + ("" if steps is None else f" --steps {steps}") + f" --seed {args.seed}"
            + (" --stochastic" if args.stochastic else "") + f" --out {path}")
        t0 = time.time()
        ds = collect_recipe(entry["env_id"], entry["recipe"], steps=steps, policy=entry["expert"], seed=args.seed,
                            stochastic=args.stochastic, progress=args.progress)
        save_dataset(ds, path, overwrite=True)
        log(f"{name}: {ds.num_episodes} episodes, {ds.num_steps} steps in {time.time() - t0:.0f} s")


def build_variants(base: dict[str, dict], variants: dict[str, dict]) -> None:
    """Writes every variant that is not on disk yet from its base datasets (a single task without the bit is its
    base dataset itself)."""
    from understudy.data import load_dataset, save_dataset
    from understudy.data.tasks import mix_tasks, with_task_bit

    for name, v in variants.items():
        if _is_dataset(v["path"]):
            continue
        parts = [load_dataset(base[s]["path"]) for s in v["sources"]]
        if len(parts) > 1:
            ds = mix_tasks(parts, task_bit=v["bit"])
        else:
            ds = with_task_bit(parts[0], TASK_ENVS.index(base[v["sources"][0]]["env_id"]), len(TASK_ENVS))
        save_dataset(ds, v["path"], overwrite=True)
        log(f"built {name}: {ds.num_episodes} episodes, {ds.num_steps} steps")


def write_references(out: Path, base: dict[str, dict]) -> dict:
    """<out>/references.json: per env, the random and expert returns its datasets record (the normalized scores')."""
    refs = {}
    for name, entry in base.items():
        meta = None if entry["env_id"] in refs else stored_metadata(entry["path"])
        if meta is None:
            continue
        if meta.get("ref_min_score") is not None and meta.get("ref_max_score") is not None:
            refs[entry["env_id"]] = {"random": float(meta["ref_min_score"]), "expert": float(meta["ref_max_score"]),
                                     "dataset": entry["path"]}
    (out / "references.json").write_text(json.dumps(refs, indent=2))
    return refs


# ---------------------------------------------------------------------------------------------------------
# runs
# ---------------------------------------------------------------------------------------------------------
def method_name(algo: str, augment: float) -> str:
    return algo if not augment else f"{algo}+aug{augment:g}"


def study_runs(args: OfflineWalkerStudyArgs, variants: dict[str, dict]) -> tuple[list, dict[str, dict]]:
    """(runner Runs, name -> {algo, method, augment, variant, seed}) for every cell of the grid."""
    from understudy.algos import ALGORITHMS
    from understudy.studies.runner import Run
    from understudy.train.augment import LOOPS_WITH_AUGMENTATION

    common = ("--steps", str(args.steps), "--eval-every", str(args.eval_every), "--eval-episodes",
              str(args.eval_episodes), "--final-eval-episodes", str(args.final_eval_episodes), "--no-progress")
    runs, cells = [], {}
    for algo in split_choices(args.algos, ALGOS, "--algos"):
        extra = split_extra_args(getattr(args, f"{algo}_args"), f"--{algo}-args", _STUDY_FLAGS)
        for augment in augment_scales(args):
            if augment and algo in ALGORITHMS and ALGORITHMS[algo][1] not in LOOPS_WITH_AUGMENTATION:
                log(f"{algo}: its training loop does not augment observations; no {method_name(algo, augment)} runs")
                continue
            noise = ("--obs-noise-augment", f"{augment:g}") if augment else ()
            method = method_name(algo, augment)
            for variant, v in variants.items():
                for i in range(args.seeds):
                    seed = args.seed + i
                    name = f"{method.replace('+', '-')}-{variant}-seed{seed}"
                    runs.append(Run(name=name, args=("train", algo, "--dataset", v["path"], *common, *noise, *extra,
                                                     "--seed", str(seed))))
                    cells[name] = {"algo": algo, "method": method, "augment": augment, "variant": variant, "seed": seed}
    return runs, cells


# ---------------------------------------------------------------------------------------------------------
# evaluation of the exports under noise
# ---------------------------------------------------------------------------------------------------------
def evaluation_file(run_dir: Path, env_id: str, checkpoint: str, noise: float) -> Path:
    return run_dir / "study_eval" / f"{env_id}-{checkpoint}-noise{noise:g}.json"


def evaluate_export(export: Path, env_id: str, *, task_bit: Optional[list[int]], noise: float, episodes: int,
                    seed: int, target_return: Optional[float] = None) -> dict:
    """{returns, lengths, mean, std, ...} of a policy export (or a Decision Transformer export) on env_id with the
    given task bit and observation noise; a DT asks for `target_return` when given."""
    from understudy.algos.dt_policy import DTPolicy, is_dt_policy
    from understudy.eval.rollouts import evaluate_policy
    from understudy.policy import load_policy

    options = {**({"task_bit": list(task_bit)} if task_bit else {}), **({"obs_noise": noise} if noise else {})}
    if is_dt_policy(export):
        return DTPolicy.load(export).evaluate(env_id, episodes=episodes, seed=seed, env_options=options or None,
                                              target_return=target_return)
    return evaluate_policy(load_policy(export, seed=seed), env_id, episodes=episodes, seed=seed,
                           env_options=options or None)


def _reuse_final(run_dir: Path, episodes: int) -> Optional[dict]:
    """The run's own last evaluation (on its training env, with its task bit), when it had no noise and as many
    episodes as the study asks for."""
    evaluation = json.loads((run_dir / "eval.json").read_text())
    config = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").exists() else {}
    seeds = evaluation.get("final", {}).get("seeds", [])
    noisy = (config.get("run") or {}).get("obs_noise", 0.0)
    if noisy or len(seeds) != 1 or len(seeds[0].get("returns", [])) != episodes:
        return None
    return {k: v for k, v in seeds[0].items() if k != "seed"}


def _same_export(a: Path, b: Path) -> bool:
    """Whether two exports hold the same parameters (best/ saved at the last evaluation is final/'s policy)."""
    import filecmp

    for stem in ("policy", "dt_policy"):
        if (a / f"{stem}.safetensors").exists() and (b / f"{stem}.safetensors").exists():
            return filecmp.cmp(a / f"{stem}.safetensors", b / f"{stem}.safetensors", shallow=False)
    return False


def evaluate_runs(args: OfflineWalkerStudyArgs, out: Path, variants: dict[str, dict], cells: dict[str, dict],
                  refs: dict) -> int:
    """Evaluates every finished run's exports on each env of its variant under each noise scale; returns how many
    evaluations ran (those already on disk are not redone)."""
    from understudy.studies.runner import is_finished

    checkpoints = split_choices(args.eval_checkpoints, EVAL_CHECKPOINTS, "--eval-checkpoints")
    done = 0
    for name, cell in cells.items():
        run_dir = out / "runs" / name
        if not is_finished(run_dir):
            continue
        evals = variants[cell["variant"]]["evals"]  # the first is the env the run trained and evaluated on
        for target in evals:
            env_id, bit = target["env_id"], target["task_bit"]
            own_env = target is evals[0]
            for noise in noise_scales(args):
                for checkpoint in [c for c in EVAL_CHECKPOINTS if noise == 0 or c in checkpoints]:
                    path = evaluation_file(run_dir, env_id, checkpoint, noise)
                    if path.exists():
                        continue
                    t0 = time.time()
                    result = _reuse_final(run_dir, args.final_eval_episodes) \
                        if checkpoint == "final" and noise == 0 and own_env else None
                    same = evaluation_file(run_dir, env_id, "final", noise)
                    if checkpoint == "best" and same.exists() and _same_export(run_dir / "best", run_dir / "final"):
                        result = json.loads(same.read_text())  # the same policy: its evaluation is the same
                    if result is None:  # a DT asks for the expert return of the env it is evaluated on
                        expert = None if own_env else (refs.get(env_id) or {}).get("expert")
                        result = evaluate_export(run_dir / checkpoint, env_id, task_bit=bit, noise=noise,
                                                 episodes=args.final_eval_episodes, seed=args.seed + 20_000,
                                                 target_return=expert)
                        done += 1
                    path.parent.mkdir(exist_ok=True)
                    path.write_text(json.dumps({**result, "env_id": env_id, "task_bit": bit, "checkpoint": checkpoint,
                                                "obs_noise": noise, "episodes": len(result["returns"])}, indent=2))
                    log(f"{name}: {checkpoint} on {env_id}{' +bit' if bit else ''}, noise {noise:g}: "
                        f"{result['mean']:.1f} ({time.time() - t0:.0f} s)")
    return done


# ---------------------------------------------------------------------------------------------------------
# the study
# ---------------------------------------------------------------------------------------------------------
def run_study(args: OfflineWalkerStudyArgs) -> dict:
    from understudy.studies.offline_walker_report import write_walker_report
    from understudy.studies.runner import run_grid

    out = Path(args.out)
    if args.report_only:
        if not (out / "study.json").exists():
            raise UnderstudyError(f"--report-only: {out / 'study.json'} does not exist, so there is no study to "
                                  "report. Pass the --out of a study that has run.")
        results = write_walker_report(out)
        log(f"report rebuilt: {out / 'report.md'}")
        return results
    check_args(args)
    base, variants = dataset_plan(args)
    runs, cells = study_runs(args, variants)
    check_experts(base)
    out.mkdir(parents=True, exist_ok=True)
    check_same_settings(out, args, [r.name for r in runs], not_settings=GRID_FLAGS)
    (out / "study.json").write_text(json.dumps(
        {"study": "offline-walker", "command": study_command("offline-walker", args),
         "args": dataclasses.asdict(args), "datasets": base, "variants": variants, "cells": cells,
         "noise": noise_scales(args),
         "eval_checkpoints": split_choices(args.eval_checkpoints, EVAL_CHECKPOINTS, "--eval-checkpoints"),
         "runs": {r.name: ["understudy", *r.args, "--out", str(out.resolve() / "runs" / r.name)] for r in runs}},
        indent=2))
    collect_base(args, base)
    build_variants(base, variants)
    refs = write_references(out, base)
    failure = None
    try:
        run_grid(runs, out, workers=args.workers, ray_address=args.ray_address, log=record_wall_times(out))
    except UnderstudyError as e:  # the finished runs are still evaluated and reported; the failure is raised after
        failure = e
    evaluate_runs(args, out, variants, cells, refs)
    results = write_walker_report(out)
    log(f"report written to {out / 'report.md'}")
    if failure is not None:
        raise failure
    return results


def main(argv: list[str]) -> None:
    run_study(parse_study_args(OfflineWalkerStudyArgs, argv, "understudy study offline-walker",
                               passthrough=tuple(f"--{a}-args" for a in ALGOS)))
