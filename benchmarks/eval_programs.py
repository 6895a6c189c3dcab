"""A task set's evaluation as one program for the whole set vs one program per agent count.

    python benchmarks/eval_programs.py <training run dir> [--set rware_15] [--final-episodes 320]

Each way runs in a fresh process (XLA cache off) with the run's trained policy and the same keys:
compile time, the compile's transient memory (peak RSS while compiling minus RSS before it, sampled
every 50 ms), RSS once the freed heap is trimmed, a 16-episode periodic call and the final call. The
per-group way is what training and ``mtmarl.evaluate`` use (``make_task_set_evaluator``); the
one-program way rebuilds the earlier evaluator (every group's loop inside one jit) from
the same pieces. Per-task returns must agree. Writes ``results/eval_programs_<set>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def rss_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 2**20
    return 0.0


def one_program(envs, policy, episodes: int, batch: int, capacity: int):
    """Every agent group's loop inside one compiled program (the earlier evaluator)."""
    import jax
    import jax.numpy as jnp

    from mtmarl.evaluation.rollout import Evaluator, TaskSetEvaluator, episode_keys, run_task_episodes

    ev = Evaluator(envs, policy, episodes, None, batch, tasks=True, capacity=capacity)
    grouped = TaskSetEvaluator(envs, policy, episodes, None, batch, capacity)  # its groups and task order only

    def run(params, keys, first, count):
        ep_keys = jax.vmap(lambda k: episode_keys(k, ev.capacity, first))(keys)
        played = [run_task_episodes([envs[i] for i in idx], policy, params, ep_keys[idx], count, ev.batch)
                  for idx in grouped.groups]
        return jax.tree.map(lambda *xs: jnp.concatenate(xs)[grouped.order], *played)

    ev._fn = jax.jit(run) if len(ev.devices) == 1 else jax.pmap(run, in_axes=(None, None, 0, None),
                                                                devices=ev.devices)
    return ev


def measure(way: str, run_dir: str, set_name: str, episodes: int, final: int) -> dict:
    """One way, in this process: compile, periodic call, final call."""
    peak = [0.0]

    def sample():
        while True:
            peak[0] = max(peak[0], rss_gib())
            time.sleep(0.05)

    threading.Thread(target=sample, daemon=True).start()
    import jax
    import jax.numpy as jnp
    import numpy as np

    from mtmarl import tasks
    from mtmarl.evaluation.rollout import make_task_set_evaluator, task_key
    from mtmarl.memory import release_freed_memory
    from mtmarl.training.restore import load_trained

    policy, params, _, _ = load_trained(run_dir, "latest")
    task_set = tasks.load(set_name)
    specs = task_set.split("all")
    envs = [task_set.evaluation_env(spec) for spec in specs]
    keys = jnp.stack([task_key(0, spec) for spec in specs])
    n_dev = jax.local_device_count()
    batch, capacity = -(-episodes // n_dev), -(-final // n_dev)
    fn = (one_program(envs, policy, episodes, batch, capacity) if way == "one program"
          else make_task_set_evaluator(envs, policy, episodes, None, batch, capacity))
    release_freed_memory()
    base = peak[0] = rss_gib()
    start = time.perf_counter()
    fn.compile(params, keys)
    compile_s, compiled_peak = time.perf_counter() - start, peak[0]
    release_freed_memory()
    trimmed = rss_gib()
    times, returns = [], None
    for n in (episodes, final):
        start = time.perf_counter()
        stats = jax.device_get(fn.resized(n)(params, keys))
        times.append(time.perf_counter() - start)
        returns = np.asarray(stats.returns).mean(axis=1)
    return {"way": way, "programs": len(getattr(fn, "parts", [fn])), "tasks": len(specs),
            "compile_s": compile_s, "transient_gib": compiled_peak - base, "base_gib": base,
            "trimmed_gib": trimmed, "periodic_s": times[0], "final_s": times[1],
            "task_returns": returns.tolist(), "mean_return": float(returns.mean())}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--set", default="rware_15")
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--final-episodes", type=int, default=320)
    parser.add_argument("--way", help=argparse.SUPPRESS)  # the child process's way
    args = parser.parse_args(argv)
    if args.way:
        print(json.dumps(measure(args.way, args.run_dir, args.set, args.episodes, args.final_episodes)))
        return
    env = {**os.environ, "MTMARL_XLA_CACHE": "off"}
    env.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    rows = []
    for way in ("one program", "per agent count"):
        out = subprocess.run([sys.executable, __file__, args.run_dir, "--set", args.set, "--episodes",
                              str(args.episodes), "--final-episodes", str(args.final_episodes), "--way", way],
                             env=env, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    same = rows[0]["task_returns"] == rows[1]["task_returns"]
    print(f"{args.set}: {rows[0]['tasks']} tasks, periodic {args.episodes} / final {args.final_episodes} "
          f"episodes per task; per-task returns identical: {same}")
    print(f"{'way':>16} {'programs':>8} {'compile s':>9} {'transient GiB':>13} {'trimmed GiB':>11} "
          f"{'periodic s':>10} {'final s':>8} {'mean return':>11}")
    for r in rows:
        print(f"{r['way']:>16} {r['programs']:>8} {r['compile_s']:>9.1f} {r['transient_gib']:>13.2f} "
              f"{r['trimmed_gib']:>11.2f} {r['periodic_s']:>10.1f} {r['final_s']:>8.1f} {r['mean_return']:>11.4f}")
    out_path = HERE / "results" / f"eval_programs_{args.set}.json"
    out_path.write_text(json.dumps({"command": " ".join(sys.argv), "same_returns": same, "rows": rows}, indent=1))
    print(f"wrote {out_path}")
    if not same:
        sys.exit("per-task returns differ between the two ways")


if __name__ == "__main__":
    main()
