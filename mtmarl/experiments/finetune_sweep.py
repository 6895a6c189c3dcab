"""The M3 paper's jump point (JP) and time to threshold (TT): offline-pretrained policies fine-tuned online on
SMAX maps against MAPPO from scratch, over seeds.

    python experiment_scripts/finetune_sweep.py --runs m3=<run dir> mt_bc_sable=<run dir> --maps 3m 8m \\
        --seeds 0 1 2 --budget 40960 --scratch mappo=409600 qmix=204800 --out results/finetune_mh_expert

Each ``--runs`` entry is a ``python -m mtmarl.train`` run (a ``training.population`` run holds every seed;
seed ``s`` fine-tunes that run's seed ``s``). Every (learner, seed, map) is one
``python -m mtmarl.finetune online=finetune online.init_from=<run> online.init_seed=<s> task=smax:map=<m>``
(``online=hygen`` for an ``algo=hygen`` run: the HyGen paper's hybrid stage, so HyGen's Fig. 4 comparison with
online QMIX runs from the same driver) into ``<out>/<learner>/seed_<s>/<map>/``; MAPPO from scratch is
``online=mappo`` with the same seed. A run whose reference entry exists is not run again, so a stopped
sweep resumes. ``--scratch SYSTEM=STEPS`` adds online learners from scratch (``online=<system>``: MAPPO,
online QMIX) with the same seeds.

JP is the return of the evaluation before any update (stochastic policy, ``eval.episodes`` episodes). TT
to a threshold is read off the learning curve as the collector reads it (that evaluation, then each
chunk's training return), for every ``--thresholds`` value: the M3 paper's 18 of SMAC's 20 is 1.8 on SMAX's
0-2 scale, which no learner reached in the first measurement, so lower ones are reported beside it.
Writes ``finetune.md`` (mean ± standard error over seeds), ``finetune.json`` (every run, with the command, the
code's commit and the machine) and ``curves.png`` (mean training return against env steps). HyGen's hybrid
stage over the set's source tasks with the final policy evaluated on the whole set (the HyGen paper's Table 1's
HyGen column) adds a zero-shot table:

    python experiment_scripts/finetune_sweep.py --runs hybrid=<algo=hygen run> --maps 3m --seeds 0 1 2 --budget 20480 \
        --scratch --extra online.sources=train online.eval_set=true --out results/<name>
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from mtmarl.experiments.analysis import fmt as fmt_value
from mtmarl.experiments.provenance import commit, machine
from mtmarl.experiments.stats import mean_stderr
from mtmarl.online.collectors import jump_and_threshold

ROOT = Path(__file__).resolve().parents[2]


def task_name(map_name: str) -> str:
    return f"smax:map={map_name}"


def run_dir(out: Path, learner: str, seed: int, map_name: str) -> Path:
    return out / learner / f"seed_{seed}" / map_name


def entry(path: Path, map_name: str) -> dict | None:
    refs = path / "references.json"
    return json.loads(refs.read_text()).get(task_name(map_name)) if refs.is_file() else None


def continuing_system(source: str) -> str:
    """``online=`` for the offline run in ``source``: the online stage its algorithm (``config.yaml``'s
    ``algo.name``) registered to continue its runs (HyGen's hybrid stage for HyGen, M3's fine-tuning for M3 and
    the Sable policies); fine-tuning for a directory without a config."""
    from omegaconf import OmegaConf

    from mtmarl.algos.registry import continuing_stage

    cfg = Path(source) / "config.yaml"
    algo = OmegaConf.load(cfg).algo.name if cfg.is_file() else None
    return (continuing_stage(algo) if algo else None) or "finetune"


def command(learner: str, source: str | None, seed: int, map_name: str, budget: int, path: Path,
            episodes: int, extra: list[str]) -> list[str]:
    """``source`` None: ``learner`` is an online system trained from scratch."""
    online = [f"online={learner}"] if source is None else [
        f"online={continuing_system(source)}", f"online.init_from={source}", f"online.init_seed={seed}"]
    return [sys.executable, "-m", "mtmarl.finetune", *online, f"task={task_name(map_name)}", f"seed={seed}",
            f"finetune.budget={budget}", f"finetune.out={path}", "online.tt_threshold=1.8",
            f"eval.episodes={episodes}", "finetune.progress=false", *extra]


def curve(path: Path, map_name: str, jp: float | None) -> list[tuple[int, float | None]]:
    """[(0, JP), (env steps, training return of each chunk), ...] as the collector's TT reads it."""
    log = path / "logs" / "smax" / f"{task_name(map_name).split(':', 1)[1]}.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [(0, jp)] + [(int(r["env_steps"]), r.get("return")) for r in rows]


