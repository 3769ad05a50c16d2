"""Evaluation statistics, markdown reports and learning-curve plots over fake run directories."""

import json
import os

import numpy as np
import pytest

from understudy.eval.plots import plot_runs, step_unit
from understudy.eval.report import build_report, load_run, write_report
from understudy.eval.stats import iqm, iqm_with_ci, mean_ci, mean_std, normalized_score
from understudy.types import UnderstudyError

REF = {"random": -100.0, "expert": 300.0}


# ----------------------------------------------------------------------------------------------- stats
def test_iqm_by_hand():
    assert iqm(np.arange(100)) == pytest.approx(np.mean(np.arange(25, 75)))  # 49.5
    assert iqm(np.arange(100)[::-1].reshape(10, 10)) == pytest.approx(49.5)  # over all entries
    # Outliers in the outer quartiles do not move it.
    assert iqm([1, 2, 3, 4, 5, 6, 7, 1e9]) == pytest.approx(np.mean([3, 4, 5, 6]))


def test_iqm_with_ci_contains_point_and_is_reproducible():
    scores = np.random.RandomState(0).normal(10.0, 2.0, size=(8, 3))
    point, low, high = iqm_with_ci(scores, reps=500, seed=0)
    assert point == pytest.approx(iqm(scores))
    assert low < point < high
    assert high - low < 4.0  # IQM of 24 draws with std 2: the CI is narrow
    assert iqm_with_ci(scores, reps=500, seed=0) == (point, low, high)
    state = np.random.get_state()[1].copy()
    iqm_with_ci(scores, reps=50, seed=3)
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # global RNG left as it was
    assert iqm_with_ci(np.array([5.0])) == (5.0, 5.0, 5.0)  # one run: nothing to resample


def test_normalized_mean_std_mean_ci():
    assert normalized_score(100.0, **{"random_return": -100.0, "expert_return": 300.0}) == pytest.approx(0.5)
    np.testing.assert_allclose(normalized_score([-100, 300], -100, 300), [0.0, 1.0])
    with pytest.raises(UnderstudyError):
        normalized_score(1.0, 2.0, 2.0)
    assert mean_std([1.0, 3.0]) == (2.0, 1.0)
    assert mean_std([1.0, 3.0], ddof=1)[1] == pytest.approx(np.sqrt(2))
    x = np.array([[1.0, 3.0, np.nan], [2.0, np.nan, np.nan]])  # rows are steps, columns seeds
    mean, low, high = mean_ci(x, axis=1)
    assert mean[0] == 2.0 and mean[1] == 2.0
    assert low[0] == pytest.approx(2.0 - 12.7062 * np.sqrt(2) / np.sqrt(2), rel=1e-4)  # t(0.975, df=1)
    assert low[1] == high[1] == 2.0  # a single seed has no band


# ----------------------------------------------------------------------------------------------- runs
def make_run(root, name, algo, method, seed_returns, env_id="Hopper-v5", reference=REF, best=None, steps=(0, 500, 1000),
             with_eval=True):
    d = os.path.join(root, name)
    os.makedirs(d)
    k = len(seed_returns)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump({"command": "train", "algo": algo, "method": method, "env_id": env_id, "dataset": None,
                   "seeds": k, "steps": steps[-1], "config": {}}, f)
    header = ["step", "time_s", "train/loss", "eval/return"] + [f"eval/return/seed{i}" for i in range(k)]
    lines = [",".join(header)]
    for j, step in enumerate(steps):
        finals = [float(np.mean(r)) for r in seed_returns]
        per_seed = [fr * (j + 1) / len(steps) for fr in finals]  # curves rise to the final value
        lines.append(",".join(map(str, [step, 0.1 * j, 1.0 / (j + 1), np.mean(per_seed)] + per_seed)))
        lines.append(",".join(map(str, [step + 10, 0.1 * j + 0.05, 0.5 / (j + 1)])) + "," * (1 + k))  # no eval
    with open(os.path.join(d, "metrics.csv"), "w") as f:
        f.write("\n".join(lines) + "\n")
    if with_eval:
        def block(rets):
            return {"seeds": [{"seed": i, "returns": list(r), "lengths": [100] * len(r), "mean": float(np.mean(r)),
                               "std": float(np.std(r)), "success_rate": None} for i, r in enumerate(rets)]}
        with open(os.path.join(d, "eval.json"), "w") as f:
            json.dump({"method": method, "algo": algo, "env_id": env_id, "step": steps[-1], "reference": reference,
                       "final": block(seed_returns), "best": None if best is None else block(best)}, f)
    return d


SAC = [[100.0, 110.0], [200.0, 220.0], [150.0, 140.0]]  # per-seed means 105, 210, 145
SAC_BEST = [[120.0, 120.0], [230.0, 230.0], [160.0, 160.0]]
BC = [[50.0, 70.0], [80.0, 80.0]]  # per-seed means 60, 80


@pytest.fixture
def runs(tmp_path):
    root = str(tmp_path)
    return [make_run(root, "sac", "sac", "sac", SAC, best=SAC_BEST),
            make_run(root, "bc", "bc", "bc-mse", BC, steps=(0, 200, 400, 600)),
            make_run(root, "sac_more", "sac", "sac", [[300.0, 300.0]], best=[[310.0, 310.0]]),
            make_run(root, "killed", "td3", "td3", [[1.0]], with_eval=False)]


