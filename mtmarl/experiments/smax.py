"""SMAX win rates: every algorithm x task set x data quality (the HyGen paper's expert / medium datasets).

    python experiment_scripts/smax.py                                   # default budget, 1 seed
    python experiment_scripts/smax.py 'algos=[mt_bc_sable]' 'qualities=[medium]'
    python experiment_scripts/smax.py paper                             # 3 seeds, paper budget

Each run is ``python -m mtmarl.train +algo=<a> +tasks=<set> data.quality=<quality>``. Win rates
are the evaluator's (episodes where every enemy died and an ally lived); mean ± standard
error over seeds (one seed: over tasks) and IQM with its stratified bootstrap CI, per
split. Writes ``results/smax/``: ``smax.md`` (algorithm x set/quality, train and test; then
the same table from the HyGen paper's Table 1, ``mtmarl/experiments/hygen_table1.py``),
``smax_long.{json,csv,md}``, ``smax_tasks.md`` (every task's win rate, then the paper's),
``fig_smax.png`` (+ .json/.csv), ``records.json``, ``runs.json``.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from mtmarl.experiments import hygen_table1
from mtmarl.experiments.analysis import aggregate, bootstrap_args, find, fmt, report, save_markdown, table_cells
from mtmarl.experiments.config import run_overrides
from mtmarl.experiments.driver import Experiment, main
from mtmarl.experiments.plots import bar_figure
from mtmarl.experiments.runner import Run


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
    lines += ["", "**the HyGen paper's Table 1 (SMAC, 5 seeds)**", "", lines[0], lines[1]]
    for algo in cfg.algos:
        method = hygen_table1.paper_method(algo)
        cells = [fmt(hygen_table1.split_mean(s, q, method, split))
                 if method and (s, q) in hygen_table1.PANELS else "n/a"
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
               "| set / quality | split | task | " + " | ".join(hygen_table1.METHODS) + " |",
               "|" + "---|" * (3 + len(hygen_table1.METHODS))]
    for s, q in columns:
        if (s, q) not in hygen_table1.PANELS:
            continue
        for split in ("train", "test"):
            for t in hygen_table1.split_tasks(s, split):
                cells = (hygen_table1.TABLE1[(s, q, m, t)] for m in hygen_table1.METHODS)
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
