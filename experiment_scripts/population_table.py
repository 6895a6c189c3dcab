"""Tables of population runs (``training.population``): mean ± se over seeds and IQM [95% CI] per
algorithm and set, train and test, from ``<root>/<algo>/<set>/seed_<s>/summary.json``.

    python experiment_scripts/population_table.py results/gpu_budget_h200

Writes ``<root>/table.{md,json,csv}`` and prints it. Also reports, per run, the updates reached and the
training seconds (``seed_<s>/run.json``) and the updates per second of all seeds together.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mtmarl.experiments.analysis import aggregate, collect_population, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    args = parser.parse_args()
    records, speed = [], []
    for run_dir in sorted(p for p in args.root.glob("*/*/") if any(p.glob("seed_*/summary.json"))):
        algo, task_set = run_dir.parent.name, run_dir.name
        records += collect_population(run_dir, {"algo": algo, "task_set": task_set})
        run = json.loads(next(run_dir.glob("seed_*/run.json")).read_text())
        speed.append(f"| {algo} | {task_set} | {run['population']} | {run['updates']} | "
                     f"{run['train_seconds']:.0f} | {run['updates'] / run['train_seconds']:.0f} |")
    if not records:
        raise SystemExit(f"no seed_<s>/summary.json under {args.root}/<algo>/<set>/")
    rows = aggregate(records, ["algo", "task_set"])
    report(rows, ["algo", "task_set"], args.root, "table", f"Population runs in {args.root}")
    lines = ["| algo | set | seeds | updates | training s (all seeds) | updates/s (of each seed) |",
             "|---|---|---|---|---|---|", *speed]
    with (args.root / "table.md").open("a") as f:
        f.write("\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
