"""SMAX win rates: every algorithm x task set x data quality (the HyGen paper's expert / medium datasets).

    python experiment_scripts/smax.py                                   # default budget, 1 seed
    python experiment_scripts/smax.py 'algos=[mt_bc_sable]' 'qualities=[medium]'
    python experiment_scripts/smax.py paper                             # 3 seeds, paper budget

Each run is ``python -m mtmarl.train +algo=<a> +tasks=<set> data.quality=<quality>``. Win rates
are the evaluator's (episodes where every enemy died and an ally lived); mean ± standard
error over seeds (one seed: over tasks) and IQM with its stratified bootstrap CI, per
split. Writes ``results/smax/``: ``smax.md`` (algorithm x set/quality, train and test; then
the same table from the HyGen paper's Table 1, ``mtmarl/configs/experiments/smax_hygen_table1.yaml``),
``smax_long.{json,csv,md}``, ``smax_tasks.md`` (every task's win rate, then the paper's),
``fig_smax.png`` (+ .json/.csv), ``records.json``, ``runs.json``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import defaultdict
from pathlib import Path

import yaml

from mtmarl.experiments.analysis import aggregate, bootstrap_args, find, fmt, report, save_markdown, table_cells
from mtmarl.experiments.config import EXPERIMENT_DIR, run_overrides
from mtmarl.experiments.driver import Experiment, main
from mtmarl.experiments.plots import bar_figure
from mtmarl.experiments.runner import Run

PAPER_TABLE = EXPERIMENT_DIR / "smax_hygen_table1.yaml"


@dataclasses.dataclass(frozen=True)
class PaperTable:
    """The HyGen paper's Table 1 as ``smax_hygen_table1.yaml`` holds it (win rates in %)."""

    sets: dict[str, dict[str, tuple[str, ...]]]         # set -> {"train": source tasks, "test": unseen tasks}
    our_algos: dict[str, tuple[str, ...]]               # paper column -> our algorithms it compares with
    cells: dict[tuple[str, str, str, str], tuple[float, float]]  # (set, quality, column, task) -> (mean, std)

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(self.our_algos)

    @property
    def panels(self) -> set[tuple[str, str]]:
        """The (set, quality) pairs the paper reports."""
        return {key[:2] for key in self.cells}

    def method_of(self, algo: str) -> str | None:
        """The paper's column for one of our algorithms; None where the paper has none (e.g. mt_oryx)."""
        return next((m for m, ours in self.our_algos.items() if algo in ours), None)

    def split_tasks(self, set_name: str, split: str) -> tuple[str, ...]:
        return self.sets[set_name][split]

    def split_mean(self, set_name: str, quality: str, method: str, split: str) -> float:
        """Mean win rate in [0, 1] of a paper column over the source ("train") or unseen ("test") tasks."""
        tasks = self.split_tasks(set_name, split)
        return sum(self.cells[(set_name, quality, method, t)][0] for t in tasks) / len(tasks) / 100.0


@functools.cache
def paper_table() -> PaperTable:
    raw = yaml.safe_load(PAPER_TABLE.read_text())
    sets = {name: {split: tuple(str(t) for t in tasks) for split, tasks in splits.items()}
            for name, splits in raw["sets"].items()}
    cells = {}
    for set_name, qualities in raw["panels"].items():
        tasks = sets[set_name]["train"] + sets[set_name]["test"]
        for quality, methods in qualities.items():
            for method, text in methods.items():
                row = [tuple(float(x) for x in cell.split("±")) for cell in text.split()]
                if len(row) != len(tasks):
                    raise ValueError(f"{PAPER_TABLE.name}: {set_name} {quality} {method} has {len(row)} cells, "
                                     f"one per task of {len(tasks)} expected")
                cells.update({(set_name, quality, method, t): (mean, std) for t, (mean, std) in zip(tasks, row)})
    return PaperTable(sets, {m: tuple(ours) for m, ours in raw["our_algos"].items()}, cells)


def build(cfg) -> list[Run]:
    return [Run.make({"task_set": s, "quality": q, "algo": a},
                     run_overrides(cfg, [f"+algo={a}", f"+tasks={s}", f"data.quality={q}"]), seed)
            for s in cfg.task_sets for q in cfg.qualities for a in cfg.algos for seed in cfg.budget.seeds]


