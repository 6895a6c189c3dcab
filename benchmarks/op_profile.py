"""Where an update's time goes, per source operation, and which operations grow faster than the work.

Why: cost should grow at most linearly in agents x context. XLA's FLOP count of the update grows
linearly (``train_step.py --costs-only``) while its time does not, so the question is which of the compiled
program's operations take more time per token in the larger setting. This script runs the MT Oryx learner
of ``train_step.py`` (same algorithm, synthetic buffers, ``Learner.run`` on one device) at two or more
settings under ``jax.profiler``, reads the time of every executed XLA operation from the trace, and maps each
one to the JAX operation it came from (the ``op_name`` that XLA keeps in the optimised HLO, read from an HLO
dump of the same process). Fusions are named differently in differently sized programs, so the comparison is
made per source operation (``jvp(SableModule)/encode/enc_0/ret/...``), not per fusion.

For each source operation it prints the time per update at each setting and its *excess* in the last setting:
time minus what linear growth from the first setting predicts (tokens ratio x first time). The excesses sum to
the whole program's departure from linear.

    python benchmarks/op_profile.py --settings 8x20 8x80            # ~3 min on 2 cores
    python benchmarks/op_profile.py --settings 2x20 12x20 --top 20 --out results/op_profile_agents.json
"""

from __future__ import annotations

import os
import sys
import tempfile

DUMP = tempfile.mkdtemp(prefix="mtmarl-op-profile-")
# The HLO dump must be asked for before the backend starts; one device (no pmap axis across two programs).
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_dump_to={DUMP} --xla_dump_hlo_as_text".strip()

import argparse  # noqa: E402
import collections  # noqa: E402
import glob  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
from jax._src.profiler import ProfileData  # noqa: E402  (jax's own reader of the trace it writes)

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_step  # noqa: E402

from mtmarl.training.engine import Learner  # noqa: E402

# Thunks that only wait for or wrap others: their time is already in the operations inside them.
WRAPPERS = ("ThunkExecutor", "SlinkyThreadPool", "while", "conditional", "call")
_INSTR = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = \S+ [\w\-]+\((.*)$", re.M)
_OP_NAME = re.compile(r'op_name="([^"]*)"')


def source_ops(hlo_text: str) -> dict[str, str]:
    """HLO instruction name -> the JAX operation it was lowered from, shortened to the model path."""
    out = {}
    for m in _INSTR.finditer(hlo_text):
        op = _OP_NAME.search(m.group(2))
        name = op.group(1) if op else "?"
        name = re.sub(r"^jit\(_fun\)/(while/body/)?(closed_call/)?", "", name).replace("SableModule.", "")
        out[m.group(1)] = name
    return out


def newest_program_text(before: set[str]) -> str:
    """The optimised HLO of the largest program compiled since ``before`` (the learner's update loop)."""
    files = [f for f in glob.glob(f"{DUMP}/*after_optimizations.txt") if f not in before]
    return Path(max(files, key=os.path.getsize)).read_text()


def profile_setting(n_agents: int, seq_len: int, embed: int, dtype: str, batch: int, calls: int) -> dict:
    """Seconds per update of each source operation (summed over both of XLA's threads) at one setting."""
    algo = train_step.benchmarked_algo(seq_len, embed, dtype, batch)
    learner = Learner(algo, train_step.synthetic_buffers(n_agents, seq_len),
                      updates_per_call=train_step.trainer_updates_per_call(), num_devices=1)
    before = set(glob.glob(f"{DUMP}/*"))
    carry = learner.init(0)
    carry, _ = learner.run(carry)  # compile
    names = source_ops(newest_program_text(before))
    carry, _ = learner.run(carry)
    trace_dir = tempfile.mkdtemp(prefix="trace-", dir=DUMP)
    jax.profiler.start_trace(trace_dir)
    t0 = time.perf_counter()
    for _ in range(calls):
        carry, _ = learner.run(carry)
    wall = time.perf_counter() - t0
    jax.profiler.stop_trace()
    updates = calls * learner.updates_per_call
    per_op: collections.Counter = collections.Counter()
    trace = glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True)[0]
    for plane in ProfileData.from_file(trace).planes:
        for line in plane.lines:
            if not line.name.startswith("tf_XLAEigen"):  # XLA:CPU's threads that run the program's operations
                continue
            for ev in line.events:
                if not ev.name.startswith(WRAPPERS):
                    per_op[names.get(ev.name, "(unnamed) " + re.sub(r"\.\d+$", "", ev.name))] += ev.duration_ns
    return dict(agents=n_agents, seq_len=seq_len, tokens=n_agents * seq_len, wall_s_per_update=wall / updates,
                op_s_per_update={k: v / 1e9 / updates for k, v in per_op.items()})


