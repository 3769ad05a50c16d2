"""Studies: one command runs a whole experiment (data, training, evaluation) and writes its report.

Each study is a function `main(argv)`; STUDIES maps the `understudy study NAME` names to "module" (its `main`)
or "module:function" (one module may hold several studies).
"""

from __future__ import annotations

import importlib

from understudy.types import UnderstudyError

STUDIES: dict[str, tuple[str, str]] = {
    "mountaincar-language": ("understudy.studies.mountaincar_language",
                             "Note 000: captioned corpus, trajectory-sentence reward model, RL agents trained only on "
                             "a sentence's score, behaviour report (< 30 min on 2 CPU cores)"),
    "bc-heads": ("understudy.studies.bc_heads",
                 "Issue 4: every behaviour-cloning head, DAgger, GAIL and AIRL on one expert dataset, one run per "
                 "method and seed; returns, normalized scores, IQM CIs, curves"),
    "offline-locomotion": ("understudy.studies.offline_locomotion",
                           "Issue 5: BC, TD3+BC, IQL, CQL, DT, MOReL on halfcheetah / hopper / walker2d medium, "
                           "medium-replay and medium-expert datasets from the shipped experts; CORL-style table"),
    "offline-walker": ("understudy.studies.offline_walker",
                       "Issue 5 / note 002: BC, CQL, TD3+BC, IQL, DT (MOReL) on dm_control walker walk / run / "
                       "walk+run, with and without the task bit, expert/medium/medium-replay data; --obs-noise "
                       "robustness and --train-obs-noise augmentation; note 002's numbers beside ours"),
    "instruct-babyai": ("understudy.studies.instruct:main_babyai",
                        "Issue 7: BabyAI bot demos (GoToLocal, PickupLoc, PutNextLocal), one instruction-following "
                        "policy per seed, per-level success against the targets"),
    "instruct-metaworld": ("understudy.studies.instruct:main_metaworld",
                           "Issue 7: Meta-World MT10 scripted demos (states or --images), one policy per seed, "
                           "success on training instructions vs held-out paraphrases"),
}


def main(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help"):
        lines = [f"  {name:<22} {desc}" for name, (_, desc) in STUDIES.items()]
        print("usage: understudy study NAME [OPTIONS]\n\nstudies:\n" + "\n".join(lines)
              + "\n\n`understudy study NAME --help` lists its options.")
        return
    name = argv[0]
    if name not in STUDIES:
        raise UnderstudyError(f"Unknown study {name!r}. Available: {', '.join(STUDIES)}.")
    module, _, function = STUDIES[name][0].partition(":")
    getattr(importlib.import_module(module), function or "main")(argv[1:])
