"""The command line shared by ``experiment_scripts/*.py``: compose, run the matrix, aggregate, plot, print.

    python experiment_scripts/<name>.py [quick|paper] [key=value ...]

The first word may be the budget preset (same as ``budget=<preset>``); the rest
are Hydra overrides of ``mtmarl/configs/experiments/<name>.yaml`` (see
``mtmarl/configs/experiments/common.yaml`` for the shared ones: ``results``,
``launcher``, ``jobs``, ``slurm``, ``extra``, ``dry_run``, ``aggregate_only``).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from omegaconf import DictConfig, OmegaConf

from mtmarl.errors import require_extra
from mtmarl.experiments.analysis import collect, save_rows
from mtmarl.experiments.config import compose_experiment, compose_train, plain
from mtmarl.experiments.provenance import commit, machine
from mtmarl.experiments.runner import Run, is_finished, run_matrix, train_command
from mtmarl.runtime import user_errors_exit


@dataclasses.dataclass(frozen=True)
class Experiment:
    name: str
    build: Callable[[DictConfig], list[Run]]                                   # the run matrix
    analyse: Callable[[DictConfig, list[dict[str, Any]], Path], list[Path]]    # figures/tables -> files
    splits: tuple[str, ...] = ("train", "test")  # the evaluated splits whose records are kept (and saved)


def check_runs(cfg: DictConfig, runs: Sequence[Run]) -> None:
    """Compose every distinct run config now, so a typo fails before hours of training (and, for
    ``launcher=slurm``, compose the first one with the submitit launcher)."""
    if cfg.launcher == "slurm":
        require_extra("slurm", "launcher=slurm")
    seen = set()
    for run in runs:
        if run.overrides not in seen:
            seen.add(run.overrides)
            compose_train(run.overrides)
    if cfg.launcher == "slurm" and runs:
        cmd = train_command(runs[0], runs[0].directory(cfg.results), "slurm", list(cfg.slurm))
        compose_train(cmd[cmd.index("--multirun") + 1:], hydra_config=True)


def print_matrix(cfg: DictConfig, runs: Sequence[Run]) -> None:
    from rich.console import Console
    from rich.table import Table

    factors = list(dict.fromkeys(k for r in runs for k in r.key))
    table = Table(title=f"{cfg.name} ({cfg.budget.name}): {len(runs)} run(s)")
    for col in (*factors, "seed", "finished", "directory"):
        table.add_column(col)
    for r in runs:
        table.add_row(*(str(r.key.get(k, "")) for k in factors), str(r.seed),
                      "yes" if is_finished(r.directory(cfg.results)) else "no", str(r.directory(cfg.results)))
    Console().print(table)


@user_errors_exit
def main(exp: Experiment, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run one experiment end to end; returns {"runs": outcome records, "files": written files}."""
    argv = sys.argv[1:] if argv is None else list(argv)
    cfg = compose_experiment(exp.name, argv)
    runs = exp.build(cfg)
    out = Path(cfg.results).resolve() / (cfg.get("output") or exp.name)
    check_runs(cfg, runs)
    if cfg.dry_run:
        print_matrix(cfg, runs)
        return {"runs": [], "files": []}
    start = time.time()
    outcomes = []
    if not cfg.aggregate_only:
        outcomes = run_matrix(runs, cfg.results, cfg.launcher, int(cfg.jobs), list(cfg.slurm),
                              manifest=out / "runs.json", progress=bool(cfg.progress))
    records = [r for r in collect(runs, cfg.results) if r["split"] in exp.splits]
    save_rows(out / "records", records, {"experiment": exp.name, "budget": cfg.budget.name})
    files: list[Path] = []
    if records:
        files = exp.analyse(cfg, records, out)
    else:
        print(f"{exp.name}: no finished runs to aggregate (see {out / 'runs.json'})")
    finished = sum(is_finished(r.directory(cfg.results)) for r in runs)  # (a population run is one run)
    meta = {"experiment": exp.name, "budget": cfg.budget.name, "argv": argv,
            "command": " ".join(["python", f"experiment_scripts/{exp.name}.py", *argv]),
            **commit(), "machine": machine(),
            "config": plain(cfg), "runs": len(runs), "finished": finished,
            "failed": sum(o.status == "failed" for o in outcomes),
            "wall_seconds": round(time.time() - start, 1), "files": [str(f) for f in files]}
    out.mkdir(parents=True, exist_ok=True)
    (out / "experiment.json").write_text(json.dumps(meta, indent=1))
    print(f"{finished}/{len(runs)} run(s) finished; outputs in {out}")
    return {"runs": [o.record() for o in outcomes], "files": files, "config": OmegaConf.to_container(cfg)}
