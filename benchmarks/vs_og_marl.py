"""MT Oryx's train step against og-marl's Oryx step, side by side in one run.

Why a driver of its own: speed ratios only mean something when both sides run on the same
machine at the same time. Machine load drifts over minutes, so the two are *alternated*:
each round runs og-marl's learner (``../shared/anchors/og_marl_oryx/bench_oryx.py``, og-marl's
own jitted ``lax.scan`` learner on synthetic RWARE-shaped data, in its own venv) and then
mtmarl's (``benchmarks/train_step.py``: the trainer's compiled ``Learner.run`` loop), each in a
fresh process, and the ratio is taken per round. Settings are og-marl's Oryx defaults: embed 128,
1 block, 4 heads, batch 64, sequence 20; og-marl runs in float32 on one device (its only path);
mtmarl runs each ``--dtype`` given (``bfloat16`` is what ``matmul_dtype: auto`` picks on CPUs
with AMX / AVX512-BF16) on the devices given by ``--devices``.

Set-up of the og-marl side (once per machine) is in the anchor's README: og-marl's source at
commit f4eb8f0 in ``--ogm`` and a venv with mtmarl's stack plus tfp-nightly in ``--og-python``.

    python benchmarks/vs_og_marl.py --ogm /tmp/ogm --og-python /tmp/ogvenv/bin/python \
        --agents 2 4 8 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ANCHOR = HERE.parent.parent / "shared" / "anchors" / "og_marl_oryx" / "bench_oryx.py"
OUT = HERE / "results" / "vs_og_marl.json"


def run_og_marl(args, agents: int) -> dict:
    """One og-marl process: compile, then ``--og-repeats`` timed calls of ``--og-updates`` updates."""
    with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as out:
        env = {**os.environ, "XLA_FLAGS": ""}  # og-marl as its users run it: one device
        if args.og_pythonpath:  # e.g. og-marl's extra packages and benchmarks/og_marl_shim
            env["PYTHONPATH"] = os.pathsep.join([args.og_pythonpath, env.get("PYTHONPATH", "")])
        subprocess.run([args.og_python, str(args.anchor), "--agents", str(agents), "--updates", str(args.og_updates),
                        "--repeats", str(args.og_repeats), "--T", "100000", "--ogm", args.ogm,
                        "--json-out", out.name], check=True, env=env, stdout=subprocess.DEVNULL)
        row = json.loads(out.read().splitlines()[-1])
    return {"updates_per_s": row["ups_median"], "call_times_s": row["call_times_s"], "params": row["n_params"],
            "first_call_s": row["first_call_s"]}


def run_mtmarl(args, agents: int, dtype: str) -> dict:
    """One mtmarl process: ``benchmarks/train_step.py`` at the same settings (the trainer's compiled loop)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "row.json"
        env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={args.devices}"}
        subprocess.run([sys.executable, str(HERE / "train_step.py"), "--agents", str(agents), "--seq-len", "20",
                        "--embed", "128", "--dtype", dtype, "--batch", "64", "--seconds", str(args.seconds),
                        "--out", str(out)], check=True, env=env, stdout=subprocess.DEVNULL)
        row = json.loads(out.read_text())["rows"][0]
    return {"updates_per_s": row["updates_per_s"], "params": row["params"], "devices": row["devices"],
            "compile_s": row["compile_s"], "share_of_limit": row["share_of_limit"]}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ogm", default="/tmp/ogm", help="og-marl source at commit f4eb8f0")
    p.add_argument("--og-python", default="/tmp/ogvenv/bin/python", help="python of a venv that imports og_marl")
    p.add_argument("--anchor", type=Path, default=ANCHOR)
    p.add_argument("--agents", type=int, nargs="+", default=[2, 4, 8])
    p.add_argument("--dtype", nargs="+", default=["float32", "bfloat16"])
    p.add_argument("--devices", type=int, default=2, help="host devices of the mtmarl side (pmap over them)")
    p.add_argument("--rounds", type=int, default=3, help="alternations of og-marl and mtmarl per agent count")
    p.add_argument("--seconds", type=float, default=12.0, help="timing per mtmarl process")
    p.add_argument("--og-updates", type=int, default=25, help="updates per og-marl learn() call")
    p.add_argument("--og-repeats", type=int, default=3)
    p.add_argument("--og-pythonpath", default="", help="put before PYTHONPATH for og-marl's process only: e.g. "
                   "its extra packages and benchmarks/og_marl_shim (stand-ins for logging imports it lacks)")
    p.add_argument("--out", type=Path, default=OUT)
    a = p.parse_args()
    if not a.anchor.exists():
        p.error(f"--anchor {a.anchor} does not exist (../shared/anchors/og_marl_oryx/bench_oryx.py)")
    if not (Path(a.ogm) / "og_marl").is_dir():
        p.error(f"--ogm {a.ogm} holds no og_marl/ package (see the anchor's README for the set-up)")

    rows = []
    print(f"{'N':>3} {'round':>5} {'og-marl upd/s':>13} " + " ".join(f"{d + ' upd/s':>15} {'ratio':>6}" for d in a.dtype),
          flush=True)
    for n in a.agents:
        for r in range(a.rounds):
            row = {"agents": n, "round": r, "og_marl": run_og_marl(a, n)}
            for d in a.dtype:
                row[d] = run_mtmarl(a, n, d)
                row[d]["ratio"] = row[d]["updates_per_s"] / row["og_marl"]["updates_per_s"]
            rows.append(row)
            print(f"{n:>3} {r:>5} {row['og_marl']['updates_per_s']:>13.2f} "
                  + " ".join(f"{row[d]['updates_per_s']:>15.2f} {row[d]['ratio']:>5.2f}x" for d in a.dtype), flush=True)
    summary = {}
    for n in a.agents:
        sel = [r for r in rows if r["agents"] == n]
        summary[n] = {d: {"median_ratio": statistics.median(r[d]["ratio"] for r in sel),
                          "min_ratio": min(r[d]["ratio"] for r in sel), "max_ratio": max(r[d]["ratio"] for r in sel)}
                      for d in a.dtype}
        print(f"{n} agents: " + ", ".join(f"{d} {s['median_ratio']:.2f}x (rounds {s['min_ratio']:.2f}-"
                                          f"{s['max_ratio']:.2f})" for d, s in summary[n].items()), flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                                 "command": " ".join(sys.argv), "mtmarl_devices": a.devices, "rows": rows,
                                 "summary": summary}, indent=1))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
