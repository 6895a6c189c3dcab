"""The multi-task Oryx paper's Fig. 6: ablations of HL-Gauss, agent masking+shuffling and task-balanced batching.

    python experiment_scripts/ablations.py quick               # 2 algorithms x 4 variants, 1 seed
    python experiment_scripts/ablations.py paper               # the same with 3 seeds, paper budget
    python experiment_scripts/ablations.py quick 'algos=[mt_oryx]'

On the full ``tasks`` set (rware_15) trains MT Oryx and MT CQL-Sable as they are
('full') and with one component switched off per variant (``variants`` in
mtmarl/configs/experiments/ablations.yaml: ``algo.hl_gauss=false``;
``agents.mask=false agents.shuffle=false``; ``data.balanced=false``), and
reports each variant's test return and its % change against 'full'. ``choices`` (as in table1.py)
trains each algorithm with its training-task tuning choice. Writes
``results/ablations/``: ``fig6_ablations.png`` (+ .json/.csv),
``ablations.{json,csv,md}``, ``ablation_change.md``, ``records.json``, ``runs.json``.
"""

from __future__ import annotations

from pathlib import Path

from mtmarl.experiments.analysis import (aggregate, bootstrap_args, find, fmt, metric_label, percent_text, report,
                                         save_markdown)
from mtmarl.experiments.config import run_overrides
from mtmarl.experiments.driver import Experiment, main
from mtmarl.experiments.plots import bar_figure
from mtmarl.experiments.runner import Run
from mtmarl.experiments.stats import percent_change
from mtmarl.experiments.tuning import load_choices, tuned

REFERENCE = "full"


def build(cfg) -> list[Run]:
    if REFERENCE not in cfg.variants:
        raise ValueError(f"variants must include {REFERENCE!r} (the reference each ablation is compared with)")
    chosen = load_choices(cfg.get("choices") or [])
    # 'full' has the overrides of Table 1's run of the same (set, algorithm, choice): one run serves both
    return [Run.make({"algo": algo, "variant": name},
                     run_overrides(cfg, [f"+algo={algo}", f"+tasks={cfg.tasks}", *tuned(chosen, cfg.tasks, algo), *extra]),
                     seed)
            for algo in cfg.algos for name, extra in cfg.variants.items() for seed in cfg.budget.seeds]


def analyse(cfg, records, out: Path) -> list[Path]:
    rows = aggregate(records, ["algo", "variant"], **bootstrap_args(cfg))
    meta = {"budget": cfg.budget.name, "tasks": cfg.tasks,
            "variants": {k: list(v) for k, v in cfg.variants.items()}}
    files = report(rows, ["algo", "variant"], out, "ablations", f"Ablations on {cfg.tasks} ({cfg.budget.name} "
                                                                 f"budget)", meta)
    bars, lines = [], ["| ablation | algorithm | with | without | change |", "|---|---|---|---|---|"]
    for name in (v for v in cfg.variants if v != REFERENCE):
        for algo in cfg.algos:
            ref = find(rows, algo=algo, variant=REFERENCE, split="test")
            abl = find(rows, algo=algo, variant=name, split="test")
            if not (ref and abl):
                continue
            change = percent_change(abl["mean"], ref["mean"])
            note = percent_text(change)
            bars += [{"panel": name, "category": algo, "series": "with (full)", "value": ref["mean"],
                      "err": ref["stderr"], "note": note, "change_percent": change},
                     {"panel": name, "category": algo, "series": f"without ({name})", "value": abl["mean"],
                      "err": abl["stderr"], "note": note, "change_percent": change}]
            lines.append(f"| {name} | {algo} | {fmt(ref['mean'])} | {fmt(abl['mean'])} | {note} |")
    if bars:
        panels = list(dict.fromkeys(b["panel"] for b in bars))
        files.append(bar_figure(out / "fig6_ablations", bars, panels, list(cfg.algos),
                                f"test {metric_label(rows)}", meta))
        files.append(save_markdown(out / "ablation_change.md", lines))
    return files


EXPERIMENT = Experiment("ablations", build, analyse)

if __name__ == "__main__":
    main(EXPERIMENT)
