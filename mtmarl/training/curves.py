"""The learning-curve picture of a run, drawn from its ``metrics.jsonl``.

One panel per training loss and gradient norm (``train/...``, a population's
per-seed copies left out) against the update, and one of the periodic evaluations'
mean returns per split (``eval/train_return``, ``eval/test_return``) when the run
has any. Drawn with matplotlib's Agg canvas on a bare ``Figure`` (no pyplot state, no
display needed) and written atomically, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from mtmarl.training.anomaly import watched

CURVE_NAME = "curves.png"
EVAL_RETURNS = ("eval/train_return", "eval/test_return")


def read_series(metrics_path: Path) -> dict[str, tuple[list[int], list[float]]]:
    """(updates, values) per numeric metric of a ``metrics.jsonl``; lines cut short by a kill are skipped."""
    series: dict[str, tuple[list[int], list[float]]] = {}
    for line in Path(metrics_path).read_text().splitlines():
        try:
            row = json.loads(line)
            step = int(row["step"])
        except (ValueError, KeyError, TypeError):
            continue
        for key, value in row.items():
            if key in ("step", "time") or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            steps, values = series.setdefault(key, ([], []))
            steps.append(step)
            values.append(float(value))
    return series


def plot_learning_curve(metrics_path: Path, png_path: Path, title: str | None = None) -> Path | None:
    """Write the picture; returns its path, or None when the file has nothing to draw yet."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    series = read_series(metrics_path)
    train = sorted(k for k in series if k.startswith("train/") and watched(k) and "/seed_" not in k)
    evals = [k for k in EVAL_RETURNS if k in series]
    panels = [[k] for k in train] + ([evals] if evals else [])
    if not panels:
        return None
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.0 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    for i, keys in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        for key in keys:
            steps, values = series[key]
            ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3, label=key)
        values = [v for k in keys for v in series[k][1]]
        if all(v > 0 for v in values) and max(values) > 100 * min(values):  # spans decades: log scale
            ax.set_yscale("log")
        ax.set_title("evaluation mean return" if keys is evals else keys[0], fontsize=9)
        ax.set_xlabel("update", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    png_path = Path(png_path)
    tmp = png_path.with_name(f".{png_path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=100)
    os.replace(tmp, png_path)
    return png_path
