"""The instruct studies' report: results.json, report.md and curves.png, from the study directory alone.

Read: <out>/runs/*/ (eval.json of finished runs, metrics.csv for curves, config.json), and when present
<out>/study.json (the commands), <out>/data/manifest.json (demonstrations per task) and <out>/timings.json
(process wall time per run). Scores are success rates of each run's final policy; statistics are over seeds
(one run = one seed): mean ± std, and the IQM with a 95% stratified-bootstrap CI.

The issue's targets are checked by `check_targets` on the measured numbers, never assumed.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Optional

import numpy as np

from understudy.studies.common import summarize_matrix, summarize_scores
from understudy.types import UnderstudyError

# issue 7's targets: success of the final policy, mean over seeds
BABYAI_TARGETS = {"GoToLocal": 0.95, "PickupLoc": 0.90, "PutNextLocal": 0.80}
MT10_AVERAGE_TARGET = 0.85
MT10_HELD_OUT_MAX_GAP = 0.05  # training-instruction success minus held-out-paraphrase success, at most
_EPS = 1e-9  # success rates are fractions of episodes: compare without float-rounding surprises


def _read_json(path: Path) -> Optional[dict]:
    return json.loads(path.read_text()) if path.exists() else None


# ------------------------------------------------------------------------------------------------ statistics
# ------------------------------------------------------------------------------------------------ results
def _run_dirs(out: Path) -> list[Path]:
    runs = out / "runs"
    if not runs.is_dir():
        return []
    found = [p for p in runs.iterdir() if (p / "config.json").exists() or (p / "eval.json").exists()]
    return sorted(found, key=lambda p: (len(p.name), p.name))  # seed2 before seed10


def build_results(out: str | Path, study: str) -> dict:
    """Everything the report shows, from the study directory (see the module docstring)."""
    out = Path(out)
    meta = _read_json(out / "study.json") or {}
    manifest = _read_json(out / "data" / "manifest.json") or {}
    timings = _read_json(out / "timings.json") or {}
    run_dirs = _run_dirs(out)
    if not run_dirs:
        raise UnderstudyError(f"No run directories under {out / 'runs'} (none has config.json or eval.json). Run "
                              "the study first; --report-only rebuilds the report of a study that has run.")
    runs, finished = {}, []
    for d in run_dirs:
        ev, cfg = _read_json(d / "eval.json"), _read_json(d / "config.json") or {}
        info = {"dir": str(d), "finished": ev is not None, "seed": (cfg.get("run") or {}).get("seed"),
                "steps": cfg.get("steps"), "wall_s": timings.get(d.name)}
        if ev is not None:
            final = ev["final"]["seeds"][0]
            info.update(seed=final["seed"], step=ev["step"], train_time_s=ev["time_s"], devices=ev.get("devices"),
                        dataset_episodes=ev["dataset"]["episodes"], dataset_steps=ev["dataset"]["steps"])
            finished.append((ev, final))
        runs[d.name] = info
    tasks = list(finished[0][0]["tasks"]) if finished else []
    kinds = ["train", "held-out"] if study == "instruct-metaworld" else ["train"]
    per_task: dict[str, dict] = {t: {"demos": _demos(manifest, t)} for t in tasks}
    overall: dict[str, dict] = {}
    for kind in kinds:
        rows = [[final["evaluations"][kind]["per_task"][t]["success_rate"] for t in tasks]
                for _, final in finished if kind in final.get("evaluations", {})]
        if not rows:
            continue
        matrix = np.asarray(rows, np.float64)
        for j, t in enumerate(tasks):
            per_task[t][kind] = summarize_scores(matrix[:, j].tolist())
        overall[kind] = summarize_matrix(matrix)
    if "train" in overall and "held-out" in overall:
        for t in tasks:
            per_task[t]["gap"] = per_task[t]["train"]["mean"] - per_task[t]["held-out"]["mean"]
        overall["gap"] = overall["train"]["mean"] - overall["held-out"]["mean"]
    observations = next((m.get("observations") for m in manifest.values() if m.get("observations")), None)
    results = {
        "study": study, "suite": finished[0][0]["env_id"] if finished else None,
        "observations": observations or ("grid" if study == "instruct-babyai" else "state"),
        "tasks": tasks, "seeds": [final["seed"] for _, final in finished],
        "episodes_per_task": len(finished[0][1]["evaluations"]["train"]["per_task"][tasks[0]]["returns"])
        if finished and tasks else None,
        "per_task": per_task, "overall": overall, "runs": runs, "datasets": manifest,
        "commands": {"study": meta.get("command"), "collect": meta.get("datasets") or
                     {k: v.get("command") for k, v in manifest.items()},
                     "train": meta.get("runs") or _commands_from_configs(run_dirs)},
    }
    results["targets"] = check_targets(results)
    return results


def _demos(manifest: dict, task: str) -> Optional[int]:
    for entry in manifest.values():
        if task in (entry.get("per_task") or {}):
            return entry["per_task"][task]["episodes"]
    return None


def _commands_from_configs(run_dirs: list[Path]) -> dict:
    """The training commands as the run directories record them (when study.json is missing)."""
    commands = {}
    for d in run_dirs:
        cfg = _read_json(d / "config.json")
        if cfg and cfg.get("run"):
            r, cmd = cfg["run"], ["understudy", "train", cfg.get("algo", "instruct")]
            for flag in ("dataset", "steps", "eval_every", "eval_episodes", "seed"):  # as far as recorded
                if r.get(flag) is not None:
                    cmd += ["--" + flag.replace("_", "-"), str(r[flag])]
            commands[d.name] = cmd + ["--out", str(d)]
    return commands


# ------------------------------------------------------------------------------------------------ targets
def _level(task: str) -> str:
    return task.rsplit("-v", 1)[0]


def check_targets(results: dict) -> list[dict]:
    """The issue's targets against the measured numbers: [{name, target, threshold, measured, met, note}].

    BabyAI: each level's mean success over seeds at least its target. Meta-World MT10 (stated for state
    observations): the average over tasks at least 85%, and held-out paraphrases at most 5 points below the
    training instructions (a held-out score above the training one meets it). A number not measured (no finished
    run, no held-out evaluation) is not met.
    """
    per_task, overall, out = results.get("per_task") or {}, results.get("overall") or {}, []
    if results["study"] == "instruct-babyai":
        for level, threshold in BABYAI_TARGETS.items():
            task = next((t for t in per_task if _level(t) == level), None)
            measured = per_task[task]["train"]["mean"] if task and "train" in per_task[task] else None
            out.append({"name": f"{level} success", "target": f"≥ {100 * threshold:.0f}%", "threshold": threshold,
                        "measured": measured, "met": measured is not None and measured >= threshold - _EPS,
                        "note": "", "task": task})
        return out
    note = ""
    if results.get("observations") == "pixels":
        note = "the issue states this target for state observations; these runs learn from images"
    tasks = results.get("tasks") or []
    if tasks and sorted(tasks) != sorted(_mt10()):
        note = "the issue states this target for MT10; these runs cover other tasks"
    average = overall.get("train", {}).get("mean")
    out.append({"name": "MT10 average success (training instructions)",
                "target": f"≥ {100 * MT10_AVERAGE_TARGET:.0f}%", "threshold": MT10_AVERAGE_TARGET, "measured": average,
                "met": average is not None and average >= MT10_AVERAGE_TARGET - _EPS, "note": note})
    gap = overall.get("gap")
    out.append({"name": "held-out paraphrases within 5 points (training − held-out)",
                "target": f"≤ {100 * MT10_HELD_OUT_MAX_GAP:.0f} points", "threshold": MT10_HELD_OUT_MAX_GAP,
                "measured": gap, "met": gap is not None and gap <= MT10_HELD_OUT_MAX_GAP + _EPS, "note": note})
    return out


def _mt10() -> tuple[str, ...]:
    from understudy.instruct.paraphrases import MT10

    return MT10


# ------------------------------------------------------------------------------------------------ report
def _pct(x: Optional[float]) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _mean_std(s: Optional[dict]) -> str:
    return "–" if not s else f"{100 * s['mean']:.1f} ± {100 * s['std']:.1f}%"


def _iqm(s: Optional[dict]) -> str:
    return "–" if not s else f"{100 * s['iqm']:.1f}% [{100 * s['ci_low']:.1f}, {100 * s['ci_high']:.1f}]"


def _per_seed(s: Optional[dict]) -> str:
    return "–" if not s else ", ".join(f"{100 * x:.0f}" for x in s["per_seed"])


def _points(x: Optional[float]) -> str:
    return "–" if x is None else f"{100 * x:+.1f}"


def _seconds(x) -> str:
    if x is None:
        return "–"
    return f"{x:.0f} s" if x < 120 else (f"{x / 60:.1f} min" if x < 7200 else f"{x / 3600:.2f} h")


def _measured(t: dict) -> str:
    if t["measured"] is None:
        return "not measured"
    return _points(t["measured"]) + " points" if "points" in t["target"] else _pct(t["measured"])


def report_markdown(results: dict) -> str:
    metaworld = results["study"] == "instruct-metaworld"
    runs, tasks = results["runs"], results["tasks"]
    finished = [r for r in runs.values() if r["finished"]]
    title = (f"# Instruction following on Meta-World {results.get('suite') or ''} "
             f"({'64x64 images' if results['observations'] == 'pixels' else 'states'})" if metaworld
             else "# Instruction following on BabyAI")
    lines = [title, ""]
    if results["commands"].get("study"):
        lines += [f"Made by `{results['commands']['study']}`.", ""]
    lines += [f"{len(finished)} of {len(runs)} run(s) finished (one seed each; seeds "
              f"{', '.join(str(s) for s in results['seeds']) or 'none'}). Each run trains one multi-task "
              "transformer policy on every task's demonstrations by behaviour cloning; the scores are success rates "
              f"of its final policy over {results['episodes_per_task'] or '?'} episode(s) per task"
              + (", given the training instructions and, separately, held-out paraphrases it never saw."
                 if metaworld else ", each given its episode's mission.")
              + " Statistics over seeds: mean ± std, and the IQM with a 95% bootstrap CI.", ""]
    lines += ["## Targets (issue 7)", "", "| target | threshold | measured (mean over seeds) | |", "|---|---|---|---|"]
    for t in results["targets"]:
        verdict = "**met**" if t["met"] else "**not met**"
        lines.append(f"| {t['name']} | {t['target']} | {_measured(t)} | {verdict}"
                     + (f" ({t['note']})" if t["note"] else "") + " |")
    lines += ["", "## Success rate per task", ""]
    if not tasks:
        lines += ["No run has finished yet: no final scores.", ""]
    elif metaworld:
        lines += ["| task | demos | training instructions | IQM [95% CI] | held-out paraphrases | IQM [95% CI] "
                  "| gap (points) | per seed (train / held-out) |", "|---|---|---|---|---|---|---|---|"]
        for t in tasks:
            r = results["per_task"][t]
            lines.append(f"| {t} | {r['demos'] or '–'} | {_mean_std(r.get('train'))} | {_iqm(r.get('train'))} | "
                         f"{_mean_std(r.get('held-out'))} | {_iqm(r.get('held-out'))} | {_points(r.get('gap'))} | "
                         f"{_per_seed(r.get('train'))} / {_per_seed(r.get('held-out'))} |")
        o = results["overall"]
        lines.append(f"| **average** | | **{_mean_std(o.get('train'))}** | {_iqm(o.get('train'))} | "
                     f"**{_mean_std(o.get('held-out'))}** | {_iqm(o.get('held-out'))} | **{_points(o.get('gap'))}** | "
                     f"{_per_seed(o.get('train'))} / {_per_seed(o.get('held-out'))} |")
        lines += ["", "Gap: training-instruction success minus held-out-paraphrase success, in percentage points.", ""]
    else:
        lines += ["| task | demos | success (mean ± std) | IQM [95% CI] | per seed |", "|---|---|---|---|---|"]
        for t in tasks:
            r = results["per_task"][t]
            lines.append(f"| {t} | {r['demos'] or '–'} | {_mean_std(r.get('train'))} | {_iqm(r.get('train'))} | "
                         f"{_per_seed(r.get('train'))} |")
        o = results["overall"].get("train")
        lines += [f"| **average** | | **{_mean_std(o)}** | {_iqm(o)} | {_per_seed(o)} |", ""]
    lines += ["The average row: per seed, the mean over tasks; its IQM pools every (seed, task) score.", "",
              "## Learning curves", "", "![curves](curves.png)", "",
              "Average success over tasks (training instructions) at each evaluation, mean over seeds with a 95% "
              "t-interval band; the right panel shows each task's mean over seeds. Dotted lines: the targets.", ""]
    lines += ["## Runs", "", "| run | seed | updates | devices | training time | process wall time | status |",
              "|---|---|---|---|---|---|---|"]
    for name, r in runs.items():
        lines.append(f"| {name} | {r.get('seed', '–')} | {r.get('step', r.get('steps')) or '–'} | "
                     f"{r.get('devices') or '–'} | {_seconds(r.get('train_time_s'))} | {_seconds(r.get('wall_s'))} | "
                     f"{'finished' if r['finished'] else 'unfinished'} |")
    lines += ["", "Training time: updates and intermediate evaluations (eval.json's time_s, summed over resumes). "
              "Process wall time: the whole `understudy train` process including start-up and the final "
              "evaluation, as the study timed it (– when the run was made elsewhere).", ""]
    if results["datasets"]:
        lines += ["## Demonstrations", "", "| dataset | episodes | steps | episodes per task | observations | "
                  "collection time |", "|---|---|---|---|---|---|"]
        for name, d in results["datasets"].items():
            per = ", ".join(f"{t}: {v['episodes']}" for t, v in (d.get("per_task") or {}).items())
            lines.append(f"| {name} | {d.get('episodes_total', '–')} | {d.get('steps_total', '–')} | {per} | "
                         f"{d.get('observations', '–')} | {_seconds(d.get('collect_s'))} |")
        lines.append("")
    lines += ["## Commands", "", "```"]
    if results["commands"].get("study"):
        lines += ["# the whole study", results["commands"]["study"], ""]
    lines += ["# demonstrations (what the study ran, as `understudy collect` commands)"]
    lines += [c for c in (results["commands"].get("collect") or {}).values() if c]
    lines += ["", "# training, one run per seed (the study adds --resume to continue a killed run)"]
    for cmd in (results["commands"].get("train") or {}).values():
        lines.append(shlex.join(cmd) if isinstance(cmd, list) else str(cmd))
    lines += ["```", ""]
    return "\n".join(lines)


def _curves(metrics_path: Path) -> Optional["object"]:
    import pandas as pd

    if not metrics_path.exists():
        return None
    df = pd.read_csv(metrics_path)
    if "eval/success_rate" not in df.columns:
        return None
    cols = ["eval/success_rate"] + [c for c in df.columns if c.startswith("eval/success/")]
    df = df[["step"] + cols].dropna(subset=["eval/success_rate"])
    return df.drop_duplicates("step", keep="last").set_index("step").sort_index() if not df.empty else None


def plot_curves(out: Path, results: dict, path: Path) -> Optional[Path]:
    """curves.png: average success over updates (mean over seeds, 95% band) and each task's mean."""
    import pandas as pd
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from understudy.eval.stats import mean_ci

    frames = [f for f in (_curves(Path(r["dir"]) / "metrics.csv") for r in results["runs"].values()) if f is not None]
    if not frames:
        return None
    steps = sorted(set().union(*(set(f.index) for f in frames)))
    aligned = [f.reindex(steps) for f in frames]
    fig = Figure(figsize=(13, 4.2), dpi=120)
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    values = np.stack([a["eval/success_rate"].to_numpy(float) for a in aligned], axis=1)
    mean, low, high = mean_ci(values, axis=1)
    x = np.asarray(steps, float)
    ok = ~np.isnan(mean)
    left.plot(x[ok], mean[ok], marker="o" if ok.sum() < 3 else None, label=f"average over tasks (n={len(frames)})")
    left.fill_between(x[ok], np.clip(low[ok], 0, 1), np.clip(high[ok], 0, 1), alpha=0.2, linewidth=0)
    per_task_targets = {t.get("task"): t["threshold"] for t in results["targets"] if t.get("task")}
    for t in results["targets"]:  # an average's target on the left; a task's in its own colour on the right
        if not t.get("task") and "points" not in t["target"]:
            left.axhline(t["threshold"], color="grey", linestyle=":", linewidth=0.8, label=f"target {t['target']}")
    found = {c for a in aligned for c in a.columns if c.startswith("eval/success/")}
    order = [f"eval/success/{t}" for t in results["tasks"]]  # task-id order, then any others
    task_cols = [c for c in order if c in found] + sorted(found - set(order))
    for col in task_cols:
        task = col.removeprefix("eval/success/")
        per_task = np.stack([a[col].to_numpy(float) if col in a else np.full(len(steps), np.nan) for a in aligned], 1)
        m = pd.DataFrame(per_task).mean(axis=1, skipna=True).to_numpy()
        good = ~np.isnan(m)
        (line,) = right.plot(x[good], m[good], marker="o" if good.sum() < 3 else None, label=task, linewidth=1.2)
        if task in per_task_targets:
            right.axhline(per_task_targets[task], color=line.get_color(), linestyle=":", linewidth=0.8)
    for ax, name in ((left, "average success"), (right, "success per task (mean over seeds)")):
        ax.set_xlabel("gradient updates")
        ax.set_ylabel(name)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    left.legend(fontsize="x-small", loc="best")
    right.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(f"{results['study']}: success at evaluation (training instructions)")
    fig.tight_layout()
    fig.savefig(path)
    return path


def write_instruct_report(out: str | Path, study: str) -> dict:
    """results.json, report.md and curves.png in `out`; returns the results."""
    out = Path(out)
    results = build_results(out, study)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    text = report_markdown(results)
    try:
        if plot_curves(out, results, out / "curves.png") is None:
            text = text.replace("![curves](curves.png)", "(no evaluation in any run's metrics.csv yet)")
    except Exception as e:  # noqa: BLE001  (a plot must not lose the report)
        text = text.replace("![curves](curves.png)", f"(learning-curve plot failed: {e})")
    (out / "report.md").write_text(text)
    return results
