"""The offline-walker study's report: results.json, report.md, robustness.png and curves.png, from the study
directory alone (study.json, references.json, runs/<run>/eval.json, runs/<run>/study_eval/*.json, metrics.csv).

Scores: raw returns (as note 002 reports them), and normalized x100 = 100 (return - random) / (expert - random)
with the evaluated env's references (references.json: the random and expert returns its datasets record).
`last` is the final/ export, `best` the best/ export (the best evaluation during training, chosen on
--eval-episodes episodes of the variant's first env), both re-measured over --final-eval-episodes episodes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np

from understudy.studies.common import embed_figures, plot_panels, summarize_matrix
from understudy.types import UnderstudyError

# Note 002 (/work/shared/seeds/002): returns of the best checkpoint on its expert trajectories (walk expert 962.8,
# run expert 318.4; random 51.9 / 27.9). CQL: its "all" (walk+run) dataset without the task bit, its best row
# (tianshou). BC, DT, TD3+BC: the note does not name the dataset; we compare the single-task expert dataset.
# The first of `variants` the study ran is compared (the report names it).
_SINGLE_FIRST = ("{task}-expert", "{task}-expert-bit", "walkrun-expert", "walkrun-expert-bit")
_MIXED_FIRST = ("walkrun-expert", "walkrun-expert-bit", "{task}-expert", "{task}-expert-bit")
NOTE_002 = {"bc": {"walker-walk": 181.9, "walker-run": 66.9, "variants": _SINGLE_FIRST},
            "cql": {"walker-walk": 211.4, "walker-run": 87.1, "variants": _MIXED_FIRST},
            "dt": {"walker-walk": 229.0, "walker-run": 75.0, "variants": _SINGLE_FIRST},
            "td3bc": {"walker-walk": 160.0, "walker-run": None, "variants": _SINGLE_FIRST}}
NOTE_002_EXPERT = {"walker-walk": 962.8, "walker-run": 318.4}
CHECKPOINTS = (("final", "last"), ("best", "best"))
_TASK_OF = {"walker-walk": "walk", "walker-run": "run"}
ENVS = tuple(_TASK_OF)


def _read_json(path: Path) -> Optional[dict]:
    return json.loads(path.read_text()) if path.exists() else None


def _normalized(value: float, ref: Optional[dict]) -> Optional[float]:
    if not ref:
        return None
    return 100.0 * (value - ref["random"]) / (ref["expert"] - ref["random"])


def collect_records(out: Path) -> tuple[list[dict], list[str], list[str]]:
    """(records, unfinished runs, runs missing evaluations): one record per (run, env, checkpoint, noise)."""
    study = _read_json(out / "study.json")
    if study is None:
        raise UnderstudyError(f"{out / 'study.json'} does not exist: {out} is not an offline-walker study directory.")
    refs = _read_json(out / "references.json") or {}
    noises = set(study.get("noise", [])) or None  # evaluations the study asks for now (a continued study may change)
    checkpoints = set(study.get("eval_checkpoints", ["final", "best"]))
    records, unfinished, unevaluated = [], [], []
    for name, cell in study["cells"].items():
        run_dir = out / "runs" / name
        if not (run_dir / "eval.json").exists():
            unfinished.append(name)
            continue
        variant = study["variants"][cell["variant"]]
        files = sorted((run_dir / "study_eval").glob("*.json")) if (run_dir / "study_eval").is_dir() else []
        if not files:
            unevaluated.append(name)
        for file in files:
            e = json.loads(file.read_text())
            if (noises is not None and e["obs_noise"] not in noises) or \
                    (e["obs_noise"] and e["checkpoint"] not in checkpoints):
                continue
            records.append({"run": name, **cell, "task": variant["task"], "recipe": variant["recipe"],
                            "bit": variant["bit"], "env_id": e["env_id"], "checkpoint": e["checkpoint"],
                            "noise": float(e["obs_noise"]), "episodes": e["episodes"], "mean": float(e["mean"]),
                            "normalized": _normalized(float(e["mean"]), refs.get(e["env_id"]))})
    return records, unfinished, unevaluated


def _per_seed(records: list[dict], **where) -> dict[int, float]:
    return {r["seed"]: r["mean"] for r in records if all(r[k] == v for k, v in where.items())}


def _summary(records: list[dict], method: str, checkpoint: str, noise: float) -> Optional[dict]:
    """Normalized score of `method` averaged over its (variant, env) cells: mean ± std over the seeds every cell
    has, and the IQM [95% CI] over all (seed, cell) scores."""
    rows = [r for r in records if r["method"] == method and r["checkpoint"] == checkpoint and r["noise"] == noise]
    if not rows or any(r["normalized"] is None for r in rows):
        return None
    cells = sorted({(r["variant"], r["env_id"]) for r in rows})
    by_cell = {c: {r["seed"]: r["normalized"] for r in rows if (r["variant"], r["env_id"]) == c} for c in cells}
    seeds = sorted(set.intersection(*(set(v) for v in by_cell.values())))
    if not seeds:
        return None
    matrix = np.array([[by_cell[c][s] for c in cells] for s in seeds])  # [seeds, cells]
    return {"cells": [list(c) for c in cells], "seeds": seeds, **summarize_matrix(matrix)}


def build_results(out: str | Path) -> dict:
    out = Path(out)
    study = _read_json(out / "study.json") or {}
    records, unfinished, unevaluated = collect_records(out)
    methods = list(dict.fromkeys(c["method"] for c in study["cells"].values()))
    methods = [m for m in methods if any(r["method"] == m for r in records)]
    cells = list(dict.fromkeys((r["variant"], r["env_id"]) for r in records))
    order = list(study["variants"])
    cells.sort(key=lambda c: (order.index(c[0]), ENVS.index(c[1]) if c[1] in ENVS else len(ENVS)))
    noises = sorted({r["noise"] for r in records})
    table = {kind: {f"{v} @ {e}": {m: _per_seed(records, method=m, variant=v, env_id=e, checkpoint=kind, noise=0.0)
                                   for m in methods} for v, e in cells} for kind, _ in CHECKPOINTS}
    summary = {m: {kind: _summary(records, m, kind, 0.0) for kind, _ in CHECKPOINTS} for m in methods}
    robustness = {kind: {m: {f"{n:g}": _summary(records, m, kind, n) for n in noises} for m in methods}
                  for kind in study.get("eval_checkpoints", ["final"])}
    comparison = []
    for algo, note in NOTE_002.items():
        if algo not in methods:
            continue
        for env_id in ("walker-walk", "walker-run"):
            if note[env_id] is None:
                continue
            ran = {r["variant"] for r in records if r["method"] == algo and r["env_id"] == env_id}
            variant = next((v for v in (t.format(task=_TASK_OF[env_id]) for t in note["variants"]) if v in ran), None)
            entry = {"algo": algo, "env_id": env_id, "note_002": note[env_id], "variant": variant}
            for kind, label in CHECKPOINTS:
                seeds = _per_seed(records, method=algo, variant=variant, env_id=env_id, checkpoint=kind, noise=0.0)
                entry[label] = float(np.mean(list(seeds.values()))) if seeds else None
                entry[f"{label}_beats"] = None if not seeds else bool(entry[label] > note[env_id])
            comparison.append(entry)
    return {"study": "offline-walker", "command": study.get("command"), "methods": methods,
            "cells": [list(c) for c in cells], "noise": noises, "references": _read_json(out / "references.json"),
            "table": table, "summary": summary, "robustness": robustness, "note_002": comparison,
            "records": records, "unfinished": unfinished, "unevaluated": unevaluated}


def _cell(per_seed: dict) -> str:
    values = list(per_seed.values())
    return "—" if not values else f"{np.mean(values):.1f} ± {np.std(values):.1f}"


def _score(s: Optional[dict]) -> str:
    return "—" if s is None else f"{s['mean']:.1f} ± {s['std']:.1f}"


def _iqm(s: Optional[dict]) -> str:
    return "—" if s is None else f"{s['iqm']:.1f} [{s['ci_low']:.1f}, {s['ci_high']:.1f}]"


def report_markdown(results: dict) -> str:
    methods = results["methods"]
    lines = ["# Offline RL on dm_control walker (note 002's experiments)", ""]
    if results.get("command"):
        lines += ["```bash", results["command"], "```", ""]
    refs = results.get("references") or {}
    if refs:
        lines += ["References (the datasets' own): " + "; ".join(
            f"{e}: random {r['random']:.1f}, expert {r['expert']:.1f}" for e, r in refs.items())
            + f". Note 002's experts: walk {NOTE_002_EXPERT['walker-walk']}, run {NOTE_002_EXPERT['walker-run']}.", ""]
    header = "| training data @ evaluated env | " + " | ".join(methods) + " |"
    for kind, label in CHECKPOINTS:
        which = "final/ export" if kind == "final" else "best/ export (chosen during training), re-measured"
        lines += [f"## Returns without noise, {label} checkpoint ({which})", "", header,
                  "|---|" + "---|" * len(methods)]
        for cell, per_method in results["table"][kind].items():
            lines.append(f"| {cell} | " + " | ".join(_cell(per_method[m]) for m in methods) + " |")
        lines += ["| normalized x100, average | " + " | ".join(_score(results["summary"][m][kind]) for m in methods)
                  + " |", "| normalized x100, IQM [95% CI] | "
                  + " | ".join(_iqm(results["summary"][m][kind]) for m in methods) + " |", ""]
    lines += ["Cells: mean ± std over seeds of each seed's mean return over --final-eval-episodes episodes (the last "
              "checkpoint on the env a run trained on: the run's own last evaluation). best/ was chosen on "
              "--eval-episodes episodes of the variant's first env during training. `walkrun` is walk + run "
              "concatenated, `-bit` appends the task bit (walk (0, 2), run (1, 2)). The average pools each "
              "method's cells per seed (normalized with the evaluated env's references); the IQM pools every "
              "(seed, cell) score with a stratified-bootstrap CI.", ""]
    lines += ["## Against note 002 (returns; note 002 reports its best checkpoint)", "",
              "| algorithm | env | note 002 | our data | ours, last | beats | ours, best | beats |",
              "|---|---|---|---|---|---|---|---|"]
    for c in results["note_002"]:
        fmt = lambda v: "—" if v is None else f"{v:.1f}"  # noqa: E731
        yes = lambda v: "—" if v is None else ("yes" if v else "**no**")  # noqa: E731
        lines.append(f"| {c['algo']} | {c['env_id']} | {c['note_002']:g} | {c['variant'] or '— (no expert data)'} | "
                     f"{fmt(c['last'])} | "
                     f"{yes(c['last_beats'])} | {fmt(c['best'])} | {yes(c['best_beats'])} |")
    lines += ["", "Note 002's data was expert trajectories (walk expert 962.8, run expert 318.4); ours is the `expert` "
              "recipe of our own experts (references above), so a dataset may come from a better or worse expert. "
              "CQL's number is its walk+run dataset without the task bit, so ours is walkrun-expert when the study "
              "ran it; BC, DT and TD3+BC: the note names no dataset, and ours is the single-task expert dataset "
              "(without the bit) when the study ran it, else the first of walk/run-expert-bit, walkrun-expert(-bit). "
              "`beats`: our mean over seeds above note 002's number.", ""]
    for kind, per_method in results["robustness"].items():
        label = dict(CHECKPOINTS)[kind]
        noises = [f"{n:g}" for n in results["noise"]]
        lines += [f"## Robustness: normalized x100 under observation noise, {label} checkpoint", "",
                  "| method | " + " | ".join(f"σ = {n}" for n in noises) + " |", "|---|" + "---|" * len(noises)]
        for m in methods:
            lines.append(f"| {m} | " + " | ".join(_score(per_method[m].get(n)) for n in noises) + " |")
        lines.append("")
    if results["robustness"]:
        lines += ["σ is the std of Gaussian noise on every observation (raw units; the task bit stays exact). "
                  "`+augN` methods trained with --obs-noise-augment N. Each cell averages the method's (data, env) "
                  "cells per seed (mean ± std over seeds).", ""]
    lines += ["![robustness](robustness.png)", "", "![curves](curves.png)", ""]
    if results["unfinished"]:
        lines += ["Unfinished (running the study again resumes them): " + ", ".join(results["unfinished"]), ""]
    if results["unevaluated"]:
        lines += ["Finished but not evaluated yet: " + ", ".join(results["unevaluated"]), ""]
    return "\n".join(lines)


def plot_robustness(results: dict, path: Path) -> Optional[Path]:
    """robustness.png: normalized score against the noise std, one line per method (± std over seeds), one panel
    per evaluated checkpoint."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = [(k, v) for k, v in results["robustness"].items()
              if any(s is not None for per in v.values() for s in per.values())]
    if not panels:
        return None
    fig = Figure(figsize=(5 * len(panels), 3.6), dpi=110)
    FigureCanvasAgg(fig)
    for ax, (kind, per_method) in zip(np.atleast_1d(fig.subplots(1, len(panels))), panels):
        for method, per_noise in per_method.items():
            points = [(float(n), s["mean"], s["std"]) for n, s in per_noise.items() if s is not None]
            if points:
                x, y, e = map(np.array, zip(*points))
                ax.errorbar(x, y, yerr=e, marker="o", capsize=3, label=method)
        ax.set_title(f"{dict(CHECKPOINTS)[kind]} checkpoint", fontsize="medium")
        ax.set_xlabel("observation noise std")
        ax.set_ylabel("normalized score x100")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small")
    fig.tight_layout()
    fig.savefig(path)
    return path


