"""From finished runs to per-task records, aggregated tables, and printed/saved tables."""

from __future__ import annotations

import csv
import functools
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from mtmarl.errors import UserInputError
from mtmarl.experiments.runner import Run, is_finished, population_seeds
from mtmarl.experiments.stats import summarise_matrix


def collect(runs: Iterable[Run], results: str | Path) -> list[dict[str, Any]]:
    """One record per (finished run, evaluated task): the run's factors, seed, task, split and returns.

    A run that trained several seeds side by side (``training.population``) gives one record set per seed.
    Two runs of one configuration must not claim the same seed (e.g. populations started at seeds 0 and 1).
    """
    records, seen = [], set()
    for run in runs:
        run_dir = run.directory(results)
        if not is_finished(run_dir):
            continue
        seeds = population_seeds(run_dir)
        parts = [(run_dir, run.seed)] if seeds is None else [(run_dir / f"seed_{s}", s) for s in seeds]
        for where, seed in parts:
            if (run.config_id, seed) in seen:
                raise UserInputError(f"seed {seed} of {run.config_id} comes from two runs (populations of "
                                     f"training.population seeds overlap): start them {len(parts)} seeds apart")
            seen.add((run.config_id, seed))
            records += _records(where, {**run.key, "config_id": run.config_id}, seed)
    return records


