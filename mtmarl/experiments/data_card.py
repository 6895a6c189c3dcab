"""Data card of a collected task set: per-task table, return histograms, learning curves.

Why: the collector's claim is *mixed-quality* data with a trustworthy reference per
task; a reader should see that at a glance, for the bundled or the full-size data.

    python experiment_scripts/data_card.py rware_15 --root vault_data_full --out results/datasets_full

writes ``<out>/<set>.md`` (the ``python -m mtmarl.data report`` table),
``<out>/<set>_returns.png`` (episode-return histogram of every training vault, with
the task's untrained and final online returns marked) and ``<out>/<set>_curves.png``
(training return vs env steps from ``<root>/logs``; the scripted RWARE planner logs
one point per epsilon level).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from mtmarl import tasks  # noqa: E402
from mtmarl.data import report, stats  # noqa: E402
from mtmarl.data import vault as V  # noqa: E402
from mtmarl.runtime import save_figure  # noqa: E402


def grid(n: int, title: str):
    cols = min(5, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.3 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    return fig, list(axes.flat[:n])


def plot_returns(task_set, rows, root: Path, out: Path, verify: bool) -> None:
    by_task = {r["task"]: r for r in rows}
    fig, axes = grid(len(task_set.train), f"{task_set.name}: episode returns in each training vault "
                     "(log count; dashed: untrained policy, solid: final online return)")
    for ax, spec in zip(axes, task_set.train):
        ax.set_title(spec.name, fontsize=8)
        if not V.list_uids(V.vault_path(root, spec)):
            ax.text(0.5, 0.5, "no vault", ha="center", transform=ax.transAxes)
            continue
        returns = [x for card in stats.vault_cards(V.vault_path(root, spec), verify=verify) for x in card["returns"]]
        ax.hist(returns, bins=30, color="tab:blue", alpha=0.7, log=True)
        for key, style in (("initial", "--"), ("final", "-")):
            if by_task[spec.name].get(key) is not None:
                ax.axvline(by_task[spec.name][key], color="k", ls=style, lw=1)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    save_figure(fig, out)


def plot_curves(task_set, root: Path, out: Path) -> None:
    specs = list(task_set.train) + list(task_set.test)
    fig, axes = grid(len(specs), f"{task_set.name}: training return of the collector vs env steps, or per "
                     "epsilon level of the scripted planner (train tasks blue, test tasks red)")
    for ax, spec in zip(axes, specs):
        log = root / "logs" / spec.env / f"{V.task_dirname(spec)}.jsonl"
        ax.set_title(spec.name, fontsize=8)
        if not log.is_file():
            ax.text(0.5, 0.5, "no log", ha="center", transform=ax.transAxes)
            continue
        points = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        points = [p for p in points if p.get("return") is not None]
        color = "tab:blue" if spec in task_set.train else "tab:red"
        scripted = all("epsilon" in p for p in points)  # one point per epsilon level, not a learner
        xs = range(len(points)) if scripted else [p["env_steps"] for p in points]
        ax.plot(xs, [p["return"] for p in points], color=color, lw=1.2, marker="o" if scripted else None, ms=3)
        if scripted:
            ax.set_xticks(list(xs), [f"{p['epsilon']:g}" for p in points])
            ax.set_xlabel("epsilon of the recorded level", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.xaxis.get_offset_text().set_fontsize(7)
    fig.tight_layout()
    save_figure(fig, out)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("task_set")
    parser.add_argument("--root", default=str(stats.DEFAULT_ROOT))
    parser.add_argument("--out", required=True)
    parser.add_argument("--no-verify", dest="verify", action="store_false", help="skip the sha256 checks")
    args = parser.parse_args(argv)
    root, out = Path(args.root), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    task_set = tasks.load(args.task_set)
    rows = report.task_rows(args.task_set, root)
    (out / f"{task_set.name}.md").write_text(report.markdown(rows) + "\n")
    plot_returns(task_set, rows, root, out / f"{task_set.name}_returns.png", args.verify)
    plot_curves(task_set, root, out / f"{task_set.name}_curves.png")
    print(f"wrote {out}/{task_set.name}.md, {task_set.name}_returns.png, {task_set.name}_curves.png")


def run_cli():
    """The command line (``experiment_scripts/data_card.py``)."""
    main()
