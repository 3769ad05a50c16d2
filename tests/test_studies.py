"""The study runner (grid of runs, skip finished, resume, failures) and a tiny mountaincar-language study."""

import json
from pathlib import Path

import pytest

from understudy.studies.runner import Run, command_for, run_grid
from understudy.types import UnderstudyError

# learning starts at the last step: the runner only needs finished runs, and no update is compiled in each process
TINY_DQN = ("train", "dqn", "--env", "CartPole-v1", "--steps", "200", "--eval-every", "200", "--eval-episodes", "1",
            "--learning-starts", "200", "--hidden-dims", "16", "--no-tensorboard", "--no-progress")


def test_runner_runs_skips_and_reports_failures(tmp_path):
    runs = [Run("a", TINY_DQN), Run("b", TINY_DQN[:-2] + ("--seed", "1", "--no-tensorboard", "--no-progress"))]
    messages = []
    assert run_grid(runs, tmp_path, workers=2, log=messages.append) == {"a": "done", "b": "done"}
    for name in "ab":
        assert (tmp_path / "runs" / name / "eval.json").exists() and (tmp_path / "logs" / f"{name}.log").exists()
    # a second call finds them finished and starts nothing
    assert run_grid(runs, tmp_path, log=messages.append) == {"a": "skipped", "b": "skipped"}
    assert "2 finished run(s) found, not redone" in messages
    with pytest.raises(UnderstudyError, match="1 run\\(s\\) failed: bad"):
        run_grid([Run("bad", ("train", "dqn", "--env", "NoSuchEnv-v0"))], tmp_path, log=messages.append)
    assert "Unknown environment id" in (tmp_path / "logs" / "bad.log").read_text()
    with pytest.raises(UnderstudyError, match="unique"):
        run_grid([Run("x", TINY_DQN), Run("x", TINY_DQN)], tmp_path)


def test_command_resumes_a_run_that_left_checkpoints(tmp_path):
    run = Run("r", TINY_DQN)
    assert command_for(run, tmp_path / "r")[-1] == "--overwrite"
    (tmp_path / "r" / "checkpoints" / "100").mkdir(parents=True)
    assert command_for(run, tmp_path / "r")[-1] == "--resume"


def test_tiny_mountaincar_language_study(tmp_path):
    from understudy.studies.mountaincar_language import StudyArgs, run_study

    args = StudyArgs(out=str(tmp_path / "study"), corpus_episodes=12, reward_steps=2, rl_steps=200, eval_every=200,
                     eval_episodes=2, env_reward_baseline=False, progress=False)
    results = run_study(args)
    out = Path(args.out)
    for f in ("report.md", "results.json", "curves.png", "behaviour.png", "reward_model/model/reward_model.json"):
        assert (out / f).exists(), f
    assert set(results["behaviour"]) == {"sentence-top", "sentence-bottom", "sentence-swing"}
    for per_seed in results["behaviour"].values():
        assert sum(per_seed[0]["counts"].values()) == 2
    report = (out / "report.md").read_text()
    assert "held-out episodes, held-out paraphrases" in report and "The car stays at the bottom" in report
    # running it again redoes nothing: same results, no new training
    before = json.loads((out / "agents" / "sentence-top" / "eval.json").read_text())
    run_study(args)
    assert json.loads((out / "agents" / "sentence-top" / "eval.json").read_text()) == before
