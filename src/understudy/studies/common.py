"""What every grid study shares: logging, the reproducing command line, refusing to mix settings in one study
directory, per-run wall times, and parsing flags whose values are themselves flags (--train-args "--lr 1e-3")."""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import time
from pathlib import Path
from typing import Callable, Iterable, Optional

from understudy.types import UnderstudyError

BOOTSTRAP_REPS = 2000  # resamples per IQM confidence interval (about 0.5 s each on one core)
# study flags that never change what is computed
NOT_SETTINGS = ("out", "workers", "ray_address", "report_only", "progress", "seeds")


def summarize_scores(per_seed: list[float]) -> dict:
    """Mean ± std and IQM [95% CI] of one score per seed."""
    import numpy as np

    from understudy.eval.stats import iqm_with_ci, mean_std

    mean, std = mean_std(per_seed)
    point, low, high = iqm_with_ci(np.asarray(per_seed)[:, None], reps=BOOTSTRAP_REPS)
    return {"per_seed": [float(x) for x in per_seed], "mean": mean, "std": std, "iqm": point,
            "ci_low": low, "ci_high": high}


def summarize_matrix(matrix) -> dict:
    """[seeds, tasks] -> the average over tasks per seed (mean ± std over seeds), and the IQM over all
    (seed, task) scores with a CI from bootstrapping seeds within tasks."""
    import numpy as np

    from understudy.eval.stats import iqm_with_ci, mean_std

    matrix = np.asarray(matrix, np.float64)
    per_seed = matrix.mean(axis=1)
    mean, std = mean_std(per_seed)
    point, low, high = iqm_with_ci(matrix, reps=BOOTSTRAP_REPS)
    return {"per_seed": per_seed.tolist(), "mean": mean, "std": std, "iqm": point, "ci_low": low, "ci_high": high}


def embed_figures(text: str, out: Path, figures: dict) -> str:
    """Draws each figure (name -> draw(path) returning None when there is nothing to plot) into `out`, and notes in
    the report text `![...](name)` when one has nothing to show or fails: a figure must never lose the report."""
    for name, draw in figures.items():
        try:
            if draw(out / name) is None:
                text = text.replace(f"]({name})", f"]({name}) (nothing to plot yet)")
        except Exception as e:  # noqa: BLE001
            text = text.replace(f"]({name})", f"]({name}) (plot failed: {e})")
    return text


def log(msg: str) -> None:
    print(f"[study {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def study_command(name: str, args) -> str:
    """The `understudy study NAME ...` command line that reproduces `args` (flags at their defaults left out)."""
    parts = ["understudy", "study", name, "--out", args.out]
    for f in dataclasses.fields(args):
        value = getattr(args, f.name)
        if f.name in ("out", "report_only", "progress", "workers") or value == f.default:
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else "--no-" + f.name.replace("_", "-"))
        else:
            parts += [flag, str(value)]
    return shlex.join(parts)


def check_same_settings(out: Path, args, run_names: Iterable[str], not_settings: tuple[str, ...] = NOT_SETTINGS) -> None:
    """A study directory is continued only with the settings that made it (its finished runs are reused)."""
    path = out / "study.json"
    if not path.exists():
        return
    before = json.loads(path.read_text())
    now = {k: v for k, v in dataclasses.asdict(args).items() if k not in not_settings}
    # a setting added after the study was made counts as having had its default value then
    defaults = {f.name: f.default for f in dataclasses.fields(args) if f.default is not dataclasses.MISSING}
    then = {k: v for k, v in {**defaults, **(before.get("args") or {})}.items() if k not in not_settings}
    changed = sorted(k for k in set(now) | set(then) if now.get(k) != then.get(k))
    if changed and any((out / "runs" / name).exists() for name in run_names):
        diff = ", ".join(f"--{k.replace('_', '-')} {then.get(k)!r} -> {now.get(k)!r}" for k in changed)
        raise UnderstudyError(f"{out} was made with other settings ({diff}); its runs would be reused as they are. "
                              "Continue it with the same flags, rebuild its report with --report-only, or use "
                              "another --out.")


