"""The instruct studies: BabyAI end to end on tiny settings (collect, 2 seeds through the runner, report; a
second invocation redoes nothing; --report-only rebuilds from the run directories), the targets' met / not-met
logic on fabricated results, and the Meta-World report (training vs held-out paraphrases) on fabricated runs."""

import dataclasses
import json

import numpy as np
import pytest

from understudy.studies.instruct import BabyAIStudyArgs, MetaWorldStudyArgs, run_study, study_runs
from understudy.studies.instruct_report import check_targets, write_instruct_report
from understudy.types import UnderstudyError

TINY = ("--d-model 16 --num-layers 1 --num-heads 2 --head-hidden-dims 16 --batch-size 8 --window 2 "
        "--eval-envs 1 --warmup-steps 2 --no-tensorboard")
LEVELS = ["GoToLocal-v0", "PickupLoc-v0", "PutNextLocal-v0"]


@pytest.fixture(autouse=True)
def fewer_bootstrap_resamples(monkeypatch):
    import understudy.studies.common as common

    monkeypatch.setattr(common, "BOOTSTRAP_REPS", 200)  # the CIs' values are not under test; their time is


def test_babyai_study_end_to_end_resumes_and_rebuilds_its_report(tmp_path, capsys):
    out = tmp_path / "study"
    args = BabyAIStudyArgs(out=str(out), demos=12, seeds=2, steps=10, eval_every=10, eval_episodes=1,
                           final_eval_episodes=1, workers=2, train_args=TINY, progress=False)
    results = run_study(args)
    for f in ("report.md", "results.json", "curves.png", "study.json", "data/manifest.json"):
        assert (out / f).exists(), f
    assert results["tasks"] == LEVELS and results["seeds"] == [0, 1]
    assert {n: r["finished"] for n, r in results["runs"].items()} == {"seed0": True, "seed1": True}
    for name in ("seed0", "seed1"):
        final = json.loads((out / "runs" / name / "eval.json").read_text())["final"]["seeds"][0]
        for task in LEVELS:
            rate = final["evaluations"]["train"]["per_task"][task]["success_rate"]
            assert results["per_task"][task]["train"]["per_seed"][final["seed"]] == rate
    for task in LEVELS:
        r = results["per_task"][task]
        assert r["demos"] == 12 and len(r["train"]["per_seed"]) == 2
        assert r["train"]["mean"] == pytest.approx(np.mean(r["train"]["per_seed"]))
    assert results["overall"]["train"]["mean"] == pytest.approx(
        np.mean([results["per_task"][t]["train"]["mean"] for t in LEVELS]))
    assert [t["met"] for t in results["targets"]] == [t["measured"] >= t["threshold"] for t in results["targets"]]
    report = (out / "report.md").read_text()
    for task in LEVELS + ["| seed0 | 0 | 10 |", "| seed1 | 1 | 10 |", "GoToLocal success | ≥ 95%",
                          "PutNextLocal success | ≥ 80%", "--policy bot --episodes 12", "--seed 1"]:
        assert task in report, task
    assert report.count("not met") + report.count("**met**") == 3
    assert json.loads((out / "timings.json").read_text()).keys() == {"seed0", "seed1"}

    # again: datasets reused, finished runs not redone, same numbers
    eval_before = (out / "runs" / "seed0" / "eval.json").read_text()
    capsys.readouterr()
    again = run_study(args)
    log = capsys.readouterr().out
    assert "2 finished run(s) found, not redone" in log and "reusing PutNextLocal: 12 episodes" in log
    assert "collecting" not in log and (out / "runs" / "seed0" / "eval.json").read_text() == eval_before
    assert again["per_task"] == results["per_task"]

    # the report from the run directories alone
    for f in ("report.md", "results.json", "curves.png"):
        (out / f).unlink()
    rebuilt = run_study(dataclasses.replace(args, report_only=True))
    assert rebuilt["per_task"] == results["per_task"] and (out / "curves.png").exists()
    assert (out / "report.md").read_text() == report

    # continuing the directory with other settings would silently reuse runs made otherwise: refused
    with pytest.raises(UnderstudyError, match="--steps 10 -> 20"):
        run_study(dataclasses.replace(args, steps=20))


