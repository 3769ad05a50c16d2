"""`understudy quickstart`: the whole pipeline on Pendulum-v1 in a few minutes on a laptop CPU.

SAC expert -> expert dataset (Minari format) -> BC (MSE head) -> evaluation of both -> report.md + plot.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

import numpy as np

from understudy.types import UnderstudyError

ENV_ID = "Pendulum-v1"


@dataclasses.dataclass(frozen=True)
class QuickstartArgs:
    """Train a SAC expert on Pendulum-v1, collect expert episodes, train BC on them, evaluate both, report."""

    out: str = "runs/quickstart"
    """Output directory: sac/ and bc/ run directories, data/, report.md and curves.png."""
    sac_steps: int = 12_000
    """SAC environment steps."""
    expert_episodes: int = 50
    """Expert episodes collected for BC (200 steps each)."""
    bc_updates: int = 5_000
    """BC gradient updates."""
    eval_episodes: int = 20
    """Evaluation episodes for each policy."""
    seed: int = 0
    """Seed for everything."""
    overwrite: bool = False
    """Replace an existing --out directory."""
    progress: bool = True
    """Show progress bars."""


def quickstart(args: QuickstartArgs) -> dict:
    from understudy.algos import bc, sac
    from understudy.cli import train
    from understudy.data import save_dataset
    from understudy.data.collect import collect
    from understudy.eval.plots import plot_runs
    from understudy.eval.report import build_report
    from understudy.eval.rollouts import evaluate_policy
    from understudy.policy import load_policy
    from understudy.train.common import RunArgs

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        if not args.overwrite:
            raise UnderstudyError(f"{out} already exists. Pass --overwrite to replace it or choose another --out.")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()

    print(f"[1/4] SAC on {ENV_ID} for {args.sac_steps} steps")
    sac_cfg = sac.Config(learning_starts=1_000, buffer_size=args.sac_steps)
    train("sac", sac_cfg, RunArgs(env=ENV_ID, steps=args.sac_steps, eval_every=max(1, args.sac_steps // 6),
                                  eval_episodes=args.eval_episodes, seed=args.seed, out=str(out / "sac"),
                                  progress=args.progress))
    expert = load_policy(out / "sac" / "final")

    print(f"[2/4] collecting {args.expert_episodes} expert episodes")
    random_return = evaluate_policy(_RandomPolicy(expert.spec, args.seed), ENV_ID, episodes=args.eval_episodes,
                                    seed=args.seed + 20_000)["mean"]
    dataset = collect(ENV_ID, expert, episodes=args.expert_episodes, seed=args.seed + 30_000,
                      policy_name=str(out / "sac" / "final"), progress=args.progress)
    dataset.metadata["ref_min_score"] = random_return
    dataset.metadata["ref_max_score"] = float(dataset.episode_returns().mean())
    save_dataset(dataset, out / "data" / "pendulum-expert")

    print(f"[3/4] BC (MSE head) for {args.bc_updates} updates")
    train("bc", bc.Config(head="mse"), RunArgs(dataset=str(out / "data" / "pendulum-expert"), steps=args.bc_updates,
                                                eval_every=max(1, args.bc_updates // 5), eval_episodes=args.eval_episodes,
                                                seed=args.seed, out=str(out / "bc"), progress=args.progress))

    print(f"[4/4] evaluating both over {args.eval_episodes} episodes and writing the report")
    results = {}
    for name in ("sac", "bc"):
        r = evaluate_policy(load_policy(out / name / "final"), ENV_ID, episodes=args.eval_episodes, seed=args.seed + 40_000)
        results[name] = r
        (out / name / "final_eval.json").write_text(json.dumps(r, indent=2))
    expert_return = results["sac"]["mean"]
    bc_normalized = (results["bc"]["mean"] - random_return) / (expert_return - random_return)
    plot_runs([str(out / "sac")], str(out / "sac_curve.png"), title="SAC on Pendulum-v1")
    plot_runs([str(out / "bc")], str(out / "bc_curve.png"), title="BC (MSE) on the SAC expert's episodes")
    minutes = (time.time() - started) / 60
    text = "\n".join([
        "# understudy quickstart", "",
        f"Pendulum-v1, seed {args.seed}, {minutes:.1f} minutes in all. Evaluation: {args.eval_episodes} episodes, "
        "deterministic actions.", "",
        "| policy | return (mean ± std) | normalized score |", "|---|---|---|",
        f"| random | {random_return:.1f} | 0.00 |",
        f"| SAC expert ({args.sac_steps} env steps) | {results['sac']['mean']:.1f} ± {results['sac']['std']:.1f} | 1.00 |",
        f"| BC, MSE head ({args.expert_episodes} expert episodes, {args.bc_updates} updates) | "
        f"{results['bc']['mean']:.1f} ± {results['bc']['std']:.1f} | {bc_normalized:.2f} |", "",
        "Normalized score = (return − random) / (SAC expert − random).", "",
        "Training curves: `sac_curve.png`, `bc_curve.png`.", "",
        "## Per-run table (from the runs' own final evaluations)", "",
        build_report([str(out / "sac"), str(out / "bc")], title=None), "",
    ])
    (out / "report.md").write_text(text)
    print(text)
    return {"sac": results["sac"]["mean"], "bc": results["bc"]["mean"], "random": random_return,
            "bc_normalized": bc_normalized, "minutes": minutes}


class _RandomPolicy:
    """Uniform random actions with the Policy calling convention (for the random reference return)."""

    def __init__(self, spec, seed: int):
        self.spec = spec
        self.rng = np.random.default_rng(seed)

    def __call__(self, obs, deterministic: bool = True):
        n = len(obs)
        return self.rng.uniform(self.spec.action_low, self.spec.action_high, size=(n, self.spec.action_dim)).astype(np.float32)
