"""`understudy language ...`: corpus, train-reward, eval-reward."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Annotated, Optional

import tyro

from understudy.types import UnderstudyError

USAGE = """usage: understudy language COMMAND [OPTIONS]

commands:
  corpus NAME    captioned trajectories: understudy language corpus mountaincar --episodes N --out PATH
  train-reward   train a trajectory-sentence reward model: --corpus PATH --out DIR
  eval-reward    pairwise accuracy of a reward model on a corpus: MODEL --corpus PATH [--json F]

`understudy language COMMAND --help` lists a command's options."""


@dataclasses.dataclass(frozen=True)
class CorpusArgs:
    """Collect a captioned trajectory corpus (trajectories from a spread of behaviours, labelled by rules)."""

    name: Annotated[str, tyro.conf.Positional]
    """Corpus name: mountaincar (MountainCar-v0) or mountaincar-continuous (MountainCarContinuous-v0)."""
    out: str
    """Output dataset directory (Minari format; each episode carries its sentence and category)."""
    episodes: int = 600
    """Number of episodes."""
    seed: int = 0
    """Seed of the behaviours and the environment."""
    overwrite: bool = False
    """Replace an existing dataset at --out."""
    progress: bool = True
    """Show a progress bar."""


@dataclasses.dataclass(frozen=True)
class EvalRewardArgs:
    """Pairwise accuracy of a reward model on every episode of a corpus, with its training and held-out sentences."""

    model: Annotated[str, tyro.conf.Positional]
    """Reward model directory (the --out of train-reward, or its model/ directory)."""
    corpus: str
    """Captioned corpus to evaluate on (e.g. a fresh one: `language corpus mountaincar --seed 7`)."""
    json: Optional[str] = None
    """Also write the results to this JSON file."""


def cmd_corpus(argv: list[str]) -> None:
    from understudy.data import save_dataset
    from understudy.language.corpus import make_corpus

    args = tyro.cli(CorpusArgs, args=argv, prog="understudy language corpus")
    if os.path.exists(args.out) and not args.overwrite:
        raise UnderstudyError(f"{args.out} already exists; pass --overwrite to replace it or choose another --out.")
    ds = make_corpus(args.name, args.episodes, seed=args.seed, progress=args.progress)
    save_dataset(ds, args.out, overwrite=args.overwrite)
    counts = ", ".join(f"{c}: {n}" for c, n in ds.metadata["category_counts"].items())
    print(f"wrote {ds.num_episodes} captioned episodes ({counts}) to {args.out}")


def cmd_train_reward(argv: list[str]) -> None:
    from understudy.language.train_reward import RewardTrainConfig, train_reward_model

    cfg = tyro.cli(RewardTrainConfig, args=argv, prog="understudy language train-reward")
    report = train_reward_model(cfg)
    print(_summary(report) + f"\nreward model written to {os.path.join(cfg.out, 'model')}")


def cmd_eval_reward(argv: list[str]) -> None:
    from understudy.data import load_dataset
    from understudy.language.reward_model import RewardModel
    from understudy.language.train_reward import corpus_parts, evaluate_reward_model

    args = tyro.cli(EvalRewardArgs, args=argv, prog="understudy language eval-reward")
    model = RewardModel.load(args.model)
    ds = load_dataset(args.corpus)
    categories, sentences, held_out, _ = corpus_parts(ds)
    if categories != model.categories:
        raise UnderstudyError(f"The corpus's categories {categories} differ from the model's {model.categories}; "
                              "evaluate on a corpus of the same kind.")
    report = evaluate_reward_model(model, ds, sentences, held_out)
    print(_summary(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


def _summary(report: dict) -> str:
    parts = [f"{name.replace('_', ' ')}: pairwise accuracy {report[name]['pairwise_accuracy']:.3f}, category accuracy "
             f"{report[name]['category_accuracy']:.3f}" for name in ("train_sentences", "held_out") if name in report]
    return f"on {report['episodes']} episodes: " + "; ".join(parts)


COMMANDS = {"corpus": cmd_corpus, "train-reward": cmd_train_reward, "eval-reward": cmd_eval_reward}


def main(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    if argv[0] not in COMMANDS:
        raise UnderstudyError(f"Unknown language command {argv[0]!r}. Available: {', '.join(COMMANDS)}.")
    COMMANDS[argv[0]](argv[1:])
