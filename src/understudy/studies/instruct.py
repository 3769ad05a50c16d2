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
import re
import shlex
import time
from pathlib import Path
from typing import Optional

from understudy.types import UnderstudyError

BABYAI_LEVELS = ("GoToLocal", "PickupLoc", "PutNextLocal")
# flags of the study that do not change what is computed (anything else recorded in study.json must match)
_NOT_SETTINGS = ("out", "workers", "ray_address", "report_only", "progress", "seeds")


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


def _log(msg: str) -> None:
    print(f"[study {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def study_name(args) -> str:
    return "instruct-metaworld" if isinstance(args, MetaWorldStudyArgs) else "instruct-babyai"


def study_command(args) -> str:
    """The `understudy study ...` command line that reproduces `args` (flags at their defaults left out)."""
    default = type(args)()
    parts = ["understudy", "study", study_name(args), "--out", args.out]
    for f in dataclasses.fields(args):
        value = getattr(args, f.name)
        if f.name in ("out", "report_only", "progress", "workers") or value == getattr(default, f.name):
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else "--no-" + f.name.replace("_", "-"))
        else:
            parts += [flag, str(value)]
    return shlex.join(parts)


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
            _log(f"reusing {name}: {found['episodes_total']} episodes, {found['steps_total']} steps")
            continue
        _log(f"collecting {name}: {entry['command']}")
        t0 = time.time()
        ds = collect_demonstrations(entry["env"], entry["policy"], entry["episodes"], seed=args.seed,
                                    images=entry["images"], progress=args.progress)
        save_dataset(ds, path, overwrite=True)  # written aside and moved into place: never half a dataset
        manifest[name] = _describe(ds, entry, time.time() - t0)
        manifest_path.write_text(json.dumps(manifest, indent=2))
        _log(f"{name}: {ds.num_episodes} episodes, {ds.num_steps} steps in {time.time() - t0:.0f} s")
    manifest_path.write_text(json.dumps(manifest, indent=2))
    return manifest


# ------------------------------------------------------------------------------------------------ training
def study_runs(args, plan: dict[str, dict]):
    """One `understudy train instruct` run per seed over every dataset (task id = position in the plan)."""
    from understudy.studies.runner import Run

    datasets = ",".join(entry["path"] for entry in plan.values())
    try:
        extra = shlex.split(args.train_args)
    except ValueError as e:
        raise UnderstudyError(f"--train-args {args.train_args!r} is not a valid command-line string ({e}); quote it "
                              "as one argument, e.g. --train-args \"--d-model 256 --batch-size 512\".") from None
    for flag in ("--out", "--resume", "--overwrite", "--seed", "--seeds", "--dataset", "--steps", "--eval-every",
                 "--eval-episodes", "--final-eval-episodes"):
        if any(a == flag or a.startswith(flag + "=") for a in extra):
            raise UnderstudyError(f"--train-args must not contain {flag}: the study sets it (use the study's own "
                                  f"{flag} flag where it has one).")
    runs = []
    for i in range(args.seeds):
        seed = args.seed + i
        cmd = ("train", "instruct", "--dataset", datasets, "--steps", str(args.steps), "--eval-every",
               str(args.eval_every), "--eval-episodes", str(args.eval_episodes), "--final-eval-episodes",
               str(args.final_eval_episodes), "--seed", str(seed), "--no-progress",
               *extra)
        runs.append(Run(name=f"seed{seed}", args=cmd))
    return runs


def _check_same_settings(out: Path, args, runs) -> None:
    """A study directory is continued only with the settings that made it (its finished runs are reused)."""
    path = out / "study.json"
    if not path.exists():
        return
    before = json.loads(path.read_text())
    now = {k: v for k, v in dataclasses.asdict(args).items() if k not in _NOT_SETTINGS}
    then = {k: v for k, v in (before.get("args") or {}).items() if k not in _NOT_SETTINGS}
    changed = sorted(k for k in set(now) | set(then) if now.get(k) != then.get(k))
    if changed and any((out / "runs" / r.name).exists() for r in runs):
        diff = ", ".join(f"--{k.replace('_', '-')} {then.get(k)!r} -> {now.get(k)!r}" for k in changed)
        raise UnderstudyError(f"{out} was made with other settings ({diff}); its runs would be reused as they are. "
                              "Continue it with the same flags, rebuild its report with --report-only, or use "
                              "another --out.")


def _record_wall_times(out: Path):
    """A log function for run_grid that also keeps each run's process wall time in <out>/timings.json."""
    path = out / "timings.json"
    pattern = re.compile(r"^(\S+): (done|failed) in (\d+) s")

    def log(msg: str) -> None:
        _log(msg)
        match = pattern.match(msg)
        if match and match.group(2) == "done":
            timings = json.loads(path.read_text()) if path.exists() else {}
            timings[match.group(1)] = int(match.group(3))
            path.write_text(json.dumps(timings, indent=2))

    return log


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
        _log(f"report rebuilt: {out / 'report.md'}")
        return results
    if min(args.seeds, args.demos, args.steps, args.eval_episodes, args.final_eval_episodes, args.eval_every) < 1:
        raise UnderstudyError("--seeds, --demos, --steps, --eval-every, --eval-episodes and --final-eval-episodes must "
                              "all be at least 1.")
    plan = dataset_plan(args)
    runs = study_runs(args, plan)
    out.mkdir(parents=True, exist_ok=True)
    _check_same_settings(out, args, runs)
    (out / "study.json").write_text(json.dumps(
        {"study": name, "command": study_command(args), "args": dataclasses.asdict(args),
         "datasets": {k: v["command"] for k, v in plan.items()},
         "runs": {r.name: ["understudy", *r.args, "--out", str(out.resolve() / "runs" / r.name)] for r in runs}},
        indent=2))
    collect_datasets(args)
    run_grid(runs, out, workers=args.workers, ray_address=args.ray_address, log=_record_wall_times(out))
    results = write_instruct_report(out, name)
    _log(f"report written to {out / 'report.md'}")
    return results


def _parse(cls, argv: list[str], prog: str):
    import tyro

    # `--train-args "--d-model 256"`: its value starts with "--", which the parser would take for a flag
    argv = list(argv)
    for i, a in enumerate(argv[:-1]):
        if a == "--train-args":
            argv[i:i + 2] = [f"--train-args={argv[i + 1]}"]
            break
    return tyro.cli(cls, args=argv, prog=prog)


def main_babyai(argv: list[str]) -> None:
    run_study(_parse(BabyAIStudyArgs, argv, "understudy study instruct-babyai"))


def main_metaworld(argv: list[str]) -> None:
    run_study(_parse(MetaWorldStudyArgs, argv, "understudy study instruct-metaworld"))
