"""Cost models the benchmarks report: the cost exponent of the learner step and a matmul FLOP count.

:func:`scaling_fits` fits seconds per update ~ (agents x context)^b; :func:`jaxpr_flops` counts matmul FLOPs
of a jaxpr with every loop counted as often as it runs (``benchmarks/train_step.py``, ``benchmarks/algo_step.py``).
"""

from __future__ import annotations

import numpy as np


def jaxpr_flops(jaxpr) -> float:
    """Matmul FLOPs (2 per multiply-add of every ``dot_general``) of a closed jaxpr, loops counted as often
    as they run: a ``scan`` body times its length (XLA's cost analysis counts a loop body once, which
    undercounts the recurrent entity agents 20x at T 20); ``cond`` takes its costliest branch; a
    ``while`` body is counted once (none in these updates but the evaluator's)."""
    total = 0.0
    for eqn in jaxpr.eqns:
        name, params = eqn.primitive.name, eqn.params
        if name == "dot_general":
            (lc, _), _ = params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            total += 2.0 * np.prod(eqn.outvars[0].aval.shape) * np.prod([lhs[i] for i in lc])
        elif name == "scan":
            total += params["length"] * jaxpr_flops(params["jaxpr"].jaxpr)
        elif name == "cond":
            total += max(jaxpr_flops(b.jaxpr) for b in params["branches"])
        else:
            for value in params.values():
                for sub in (value if isinstance(value, (list, tuple)) else [value]):
                    inner = getattr(sub, "jaxpr", sub)
                    if hasattr(inner, "eqns"):
                        total += jaxpr_flops(inner)
    return total


def scaling_fits(rows) -> list[dict]:
    """Least-squares exponent b of seconds per update ~ x^b, x = agents x context (N * T), per dtype and embed.

    Why: cost should grow at most linearly in agents x context; b <= 1 says it does. Over agents
    (at one T) and over T (at one N) the same fit is reported too: retention inside a chunk is quadratic in
    its N * chunk tokens, so agents can cost more than context does.
    """
    out = []
    for dtype in sorted({r["matmul_dtype"] for r in rows}):
        for embed in sorted({r["embed"] for r in rows}):
            sel = [r for r in rows if r["matmul_dtype"] == dtype and r["embed"] == embed
                   and r.get("population", 1) == 1]
            axes = {"agents x context": sel,
                    "agents": [r for r in sel if r["seq_len"] == 20],
                    "context": [r for r in sel if r["agents"] == 8]}
            for axis, pts in axes.items():
                x = [r["agents"] * r["seq_len"] for r in pts]
                if len(set(x)) < 2:
                    continue
                b = float(np.polyfit(np.log(x), -np.log([r["updates_per_s"] for r in pts]), 1)[0])
                out.append(dict(axis=axis, dtype=dtype, embed=embed, exponent=b, points=len(pts),
                                range=f"N*T {min(x)}-{max(x)}"))
    return out
