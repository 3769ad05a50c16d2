"""Learning curves: evaluation return against training step, one line per method with a 95% CI band over seeds.

Uses matplotlib's object API with the Agg canvas (no pyplot, no display, no global backend switch).
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np

from understudy.eval.report import RunInfo, expand_run_dirs, load_run
from understudy.eval.stats import mean_ci
from understudy.types import UnderstudyError

# What a run's `step` counts. The rule: algorithms that learn from their own environment interaction count
# environment steps (`--steps` is env steps for them); everything else (learning from a fixed dataset) counts
# gradient updates. A run may override this with "step_unit": "env_steps" | "updates" in config.json.
ONLINE_ALGOS = frozenset({"sac", "td3", "ppo", "dqn", "reinforce", "actor-critic", "seeded-sac", "gail", "airl"})
UNIT_LABELS = {"env_steps": "environment steps", "updates": "gradient updates"}


def step_unit(run: RunInfo) -> str:
    """"env_steps" or "updates" for this run (see ONLINE_ALGOS)."""
    cfg = run.config or {}
    if cfg.get("step_unit") in UNIT_LABELS:
        return cfg["step_unit"]
    return "env_steps" if (run.algo or "").lower() in ONLINE_ALGOS else "updates"


def eval_curves(run: RunInfo):
    """A DataFrame indexed by step with one column per seed of evaluation return (rows with an evaluation only),
    or None when the run has no metrics.csv / no evaluation yet."""
    import pandas as pd

    if not os.path.exists(run.metrics_path):
        return None
    try:
        df = pd.read_csv(run.metrics_path)
    except (OSError, ValueError) as e:
        raise UnderstudyError(f"Could not read {run.metrics_path}: {e}. The file is damaged; it is rewritten "
                              "when the run is resumed.") from e
    if "step" not in df.columns:
        raise UnderstudyError(f"{run.metrics_path} has no `step` column (columns: {list(df.columns)[:8]}); "
                              "it was not written by understudy's training loops.")
    seed_cols = sorted((c for c in df.columns if c.startswith("eval/return/seed")),
                       key=lambda c: int(c.rsplit("seed", 1)[1]) if c.rsplit("seed", 1)[1].isdigit() else 1 << 30)
    cols = seed_cols or (["eval/return"] if "eval/return" in df.columns else [])
    if not cols:
        return None
    curves = df[["step"] + cols].dropna(subset=cols, how="all")
    if curves.empty:
        return None
    # A resumed run may repeat a step; keep the last value written for it.
    curves = curves.drop_duplicates("step", keep="last").set_index("step").sort_index()
    curves.columns = [f"{run.path}:{c}" for c in curves.columns]  # unique across pooled run dirs
    return curves.astype(float)


def _align(parts: list) -> tuple[np.ndarray, np.ndarray]:
    """Put every seed's curve on the union of evaluation steps: [steps], [steps, seeds].

    Run dirs pooled into one method may evaluate at different steps; each seed is linearly interpolated
    inside its own evaluated range (NaN outside it), so the mean at a step never silently switches between
    different subsets of seeds because of the evaluation schedule.
    """
    steps = np.unique(np.concatenate([p.index.to_numpy(dtype=float) for p in parts]))
    columns = []
    for part in parts:
        xs = part.index.to_numpy(dtype=float)
        for name in part.columns:
            ys = part[name].to_numpy(dtype=float)
            ok = ~np.isnan(ys)
            col = np.full(steps.shape, np.nan)
            if ok.any():
                inside = (steps >= xs[ok][0]) & (steps <= xs[ok][-1])
                col[inside] = np.interp(steps[inside], xs[ok], ys[ok])
            columns.append(col)
    return steps, np.stack(columns, axis=1)


def plot_runs(run_dirs: list[str], out_png: str, title: Optional[str] = None) -> str:
    """Plot eval return vs step per (env, method): mean over seeds with a 95% Student-t CI band.

    Seeds are the per-seed columns of metrics.csv, pooled over several run dirs of the same method. Runs
    whose steps count different things (environment steps vs gradient updates) go in separate panels.
    Returns out_png.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    runs = [load_run(d) for d in expand_run_dirs(list(run_dirs))]
    series: dict[tuple[str, str, str], list] = {}  # (unit, env, method) -> per-run curves
    for run in runs:
        curves = eval_curves(run)
        if curves is not None:
            series.setdefault((step_unit(run), run.env_id, run.method), []).append(curves)
    if not series:
        raise UnderstudyError(f"No evaluation results to plot in {[r.path for r in runs]}: none has a metrics.csv "
                              "with `eval/return` values yet. Train with --eval-every N, or wait for the first "
                              "evaluation.")

    units = sorted({u for u, _, _ in series})
    envs = {e for _, e, _ in series}
    fig = Figure(figsize=(6.4 * len(units), 4.2), dpi=120)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(units), squeeze=False)[0]
    for ax, unit in zip(axes, units):
        for (u, env, method), parts in sorted(series.items()):
            if u != unit:
                continue
            steps, values = _align(parts)
            mean, low, high = mean_ci(values, axis=1)
            ok = ~np.isnan(mean)
            n = values.shape[1]
            label = f"{method}" + (f" [{env}]" if len(envs) > 1 else "") + f" (n={n})"
            (line,) = ax.plot(steps[ok], mean[ok], label=label, marker="o" if ok.sum() < 3 else None)
            ax.fill_between(steps[ok], low[ok], high[ok], color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_xlabel(UNIT_LABELS[unit])
        ax.set_ylabel("evaluation return")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(title or ", ".join(sorted(envs)) + " — mean over seeds, 95% CI")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    fig.savefig(out_png)
    return out_png
