"""The multi-task Oryx paper's Fig. 5b (`make sweep`): train and test return vs model size on the full rware_15 set.

    python experiment_scripts/model_size.py quick    # this machine, 1 seed, embed 64-256, 1000 tiny-batch updates per run
    python experiment_scripts/model_size.py paper              # 3 algorithms x 5 sizes x 3 seeds, paper budget
    python experiment_scripts/model_size.py paper launcher=slurm jobs=15 \\
        'slurm=["hydra.launcher.partition=gpu","hydra.launcher.gpus_per_node=1","hydra.launcher.timeout_min=720"]'
    python experiment_scripts/model_size.py quick embed_dims=[64,256] dry_run=true

Varies ``network.embed_dim`` of the 'base' Sable network over ``embed_dims``
(64..768) and reports each model's parameter count (computed from shapes). ``choices`` (as in
table1.py) trains each algorithm with its training-task tuning choice on ``tasks``.
Writes ``results/model_size/``: ``fig5b_model_size.png`` (+ .json/.csv with the
numbers plotted), ``model_size.{json,csv,md}`` (mean ± se and IQM [95% CI] per
algorithm, size and split), ``records.json`` (per run and task), ``runs.json``.
Runs live in ``results/runs/`` and are skipped when finished.
"""

from __future__ import annotations

from pathlib import Path

from mtmarl.experiments.analysis import aggregate, bootstrap_args, metric_label, parameter_count, report
from mtmarl.experiments.config import run_overrides
from mtmarl.experiments.driver import Experiment, main
from mtmarl.experiments.plots import line_figure
from mtmarl.experiments.runner import Run
from mtmarl.experiments.tuning import load_choices, tuned


def specific(cfg, algo: str, dim: int, chosen: dict) -> list[str]:
    return [f"+algo={algo}", f"+tasks={cfg.tasks}", *tuned(chosen, cfg.tasks, algo), f"network={cfg.network}",
            f"network.embed_dim={dim}"]


def build(cfg) -> list[Run]:
    chosen = load_choices(cfg.get("choices") or [])
    return [Run.make({"algo": algo, "embed_dim": int(dim)}, run_overrides(cfg, specific(cfg, algo, dim, chosen)), seed)
            for algo in cfg.algos for dim in cfg.embed_dims for seed in cfg.budget.seeds]


def analyse(cfg, records, out: Path) -> list[Path]:
    rows = aggregate(records, ["algo", "embed_dim"], **bootstrap_args(cfg))
    counts = {}
    for row in rows:
        key = (row["algo"], row["embed_dim"])
        if key not in counts:
            counts[key] = parameter_count(run_overrides(cfg, specific(cfg, *key, {})))  # shapes only
        row["parameters"] = counts[key]
    meta = {"budget": cfg.budget.name, "tasks": cfg.tasks, "network": cfg.network}
    files = report(rows, ["algo", "embed_dim", "parameters"], out, "model_size",
                   f"Model size on {cfg.tasks} ({cfg.budget.name} budget)", meta)
    panels = [{"title": f"{cfg.tasks}: {split} tasks", "match": {"split": split}} for split in ("train", "test")]
    files.append(line_figure(out / "fig5b_model_size", rows, "parameters", "algo", panels,
                             "parameters", metric_label(rows), logx=True, meta=meta))
    return files


EXPERIMENT = Experiment("model_size", build, analyse)

if __name__ == "__main__":
    main(EXPERIMENT)
