"""`understudy <command>`: a thin dispatcher; each command's flags come from a documented dataclass via tyro.

User errors (UnderstudyError) print as one paragraph and exit 2; `--debug` anywhere shows the traceback.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Annotated, Literal, Optional

import tyro

from understudy.types import UnderstudyError

from understudy.algos import ALGORITHMS as ALGOS  # name -> (module path, training loop, description)

COMMANDS = {
    "quickstart": "Train a SAC expert on Pendulum-v1, collect a dataset, train BC on it, evaluate and report.",
    "train": "Train an algorithm: understudy train ALGO (--env ID | --dataset PATH) [options]. ALGO: " + ", ".join(ALGOS),
    "collect": "Roll out a policy export (or random actions, the BabyAI bot, Meta-World scripted policies), or a "
               "D4RL-style --recipe, into a Minari dataset.",
    "eval": "Evaluate a policy export over N episodes; optional video and JSON.",
    "data": "Dataset tools: understudy data info PATH",
    "report": "Markdown table (mean ± std, IQM with 95% CI, normalized score) from run directories.",
    "plot": "Plot evaluation return over training for run directories, with a CI band over seeds.",
    "language": "Language rewards: understudy language (corpus | train-reward | eval-reward) ...",
    "study": "Run a whole study and write its report: understudy study NAME [options]. NAME: mountaincar-language, "
             "bc-heads, offline-locomotion, offline-walker, instruct-babyai, instruct-metaworld",
}


# ----------------------------------------------------------------------------------------------
# Command arguments
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class EvalArgs:
    """Evaluate a policy export over N episodes."""

    policy_dir: Annotated[str, tyro.conf.Positional]
    """Policy export directory (policy.json + policy.safetensors), e.g. runs/x/final or experts/Pendulum-v1."""
    env: Optional[str] = None
    """Environment id (default: the env the policy was trained on)."""
    episodes: int = 10
    """Number of evaluation episodes."""
    seed: int = 0
    """Seed of the first episode's environment."""
    stochastic: bool = False
    """Sample actions instead of taking the policy's mode."""
    obs_noise: float = 0.0
    """Std of Gaussian noise added to observations."""
    video: Optional[str] = None
    """Also record one episode to this mp4 file (headless)."""
    json: Optional[str] = None
    """Write {returns, lengths, mean, std, success_rate} to this JSON file."""
    instructions: Literal["train", "held-out"] = "train"
    """Instruction-following policies on Meta-World: give the training paraphrases or the held-out ones."""


@dataclasses.dataclass(frozen=True)
class CollectArgs:
    """Roll out a policy and save complete episodes as a Minari dataset."""

    env: str
    """Environment id."""
    out: str
    """Output dataset directory (Minari format). Never overwritten without --overwrite."""
    policy: str = "random"
    """A policy export directory, `random` for uniform random actions, `bot` (the BabyAI bot; --env babyai:LEVEL) or `scripted` (Meta-World's scripted policies; --env metaworld:TASK or a suite such as metaworld:MT10, with --episodes per task). With --recipe: the expert policy export, a training run directory (final/ = expert, snapshots/ = medium candidates), or an expert directory."""
    recipe: Optional[Literal["random", "medium", "medium-replay", "expert", "medium-expert"]] = None
    """D4RL-style recipe; records reference returns (random, expert) in the dataset's metadata."""
    medium_policy: Optional[str] = None
    """With --recipe medium/medium-expert/medium-replay: the medium policy export (default: the snapshot closest to one third of the expert's normalized return)."""
    action_noise: float = 0.0
    """Std of Gaussian noise added to the collecting policy's actions (normalized units, clipped to bounds)."""
    clean_action_labels: bool = False
    """With --action-noise: execute the noisy action but record the policy's noise-free one (DART-style noise injection for imitation: the states show recoveries, the labels stay the expert's). For BC, DAgger, GAIL and AIRL only; offline RL refuses such data."""
    reference_episodes: int = 100
    """With --recipe: episodes used to measure the random and expert reference returns."""
    episodes: Optional[int] = None
    """Number of episodes to collect (default 10 when --steps is not given)."""
    steps: Optional[int] = None
    """Collect whole episodes until at least this many steps."""
    seed: int = 0
    """Seed of the environments and of the policy's sampling."""
    stochastic: bool = False
    """Sample actions from the policy instead of taking its mode."""
    overwrite: bool = False
    """Replace an existing dataset at --out."""
    images: bool = False
    """With --policy scripted (Meta-World): also record 64x64 RGB renders; observations become {state, image}."""
    progress: bool = True
    """Progress bars (--no-progress for logs and batch jobs)."""


