"""Evaluation statistics: normalized scores, interquartile mean, bootstrap and t confidence intervals.

IQM and its stratified-bootstrap CI follow rliable (Agarwal et al., 2021): scores are a matrix
[num_runs, num_tasks], the bootstrap resamples runs within each task.
"""

from __future__ import annotations

import warnings

import numpy as np

from understudy.types import UnderstudyError


def normalized_score(returns, random_return: float, expert_return: float):
    """(r - random) / (expert - random): 0 is the random policy, 1 the expert. Works on scalars and arrays."""
    span = float(expert_return) - float(random_return)
    if span == 0.0:
        raise UnderstudyError(f"Cannot normalize: the expert return equals the random return ({expert_return}). "
                              "Fix the reference scores (random, expert) for this environment.")
    return (np.asarray(returns, np.float64) - float(random_return)) / span


def iqm(x) -> float:
    """Interquartile mean over all entries: the mean of the middle 50% (25% trimmed from each end)."""
    from scipy.stats import trim_mean  # scipy comes with rliable; imported lazily to keep imports light

    x = np.asarray(x, np.float64).reshape(-1)
    if x.size == 0:
        raise UnderstudyError("IQM of an empty set of scores; there are no runs/episodes to summarize.")
    return float(trim_mean(x, proportiontocut=0.25, axis=None))


def iqm_with_ci(scores, reps: int = 2000, seed: int = 0, confidence: float = 0.95) -> tuple[float, float, float]:
    """IQM with a stratified-bootstrap confidence interval (rliable, percentile method).

    scores: [num_runs, num_tasks] (a 1-D array is taken as num_runs runs of one task).
    Returns (point, low, high). With a single run there is nothing to resample, so low = high = point.
    """
    from rliable import library, metrics

    scores = np.asarray(scores, np.float64)
    if scores.ndim == 1:
        scores = scores[:, None]
    if scores.ndim != 2 or scores.size == 0:
        raise UnderstudyError(f"iqm_with_ci needs a non-empty [num_runs, num_tasks] matrix; got shape {scores.shape}.")
    point = float(metrics.aggregate_iqm(scores))
    if scores.shape[0] < 2 or np.all(scores == scores[0]):
        return point, point, point
    # rliable 1.2 draws bootstrap indices from NumPy's global RNG (its random_state argument is ignored by
    # StratifiedBootstrap.update_indices), so seed the global RNG for reproducible CIs and restore it after.
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        _, intervals = library.get_interval_estimates(
            {"x": scores}, lambda s: np.array([metrics.aggregate_iqm(s)]), reps=reps,
            confidence_interval_size=confidence)
    finally:
        np.random.set_state(saved)
    low, high = float(intervals["x"][0, 0]), float(intervals["x"][1, 0])
    # The percentile interval can miss the point estimate by float rounding only; keep it inside.
    return point, min(low, point), max(high, point)


def mean_std(x, ddof: int = 0) -> tuple[float, float]:
    """Mean and standard deviation (population std by default, as np.std and the eval JSON use)."""
    x = np.asarray(x, np.float64).reshape(-1)
    if x.size == 0:
        raise UnderstudyError("mean_std of an empty set of scores; there are no runs/episodes to summarize.")
    std = float(np.std(x, ddof=ddof)) if x.size > ddof else 0.0
    return float(np.mean(x)), std


def mean_ci(x, axis: int = 0, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and Student-t confidence interval along `axis`, ignoring NaNs (for curves across seeds).

    Where only one value exists the interval collapses to the mean. Returns (mean, low, high).
    """
    from scipy.stats import t as student_t

    x = np.asarray(x, np.float64)
    n = np.sum(~np.isnan(x), axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns give NaN, which is what we want
        mean = np.nanmean(x, axis=axis) if x.size else np.zeros(0)
        std = np.nanstd(x, axis=axis, ddof=1) if x.size else np.zeros(0)
        half = student_t.ppf(0.5 + confidence / 2, np.maximum(n - 1, 1)) * std / np.sqrt(np.maximum(n, 1))
    half = np.where(n > 1, half, 0.0)
    return mean, mean - half, mean + half
