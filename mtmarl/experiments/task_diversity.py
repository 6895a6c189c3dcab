"""The multi-task Oryx paper's Fig. 4 and Fig. 1: return vs the number of training tasks; single-task vs multi-task.

    python experiment_scripts/task_diversity.py quick          # k in {1, M} per set, 3 algorithms, 1 seed
    python experiment_scripts/task_diversity.py paper          # every k = 1..M, 3 seeds
    python experiment_scripts/task_diversity.py quick 'task_sets=[lbf_5]' 'k.lbf_5=[1,2,3,4,5]' 'algos=[mt_oryx]'

For every task set in ``k`` (rware_15, lbf_5, connector_10) trains each
algorithm on the first k training tasks (``tasks.num_train=k``; nested subsets)
and evaluates on the set's fixed test tasks. Fig. 4: train and test return vs k.
Fig. 1: test return of single-task (k=1) vs multi-task (k=M) training averaged
over the algorithms, with the % gain. ``single_tasks.<set>`` names training tasks
fixed before the runs: k=1 then trains each of them alone (``tasks.single``) and
its score per seed and test task is the mean over them, so single-task training
is not one arbitrary task. ``choices`` (as in table1.py) trains each (set, algorithm)
with its training-task tuning choice; its k = M runs are then Table 1's with the same choices. Writes ``results/task_diversity/``:
``fig4_task_diversity.png``, ``fig1_st_vs_mt.png`` (each + .json/.csv),
``task_diversity.{json,csv,md}``, ``fig1_gain.md``, ``records.json``, ``runs.json``.
The k = M runs are exactly Table 1's runs (shared in ``results/runs/``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mtmarl.experiments.analysis import (aggregate, bootstrap_args, find, fmt, metric_label, num_train_tasks, report,
                                         percent_text, save_markdown)
from mtmarl.experiments.config import run_overrides
from mtmarl.experiments.driver import Experiment, main
from mtmarl.experiments.plots import bar_figure, line_figure
from mtmarl.experiments.runner import Run
from mtmarl.experiments.stats import percent_change
from mtmarl.experiments.tuning import load_choices, tuned


def build(cfg) -> list[Run]:
    chosen = load_choices(cfg.get("choices") or [])
    runs = []
    for task_set in cfg.task_sets:
        if task_set not in cfg.k:
            raise ValueError(f"no k list for {task_set}: add k.{task_set}=[1,...]")
        ks, M = cfg.k[task_set], num_train_tasks(cfg.extra, task_set)
        for k in ks:
            if not 1 <= int(k) <= M:
                raise ValueError(f"k={k} is outside 1..{M} for {task_set}")
            # the full set is given without num_train, so it is the same run as Table 1's
            singles = list((cfg.single_tasks or {}).get(task_set) or []) if int(k) == 1 else []
            for single in singles or [None]:
                specific = [f"+tasks={task_set}", *([f"tasks.num_train={k}"] if int(k) < M and not single else []),
                            *([f"tasks.single={single}"] if single else [])]
                extra = {"single": single} if single else {}
                for algo in cfg.algos:
                    for seed in cfg.budget.seeds:
                        runs.append(Run.make({"task_set": task_set, "algo": algo, "k": int(k), **extra},
                                             run_overrides(cfg, [f"+algo={algo}", *specific,
                                                                 *tuned(chosen, task_set, algo)]), seed))
    return runs


def mean_over_single_tasks(records: list[dict]) -> list[dict]:
    """k=1 records of runs trained on different single tasks, averaged per (set, algorithm, seed, split, task):
    one record per evaluated task, as from one run (the other records pass through)."""
    out, pooled = [], {}
    for r in records:
        if r.get("single") is None:
            out.append(r)
            continue
        key = (r["task_set"], r["algo"], r["k"], r["seed"], r["split"], r["env"], r["task"])
        pooled.setdefault(key, []).append(r)
    for group in pooled.values():
        merged = {k: v for k, v in group[0].items() if k != "single"}
        for name, value in group[0].items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and name not in ("k", "seed"):
                values = [g.get(name) for g in group]
                if all(isinstance(v, (int, float)) for v in values):
                    merged[name] = float(np.mean(values))
        merged["singles_averaged"] = len(group)
        if "config_id" in merged:
            merged["config_id"] = "+".join(g["config_id"] for g in group)
        out.append(merged)
    return out


def st_vs_mt(cfg, rows) -> list[dict]:
    """Per set and algorithm: test mean at k=1 and at k=M, and the % gain; plus the mean over algorithms."""
    out = []
    for task_set in cfg.task_sets:
        M = num_train_tasks(cfg.extra, task_set)
        per_algo = []
        for algo in cfg.algos:
            st = find(rows, task_set=task_set, algo=algo, k=1, split="test")
            mt = find(rows, task_set=task_set, algo=algo, k=M, split="test")
            if st and mt:
                per_algo.append({"task_set": task_set, "algo": algo, "M": M, "st": st["mean"], "mt": mt["mean"],
                                 "st_stderr": st["stderr"], "mt_stderr": mt["stderr"],
                                 "gain_percent": percent_change(mt["mean"], st["mean"])})
        out += per_algo
        if per_algo:
            st, mt = np.mean([r["st"] for r in per_algo]), np.mean([r["mt"] for r in per_algo])
            out.append({"task_set": task_set, "algo": "mean", "M": M, "st": float(st), "mt": float(mt),
                        "st_stderr": None, "mt_stderr": None, "gain_percent": percent_change(float(mt), float(st)),
                        "algos_averaged": len(per_algo)})
    return out


def analyse(cfg, records, out: Path) -> list[Path]:
    records = mean_over_single_tasks(list(records))
    rows = aggregate(records, ["task_set", "algo", "k"], **bootstrap_args(cfg))
    meta = {"budget": cfg.budget.name, "k": {s: list(cfg.k[s]) for s in cfg.task_sets}}
    files = report(rows, ["task_set", "algo", "k"], out, "task_diversity",
                   f"Task diversity ({cfg.budget.name} budget)", meta)
    sets = list(dict.fromkeys(r["task_set"] for r in rows))
    panels = [{"title": f"{s}: {split} tasks", "match": {"task_set": s, "split": split}}
              for split in ("train", "test") for s in sets]
    files.append(line_figure(out / "fig4_task_diversity", rows, "k", "algo", panels,
                             "training tasks k", metric_label(rows), meta=meta))
    gains = st_vs_mt(cfg, rows)
    if gains:
        bars = []
        for g in (g for g in gains if g["algo"] == "mean"):
            note = percent_text(g["gain_percent"])
            bars += [{"panel": "test tasks, mean over algorithms", "category": g["task_set"], "series": "ST (k=1)",
                      "value": g["st"], "err": None, "note": note},
                     {"panel": "test tasks, mean over algorithms", "category": g["task_set"],
                      "series": "MT (k=M)", "value": g["mt"], "err": None, "note": note}]
        files.append(bar_figure(out / "fig1_st_vs_mt", bars, ["test tasks, mean over algorithms"],
                                [g["task_set"] for g in gains if g["algo"] == "mean"], metric_label(rows),
                                meta={**meta, "per_algorithm": gains}))
        lines = ["| task set | algorithm | ST (k=1) | MT (k=M) | gain |", "|---|---|---|---|---|"]
        for g in gains:
            lines.append(f"| {g['task_set']} | {g['algo']} | {fmt(g['st'])} | {fmt(g['mt'])} (M={g['M']}) | "
                         f"{percent_text(g['gain_percent'])} |")
        files.append(save_markdown(out / "fig1_gain.md", lines))
    return files


EXPERIMENT = Experiment("task_diversity", build, analyse)

if __name__ == "__main__":
    main(EXPERIMENT)