@dataclasses.dataclass(frozen=True)
class DataInfoArgs:
    """Print a dataset's episodes, steps, return statistics and spaces."""

    path: Annotated[str, tyro.conf.Positional]
    """Minari dataset directory or id, or a D4RL-style HDF5 file."""
    json: bool = False
    """Print JSON instead of text."""


@dataclasses.dataclass(frozen=True)
class ReportArgs:
    """Write a markdown results table from run directories."""

    run_dirs: Annotated[tuple[str, ...], tyro.conf.Positional]
    """Run directories (each holding eval.json)."""
    out: Optional[str] = None
    """Write the markdown here (default: print it)."""


@dataclasses.dataclass(frozen=True)
class PlotArgs:
    """Plot evaluation return over training steps with a 95% CI band over seeds."""

    run_dirs: Annotated[tuple[str, ...], tyro.conf.Positional]
    """Run directories (each holding metrics.csv)."""
    out: str = "curves.png"
    """Output PNG file."""
    title: Optional[str] = None
    """Figure title."""


# ----------------------------------------------------------------------------------------------
# Commands
# ----------------------------------------------------------------------------------------------
def cmd_train(argv: list[str]) -> None:
    import importlib

    from understudy.train.common import RunArgs

    if not argv or argv[0] in ("-h", "--help"):
        lines = [f"  {name:<13} {desc}" for name, (_, _, desc) in ALGOS.items()]
        print("usage: understudy train ALGO (--env ID | --dataset PATH) [--preset NAME] [OPTIONS]\n\nalgorithms:\n"
              + "\n".join(lines) + "\n\n`understudy train ALGO --help` lists every option with its default; "
              "`--preset NAME` starts from a named set of defaults (listed in the algorithm's help).")
        return
    name = argv[0]
    if name not in ALGOS:
        raise UnderstudyError(f"Unknown algorithm '{name}'{_close(name, ALGOS)}. Available: {', '.join(ALGOS)}.")
    module_path, loop_name, desc = ALGOS[name]
    algo = importlib.import_module(module_path)

    # built at run time: annotations must be real types (not strings) for tyro to resolve them here
    TrainArgs = dataclasses.make_dataclass(
        "TrainArgs", [("run", Annotated[RunArgs, tyro.conf.arg(name="")]),
                      ("algo", Annotated[algo.Config, tyro.conf.arg(name="")])], frozen=True)
    presets = getattr(algo, "PRESETS", {})
    TrainArgs.__doc__ = desc + (f"\n\nPresets (--preset NAME): {', '.join(presets)}." if presets else "")
    rest, preset = _pop_preset(argv[1:], name, presets)
    if preset is not None:
        TrainArgs.__doc__ += f" The defaults below are those of preset '{preset}'."
    default = TrainArgs(run=RunArgs(), algo=algo.PRESETS[preset] if preset else algo.Config())
    args = tyro.cli(TrainArgs, args=rest, prog=f"understudy train {name}", default=default)
    train(name, args.algo, args.run)


