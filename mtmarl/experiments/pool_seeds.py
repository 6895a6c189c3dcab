"""Pool the per-task records of several experiment outputs (e.g. seeds run on different machines) into one table.

Each experiment driver writes ``results/<output>/records.csv`` (one row per run, task and split). Run
directories do not outlive a machine, so more seeds of a configuration measured later land in another
output; this reads the records of all the given outputs, refuses a (config, seed) that two of them hold
(the same run counted twice), and aggregates them as the drivers do (mean ± standard error over seeds,
IQM with a stratified bootstrap interval over seeds x tasks). Writes ``<out>/pooled.{json,csv,md}`` and
``<out>/records.csv``.

    python experiment_scripts/pool_seeds.py results/dataset_size_k15_matched results/dataset_size_k15_matched_s345 \\
        --by algo fraction --out results/dataset_size_k15_matched_pooled

``--experiment NAME`` also renders the pooled records as that experiment's driver renders its own
(``experiment_scripts/NAME.py``'s ``analyse``, with ``--set`` overrides of its config naming what the
tables list), e.g. one SMAX table from panels run as separate outputs, the HyGen paper's columns beside::

    python experiment_scripts/pool_seeds.py results/smax_mh_medium_3seeds results/smax_sz_medium_3seeds \\
        --by task_set quality algo --experiment smax --set 'task_sets=[smax_marine_hard,smax_stalker_zealot]' \\
        'qualities=[medium]' 'algos=[bc_t,odis,hissd]' --out results/smax_pooled
"""

from __future__ import annotations

import argparse
import csv
import importlib
import sys
from pathlib import Path

from mtmarl.errors import UserInputError
from mtmarl.experiments.analysis import aggregate, report
from mtmarl.experiments.config import EXPERIMENTS, compose_experiment


def read_records(outputs: list[Path]) -> list[dict]:
    """The records of every output; numbers parsed, each (config_id, seed) from one output only."""
    records, seen = [], {}
    for out in outputs:
        path = out / "records.csv"
        if not path.is_file():
            raise UserInputError(f"{path} does not exist: give experiment output directories holding records.csv")
        with path.open() as f:
            rows = list(csv.DictReader(f))
        for row in rows:
            run = (row["config_id"], row["seed"])
            if seen.setdefault(run, out) != out:
                raise UserInputError(f"run {run[0]} seed {run[1]} is in both {seen[run]} and {out}: "
                                     f"pool outputs with different seeds only")
            for key in ("return", "normalised", "win_rate"):
                row[key] = float(row[key]) if row.get(key) not in (None, "") else None
            row["seed"] = int(row["seed"])
            records.append(row)
    return records


def render(name: str, overrides: list[str], records: list[dict], out: Path) -> list[Path]:
    """The files ``mtmarl/experiments/<name>.py``'s own analysis writes, made from ``records``."""
    if name not in EXPERIMENTS:
        raise UserInputError(f"--experiment {name!r} is not one of {', '.join(EXPERIMENTS)}")
    module = importlib.import_module(f"mtmarl.experiments.{name}")
    return module.EXPERIMENT.analyse(compose_experiment(name, overrides), records, out)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outputs", nargs="+", type=Path, help="experiment output directories (with records.csv)")
    parser.add_argument("--by", nargs="+", default=["config_id"], help="record columns that name a configuration")
    parser.add_argument("--out", type=Path, required=True, help="directory for the pooled table")
    parser.add_argument("--experiment", help="also render the records as this experiment's driver does")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="overrides of that experiment's config (which sets, qualities, algos its tables list)")
    args = parser.parse_args(argv)
    records = read_records(args.outputs)
    missing = [k for k in args.by if k not in records[0]]
    if missing:
        raise UserInputError(f"--by {' '.join(missing)}: not a records column; columns: {', '.join(records[0])}")
    rows = aggregate(records, args.by)
    report(rows, args.by, args.out, "pooled", f"Pooled over {', '.join(str(o) for o in args.outputs)}",
           {"outputs": [str(o) for o in args.outputs], "by": args.by})
    with (args.out / "records.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    if args.experiment:
        render(args.experiment, args.set, records, args.out)
    return rows


def run_cli():
    """The command line (``experiment_scripts/pool_seeds.py``)."""
    try:
        main()
    except UserInputError as e:
        sys.exit(f"error: {e}")