def excess_table(first: dict, last: dict, top: int) -> list[dict]:
    """Per source operation: seconds per update at both settings and the last one's excess over linear growth."""
    scale = last["tokens"] / first["tokens"]
    a, b = first["op_s_per_update"], last["op_s_per_update"]
    rows = [dict(op=k, first_s=a.get(k, 0.0), last_s=b.get(k, 0.0), excess_s=b.get(k, 0.0) - scale * a.get(k, 0.0))
            for k in set(a) | set(b)]
    return sorted(rows, key=lambda r: -r["excess_s"])[:top]


def group_totals(setting: dict) -> dict[str, float]:
    """Seconds per update by coarse part of the model: the path up to the layer (encode/enc_0/ret, ...)."""
    out: collections.Counter = collections.Counter()
    for k, v in setting["op_s_per_update"].items():
        path = re.sub(r"^(transpose\()?jvp\((\w+)\)\)?/", "", k)
        parts = [p for p in path.split("/") if p and not p.startswith(("closed_call", "jit("))]
        out["/".join(parts[:3]) if parts else k] += v
    return dict(out)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--settings", nargs="+", default=["8x20", "8x80"], help="agents x context, e.g. 8x20 8x80")
    p.add_argument("--embed", type=int, default=128)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--calls", type=int, default=3, help="profiled Learner.run calls per setting")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "op_profile.json")
    args = p.parse_args()
    settings = []
    for s in args.settings:
        try:
            n, t = (int(x) for x in s.lower().split("x"))
        except ValueError:
            p.error(f"--settings: {s!r} is not <agents>x<context>, e.g. 8x20")
        settings.append(profile_setting(n, t, args.embed, args.dtype, args.batch, args.calls))
        r = settings[-1]
        print(f"{n} agents x {t} steps: {r['wall_s_per_update']:.3f} s/update wall, "
              f"{sum(r['op_s_per_update'].values()):.3f} s/update in XLA's operations (both threads)", flush=True)
    first, last = settings[0], settings[-1]
    scale = last["tokens"] / first["tokens"]
    tot_a, tot_b = (sum(s["op_s_per_update"].values()) for s in (first, last))
    print(f"\ntokens x{scale:g}: operations' time x{tot_b / tot_a:.2f}, wall x"
          f"{last['wall_s_per_update'] / first['wall_s_per_update']:.2f}; excess over linear "
          f"{tot_b - scale * tot_a:.3f} s/update\n")
    print(f"{'excess ms':>9} {'first ms':>9} {'last ms':>9}  source operation")
    rows = excess_table(first, last, args.top)
    for r in rows:
        print(f"{1e3 * r['excess_s']:9.1f} {1e3 * r['first_s']:9.1f} {1e3 * r['last_s']:9.1f}  {r['op'][-100:]}")
    ga, gb = group_totals(first), group_totals(last)
    print(f"\n{'excess ms':>9} {'first ms':>9} {'last ms':>9}  part of the model")
    for k in sorted(set(ga) | set(gb), key=lambda k: -(gb.get(k, 0) - scale * ga.get(k, 0)))[:15]:
        print(f"{1e3 * (gb.get(k, 0) - scale * ga.get(k, 0)):9.1f} {1e3 * ga.get(k, 0):9.1f} {1e3 * gb.get(k, 0):9.1f}  {k}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(dict(embed=args.embed, dtype=args.dtype, batch=args.batch, settings=settings,
                                        top_excess=rows, parts={"first": ga, "last": gb}), indent=1))
    print(f"wrote {args.out}")
    shutil.rmtree(DUMP, ignore_errors=True)


if __name__ == "__main__":
    main()
