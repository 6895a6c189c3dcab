"""Learner throughput: updates/s, samples/s, sampling share and FLOP/s vs this machine's matmul limit.

Why: the speed target of the learner is stated against og-marl's public Oryx
train loop (embed 128, 1 block, 4 heads, B=64, T=20: 4.0 / 2.1 / 1.0 updates/s
at 2 / 4 / 8 agents, ~18% of a 170-193 GFLOP/s fp32 matmul limit, measured on
this 2-core machine when idle) and as a share of the matmul limit at embed 512.
Absolute times move with machine load, so every run also measures the dense
fp32 matmul rate *in the same process, interleaved with the learner timings*;
the og-marl column is rescaled by (matmul rate now / 181.5 GFLOP/s idle).

For each setting the real engine (``training.engine.Learner``: sampling inside
the compiled ``scan`` of updates, ``pmap`` over all local devices) runs MT Oryx
on synthetic buffers of the right shapes, timed through ``Learner.run`` with as
many updates per call as ``mtmarl.train`` runs (``training.updates_per_call``,
or ``--updates-per-call``): the same compiled loop and per-call host work as
training. (Earlier versions ran 5 updates per call, which on a GPU is mostly
per-call overhead and read about 3x slower than the training loop.) FLOPs per update come from XLA's cost
analysis of one update compiled on its own (the retention chunk loop is
unrolled, so nothing is counted once for many iterations); sampling share is
the time of the sampler alone over the time of a whole update.

    python benchmarks/train_step.py                  # the table of the issue (~15-25 min on 2 cores)
    python benchmarks/train_step.py --quick          # 2 and 8 agents, T=20, embed 128, fp32 + bf16
    python benchmarks/train_step.py --agents 8 --embed 512 --dtype bfloat16
    python benchmarks/train_step.py --agents 4 --embed 128 --dtype float32 --population 1 3 8
                                                     # seeds side by side (training.population): samples/s of all

With ``--population S`` the learner trains S seeds in one program (``training.population``): updates/s is per
program (every seed does that many), samples/s and FLOP/s count all S seeds.
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

from mtmarl.algos.registry import build as make_algo  # noqa: E402
from mtmarl.configs import CONFIG_DIR  # noqa: E402
from mtmarl.data.batching import make_buffers, sample  # noqa: E402
from mtmarl.networks.sable import load_preset  # noqa: E402
from mtmarl.training.engine import Carry, Learner, make_update_step  # noqa: E402

from costs import scaling_fits  # noqa: E402  (benchmarks/costs.py: this script's folder is on sys.path)

OUT = Path(__file__).resolve().parent / "results" / "train_step.json"
COSTS_OUT = OUT.with_name("train_step_costs.json")
OGMARL_UPS = {2: 4.0, 4: 2.1, 8: 1.0}   # og-marl Oryx, idle machine (guide)
IDLE_MATMUL = 181.5                      # GFLOP/s, middle of the guide's 170-193
OBS, ACTIONS, STEPS = 66, 5, 4000        # RWARE-sized observations and actions


def synthetic_buffers(n_agents: int, seq_len: int, tasks: int = 3):
    """Random data with the shapes (and episode boundaries) of RWARE vaults."""
    rng = np.random.default_rng(0)
    data = [dict(obs=rng.random((STEPS, n_agents, OBS), np.float32),
                 actions=rng.integers(0, ACTIONS, (STEPS, n_agents)),
                 rewards=rng.random(STEPS).astype(np.float32),
                 terminals=np.arange(STEPS) % 500 == 499, truncations=np.zeros(STEPS, bool),
                 legals=np.ones((STEPS, n_agents, ACTIONS), bool)) for _ in range(tasks)]
    return make_buffers(data, seq_len)


def _square(a):
    return a @ a


_SINGLE, _MULTI = jax.jit(_square), jax.pmap(_square)  # built once: every call reuses the compiled programs


def matmul_rate(seconds: float = 1.0) -> float:
    """Dense fp32 GFLOP/s now: the best of one big jit matmul and one per device under pmap."""
    n = 2048
    a = jnp.ones((n, n), jnp.float32)
    single, multi = _SINGLE, _MULTI
    d = jax.local_device_count()
    ad = jnp.ones((d, n, n), jnp.float32)
    best = 0.0
    for f, x, mult in ((single, a, 1), (multi, ad, d)):
        f(x).block_until_ready()
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 2:
            f(x).block_until_ready()
            reps += 1
        best = max(best, mult * reps * 2 * n ** 3 / (time.perf_counter() - t0) / 1e9)
    return best


def benchmarked_algo(seq_len: int, embed: int, dtype: str, batch: int, chunk_size=None):
    """MT Oryx on the ``base`` Sable preset at one setting: what both the timings and ``--costs-only`` measure."""
    net = load_preset("base", embed_dim=embed, matmul_dtype=dtype, **({"chunk_size": chunk_size} if chunk_size else {}))
    return make_algo("mt_oryx", {"batch_size": batch, "seq_len": seq_len}, net, ACTIONS)


def update_costs(algo, buffers, sampler) -> dict:
    """XLA's static costs of one update on one device: FLOPs, bytes accessed (its cost analysis) and the
    program's temporary buffers (its memory analysis)."""
    step = make_update_step(algo.stages[0], sampler, 1, axis_name=None)
    state = jax.eval_shape(algo.init, jax.ShapeDtypeStruct((2,), jnp.uint32), buffers.decode_obs(buffers.obs[:1, :1]))
    carry = Carry(state, jax.ShapeDtypeStruct((2,), jnp.uint32), jax.ShapeDtypeStruct((), jnp.int32))
    compiled = jax.jit(step).lower(carry, buffers).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return dict(flops=float(cost["flops"]), bytes_accessed=float(cost.get("bytes accessed", float("nan"))),
                temp_bytes=float(compiled.memory_analysis().temp_size_in_bytes))


