"""Our online MAPPO beside published implementations at equal settings: speed and learning per env step.

Two anchors, each run side by side with ours on the same cores, seeds interleaved (ours, theirs, ours, ...) so
both see the same machine load:

* ``rware``: Mava's feed-forward MAPPO (``experiment_scripts/mava_anchor/run.py``) on RWARE tiny-2ag, 64 envs in
  total, rollout 32, 4 epochs, 2 minibatches, actor and critic MLPs [64, 64] tanh (our ``online=mappo``
  defaults at ``online.num_envs=64/devices``); Mava keeps its own learning rate (2.5e-4, ours 5e-4) unless
  ``--match-lr``;
* ``smax``: JaxMARL's recurrent SMAX MAPPO (``experiment_scripts/jaxmarl_anchor/run.py``) on 3m, 64 envs, against
  ours with the SMAX recipe (``+recipe=smax``: JaxMARL's published hyperparameters on our MAPPO).

Per run: env steps/s after compiling, and the training return (mean of the episodes finished) in windows of the
run, the last window being the "return at equal env steps". Writes ``<out>.json`` (every run's curve summary,
the machine and the commands) and ``<out>.md`` (mean and range over seeds)::

    taskset -c 1 python benchmarks/anchors.py rware --mava <checkout> --mava-extra <site-dir> \\
        --seeds 0 1 2 --out benchmarks/results/anchor_rware
    taskset -c 1 python benchmarks/anchors.py smax --jaxmarl <checkout> --jaxmarl-extra <site-dir> \\
        --seeds 0 --out benchmarks/results/anchor_smax

Set-up of the two checkouts: the docstrings of the two runners. ``--devices`` host devices per process (default
1: pin the whole command to one core with taskset, the other stays free for other work).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TASKS = {"rware": "rware:rows=1,cols=3,height=8,agents=2", "smax": "smax:map=3m"}
STEPS = {"rware": 3_276_800, "smax": 1_500_000}
ENVS = 64  # in total, over the devices of one process


def ours_command(anchor: str, steps: int, seed: int, devices: int, root: Path) -> list[str]:
    common = [f"task={TASKS[anchor]}", f"seed={seed}", f"collect.root={root}", "collect.record=false",
              "collect.initial_eval=false", "collect.progress=false", "collect.plateau=null", "eval.episodes=8",
              "collect.checkpoint_min=100000"]
    if anchor == "rware":
        return [sys.executable, "-m", "mtmarl.collect", "online=mappo", f"online.num_envs={ENVS // devices}",
                f"collect.budget={steps}", *common]
    return [sys.executable, "-m", "mtmarl.collect", "+recipe=smax", f"online_env.smax.num_envs={ENVS // devices}",
            f"collect.env_budget.smax={steps}", "collect.quality_min_episodes=null", *common]


def theirs_command(anchor: str, args: argparse.Namespace, steps: int, seed: int, log: Path) -> list[str]:
    if anchor == "rware":
        lr = ["--lr", str(our_lr())] if args.match_lr else []
        return [sys.executable, str(ROOT / "experiment_scripts/mava_anchor/run.py"), "--mava", str(args.mava),
                *(["--extra", str(args.mava_extra)] if args.mava_extra else []), "--steps", str(steps),
                "--num-envs", str(ENVS), "--seed", str(seed), *lr, "--log", str(log)]
    return [sys.executable, str(ROOT / "experiment_scripts/jaxmarl_anchor/run.py"), "--jaxmarl", str(args.jaxmarl),
            *(["--extra", str(args.jaxmarl_extra)] if args.jaxmarl_extra else []), "--map", "3m", "--steps",
            str(steps), "--num-envs", str(ENVS), "--seed", str(seed), "--log", str(log)]


def our_lr() -> float:
    from omegaconf import OmegaConf

    return float(OmegaConf.load(ROOT / "mtmarl/configs/online/mappo.yaml").lr)


def curve(rows: list[dict], step_key: str, return_key: str) -> tuple[np.ndarray, np.ndarray]:
    kept = [(r[step_key], r[return_key]) for r in rows if r.get(return_key) is not None]
    steps, values = (np.array(x, float) for x in zip(*kept))
    return steps, values


def windows(steps: np.ndarray, values: np.ndarray, total: int, parts: int) -> list[float]:
    """Mean return of the points logged in each of ``parts`` equal windows of the run's env steps."""
    edges = np.linspace(0, total, parts + 1)
    return [float(values[(steps > lo) & (steps <= hi)].mean()) if ((steps > lo) & (steps <= hi)).any()
            else float("nan") for lo, hi in zip(edges[:-1], edges[1:])]


