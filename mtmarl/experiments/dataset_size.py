"""The multi-task Oryx paper's Fig. 5a: train and test return vs the amount of data from a fixed set of 5 RWARE tasks.

    python experiment_scripts/dataset_size.py quick            # MT Oryx, fractions 0.1, 0.3, 1.0, 1 seed
    python experiment_scripts/dataset_size.py paper            # 3 algorithms, 6 fractions, 3 seeds
    python experiment_scripts/dataset_size.py quick 'fractions=[0.05,0.5,1.0]' num_train=3

Trains on the first ``num_train`` training tasks of ``tasks`` (``tasks.num_train``)
keeping the first ``fraction`` of every task's transitions (``data.fraction``:
cut at the end of the last whole episode) and evaluates on the set's test tasks.
``choices`` (as in table1.py) trains each algorithm with its training-task tuning choice.
Writes ``results/dataset_size/``: ``fig5a_dataset_size.png`` (+ .json/.csv),
``dataset_size.{json,csv,md}``, ``records.json``, ``runs.json``.
"""

from __future__ import annotations

from pathlib import Path

from mtmarl.experiments.analysis import aggregate, bootstrap_args, metric_label, report
from mtmarl.experiments.config import run_overrides
from mtmarl.experiments.driver import Experiment, main
from mtmarl.experiments.plots import line_figure
from mtmarl.experiments.runner import Run
from mtmarl.experiments.tuning import load_choices, tuned


def specific(cfg, algo: str, fraction: float, chosen: dict) -> list[str]:
    # fraction 1.0 is the default: leaving it out (and the order of the rest) lets the run be shared with
    # task_diversity's k = num_train
    return [f"+algo={algo}", f"+tasks={cfg.tasks}", f"tasks.num_train={cfg.num_train}",
            *tuned(chosen, cfg.tasks, algo), *([f"data.fraction={fraction}"] if float(fraction) < 1.0 else [])]


def build(cfg) -> list[Run]:
    chosen = load_choices(cfg.get("choices") or [])
    return [Run.make({"algo": algo, "fraction": float(f)}, run_overrides(cfg, specific(cfg, algo, f, chosen)), seed)
            for algo in cfg.algos for f in cfg.fractions for seed in cfg.budget.seeds]


def analyse(cfg, records, out: Path) -> list[Path]:
    rows = aggregate(records, ["algo", "fraction"], **bootstrap_args(cfg))
    meta = {"budget": cfg.budget.name, "tasks": cfg.tasks, "num_train": cfg.num_train}
    files = report(rows, ["algo", "fraction"], out, "dataset_size",
                   f"Dataset size: first {cfg.num_train} {cfg.tasks} tasks ({cfg.budget.name} budget)", meta)
    panels = [{"title": f"{cfg.tasks}[{cfg.num_train}]: {split} tasks", "match": {"split": split}}
              for split in ("train", "test")]
    files.append(line_figure(out / "fig5a_dataset_size", rows, "fraction", "algo", panels,
                             "fraction of each task's transitions", metric_label(rows), meta=meta))
    return files


EXPERIMENT = Experiment("dataset_size", build, analyse)

if __name__ == "__main__":
    main(EXPERIMENT)
