"""DAgger: the β schedule, aggregation, exports, demonstrations as D_0, resume, discrete actions, errors."""

import json
from pathlib import Path

import numpy as np
import pytest

from understudy.algos import dagger, get_algorithm
from understudy.policy import load_policy
from understudy.train.common import RunArgs
from understudy.train.interactive import train
from understudy.types import UnderstudyError

ROOT = Path(__file__).resolve().parents[1]
PENDULUM_EXPERT = str(ROOT / "experts" / "Pendulum-v1")
MOUNTAINCAR_EXPERT = str(ROOT / "docs" / "results" / "dqn-mountaincar" / "seed0" / "final")


def _cfg(**kw):
    base = dict(expert=PENDULUM_EXPERT, steps_per_iteration=100, updates_per_iteration=20, hidden_dims=(32, 32),
                batch_size=32)
    return dagger.Config(**{**base, **kw})


def _run(tmp_path, name, **kw):
    defaults = dict(env="Pendulum-v1", steps=300, eval_every=100, eval_episodes=2, out=str(tmp_path / name),
                    progress=False, tensorboard=False)
    return RunArgs(**{**defaults, **kw})


def _rows(run_dir):
    import pandas as pd

    return pd.read_csv(Path(run_dir) / "metrics.csv")


def test_beta_schedule():
    cfg = _cfg()
    assert [dagger.beta_at(cfg, i) for i in range(4)] == [1.0, 0.5, pytest.approx(1 / 3), 0.25]
    assert [dagger.beta_at(_cfg(beta="zero"), i) for i in range(3)] == [1.0, 0.0, 0.0]


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory):
    """An uninterrupted 300-step run of two seeds: checked here, and the reference a resumed run must match."""
    run = _run(tmp_path_factory.mktemp("dagger"), "two-seeds", seeds=2)
    return run, train("dagger", get_algorithm("dagger"), _cfg(), run, method="dagger-mse")


def test_dagger_aggregates_mixes_and_exports(two_seeds):
    run, summary = two_seeds
    rows = _rows(run.out)
    assert list(rows["step"]) == [100, 200, 300]
    assert list(rows["dagger/dataset_size"]) == [100, 200, 300]
    assert list(rows["dagger/beta"]) == pytest.approx([1.0, 0.5, 1 / 3])
    assert rows["dagger/expert_share"][0] == 1.0 and 0.2 < rows["dagger/expert_share"][1] < 0.8
    assert np.isfinite(rows["train/loss"]).all() and np.isfinite(rows["dagger/learner_expert_gap"][1:]).all()
    assert len(summary["final"]["seeds"]) == 2
    for s in range(2):
        policy = load_policy(Path(run.out) / "final" / f"seed{s}")
        assert policy.normalizer is not None  # fitted on the expert's first rollouts, saved with the learner
        assert policy(np.zeros(3, np.float32)).shape == (1,)
    config = json.loads((Path(run.out) / "config.json").read_text())
    assert config["iterations"] == 3 and config["step_unit"] == "env_steps"


def test_demonstrations_are_iteration_zero_and_a_resized_resume_is_refused(tmp_path):
    from understudy.data import collect, save_dataset

    expert = load_policy(PENDULUM_EXPERT)
    save_dataset(collect("Pendulum-v1", expert, episodes=1, seed=3), tmp_path / "demos")
    run = _run(tmp_path, "with-demos", steps=200, dataset=str(tmp_path / "demos"))
    train("dagger", get_algorithm("dagger"), _cfg(), run, method="dagger-mse")
    rows = _rows(run.out)
    assert list(rows["dagger/beta"]) == pytest.approx([0.5, 1 / 3])  # the demos were beta = 1
    assert list(rows["dagger/dataset_size"]) == [300, 400]  # 200 demo steps + rollouts
    with pytest.raises(UnderstudyError, match="same --steps"):  # the dataset is preallocated for --steps
        train("dagger", get_algorithm("dagger"), _cfg(), _run(tmp_path, "with-demos", steps=400, dataset=run.dataset,
                                                                resume=True), method="dagger-mse")


def test_resume_after_a_kill_matches_an_uninterrupted_run(two_seeds, tmp_path):
    full = two_seeds[0]
    part = _run(tmp_path, "part", steps=300, seeds=2)
    # simulate a kill after iteration 2: run to 200 steps with the 300-step config, then resume
    import understudy.train.interactive as loop

    calls = {"n": 0}
    original = loop.RunRecorder.checkpoint

    def checkpoint_then_die(self, step, tree, extra_meta=None):
        original(self, step, tree, extra_meta)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt

    loop.RunRecorder.checkpoint = checkpoint_then_die
    try:
        with pytest.raises(KeyboardInterrupt):
            train("dagger", get_algorithm("dagger"), _cfg(), part, method="dagger-mse")
    finally:
        loop.RunRecorder.checkpoint = original
    resumed = RunArgs(**{**part.__dict__, "resume": True})
    train("dagger", get_algorithm("dagger"), _cfg(), resumed, method="dagger-mse")
    a, b = _rows(full.out), _rows(part.out)
    assert list(b["step"]) == [100, 200, 300]
    for column in ("eval/return", "eval/return/seed0", "eval/return/seed1"):
        np.testing.assert_allclose(a[column], b[column], rtol=1e-5)


def test_discrete_actions_with_a_dqn_expert(tmp_path):
    run = _run(tmp_path, "mc", env="MountainCar-v0", steps=200)
    summary = train("dagger", get_algorithm("dagger"), _cfg(expert=MOUNTAINCAR_EXPERT, head="categorical"), run,
                    method="dagger-categorical")
    assert summary["final"]["seeds"][0]["success_rate"] is not None
    assert load_policy(Path(run.out) / "final")(np.zeros(2, np.float32)) in (0, 1, 2)


def test_errors_name_the_fix(tmp_path):
    algo = get_algorithm("dagger")
    with pytest.raises(UnderstudyError, match="--expert"):
        train("dagger", algo, _cfg(expert=None), _run(tmp_path, "a"))
    with pytest.raises(UnderstudyError, match="Give an expert for this environment"):
        train("dagger", algo, _cfg(), _run(tmp_path, "b", env="MountainCarContinuous-v0"))