def _pop_preset(argv: list[str], algo_name: str, presets: dict) -> tuple[list[str], str | None]:
    """Takes `--preset NAME` out of argv: a preset replaces the algorithm's defaults; flags still override it."""
    if "--preset" not in argv:
        return argv, None
    i = argv.index("--preset")
    if i + 1 >= len(argv):
        raise UnderstudyError(f"--preset needs a name. Presets of {algo_name}: {', '.join(presets) or 'none'}.")
    name = argv[i + 1]
    if name not in presets:
        raise UnderstudyError(f"Unknown preset '{name}' for {algo_name}{_close(name, presets)}. "
                              f"Available: {', '.join(presets) or 'none (this algorithm has no presets)'}.")
    return argv[:i] + argv[i + 2:], name


def train(algo_name: str, cfg, run):
    """Runs `understudy train` from Python (also `understudy.fit`): `fit("sac", sac.Config(), RunArgs(env="Pendulum-v1"))`."""
    import importlib

    module_path, loop_name, _ = ALGOS[algo_name]
    from understudy.train.augment import check_supported

    check_supported(loop_name, getattr(run, "obs_noise_augment", 0.0))
    algo = importlib.import_module(module_path)
    loop = importlib.import_module(f"understudy.train.{loop_name}")
    if hasattr(algo, "method_name"):
        method = algo.method_name(cfg)
    else:
        method = f"{algo_name}-{cfg.head}" if hasattr(cfg, "head") else algo_name
    if getattr(run, "reward_text", None):
        method += f", sentence: {run.reward_text}"  # a language-reward run is a different method in reports
    summary = loop.train(algo_name, algo, cfg, run, method=method)
    means = [s["mean"] for s in summary["final"]["seeds"]]
    print(f"{method} on {summary['env_id']}: final return per seed {[round(m, 1) for m in means]}"
          f" (run directory: {run.out or '(default)'})")
    return summary


def cmd_eval(argv: list[str]) -> None:
    import json as json_lib

    from understudy.eval.rollouts import evaluate_policy
    from understudy.policy import load_policy

    args = tyro.cli(EvalArgs, args=argv, prog="understudy eval")
    from understudy.instruct.policy import is_instruct_policy

    if is_instruct_policy(args.policy_dir):
        return _eval_instruct(args)
    from understudy.algos.dt_policy import is_dt_policy

    if is_dt_policy(args.policy_dir):
        return _eval_dt(args)
    policy = load_policy(args.policy_dir, seed=args.seed)
    env_id = args.env or policy.spec.env_id
    options = {k: v for k, v in policy.spec.options.items() if k == "task_bit"}
    if args.obs_noise:
        options["obs_noise"] = args.obs_noise
    _check_env_matches(policy, env_id, options)
    result = evaluate_policy(policy, env_id, episodes=args.episodes, seed=args.seed, env_options=options,
                             deterministic=not args.stochastic)
    success = "" if result["success_rate"] is None else f", success rate {result['success_rate']:.2f}"
    print(f"{env_id}: return {result['mean']:.2f} ± {result['std']:.2f} over {args.episodes} episodes{success}")
    if args.json:
        with open(args.json, "w") as f:
            json_lib.dump(result, f, indent=2)
    if args.video:
        from understudy.envs import record_video

        record_video(env_id, lambda o: policy(o, deterministic=not args.stochastic), args.video, episodes=1,
                     seed=args.seed, **options)
        print(f"video written to {args.video}")


def _eval_dt(args: EvalArgs) -> None:
    """A Decision Transformer export: rollouts with a history, asking for the return saved with the policy."""
    import json as json_lib

    from understudy.algos.dt_policy import DTPolicy

    if args.video or args.stochastic:
        raise UnderstudyError("--video and --stochastic are not supported for Decision Transformer policies "
                              "(they act deterministically from a history); drop them.")
    policy = DTPolicy.load(args.policy_dir)
    env_id = args.env or policy.spec.env_id
    options = {k: v for k, v in policy.spec.options.items() if k == "task_bit"}
    if args.obs_noise:
        options["obs_noise"] = args.obs_noise
    _check_env_matches(policy, env_id, options)
    result = policy.evaluate(env_id, episodes=args.episodes, seed=args.seed, env_options=options)
    print(f"{env_id} (target return {policy.target_return:g}): return {result['mean']:.2f} ± {result['std']:.2f} "
          f"over {args.episodes} episodes")
    if args.json:
        with open(args.json, "w") as f:
            json_lib.dump(result, f, indent=2)