def _records(result_dir: Path, factors: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    return [{**factors, "seed": seed, "env": row["env"], "task": row["name"], "split": row["split"],
             "return": row["mean_return"], "normalised": row["normalised_return"], "win_rate": row.get("win_rate")}
            for row in json.loads((result_dir / "summary.json").read_text())]


def collect_population(run_dir: str | Path, factors: dict[str, Any]) -> list[dict[str, Any]]:
    """The records of :func:`collect` from one population run directory made outside the experiment runner
    (a ``python -m mtmarl.train ... training.population=S`` run; ``experiment_scripts/population_table.py``): its
    finished ``seed_<s>/``, each as one run of ``factors``."""
    run_dir = Path(run_dir)
    records = []
    for seed_dir in sorted(run_dir.glob("seed_*/")):
        if (seed_dir / "summary.json").exists():
            records += _records(seed_dir, {**factors, "config_id": str(run_dir)},
                                int(seed_dir.name.removeprefix("seed_")))
    return records


def learning_curves(runs: Iterable[Run], results: str | Path) -> list[dict[str, Any]]:
    """Periodic evaluations of finished runs as curves: one row per (run factors, split, update) with the
    mean over seeds of the set's mean normalised return (``eval/<split>_normalised`` in metrics.jsonl),
    its standard error over seeds (None with one seed), and ``samples`` = updates x global batch x T."""
    import yaml

    points: dict[tuple, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    sizes: dict[tuple, int] = {}
    for run in runs:
        run_dir = run.directory(results)
        if not is_finished(run_dir):
            continue
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
        batch = cfg["training"].get("batch_size") or cfg["algo"]["batch_size"]
        seq = cfg["training"].get("seq_len") or cfg["algo"]["seq_len"]
        for line in (run_dir / "metrics.jsonl").read_text().splitlines():
            rec = json.loads(line)
            for split in ("train", "test"):
                value = rec.get(f"eval/{split}_normalised")
                if value is not None:
                    key = (tuple(sorted(run.key.items())), split)
                    points[key][int(rec["step"])].append(float(value))
                    sizes[key] = int(batch) * int(seq)
    rows = []
    for (factors, split), by_step in points.items():
        for step, values in sorted(by_step.items()):
            n = len(values)
            rows.append({**dict(factors), "split": split, "updates": step, "samples": step * sizes[(factors, split)],
                         "seeds": n, "mean": float(np.mean(values)),
                         "stderr": float(np.std(values, ddof=1) / math.sqrt(n)) if n > 1 else None,
                         "iqm_lo": None, "iqm_hi": None})
    return rows


def updates_to_fraction(rows: Sequence[dict[str, Any]], fraction: float = 0.9) -> int | None:
    """The first evaluated update whose mean reaches ``fraction`` of the curve's best mean (the plateau
    a budget should reach); None for an empty curve."""
    if not rows:
        return None
    pts = sorted(rows, key=lambda r: r["updates"])
    best = max(r["mean"] for r in pts)
    return next(r["updates"] for r in pts if r["mean"] >= fraction * best)


def choose_metric(records: Sequence[dict[str, Any]]) -> str:
    """'normalised' when every task has a reference return, else 'return' (raw)."""
    if records and all(r["normalised"] is not None for r in records):
        return "normalised"
    return "return"


def score_matrix(records: Sequence[dict[str, Any]], metric: str) -> tuple[np.ndarray, list[int], list[str]]:
    """(seeds, tasks) matrix; seeds that miss any task of the group are dropped."""
    cells: dict[int, dict[str, float]] = defaultdict(dict)
    for r in records:
        cells[r["seed"]][f"{r['env']}/{r['task']}"] = r[metric]
    tasks = sorted({t for per_seed in cells.values() for t in per_seed})
    seeds = sorted(s for s, per_seed in cells.items() if all(t in per_seed for t in tasks))
    return np.array([[cells[s][t] for t in tasks] for s in seeds], dtype=np.float64), seeds, tasks


def aggregate(records: Sequence[dict[str, Any]], by: Sequence[str], splits: Sequence[str] = ("train", "test"),
              metric: str | None = None, reps: int = 2000, confidence: float = 0.95,
              seed: int = 0) -> list[dict[str, Any]]:
    """One row per (group of ``by`` factor values, split) with mean +- stderr and IQM [CI]."""
    metric = metric or choose_metric(records)
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    order: list[tuple] = []
    for r in records:
        key = tuple(r.get(k) for k in by)
        if key not in groups:
            order.append(key)
        groups[key].append(r)
    rows = []
    for key in order:
        for split in splits:
            sel = [r for r in groups[key] if r["split"] == split]
            if not sel:
                continue
            matrix, seeds, tasks = score_matrix(sel, metric)
            if matrix.size == 0:
                continue
            rows.append({**dict(zip(by, key)), "split": split, "metric": metric, "seeds": seeds,
                         **summarise_matrix(matrix, reps, confidence, seed)})
    return rows


def find(rows: Sequence[dict[str, Any]], **match) -> dict[str, Any] | None:
    for row in rows:
        if all(row.get(k) == v for k, v in match.items()):
            return row
    return None


def fmt(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def percent_text(x: float) -> str:
    """A signed % change, or 'n/a' when it is undefined (zero or missing base)."""
    return f"{x:+.0f}%" if x is not None and math.isfinite(x) else "n/a"


def table_cells(row: dict[str, Any]) -> tuple[str, str]:
    """'mean ± se' and 'IQM [lo, hi]' strings of an aggregated row (se over tasks marked with *)."""
    mark = "*" if row["stderr_over"] == "tasks" else ""
    return (f"{fmt(row['mean'])} ± {fmt(row['stderr'])}{mark}",
            f"{fmt(row['iqm'])} [{fmt(row['iqm_lo'])}, {fmt(row['iqm_hi'])}]")


def print_rows(rows: Sequence[dict[str, Any]], by: Sequence[str], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in (*by, "split", "runs x tasks", "mean ± se", "IQM [95% CI]"):
        table.add_column(col, justify="left" if col in (*by, "split") else "right")
    for row in rows:
        table.add_row(*(fmt(row[k]) for k in by), row["split"], f"{row['runs']} x {row['tasks']}",
                      *table_cells(row))
    console = Console()
    console.print(table)
    if rows:
        console.print(f"metric: {metric_label(rows)} per task; se over seeds"
                      + (" (* = one seed: se over tasks)" if any(r["stderr_over"] == "tasks" for r in rows) else "")
                      + "; IQM CI: stratified bootstrap over runs per task"
                      + (" (* = one seed: over tasks)" if any(r["stderr_over"] == "tasks" for r in rows) else ""))


def markdown(rows: Sequence[dict[str, Any]], by: Sequence[str]) -> str:
    head = [*by, "split", "runs x tasks", "mean ± se", "IQM [95% CI]"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        lines.append("| " + " | ".join([*(fmt(row[k]) for k in by), row["split"], f"{row['runs']} x {row['tasks']}",
                                        *table_cells(row)]) + " |")
    return "\n".join(lines) + "\n"


def save_markdown(path: Path, lines: Sequence[str]) -> Path:
    """Write a markdown table (one string per line), print it, return the path."""
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    print(text)
    return path


def _jsonable(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, (np.floating, np.integer)):
        return _jsonable(x.item())
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def save_rows(stem: Path, rows: Sequence[dict[str, Any]], meta: dict[str, Any] | None = None) -> None:
    """``<stem>.json`` ({"meta": ..., "rows": [...]}) and ``<stem>.csv`` (one line per row)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps({"meta": _jsonable(meta or {}), "rows": _jsonable(list(rows))},
                                                    indent=1))
    cols: list[str] = []
    for row in rows:
        cols += [k for k in row if k not in cols]
    with stem.with_suffix(".csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=cols)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in row.items()})


def parameter_count(overrides: Sequence[str]) -> int:
    """Trainable parameters of the policy/critic network a run's overrides define (shapes only, no compile)."""
    import jax
    import jax.numpy as jnp
    from omegaconf import OmegaConf

    from mtmarl.experiments.config import compose_train
    from mtmarl.training.loop import build_algo

    cfg = compose_train(overrides)
    c = OmegaConf.to_container(cfg, resolve=True)
    obs_dim, n_actions = _set_shapes(json.dumps(c.get("tasks")), c.get("task"))
    algo = build_algo(c["algo"], c["network"], c["training"], c["data"], c["agents"], n_actions)
    obs = jnp.zeros((1, 1, 1, obs_dim), jnp.float32)
    shapes = algo.acting_params(jax.eval_shape(algo.init, jax.random.key(0), obs))  # what acting reads
    return int(sum(math.prod(x.shape) for x in jax.tree.leaves(shapes)))


@functools.lru_cache(maxsize=None)
def _set_shapes(tasks_json: str, task: str | None) -> tuple[int, int]:
    """(padded obs size, actions) of a task set; cached, as building every env takes seconds."""
    from mtmarl import tasks as registry

    task_set = registry.load(task) if task else registry.from_config(json.loads(tasks_json))
    return task_set.padding["obs_dim"], task_set.train[0].build().num_actions


def metric_label(rows: Sequence[dict[str, Any]]) -> str:
    if rows and rows[0]["metric"] == "normalised":
        return "normalised return"
    if rows and rows[0]["metric"] == "win_rate":
        return "win rate"
    return "return (raw; no reference returns)"


def report(rows: Sequence[dict[str, Any]], by: Sequence[str], out: Path, stem: str, title: str,
           meta: dict[str, Any] | None = None) -> list[Path]:
    """Print the aggregated table and save it as ``<stem>.json``, ``.csv`` and ``.md`` under ``out``."""
    print_rows(rows, by, title)
    save_rows(out / stem, rows, meta)
    (out / f"{stem}.md").write_text(f"**{title}**\n\n" + markdown(rows, by))
    return [out / f"{stem}.{ext}" for ext in ("json", "csv", "md")]


def bootstrap_args(cfg) -> dict[str, Any]:
    return {"reps": int(cfg.bootstrap.reps), "confidence": float(cfg.bootstrap.confidence),
            "seed": int(cfg.bootstrap.seed)}


def num_train_tasks(extra: Sequence[str], task_set: str) -> int:
    """M, the number of training tasks of a set (composed, so sets on a Hydra search path count too)."""
    from mtmarl.experiments.config import compose_train

    return len(compose_train([*extra, "+algo=mt_bc_sable", f"+tasks={task_set}"]).tasks.train)
