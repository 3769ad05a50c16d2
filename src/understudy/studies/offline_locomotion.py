"""`understudy study offline-locomotion`: offline RL algorithms x MuJoCo locomotion datasets (issue 5; CORL's
table on our own D4RL-style datasets).

1. data      for every env and recipe, <out>/data/<env>-<recipe> made with the D4RL recipes from the shipped
             expert (experts/<ENV_ID>: the expert, its medium/ snapshot and that snapshot's replay buffer); a
             dataset already there is reused. `--data-dir` points at datasets made elsewhere.
2. training  one run per (algorithm, dataset, seed) through the study runner into <out>/runs/: finished runs are
             not redone, killed runs resume, `--ray-address` sends them to a Ray cluster.
3. report    report.md (normalized score x100 per dataset and algorithm, last and best evaluation, the average
             over datasets, IQM with a 95% CI over every (dataset, seed) score, CORL's published D4RL numbers
             beside ours), results.json and curves.png, rebuilt from the run directories (`--report-only`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Optional

from understudy.studies.common import check_action_mode, check_same_settings, log, parse_study_args, \
    record_wall_times, split_choices, split_extra_args, study_command
from understudy.types import UnderstudyError

ENVS = {"halfcheetah": "HalfCheetah-v5", "hopper": "Hopper-v5", "walker2d": "Walker2d-v5"}
RECIPES = ("medium", "medium-replay", "medium-expert")
ALGOS = ("bc", "td3bc", "iql", "cql", "dt", "morel")
# CORL's locomotion settings that an algorithm's own defaults leave out (its flags come first, so the --<algo>-args
# can override them): IQL divides rewards by the dataset's return spread (x 1000), as the IQL paper does.
LOCOMOTION_ARGS = {"iql": ("--normalize-reward-by-returns",)}
_STUDY_FLAGS = ("--out", "--resume", "--overwrite", "--seed", "--seeds", "--dataset", "--steps", "--eval-every",
                "--eval-episodes", "--final-eval-episodes")


@dataclasses.dataclass(frozen=True)
class OfflineLocomotionStudyArgs:
    """Offline RL (BC, TD3+BC, IQL, CQL, DT, MOReL) on halfcheetah / hopper / walker2d medium, medium-replay and
    medium-expert datasets made from the shipped experts; normalized scores per dataset against CORL's table."""

    out: str = "runs/study-offline-locomotion"
    """Study directory (running again continues a killed study: finished runs are not redone)."""
    envs: str = "halfcheetah,hopper,walker2d"
    """Comma-separated: halfcheetah, hopper, walker2d (each needs experts/<ENV_ID> with medium/)."""
    recipes: str = ",".join(RECIPES)
    """Comma-separated D4RL recipes: medium, medium-replay, medium-expert."""
    algos: str = "bc,td3bc,iql,cql,dt,morel"
    """Comma-separated algorithms: bc, td3bc, iql, cql, dt, morel."""
    seeds: int = 3
    """Seeds per (algorithm, dataset), one run (process) each."""
    seed: int = 0
    """Seed of the data collection and of the first run (run i uses seed + i)."""
    stochastic: bool = True
    """Collect medium and expert data with actions sampled from the policies' stochastic heads, as D4RL's SAC datasets are (its reproducibility guide); --no-stochastic takes their modes (one action per state)."""
    dataset_steps: int = 1_000_000
    """Environment steps per medium / expert dataset (D4RL: 1M; medium-expert is medium + expert, 2M)."""
    data_dir: Optional[str] = None
    """Where the datasets are (and are collected to when missing): <data-dir>/<env>-<recipe>. Default <out>/data."""
    steps: int = 1_000_000
    """Gradient updates per run (CORL: 1M)."""
    eval_every: int = 50_000
    """Evaluate every N updates (the curves and the best checkpoint)."""
    eval_episodes: int = 10
    """Episodes per evaluation during training."""
    final_eval_episodes: int = 100
    """Episodes of the last evaluation (the table's `last` scores)."""
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
    """Dispatch the runs through Ray ("auto" or a cluster address; the study directory must be shared)."""
    report_only: bool = False
    """Only rebuild the report from the run directories; collect and train nothing."""
    progress: bool = True
    """Progress bars while collecting."""


def check_args(args: OfflineLocomotionStudyArgs) -> None:
    from understudy.algos import ALGORITHMS

    split_choices(args.envs, tuple(ENVS), "--envs")
    split_choices(args.recipes, RECIPES, "--recipes")
    missing = [a for a in split_choices(args.algos, ALGOS, "--algos") if a not in ALGORITHMS]
    if missing:
        raise UnderstudyError(f"This version of understudy has no {', '.join(missing)}; leave it out of --algos.")
    if min(args.seeds, args.dataset_steps, args.steps, args.eval_every, args.eval_episodes,
           args.final_eval_episodes) < 1:
        raise UnderstudyError("--seeds, --dataset-steps, --steps, --eval-every, --eval-episodes and "
                              "--final-eval-episodes must all be at least 1.")


def dataset_plan(args: OfflineLocomotionStudyArgs) -> dict[str, dict]:
    """name (<env>-<recipe>) -> {env, env_id, recipe, expert, path}."""
    data = Path(args.data_dir or Path(args.out) / "data").resolve()
    return {f"{env}-{recipe}": {"env": env, "env_id": ENVS[env], "recipe": recipe,
                                "expert": str(Path("experts") / ENVS[env]), "path": str(data / f"{env}-{recipe}")}
            for env in split_choices(args.envs, tuple(ENVS), "--envs") for recipe in split_choices(args.recipes, RECIPES, "--recipes")}