def table_row(report, method):
    rows = [line for line in report.splitlines() if line.startswith(f"| Hopper-v5 | {method} |")]
    assert len(rows) == 1, report
    return [c.strip() for c in rows[0].strip("|").split("|")]


def test_report_numbers(runs):
    report = build_report(runs)
    header = [c.strip() for c in report.splitlines()[2].strip("|").split("|")]
    sac = dict(zip(header, table_row(report, "sac")))
    means = np.array([105.0, 210.0, 145.0, 300.0])  # the two sac dirs pool into one row of 4 seeds
    assert sac["seeds"] == "4 (2 ep each)"
    assert sac["eval step"] == "1000"
    assert sac["final return (mean ± std)"] == f"{np.mean(means):.1f} ± {np.std(means):.1f}"  # 190.0 ± 74.3
    point, low, high = iqm_with_ci(means[:, None], reps=2000)
    assert sac["final return IQM [95% CI]"] == f"{point:.1f} [{low:.1f}, {high:.1f}]"
    assert point == pytest.approx(np.mean([145.0, 210.0]))  # IQM of 4 values = mean of the middle two
    norm = (means + 100.0) / 400.0
    assert sac["final normalized (mean ± std)"] == f"{np.mean(norm):.3f} ± {np.std(norm):.3f}"
    best = np.array([120.0, 230.0, 160.0, 310.0])
    assert sac["best-checkpoint return (mean ± std)"].startswith(f"{np.mean(best):.1f} ± {np.std(best):.1f}")

    bc = dict(zip(header, table_row(report, "bc-mse")))
    assert bc["seeds"] == "2 (2 ep each)"
    assert bc["final return (mean ± std)"] == "70.00 ± 10.00"
    assert bc["final normalized (mean ± std)"] == "0.425 ± 0.025"
    assert bc["best-checkpoint return (mean ± std)"] == "—"

    assert "final" in header[4] and "best" in header[8]
    assert "killed" in report and "no eval.json" in report  # the run without evaluation is named
    assert "random -100.0, expert 300.0" in report


def test_report_without_reference_drops_columns(tmp_path):
    d = make_run(str(tmp_path), "r", "iql", "iql", [[1.0, 2.0]], reference=None)
    report = build_report([d])
    assert "normalized" not in report.splitlines()[2] and "best" not in report.splitlines()[2]
    assert "| Hopper-v5 | iql | 1 (2 ep each) | 1000 | 1.50 ± 0.00 | 1.50 [1.50, 1.50] |" in report


def test_write_report_and_errors(runs, tmp_path, monkeypatch):
    import understudy.eval.report as report_module

    # the confidence intervals' numbers are test_report_numbers' business: fewer resamples here, same report
    monkeypatch.setattr(report_module, "BOOTSTRAP_REPS", 100)
    out = os.path.join(str(tmp_path), "out", "report.md")
    text = write_report(runs, out)
    assert open(out).read() == text
    # A folder of run folders (e.g. quickstart --out DIR) expands to its runs.
    assert build_report([str(tmp_path)]).count("| Hopper-v5 |") == 2
    assert build_report(runs, title=None).startswith("| env | method |")
    with pytest.raises(UnderstudyError, match="does not exist"):
        build_report([os.path.join(str(tmp_path), "nope")])
    with open(os.path.join(runs[0], "eval.json"), "w") as f:
        f.write('{"final": ')
    with pytest.raises(UnderstudyError, match="eval.json"):
        build_report(runs[:1])


def test_plot(runs, tmp_path):
    out = os.path.join(str(tmp_path), "plots", "curves.png")
    assert plot_runs(runs, out, title="Hopper") == out
    assert os.path.getsize(out) > 1024
    with open(out, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    # Online algorithms count environment steps; offline ones count gradient updates.
    assert step_unit(load_run(runs[0])) == "env_steps" and step_unit(load_run(runs[1])) == "updates"
    with pytest.raises(UnderstudyError, match="No evaluation results"):
        empty = os.path.join(str(tmp_path), "empty")
        os.makedirs(empty)
        with open(os.path.join(empty, "config.json"), "w") as f:
            json.dump({"algo": "sac"}, f)
        plot_runs([empty], out)


def test_align_interpolates_pooled_runs_within_their_range():
    import pandas as pd

    from understudy.eval.plots import _align

    a = pd.DataFrame({"a:s0": [0.0, 10.0], "a:s1": [2.0, 12.0]}, index=[0, 10])
    b = pd.DataFrame({"b:s0": [4.0, 8.0]}, index=[0, 5])
    steps, values = _align([a, b])
    np.testing.assert_array_equal(steps, [0, 5, 10])
    np.testing.assert_allclose(values[:, 0], [0.0, 5.0, 10.0])  # interpolated at step 5
    np.testing.assert_allclose(values[:, 1], [2.0, 7.0, 12.0])
    np.testing.assert_allclose(values[:2, 2], [4.0, 8.0])
    assert np.isnan(values[2, 2])  # b was never evaluated at step 10: not extrapolated