def run_one(side: str, cmd: list[str], env: dict, log: Path) -> dict:
    start = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{side}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
    if log.is_dir():  # ours: the collector's per-chunk learning curve, the one task's <name>.jsonl
        (log,) = log.glob("*.jsonl")
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    if side == "ours":  # per-chunk log: cumulative wall_s; the first chunk holds the compile
        steps, values = curve(rows, "env_steps", "return")
        sps = (rows[-1]["env_steps"] - rows[0]["env_steps"]) / (rows[-1]["wall_s"] - rows[0]["wall_s"])
    elif "seconds" in rows[-1]:  # Mava runner: seconds from the end of its compile
        steps, values = curve(rows, "env_steps", "return")
        sps = rows[-1]["env_steps"] / rows[-1]["seconds"]
    else:  # JaxMARL runner: one compiled call; its summary line gives the run's seconds after compiling
        steps, values = curve(rows, "env_step", "returns")
        summary = json.loads(log.with_suffix(".summary.json").read_text())
        sps = summary["env_steps"] / summary["run_seconds"]
    return {"side": side, "steps_per_s": sps, "steps": steps, "values": values, "wall_s": time.time() - start,
            "command": " ".join(cmd[1:])}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("anchor", choices=sorted(TASKS))
    ap.add_argument("--mava", type=Path, help="a Mava checkout (rware)")
    ap.add_argument("--mava-extra", type=Path)
    ap.add_argument("--jaxmarl", type=Path, help="a JaxMARL checkout (smax)")
    ap.add_argument("--jaxmarl-extra", type=Path)
    ap.add_argument("--match-lr", action="store_true", help="rware: Mava at our learning rate (default: Mava's own)")
    ap.add_argument("--steps", type=int, default=None, help="env steps per run (default: rware 3,276,800; smax 1.5M)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--devices", type=int, default=1, help="host devices per process (64 envs split over them)")
    ap.add_argument("--windows", type=int, default=4, help="equal windows of the run for the return table")
    ap.add_argument("--out", type=Path, required=True, help="writes <out>.json and <out>.md")
    args = ap.parse_args(argv)
    checkout = args.mava if args.anchor == "rware" else args.jaxmarl
    if checkout is None:
        ap.error(f"{args.anchor}: --{'mava' if args.anchor == 'rware' else 'jaxmarl'} <checkout> is required")
    if ENVS % args.devices:
        ap.error(f"--devices {args.devices}: {ENVS} envs must split evenly over the devices")
    steps = args.steps or STEPS[args.anchor]
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={args.devices}",
           "PYTHONPATH": str(ROOT)}
    runs = []
    with tempfile.TemporaryDirectory(prefix="anchors-") as tmp:
        for seed in args.seeds:
            root = Path(tmp) / f"ours_{seed}"
            ours = run_one("ours", ours_command(args.anchor, steps, seed, args.devices, root), env,
                           root / "logs" / args.anchor)
            log = Path(tmp) / f"theirs_{seed}.jsonl"
            theirs = run_one("theirs", theirs_command(args.anchor, args, steps, seed, log), env, log)
            for r in (ours, theirs):
                r.update(seed=seed, windows=windows(r.pop("steps"), r.pop("values"), steps, args.windows))
                runs.append(r)
                print(f"{r['side']} seed {seed}: {r['steps_per_s']:,.0f} env steps/s, return by window "
                      f"{[round(w, 3) for w in r['windows']]}", flush=True)
    write(args, steps, runs)


def write(args: argparse.Namespace, steps: int, runs: list[dict]) -> None:
    theirs_name = "JaxMARL MAPPO (recurrent)" if args.anchor == "smax" else \
        f"Mava FF-MAPPO (lr {our_lr():g})" if args.match_lr else "Mava FF-MAPPO (its lr)"
    from mtmarl.experiments.provenance import commit, machine as this_machine

    machine = {**this_machine(), "devices_per_process": args.devices}
    cpu = machine["cpu"]
    edges = np.linspace(0, steps, args.windows + 1)
    head = ["", "env steps/s", *(f"return {lo / 1e6:.2f}-{hi / 1e6:.2f}M" for lo, hi in zip(edges[:-1], edges[1:]))]
    lines = [f"# {args.anchor}: ours vs {theirs_name}, {ENVS} envs, {steps:,} env steps, seeds {args.seeds}", "",
             f"Machine: {cpu}, {machine['cores']} core(s) allowed, {args.devices} device(s) per process. "
             f"Mean over seeds [min, max].", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for side, label in (("ours", "mtmarl MAPPO"), ("theirs", theirs_name)):
        mine = [r for r in runs if r["side"] == side]
        cols = [[r["steps_per_s"] for r in mine], *([r["windows"][i] for r in mine] for i in range(args.windows))]
        fmt = ["{:,.0f}", *["{:.3f}"] * args.windows]
        lines.append(f"| {label} | " + " | ".join(
            f"{f.format(np.mean(c))} [{f.format(min(c))}, {f.format(max(c))}]" for f, c in zip(fmt, cols)) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(
        {"anchor": args.anchor, "steps": steps, "envs": ENVS, "seeds": args.seeds, "machine": machine, **commit(),
         "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "runs": runs}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
