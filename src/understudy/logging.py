"""Run logging: `metrics.csv` (first column `step`), TensorBoard events, optional W&B, and a console progress bar.

One row per logging point. The column set is fixed by the first row; later rows fill missing columns with
empty cells. On resume the CSV is cut back to the checkpoint's step so no step is repeated or missing.
"""

from __future__ import annotations

import csv
import math
import os
import time
from pathlib import Path

from understudy.types import UnderstudyError


class MetricsLogger:
    def __init__(self, run_dir: str | os.PathLike, *, resume_step: int | None = None, tensorboard: bool = True,
                 wandb_project: str | None = None, config: dict | None = None):
        self.run_dir = Path(run_dir)
        self.csv_path = self.run_dir / "metrics.csv"
        self.columns: list[str] | None = None
        if resume_step is not None and self.csv_path.exists():
            self.columns = _truncate_csv(self.csv_path, resume_step)
        elif self.csv_path.exists():
            self.csv_path.unlink()  # a fresh run in a directory we own (the CLI checked --overwrite)
        self._tb = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            # purge_step drops events past the checkpoint that a killed run had written
            self._tb = SummaryWriter(str(self.run_dir), purge_step=None if resume_step is None else resume_step + 1)
        self._wandb = None
        if wandb_project:
            try:
                import wandb
            except ImportError:
                raise UnderstudyError("--wandb-project needs the wandb package: pip install 'understudy[wandb]'") from None
            self._wandb = wandb.init(project=wandb_project, config=config, dir=str(self.run_dir),
                                     name=self.run_dir.name, resume="allow")

    def log(self, step: int, metrics: dict[str, float]) -> None:
        row = {"step": int(step), **{k: _scalar(v) for k, v in metrics.items()}}
        if self.columns is None:
            self.columns = list(row)
        extra = [k for k in row if k not in self.columns]
        if extra:  # new metric names appear (e.g. first evaluation): rewrite the header once
            self.columns += extra
            _rewrite_with_columns(self.csv_path, self.columns)
        new_file = not self.csv_path.exists()
        with open(self.csv_path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns)
            if new_file:
                writer.writeheader()
            writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in self.columns})
            f.flush()
            os.fsync(f.fileno())
        for k, v in row.items():
            if k != "step" and v is not None and math.isfinite(v):
                if self._tb is not None:
                    self._tb.add_scalar(k, v, step)
        if self._wandb is not None:
            self._wandb.log({k: v for k, v in row.items() if k != "step"}, step=step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def _scalar(v) -> float | None:
    if v is None:
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def read_metrics(path: str | os.PathLike) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _truncate_csv(path: Path, last_step: int) -> list[str] | None:
    """Keeps rows with step <= last_step (atomically) and returns the header."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames
        rows = [r for r in reader if r.get("step") not in (None, "") and float(r["step"]) <= last_step]
    if columns is None:
        return None
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
    return list(columns)


def _rewrite_with_columns(path: Path, columns: list[str]) -> None:
    if not path.exists():
        return
    rows = read_metrics(path)
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: r.get(k, "") for k in columns})
    os.replace(tmp, path)


class Progress:
    """A rich progress bar over steps with the latest headline figures; plain lines when not a terminal."""

    def __init__(self, total: int, description: str, start: int = 0, enabled: bool = True):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, \
            TimeElapsedColumn, TimeRemainingColumn

        self.console = Console(stderr=True)
        self.enabled = enabled
        self.total = total
        self._last_print = 0.0
        self._start_time = time.time()
        self._start = start
        self._bar = None
        if enabled and self.console.is_terminal:
            self._bar = RichProgress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                     TextColumn("{task.fields[info]}"), console=self.console)
            self._task = self._bar.add_task(description, total=total, completed=start, rate="", info="")
            self._bar.start()
        self.description = description

    def update(self, step: int, info: str = "") -> None:
        rate = (step - self._start) / max(time.time() - self._start_time, 1e-9)
        if self._bar is not None:
            self._bar.update(self._task, completed=step, rate=f"{rate:,.0f} steps/s", info=info)
        elif self.enabled and (time.time() - self._last_print > 10 or step >= self.total):
            self._last_print = time.time()
            self.console.print(f"{self.description}: {step}/{self.total} ({rate:,.0f} steps/s) {info}")

    def print(self, text: str) -> None:
        if self.enabled:
            self.console.print(text)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
