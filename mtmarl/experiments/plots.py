"""Matplotlib figures (PNG) of aggregated rows; the rows behind each figure are saved next to it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mtmarl.experiments.analysis import save_rows  # noqa: E402

COLOURS = {"mt_oryx": "tab:blue", "mt_cql_sable": "tab:orange", "mt_bc_sable": "tab:green"}
LABELS = {"mt_oryx": "MT Oryx", "mt_cql_sable": "MT CQL-Sable", "mt_bc_sable": "MT BC-Sable"}


def label(x: Any) -> str:
    return LABELS.get(x, str(x))


def _nan(x):
    return np.nan if x is None else x


def line_figure(path: Path, rows: Sequence[dict[str, Any]], x: str, series: str, panels: Sequence[dict[str, Any]],
                xlabel: str, ylabel: str, logx: bool = False, meta: dict[str, Any] | None = None) -> Path:
    """One subplot per panel (``{"title", "match": {...}}``): for each ``series`` value, mean +- se vs ``x``
    (solid, error bars) over a shaded band of the IQM's bootstrap CI. Writes PNG, JSON and CSV."""
    ncols = min(3, len(panels))
    nrows = int(np.ceil(len(panels) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.3 * nrows), squeeze=False)
    used = []
    for ax, panel in zip(axes.ravel(), panels):
        sel = [r for r in rows if all(r.get(k) == v for k, v in panel["match"].items())]
        for name in dict.fromkeys(r[series] for r in sel):
            pts = sorted((r for r in sel if r[series] == name), key=lambda r: r[x])
            xs = np.array([r[x] for r in pts], dtype=float)
            colour = COLOURS.get(name)
            ax.fill_between(xs, [_nan(r["iqm_lo"]) for r in pts], [_nan(r["iqm_hi"]) for r in pts],
                            color=colour, alpha=0.15, linewidth=0)
            ax.errorbar(xs, [r["mean"] for r in pts], yerr=[np.nan_to_num(_nan(r["stderr"])) for r in pts],
                        marker="o", ms=4, capsize=3, color=colour, label=label(name))
            used += pts
        ax.set_title(panel["title"], fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if logx:  # ticks at the plotted values only (matplotlib's minor log labels overlap)
            from matplotlib.ticker import NullFormatter
            ax.set_xscale("log")
            ticks = sorted({float(r[x]) for r in sel})
            ax.set_xticks(ticks, [f"{t / 1e6:.3g}M" if t >= 1e6 else f"{t / 1e3:.3g}k" if t >= 1e3 else f"{t:g}"
                                  for t in ticks])
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(panels):]:
        ax.set_visible(False)
    handles, names = axes.ravel()[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, names, loc="lower center", ncol=len(names), frameon=False)
    one_seed = any(r.get("stderr_over") == "tasks" for r in used)
    fig.text(0.01, 0.005, "lines: mean ± se; bands: IQM 95% stratified bootstrap CI"
             + (" (one seed: se and CI over tasks)" if one_seed else ""), fontsize=7, alpha=0.7)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return _save(fig, path, used, meta)


def bar_figure(path: Path, bars: Sequence[dict[str, Any]], panels: Sequence[str], categories: Sequence[str],
               ylabel: str, meta: dict[str, Any] | None = None) -> Path:
    """Grouped bars. Each bar dict: ``panel``, ``category`` (x group), ``series`` (colour), ``value``,
    ``err`` (half-width or None), optional ``note`` printed above the group."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        sel = [b for b in bars if b["panel"] == panel]
        series = list(dict.fromkeys(b["series"] for b in sel))
        width = 0.8 / max(1, len(series))
        for i, name in enumerate(series):
            xs, vals, errs = [], [], []
            for j, cat in enumerate(categories):
                b = next((b for b in sel if b["series"] == name and b["category"] == cat), None)
                if b is not None:
                    xs.append(j + (i - (len(series) - 1) / 2) * width)
                    vals.append(_nan(b["value"]))
                    errs.append(np.nan_to_num(_nan(b.get("err"))))
            ax.bar(xs, vals, width, yerr=errs, capsize=3, label=label(name), color=COLOURS.get(name),
                   alpha=0.85 if name in COLOURS else None)
        for j, cat in enumerate(categories):
            notes = [b["note"] for b in sel if b["category"] == cat and b.get("note")]
            if notes:
                ax.annotate(notes[0], (j, 1.0), xycoords=("data", "axes fraction"), ha="center", va="bottom",
                            fontsize=8)
        ax.set_xticks(range(len(categories)), [label(c) for c in categories], fontsize=8)
        ax.set_title(panel, fontsize=10, pad=14)
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path, bars, meta)


def _save(fig, path: Path, rows: Sequence[dict[str, Any]], meta: dict[str, Any] | None) -> Path:
    path = Path(path).with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    save_rows(path.with_suffix(""), rows, meta)
    return path
