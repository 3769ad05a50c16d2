"""`understudy study mountaincar-language`: note 000 end to end, on defaults that fit 2 CPU cores in < 30 minutes.

1. corpus        captioned MountainCar trajectories (`understudy language corpus mountaincar`)
2. reward model  trained on it; accuracy on held-out episodes with held-out paraphrases
3. agents        one RL agent per category sentence, trained only on the reward model's score of that sentence
                 (the environment's reward is never seen), plus the same algorithm on the environment's reward
4. behaviour     each agent's final policy over 100 episodes, captioned: how often it does what its sentence says
5. report        report.md, results.json, curves.png (return over training, sentence vs true reward),
                 behaviour.png

Every stage writes into --out and is skipped when its output exists, so a killed study resumes where it was
(a partly trained agent resumes from its last checkpoint).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Literal, Optional

from understudy.types import UnderstudyError

TOP = "The car is able to reach the top of the mountain"
BOTTOM = "The car stays at the bottom of the valley"
SWING = "The car swings out of the valley but does not reach the top"


@dataclasses.dataclass(frozen=True)
class StudyArgs:
    """Language-grounded rewards on MountainCar (note 000): corpus, reward model, RL from sentences, report."""

    out: str = "runs/study-mountaincar-language"
    """Study directory (re-running continues a killed study; finished stages are not redone)."""
    seeds: int = 1
    """Seeds per agent, trained side by side in one process (vmapped)."""
    corpus_episodes: int = 600
    """Episodes in the captioned corpus (20% held out for the reward model's evaluation)."""
    reward_steps: int = 1000
    """Reward model updates."""
    algo: Literal["dqn", "ppo"] = "dqn"
    """RL algorithm for every agent, the same for the sentence agents and the environment-reward baseline (DQN: its `mountaincar` preset with a 50k buffer and lr 1e-3; PPO: its `classic-discrete` preset)."""
    rl_steps: int = 100_000
    """Environment steps per agent."""
    eval_every: int = 10_000
    """Evaluation interval during RL (20 episodes each)."""
    eval_episodes: int = 100
    """Episodes for each agent's final behaviour evaluation."""
    workers: int = 2
    """Agents trained at the same time, one process each (2 fits a 2-core machine)."""
    reward_mode: Literal["score", "difference"] = "score"
    """How the sentence's score becomes a reward (see `understudy train --help`): 'score' pays the score of the trajectory so far at every step (note 000)."""
    reward_scale: float = 0.25
    """Scale of the language reward."""
    reward_min: float = -1.0
    """Lower clip of the language reward."""
    reward_max: float = 1.0
    """Upper clip of the language reward."""
    env_reward_baseline: bool = True
    """Also train the same algorithm on the environment's own reward, for the learning-curve comparison."""
    seed: int = 0
    """Base seed of every stage."""
    progress: bool = True
    """Progress bars."""


# category -> the sentence its agent is trained on (the report checks each agent against its category)
SENTENCES = {"top": TOP, "bottom": BOTTOM, "swing": SWING}


def _log(msg: str) -> None:
    print(f"[study {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run_study(args: StudyArgs) -> dict:
    from understudy.data import load_dataset, save_dataset
    from understudy.language.captions import MountainCarCaptioner
    from understudy.language.corpus import mountaincar_corpus
    from understudy.language.train_reward import RewardTrainConfig, train_reward_model

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    timings: dict[str, float] = json.loads((out / "timings.json").read_text()) if (out / "timings.json").exists() else {}

    def timed(stage: str, t0: float) -> None:
        timings[stage] = round(time.time() - t0, 1)
        (out / "timings.json").write_text(json.dumps(timings, indent=2))

    # 1. corpus
    corpus = out / "corpus"
    if not (corpus / "data").exists():
        t0 = time.time()
        _log(f"collecting a captioned corpus of {args.corpus_episodes} episodes")
        save_dataset(mountaincar_corpus(args.corpus_episodes, seed=args.seed, progress=args.progress), corpus)
        timed("corpus", t0)
    counts = load_dataset(corpus).metadata.get("category_counts")

    # 2. reward model
    reward_dir = out / "reward_model"
    if not (reward_dir / "eval.json").exists():
        t0 = time.time()
        _log(f"training the reward model ({args.reward_steps} updates)")
        train_reward_model(RewardTrainConfig(corpus=str(corpus), out=str(reward_dir), steps=args.reward_steps,
                                             seed=args.seed, overwrite=True, progress=args.progress))
        timed("reward_model", t0)
    reward_eval = json.loads((reward_dir / "eval.json").read_text())
    _log(f"reward model: held-out pairwise accuracy {reward_eval['held_out']['pairwise_accuracy']:.3f}")

    # 3. agents, `workers` training processes at a time (finished ones are not redone; killed ones resume)
    from understudy.studies.runner import run_grid

    agents = {f"sentence-{k}": s for k, s in SENTENCES.items()}
    if args.env_reward_baseline:
        agents["env-reward"] = None
    t0 = time.time()
    status = run_grid([_agent_run(args, name, sentence, str(reward_dir)) for name, sentence in agents.items()], out,
                      workers=args.workers, runs_dir="agents", log=_log)
    if any(v == "done" for v in status.values()):
        timed("agents", t0)

    # 4. behaviour of each final policy
    captioner = MountainCarCaptioner()
    behaviour = _behaviour(args, out, agents, captioner)
    timings.setdefault("total_before_report", round(time.time() - started, 1))

    # 5. report
    results = {"reward_model": reward_eval, "corpus_category_counts": counts, "behaviour": behaviour,
               "sentences": SENTENCES, "args": dataclasses.asdict(args), "timings_s": timings}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    from understudy.studies.language_report import write_language_report

    write_language_report(out, results, agents)
    total = sum(v for k, v in timings.items() if k != "total_before_report")
    _log(f"report written to {out / 'report.md'} (stages took {total / 60:.1f} min in all)")
    return results


def _agent_run(args: StudyArgs, name: str, sentence: Optional[str], reward_model: str):
    """`understudy train` for one agent: a sentence's score as the only reward, or the environment's reward."""
    from understudy.studies.runner import Run

    cmd = ["train", args.algo, "--env", "MountainCar-v0", "--steps", str(args.rl_steps), "--seeds", str(args.seeds),
           "--seed", str(args.seed), "--eval-every", str(args.eval_every), "--eval-episodes", "20",
           "--no-tensorboard", "--no-progress"]
    if args.algo == "dqn":
        # the zoo's MountainCar settings with a 50k buffer and lr 1e-3: in our runs the final policies of these
        # were steadier than with the zoo's 10k buffer and lr 4e-3 (whose evaluations swung between 5% and 100%)
        cmd += ["--preset", "mountaincar", "--buffer-size", "50000", "--lr", "1e-3"]
    else:
        cmd += ["--preset", "classic-discrete"]
    if sentence:
        cmd += ["--reward-text", sentence, "--reward-model", reward_model, "--reward-mode", args.reward_mode,
                "--reward-scale", str(args.reward_scale), "--reward-min", str(args.reward_min),
                "--reward-max", str(args.reward_max)]
    return Run(name=name, args=tuple(cmd))


def _behaviour(args: StudyArgs, out: Path, agents: dict, captioner) -> dict:
    from understudy.language.behaviour import behaviour_rates
    from understudy.policy import load_policy

    results = {}
    for name in agents:
        path = out / "agents" / name / "behaviour.json"
        if not path.exists():
            per_seed = []
            for s in range(args.seeds):
                final = out / "agents" / name / "final" / (f"seed{s}" if args.seeds > 1 else "")
                policy = load_policy(final, seed=args.seed + s)
                per_seed.append(behaviour_rates(policy, "MountainCar-v0", captioner, episodes=args.eval_episodes,
                                                seed=args.seed + 50_000 + 1000 * s))
            path.write_text(json.dumps(per_seed, indent=2))
        results[name] = json.loads(path.read_text())
    return results


def main(argv: list[str]) -> None:
    import tyro

    args = tyro.cli(StudyArgs, args=argv, prog="understudy study mountaincar-language")
    if args.seeds < 1 or args.rl_steps < args.eval_every:
        raise UnderstudyError("--seeds must be >= 1 and --rl-steps at least --eval-every.")
    run_study(args)
