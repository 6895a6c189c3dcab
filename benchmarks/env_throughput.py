"""Env-step throughput of mtmarl's evaluator against raw Jumanji.

Why this exists: every number mtmarl reports comes from the compiled evaluator
(``make_evaluator``), which adds a wrapper (observation conversion, team reward,
global state), optional agent padding, a random policy and an early-exit
``while_loop`` on top of Jumanji. This script measures what that costs per
executed env step, so a slowdown in mtmarl/ shows up as a number.

For a small and a large task of each env, at one batch size B, in one process
and interleaved run by run:

  (a) raw    ``jit(scan(vmap(jumanji_env.step)))`` over the full horizon, random
             legal actions drawn like ``uniform_legal``, no auto-reset;
  (b) wrap   the evaluator on the unpadded wrapper (RANDOM policy, 1 device);
  (c) pad    the evaluator on the env padded to its task set, 1 device;
  (d) pad×2  as (c) with 2 devices (pmap), when 2 devices exist.

Executed steps are B*horizon for (a) and B*max(lengths) for the evaluator (its
loop stops once every episode has ended; under pmap each device stops on its
own, so per device). "Useful" steps (sum of lengths) are reported too.
Overhead = (time per executed step) / (that of (a)) - 1, from wall time (median)
and from process CPU time (robust when other processes share the cores).

    python benchmarks/env_throughput.py [--episodes 320] [--quick] [--tasks rware lbf_5/8x8]
"""

from __future__ import annotations

import os

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               " --xla_force_host_platform_device_count=2").strip()

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from mtmarl import tasks  # noqa: E402
from mtmarl.evaluation.policies import RANDOM, uniform_legal  # noqa: E402
from mtmarl.evaluation.rollout import episode_keys, make_evaluator  # noqa: E402

TASKS = [("rware_15", "tiny-2ag"), ("rware_15", "large-10ag"),
         ("lbf_5", "8x8-2p-2f"), ("lbf_5", "18x18-8p-6f-l4"),
         ("connector_10", "5x5-2a"), ("connector_10", "15x15-10a")]
OUT = Path(__file__).resolve().parent / "results" / "env_throughput.json"


def make_baseline(jenv, horizon: int, num_episodes: int):
    """(a): Jumanji alone, same key scheme and action sampling as the evaluator."""
    def run(params, key):  # same signature as an evaluator
        keys = episode_keys(key, num_episodes)
        reset_keys, act_keys = jnp.moveaxis(jax.vmap(jax.random.split)(keys), 1, 0)
        state, ts = jax.vmap(jenv.reset)(reset_keys)

        def body(carry, t):
            state, ts, ret = carry
            step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(act_keys, t)
            actions = jax.vmap(uniform_legal)(step_keys, ts.observation.action_mask)
            state, ts = jax.vmap(jenv.step)(state, actions)
            return (state, ts, ret + ts.reward.reshape(num_episodes, -1).sum(-1)), None

        (_, _, ret), _ = jax.lax.scan(body, (state, ts, jnp.zeros(num_episodes)), jnp.arange(horizon))
        return ret
    return jax.jit(run, static_argnums=0)


def find(set_name: str, task_name: str):
    task_set = tasks.load(set_name)
    spec = next(s for s in task_set.split("all") if s.name == task_name)
    return task_set, spec