def static_costs(settings, batch: int, chunk_size) -> list[dict]:
    """``--costs-only``: each setting's update compiled, not run; least-squares exponents of its FLOPs, bytes
    accessed and temporary bytes over agents x context. Why: whether a cost that grows faster than the work
    (an exponent above 1) is in the program itself or in the machine running it."""
    rows = []
    for n, t, e, d in settings:
        algo = benchmarked_algo(t, e, d, batch, chunk_size)
        r = dict(agents=n, seq_len=t, embed=e, matmul_dtype=d, batch=batch,
                 **update_costs(algo, synthetic_buffers(n, t), algo.sampler))
        print(f"{n:>3} {t:>3} {e:>4} {d:>8}  GFLOP {r['flops'] / 1e9:8.2f}  GB accessed {r['bytes_accessed'] / 1e9:7.2f}  "
              f"temp MB {r['temp_bytes'] / 1e6:8.1f}", flush=True)
        rows.append(r)
    for d, e in sorted({(r["matmul_dtype"], r["embed"]) for r in rows}):
        sel = [r for r in rows if (r["matmul_dtype"], r["embed"]) == (d, e)]
        x = np.log([r["agents"] * r["seq_len"] for r in sel])
        for key in ("flops", "bytes_accessed", "temp_bytes"):
            if len(set(x)) > 1:
                b = np.polyfit(x, np.log([r[key] for r in sel]), 1)[0]
                print(f"{key} ~ (agents x context)^{b:.2f}  [{d}, embed {e}]")
    return rows


def sampler_seconds(buffers, sampler, reps: int = 20) -> float:
    def many(key):
        def body(c, i):
            b = sample(buffers, jax.random.fold_in(key, i), i, sampler)
            return c + b.obs[0, 0, 0, 0] + b.actions[0, 0, 0], None
        return jax.lax.scan(body, 0.0, jnp.arange(reps))[0]
    f = jax.jit(many)
    f(jax.random.PRNGKey(0)).block_until_ready()
    t0 = time.perf_counter()
    f(jax.random.PRNGKey(1)).block_until_ready()
    return (time.perf_counter() - t0) / reps


def trainer_updates_per_call() -> int:
    """``training.updates_per_call`` of the default training config: what ``mtmarl.train`` runs per call."""
    import yaml

    return int(yaml.safe_load((CONFIG_DIR / "training" / "default.yaml").read_text())["updates_per_call"])


