"""Our MAPPO's learning curve beside JaxMARL's own on one SMAX map (``run.py``): training return against
env steps, each smoothed over 1M steps, plus a table of both at every 1M steps.

    python experiment_scripts/jaxmarl_anchor/plot.py --ours vault_data/logs/smax/5m_vs_6m.jsonl \\
        --jaxmarl results/smax_mappo_10m/jaxmarl_5m_vs_6m.jsonl --out results/smax_mappo_10m/5m_vs_6m_vs_jaxmarl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def read(path: Path, step_key: str, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if all(r.get(k) is not None for k in (step_key, *keys))]
    return {"steps": np.array([r[step_key] for r in rows], float), **{k: np.array([r[k] for r in rows]) for k in keys}}


def window_means(steps: np.ndarray, values: np.ndarray, edges: np.ndarray) -> list[float | None]:
    """Mean of the values logged in each window (edges[i-1], edges[i]]."""
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (steps > lo) & (steps <= hi)
        out.append(float(values[sel].mean()) if sel.any() else None)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ours", type=Path, required=True, help="mtmarl.collect's per-chunk log (jsonl)")
    ap.add_argument("--jaxmarl", type=Path, required=True, help="run.py's log (jsonl)")
    ap.add_argument("--out", type=Path, required=True, help="prefix: <out>.png and <out>.md")
    ap.add_argument("--window", type=float, default=1e6)
    args = ap.parse_args()
    ours = read(args.ours, "env_steps", ("return",))
    theirs = read(args.jaxmarl, "env_step", ("returns", "win_rate"))
    theirs["steps"] = theirs["steps"] + (theirs["steps"][1] - theirs["steps"][0] if len(theirs["steps"]) > 1 else 0)
    top = max(ours["steps"].max(), theirs["steps"].max())
    edges = np.arange(0.0, top + args.window, args.window)
    a = window_means(ours["steps"], ours["return"], edges)
    b = window_means(theirs["steps"], theirs["returns"], edges)
    w = window_means(theirs["steps"], theirs["win_rate"], edges)

    def cell(x):
        return "-" if x is None else f"{x:.3f}"

    lines = ["| env steps | ours: training return | JaxMARL: training return | JaxMARL: training win rate |",
             "|---|---|---|---|"]
    lines += [f"| {lo / 1e6:.0f}-{hi / 1e6:.0f}M | {cell(x)} | {cell(y)} | {cell(z)} |"
              for lo, hi, x, y, z in zip(edges[:-1], edges[1:], a, b, w)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(ours["steps"] / 1e6, ours["return"], lw=0.8, label="mtmarl MAPPO (collect)")
    ax.plot(theirs["steps"] / 1e6, theirs["returns"], lw=0.8, label="JaxMARL MAPPO (its baseline)")
    ax.set_xlabel("env steps (M)")
    ax.set_ylabel("training return")
    ax.set_title(args.ours.stem)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=120)


if __name__ == "__main__":
    main()
