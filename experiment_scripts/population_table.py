"""Tables of population runs (``training.population``) laid out as ``<root>/<algo>/<set>/seed_<s>/``.

    python experiment_scripts/population_table.py <root>

Per algorithm and set: mean ± standard error over seeds and the IQM with its 95% stratified bootstrap CI over
seeds x tasks (``mtmarl/experiments/analysis.py``), then each run's training seconds and updates per second.
Writes ``<root>/table.{md,json,csv}``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mtmarl.experiments.analysis import aggregate, collect_population, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="a folder of <algo>/<set>/ run directories")
    args = parser.parse_args()
    records, speed = [], []
    for run_dir in sorted(p for p in args.root.glob("*/*/") if any(p.glob("seed_*/summary.json"))):
        algo, task_set = run_dir.parent.name, run_dir.name
        records += collect_population(run_dir, {"algo": algo, "task_set": task_set})
        run = json.loads(next(run_dir.glob("seed_*/run.json")).read_text())
        # Some recorded runs count only the seconds of a resume that just evaluated (under a second): no rate is
        # better than a wrong one.
        seconds = run["train_seconds"] if run["train_seconds"] >= 1 else None
        speed.append(f"| {algo} | {task_set} | {run['population']} | {run['updates']} | "
                     + (f"{seconds:.0f} | {run['updates'] / seconds:.0f} |" if seconds else "- | - |"))
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