def bench_setting(n_agents, seq_len, embed, dtype, batch, seconds, updates_per_call, calls_per_rep=1, chunk_size=None,
                  population=1):
    """Updates/s of ``Learner.run``, the call ``mtmarl.train`` makes (host carry in and out, metrics pulled),
    ``updates_per_call`` updates per call as the trainer's config sets it; so per-call costs count as in
    training and are not inflated by short calls (5 updates per call read about 3x slow on a GPU)."""
    algo = benchmarked_algo(seq_len, embed, dtype, batch, chunk_size)
    buffers = synthetic_buffers(n_agents, seq_len)
    sampler = algo.sampler
    K = updates_per_call
    learner = Learner(algo, buffers, updates_per_call=K, population=population)
    carry = learner.init(0)
    t0 = time.perf_counter()
    carry, _ = learner.run(carry)  # compile + first call
    compile_s = time.perf_counter() - t0
    flops = update_costs(algo, buffers, sampler)["flops"] * population
    samp = sampler_seconds(buffers, sampler)
    rates, mm = [], []
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end or len(rates) < 3:
        mm.append(matmul_rate(0.6))
        t0 = time.perf_counter()
        for _ in range(calls_per_rep):
            carry, _ = learner.run(carry)
        rates.append(calls_per_rep * K / (time.perf_counter() - t0))
    ups, limit = statistics.median(rates), statistics.median(mm)
    row = dict(agents=n_agents, seq_len=seq_len, embed=embed, matmul_dtype=dtype, batch=batch, population=population,
               devices=learner.num_devices, updates_per_call=K, updates_per_s=ups, samples_per_s=ups * batch * population,
               gflop_per_update=flops / 1e9, gflops=ups * flops / 1e9, matmul_limit_gflops=limit,
               share_of_limit=ups * flops / 1e9 / limit, sampling_share=samp * ups,
               compile_s=compile_s, params=algo.net.param_count(carry.state.params) // population)
    # og-marl's rates are idle 2-core CPU rates: rescaling them by a GPU's matmul rate means nothing (on an H100 it
    # printed 0.35x, where og-marl measured on an H100 ran 434 updates/s at 4 agents against our 334)
    on_cpu = learner.devices[0].platform == "cpu"
    if on_cpu and n_agents in OGMARL_UPS and seq_len == 20 and embed == 128 and batch == 64 and population == 1:
        og_now = OGMARL_UPS[n_agents] * limit / IDLE_MATMUL
        row.update(ogmarl_updates_per_s_scaled=og_now, speedup_vs_ogmarl=ups / og_now)
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--agents", type=int, nargs="+", default=[2, 4, 8, 12])
    p.add_argument("--seq-len", type=int, nargs="+", default=[20, 40, 80])
    p.add_argument("--embed", type=int, nargs="+", default=[128, 512])
    p.add_argument("--dtype", nargs="+", default=["float32", "bfloat16"])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seconds", type=float, default=20.0, help="timing per setting")
    p.add_argument("--updates-per-call", type=int, default=None,
                   help="updates per compiled call (default: training.updates_per_call of mtmarl/configs/training/default.yaml)")
    p.add_argument("--chunk-size", type=int, default=None, help="retention chunk (timesteps; default: the preset's)")
    p.add_argument("--population", type=int, nargs="+", default=[1],
                   help="seeds trained side by side in one program (training.population), each setting at each")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--costs-only", action="store_true",
                   help="compile each setting and print XLA's FLOPs, bytes accessed and temp bytes; no timing")
    p.add_argument("--out", type=Path, default=None,
                   help=f"default {OUT.name} ({COSTS_OUT.name} with --costs-only) in {OUT.parent}")
    a = p.parse_args()
    if a.quick:
        a.agents, a.seq_len, a.embed, a.seconds = [2, 8], [20], [128], 8.0
    # The grid: agents x dtype at T=20/embed 128; T sweep at 8 agents; embed 512 at 8 agents.
    settings = [(n, 20, 128, d) for n in a.agents for d in a.dtype if 128 in a.embed and 20 in a.seq_len]
    settings += [(8, t, 128, d) for t in a.seq_len if t != 20 for d in a.dtype if 8 in a.agents]
    settings += [(8, 20, e, d) for e in a.embed if e != 128 for d in a.dtype if 8 in a.agents]
    if not settings:
        settings = [(n, t, e, d) for n in a.agents for t in a.seq_len for e in a.embed for d in a.dtype]
    a.out = a.out or (COSTS_OUT if a.costs_only else OUT)
    if a.costs_only:
        rows = static_costs(settings, a.batch, a.chunk_size)
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"jax": jax.__version__, "costs": rows}, indent=1))
        print(f"wrote {a.out}")
        return
    rows = []
    print(f"{'N':>3} {'T':>3} {'E':>4} {'dtype':>8} {'S':>2} {'upd/s':>7} {'samp/s':>7} {'GFLOP/up':>8} "
          f"{'GFLOP/s':>8} {'limit':>6} {'%limit':>6} {'sample%':>7} {'vs og':>6}")
    for n, t, e, d, pop in [(*setting, pop) for setting in settings for pop in a.population]:
        r = bench_setting(n, t, e, d, a.batch, a.seconds, a.updates_per_call or trainer_updates_per_call(),
                          chunk_size=a.chunk_size, population=pop)
        rows.append(r)
        vs = f"{r['speedup_vs_ogmarl']:.2f}x" if "speedup_vs_ogmarl" in r else "-"
        print(f"{n:>3} {t:>3} {e:>4} {d:>8} {pop:>2} {r['updates_per_s']:>7.2f} {r['samples_per_s']:>7.0f} "
              f"{r['gflop_per_update']:>8.2f} {r['gflops']:>8.1f} {r['matmul_limit_gflops']:>6.0f} "
              f"{100 * r['share_of_limit']:>5.1f}% {100 * r['sampling_share']:>6.1f}% {vs:>6}", flush=True)
    fits = scaling_fits(rows)
    for f in fits:
        print(f"cost ~ ({f['axis']})^{f['exponent']:.2f}  [{f['dtype']}, embed {f['embed']}, {f['points']} points: "
              f"{f['range']}]")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                                 "devices": jax.local_device_count(), "jax": jax.__version__,
                                 "rows": rows, "scaling": fits}, indent=1))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
