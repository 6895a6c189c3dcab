"""The multi-task Oryx paper's Table 1: test return of the three algorithms trained on each full task set.

    python experiment_scripts/table1.py quick                  # 3 sets x 3 algorithms, 1 seed
    python experiment_scripts/table1.py paper                  # 3 seeds, paper budget
    python experiment_scripts/table1.py quick 'task_sets=[lbf_5]'
    python experiment_scripts/table1.py cpu 'task_sets=[lbf_5]' 'choices=[results/tuning_lbf_5/choice.json]'

Beside it, ``table1_tasks.md``: each test task's raw return and normalised return (mean ± standard error over
seeds), and per algorithm and set how many task-level normalised returns (seed x task) exceed ``ABOVE`` (1.1):
returns far above the reference say the reference is weak, not the method strong.

``choices`` names tuning.py's ``choice.json`` files: each (set, algorithm) then trains with the overrides
chosen for it on that set's training tasks (every pair of the matrix needs one).

Mean ± standard error of the per-task test return for each algorithm on each
set and on all test tasks combined, with the IQM and its stratified bootstrap
95% CI beside it. These runs are the k = M runs of task_diversity.py (trained
once, shared in ``results/runs/``). Writes ``results/table1/``: ``table1.md``
(algorithms x sets), ``table1_long.{json,csv,md}``, ``fig_table1.png``
(+ .json/.csv), ``records.json``, ``runs.json``.
"""

from __future__ import annotations

from pathlib import Path

from mtmarl.experiments.analysis import (aggregate, bootstrap_args, find, fmt, metric_label, report, save_markdown,
                                         table_cells)
from mtmarl.experiments.config import run_overrides
from mtmarl.experiments.driver import Experiment, main
from mtmarl.experiments.plots import bar_figure
from mtmarl.experiments.runner import Run
from mtmarl.experiments.stats import mean_stderr
from mtmarl.experiments.tuning import load_choices, tuned

COMBINED = "combined"
ABOVE = 1.1  # a task-level normalised return above it: the reference, not the method, is in question


def task_rows(records) -> list[dict]:
    """Per (algorithm, set, test task): raw and normalised return, mean ± standard error over seeds."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        if r["split"] == "test":
            groups.setdefault((r["algo"], r["task_set"], r["task"]), []).append(r)
    rows = []
    for (algo, task_set, task), group in groups.items():
        raw = mean_stderr([g["return"] for g in group])
        norm = [g["normalised"] for g in group]
        rows.append({"algo": algo, "task_set": task_set, "task": task, "seeds": len(group),
                     "return": raw[0], "return_stderr": raw[1],
                     **(dict(zip(("normalised", "normalised_stderr"), mean_stderr(norm)))
                        if all(n is not None for n in norm) else {"normalised": None, "normalised_stderr": None}),
                     "above": sum(n is not None and n > ABOVE for n in norm)})
    return rows


def task_table(rows: list[dict], out: Path) -> Path:
    def cell(mean, se):
        return "n/a" if mean is None else f"{fmt(mean)} ± {fmt(se)}"

    lines = ["| set | test task | algorithm | return | normalised |", "|---|---|---|---|---|"]
    lines += [f"| {r['task_set']} | {r['task']} | {r['algo']} | {cell(r['return'], r['return_stderr'])} | "
              f"{cell(r['normalised'], r['normalised_stderr'])} |"
              for r in sorted(rows, key=lambda r: (r["task_set"], r["task"], r["algo"]))]
    counts: dict[tuple, list[int]] = {}
    for r in rows:
        c = counts.setdefault((r["algo"], r["task_set"]), [0, 0])
        c[0] += r["above"]
        c[1] += r["seeds"]
    lines += ["", f"| algorithm | set | task-level normalised returns above {ABOVE:g} (seed x task) |", "|---|---|---|"]
    lines += [f"| {algo} | {task_set} | {k} of {n} |" for (algo, task_set), (k, n) in counts.items()]
    return save_markdown(out / "table1_tasks.md", lines)


def build(cfg) -> list[Run]:
    chosen = load_choices(cfg.get("choices") or [])
    return [Run.make({"task_set": s, "algo": algo},
                     run_overrides(cfg, [f"+algo={algo}", f"+tasks={s}", *tuned(chosen, s, algo)]), seed)
            for s in cfg.task_sets for algo in cfg.algos for seed in cfg.budget.seeds]


def analyse(cfg, records, out: Path) -> list[Path]:
    args = bootstrap_args(cfg)
    rows = aggregate(records, ["algo", "task_set"], splits=("test",), **args)
    rows += [{**r, "task_set": COMBINED} for r in aggregate(records, ["algo"], splits=("test",), **args)]
    meta = {"budget": cfg.budget.name}
    files = report(rows, ["algo", "task_set"], out, "table1_long", f"Table 1 ({cfg.budget.name} budget)", meta)
    sets = [*dict.fromkeys(r["task_set"] for r in rows if r["task_set"] != COMBINED), COMBINED]
    head = ["algorithm", *sets]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for algo in dict.fromkeys(r["algo"] for r in rows):
        cells = []
        for s in sets:
            row = find(rows, algo=algo, task_set=s)
            best = row and max(r["mean"] for r in rows if r["task_set"] == s) == row["mean"]
            cell = table_cells(row)[0] if row else "n/a"
            cells.append(f"**{cell}**" if best else cell)
        lines.append(f"| {algo} | " + " | ".join(cells) + " |")
    note = (f"\nTest {metric_label(rows)}: mean ± standard error (over seeds; * = one seed, over tasks); "
            f"bold = largest mean per column. IQM and 95% CIs in table1_long.md.\n")
    text = "\n".join(lines) + "\n" + note
    (out / "table1.md").write_text(text)
    print(text)
    files.append(out / "table1.md")
    bars = [{"panel": "test tasks", "category": r["task_set"], "series": r["algo"], "value": r["mean"],
             "err": r["stderr"]} for r in rows]
    files.append(bar_figure(out / "fig_table1", bars, ["test tasks"], sets, f"test {metric_label(rows)}", meta))
    files.append(task_table(task_rows(records), out))
    return files


EXPERIMENT = Experiment("table1", build, analyse)

if __name__ == "__main__":
    main(EXPERIMENT)
