"""Markdown reports over run directories: one table row per (environment, method).

A run directory (written by the training loops) holds:
  config.json   {"command", "algo", "method", "env_id", "dataset", "seeds", "steps", "config": {...}}
  metrics.csv   `step`, `time_s`, `train/<name>`, `eval/return`, `eval/return/seed<i>` (empty between evals)
  eval.json     {"method", "algo", "env_id", "step", "reference": {"random", "expert"} | null,
                 "final": {"seeds": [{"seed", "returns", "lengths", "mean", "std", "success_rate"}]},
                 "best": same shape | null}

Statistics are over seeds: each seed contributes one score, its mean episode return. Several run
directories of the same method on the same environment pool their seeds.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Optional

import numpy as np

from understudy.eval.stats import iqm_with_ci, mean_std, normalized_score
from understudy.types import UnderstudyError

RUN_FILES = ("config.json", "eval.json", "metrics.csv")
BOOTSTRAP_REPS = 2000


@dataclasses.dataclass
class RunInfo:
    path: str
    config: Optional[dict]
    eval: Optional[dict]

    @property
    def method(self) -> str:
        for d in (self.eval, self.config):
            if d and d.get("method"):
                return str(d["method"])
        return self.algo or os.path.basename(os.path.normpath(self.path))

    @property
    def algo(self) -> Optional[str]:
        for d in (self.config, self.eval):
            if d and d.get("algo"):
                return str(d["algo"])
        return None

    @property
    def env_id(self) -> str:
        for d in (self.eval, self.config):
            if d and d.get("env_id"):
                return str(d["env_id"])
        if self.config and self.config.get("dataset"):
            return os.path.basename(str(self.config["dataset"]).rstrip("/"))
        return "?"

    @property
    def metrics_path(self) -> str:
        return os.path.join(self.path, "metrics.csv")


def _read_json(path: str) -> Optional[dict]:
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            value = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise UnderstudyError(f"Could not read {path}: {e}. The file is damaged or was cut short; re-run the "
                              "evaluation (or the training run) that writes it.") from e
    if not isinstance(value, dict):
        raise UnderstudyError(f"{path} should hold a JSON object, found {type(value).__name__}.")
    return value


def expand_run_dirs(run_dirs: list[str]) -> list[str]:
    """Run directories as given; a directory holding none of the run files but run subdirectories (such as a
    `quickstart --out DIR` folder) stands for those subdirectories, in name order."""
    out = []
    for d in run_dirs:
        if not os.path.isdir(d):
            raise UnderstudyError(f"Run directory {d!r} does not exist. Pass the runs/<name>/ folders written by "
                                  "`understudy train` (check the path).")
        if any(os.path.exists(os.path.join(d, f)) for f in RUN_FILES):
            out.append(d)
            continue
        subs = sorted(os.path.join(d, s) for s in os.listdir(d)
                      if any(os.path.exists(os.path.join(d, s, f)) for f in RUN_FILES))
        if not subs:
            raise UnderstudyError(f"{d!r} is not a run directory: it has none of {list(RUN_FILES)}, nor do its "
                                  "subfolders. Pass the runs/<name>/ folders written by `understudy train`.")
        out.extend(subs)
    return out


def load_run(run_dir: str) -> RunInfo:
    return RunInfo(path=run_dir, config=_read_json(os.path.join(run_dir, "config.json")),
                   eval=_read_json(os.path.join(run_dir, "eval.json")))


def _seed_scores(run: RunInfo, which: str) -> Optional[list[dict]]:
    """Per-seed {"mean", "success_rate", "episodes"} from eval.json[which], or None when absent."""
    block = run.eval.get(which)
    if block is None:
        return None
    path = os.path.join(run.path, "eval.json")
    seeds = block.get("seeds") if isinstance(block, dict) else None
    if not seeds:
        raise UnderstudyError(f"{path}: `{which}.seeds` is missing or empty; it should list one entry per seed "
                              "with `returns` and `mean`. Re-run the evaluation that writes eval.json.")
    out = []
    for s in seeds:
        returns = s.get("returns") or []
        if s.get("mean") is None and not returns:
            raise UnderstudyError(f"{path}: seed {s.get('seed')} in `{which}` has neither `mean` nor `returns`.")
        out.append({"mean": float(s["mean"]) if s.get("mean") is not None else float(np.mean(returns)),
                    "success_rate": s.get("success_rate"), "episodes": len(returns)})
    return out


def _decimals(scale: float) -> int:
    """Enough digits for both dense (hundreds) and sparse (0..1) returns."""
    a = abs(scale)
    return 1 if a >= 100 else 2 if a >= 1 else 3


def _fmt(x: float, decimals: Optional[int] = None) -> str:
    if not np.isfinite(x):
        return str(x)
    return f"{x:.{_decimals(x) if decimals is None else decimals}f}"


def _mean_pm_std(values) -> str:
    m, s = mean_std(values)
    d = _decimals(max(abs(m), s))  # one precision for both numbers
    return f"{_fmt(m, d)} ± {_fmt(s, d)}"


def _iqm_ci(values) -> str:
    point, low, high = iqm_with_ci(np.asarray(values, np.float64)[:, None], reps=BOOTSTRAP_REPS)
    d = _decimals(max(abs(point), (high - low) / 2))
    return f"{_fmt(point, d)} [{_fmt(low, d)}, {_fmt(high, d)}]"


def _group_row(env_id: str, method: str, runs: list[RunInfo]) -> dict:
    final = [s for r in runs for s in _seed_scores(r, "final") or []]
    if not final:
        raise UnderstudyError(f"{', '.join(os.path.join(r.path, 'eval.json') for r in runs)}: no `final` "
                              "evaluation. Re-run the evaluation that writes eval.json.")
    means = np.array([s["mean"] for s in final])
    row = {"env": env_id, "method": method}
    episodes = sorted({s["episodes"] for s in final})
    row["seeds"] = f"{len(final)}" + (f" ({episodes[0]} ep each)" if len(episodes) == 1 and episodes[0] else "")
    steps = sorted({r.eval.get("step") for r in runs if r.eval.get("step") is not None})
    row["step"] = "—" if not steps else str(steps[0]) if len(steps) == 1 else f"{steps[0]}–{steps[-1]}"
    row["final"] = _mean_pm_std(means)
    row["final_iqm"] = _iqm_ci(means)

    # Normalize each run's seeds with that run's own reference; only when every run has one.
    refs = [r.eval.get("reference") for r in runs]
    has_ref = all(ref and ref.get("random") is not None and ref.get("expert") is not None for ref in refs)
    norm = None
    if has_ref:
        norm = np.concatenate([normalized_score([s["mean"] for s in _seed_scores(r, "final")],
                                                ref["random"], ref["expert"]) for r, ref in zip(runs, refs)])
    row["norm"] = _mean_pm_std(norm) if norm is not None else "—"
    row["norm_iqm"] = _iqm_ci(norm) if norm is not None else "—"

    best_runs = [(r, _seed_scores(r, "best")) for r in runs]
    best_runs = [(r, b) for r, b in best_runs if b]
    if best_runs:
        best = np.array([s["mean"] for _, b in best_runs for s in b])
        cell = _mean_pm_std(best)
        if has_ref:
            bn = np.concatenate([normalized_score([s["mean"] for s in b], r.eval["reference"]["random"],
                                                  r.eval["reference"]["expert"]) for r, b in best_runs])
            cell += f" (norm. {_fmt(float(np.mean(bn)))})"
        if len(best) != len(final):
            cell += f" ({len(best)} of {len(final)} seeds)"
        row["best"] = cell
    else:
        row["best"] = "—"

    rates = [float(s["success_rate"]) for s in final if s.get("success_rate") is not None]
    row["success"] = f"{100 * np.mean(rates):.1f}%" if rates else "—"
    row["refs"] = sorted({(float(ref["random"]), float(ref["expert"])) for ref in refs if ref}) if has_ref else []
    row["dirs"] = [r.path for r in runs]
    return row


COLUMNS = [("env", "env"), ("method", "method"), ("seeds", "seeds"), ("step", "eval step"),
           ("final", "final return (mean ± std)"), ("final_iqm", "final return IQM [95% CI]"),
           ("norm", "final normalized (mean ± std)"), ("norm_iqm", "final normalized IQM [95% CI]"),
           ("best", "best-checkpoint return (mean ± std)"), ("success", "final success rate")]


def build_report(run_dirs: list[str], title: Optional[str] = "Results") -> str:
    """A markdown report: one row per (env, method) with final/best returns, IQM CIs and normalized scores.

    title: the top heading; None leaves it out (to embed the report in another document).
    """
    runs = [load_run(d) for d in expand_run_dirs(list(run_dirs))]
    evaluated = [r for r in runs if r.eval is not None]
    missing = [r for r in runs if r.eval is None]

    groups: dict[tuple[str, str], list[RunInfo]] = {}
    for r in evaluated:
        groups.setdefault((r.env_id, r.method), []).append(r)
    rows = [_group_row(env, method, rs) for (env, method), rs in sorted(groups.items())]

    lines = [f"# {title}", ""] if title else []
    if rows:
        # Drop columns that are empty in every row (no references, no best checkpoints, no success signal).
        cols = [(k, h) for k, h in COLUMNS if k in ("env", "method", "seeds") or any(row[k] != "—" for row in rows)]
        lines += ["| " + " | ".join(h for _, h in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
        lines += ["| " + " | ".join(row[k] for k, _ in cols) + " |" for row in rows]
        lines += ["", "Each seed contributes one score: its mean episode return, evaluated at the **final** "
                  "checkpoint (the end of training) or at the **best** checkpoint (the best evaluation seen "
                  "during training). `±` is the standard deviation over seeds; IQM is the interquartile mean "
                  f"over seeds with a 95% stratified-bootstrap confidence interval (rliable, {BOOTSTRAP_REPS} "
                  "resamples)."]
        refs = {(row["env"], ref) for row in rows for ref in row["refs"]}
        if refs:
            lines += ["", "Normalized score = (return − random) / (expert − random): 0 is a random policy, 1 the "
                      "expert. References: " + "; ".join(f"{env}: random {_fmt(a)}, expert {_fmt(b)}"
                                                         for env, (a, b) in sorted(refs)) + "."]
        lines += ["", "## Runs", ""]
        lines += [f"- {row['env']} / {row['method']}: " + ", ".join(f"`{d}`" for d in row["dirs"]) for row in rows]
    else:
        lines += ["No evaluated runs to report."]
    if missing:
        lines += ["", "## Runs without evaluation", ""]
        lines += [f"- `{r.path}` ({r.env_id} / {r.method}): no eval.json. The run may still be training or was "
                  "stopped before its final evaluation; resume it with `understudy train ... --resume`, or "
                  "evaluate its policy with `understudy eval`." for r in missing]
    return "\n".join(lines) + "\n"


def write_report(run_dirs: list[str], out_path: str, title: Optional[str] = "Results") -> str:
    """Write build_report(run_dirs) to out_path (creating folders) and return the markdown."""
    text = build_report(run_dirs, title=title)
    parent = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(parent, exist_ok=True)
    with open(out_path, "w") as f:
        f.write(text)
    return text
