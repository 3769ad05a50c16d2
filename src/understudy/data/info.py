"""A summary of a dataset (`understudy data info PATH`): sizes, returns, lengths, spaces, references."""

from __future__ import annotations

from typing import Optional

import numpy as np

from understudy.data.episodes import Dataset
from understudy.data.validate import CLEAN_ACTION_LABELS


def _stats(x: np.ndarray) -> Optional[dict]:
    if x.size == 0:
        return None
    x = np.asarray(x, np.float64)
    return {"mean": float(x.mean()), "std": float(x.std()), "min": float(x.min()), "max": float(x.max())}


def _space(spec_part, columns) -> object:
    """Spec entry (shape, dtype, bounds) when recorded, else what the arrays themselves show."""
    if spec_part is not None:
        return spec_part
    if isinstance(columns, dict):
        return {k: {"shape": list(v.shape[1:]), "dtype": v.dtype.name} for k, v in columns.items()}
    return {"shape": list(columns.shape[1:]), "dtype": columns.dtype.name}


def dataset_info(ds: Dataset) -> dict:
    """Plain-data summary of `ds` (JSON-serialisable)."""
    meta = ds.metadata
    spec = meta.get("spec") or {}
    returns = ds.episode_returns()
    info = {
        "source": meta.get("source"),
        "env_id": meta.get("env_id"),
        "policy": meta.get("policy"),
        "episodes": ds.num_episodes,
        "steps": ds.num_steps,
        "return": _stats(returns),
        "length": _stats(ds.episode_lengths),
        "terminated_episodes": int(ds.terminations.sum()),
        "truncated_episodes": int(ds.truncations.sum()),
        "observation_space": _space(spec.get("observation"), ds.observations),
        "action_space": _space(spec.get("action"), ds.actions),
        "num_actions": spec.get("num_actions"),
        "ref_min_score": meta.get("ref_min_score"),
        "ref_max_score": meta.get("ref_max_score"),
        "task_ids": None if ds.task_id is None else sorted(int(t) for t in np.unique(ds.task_id)),
        "has_instructions": ds.instructions is not None,
        "distinct_instructions": None if ds.instructions is None else len(set(ds.instructions)),
        "action_noise": meta.get("action_noise"),
        "action_labels": meta.get("action_labels"),
    }
    lo, hi = info["ref_min_score"], info["ref_max_score"]
    if lo is not None and hi is not None and hi != lo and returns.size:
        info["normalized_return_mean"] = float((returns.mean() - lo) / (hi - lo))
    return info


def describe_action_noise(info: dict) -> str:
    """How the collecting policy's actions were perturbed, and which action each step records."""
    if not info.get("action_noise"):
        return "none"
    text = f"Gaussian, std {info['action_noise']:g} (normalized units)"
    if info.get("action_labels") == CLEAN_ACTION_LABELS:
        return text + "; executed, but each step records the policy's noise-free action (for imitation only)"
    return text + "; the noisy actions are the ones executed and recorded"


def _fmt_space(space) -> str:
    if isinstance(space, dict) and "shape" not in space:
        return "{" + ", ".join(f"{k}: {_fmt_space(v)}" for k, v in space.items()) + "}"
    text = f"{space['dtype']}{tuple(space['shape'])}"
    low, high = space.get("low"), space.get("high")
    if low is not None and high is not None and len(low):
        lo, hi = np.min(low), np.max(high)
        text += f" in [{lo:g}, {hi:g}]"
    return text


def _fmt_score(x: Optional[float]) -> str:
    return "unknown" if x is None else f"{x:.2f}"


def format_info(info: dict) -> str:
    """Readable multi-line text for a `dataset_info` dict."""
    def stat_line(s: Optional[dict]) -> str:
        return "-" if s is None else f"{s['mean']:.2f} ± {s['std']:.2f} (min {s['min']:.2f}, max {s['max']:.2f})"

    action = _fmt_space(info["action_space"])
    if info.get("num_actions") is not None:
        action = f"discrete, {info['num_actions']} actions"
    rows = [
        ("source", info.get("source") or "-"),
        ("environment", info.get("env_id") or "unknown"),
        ("collected by", info.get("policy") or "unknown"),
        ("episodes", f"{info['episodes']:,} ({info['terminated_episodes']:,} terminated, "
                     f"{info['truncated_episodes']:,} truncated)"),
        ("steps", f"{info['steps']:,}"),
        ("return", stat_line(info["return"])),
        ("episode length", stat_line(info["length"])),
        ("observations", _fmt_space(info["observation_space"])),
        ("actions", action),
        ("reference scores", "-" if info["ref_min_score"] is None and info["ref_max_score"] is None else
         f"random {_fmt_score(info['ref_min_score'])}, expert {_fmt_score(info['ref_max_score'])}"),
    ]
    if "normalized_return_mean" in info:
        rows.append(("normalized return", f"{info['normalized_return_mean']:.3f}"))
    if info.get("action_noise"):
        rows.append(("action noise", describe_action_noise(info)))
    rows.append(("task ids", "-" if info["task_ids"] is None else ", ".join(map(str, info["task_ids"]))))
    rows.append(("instructions", f"yes ({info['distinct_instructions']} distinct)" if info["has_instructions"]
                 else "no"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