def timed(fn):
    """(wall s, process CPU s, output). CPU time is robust to other processes
    competing for the cores; for pmap it sums both devices' threads."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = jax.block_until_ready(fn())
    return time.perf_counter() - t0, time.process_time() - c0, out


def bench_task(set_name: str, task_name: str, B: int, reps: int) -> dict:
    task_set, spec = find(set_name, task_name)
    env, padded = spec.build(), task_set.padded(spec)
    key = jax.random.PRNGKey(0)
    variants = {"a_raw": make_baseline(env.jumanji_env, env.horizon, B),
                "b_wrap": make_evaluator(env, RANDOM, B, 1),
                "c_pad": make_evaluator(padded, RANDOM, B, 1)}
    if jax.local_device_count() >= 2:
        variants["d_pad_2dev"] = make_evaluator(padded, RANDOM, B, 2)
    calls = {k: (lambda f=f: f(None, key)) for k, f in variants.items()}

    res: dict[str, dict] = {}
    for name, call in calls.items():  # first call = compile + one run; then a warm-up run
        compile_s, _, out = timed(call)
        # Very short runs are repeated `inner` times per timing so each lasts >= ~0.2 s.
        inner = max(1, int(0.2 / max(timed(call)[0], 1e-4)))
        res[name] = {"compile_s": compile_s, "out": out, "inner": inner, "times": [], "cpu_times": []}
    for _ in range(reps):  # interleaved steady-state runs
        for name, call in calls.items():
            n = res[name]["inner"]
            wall, cpu, _ = timed(lambda: [call() for _ in range(n)])
            res[name]["times"].append(wall / n)
            res[name]["cpu_times"].append(cpu / n)

    per_dev = -(-B // 2)
    for name, r in res.items():
        out = r.pop("out")
        if name == "a_raw":
            iters, executed, useful = env.horizon, B * env.horizon, None
        else:
            lengths = np.asarray(out.lengths)
            iters = int(lengths.max())
            if name == "d_pad_2dev":
                executed = sum(len(c) and per_dev * int(c.max())
                               for c in (lengths[:per_dev], lengths[per_dev:]))
            else:
                executed = B * iters
            useful = int(lengths.sum())
            r["mean_return"] = float(np.asarray(out.returns).mean())
        steady, cpu = statistics.median(r["times"]), statistics.median(r["cpu_times"])
        r.update(iterations=iters, executed_steps=executed, useful_steps=useful,
                 steady_s=steady, min_s=min(r["times"]), cpu_s=cpu,
                 steps_per_s=executed / steady, cpu_us_per_step=1e6 * cpu / executed,
                 useful_steps_per_s=None if useful is None else useful / steady)
    base, base_cpu = res["a_raw"]["steps_per_s"], res["a_raw"]["cpu_us_per_step"]
    for name in ("b_wrap", "c_pad", "d_pad_2dev"):
        if name in res:
            res[name]["overhead_pct"] = 100.0 * (base / res[name]["steps_per_s"] - 1.0)
            res[name]["cpu_overhead_pct"] = 100.0 * (res[name]["cpu_us_per_step"] / base_cpu - 1.0)
    if "d_pad_2dev" in res:  # same episodes, same results: wall-clock speedup
        res["d_pad_2dev"]["speedup_vs_c"] = res["c_pad"]["steady_s"] / res["d_pad_2dev"]["steady_s"]
    return {"set": set_name, "task": task_name, "task_spec": spec.adhoc, "episodes": B,
            "horizon": env.horizon, "agents": env.num_agents, "padded_agents": padded.num_agents,
            "obs_dim": env.obs_dim, "padded_obs_dim": padded.obs_dim, "variants": res}


def print_table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"env throughput, B={rows[0]['episodes']} episodes, "
                        f"{jax.local_device_count()} device(s)")
    for col in ("task", "variant", "iters", "exec steps", "useful", "compile s", "steady s",
                "min s", "Ksteps/s", "overhead %", "cpu µs/step", "cpu ovh %", "speedup"):
        table.add_column(col, justify="left" if col in ("task", "variant") else "right")
    for row in rows:
        for i, (name, r) in enumerate(row["variants"].items()):
            table.add_row(
                f"{row['set']}/{row['task']} ({row['agents']}->{row['padded_agents']}ag)" if i == 0 else "",
                name, str(r["iterations"]), str(r["executed_steps"]),
                "" if r["useful_steps"] is None else str(r["useful_steps"]),
                f"{r['compile_s']:.2f}", f"{r['steady_s']:.3f}", f"{r['min_s']:.3f}",
                f"{r['steps_per_s'] / 1e3:.1f}", f"{r['overhead_pct']:+.1f}" if "overhead_pct" in r else "",
                f"{r['cpu_us_per_step']:.2f}",
                f"{r['cpu_overhead_pct']:+.1f}" if "cpu_overhead_pct" in r else "",
                f"{r['speedup_vs_c']:.2f}x" if "speedup_vs_c" in r else "",
                end_section=i == len(row["variants"]) - 1)
    Console(width=180).print(table)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--episodes", "-B", type=int, default=320, help="batch size (episodes / envs)")
    p.add_argument("--quick", action="store_true", help="B=64, for a fast check")
    p.add_argument("--reps", type=int, default=3, help="steady-state runs (median)")
    p.add_argument("--tasks", nargs="*", default=None,
                   help="keep tasks whose 'set/name' contains any of these substrings")
    p.add_argument("--out", type=Path, default=OUT, help="JSON output path")
    args = p.parse_args(argv)
    B = 64 if args.quick else args.episodes
    chosen = [t for t in TASKS if not args.tasks or any(f in "/".join(t) for f in args.tasks)]
    rows = []
    for set_name, task_name in chosen:
        rows.append(bench_task(set_name, task_name, B, args.reps))
        print(f"done {set_name}/{task_name}", flush=True)
    print_table(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"jax": jax.__version__, "devices": [str(d) for d in jax.local_devices()],
            "cpu_count": os.cpu_count(), "machine": platform.machine(), "episodes": B,
            "reps": args.reps, "xla_flags": os.environ.get("XLA_FLAGS", "")}
    args.out.write_text(json.dumps({"meta": meta, "tasks": rows}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
