"""learning per update. Oryx variants and BC side by side, with the critic diagnostics of each run.

    python experiment_scripts/learning.py                         # default budget, 1 seed, lbf_5 + rware_15
    python experiment_scripts/learning.py 'task_sets=[rware_15]' 'only=[oryx,bc]'

Trains every ``variants`` entry (mtmarl/configs/experiments/learning.yaml) on every task
set, then runs ``mtmarl.diagnose`` on each finished run (``diagnose_batches``;
cached in the run directory). Writes ``results/learning/``: ``learning.{json,csv,md}``
(normalised train/test return per set and variant) and ``diagnostics.md``
(Spearman of Q vs the data's return, Q spread over actions, policy-weight spread).
"""

from __future__ import annotations

import json
from pathlib import Path

from mtmarl.errors import UserInputError
from mtmarl.experiments.analysis import (aggregate, bootstrap_args, fmt, learning_curves, report, save_markdown,
                                         updates_to_fraction)
from mtmarl.experiments.config import run_overrides
from mtmarl.experiments.driver import Experiment, main
from mtmarl.experiments.runner import Run, is_finished, population_seeds

DIAG_COLUMNS = ("spearman", "mc_std", "q_state_std", "q_action_spread", "weight_std", "weight_max", "down_weighted", "nll",
                "uniform_nll")


def build(cfg) -> list[Run]:
    chosen = list(cfg.variants) if cfg.only is None else list(cfg.only)
    unknown = [v for v in chosen if v not in cfg.variants]
    if unknown:
        raise UserInputError(f"only={unknown} names no variant; known: {list(cfg.variants)}")
    return [Run.make({"task_set": tasks, "variant": name}, run_overrides(cfg, [*cfg.variants[name], f"+tasks={tasks}"]),
                     seed) for tasks in cfg.task_sets for name in chosen for seed in cfg.budget.seeds]


def diagnostics(run_dir: Path, batches: int, seed: int | None = None) -> dict | None:
    """The run's ``mtmarl.diagnose`` summary (computed once, then read from ``diagnostics.json``); ``seed``:
    that seed of a population run (its ``seed_<s>/diagnostics.json``)."""
    path = (run_dir if seed is None else run_dir / f"seed_{seed}") / "diagnostics.json"
    if not path.exists():
        from mtmarl.diagnose import main as diagnose

        diagnose([str(run_dir), "--batches", str(batches), *([] if seed is None else ["--seed", str(seed)])])
    return json.loads(path.read_text())["summary"]


def analyse(cfg, records, out: Path) -> list[Path]:
    by = ["task_set", "variant"]
    rows = aggregate(records, by, **bootstrap_args(cfg))
    meta = {"budget": cfg.budget.name, "variants": {k: list(v) for k, v in cfg.variants.items()}}
    files = report(rows, by, out, "learning", f"Learning per update ({cfg.budget.name} budget)", meta)
    files += curves(cfg, out, meta)
    if int(cfg.diagnose_batches) <= 0:
        return files
    lines = ["| task set | variant | seed | " + " | ".join(DIAG_COLUMNS) + " |", "|---|---|---|" + "---|" * len(DIAG_COLUMNS)]
    for run in build(cfg):
        run_dir = run.directory(cfg.results)
        if not is_finished(run_dir):
            continue
        for seed in population_seeds(run_dir) or [None]:  # a population run: each of its seeds
            summary = diagnostics(run_dir, int(cfg.diagnose_batches), seed)
            lines.append(f"| {run.key['task_set']} | {run.key['variant']} | {run.seed if seed is None else seed} | "
                         + " | ".join(fmt(summary.get(c)) for c in DIAG_COLUMNS) + " |")
    files.append(save_markdown(out / "diagnostics.md", lines))
    return files


def curves(cfg, out: Path, meta: dict) -> list[Path]:
    """Learning curves from the runs' periodic evaluations (``training.eval_every`` > 0): normalised return
    vs updates and vs samples, one panel per task set and split, and the updates each curve needs to
    reach 90% of its best value."""
    from mtmarl.experiments.plots import line_figure

    rows = learning_curves(build(cfg), cfg.results)
    if not rows:
        return []
    panels = [{"title": f"{s} {split}", "match": {"task_set": s, "split": split}}
              for s in dict.fromkeys(r["task_set"] for r in rows) for split in ("train", "test")]
    files = [line_figure(out / "curves", rows, "updates", "variant", panels, "updates", "normalised return",
                         meta=meta),
             line_figure(out / "curves_samples", rows, "samples", "variant", panels, "samples (updates x B x T)",
                         "normalised return", meta=meta)]
    lines = ["| task set | variant | split | seeds | best mean | at update | updates to 90% of best |",
             "|---|---|---|---|---|---|---|"]
    for key in dict.fromkeys((r["task_set"], r["variant"], r["split"]) for r in rows):
        curve = [r for r in rows if (r["task_set"], r["variant"], r["split"]) == key]
        best = max(curve, key=lambda r: r["mean"])
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {best['seeds']} | {fmt(best['mean'])} | {best['updates']} | "
                     f"{updates_to_fraction(curve)} |")
    files.append(save_markdown(out / "curves.md", lines))
    return files


EXPERIMENT = Experiment("learning", build, analyse)

if __name__ == "__main__":
    main(EXPERIMENT)
