"""Cost of one update per algorithm and stage on a real task set: seconds, XLA's FLOPs, achieved GFLOP/s.

Why: on SMAX, HiSSD's update took 6-7x as long as BC-t's (3.6-4.6 s against 0.85 s on 2 cores). Is
that arithmetic (HiSSD unrolls four entity transformers over the sequence and runs a fifth over every
step: planner, controller, value, target value, task encoder) or waste (a slow op, poor fusion)? If
seconds per update follow XLA's FLOP count, the ratio is the method's cost; if the GFLOP/s of one
algorithm falls well below the others', something in it runs badly.

Each algorithm runs as ``mtmarl.train`` runs it (its yaml, the set's vaults, ``Learner.run`` with the
training config's updates per call, all local devices); FLOPs are the matmul FLOPs of one update's jaxpr
(:func:`jaxpr_flops`, loops counted as often as they run). One process, algorithms one after another.

    python benchmarks/algo_step.py --tasks smax_stalker_zealot --quality expert \\
        --algos bc_t hissd --out benchmarks/results/algo_step_smax_stalker_zealot.json
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
from omegaconf import OmegaConf  # noqa: E402

from mtmarl import tasks as task_registry  # noqa: E402
from mtmarl.experiments.config import compose_train  # noqa: E402
from mtmarl.training.data import build_buffers, load_task_data  # noqa: E402
from mtmarl.training.engine import Carry, Learner, make_update_step  # noqa: E402
from mtmarl.training.loop import algo_for_data  # noqa: E402

from costs import jaxpr_flops  # noqa: E402  (benchmarks/costs.py: this script's folder is on sys.path)


def stage_flops(algo, span, learner) -> float:
    """Matmul FLOPs of one update of ``span``'s stage (sampling included), one device, no pmap."""
    step = make_update_step(span.stage, learner.sampler_of(span.stage), 1, axis_name=None)
    buffers = learner.buffers
    state = jax.eval_shape(algo.init, jax.ShapeDtypeStruct((2,), jnp.uint32),
                           buffers.decode_obs(buffers.obs[:1, : learner.sampler.seq_len]))
    carry = Carry(state, jax.ShapeDtypeStruct((2,), jnp.uint32), jax.ShapeDtypeStruct((), jnp.int32))
    return jaxpr_flops(jax.make_jaxpr(step)(carry, buffers).jaxpr)


def bench_algo(name: str, tasks: str, quality: str, data, task_set, calls: int, variant: str = "") -> list[dict]:
    """``variant``: comma-separated config overrides of this measurement (e.g. ``network.unroll_time=false``)."""
    overrides = [f"+algo={name}", f"+tasks={tasks}", f"data.quality={quality}", *filter(None, variant.split(","))]
    cfg = OmegaConf.to_container(compose_train(overrides), resolve=True)
    algo = algo_for_data(cfg, data, task_set.env_spec)
    seq_len = max([algo.sampler.seq_len] + [s.sampler.seq_len for s in algo.stages if s.sampler is not None])
    buffers = build_buffers(task_set, data, seq_len, "train")
    K = int(cfg["training"]["updates_per_call"])
    total = K * 4 * len(algo.stages)
    learner = Learner(algo, buffers, K, updates=total)
    carry, rows = learner.init(0), []
    for span in learner.plan:
        carry = carry._replace(step=np.asarray(span.start, np.int32))
        t0 = time.perf_counter()
        carry, _ = learner.run(carry)  # compile + first call
        first = time.perf_counter() - t0
        times = []
        for _ in range(calls):
            carry = carry._replace(step=np.asarray(span.start, np.int32))
            t0 = time.perf_counter()
            carry, metrics = learner.run(carry)
            times.append((time.perf_counter() - t0) / K)
        flops = stage_flops(algo, span, learner)
        sec = statistics.median(times)
        rows.append(dict(algo=name, variant=variant, stage=span.stage.name, seconds_per_update=sec, gflop_per_update=flops / 1e9,
                         gflops=flops / 1e9 / sec, first_call_s=first, updates_per_call=K,
                         batch=learner.sampler_of(span.stage).batch_size, seq_len=learner.sampler_of(span.stage).seq_len,
                         devices=learner.num_devices, finite=bool(all(np.isfinite(v) for v in metrics.values()))))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="smax_stalker_zealot")
    parser.add_argument("--quality", default="expert")
    parser.add_argument("--algos", nargs="+", default=["bc_t", "hissd"])
    parser.add_argument("--calls", type=int, default=2, help="timed calls per stage (median)")
    parser.add_argument("--variants", nargs="+", default=[""],
                        help="config variants measured one after another in this process, each a comma-separated "
                             "override list ('' = the defaults), e.g. --variants network.unroll_time=false ''")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    cfg = OmegaConf.to_container(compose_train([f"+algo={args.algos[0]}", f"+tasks={args.tasks}",
                                                f"data.quality={args.quality}"]), resolve=True)
    task_set = task_registry.from_config(cfg["tasks"])
    data = load_task_data(task_set, cfg["data"]["root"], cfg["data"]["quality"], False, 1.0)
    rows = [r for name in args.algos for v in args.variants
            for r in bench_algo(name, args.tasks, args.quality, data, task_set, args.calls, v)]
    base = rows[0]
    print(f"\n| algorithm | variant | stage | s / update | first call s | GFLOP / update | GFLOP/s | time vs {base['algo']} "
          f"| FLOPs vs {base['algo']} |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['algo']} | {r['variant'] or 'defaults'} | {r['stage']} | {r['seconds_per_update']:.3f} | "
              f"{r['first_call_s']:.1f} | {r['gflop_per_update']:.1f} | "
              f"{r['gflops']:.1f} | {r['seconds_per_update'] / base['seconds_per_update']:.2f}x | "
              f"{r['gflop_per_update'] / base['gflop_per_update']:.2f}x |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"command": "python benchmarks/algo_step.py " + " ".join(argv or []),
                                        "machine": platform.machine(), "cpus": os.cpu_count(),
                                        "jax": jax.__version__, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    import sys
    raise SystemExit(main(sys.argv[1:]))
