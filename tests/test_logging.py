"""metrics.csv: fixed first column `step`, new columns added once, and cut back on resume."""

from understudy.logging import MetricsLogger, read_metrics


def test_metrics_csv_columns_and_resume_truncation(tmp_path):
    log = MetricsLogger(tmp_path, tensorboard=False)
    log.log(100, {"train/loss": 1.0})
    log.log(200, {"train/loss": 0.5, "eval/return": -300.0})  # a new column appears
    log.log(300, {"train/loss": 0.25, "eval/return": -200.0})
    log.close()
    rows = read_metrics(tmp_path / "metrics.csv")
    assert list(rows[0]) == ["step", "train/loss", "eval/return"]
    assert [r["step"] for r in rows] == ["100", "200", "300"]
    assert rows[0]["eval/return"] == "" and float(rows[2]["eval/return"]) == -200.0

    # a run killed after step 300 but checkpointed at 200 resumes from 200: the row for 300 goes
    log = MetricsLogger(tmp_path, resume_step=200, tensorboard=True)
    log.log(300, {"train/loss": 0.2, "eval/return": -150.0})
    log.close()
    rows = read_metrics(tmp_path / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [100, 200, 300]
    assert float(rows[2]["eval/return"]) == -150.0
    assert list(tmp_path.glob("events.out.tfevents*"))
