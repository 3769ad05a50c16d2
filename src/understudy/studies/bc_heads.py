"""`understudy study bc-heads`: every behaviour-cloning action head, DAgger, GAIL and AIRL on one expert dataset
(issue 4; notes 001 and 003 did this by hand).

1. data      the expert dataset (`--dataset`, e.g. 25 expert episodes from `understudy collect`), and for DAgger
             its first `--dagger-episodes` episodes as <out>/data/first-N (DAgger's D_0).
2. training  one run per (method, seed) through the study runner into <out>/runs/<method>-seed<S>: finished
             runs are not redone, killed runs resume from their checkpoints, so a killed study simply runs
             again; `--ray-address` sends the runs to a Ray cluster.
3. report    report.md (method, hyper-parameters, final return mean ± std and IQM [95% CI] over seeds,
             normalized score, wall time), results.json, scores.png (normalized score per method) and
             curves.png (evaluation return over training, every method in one figure), rebuilt from the run
             directories alone (`--report-only` at any time).

Every run ends with a `--final-eval-episodes` (default 100) evaluation; the curves use `--eval-episodes`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional

from understudy.studies.common import check_same_settings, log, parse_study_args, record_wall_times, \
    split_extra_args, study_command
from understudy.types import UnderstudyError

HEADS = ("mse", "gaussian", "tanh-gaussian", "gmm", "diffusion", "autoregressive")
METHODS = HEADS + ("dagger", "gail", "airl")
# flags every run gets from the study itself (an --*-args string must not set them)
# settings that change only some methods' runs: a study may still add those methods later with other values
_METHOD_SETTINGS = {"bc_steps": HEADS, "bc_eval_every": HEADS, "bc_args": HEADS,
                    "dagger_episodes": ("dagger",), "dagger_steps": ("dagger",), "dagger_eval_every": ("dagger",),
                    "dagger_args": ("dagger",), "adversarial_steps": ("gail", "airl"),
                    "adversarial_eval_every": ("gail", "airl"), "gail_args": ("gail",), "airl_args": ("airl",)}
_STUDY_FLAGS = ("--out", "--resume", "--overwrite", "--seed", "--seeds", "--dataset", "--steps", "--eval-every",
                "--eval-episodes", "--final-eval-episodes", "--head", "--env", "--expert")


@dataclasses.dataclass(frozen=True)
class BCHeadsStudyArgs:
    """Behaviour cloning with every action head, DAgger, GAIL and AIRL on one expert dataset; one run per
    method and seed; a report with returns, normalized scores, IQM confidence intervals and learning curves."""

    dataset: Optional[str] = None
    """Expert demonstrations (a dataset directory from `understudy collect --policy experts/ENV`, e.g. 25 episodes). Required, except with --report-only and --out."""
    env: Optional[str] = None
    """Environment id (default: the dataset's metadata env_id)."""
    expert: Optional[str] = None
    """Expert policy export that DAgger queries (default: experts/<ENV>)."""
    out: Optional[str] = None
    """Study directory (default runs/study-bc-heads-<ENV>); running again continues a killed study."""
    methods: str = ",".join(METHODS)
    """Comma-separated methods: BC heads (mse, gaussian, tanh-gaussian, gmm, diffusion, autoregressive), dagger, gail, airl."""
    seeds: int = 3
    """Seeds per method, one run (process) each."""
    seed: int = 0
    """Seed of the first run (run i uses seed + i)."""
    bc_steps: int = 20_000
    """Gradient updates of every BC run."""
    bc_eval_every: int = 2_000
    """BC: evaluate every N updates (the curves)."""
    dagger_episodes: int = 4
    """DAgger starts from this many of the dataset's expert episodes (its D_0)."""
    dagger_steps: int = 40_000
    """DAgger: environment steps rolled out in all (--steps-per-iteration each iteration)."""
    dagger_eval_every: int = 4_000
    """DAgger: evaluate every N environment steps."""
    adversarial_steps: int = 1_000_000
    """GAIL and AIRL: environment steps of the RL algorithm they wrap."""
    adversarial_eval_every: int = 25_000
    """GAIL and AIRL: evaluate every N environment steps."""
    eval_episodes: int = 10
    """Episodes per evaluation during training (the curves)."""
    final_eval_episodes: int = 100
    """Episodes of each run's last evaluation (the report's scores)."""
    bc_args: str = ""
    """Extra `understudy train bc` flags for every head, as one string, e.g. "--lr 1e-3 --batch-size 512"."""
    dagger_args: str = ""
    """Extra `understudy train dagger` flags, e.g. "--steps-per-iteration 2000"."""
    gail_args: str = ""
    """Extra `understudy train gail` flags, e.g. "--rl ppo"."""
    airl_args: str = ""
    """Extra `understudy train airl` flags."""
    workers: int = 1
    """Runs at the same time on this machine."""
    ray_address: Optional[str] = None
    """Dispatch the runs through Ray ("auto" or a cluster address; the study directory must be shared)."""
    report_only: bool = False
    """Only rebuild the report from the run directories; train nothing."""


def resolve(args: BCHeadsStudyArgs) -> BCHeadsStudyArgs:
    """Fills env, expert and out from the dataset, and checks the method list and budgets."""
    from understudy.data import locate_dataset

    if args.dataset is None:
        raise UnderstudyError("The study needs expert demonstrations: pass --dataset PATH (e.g. from `understudy "
                              "collect --env ENV --policy experts/ENV --episodes 25 --out PATH`).")
    locate_dataset(args.dataset)  # a clear error for a path that holds no dataset
    env = args.env or _dataset_env(args.dataset)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if not methods or unknown:
        raise UnderstudyError(f"--methods {args.methods!r}: unknown {unknown or 'empty list'}; choose from "
                              f"{', '.join(METHODS)}.")
    if min(args.seeds, args.bc_steps, args.bc_eval_every, args.dagger_episodes, args.dagger_steps,
           args.dagger_eval_every, args.adversarial_steps, args.adversarial_eval_every, args.eval_episodes,
           args.final_eval_episodes) < 1:
        raise UnderstudyError("--seeds, the step budgets, the evaluation intervals, --dagger-episodes and the episode "
                              "counts must all be at least 1.")
    _check_available(methods)
    expert = args.expert or str(Path("experts") / env)
    if "dagger" in methods and not (Path(expert) / "policy.json").exists():
        raise UnderstudyError(f"DAgger needs an expert policy export to query; {expert} has none (policy.json). Pass "
                              "--expert POLICY_DIR, or leave dagger out of --methods.")
    return dataclasses.replace(args, env=env, expert=expert, methods=",".join(methods),
                               out=args.out or f"runs/study-bc-heads-{env}")


def _dataset_env(path: str) -> str:
    from understudy.data import load_dataset

    env = load_dataset(path).metadata.get("env_id")
    if not env:
        raise UnderstudyError(f"{path} does not record its environment (metadata env_id): pass --env ID.")
    return env


def _check_available(methods: list[str]) -> None:
    from understudy.algos import ALGORITHMS

    missing = [m for m in methods if m in ("dagger", "gail", "airl") and m not in ALGORITHMS]
    if missing:
        raise UnderstudyError(f"This version of understudy has no {', '.join(missing)}; leave it out of --methods.")


def dagger_dataset_path(args: BCHeadsStudyArgs) -> Path:
    return Path(args.out).resolve() / "data" / f"first-{args.dagger_episodes}"


def write_dagger_dataset(args: BCHeadsStudyArgs) -> Path:
    """The dataset's first --dagger-episodes episodes, once (DAgger's D_0)."""
    from understudy.data import load_dataset, save_dataset

    path = dagger_dataset_path(args)
    if (path / "data").exists():
        return path
    ds = load_dataset(args.dataset)
    if ds.num_episodes < args.dagger_episodes:
        raise UnderstudyError(f"--dagger-episodes {args.dagger_episodes}: {args.dataset} has only {ds.num_episodes} "
                              "episodes.")
    subset = ds.select_episodes(list(range(args.dagger_episodes)))
    save_dataset(subset, path, overwrite=True)
    log(f"DAgger's D_0: the first {args.dagger_episodes} episodes ({subset.num_steps} steps) in {path}")
    return path


def write_dataset_summary(args: BCHeadsStudyArgs) -> None:
    """<out>/dataset.json: what the runs learned from (size, returns, action noise), for the report."""
    from understudy.data import dataset_info, load_dataset

    path = Path(args.out) / "dataset.json"
    if not path.exists():
        path.write_text(json.dumps({"path": args.dataset, **dataset_info(load_dataset(args.dataset))}, indent=2))


def write_references(args: BCHeadsStudyArgs) -> dict:
    """<out>/references.json: the random and expert returns that normalize every method's score alike.

    The dataset's own (ref_min_score, ref_max_score, as `understudy collect --recipe` records them) when it has
    both, else those recorded beside the expert export (experts/<ENV>/expert.json), else measured (100 episodes).
    """
    from understudy.data import load_dataset
    from understudy.data.recipes import reference_returns

    path = Path(args.out) / "references.json"
    if path.exists():
        return json.loads(path.read_text())
    meta = load_dataset(args.dataset).metadata
    if meta.get("ref_min_score") is not None and meta.get("ref_max_score") is not None:
        refs = {"random": float(meta["ref_min_score"]), "expert": float(meta["ref_max_score"]),
                "source": f"{args.dataset} metadata (ref_min_score, ref_max_score)"}
    else:
        found = reference_returns(args.env, Path(args.expert) if args.expert else None)
        if found.expert is None:
            raise UnderstudyError(f"{args.dataset} records no expert return (ref_max_score) and there is no expert "
                                  "export to read it from: pass --expert POLICY_DIR.")
        refs = {"random": found.random, "expert": found.expert,
                "source": f"random: {found.random_source}; expert: {found.expert_source}"}
    path.write_text(json.dumps(refs, indent=2))
    log(f"normalized scores use random {refs['random']:.1f} and expert {refs['expert']:.1f} ({refs['source']})")
    return refs


def study_runs(args: BCHeadsStudyArgs) -> list:
    """One runner Run per (method, seed); args must be resolve()d."""
    from understudy.studies.runner import Run

    dataset = str(Path(args.dataset).resolve())
    final = ("--final-eval-episodes", str(args.final_eval_episodes), "--eval-episodes", str(args.eval_episodes),
             "--no-progress")
    per_method = {}
    for method in args.methods.split(","):
        if method in HEADS:
            extra = split_extra_args(args.bc_args, "--bc-args", _STUDY_FLAGS)
            per_method[method] = ("train", "bc", "--dataset", dataset, "--head", method, "--steps", str(args.bc_steps),
                                  "--eval-every", str(args.bc_eval_every), *final, *extra)
        elif method == "dagger":
            extra = split_extra_args(args.dagger_args, "--dagger-args", _STUDY_FLAGS)
            per_method[method] = ("train", "dagger", "--env", args.env, "--expert", str(Path(args.expert).resolve()),
                                  "--dataset", str(dagger_dataset_path(args)), "--steps", str(args.dagger_steps),
                                  "--eval-every", str(args.dagger_eval_every), *final, *extra)
        else:
            extra = split_extra_args(getattr(args, f"{method}_args"), f"--{method}-args", _STUDY_FLAGS)
            per_method[method] = ("train", method, "--env", args.env, "--dataset", dataset, "--steps",
                                  str(args.adversarial_steps), "--eval-every", str(args.adversarial_eval_every),
                                  *final, *extra)
    return [Run(name=f"{method}-seed{args.seed + i}", args=(*cmd, "--seed", str(args.seed + i)))
            for method, cmd in per_method.items() for i in range(args.seeds)]


def _free_settings(out: Path) -> tuple[str, ...]:
    """Flags a continued study may change: the grid itself (methods, seeds) and the settings of methods that have
    no run in the study yet (e.g. add GAIL with --gail-args "--rl ppo" to a study of the BC heads)."""
    from understudy.studies.common import NOT_SETTINGS

    started = {p.name.rsplit("-seed", 1)[0] for p in (out / "runs").glob("*-seed*")} if (out / "runs").is_dir() else set()
    unused = tuple(k for k, methods in _METHOD_SETTINGS.items() if not started & set(methods))
    return NOT_SETTINGS + ("methods", "seed") + unused


def run_study(args: BCHeadsStudyArgs) -> dict:
    from understudy.studies.bc_heads_report import write_bc_heads_report
    from understudy.studies.runner import run_grid

    if args.report_only:
        if args.out is None and args.env is None and args.dataset is None:
            raise UnderstudyError("--report-only rebuilds the report of an existing study: pass its --out DIR.")
        out = Path(args.out or f"runs/study-bc-heads-{args.env or _dataset_env(args.dataset)}")
        if not (out / "runs").is_dir():
            raise UnderstudyError(f"--report-only: {out / 'runs'} does not exist, so there are no runs to report. "
                                  "Pass the --out of a study that has run.")
        results = write_bc_heads_report(out)
        log(f"report rebuilt: {out / 'report.md'}")
        return results
    args = resolve(args)
    out = Path(args.out)
    runs = study_runs(args)
    out.mkdir(parents=True, exist_ok=True)
    check_same_settings(out, args, [r.name for r in runs], not_settings=_free_settings(out))
    (out / "study.json").write_text(json.dumps(
        {"study": "bc-heads", "command": study_command("bc-heads", args), "args": dataclasses.asdict(args),
         "runs": {r.name: ["understudy", *r.args, "--out", str(out.resolve() / "runs" / r.name)] for r in runs}},
        indent=2))
    write_references(args)
    write_dataset_summary(args)
    if "dagger" in args.methods.split(","):
        write_dagger_dataset(args)
    run_grid(runs, out, workers=args.workers, ray_address=args.ray_address, log=record_wall_times(out))
    results = write_bc_heads_report(out)
    log(f"report written to {out / 'report.md'}")
    return results


def main(argv: list[str]) -> None:
    run_study(parse_study_args(BCHeadsStudyArgs, argv, "understudy study bc-heads",
                               passthrough=("--bc-args", "--dagger-args", "--gail-args", "--airl-args")))