def test_train_args_are_passed_through_but_may_not_override_the_study(tmp_path):
    from understudy.studies.common import parse_study_args
    from understudy.studies.instruct import dataset_plan

    args = parse_study_args(BabyAIStudyArgs, ["--out", str(tmp_path), "--seeds", "2", "--seed", "5", "--train-args",
                                              "--d-model 64 --head gmm"], "x")
    assert args.train_args == "--d-model 64 --head gmm"
    runs = study_runs(args, dataset_plan(args))
    assert [r.name for r in runs] == ["seed5", "seed6"]
    assert runs[1].args[-4:] == ("--d-model", "64", "--head", "gmm") and "6" in runs[1].args
    assert runs[0].args[runs[0].args.index("--dataset") + 1].count(",") == 2  # three levels, one policy
    with pytest.raises(UnderstudyError, match="must not contain --seed"):
        study_runs(dataclasses.replace(args, train_args="--seed 3"), dataset_plan(args))
    with pytest.raises(UnderstudyError, match="--report-only"):
        run_study(dataclasses.replace(args, out=str(tmp_path / "none"), report_only=True))


def _scores(study, per_task=None, train=None, held_out=None, observations="state", tasks=None):
    overall = {}
    if train is not None:
        overall["train"] = {"mean": train}
    if held_out is not None:
        overall["held-out"] = {"mean": held_out}
        overall["gap"] = train - held_out
    return {"study": study, "observations": observations, "tasks": tasks or [],
            "per_task": {t: {"train": {"mean": m}} for t, m in (per_task or {}).items()}, "overall": overall}


def test_babyai_targets_are_computed_from_the_measured_numbers():
    targets = check_targets(_scores("instruct-babyai", {"GoToLocal-v0": 0.95, "PickupLoc-v0": 0.899}))
    assert [(t["name"], t["met"]) for t in targets] == [
        ("GoToLocal success", True), ("PickupLoc success", False), ("PutNextLocal success", False)]
    assert targets[2]["measured"] is None  # no run measured it: not met
    assert all(t["met"] for t in check_targets(_scores("instruct-babyai", {
        "GoToLocal-v0": 1.0, "PickupLoc-v0": 0.9, "PutNextLocal-v0": 0.8})))


def test_metaworld_targets_average_and_held_out_gap():
    from understudy.instruct.paraphrases import MT10

    mt10 = list(MT10)
    met = check_targets(_scores("instruct-metaworld", train=0.86, held_out=0.81, tasks=mt10))
    assert [t["met"] for t in met] == [True, True] and met[1]["measured"] == pytest.approx(0.05)
    assert [t["met"] for t in check_targets(_scores("instruct-metaworld", train=0.84, held_out=0.90,
                                                    tasks=mt10))] == [False, True]  # held-out above train is fine
    assert [t["met"] for t in check_targets(_scores("instruct-metaworld", train=0.95, held_out=0.889,
                                                    tasks=mt10))] == [True, False]
    assert [t["met"] for t in check_targets(_scores("instruct-metaworld", train=None, tasks=mt10))] == [False, False]
    pixels = check_targets(_scores("instruct-metaworld", train=0.9, held_out=0.9, observations="pixels", tasks=mt10))
    assert "state observations" in pixels[0]["note"]


def _fake_metaworld_run(directory, seed, train, held_out, tasks):
    """A finished run directory as `understudy train instruct` writes it (eval.json, metrics.csv, config.json)."""
    directory.mkdir(parents=True)

    def per_task(rates, kind):
        return {t: {"returns": [1.0, 2.0], "lengths": [10, 10], "successes": [r >= 0.5, r >= 1.0], "mean": 1.5,
                    "std": 0.5, "success_rate": r, "instructions": kind} for t, r in zip(tasks, rates)}

    evaluations = {"train": {"success_rate": float(np.mean(train)), "per_task": per_task(train, "train")},
                   "held-out": {"success_rate": float(np.mean(held_out)), "per_task": per_task(held_out, "held-out")}}
    final = {"seed": seed, "returns": [1.0] * 4, "mean": 1.0, "std": 0.0, "success_rate": float(np.mean(train)),
             "evaluations": evaluations}
    (directory / "eval.json").write_text(json.dumps({
        "method": "instruct", "algo": "instruct", "env_id": "MT10", "step": 200, "time_s": 50.0 + seed, "devices": 1,
        "dataset": {"path": "d", "episodes": 4, "steps": 400}, "tasks": tasks,
        "final": {"seeds": [final]}, "best": None}))
    (directory / "config.json").write_text(json.dumps({
        "algo": "instruct", "steps": 200, "run": {"seed": seed, "dataset": "d", "steps": 200, "eval_every": 100,
                                                  "eval_episodes": 2}}))
    rows = ["step,time_s,train/loss,eval/success_rate,eval/return," + ",".join(f"eval/success/{t}" for t in tasks)]
    rows += [f"100,10,0.5,{np.mean(train) / 2},1.0," + ",".join(str(r / 2) for r in train),
             f"200,20,0.4,{np.mean(train)},1.0," + ",".join(str(r) for r in train)]
    (directory / "metrics.csv").write_text("\n".join(rows) + "\n")


