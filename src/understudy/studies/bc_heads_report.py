"""The bc-heads study's report: results.json, report.md, scores.png and curves.png from the study directory alone.

Read: <out>/runs/<method>-seed<S>/ (eval.json: the final evaluation and the dataset's random/expert references;
config.json: the settings; metrics.csv: the curves), and when present <out>/study.json (the command),
<out>/timings.json (process wall time per run) and <out>/dataset.json (the dataset's size, returns and action
noise). One run = one seed; each seed's score is the mean return of its final evaluation. Normalized score =
(return − random) / (expert − random) with the dataset's references.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Optional

import numpy as np

from understudy.studies.common import embed_figures, summarize_scores
from understudy.types import UnderstudyError

# issue 4's targets: normalized score of the final policy, mean over seeds (GAIL's on Hopper and HalfCheetah,
# AIRL's on Hopper; DAgger's from 4 expert episodes)
TARGETS = {"mse": 0.95, "diffusion": 0.95, "gmm": 0.95, "gaussian": 0.90, "dagger": 0.98, "gail": 0.90, "airl": 0.80}
TARGET_ENVS = {"gail": ("Hopper", "HalfCheetah"), "airl": ("Hopper",)}
_RUN_NAME = re.compile(r"^(?P<method>.+)-seed(?P<seed>\d+)$")
# settings that the table's other columns (or the run's own bookkeeping) already show
_NOT_HYPER = {"head", "expert"}


def _read_json(path: Path) -> Optional[dict]:
    return json.loads(path.read_text()) if path.exists() else None


def _non_default_settings(config: dict) -> dict:
    """The run's algorithm settings that differ from that algorithm's defaults, plus its step budget."""
    from understudy.algos import ALGORITHMS, get_algorithm

    algo, settings = config.get("algo"), config.get("config") or {}
    changed = {}
    if algo in ALGORITHMS:
        changed = _changed(get_algorithm(algo).Config(), settings)
    return {"steps": config.get("steps"), **changed}


def _as_json(value):
    return [_as_json(v) for v in value] if isinstance(value, (tuple, list)) else value


def _changed(defaults, settings: dict, prefix: str = "") -> dict:
    """{name: value} of `settings` (a config.json dict) that differ from the dataclass instance `defaults`; a
    nested config (GAIL's sac, ppo) is compared field by field and reported as `sac.actor_lr=...`."""
    changed = {}
    for f in dataclasses.fields(defaults):
        if f.name not in settings or f.name in _NOT_HYPER:
            continue
        default, value = getattr(defaults, f.name), settings[f.name]
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            changed.update(_changed(default, value, f"{prefix}{f.name}."))
        elif _as_json(default) != _as_json(value):
            changed[prefix + f.name] = value
    return changed


def _target(method: str, env_id: str) -> Optional[float]:
    if method not in TARGETS:
        return None
    envs = TARGET_ENVS.get(method)
    return TARGETS[method] if envs is None or any(env_id.startswith(e) for e in envs) else None


def build_results(out: str | Path) -> dict:
    """Per method: seeds, returns, normalized scores, statistics, settings, wall time and the target check."""
    out = Path(out)
    runs_dir = out / "runs"
    if not runs_dir.is_dir():
        raise UnderstudyError(f"{runs_dir} does not exist: the study has no runs yet.")
    timings = _read_json(out / "timings.json") or {}
    study_refs = _read_json(out / "references.json")  # the study's references normalize every method alike
    study = _read_json(out / "study.json") or {}
    per_method: dict[str, dict] = {}
    env_ids, references, unfinished = set(), set(), []
    for run in sorted(runs_dir.iterdir()):
        match = _RUN_NAME.match(run.name)
        if not match:
            continue
        evaluation, config = _read_json(run / "eval.json"), _read_json(run / "config.json") or {}
        if evaluation is None:
            unfinished.append(run.name)
            continue
        method = match.group("method")
        entry = per_method.setdefault(method, {"seeds": [], "returns": [], "normalized": [], "episodes": [],
                                               "time_s": [], "process_s": [], "dirs": [], "settings": None,
                                               "algo": evaluation.get("algo"), "step": []})
        for seed_result in evaluation["final"]["seeds"]:
            entry["seeds"].append(int(seed_result["seed"]))
            entry["returns"].append(float(seed_result["mean"]))
            entry["episodes"].append(len(seed_result.get("returns") or []))
            reference = study_refs or evaluation.get("reference")
            if reference and reference.get("random") is not None and reference.get("expert") is not None:
                lo, hi = float(reference["random"]), float(reference["expert"])
                references.add((lo, hi))
                entry["normalized"].append((float(seed_result["mean"]) - lo) / (hi - lo))
        entry["time_s"].append(float(evaluation.get("time_s") or np.nan))
        if run.name in timings:
            entry["process_s"].append(float(timings[run.name]))
        entry["step"].append(int(evaluation.get("step") or 0))
        entry["dirs"].append(str(run))
        entry["settings"] = entry["settings"] or _non_default_settings(config)
        env_ids.add(evaluation.get("env_id"))
    if len(env_ids) > 1:
        raise UnderstudyError(f"{runs_dir} mixes environments {sorted(env_ids)}; a bc-heads study has one.")
    env_id = next(iter(env_ids), None)
    methods = {}
    for method, e in per_method.items():
        normalized = e["normalized"] if len(e["normalized"]) == len(e["returns"]) else []
        target = _target(method, env_id or "")
        summary_norm = summarize_scores(normalized) if normalized else None
        methods[method] = {
            "algo": e["algo"], "seeds": e["seeds"], "episodes_per_seed": sorted(set(e["episodes"])),
            "step": sorted(set(e["step"])), "settings": e["settings"], "dirs": e["dirs"],
            "return": summarize_scores(e["returns"]), "normalized": summary_norm,
            "train_time_s": float(np.nanmean(e["time_s"])) if e["time_s"] else None,
            "process_time_s": float(np.mean(e["process_s"])) if e["process_s"] else None,
            "target": None if target is None else {
                "threshold": target, "met": None if summary_norm is None else bool(summary_norm["mean"] >= target)}}
    order = {m: i for i, m in enumerate(_method_order())}
    methods = dict(sorted(methods.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))
    return {"study": "bc-heads", "env_id": env_id, "command": study.get("command"),
            "dataset": (study.get("args") or {}).get("dataset"), "dataset_info": _read_json(out / "dataset.json"),
            "references": sorted(references),
            "reference_source": (study_refs or {}).get("source"),
            "methods": methods, "unfinished": unfinished}


def _method_order() -> tuple[str, ...]:
    from understudy.studies.bc_heads import METHODS

    return METHODS


# ------------------------------------------------------------------------------------------------ markdown
def _fmt(x: Optional[float], digits: int = 1) -> str:
    return "—" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def _settings(settings: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items()) or "defaults"


def _dataset_details(info: Optional[dict]) -> str:
    """', 25 episodes, 24,676 steps, return 4362.5 ± 274.6' and the action noise, from <out>/dataset.json."""
    from understudy.data.info import describe_action_noise

    if not info:
        return ""
    text = f", {info['episodes']:,} episodes, {info['steps']:,} steps"
    if info.get("return"):
        text += f", return {info['return']['mean']:.1f} ± {info['return']['std']:.1f}"
    if info.get("action_noise"):
        text += f"; action noise: {describe_action_noise(info)}"
    return text


def report_markdown(results: dict) -> str:
    env = results["env_id"] or "?"
    lines = [f"# Behaviour cloning heads, DAgger, GAIL and AIRL on {env}", ""]
    if results.get("command"):
        lines += ["```bash", results["command"], "```", ""]
    if results.get("dataset"):
        lines += [f"Expert dataset: `{results['dataset']}`{_dataset_details(results.get('dataset_info'))}.", ""]
    header = ("| method | hyper-parameters | seeds | final return (mean ± std) | return IQM [95% CI] | "
              "normalized (mean ± std) | normalized IQM [95% CI] | target | wall time per run |")
    lines += [header, "|" + "---|" * (header.count("|") - 1)]
    for method, m in results["methods"].items():
        r, n = m["return"], m["normalized"]
        target = m["target"]
        target_cell = "—" if target is None else (
            f"≥ {target['threshold']:.2f}: " + ("—" if target["met"] is None else "met" if target["met"] else "**not met**"))
        wall = m["process_time_s"] if m["process_time_s"] is not None else m["train_time_s"]
        lines.append(
            f"| {method} | {_settings(m['settings'])} | {len(m['seeds'])} | {_fmt(r['mean'])} ± {_fmt(r['std'])} | "
            f"{_fmt(r['iqm'])} [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}] | "
            + (f"{_fmt(n['mean'], 3)} ± {_fmt(n['std'], 3)} | {_fmt(n['iqm'], 3)} [{_fmt(n['ci_low'], 3)}, "
               f"{_fmt(n['ci_high'], 3)}]" if n else "— | —")
            + f" | {target_cell} | {_fmt(wall, 0)} s |")
    episodes = sorted({e for m in results["methods"].values() for e in m["episodes_per_seed"]})
    lines += ["", f"Each seed's score is the mean return of its final policy over {'/'.join(map(str, episodes))} "
              "deterministic episodes. ± is the standard deviation over seeds; IQM is the interquartile mean over "
              "seeds with a 95% stratified-bootstrap confidence interval."]
    if results["references"]:
        refs = "; ".join(f"random {lo:.1f}, expert {hi:.1f}" for lo, hi in results["references"])
        source = f" from {results['reference_source']}" if results.get("reference_source") else ""
        lines += ["", f"Normalized score = (return − random) / (expert − random), with {refs}{source}."]
    lines += ["", "Hyper-parameters list what differs from each algorithm's defaults (`understudy train ALGO --help`) "
              "and the step budget (BC: gradient updates; DAgger, GAIL, AIRL: environment steps). Wall time is the "
              "run's process time (training and evaluations).", "", "![normalized scores](scores.png)", "",
              "![learning curves](curves.png)", "", "## Runs", ""]
    for method, m in results["methods"].items():
        lines.append(f"- {method}: " + ", ".join(f"`{d}`" for d in m["dirs"]))
    if results["unfinished"]:
        lines += ["", "Unfinished (no eval.json yet; running the study again resumes them): "
                  + ", ".join(results["unfinished"])]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ figures
def plot_scores(results: dict, path: Path) -> Optional[Path]:
    """scores.png: normalized score per method, IQM with its 95% CI, each seed as a dot, targets as ticks."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = [(k, m) for k, m in results["methods"].items() if m["normalized"]]
    if not rows:
        return None
    fig = Figure(figsize=(1.1 * len(rows) + 2.5, 4.0), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    x = np.arange(len(rows))
    iqm = np.array([m["normalized"]["iqm"] for _, m in rows])
    low = iqm - np.array([m["normalized"]["ci_low"] for _, m in rows])
    high = np.array([m["normalized"]["ci_high"] for _, m in rows]) - iqm
    ax.bar(x, iqm, yerr=[low, high], capsize=4, color="tab:blue", alpha=0.7, label="IQM [95% CI]")
    for i, (_, m) in enumerate(rows):
        seeds = m["normalized"]["per_seed"]
        ax.scatter(np.full(len(seeds), x[i]), seeds, color="black", s=10, zorder=3,
                   label="seeds" if i == 0 else None)
        if m["target"]:
            ax.hlines(m["target"]["threshold"], x[i] - 0.4, x[i] + 0.4, colors="tab:red", linestyles=":",
                      label="target" if i == next(j for j, (_, r) in enumerate(rows) if r["target"]) else None)
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_xticks(x, [k for k, _ in rows], rotation=30, ha="right")
    ax.set_ylabel("normalized score (1 = expert)")
    ax.set_title(f"{results['env_id']}: final normalized score")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    return path


def write_bc_heads_report(out: str | Path) -> dict:
    """results.json, report.md, scores.png and curves.png in `out`; returns the results."""
    from understudy.eval.plots import plot_runs

    out = Path(out)
    results = build_results(out)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    text = report_markdown(results)
    figures = {"scores.png": lambda p: plot_scores(results, p),
               "curves.png": lambda p: plot_runs([d for m in results["methods"].values() for d in m["dirs"]], str(p),
                                                 title=f"{results['env_id']}: evaluation return, mean over seeds, "
                                                       "95% CI")}
    text = embed_figures(text, out, figures)
    (out / "report.md").write_text(text)
    return results
