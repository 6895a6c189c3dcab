"""RSS around one task set's evaluation program: compile + run, ``malloc_trim``, a second run.

    python benchmarks/eval_memory_probe.py <training run dir> [--tasks rware_15] [--episodes 16]

On the main job's run (rware_15, 16 episodes, 2 busy cores) RSS is about 0.8 GB after restoring, 2.3 GB after
the first evaluation (compile included), 1.5 GB after trimming and 1.6 GB after the second evaluation. What the
trim returns is heap the compile freed and glibc kept mapped.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def rss_mb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) // 1024
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--tasks", default="rware_15")
    parser.add_argument("--episodes", type=int, default=16)
    args = parser.parse_args(argv)

    from mtmarl import tasks
    from mtmarl.memory import release_freed_memory
    from mtmarl.training.loop import PeriodicEvaluator
    from mtmarl.training.restore import load_trained

    policy, params, _, _ = load_trained(args.run_dir, "latest")
    evaluator = PeriodicEvaluator(tasks.load(args.tasks), ["train", "test"], policy, args.episodes, 0, {}, None)
    print(f"restored: {rss_mb()} MB", flush=True)
    for step in (500, 1000):
        start = time.time()
        evaluator(params, step, ["train", "test"])
        print(f"evaluation at {step} ({time.time() - start:.0f} s): {rss_mb()} MB", flush=True)
        release_freed_memory()
        print(f"after malloc_trim: {rss_mb()} MB", flush=True)


if __name__ == "__main__":
    main()