def record_wall_times(out: Path) -> Callable[[str], None]:
    """A log function for run_grid that also keeps each run's process wall time in <out>/timings.json."""
    path = out / "timings.json"
    pattern = re.compile(r"^(\S+): (done|failed) in (\d+) s")

    def log_and_time(msg: str) -> None:
        log(msg)
        match = pattern.match(msg)
        if match and match.group(2) == "done":
            timings = json.loads(path.read_text()) if path.exists() else {}
            timings[match.group(1)] = int(match.group(3))
            path.write_text(json.dumps(timings, indent=2))

    return log_and_time


def split_choices(value: str, known: tuple[str, ...], flag: str) -> list[str]:
    """A comma-separated flag value as its distinct items in order, refusing an empty list or an unknown item."""
    items = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in items if v not in known]
    if not items or unknown:
        raise UnderstudyError(f"{flag} {value!r}: unknown {unknown or 'empty list'}; choose from {', '.join(known)}.")
    return list(dict.fromkeys(items))


def plot_panels(path: Path, panels: list[tuple[str, dict]], ylabel: str) -> Path:
    """One figure of up to 3 panels a row: each (title, {label: pandas Series indexed by gradient update})."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = min(3, len(panels))
    rows = (len(panels) + columns - 1) // columns
    fig = Figure(figsize=(4.5 * columns, 3.2 * rows), dpi=110)
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False)).ravel()
    for ax, (title, lines) in zip(axes, panels):
        for label, series in lines.items():
            ax.plot(series.index, series.to_numpy(), label=label)
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel("gradient updates")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small")
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path)
    return path


def split_extra_args(value: str, flag: str, forbidden: Iterable[str]) -> list[str]:
    """An --*-args string as a list of arguments, refusing the flags the study sets itself."""
    try:
        extra = shlex.split(value)
    except ValueError as e:
        raise UnderstudyError(f"{flag} {value!r} is not a valid command-line string ({e}); quote it as one argument, "
                              f"e.g. {flag} \"--lr 1e-3 --batch-size 512\".") from None
    for f in forbidden:
        if any(a == f or a.startswith(f + "=") for a in extra):
            raise UnderstudyError(f"{flag} must not contain {f}: the study sets it (use the study's own flag where it "
                                  "has one).")
    return extra


def parse_study_args(cls, argv: list[str], prog: str, passthrough: Iterable[str] = ("--train-args",)):
    """tyro parsing, with `--train-args "--d-model 256"`-style values (which start with "--") kept as values."""
    import tyro

    argv, flags = list(argv), set(passthrough)
    i = 0
    while i < len(argv) - 1:
        if argv[i] in flags:
            argv[i:i + 2] = [f"{argv[i]}={argv[i + 1]}"]
        i += 1
    return tyro.cli(cls, args=argv, prog=prog)


def stored_metadata(path: str | Path) -> Optional[dict]:
    """A dataset's Minari metadata.json, read without loading its steps; None when it has none."""
    from understudy.data.storage import METADATA_FILE

    file = Path(path) / "data" / METADATA_FILE
    return json.loads(file.read_text()) if file.exists() else None


def check_action_mode(path: Path, stochastic: bool) -> None:
    """A dataset to reuse must have been collected with the requested action mode (what it records; random,
    medium-replay and hand-made datasets record none and pass)."""
    meta = stored_metadata(path) or {}
    recorded = meta.get("understudy", {}).get("metadata", {}).get("stochastic")
    if recorded is not None and bool(recorded) != stochastic:
        mode = {True: "sampled (--stochastic)", False: "mode (no --stochastic)"}
        raise UnderstudyError(f"{path} was collected with {mode[bool(recorded)]} expert actions, but this study asks "
                              f"for {mode[stochastic]} ones. Give the study another --data-dir (the dataset is kept), "
                              f"or run it with {'--stochastic' if recorded else '--no-stochastic'}.")
