"""The offline-locomotion study's report: results.json, report.md and curves.png from the study directory alone.

Read: <out>/runs/<algo>-<env>-<recipe>-seed<S>/ (eval.json: the last evaluation (`final`, --final-eval-episodes
episodes), the best evaluation during training (`best`, --eval-episodes episodes) and the dataset's random/expert
references; metrics.csv for the curves), and <out>/study.json when present. Scores are normalized x100:
100 * (return - random) / (expert - random), with each dataset's own references (as D4RL and CORL report them).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

import numpy as np

from understudy.studies.common import embed_figures, plot_panels, summarize_matrix
from understudy.studies.offline_locomotion import ALGOS, ENVS, RECIPES
from understudy.types import UnderstudyError

# REFERENCES.md: CORL on D4RL v2, normalized x100, last evaluation, mean over seeds
CORL = {
    "halfcheetah-medium": {"bc": 42.4, "td3bc": 48.1, "cql": 47.0, "iql": 48.3, "dt": 42.2},
    "halfcheetah-medium-replay": {"bc": 35.7, "td3bc": 44.8, "cql": 45.0, "iql": 44.5, "dt": 38.9},
    "halfcheetah-medium-expert": {"bc": 56.0, "td3bc": 90.8, "cql": 95.6, "iql": 94.7, "dt": 91.6},
    "hopper-medium": {"bc": 53.5, "td3bc": 60.4, "cql": 59.1, "iql": 67.5, "dt": 65.1},
    "hopper-medium-replay": {"bc": 29.8, "td3bc": 64.4, "cql": 95.1, "iql": 97.4, "dt": 81.8},
    "hopper-medium-expert": {"bc": 52.3, "td3bc": 101.2, "cql": 99.3, "iql": 107.4, "dt": 110.4},
    "walker2d-medium": {"bc": 63.2, "td3bc": 82.7, "cql": 80.8, "iql": 80.9, "dt": 67.6},
    "walker2d-medium-replay": {"bc": 21.8, "td3bc": 85.6, "cql": 73.1, "iql": 82.2, "dt": 59.9},
    "walker2d-medium-expert": {"bc": 99.0, "td3bc": 110.0, "cql": 109.6, "iql": 111.7, "dt": 107.1},
}
# issue 5: the average normalized score over the nine datasets, at least
TARGETS = {"td3bc": 75.0, "iql": 75.0, "cql": 75.0, "dt": 70.0}
_RUN_NAME = re.compile(r"^(?P<algo>{})-(?P<env>{})-(?P<recipe>{})-seed(?P<seed>\d+)$".format(
    "|".join(sorted(ALGOS, key=len, reverse=True)), "|".join(ENVS),
    "|".join(sorted(RECIPES, key=len, reverse=True))))


def _read_json(path: Path) -> Optional[dict]:
    return json.loads(path.read_text()) if path.exists() else None


def _normalized(result: dict, reference: Optional[dict]) -> Optional[float]:
    if not reference or reference.get("random") is None or reference.get("expert") is None:
        return None
    return 100.0 * (float(result["mean"]) - reference["random"]) / (reference["expert"] - reference["random"])


def build_results(out: str | Path) -> dict:
    """scores[dataset][algo] = {"last": [per seed], "best": [per seed], "seeds", "dirs"}, plus per-algo summaries."""
    out = Path(out)
    runs_dir = out / "runs"
    if not runs_dir.is_dir():
        raise UnderstudyError(f"{runs_dir} does not exist: the study has no runs yet.")
    scores: dict[str, dict[str, dict]] = {}
    unfinished, unnormalized = [], []
    for run in sorted(runs_dir.iterdir()):
        match = _RUN_NAME.match(run.name)
        if not match:
            continue
        evaluation = _read_json(run / "eval.json")
        if evaluation is None:
            unfinished.append(run.name)
            continue
        dataset = f"{match.group('env')}-{match.group('recipe')}"
        cell = scores.setdefault(dataset, {}).setdefault(match.group("algo"), {"last": [], "best": [], "seeds": [],
                                                                               "dirs": []})
        reference = evaluation.get("reference")
        best = {b["seed"]: b for b in (evaluation.get("best") or {}).get("seeds", [])}
        for result in evaluation["final"]["seeds"]:
            last = _normalized(result, reference)
            if last is None:
                unnormalized.append(run.name)
                continue
            cell["last"].append(last)
            cell["best"].append(_normalized(best.get(result["seed"], result), reference))
            cell["seeds"].append(int(result["seed"]))
        cell["dirs"].append(str(run))
    datasets = [d for d in (f"{e}-{r}" for e in ENVS for r in RECIPES) if d in scores]
    algos = [a for a in ALGOS if any(a in scores[d] for d in datasets)]
    summary = {}
    for algo in algos:
        covered = [d for d in datasets if scores[d].get(algo, {}).get("last")]
        seeds = min((len(scores[d][algo]["last"]) for d in covered), default=0)
        entry = {"datasets": covered, "seeds": seeds}
        for kind in ("last", "best"):
            if covered and seeds:
                matrix = np.array([scores[d][algo][kind][:seeds] for d in covered]).T  # [seeds, datasets]
                entry[kind] = summarize_matrix(matrix)
        target = TARGETS.get(algo)
        complete = len(covered) == len(ENVS) * len(RECIPES)
        entry["target"] = None if target is None else {
            "threshold": target, "complete": complete,
            "met": bool(entry["last"]["mean"] >= target) if "last" in entry and complete else None}
        summary[algo] = entry
    study = _read_json(out / "study.json") or {}
    return {"study": "offline-locomotion", "command": study.get("command"), "datasets": datasets, "algos": algos,
            "scores": scores, "summary": summary, "unfinished": unfinished, "unnormalized": sorted(set(unnormalized))}


def _cell(values: list[float]) -> str:
    if not values:
        return "—"
    return f"{np.mean(values):.1f} ± {np.std(values):.1f}"


def report_markdown(results: dict) -> str:
    algos, datasets = results["algos"], results["datasets"]
    lines = ["# Offline RL on MuJoCo locomotion (our D4RL-style datasets)", ""]
    if results.get("command"):
        lines += ["```bash", results["command"], "```", ""]
    for kind, title in (("last", "Last evaluation (--final-eval-episodes episodes per seed)"),
                        ("best", "Best evaluation during training (--eval-episodes episodes per seed)")):
        lines += [f"## {title}", "", "| dataset | " + " | ".join(algos) + " |", "|---|" + "---|" * len(algos)]
        for d in datasets:
            lines.append(f"| {d} | " + " | ".join(_cell(results["scores"][d].get(a, {}).get(kind, []))
                                                  for a in algos) + " |")
        avg = []
        for a in algos:
            s = results["summary"][a].get(kind)
            avg.append("—" if s is None else f"**{s['mean']:.1f}** ± {s['std']:.1f}")
        lines.append("| average | " + " | ".join(avg) + " |")
        iqm = []
        for a in algos:
            s = results["summary"][a].get(kind)
            iqm.append("—" if s is None else f"{s['iqm']:.1f} [{s['ci_low']:.1f}, {s['ci_high']:.1f}]")
        lines += ["| IQM [95% CI] | " + " | ".join(iqm) + " |", ""]
    lines += ["Normalized score x100 = 100 (return − random) / (expert − random) with each dataset's own references "
              "(its metadata). A cell is mean ± std over seeds; `average` is the mean over the datasets an algorithm "
              "ran on of each seed's score (± std over seeds); IQM pools every (dataset, seed) score, with a 95% "
              "stratified-bootstrap CI.", ""]
    targets = [(a, s["target"]) for a, s in results["summary"].items() if s.get("target")]
    if targets:
        lines += ["## Targets (issue 5: average of the last evaluation over the nine datasets)", ""]
        for a, t in targets:
            got = results["summary"][a].get("last")
            state = ("not all nine datasets yet" if not t["complete"] else "met" if t["met"] else "**not met**")
            lines.append(f"- {a}: ≥ {t['threshold']:.0f}, measured {got['mean']:.1f}: {state}" if got
                         else f"- {a}: ≥ {t['threshold']:.0f}: no results")
        lines.append("")
    lines += ["## CORL on D4RL v2 (REFERENCES.md; other datasets, for orientation)", "",
              "| dataset | " + " | ".join(algos) + " |", "|---|" + "---|" * len(algos)]
    for d in datasets:
        lines.append(f"| {d} | " + " | ".join(f"{CORL.get(d, {}).get(a, '—')}" for a in algos) + " |")
    lines += ["", "![curves](curves.png)", ""]
    if results["unfinished"]:
        lines += ["Unfinished (running the study again resumes them): " + ", ".join(results["unfinished"]), ""]
    if results["unnormalized"]:
        lines += ["Left out, their datasets record no random/expert references: " + ", ".join(results["unnormalized"]),
                  ""]
    return "\n".join(lines)


def plot_curves(results: dict, path: Path) -> Optional[Path]:
    """curves.png: one panel per dataset, normalized evaluation score x100 over updates, one line per algorithm
    (mean over seeds)."""
    import pandas as pd

    panels = []
    for d in results["datasets"]:
        lines = {}
        for algo, cell in results["scores"][d].items():
            frames = []
            for run_dir in cell["dirs"]:
                metrics, evaluation = Path(run_dir) / "metrics.csv", _read_json(Path(run_dir) / "eval.json") or {}
                reference = evaluation.get("reference")
                if not metrics.exists() or not reference:
                    continue
                df = pd.read_csv(metrics)
                if "eval/return" not in df.columns:
                    continue
                df = df[["step", "eval/return"]].dropna().drop_duplicates("step", keep="last").set_index("step")
                frames.append(100 * (df["eval/return"] - reference["random"]) / (reference["expert"] - reference["random"]))
            if frames:
                lines[algo] = pd.concat(frames, axis=1).sort_index().mean(axis=1)
        if lines:
            panels.append((d, lines))
    if not panels:
        return None
    return plot_panels(path, panels, "normalized score x100")


def write_offline_report(out: str | Path) -> dict:
    out = Path(out)
    results = build_results(out)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    text = report_markdown(results)
    text = embed_figures(text, out, {"curves.png": lambda path: plot_curves(results, path)})
    (out / "report.md").write_text(text)
    return results
