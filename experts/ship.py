"""Ship a trained policy as an expert: `experts/<ENV_ID>/` with expert.json and a `medium/` snapshot.

    python experts/ship.py --run /work/expert-runs/sac-Hopper-v5 --env Hopper-v5 \
        --command "understudy train sac --env Hopper-v5 ..." --out experts/Hopper-v5

It copies the run's export (`best/` by default), evaluates it over 100 deterministic episodes exactly as
`understudy eval EXPORT --env ID --episodes 100 --seed 0 --json F` does, measures the uniform-random policy
over 100 episodes, picks the medium snapshot (the one whose recorded evaluation return is closest to one third
of the expert's normalized return, unless --medium-step names one) with its replay buffer, and writes
expert.json. It refuses to replace an existing expert directory unless --overwrite is given.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from understudy.data.recipes import REPLAY_FILE, References, Sources, pick_medium
from understudy.eval.rollouts import evaluate_policy, evaluate_seeds
from understudy.policy import load_policy

EXPORT_FILES = ("policy.json", "policy.safetensors")


def wall_time_at(run: Path, step: int) -> float | None:
    """time_s of the run's metrics.csv row at `step` (None when there is none)."""
    with open(run / "metrics.csv") as f:
        return next((float(row["time_s"]) for row in csv.DictReader(f) if int(row["step"]) == step), None)


def random_return(env_id: str, episodes: int) -> dict:
    from understudy.envs import make_spec

    spec = make_spec(env_id)
    rng = np.random.default_rng(0)
    low, high = np.asarray(spec.action.low), np.asarray(spec.action.high)

    def act(obs):
        return rng.uniform(low, high, size=obs.shape[:2] + low.shape).astype(np.float32)

    return evaluate_seeds(act, env_id, episodes=episodes, seed=0)[0]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, type=Path, help="the training run directory")
    p.add_argument("--export", default="best", help="the export inside the run to ship (best, final, snapshots/step_N)")
    p.add_argument("--env", required=True)
    p.add_argument("--command", required=True, help="the exact command that trained the run")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--medium-step", type=int, default=None)
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)

    if args.out.exists() and not args.overwrite:
        print(f"error: {args.out} exists; pass --overwrite to replace it.", file=sys.stderr)
        return 2
    source = args.run / args.export
    step = int(json.loads((source / "policy.json").read_text())["metadata"]["step"])

    policy = load_policy(source, seed=0)
    expert = evaluate_policy(policy, args.env, episodes=args.episodes, seed=0, env_options={}, deterministic=True)
    rand = random_return(args.env, args.episodes)
    print(f"{args.env}: expert {expert['mean']:.1f} ± {expert['std']:.1f}, random {rand['mean']:.1f}")

    # the recipes' own choice of medium policy, from the snapshots' recorded evaluation returns
    refs = References(rand["mean"], expert["mean"], "random", "expert")
    medium_policy = None if args.medium_step is None else args.run / "snapshots" / f"step_{args.medium_step}"
    snapshots = tuple(sorted(d for d in (args.run / "snapshots").glob("step_*") if (d / "policy.json").exists()))
    medium = pick_medium(Sources(expert=source, medium=medium_policy, snapshots=snapshots, origin=args.run), refs)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "medium").mkdir(exist_ok=True)
    for name in EXPORT_FILES:
        shutil.copy2(source / name, args.out / name)
        shutil.copy2(medium.export / name, args.out / "medium" / name)
    has_replay = (medium.export / REPLAY_FILE).exists()
    if has_replay:
        shutil.copy2(medium.export / REPLAY_FILE, args.out / "medium" / REPLAY_FILE)
    time_s = wall_time_at(args.run, step)

    record = {
        "env_id": args.env, "algo": json.loads((args.run / "config.json").read_text())["algo"],
        "command": args.command, "steps": step, "export": f"{args.export}/ of the run at step {step}",
        "wall_time_s": None if time_s is None else round(time_s, 2),
        "evaluation": f"understudy eval experts/{args.env} --env {args.env} --episodes {args.episodes} --seed 0 "
                      "--json F (deterministic actions)",
        **{k: expert[k] for k in ("returns", "lengths", "mean", "std", "success_rate")},
        "random_return": rand["mean"], "random_std": rand["std"],
        "random_evaluation": f"uniform random actions, {args.episodes} episodes, env seeds 0..{args.episodes - 1} "
                             "(understudy.eval.rollouts.evaluate_seeds)",
        "medium": {"path": "medium/", "source": f"{medium.export.relative_to(args.run)} of the same run",
                   "eval_return_10_episodes": round(medium.eval_return, 2),
                   "why": "chosen with --medium-step" if medium.target is None else "the snapshot closest to one "
                          f"third of the expert's normalized return (about {medium.target:.0f})"},
    }
    if has_replay:
        medium_step = json.loads((medium.export / "policy.json").read_text())["metadata"]["step"]
        record["medium"]["replay"] = (f"medium/replay.safetensors holds the replay buffer's {medium_step} transitions "
                                      "at that step (medium-replay recipe)")
    (args.out / "expert.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out} (medium: {medium.export.name}, recorded return {medium.eval_return:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
