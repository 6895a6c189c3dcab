"""Tables of population runs (``training.population``): mean ± se over seeds and IQM [95% CI] per

Usage and options: the docstring of ``mtmarl/experiments/analysis.py`` (or ``--help``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from mtmarl.experiments.analysis import aggregate, collect_population, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--adopt", metavar="EXPERIMENT", help="place the runs where this experiment's gpu "
                        "budget looks for them (e.g. table1)")
    args = parser.parse_args()
    if args.adopt:
        return adopt(args.root, args.adopt)
    records, speed = [], []
    for run_dir in sorted(p for p in args.root.glob("*/*/") if any(p.glob("seed_*/summary.json"))):
        algo, task_set = run_dir.parent.name, run_dir.name
        records += collect_population(run_dir, {"algo": algo, "task_set": task_set})
        run = json.loads(next(run_dir.glob("seed_*/run.json")).read_text())
        # A run resumed by an older version recorded only the seconds since its resume (~0 for one resumed only to
        # be evaluated): no rate is better than a wrong one.
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


def adopt(root: Path, experiment: str) -> None:
    import importlib

    from mtmarl.experiments import runner
    from mtmarl.experiments.config import compose_experiment

    script = importlib.import_module(f"mtmarl.experiments.{experiment}")
    cfg = compose_experiment(experiment, ["gpu"])
    for run in script.EXPERIMENT.build(cfg):
        src = root / run.key.get("algo", "") / run.key.get("task_set", "")
        dst = run.directory(cfg.results)
        if not src.is_dir() or runner.is_finished(dst):
            print(f"{run.config_id}: {'already finished' if src.is_dir() else 'no run in ' + str(root)}")
            continue
        with tempfile.TemporaryDirectory() as tmp:  # check the copy where the runner will read it
            staged = Path(tmp) / "run"
            shutil.copytree(src, staged, ignore=shutil.ignore_patterns("checkpoints", ".lock"))
            changed = runner.stale_keys(run, staged)
            if changed or not runner.is_finished(staged):
                print(f"{src}: not adopted ({'trained with other ' + ', '.join(changed) if changed else 'unfinished'})")
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(staged, dst, dirs_exist_ok=True)
        print(f"{src} -> {dst}")


if __name__ == "__main__":
    main()
