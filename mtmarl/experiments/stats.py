"""Aggregate scores over seeds and tasks: mean +- standard error, IQM and stratified bootstrap CIs.

A *score matrix* has one row per run (seed) and one column per task. Two
summaries are reported side by side:

* **mean +- standard error**, the multi-task Oryx paper's protocol: the mean over all cells, and
  the standard error over seeds of each seed's mean over tasks (with a single
  seed, over tasks of each task's mean instead; ``stderr_over`` says which);
* **interquartile mean (IQM)** with a **stratified bootstrap** confidence
  interval, the method of Agarwal et al. (2021, "Deep RL at the edge of the
  statistical precipice"): the IQM is the mean of the middle 50% of all cells
  (``int(n / 4)`` cut from each end, as ``scipy.stats.trim_mean(x, 0.25)``);
  each bootstrap replicate resamples the runs with replacement independently
  for every task, and the interval is the percentile interval of the replicates
  (with a single seed that would have no width, so the tasks are resampled
  instead, like the standard error).

The ``rliable`` package implements the same estimators but pulls in arch,
statsmodels, seaborn, patsy and formulaic (7 packages) for what is a few lines
of numpy here, so it is not a dependency.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np


def mean_stderr(values) -> tuple[float, float]:
    """Mean and standard error (sample std with ddof=1 over sqrt(n); NaN for n < 2)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        return float("nan"), float("nan")
    se = float(x.std(ddof=1) / math.sqrt(x.size)) if x.size > 1 else float("nan")
    return float(x.mean()), se


def iqm(scores) -> float:
    """Interquartile mean of all entries: mean after cutting ``int(n/4)`` values from each end."""
    x = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    if x.size == 0:
        return float("nan")
    cut = int(0.25 * x.size)
    return float(x[cut:x.size - cut].mean())


def iqm_batched(samples: np.ndarray) -> np.ndarray:
    """IQM of each row of a (reps, n) array."""
    x = np.sort(samples, axis=1)
    cut = int(0.25 * x.shape[1])
    return x[:, cut:x.shape[1] - cut].mean(axis=1)


def mean_batched(samples: np.ndarray) -> np.ndarray:
    return samples.mean(axis=1)


BATCHED: dict[str, Callable[[np.ndarray], np.ndarray]] = {"iqm": iqm_batched, "mean": mean_batched}


def stratified_bootstrap(matrix, statistic: str = "iqm", reps: int = 2000, confidence: float = 0.95,
                         seed: int = 0) -> tuple[float, float]:
    """Percentile CI of ``statistic`` ('iqm' or 'mean') over a (runs, tasks) matrix.

    Every replicate draws, for each task (column) separately, ``runs`` row
    indices with replacement; the statistic is taken over all resampled cells.
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim == 1:
        m = m[:, None]
    runs, tasks = m.shape
    if m.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, runs, size=(reps, runs, tasks))
    samples = np.take_along_axis(np.broadcast_to(m, (reps, runs, tasks)), idx, axis=1)
    stats = BATCHED[statistic](samples.reshape(reps, runs * tasks))
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def summarise_matrix(matrix, reps: int = 2000, confidence: float = 0.95, seed: int = 0) -> dict[str, float]:
    """Both summaries of a (runs, tasks) score matrix; NaN cells (missing tasks) are not allowed."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"need a non-empty (runs, tasks) matrix, got shape {m.shape}")
    if np.isnan(m).any():
        raise ValueError("score matrix has missing cells (NaN)")
    runs, tasks = m.shape
    mean = float(m.mean())
    if runs > 1:
        _, se = mean_stderr(m.mean(axis=1))
        over, boot = "seeds", m
    else:  # one seed: runs within a task cannot vary, so both the se and the CI come from task variation
        _, se = mean_stderr(m.mean(axis=0))
        over, boot = "tasks", m.T  # tasks become the resampled rows of one stratum
    lo, hi = stratified_bootstrap(boot, "iqm", reps, confidence, seed)
    mlo, mhi = stratified_bootstrap(boot, "mean", reps, confidence, seed)
    return {"mean": mean, "stderr": se, "stderr_over": over, "iqm": iqm(m), "iqm_lo": lo, "iqm_hi": hi,
            "mean_lo": mlo, "mean_hi": mhi, "runs": runs, "tasks": tasks}


def percent_change(new: float, base: float) -> float:
    """100 * (new - base) / |base| (NaN when the base is 0 or missing)."""
    if base is None or new is None or not np.isfinite(base) or not np.isfinite(new) or base == 0:
        return float("nan")
    return 100.0 * (new - base) / abs(base)
