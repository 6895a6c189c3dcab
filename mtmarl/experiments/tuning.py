"""Hyperparameters chosen on training tasks only, with the same tuning budget for every algorithm.

    python experiment_scripts/tuning.py                                # default budget, lbf_5 + connector_10
    python experiment_scripts/tuning.py 'task_sets=[lbf_5]' dry_run=true

Every algorithm of ``grids`` (mtmarl/configs/experiments/tuning.yaml) is trained on each task set at every
point of its grid (the product of its keys' values); the grids must hold the same number of points, so no
algorithm gets more tries than another. A configuration's score is its mean (normalised where references
exist) return over the set's *training* tasks in the final evaluation, on fresh episodes; only those
records are kept (the driver drops the test split before anything is saved), so the choice cannot see the
held-out tasks. Writes ``results/tuning/``: ``tuning.{json,csv,md}`` (every configuration's training-task
score, mean +- standard error over tasks and seeds) and ``choice.{json,md}`` (the best configuration per set
and algorithm, with its overrides).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from mtmarl.errors import UserInputError
from mtmarl.experiments.analysis import aggregate, bootstrap_args, fmt, report, save_markdown
from mtmarl.experiments.config import run_overrides
from mtmarl.experiments.driver import Experiment, main
from mtmarl.experiments.runner import Run


def grid_points(cfg) -> dict[str, list[list[str]]]:
    """algorithm -> its grid's points, each a list of ``algo.<key>=value`` overrides (keys in the yaml's order)."""
    points = {}
    for algo, grid in cfg.grids.items():
        keys = list(grid)
        if not keys or any(len(grid[k]) == 0 for k in keys):
            raise UserInputError(f"grids.{algo}: every key needs at least one value, got {dict(grid)}")
        points[algo] = [[f"algo.{k}={v}" for k, v in zip(keys, values)]
                        for values in itertools.product(*(list(grid[k]) for k in keys))]
    sizes = {algo: len(p) for algo, p in points.items()}
    if len(set(sizes.values())) > 1:
        raise UserInputError(f"grids: every algorithm must get the same number of configurations (the same "
                             f"tuning budget), got {sizes}")
    return points


def label(point: list[str]) -> str:
    return ",".join(p.removeprefix("algo.") for p in point)


def build(cfg) -> list[Run]:
    return [Run.make({"task_set": tasks, "algo": algo, "config": label(point)},
                     run_overrides(cfg, [f"+algo={algo}", f"+tasks={tasks}", *point]), seed)
            for tasks in cfg.task_sets for algo, pts in grid_points(cfg).items() for point in pts
            for seed in cfg.budget.seeds]


def load_choices(paths) -> dict[tuple[str, str], list[str]]:
    """(task set, algorithm) -> the chosen overrides, from the ``choice.json`` files this experiment wrote."""
    chosen: dict[tuple[str, str], list[str]] = {}
    for path in paths:
        if not Path(path).is_file():
            raise UserInputError(f"choices: {path} does not exist (a tuning run's choice.json, e.g. "
                                 f"results/tuning_lbf_5/choice.json)")
        for c in json.loads(Path(path).read_text())["chosen"]:
            chosen[(c["task_set"], c["algo"])] = list(c["overrides"])
    return chosen


def tuned(chosen: dict[tuple[str, str], list[str]], task_set: str, algo: str) -> list[str]:
    """The overrides chosen for one (set, algorithm); none when no choice files are given."""
    if not chosen:
        return []
    if (task_set, algo) not in chosen:
        have = sorted(f"{s}/{a}" for s, a in chosen)
        raise UserInputError(f"choices: no tuning choice for task set {task_set!r} and algorithm {algo!r} "
                             f"(the files hold {have}); run experiment_scripts/tuning.py on that set first")
    return chosen[(task_set, algo)]


def choose(rows: list[dict]) -> list[dict]:
    """Per (task set, algorithm) the row with the highest training-task mean (the first of equal ones)."""
    best: dict[tuple, dict] = {}
    for row in rows:
        key = (row["task_set"], row["algo"])
        if key not in best or row["mean"] > best[key]["mean"]:
            best[key] = row
    return list(best.values())


def analyse(cfg, records, out: Path) -> list[Path]:
    by = ["task_set", "algo", "config"]
    rows = aggregate(records, by, splits=("train",), **bootstrap_args(cfg))
    meta = {"budget": cfg.budget.name, "grids": {a: {k: list(v) for k, v in g.items()} for a, g in cfg.grids.items()}}
    files = report(rows, by, out, "tuning", f"Training-task score per configuration ({cfg.budget.name} budget)",
                   meta)
    points = {(a, label(p)): p for a, pts in grid_points(cfg).items() for p in pts}
    chosen = [{"task_set": r["task_set"], "algo": r["algo"], "config": r["config"], "metric": r["metric"],
               "train_mean": r["mean"], "train_stderr": r["stderr"], "overrides": points[(r["algo"], r["config"])]}
              for r in choose(rows)]
    (out / "choice.json").write_text(json.dumps({**meta, "chosen": chosen}, indent=1))
    lines = ["| task set | algorithm | chosen | training-task score |", "|---|---|---|---|"]
    lines += [f"| {c['task_set']} | {c['algo']} | {c['config']} | {fmt(c['train_mean'])} ± {fmt(c['train_stderr'])} |"
              for c in chosen]
    files += [out / "choice.json", save_markdown(out / "choice.md", lines)]
    return files


EXPERIMENT = Experiment("tuning", build, analyse, splits=("train",))

if __name__ == "__main__":
    main(EXPERIMENT)