def test_metaworld_report_from_fabricated_runs_puts_held_out_beside_training(tmp_path):
    from understudy.studies.instruct import main_metaworld

    tasks = ["reach-v3", "push-v3"]
    out = tmp_path / "mw"
    _fake_metaworld_run(out / "runs" / "seed0", 0, [1.0, 0.5], [0.9, 0.5], tasks)
    _fake_metaworld_run(out / "runs" / "seed1", 1, [0.8, 0.7], [0.8, 0.4], tasks)
    (out / "runs" / "seed2").mkdir()  # started elsewhere, not finished: listed, not scored
    (out / "runs" / "seed2" / "config.json").write_text(json.dumps({"steps": 200, "run": {"seed": 2}}))
    (out / "data").mkdir()
    (out / "data" / "manifest.json").write_text(json.dumps({"MT10": {
        "command": "understudy collect --env metaworld:MT10 --policy scripted --episodes 2", "observations": "state",
        "episodes_total": 4, "steps_total": 400, "collect_s": 3.0,
        "per_task": {t: {"episodes": 2, "steps": 200} for t in tasks}}}))
    results = write_instruct_report(out, "instruct-metaworld")
    reach, push = results["per_task"]["reach-v3"], results["per_task"]["push-v3"]
    assert reach["train"]["mean"] == pytest.approx(0.9) and reach["train"]["std"] == pytest.approx(0.1)
    assert reach["held-out"]["mean"] == pytest.approx(0.85) and reach["gap"] == pytest.approx(0.05)
    assert push["gap"] == pytest.approx(0.15) and reach["demos"] == 2
    assert results["overall"]["train"]["per_seed"] == pytest.approx([0.75, 0.75])
    assert results["overall"]["held-out"]["mean"] == pytest.approx(0.65)
    assert results["overall"]["gap"] == pytest.approx(0.10)
    assert [t["met"] for t in results["targets"]] == [False, False]
    assert "MT10" in results["targets"][0]["note"]  # two tasks are not MT10
    assert results["runs"]["seed2"]["finished"] is False and results["seeds"] == [0, 1]
    report = (out / "report.md").read_text()
    assert "| reach-v3 | 2 | 90.0 ± 10.0% |" in report and "| 85.0 ± 5.0% |" in report
    assert "| **average** | | **75.0 ± 0.0%** |" in report and "**+10.0**" in report
    assert "2 of 3 run(s) finished" in report and "| seed2 | 2 | 200 |" in report and "unfinished" in report
    assert (out / "curves.png").stat().st_size > 10_000
    (out / "report.md").unlink()
    main_metaworld(["--out", str(out), "--report-only"])
    assert (out / "report.md").read_text() == report


def test_study_list_and_metaworld_dataset_plan(tmp_path, capsys):
    from understudy.studies import main
    from understudy.studies.instruct import dataset_plan

    main(["--help"])
    listing = capsys.readouterr().out
    assert "instruct-babyai" in listing and "instruct-metaworld" in listing
    plan = dataset_plan(MetaWorldStudyArgs(out=str(tmp_path), demos=7, images=True))
    assert list(plan) == ["MT10-images"]
    assert "--env metaworld:MT10 --policy scripted --episodes 7 --seed 0 --images" in plan["MT10-images"]["command"]


@pytest.mark.slow
def test_tiny_metaworld_study_end_to_end(tmp_path):
    """One Meta-World task, 2 demos, 10 updates (about 35 s): held-out paraphrases are evaluated and reported."""
    out = tmp_path / "mw"
    results = run_study(MetaWorldStudyArgs(out=str(out), suite="reach-v3", demos=2, seeds=1, steps=10, eval_every=10,
                                           eval_episodes=1, final_eval_episodes=1, train_args=TINY, progress=False))
    assert results["tasks"] == ["reach-v3"] and results["per_task"]["reach-v3"]["demos"] == 2
    train, held_out = (results["per_task"]["reach-v3"][k]["mean"] for k in ("train", "held-out"))
    assert results["per_task"]["reach-v3"]["gap"] == pytest.approx(train - held_out)
    assert "held-out paraphrases" in (out / "report.md").read_text() and (out / "curves.png").exists()
