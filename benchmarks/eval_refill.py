"""The final evaluation in calls of fixed episode batches vs slots that start the next episode (issue 20).

    python benchmarks/eval_refill.py <training run dir> [--tasks rware_15] [--slots 8] [--episodes 320]

A training run's final evaluation plays ``--episodes`` episodes per task through the set evaluator that its
periodic evaluations compiled, ``--slots`` episodes of a task per device at a time (the periodic evaluation's
count per device). ``batches``: every call plays one batch of ``slots`` episodes to its longest one, as many
calls as needed (the evaluator before 2026-11-24); ``refill``: one call in which a slot whose episode ends
starts the task's next one. Both ways play the same trained policy and episode keys in one process, one after
the other, with the same per-step shapes, so every episode must come out the same: the script counts the
episodes whose return or length differ. Reports compile and play seconds and the loop steps each way takes.
Writes ``results/eval_refill_<set>.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

OUT = Path(__file__).parent / "results"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--tasks", default="rware_15")
    parser.add_argument("--slots", type=int, default=8, help="episodes of a task a device plays at once")
    parser.add_argument("--episodes", type=int, default=320, help="episodes per task (the final evaluation's)")
    parser.add_argument("--which", default="latest", help="checkpoint of the run: latest or best")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import numpy as np

    from mtmarl import tasks
    from mtmarl.evaluation.rollout import make_task_set_evaluator, task_key
    from mtmarl.runtime import enable_compilation_cache
    from mtmarl.training.data import release_freed_memory
    from mtmarl.training.policy import make_policy
    from mtmarl.training.restore import load_run

    enable_compilation_cache()
    algo, params, _, _ = load_run(args.run_dir, args.which)
    policy = make_policy(algo)
    task_set = tasks.load(args.tasks)
    specs = [s for split in ("train", "test") for s in task_set.split(split)]
    envs = [task_set.evaluation_env(s) for s in specs]
    keys = jnp.stack([task_key(0, s) for s in specs])
    n_dev = jax.local_device_count()
    per_device = -(-args.episodes // n_dev)
    rows, results = [], {}
    for way, capacity in (("batches", args.slots), ("refill", per_device)):
        fn = make_task_set_evaluator(envs, policy, args.slots * n_dev, None, args.slots, capacity)
        start = time.perf_counter()
        fn.compile(params, keys)
        compile_s = time.perf_counter() - start
        final = fn.resized(args.episodes)
        start = time.perf_counter()
        stats = jax.device_get(jax.block_until_ready(final(params, keys)))
        play_s = time.perf_counter() - start
        results[way] = stats
        lengths = np.asarray(stats.lengths)
        # loop steps: a batch call runs to its longest episode; a refilled slot plays its episodes back to back
        if way == "batches":
            steps = lengths.reshape(len(specs), n_dev, final.calls, args.slots).max(-1).sum(-1).max(-1)
        else:
            steps = np.array([max(lengths[t, d * per_device:(d + 1) * per_device].sum() / args.slots
                                  for d in range(n_dev)) for t in range(len(specs))])
        row = {"way": way, "calls": final.calls, "compile_s": round(compile_s, 1), "play_s": round(play_s, 1),
               "episodes": int(lengths.size), "mean_return": float(np.mean(stats.returns)),
               "mean_length": float(lengths.mean()), "loop_steps_longest_task": int(steps.max())}
        rows.append(row)
        release_freed_memory()
        print(f"{way:8s} {final.calls:3d} calls: compile {compile_s:5.1f} s, play {play_s:6.1f} s "
              f"({row['episodes']} episodes), return {row['mean_return']:.4f}, length {row['mean_length']:.1f}, "
              f"loop steps of the longest task about {row['loop_steps_longest_task']}", flush=True)
    a, b = results["batches"], results["refill"]
    differ = int(np.sum((np.asarray(a.returns) != np.asarray(b.returns)) | (np.asarray(a.lengths) != np.asarray(b.lengths))))
    speedup = rows[0]["play_s"] / rows[1]["play_s"]
    print(f"play speed-up refill vs batches: {speedup:.2f}x; episodes that differ: {differ} of {rows[0]['episodes']}")
    out = args.out or OUT / f"eval_refill_{args.tasks}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"jax": jax.__version__, "devices": n_dev, "slots": args.slots, "episodes": args.episodes,
            "run_dir": str(args.run_dir), "which": args.which, "matmul_dtype": algo.spec["network"]["matmul_dtype"]}
    out.write_text(json.dumps({"meta": meta, "rows": rows, "speedup": speedup, "differing_episodes": differ},
                              indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