def value_at(points: list[tuple[int, float | None]], steps: int) -> float | None:
    """The training return logged last at or before ``steps`` env steps (MAPPO at the fine-tuning budget)."""
    seen = [r for s, r in points[1:] if s <= steps and r is not None]
    return seen[-1] if seen else None


def summarise(records: list[dict], thresholds: list[float], budget: int) -> list[dict]:
    rows = []
    for learner in dict.fromkeys(r["learner"] for r in records):
        for map_name in dict.fromkeys(r["map"] for r in records):
            rs = [r for r in records if r["learner"] == learner and r["map"] == map_name]
            if not rs:
                continue
            row = {"learner": learner, "map": map_name, "seeds": len(rs), "env_steps": rs[0]["env_steps"],
                   "jp": mean_stderr([r["jp"] for r in rs]), "final": mean_stderr([r["return"] for r in rs]),
                   "win_rate": mean_stderr([r["win_rate"] for r in rs]),
                   "train_at_budget": mean_stderr([v for r in rs if (v := value_at(r["curve"], budget)) is not None]),
                   "tt": {}}
            for th in thresholds:
                tts = [jump_and_threshold(r["curve"], th)["tt"] for r in rs]
                reached = [t for t in tts if t is not None]
                row["tt"][str(th)] = {"reached": len(reached), "median": float(np.median(reached)) if reached else None}
            rows.append(row)
    return rows


def fmt(ms: tuple[float, float]) -> str:
    m, se = ms
    return fmt_value(m) if np.isnan(se) else f"{m:.3f} ± {se:.3f}"