def analyse(cfg, records, out: Path) -> list[Path]:
    records = [r for r in records if r["win_rate"] is not None]
    by = ["task_set", "quality", "algo"]
    rows = aggregate(records, by, splits=("train", "test"), metric="win_rate", **bootstrap_args(cfg))
    meta = {"budget": cfg.budget.name}
    files = report(rows, by, out, "smax_long", f"SMAX win rates ({cfg.budget.name} budget)", meta)
    columns = [(s, q) for s in cfg.task_sets for q in cfg.qualities]
    head = ["algorithm", *(f"{s} {q} {split}" for s, q in columns for split in ("train", "test"))]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for algo in cfg.algos:
        cells = []
        for s, q in columns:
            for split in ("train", "test"):
                row = find(rows, task_set=s, quality=q, algo=algo, split=split)
                cells.append(table_cells(row)[0] if row else "n/a")
        lines.append(f"| {algo} | " + " | ".join(cells) + " |")
    lines += ["", "Win rate (0-1) per task, averaged over the split's tasks: mean ± standard error over seeds "
              "(* = one seed: over tasks). IQM and 95% CIs in smax_long.md; every task in smax_tasks.md."]
    paper = paper_table()
    lines += ["", "**the HyGen paper's Table 1 (SMAC, 5 seeds)**", "", lines[0], lines[1]]
    for algo in cfg.algos:
        method = paper.method_of(algo)
        cells = [fmt(paper.split_mean(s, q, method, split))
                 if method and (s, q) in paper.panels else "n/a"
                 for s, q in columns for split in ("train", "test")]
        lines.append(f"| {algo} | " + " | ".join(cells) + " |")
    lines += ["", "The paper's win rate (0-1) of the column each algorithm compares with (bc_t/bc_r: BC-best, "
              "updet_m/updet_l: UPDeT-best, the better of the two per task), averaged over the split's tasks; "
              "n/a: no such column. Per task in smax_tasks.md."]
    files.append(save_markdown(out / "smax.md", lines))
    per_task: dict[tuple, list[float]] = defaultdict(list)
    for r in records:
        per_task[(r["task_set"], r["quality"], r["split"], r["task"], r["algo"])].append(r["win_rate"])
    tlines = ["| set | quality | split | task | " + " | ".join(cfg.algos) + " |", "|" + "---|" * (4 + len(cfg.algos))]
    for s, q in columns:
        for split in ("train", "test"):
            tasks = dict.fromkeys(t for (s2, q2, sp, t, _) in per_task if (s2, q2, sp) == (s, q, split))
            for t in tasks:
                vals = [per_task.get((s, q, split, t, a)) for a in cfg.algos]
                tlines.append(f"| {s} | {q} | {split} | {t} | "
                              + " | ".join(fmt(sum(v) / len(v)) if v else "n/a" for v in vals) + " |")
    tlines += ["", "**the HyGen paper's Table 1 per task** (SMAC win rate %, mean ± std over 5 seeds)", "",
               "| set / quality | split | task | " + " | ".join(paper.methods) + " |",
               "|" + "---|" * (3 + len(paper.methods))]
    for s, q in columns:
        if (s, q) not in paper.panels:
            continue
        for split in ("train", "test"):
            for t in paper.split_tasks(s, split):
                cells = (paper.cells[(s, q, m, t)] for m in paper.methods)
                tlines.append(f"| {s} {q} | {split} | {t} | " + " | ".join(f"{m:.1f} ± {d:g}" for m, d in cells) + " |")
    (out / "smax_tasks.md").write_text("\n".join(tlines) + "\n")
    files.append(out / "smax_tasks.md")
    panels = [f"{s} {q}" for s, q in columns]
    bars = [{"panel": f"{r['task_set']} {r['quality']}", "category": r["split"], "series": r["algo"],
             "value": r["mean"], "err": r["stderr"]} for r in rows]
    files.append(bar_figure(out / "fig_smax", bars, panels, ["train", "test"], "win rate", meta))
    return files


EXPERIMENT = Experiment("smax", build, analyse)

if __name__ == "__main__":
    main(EXPERIMENT)
