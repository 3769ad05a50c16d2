"""`understudy study offline-locomotion`: its plan, a tiny end-to-end study, and the report's arithmetic."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from understudy.studies.offline_locomotion import OfflineLocomotionStudyArgs, check_args, collect_datasets, \
    dataset_plan, run_study, study_runs
from understudy.studies.offline_report import build_results, report_markdown
from understudy.types import UnderstudyError

TINY = "--hidden-dims 16 --batch-size 32 --no-tensorboard"


@pytest.fixture(autouse=True)
def fewer_bootstrap_resamples(monkeypatch):
    import understudy.studies.common as common

    monkeypatch.setattr(common, "BOOTSTRAP_REPS", 200)  # the CIs' values are not under test; their time is


def test_plan_names_every_algorithm_dataset_and_seed(tmp_path):
    args = OfflineLocomotionStudyArgs(out=str(tmp_path), envs="hopper,walker2d", recipes="medium-replay",
                                      algos="td3bc,iql", seeds=2, seed=5, cql_args="--preset small")
    check_args(args)
    plan = dataset_plan(args)
    assert list(plan) == ["hopper-medium-replay", "walker2d-medium-replay"]
    assert plan["walker2d-medium-replay"]["env_id"] == "Walker2d-v5"
    runs = study_runs(args, plan)
    assert [r.name for r in runs][:3] == ["td3bc-hopper-medium-replay-seed5", "td3bc-hopper-medium-replay-seed6",
                                          "td3bc-walker2d-medium-replay-seed5"]
    assert len(runs) == 8 and runs[-1].args[-2:] == ("--seed", "6") and runs[-1].args[1] == "iql"
    # IQL normalizes rewards by the dataset's returns, as CORL does on locomotion, unless given a fixed scale
    assert "--normalize-reward-by-returns" in runs[-1].args and "--normalize-reward-by-returns" not in runs[0].args
    fixed = study_runs(dataclasses.replace(args, iql_args="--dataset-reward-scale=0.5"), plan)
    assert "--normalize-reward-by-returns" not in fixed[-1].args and "--dataset-reward-scale=0.5" in fixed[-1].args
    with pytest.raises(UnderstudyError, match="unknown \\['ant'\\]"):
        check_args(dataclasses.replace(args, envs="hopper,ant"))
    with pytest.raises(UnderstudyError, match="must not contain --steps"):
        study_runs(dataclasses.replace(args, iql_args="--steps 3"), plan)


def test_tiny_study_collects_trains_and_reports(tmp_path):
    out = tmp_path / "study"
    args = OfflineLocomotionStudyArgs(out=str(out), envs="hopper", recipes="medium", algos="bc,td3bc", seeds=1,
                                      dataset_steps=300, steps=20, eval_every=10, eval_episodes=1,
                                      final_eval_episodes=1, workers=2, bc_args=TINY, td3bc_args=TINY,
                                      progress=False)
    results = run_study(args)
    meta = json.loads(next((out / "data" / "hopper-medium").rglob("metadata.json")).read_text())
    assert meta["understudy"]["metadata"]["recipe"] == "medium"
    assert meta["understudy"]["metadata"]["stochastic"] is True  # sampled actions, as D4RL's datasets
    assert results["datasets"] == ["hopper-medium"] and results["algos"] == ["bc", "td3bc"]
    for algo in ("bc", "td3bc"):
        cell = results["scores"]["hopper-medium"][algo]
        assert cell["seeds"] == [0] and len(cell["last"]) == 1 and np.isfinite(cell["last"][0])
    report = (out / "report.md").read_text()
    assert "| hopper-medium |" in report and "not all nine datasets yet" in report
    assert (out / "curves.png").exists()
    # its sampled-action data are not reused by a study that asks for mode actions (nor silently mixed)
    with pytest.raises(UnderstudyError, match="sampled \\(--stochastic\\) expert actions.*--stochastic"):
        run_study(dataclasses.replace(args, out=str(tmp_path / "modes"), data_dir=str(out / "data"),
                                      stochastic=False))


def test_a_missing_replay_buffer_fails_before_anything_is_collected(tmp_path):
    # a shipped expert whose medium replay buffer is not in git, with expert.json saying how to make it
    expert = tmp_path / "experts" / "Walker2d-v5"
    (expert / "medium").mkdir(parents=True)
    (expert / "policy.json").write_text("{}")
    (expert / "expert.json").write_text(json.dumps({"medium": {"replay": "regenerate it with the SAC run"}}))
    data = tmp_path / "data"
    plan = {"hopper-medium": {"env": "hopper", "env_id": "Hopper-v5", "recipe": "medium",
                              "expert": "experts/Hopper-v5", "path": str(data / "hopper-medium")},
            "walker2d-medium-replay": {"env": "walker2d", "env_id": "Walker2d-v5", "recipe": "medium-replay",
                                       "expert": str(expert), "path": str(data / "walker2d-medium-replay")}}
    args = OfflineLocomotionStudyArgs(out=str(tmp_path / "study"), dataset_steps=300, progress=False)
    with pytest.raises(UnderstudyError, match="walker2d-medium-replay needs .*replay.safetensors.*"
                                              "says: regenerate it with the SAC run.*Nothing was collected"):
        collect_datasets(args, plan)
    assert not data.exists()  # the hopper dataset planned first was not collected


def _fake(out: Path, name: str, finals: list[float], bests: list[float]):
    run = out / "runs" / name
    run.mkdir(parents=True)
    final = [{"seed": s, "mean": m} for s, m in enumerate(finals)]
    best = [{"seed": s, "step": 10, "mean": m} for s, m in enumerate(bests)]
    (run / "eval.json").write_text(json.dumps({"reference": {"random": 0.0, "expert": 200.0},
                                               "final": {"seeds": final}, "best": {"seeds": best}}))


def test_report_averages_over_datasets_and_checks_targets_only_on_all_nine(tmp_path):
    _fake(tmp_path, "td3bc-hopper-medium-seed0", [150.0], [180.0])      # 75, best 90
    _fake(tmp_path, "td3bc-hopper-medium-seed1", [160.0], [170.0])      # 80, best 85
    _fake(tmp_path, "td3bc-hopper-medium-replay-seed0", [100.0], [120.0])  # 50
    _fake(tmp_path, "td3bc-hopper-medium-replay-seed1", [120.0], [120.0])  # 60
    _fake(tmp_path, "bc-hopper-medium-seed0", [100.0], [100.0])
    (tmp_path / "runs" / "iql-hopper-medium-seed0").mkdir()
    results = build_results(tmp_path)
    assert results["datasets"] == ["hopper-medium", "hopper-medium-replay"]
    assert results["scores"]["hopper-medium"]["td3bc"]["last"] == [75.0, 80.0]
    assert results["scores"]["hopper-medium"]["td3bc"]["best"] == [90.0, 85.0]
    summary = results["summary"]["td3bc"]
    assert summary["last"]["per_seed"] == [62.5, 70.0] and summary["last"]["mean"] == pytest.approx(66.25)
    assert summary["target"] == {"threshold": 75.0, "complete": False, "met": None}
    assert results["summary"]["bc"]["target"] is None and results["unfinished"] == ["iql-hopper-medium-seed0"]
    text = report_markdown(results)
    assert "| hopper-medium | 50.0 ± 0.0 | 77.5 ± 2.5 |" in text and "**66.2** ± 3.8" in text
    assert "| hopper-medium-replay | 29.8 | 64.4 |" in text  # CORL's numbers beside ours