def plot_curves(out: Path, results: dict, path: Path) -> Optional[Path]:
    """curves.png: training-time evaluation return over updates, one panel per dataset variant, one line per
    method (mean over seeds)."""
    import pandas as pd

    study = _read_json(out / "study.json") or {}
    panels: dict[str, dict] = {}
    for name, cell in study.get("cells", {}).items():
        metrics = out / "runs" / name / "metrics.csv"
        if not metrics.exists():
            continue
        df = pd.read_csv(metrics)
        if "eval/return" not in df.columns:
            continue
        series = df[["step", "eval/return"]].dropna().drop_duplicates("step", keep="last").set_index("step")
        panels.setdefault(cell["variant"], {}).setdefault(cell["method"], []).append(series["eval/return"])
    if not panels:
        return None
    means = [(variant, {method: pd.concat(frames, axis=1).sort_index().mean(axis=1) for method, frames in lines.items()})
             for variant, lines in panels.items()]
    return plot_panels(path, means, "return (training env)")


def write_walker_report(out: str | Path) -> dict:
    out = Path(out)
    results = build_results(out)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    text = report_markdown(results)
    text = embed_figures(text, out, {"robustness.png": lambda p: plot_robustness(results, p),
                                     "curves.png": lambda p: plot_curves(out, results, p)})
    (out / "report.md").write_text(text)
    return results
