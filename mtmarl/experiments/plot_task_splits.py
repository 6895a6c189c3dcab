"""Draw the train/test split of every task set, like seed paper 004 Fig. 3.

Why: zero-shot results only mean something next to *where* the test tasks lie
relative to the training tasks. Each panel plots one env's tasks by the property
the paper varies (RWARE: number of shelves; LBF: max agent level; Connector: grid
size) against the number of agents, so interpolation (inside the dashed training
range) and extrapolation (outside it) can be read off at a glance.

    python experiment_scripts/plot_task_splits.py --out docs

writes ``<out>/task_splits.png`` and the plotted data as ``<out>/task_splits.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402

from mtmarl import tasks  # noqa: E402

SETS = ("rware_15", "lbf_5", "connector_10")
# What figure_property() returns for each env (the x axis).
PROPERTY = {"rware": "number of shelves", "lbf": "max agent level", "connector": "grid size"}
TITLE = {"rware": "RobotWarehouse", "lbf": "Level-Based Foraging", "connector": "Connector"}
STYLE = {"train": dict(marker="o", color="tab:blue", s=36, zorder=3),
         "test": dict(marker="x", color="tab:red", s=48, linewidths=2, zorder=4)}


def collect(set_names=SETS) -> dict:
    """The plotted data: every task of every set with its split, agents and property."""
    out = {}
    for name in set_names:
        desc = tasks.load(name).describe()
        rows = [{"name": t["name"], "task": t["task"], "split": t["split"], "agents": t["agents"],
                 "property": t["property"], "layout": t["layout"]}
                for t in desc["train"] + desc["test"]]
        out[name] = {"env": desc["env"], "property": PROPERTY[desc["env"]],
                     "padding": desc["padding"], "tasks": rows}
    return out


def _offsets(points: list[tuple[float, float]], step: float) -> list[float]:
    """Horizontal offsets that spread points sharing one (x, y) side by side."""
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, p in enumerate(points):
        groups[p].append(i)
    dx = [0.0] * len(points)
    for members in groups.values():
        for j, i in enumerate(members):
            dx[i] = (j - (len(members) - 1) / 2) * step
    return dx


# Label positions tried in turn (offset in points, alignment); the first free one wins.
CANDIDATES = [((5, 2), "left", "bottom"), ((5, -2), "left", "top"), ((-5, 2), "right", "bottom"),
              ((-5, -2), "right", "top"), ((0, 6), "center", "bottom"), ((0, -7), "center", "top"),
              ((8, 0), "left", "center"), ((-8, 0), "right", "center")]


def _place_labels(fig, ax, labels: list[tuple[str, float, float, str]]) -> None:
    """Name every point, putting each label where it overlaps the fewest points and labels."""
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    taken = []
    for _, x, y, _ in labels:  # the markers themselves
        px, py = ax.transData.transform((x, y))
        taken.append(Bbox.from_extents(px - 5, py - 5, px + 5, py + 5))
    for text, x, y, color in labels:
        best = None
        for offset, ha, va in CANDIDATES:
            ann = ax.annotate(text, (x, y), xytext=offset, textcoords="offset points", ha=ha, va=va,
                              fontsize=6, color=color)
            box = ann.get_window_extent(renderer)
            cost = sum(Bbox.intersection(box, t).width * Bbox.intersection(box, t).height
                       for t in taken if box.overlaps(t))
            if not (frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1)):
                cost += 1e6
            if best is None or cost < best[0]:
                if best is not None:
                    best[1].remove()
                best = (cost, ann, box)
            else:
                ann.remove()
            if cost == 0:
                break
        taken.append(best[2])


def plot(data: dict, path: Path) -> None:
    fig, axes = plt.subplots(1, len(data), figsize=(5.6 * len(data), 5.0))
    axes = [axes] if len(data) == 1 else list(axes)
    placements = []
    for ax, (set_name, d) in zip(axes, data.items()):
        rows = d["tasks"]
        # Shelf counts grow multiplicatively with the layout: a log axis spaces them evenly.
        log = d["env"] == "rware"
        fwd, inv = (math.log, math.exp) if log else (float, float)
        us = [fwd(r["property"]) for r in rows]
        span = (max(us) - min(us)) or 1.0
        dx = _offsets([(r["property"], r["agents"]) for r in rows], 0.035 * span)
        xs = [inv(u + o) for u, o in zip(us, dx)]
        # Dashed box: the training range of both axes (inside = interpolation).
        train_u = [u for u, r in zip(us, rows) if r["split"] == "train"]
        train_y = [r["agents"] for r in rows if r["split"] == "train"]
        x0, x1 = inv(min(train_u) - 0.05 * span), inv(max(train_u) + 0.05 * span)
        y0, y1 = min(train_y) - 0.3, max(train_y) + 0.3
        ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, linestyle="--",
                                   edgecolor="grey", linewidth=1, label="training range"))
        labels = []
        for split in ("train", "test"):
            idx = [i for i, r in enumerate(rows) if r["split"] == split]
            ax.scatter([xs[i] for i in idx], [rows[i]["agents"] for i in idx],
                       label=f"{split} ({len(idx)})", **STYLE[split])
            labels += [(rows[i]["name"], xs[i], rows[i]["agents"], STYLE[split]["color"]) for i in idx]
        ax.set_title(f"{TITLE[d['env']]} ({set_name})")
        ax.set_xlabel(d["property"] + (" (log scale)" if log else ""))
        ax.set_ylabel("number of agents")
        ax.yaxis.get_major_locator().set_params(integer=True)
        if log:
            ax.set_xscale("log")
            ticks = sorted({r["property"] for r in rows})
            ax.set_xticks(ticks, [str(t) for t in ticks])
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        else:
            ax.xaxis.get_major_locator().set_params(integer=True)
        ax.margins(x=0.15, y=0.12)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
        placements.append((ax, labels))
    fig.suptitle("Train/test task splits (test tasks outside the dashed box extrapolate)")
    fig.tight_layout()
    fig.canvas.draw()  # fixes the axis limits the label placement measures against
    for ax, labels in placements:  # after the layout is final, so display positions hold
        _place_labels(fig, ax, labels)
    fig.savefig(path, dpi=150)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs"), help="output directory (default: docs)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    data = collect()
    (args.out / "task_splits.json").write_text(json.dumps(data, indent=2) + "\n")
    plot(data, args.out / "task_splits.png")
    print(f"wrote {args.out / 'task_splits.png'} and {args.out / 'task_splits.json'}")
    return 0


def run_cli():
    """The command line (``experiment_scripts/plot_task_splits.py``)."""
    sys.exit(main())