def collect_datasets(args: OfflineLocomotionStudyArgs, plan: dict[str, dict]) -> None:
    """Collects every planned dataset that is not there yet (saved aside and moved into place: never half one)."""
    from understudy.data import save_dataset
    from understudy.data.recipes import collect_recipe

    check_replay_buffers(plan)
    for name, entry in plan.items():
        path = Path(entry["path"])
        if (path / "data").exists():
            if entry["recipe"] != "medium-replay":  # a replay buffer, whatever the flag
                check_action_mode(path, args.stochastic)
            log(f"reusing {name}: {path}")
            continue
        if not (Path(entry["expert"]) / "policy.json").exists():
            raise UnderstudyError(f"{name} is collected from the shipped expert {entry['expert']}, which is missing. "
                                  "Train and ship it (experts/README.md), leave the env out of --envs, or point "
                                  "--data-dir at datasets made elsewhere.")
        steps = None if entry["recipe"] == "medium-replay" else args.dataset_steps
        stochastic = args.stochastic and entry["recipe"] != "medium-replay"
        log(f"collecting {name}: understudy collect --env {entry['env_id']} --policy {entry['expert']} --recipe "
            f"{entry['recipe']}" + ("" if steps is None else f" --steps {steps}") + f" --seed {args.seed}"
            + (" --stochastic" if stochastic else "") + f" --out {path}")
        t0 = time.time()
        ds = collect_recipe(entry["env_id"], entry["recipe"], steps=steps, policy=entry["expert"], seed=args.seed,
                            stochastic=stochastic, progress=args.progress)
        save_dataset(ds, path, overwrite=True)
        log(f"{name}: {ds.num_episodes} episodes, {ds.num_steps} steps in {time.time() - t0:.0f} s")


def check_replay_buffers(plan: dict[str, dict]) -> None:
    """Fails before anything is collected when a medium-replay dataset is still to be made and its expert's
    replay buffer is missing (Walker2d's is too large for git), rather than after collecting the other datasets."""
    from understudy.data.recipes import REPLAY_FILE, find_sources, has_medium_replay, replay_buffer_note

    missing = []
    for name, entry in plan.items():
        expert = Path(entry["expert"])
        if (entry["recipe"] == "medium-replay" and not (Path(entry["path"]) / "data").exists()
                and (expert / "policy.json").exists() and not has_medium_replay(find_sources(expert))):
            missing.append(f"{name} needs {expert / 'medium' / REPLAY_FILE} (the replay buffer at the medium "
                           f"snapshot), which is not there.{replay_buffer_note(expert / 'medium')}")
    if missing:
        raise UnderstudyError(" ".join(missing) + " Nothing was collected. Make the buffer and rerun, or leave that "
                              "env out of --envs (e.g. --envs halfcheetah,hopper) or medium-replay out of --recipes, "
                              "or point --data-dir at datasets made elsewhere.")


def study_runs(args: OfflineLocomotionStudyArgs, plan: dict[str, dict]) -> list:
    from understudy.studies.runner import Run

    common = ("--steps", str(args.steps), "--eval-every", str(args.eval_every), "--eval-episodes",
              str(args.eval_episodes), "--final-eval-episodes", str(args.final_eval_episodes), "--no-progress")
    runs = []
    for algo in split_choices(args.algos, ALGOS, "--algos"):
        extra = split_extra_args(getattr(args, f"{algo}_args"), f"--{algo}-args", _STUDY_FLAGS)
        if not any(a.split("=")[0] == "--dataset-reward-scale" for a in extra):  # a fixed scale replaces it
            extra = (*LOCOMOTION_ARGS.get(algo, ()), *extra)
        for name, entry in plan.items():
            for i in range(args.seeds):
                runs.append(Run(name=f"{algo}-{name}-seed{args.seed + i}",
                                args=("train", algo, "--dataset", entry["path"], *common, *extra,
                                      "--seed", str(args.seed + i))))
    return runs


def run_study(args: OfflineLocomotionStudyArgs) -> dict:
    from understudy.studies.offline_report import write_offline_report
    from understudy.studies.runner import run_grid

    out = Path(args.out)
    if args.report_only:
        if not (out / "runs").is_dir():
            raise UnderstudyError(f"--report-only: {out / 'runs'} does not exist, so there are no runs to report. "
                                  "Pass the --out of a study that has run.")
        results = write_offline_report(out)
        log(f"report rebuilt: {out / 'report.md'}")
        return results
    check_args(args)
    plan = dataset_plan(args)
    runs = study_runs(args, plan)
    out.mkdir(parents=True, exist_ok=True)
    check_same_settings(out, args, [r.name for r in runs])
    (out / "study.json").write_text(json.dumps(
        {"study": "offline-locomotion", "command": study_command("offline-locomotion", args),
         "args": dataclasses.asdict(args), "datasets": plan,
         "runs": {r.name: ["understudy", *r.args, "--out", str(out.resolve() / "runs" / r.name)] for r in runs}},
        indent=2))
    collect_datasets(args, plan)
    run_grid(runs, out, workers=args.workers, ray_address=args.ray_address, log=record_wall_times(out))
    results = write_offline_report(out)
    log(f"report written to {out / 'report.md'}")
    return results


def main(argv: list[str]) -> None:
    run_study(parse_study_args(OfflineLocomotionStudyArgs, argv, "understudy study offline-locomotion",
                               passthrough=tuple(f"--{a}-args" for a in ALGOS)))
