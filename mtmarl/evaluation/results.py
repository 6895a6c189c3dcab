"""Evaluation results: summary rows, a printed table and marl-eval JSON.

``results.json`` follows the layout marl-eval (``id-marl-eval``) reads:
``{env: {task: {algorithm: {"seed_<s>": {"absolute_metrics": {metric: [..]}}}}}}``
with per-episode returns under ``return`` so that bootstrap statistics can be
computed later; the split and reference of each task are in ``summary.json``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from mtmarl.atomic import atomic_write_text
from mtmarl.evaluation.rollout import EpisodeStats


def task_info(split: str, spec, env) -> dict[str, Any]:
    """The identifying fields of a result row for task ``spec`` played as (padded) ``env``."""
    return {"name": spec.name, "task": spec.adhoc, "env": spec.env, "split": split,
            "agents": getattr(env, "inner", env).num_agents, "success": env.spec.has_success}


def summarise(task: dict[str, Any], stats: EpisodeStats, reference: float | None) -> dict[str, Any]:
    """One row: mean and standard error of the return (and normalised, if possible)."""
    returns = np.asarray(stats.returns, dtype=np.float64)
    n = returns.size
    stderr = float(returns.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    row = {**task, "episodes": n, "mean_return": float(returns.mean()), "stderr": stderr,
           "mean_length": float(np.mean(stats.lengths)), "reference": reference,
           "normalised_return": None, "normalised_stderr": None,
           "returns": returns.tolist()}
    if reference is not None:
        row["normalised_return"] = row["mean_return"] / reference
        row["normalised_stderr"] = stderr / abs(reference)
    if task.get("success"):
        wins = np.asarray(stats.successes, dtype=bool)
        timeouts = np.asarray(stats.timeouts, dtype=bool) & ~wins
        row["win_rate"], row["win_rate_ci"] = float(wins.mean()), bootstrap_ci(wins.astype(np.float64))
        # every episode ends in exactly one way: won, lost (ended by the task's rules without a win) or timed out
        row["loss_rate"] = float((~wins & ~timeouts).mean())
        row["timeout_rate"] = float(timeouts.mean())
        row["wins"] = wins.tolist()
    return row


def bootstrap_ci(values: np.ndarray, level: float = 0.95, seed: int = 0) -> list[float]:
    """Percentile bootstrap interval of the mean (scipy; a point interval when all values are equal)."""
    from scipy.stats import bootstrap

    if values.size < 2 or np.all(values == values[0]):
        return [float(values.mean())] * 2
    res = bootstrap((values,), np.mean, confidence_level=level, method="percentile", n_resamples=2000,
                    random_state=np.random.default_rng(seed))
    return [float(res.confidence_interval.low), float(res.confidence_interval.high)]


def to_marl_eval(rows: list[dict[str, Any]], algorithm: str, seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for row in rows:
        metrics = {"return": row["returns"], "mean_episode_return": [row["mean_return"]],
                   "episode_count": [row["episodes"]], "mean_episode_length": [row["mean_length"]]}
        if row["normalised_return"] is not None:
            metrics["normalised_return"] = [r / row["reference"] for r in row["returns"]]
            metrics["mean_normalised_return"] = [row["normalised_return"]]
        if "wins" in row:
            metrics["win_rate"] = [float(w) for w in row["wins"]]
            metrics["mean_win_rate"] = [row["win_rate"]]
        seeds = out.setdefault(row["env"], {}).setdefault(row["name"], {}).setdefault(algorithm, {})
        seeds[f"seed_{seed}"] = {"absolute_metrics": metrics}
    return out


def write_results(run_dir: str | Path, rows: list[dict[str, Any]], algorithm: str, seed: int) -> Path:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "results.json"
    atomic_write_text(path, json.dumps(to_marl_eval(rows, algorithm, seed), indent=1))
    summary = [{k: v for k, v in row.items() if k not in ("returns", "wins")} for row in rows]
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=1))
    return path


def print_table(rows: list[dict[str, Any]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    wins = any("win_rate" in row for row in rows)
    for col in ("task", "split", "agents", "episodes", "mean return", "stderr", "normalised") + (
            ("win rate (95% CI)", "loss", "timeout") if wins else ()):
        table.add_column(col, justify="left" if col in ("task", "split") else "right")
    for row in rows:
        norm = "n/a" if row["normalised_return"] is None else (
            f"{row['normalised_return']:.3f} ± {row['normalised_stderr']:.3f}")
        cells = [row["name"], row.get("split", ""), str(row["agents"]), str(row["episodes"]),
                 f"{row['mean_return']:.3f}", f"{row['stderr']:.3f}", norm]
        if wins:
            lo, hi = row.get("win_rate_ci", (math.nan, math.nan))
            cells.append(f"{row['win_rate']:.3f} [{lo:.3f}, {hi:.3f}]" if "win_rate" in row else "n/a")
            cells += [f"{row[k]:.3f}" if k in row else "n/a" for k in ("loss_rate", "timeout_rate")]
        table.add_row(*cells)
    console = Console()
    if not console.is_terminal:  # a log file or pipe: rich's 80 columns would fold every cell
        console = Console(width=160)
    console.print(table)
    missing = [row["name"] for row in rows if row["normalised_return"] is None]
    if missing:
        console.print(f"[yellow]No reference return for {len(missing)} task(s) "
                      f"({', '.join(missing)}): raw returns reported, not normalised.[/yellow]")
    for split in sorted({row.get("split", "") for row in rows}):
        norms = [r["normalised_return"] for r in rows if r.get("split", "") == split
                 and r["normalised_return"] is not None]
        if norms:
            console.print(f"mean normalised return ({split or 'all'}): {np.mean(norms):.3f} "
                          f"over {len(norms)} task(s)")
