"""The set evaluator with every task padded to the set's agent count vs each task at its own.

    python benchmarks/eval_agent_groups.py <training run dir> [--tasks rware_15] [--batch 16] [--dtype float32]

Both ways play the same trained policy, keys and episode count in one process, one after the other:
``padded`` builds every task as ``TaskSet.padded`` (one group of the set's largest agent count, the
earlier evaluator), ``own`` as ``TaskSet.evaluation_env`` (each task its own agents, grouped by
agent count in the one program). Reports compile seconds, seconds of one compiled call (``batch`` episodes
per task per device), mean return and length. The two ways draw agent orders and action samples from
different key splits (the padded agents take part in the draws), so returns agree in distribution, not
per episode. Writes ``results/eval_agent_groups_<set>.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

OUT = Path(__file__).parent / "results"


def memory_mb() -> dict[str, int]:
    """This process's resident memory now and its peak so far (``/proc/self/status``), in MB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {k: int(fields[f].split()[0]) // 1024 for k, f in (("rss_mb", "VmRSS"), ("peak_rss_mb", "VmHWM")) if f in fields}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--tasks", default="rware_15")
    parser.add_argument("--batch", type=int, default=16, help="episodes per task per device in one call")
    parser.add_argument("--dtype", default=None, help="matmul dtype to play with (default: the run's)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import numpy as np

    from mtmarl import tasks
    from mtmarl.algos import registry
    from mtmarl.evaluation.rollout import make_task_set_evaluator, task_key
    from mtmarl.runtime import enable_compilation_cache
    from mtmarl.memory import release_freed_memory
    from mtmarl.training.policy import make_policy
    from mtmarl.training.restore import load_run

    enable_compilation_cache()
    algo, params, _, _ = load_run(args.run_dir, "latest")
    if args.dtype:
        spec = json.loads((Path(args.run_dir) / "algo.json").read_text())
        spec["network"]["matmul_dtype"] = args.dtype
        algo = registry.from_spec(spec)
    policy = make_policy(algo)
    task_set = tasks.load(args.tasks)
    specs = [s for split in ("train", "test") for s in task_set.split(split)]
    keys = jnp.stack([task_key(0, s) for s in specs])
    n_dev = jax.local_device_count()
    rows = []
    for way, build in (("padded", task_set.padded), ("own", task_set.evaluation_env)):
        envs = [build(s) for s in specs]
        fn = make_task_set_evaluator(envs, policy, args.batch * n_dev, None, args.batch)
        start = time.perf_counter()
        fn.compile(params, keys)
        compile_s = time.perf_counter() - start
        start = time.perf_counter()
        stats = jax.device_get(jax.block_until_ready(fn(params, keys)))
        call_s = time.perf_counter() - start
        row = {"way": way, "groups": sorted({e.num_agents for e in envs}), "compile_s": compile_s,
               "call_s": call_s, "episodes": int(np.size(stats.returns)),
               "mean_return": float(np.mean(stats.returns)),
               "stderr": float(np.std(stats.returns) / np.sqrt(np.size(stats.returns))),
               "mean_length": float(np.mean(stats.lengths)), "max_length": int(np.max(stats.lengths)),
               "agent_decodes": int(sum(e.num_agents for e in envs)), **memory_mb()}
        release_freed_memory()
        rows.append(row)
        print(f"{way:6s} agent groups {row['groups']}: compile {compile_s:5.1f} s, one call {call_s:5.1f} s "
              f"({row['episodes']} episodes), return {row['mean_return']:.3f} ± {row['stderr']:.3f}, "
              f"length {row['mean_length']:.0f} (max {row['max_length']}), RSS {row.get('rss_mb')} MB, "
              f"peak so far {row.get('peak_rss_mb')} MB", flush=True)
    print(f"call speed-up own vs padded: {rows[0]['call_s'] / rows[1]['call_s']:.2f}x; agents decoded per step "
          f"{rows[1]['agent_decodes']} vs {rows[0]['agent_decodes']}")
    out = args.out or OUT / f"eval_agent_groups_{args.tasks}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"jax": jax.__version__, "devices": n_dev, "batch": args.batch, "run_dir": str(args.run_dir),
            "matmul_dtype": algo.spec["network"]["matmul_dtype"]}
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
