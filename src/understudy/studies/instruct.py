"""`understudy study instruct-babyai` and `understudy study instruct-metaworld`: instruction-following agents
(issue 7, note 004) end to end.

1. demonstrations  <out>/data/<name>: the BabyAI bot on GoToLocal, PickupLoc and PutNextLocal (`--demos` per
                   level), or Meta-World's scripted policies on MT10 (`--demos` per task; `--images` adds 64x64
                   renders). The same functions as `understudy collect --policy bot|scripted`. A dataset already
                   there is reused (data/manifest.json records what made it).
2. training        one `understudy train instruct` run per seed (`--seeds K`), all datasets in one multi-task
                   policy, dispatched by the study runner into <out>/runs/seed<S>: finished runs are not redone,
                   killed runs resume from their checkpoints, so a killed study simply runs again.
3. report          report.md, results.json and curves.png, built from the run directories (`--report-only`
                   rebuilds them at any time, also while runs are going on).

Evaluation: the training loop evaluates every `--eval-every` updates on `--eval-episodes` episodes per task (the
curves), and at the end on `--final-eval-episodes` (default 100; on Meta-World twice: training instructions and
held-out paraphrases), which the report's tables use.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import time
from pathlib import Path
from typing import Optional

from understudy.studies.common import check_same_settings, log, parse_study_args, record_wall_times, split_extra_args, \
    study_command
from understudy.types import UnderstudyError

BABYAI_LEVELS = ("GoToLocal", "PickupLoc", "PutNextLocal")


@dataclasses.dataclass(frozen=True)
class _StudyArgs:
    """Flags both instruction-following studies share."""

    seeds: int = 3
    """Training seeds, one run (process) each."""
    seed: int = 0
    """Seed of the demonstrations and of the first run (run i uses seed + i)."""
    eval_every: int = 2_500
    """Evaluate every N updates (and at the end)."""
    eval_episodes: int = 20
    """Episodes per task at each evaluation during training (the curves; a Meta-World episode is up to 500 steps)."""
    final_eval_episodes: int = 100
    """Episodes per task in the final evaluation (the report's tables; Meta-World: on training and held-out instructions)."""
    train_args: str = ""
    """Extra `understudy train instruct` flags, as one string, e.g. "--d-model 256 --head gmm"."""
    workers: int = 1
    """Runs at the same time on this machine (one run already keeps 2 CPU cores busy)."""
    ray_address: Optional[str] = None
    """Dispatch the runs through Ray ("auto" or a cluster address; the study directory must be shared)."""
    report_only: bool = False
    """Only rebuild report.md, results.json and curves.png from the run directories; collect and train nothing."""
    progress: bool = True
    """Progress bars while collecting."""


@dataclasses.dataclass(frozen=True)
class BabyAIStudyArgs(_StudyArgs):
    """Instruction following on BabyAI: bot demonstrations of GoToLocal, PickupLoc and PutNextLocal, one
    multi-task transformer policy per seed, per-level success rates against the issue's targets."""

    out: str = "runs/study-instruct-babyai"
    """Study directory (running again continues a killed study: finished runs are not redone)."""
    demos: int = 20_000
    """Bot demonstrations (episodes) per level."""
    steps: int = 20_000
    """Gradient updates per run (docs/results/instruct-babyai: the targets were met from 7,500 on)."""


@dataclasses.dataclass(frozen=True)
class MetaWorldStudyArgs(_StudyArgs):
    """Instruction following on Meta-World MT10: scripted demonstrations with paraphrased instructions, one
    multi-task transformer policy per seed, success per task on training instructions and held-out paraphrases."""

    out: str = "runs/study-instruct-metaworld"
    """Study directory (running again continues a killed study: finished runs are not redone)."""
    demos: int = 100
    """Scripted demonstrations (episodes) per task."""
    steps: int = 7_500
    """Gradient updates per run (docs/results/instruct-metaworld)."""
    images: bool = False
    """Record 64x64 renders and train from them (observations {state, image}); the default trains from states."""
    suite: str = "MT10"
    """Meta-World suite or task list (the issue's targets are stated for MT10 from states)."""


def study_name(args) -> str:
    return "instruct-metaworld" if isinstance(args, MetaWorldStudyArgs) else "instruct-babyai"


# ------------------------------------------------------------------------------------------------ demonstrations
def dataset_plan(args) -> dict[str, dict]:
    """name -> {env, policy, episodes, images, command}: the datasets the study trains on, in task-id order."""
    data = Path(args.out).resolve() / "data"
    plan = {}
    if isinstance(args, MetaWorldStudyArgs):
        from understudy.instruct.paraphrases import suite_label

        label = suite_label(args.suite)
        name = (label.replace(":", "-") if label != "custom" else "suite") + ("-images" if args.images else "")
        specs = [(name, f"metaworld:{args.suite}" if ":" not in args.suite else args.suite, "scripted")]
    else:
        specs = [(level, f"babyai:{level}", "bot") for level in BABYAI_LEVELS]
    for name, env, policy in specs:
        images = bool(getattr(args, "images", False))
        cmd = ["understudy", "collect", "--env", env, "--policy", policy, "--episodes", str(args.demos),
               "--seed", str(args.seed)] + (["--images"] if images else []) + ["--out", str(data / name)]
        plan[name] = {"env": env, "policy": policy, "episodes": args.demos, "images": images,
                      "path": str(data / name), "command": shlex.join(cmd)}
    return plan


def _describe(ds, entry: dict, seconds: Optional[float]) -> dict:
    """What the manifest keeps about a dataset: counts per task (episodes and steps), observations, time."""
    import numpy as np

    from understudy.train.instruct import task_name

    meta = ds.metadata
    env_ids = meta.get("tasks") or [meta.get("env_id")]
    starts = np.asarray(ds.episode_starts)
    lengths = np.diff(np.append(starts, ds.num_steps))
    task_of_episode = (np.asarray(ds.task_id)[starts] if ds.task_id is not None else np.zeros(len(starts), int))
    per_task = {task_name(e): {"episodes": int((task_of_episode == j).sum()),
                               "steps": int(lengths[task_of_episode == j].sum())} for j, e in enumerate(env_ids)}
    return {**entry, "episodes_total": int(ds.num_episodes), "steps_total": int(ds.num_steps), "per_task": per_task,
            "observations": "pixels" if entry.get("images") else ("grid" if entry["policy"] == "bot" else "state"),
            "collect_s": None if seconds is None else round(seconds, 1)}


def collect_datasets(args) -> dict[str, dict]:
    """Collects every planned dataset that is not in <out>/data yet; returns the manifest (also on disk)."""
    from understudy.data import load_dataset, save_dataset
    from understudy.instruct.demos import collect_demonstrations

    data = Path(args.out) / "data"
    data.mkdir(parents=True, exist_ok=True)
    manifest_path = data / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    for name, entry in dataset_plan(args).items():
        path = Path(entry["path"])
        if (path / "data").exists():
            if name not in manifest:  # put there by hand or by an older study: describe it once
                manifest[name] = _describe(load_dataset(path), entry, None)
            found = manifest[name]
            if found["episodes"] != entry["episodes"] or found["images"] != entry["images"]:
                raise UnderstudyError(
                    f"{path} holds {found['episodes']} demonstrations per task"
                    f"{' with images' if found['images'] else ''}, but this study asks for {entry['episodes']}"
                    f"{' with images' if entry['images'] else ''}. Pass the same --demos/--images as before to "
                    f"continue the study, or use another --out (or delete {path}).")
            log(f"reusing {name}: {found['episodes_total']} episodes, {found['steps_total']} steps")
            continue
        log(f"collecting {name}: {entry['command']}")
        t0 = time.time()
        ds = collect_demonstrations(entry["env"], entry["policy"], entry["episodes"], seed=args.seed,
                                    images=entry["images"], progress=args.progress)
        save_dataset(ds, path, overwrite=True)  # written aside and moved into place: never half a dataset
        manifest[name] = _describe(ds, entry, time.time() - t0)
        manifest_path.write_text(json.dumps(manifest, indent=2))
        log(f"{name}: {ds.num_episodes} episodes, {ds.num_steps} steps in {time.time() - t0:.0f} s")
    manifest_path.write_text(json.dumps(manifest, indent=2))
    return manifest


# ------------------------------------------------------------------------------------------------ training
def study_runs(args, plan: dict[str, dict]):
    """One `understudy train instruct` run per seed over every dataset (task id = position in the plan)."""
    from understudy.studies.runner import Run

    datasets = ",".join(entry["path"] for entry in plan.values())
    extra = split_extra_args(args.train_args, "--train-args",
                             ("--out", "--resume", "--overwrite", "--seed", "--seeds", "--dataset", "--steps",
                              "--eval-every", "--eval-episodes", "--final-eval-episodes"))
    runs = []
    for i in range(args.seeds):
        seed = args.seed + i
        cmd = ("train", "instruct", "--dataset", datasets, "--steps", str(args.steps), "--eval-every",
               str(args.eval_every), "--eval-episodes", str(args.eval_episodes), "--final-eval-episodes",
               str(args.final_eval_episodes), "--seed", str(seed), "--no-progress",
               *extra)
        runs.append(Run(name=f"seed{seed}", args=cmd))
    return runs


def run_study(args) -> dict:
    from understudy.studies.instruct_report import write_instruct_report
    from understudy.studies.runner import run_grid

    out = Path(args.out)
    name = study_name(args)
    if args.report_only:
        if not (out / "runs").is_dir():
            raise UnderstudyError(f"--report-only: {out / 'runs'} does not exist, so there are no runs to report. "
                                  "Pass the --out of a study that has run (or run the study without --report-only).")
        results = write_instruct_report(out, name)
        log(f"report rebuilt: {out / 'report.md'}")
        return results
    if min(args.seeds, args.demos, args.steps, args.eval_episodes, args.final_eval_episodes, args.eval_every) < 1:
        raise UnderstudyError("--seeds, --demos, --steps, --eval-every, --eval-episodes and --final-eval-episodes must "
                              "all be at least 1.")
    plan = dataset_plan(args)
    runs = study_runs(args, plan)
    out.mkdir(parents=True, exist_ok=True)
    check_same_settings(out, args, [r.name for r in runs])
    (out / "study.json").write_text(json.dumps(
        {"study": name, "command": study_command(name, args), "args": dataclasses.asdict(args),
         "datasets": {k: v["command"] for k, v in plan.items()},
         "runs": {r.name: ["understudy", *r.args, "--out", str(out.resolve() / "runs" / r.name)] for r in runs}},
        indent=2))
    collect_datasets(args)
    run_grid(runs, out, workers=args.workers, ray_address=args.ray_address, log=record_wall_times(out))
    results = write_instruct_report(out, name)
    log(f"report written to {out / 'report.md'}")
    return results


def main_babyai(argv: list[str]) -> None:
    run_study(parse_study_args(BabyAIStudyArgs, argv, "understudy study instruct-babyai"))


def main_metaworld(argv: list[str]) -> None:
    run_study(parse_study_args(MetaWorldStudyArgs, argv, "understudy study instruct-metaworld"))