def _eval_instruct(args: EvalArgs) -> None:
    import json as json_lib

    from understudy.instruct.evaluate import evaluate_task, task_for_env
    from understudy.instruct.policy import InstructPolicy

    if args.video or args.obs_noise or args.stochastic:
        raise UnderstudyError("--video, --obs-noise and --stochastic are not supported for instruction-following "
                              "policies yet; drop them.")
    policy = InstructPolicy.load(args.policy_dir)
    task = task_for_env(policy, args.env)
    result = evaluate_task(policy, task, episodes=args.episodes, seed=args.seed, instructions=args.instructions)
    if result is None:
        raise UnderstudyError(f"{task['env_id']} has no held-out paraphrases; use --instructions train.")
    print(f"{task['env_id']} ({args.instructions} instructions): return {result['mean']:.2f} ± {result['std']:.2f} "
          f"over {args.episodes} episodes, success rate {result['success_rate']:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json_lib.dump(result, f, indent=2)


def _check_env_matches(policy, env_id: str, options: dict) -> None:
    from understudy.envs import make_spec

    spec = make_spec(env_id, **options)
    if spec.obs_shape != policy.spec.obs_shape or spec.discrete != policy.spec.discrete or \
            spec.action_dim != policy.spec.action_dim:
        raise UnderstudyError(
            f"The policy was trained on {policy.spec.env_id} (observation {policy.spec.obs_shape}, "
            f"{policy.spec.action_dim} action dims) but {env_id} has observation {spec.obs_shape} and "
            f"{spec.action_dim} action dims. Evaluate it on a matching env (--env {policy.spec.env_id}).")


def cmd_collect(argv: list[str]) -> None:
    from understudy.data.collect import collect

    args = tyro.cli(CollectArgs, args=argv, prog="understudy collect")
    if os.path.exists(args.out) and not args.overwrite:
        raise UnderstudyError(f"{args.out} already exists; pass --overwrite to replace it or choose another --out.")
    demonstrator = args.policy in ("bot", "scripted") and not os.path.isdir(args.policy)
    if demonstrator:
        if args.recipe is not None or args.steps is not None:
            raise UnderstudyError(f"--policy {args.policy} collects whole demonstration episodes: use --episodes N "
                                  "(per task for a suite) instead of --recipe or --steps.")
        from understudy.instruct.demos import collect_demonstrations

        ds = collect_demonstrations(args.env, args.policy, args.episodes if args.episodes is not None else 10,
                                    seed=args.seed, images=args.images, action_noise=args.action_noise,
                                    clean_action_labels=args.clean_action_labels, progress=args.progress)
        _save_collected(ds, args)
        return
    if args.images:
        raise UnderstudyError("--images records 64x64 renders and works only with --policy scripted on Meta-World "
                              "(e.g. --env metaworld:MT10 --policy scripted --images); drop --images.")
    if args.recipe is not None:
        from understudy.data.recipes import collect_recipe

        if args.episodes is not None:
            raise UnderstudyError("--recipe collects by steps (D4RL style): use --steps N instead of --episodes.")
        if args.clean_action_labels:
            raise UnderstudyError("--recipe makes offline-RL datasets, whose actions must be the executed ones; "
                                  "--clean-action-labels is for imitation data: drop one of them.")
        ds = collect_recipe(args.env, args.recipe, steps=args.steps,
                            policy=None if args.policy == "random" else args.policy,
                            medium_policy=args.medium_policy, action_noise=args.action_noise,
                            stochastic=args.stochastic, seed=args.seed, reference_episodes=args.reference_episodes,
                            progress=args.progress)
        _save_collected(ds, args)
        return
    episodes = args.episodes if args.episodes is not None or args.steps is not None else 10
    if args.policy == "random":
        policy, name = "random", "random"
    else:
        from understudy.policy import load_policy

        loaded = load_policy(args.policy, seed=args.seed)
        policy, name = (lambda o: loaded(o, deterministic=not args.stochastic)), os.path.abspath(args.policy)
    ds = collect(args.env, policy, episodes=episodes, steps=args.steps, seed=args.seed, policy_name=name,
                 action_noise=args.action_noise, clean_action_labels=args.clean_action_labels,
                 progress=args.progress)
    _save_collected(ds, args)


def _save_collected(ds, args: CollectArgs) -> None:
    from understudy.data import save_dataset

    save_dataset(ds, args.out, overwrite=args.overwrite)
    returns = ds.episode_returns()
    print(f"wrote {ds.num_episodes} episodes ({ds.num_steps} steps, return {returns.mean():.1f} ± {returns.std():.1f}) "
          f"to {args.out}")


def cmd_data(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: understudy data info PATH [--json]\n\n  info   episodes, steps, return statistics and spaces of a dataset")
        return
    if argv[0] != "info":
        raise UnderstudyError(f"Unknown data command '{argv[0]}'. Available: info (understudy data info PATH).")
    import json as json_lib

    from understudy.data import load_dataset
    from understudy.data.info import dataset_info, format_info

    args = tyro.cli(DataInfoArgs, args=argv[1:], prog="understudy data info")
    info = dataset_info(load_dataset(args.path))
    print(json_lib.dumps(info, indent=2, default=str) if args.json else format_info(info))


def cmd_report(argv: list[str]) -> None:
    from understudy.eval.report import build_report, write_report

    args = tyro.cli(ReportArgs, args=argv, prog="understudy report")
    if args.out:
        write_report(list(args.run_dirs), args.out)
        print(f"report written to {args.out}")
    else:
        print(build_report(list(args.run_dirs)))


def cmd_plot(argv: list[str]) -> None:
    from understudy.eval.plots import plot_runs

    args = tyro.cli(PlotArgs, args=argv, prog="understudy plot")
    plot_runs(list(args.run_dirs), args.out, title=args.title)
    print(f"plot written to {args.out}")


def cmd_quickstart(argv: list[str]) -> None:
    from understudy.quickstart import QuickstartArgs, quickstart

    quickstart(tyro.cli(QuickstartArgs, args=argv, prog="understudy quickstart"))


def cmd_language(argv: list[str]) -> None:
    from understudy.language.commands import main as language_main

    language_main(argv)


def cmd_study(argv: list[str]) -> None:
    from understudy.studies import main as study_main

    study_main(argv)


HANDLERS = {"quickstart": cmd_quickstart, "train": cmd_train, "collect": cmd_collect, "eval": cmd_eval,
            "data": cmd_data, "report": cmd_report, "plot": cmd_plot, "language": cmd_language, "study": cmd_study}


def _close(name: str, options) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(options), n=3)
    return f" (did you mean {' or '.join(close)}?)" if close else ""


def usage() -> str:
    lines = [f"  {name:<11} {desc}" for name, desc in COMMANDS.items()]
    return ("usage: understudy COMMAND [OPTIONS]\n\nLearn control policies from demonstrations, offline data and rewards.\n\n"
            "commands:\n" + "\n".join(lines) + "\n\nglobal flags:\n  --debug     show full tracebacks on errors\n\n"
            "`understudy COMMAND --help` lists a command's options with their defaults.")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    import warnings

    # ffmpeg (video) starts with fork+exec, which is safe; JAX warns about any fork
    warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called")
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in HANDLERS:
        print(f"error: unknown command '{command}'{_close(command, HANDLERS)}.\n\n{usage()}", file=sys.stderr)
        return 2
    try:
        HANDLERS[command](rest)
    except UnderstudyError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and closed early: not an error
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug, not a user error: say so briefly, keep the traceback behind --debug
        if debug:
            raise
        print(f"error: unexpected {type(e).__name__}: {e}\n(run again with --debug for the full traceback)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
