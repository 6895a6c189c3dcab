"""Zero-shot on layouts that appear in no task set: multi-task vs single-task vs random.

    python experiment_scripts/out_of_split.py --env lbf --run mt=<train run dir> --run st=<train run dir> \
        [--episodes 128] [--out results/out_of_split_lbf]

Every ``--run label=dir`` (a directory written by ``python -m mtmarl.train``) and the random policy are
evaluated on the layouts of :data:`LAYOUTS` for ``--env``, all in one compiled program per policy, with
the same episode keys. A run that trained seeds side by side (``training.population``) is evaluated once
per seed (labels ``<label>/s<seed>``), and a second table gives each label's mean over its seeds with the
standard error *over seeds*, the spread that decides whether one policy family beats another. The
layouts are checked against every split of every task set of the env, so none was seen in training or
used as a test task. They have no reference returns, so the tables give raw returns (per layout: mean ±
standard error over episodes) and each policy's return relative to random.
Writes ``out_of_split.md`` and ``out_of_split.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

from mtmarl import tasks

# Layouts of each env that no task set uses (checked by ``outside_every_split``); same observation size
# as the env's sets (LBF: fov 3; RWARE and Connector views do not depend on the layout).
LAYOUTS = {
    "lbf": ["lbf:grid=9,agents=2,food=3,level=2,fov=3", "lbf:grid=11,agents=3,food=3,level=3,fov=3",
            "lbf:grid=13,agents=5,food=4,level=3,fov=3", "lbf:grid=14,agents=4,food=4,level=2,fov=3",
            "lbf:grid=16,agents=6,food=6,level=4,fov=3"],
    "rware": ["rware:rows=1,cols=5,height=4,agents=2", "rware:rows=2,cols=5,height=4,agents=5",
              "rware:rows=3,cols=3,height=8,agents=4", "rware:rows=2,cols=3,height=12,agents=3",
              "rware:rows=1,cols=3,height=4,agents=3"],
    "connector": ["connector:grid=5,agents=3", "connector:grid=9,agents=3", "connector:grid=11,agents=5",
                  "connector:grid=13,agents=6"],
}


def outside_every_split(env: str, layouts: list[str]) -> tasks.TaskSet:
    """The layouts as one task set (as its 'train' tasks: a set needs some), after checking no named set of ``env`` holds one."""
    specs = tuple(tasks.TaskSpec.parse(text) for text in layouts)
    seen = {}
    for name in tasks.available_sets():
        task_set = tasks.load(name)
        if task_set.env == env:
            for split in ("train", "test"):
                for spec in task_set.split(split):
                    seen[spec.adhoc] = f"{name}/{split}"
    clash = [f"{s.adhoc} (in {seen[s.adhoc]})" for s in specs if s.adhoc in seen]
    if clash:
        raise ValueError(f"layouts used by a task set: {', '.join(clash)}")
    return tasks.TaskSet(f"{env}_outside", env, specs, ())


def evaluate_policies(task_set: tasks.TaskSet, runs: dict[str, str], episodes: int, seed: int = 0) -> dict:
    """{label: [row per layout]} for every run (every seed of a population run) and the random policy (same keys for all)."""
    from mtmarl.evaluation.sets import evaluate_set
    from mtmarl.evaluation.policies import POLICIES
    from mtmarl.experiments.runner import population_seeds
    from mtmarl.training.restore import load_trained

    out = {}
    for label, run_dir in runs.items():
        for run_seed in population_seeds(Path(run_dir)) or [None]:  # each seed of a population run
            policy, params, _, info = load_trained(run_dir, seed=run_seed)
            key = label if run_seed is None else f"{label}/s{run_seed}"
            out[key] = evaluate_set(task_set, ["train"], policy, params, episodes, seed, {}, layout=info["layout"])
    out["random"] = evaluate_set(task_set, ["train"], POLICIES["random"], (), episodes, seed, {})
    return out


def table(results: dict, task_set: tasks.TaskSet) -> list[str]:
    labels = list(results)
    lines = ["| layout | " + " | ".join(labels) + " | " + " | ".join(f"{k} / random" for k in labels[:-1]) + " |",
             "|" + "---|" * (1 + 2 * len(labels) - 1)]
    means = {k: [] for k in labels}
    for i, spec in enumerate(task_set.train):
        row = {k: results[k][i] for k in labels}
        for k in labels:
            means[k].append(row[k]["mean_return"])
        cells = [f"{row[k]['mean_return']:.3f} ± {row[k]['stderr']:.3f}" for k in labels]
        rand = row["random"]["mean_return"]
        ratios = [f"{row[k]['mean_return'] / rand:.2f}" if rand > 0 else "n/a" for k in labels[:-1]]
        lines.append(f"| {spec.adhoc} | " + " | ".join(cells + ratios) + " |")
    avg = {k: sum(v) / len(v) for k, v in means.items()}
    lines.append("| **mean** | " + " | ".join(f"**{avg[k]:.3f}**" for k in labels) + " | "
                 + " | ".join(f"{avg[k] / avg['random']:.2f}" if avg["random"] > 0 else "n/a"
                              for k in labels[:-1]) + " |")
    return lines


def seed_table(results: dict) -> list[str]:
    """Per label (seeds of a population run pooled): mean over layouts per seed, then mean ± se over seeds."""
    from mtmarl.experiments.stats import mean_stderr

    groups: dict[str, list[float]] = {}
    for key, rows in results.items():
        groups.setdefault(re.sub(r"/s\d+$", "", key), []).append(sum(r["mean_return"] for r in rows) / len(rows))
    rand = groups["random"][0]
    lines = ["| policy | seeds | mean over layouts, per seed | mean ± se over seeds | / random |", "|---|---|---|---|---|"]
    for label, per_seed in groups.items():
        mean, se = mean_stderr(per_seed)
        ratio = f"{mean / rand:.2f}" if rand > 0 and label != "random" else "-"
        lines.append(f"| {label} | {len(per_seed)} | {' / '.join(f'{x:.3f}' for x in per_seed)} | "
                     f"{mean:.3f}" + (f" ± {se:.3f}" if len(per_seed) > 1 else "") + f" | {ratio} |")
    return lines


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--env", required=True, choices=sorted(LAYOUTS))
    ap.add_argument("--run", action="append", default=[], metavar="LABEL=DIR", help="a trained run (repeatable)")
    ap.add_argument("--episodes", type=int, default=128)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    runs = {}
    for item in args.run:
        label, sep, path = item.partition("=")
        if not sep or not Path(path).is_dir():
            ap.error(f"--run {item!r}: expected LABEL=<train run directory>")
        runs[label] = path
    task_set = outside_every_split(args.env, LAYOUTS[args.env])
    results = evaluate_policies(task_set, runs, args.episodes)
    out = args.out or Path("results") / f"out_of_split_{args.env}"
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# Zero-shot on {args.env} layouts in no split ({args.episodes} episodes each)", "",
             "Raw return, mean ± standard error over episodes; last columns: mean return / random's.", "",
             *table(results, task_set), "", "Per policy, seeds pooled:", "", *seed_table(results), "",
             "Runs: " + ", ".join(f"{k} = `{v}`" for k, v in runs.items())]
    (out / "out_of_split.md").write_text("\n".join(lines) + "\n")
    clean = {k: [{key: v for key, v in r.items() if isinstance(v, (int, float, str)) and not
                  (isinstance(v, float) and math.isnan(v))} for r in rows] for k, rows in results.items()}
    (out / "out_of_split.json").write_text(json.dumps({"runs": runs, "episodes": args.episodes,
                                                       "layouts": LAYOUTS[args.env], "results": clean}, indent=1))
    print("\n".join(lines))
    return results


def run_cli():
    """The command line (``experiment_scripts/out_of_split.py``)."""
    main()