def markdown(rows: list[dict], thresholds: list[float], budget: int) -> str:
    head = ["map", "learner", "seeds", "env steps", "JP", f"train return at {budget:,}", "final return",
            "final win rate", *(f"TT to {th}" for th in thresholds)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(rows, key=lambda r: r["map"]):
        tts = [(f"{t['median']:,.0f} ({t['reached']}/{r['seeds']})" if t["reached"] else f"not reached (0/{r['seeds']})")
               for t in r["tt"].values()]
        lines.append(f"| {r['map']} | {r['learner']} | {r['seeds']} | {r['env_steps']:,} | {fmt(r['jp'])} | "
                     f"{fmt(r['train_at_budget'])} | {fmt(r['final'])} | {fmt(r['win_rate'])} | " + " | ".join(tts) + " |")
    lines += ["", "Mean ± standard error over seeds. JP: the stochastic policy's return before any update; train "
              "return: the last chunk's training return at or before the fine-tuning budget; final: the evaluation "
              "after the last update. TT: median env steps over the seeds that reached the threshold (n reached / "
              "seeds), on the curve the collector reads (JP at step 0, then each chunk's training return)."]
    return "\n".join(lines) + "\n"


def set_table(records: list[dict]) -> str:
    """Runs with ``online.eval_set`` (HyGen): the final policy's win rate on every task of the offline run's set,
    mean ± se over seeds, and the split means (each seed's mean over the split's tasks, then over seeds)."""
    with_set = [r for r in records if r.get("set_eval")]
    if not with_set:
        return ""
    lines = ["Zero-shot on the offline run's set after the online stage (`online.eval_set`; win rate, mean ± se "
             "over seeds):", "", "| learner | run named | split | task | seeds | win rate |", "|---|---|---|---|---|---|"]
    for learner, map_name in dict.fromkeys((r["learner"], r["map"]) for r in with_set):
        rs = [r for r in with_set if r["learner"] == learner and r["map"] == map_name]
        tasks = list(dict.fromkeys((row["split"], row["name"]) for row in rs[0]["set_eval"]))
        for split in dict.fromkeys(sp for sp, _ in tasks):
            for _, name in [t for t in tasks if t[0] == split]:
                wins = [row["win_rate"] for r in rs for row in r["set_eval"] if (row["split"], row["name"]) == (split, name)]
                lines.append(f"| {learner} | {map_name} | {split} | {name} | {len(wins)} | {fmt(mean_stderr(wins))} |")
            means = [float(np.mean([row["win_rate"] for row in r["set_eval"] if row["split"] == split])) for r in rs]
            lines.append(f"| {learner} | {map_name} | {split} | **mean** | {len(means)} | **{fmt(mean_stderr(means))}** |")
    return "\n".join(lines) + "\n"


def plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    maps = list(dict.fromkeys(r["map"] for r in records))
    fig, axes = plt.subplots(1, len(maps), figsize=(5 * len(maps), 3.6), squeeze=False)
    for ax, map_name in zip(axes[0], maps):
        for learner in dict.fromkeys(r["learner"] for r in records):
            rs = [r for r in records if r["learner"] == learner and r["map"] == map_name]
            if not rs:
                continue
            steps = [s for s, _ in rs[0]["curve"]]
            ys = np.array([[np.nan if v is None else v for _, v in r["curve"]][: len(steps)] for r in rs], float)
            ax.plot(steps, np.nanmean(ys, axis=0), marker="o", ms=3, label=learner)
        ax.set_xscale("symlog", linthresh=10_000)
        ax.set(title=map_name, xlabel="env steps", ylabel="return (step 0: JP, then training return)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="+", required=True, metavar="LEARNER=RUN_DIR",
                   help="offline runs to fine-tune, e.g. m3=results/runs/<m3 run>")
    p.add_argument("--maps", nargs="+", default=["3m"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--budget", type=int, default=40960, help="fine-tuning env steps")
    p.add_argument("--scratch", nargs="*", default=["mappo=409600"], metavar="SYSTEM=STEPS",
                   help="online systems trained from scratch and their env steps (none: --scratch with no value)")
    p.add_argument("--thresholds", nargs="+", type=float, default=[1.2, 1.5, 1.8])
    p.add_argument("--episodes", type=int, default=64)
    p.add_argument("--extra", nargs="*", default=[], help="more overrides for every run")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "finetune")
    argv = sys.argv[1:] if argv is None else argv
    args = p.parse_args(argv)
    from mtmarl.algos.registry import ONLINE as SYSTEMS

    sources: dict[str, str | None] = {}
    budgets: dict[str, int] = {}
    for item in args.scratch:
        name, sep, steps = item.partition("=")
        if not sep or name not in SYSTEMS or not steps.isdigit():
            p.error(f"--scratch {item!r}: want SYSTEM=STEPS, SYSTEM one of {', '.join(SYSTEMS)}")
        sources[name], budgets[name] = None, int(steps)
    for item in args.runs:
        name, sep, path = item.partition("=")
        if not sep or not Path(path).is_dir():
            p.error(f"--runs {item!r}: want LEARNER=RUN_DIR with an existing run directory")
        if name in SYSTEMS:
            p.error(f"--runs {item!r}: {name!r} names an online system; pick another learner name")
        sources[name], budgets[name] = str(Path(path).resolve()), args.budget
    args.out.mkdir(parents=True, exist_ok=True)
    order = [*(n for n in sources if sources[n] is not None), *(n for n in sources if sources[n] is None)]
    jobs = [(learner, seed, m) for m in args.maps for seed in args.seeds for learner in order]
    records = []
    for i, (learner, seed, map_name) in enumerate(jobs, 1):
        path = run_dir(args.out, learner, seed, map_name)
        budget = budgets[learner]
        if entry(path, map_name) is None:
            path.mkdir(parents=True, exist_ok=True)
            cmd = command(learner, sources[learner], seed, map_name, budget, path, args.episodes, args.extra)
            print(f"[{i}/{len(jobs)}] {learner} seed {seed} {map_name}: {' '.join(cmd[1:])}", flush=True)
            start = time.time()
            with open(path / "finetune.log", "w") as log:
                rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT).returncode
            print(f"    rc {rc} in {time.time() - start:.0f} s", flush=True)
            if rc:
                print(f"    failed: see {path / 'finetune.log'}", flush=True)
                continue
        else:
            print(f"[{i}/{len(jobs)}] {learner} seed {seed} {map_name}: done before", flush=True)
        e = entry(path, map_name)
        records.append({"learner": learner, "seed": seed, "map": map_name, "env_steps": e["env_steps"],
                        "jp": e["jp"], "return": e["return"], "win_rate": e.get("win_rate"),
                        "train_seconds": e.get("train_seconds"), "curve": curve(path, map_name, e["jp"]),
                        "set_eval": e.get("set_eval")})
    rows = summarise(records, args.thresholds, args.budget)
    zero_shot = set_table(records)
    manifest = {"command": " ".join(["python", "experiment_scripts/finetune_sweep.py", *argv]), **commit(),
                "machine": machine(), "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    (args.out / "finetune.json").write_text(json.dumps({**manifest, "rows": rows, "records": records}, indent=1))
    table = markdown(rows, args.thresholds, args.budget) + (f"\n{zero_shot}" if zero_shot else "")
    (args.out / "finetune.md").write_text(table)
    plot(records, args.out / "curves.png")
    print(table)
    return 0


def run_cli():
    """The command line (``experiment_scripts/finetune_sweep.py``)."""
    raise SystemExit(main())
