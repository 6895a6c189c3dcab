"""Our MAPPO's learning curves beside JaxMARL's own on one SMAX map (``run.py``): training return against
env steps, plus a table of each curve's mean over every 1M steps.

    python experiment_scripts/jaxmarl_anchor/plot.py --ours default=vault_data/logs/smax/5m_vs_6m.jsonl \\
        --jaxmarl jaxmarl_5m_vs_6m.jsonl --out results/smax_mappo_vs_jaxmarl/5m_vs_6m
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
    ap.add_argument("--ours", action="append", required=True,
                    help="label=path of an mtmarl.collect per-chunk log (jsonl); repeat for several")
    ap.add_argument("--jaxmarl", type=Path, help="run.py's log (jsonl); without it, our curves alone")
    ap.add_argument("--out", type=Path, required=True, help="prefix: <out>.png and <out>.md")
    ap.add_argument("--window", type=float, default=1e6)
    args = ap.parse_args()
    ours = {}
    for item in args.ours:
        label, sep, path = item.partition("=")
        if not sep:
            ap.error(f"--ours {item!r}: expected label=path")
        ours[label] = read(Path(path), "env_steps", ("return",))
    theirs = read(args.jaxmarl, "env_step", ("returns", "win_rate")) if args.jaxmarl else None
    if theirs is not None:
        # JaxMARL logs each update's episodes under the steps done before it; ours after the chunk
        theirs["steps"] = theirs["steps"] + (theirs["steps"][1] - theirs["steps"][0] if len(theirs["steps"]) > 1 else 0)
    top = max([c["steps"].max() for c in ours.values()] + ([theirs["steps"].max()] if theirs else []))
    edges = np.arange(0.0, top + args.window, args.window)
    cols = [window_means(c["steps"], c["return"], edges) for c in ours.values()]
    if theirs is not None:
        cols += [window_means(theirs["steps"], theirs["returns"], edges),
                 window_means(theirs["steps"], theirs["win_rate"], edges)]

    def cell(x):
        return "-" if x is None else f"{x:.3f}"

    head = [f"ours ({label}): training return" for label in ours]
    head += ["JaxMARL: training return", "JaxMARL: training win rate"] if theirs else []
    lines = ["| env steps | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        lines.append(f"| {lo / 1e6:g}-{hi / 1e6:g}M | " + " | ".join(cell(c[i]) for c in cols) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, c in ours.items():
        ax.plot(c["steps"] / 1e6, c["return"], lw=0.8, label=f"mtmarl MAPPO ({label})")
    if theirs is not None:
        ax.plot(theirs["steps"] / 1e6, theirs["returns"], lw=0.8, label="JaxMARL MAPPO (its baseline)")
    ax.set_xlabel("env steps (M)")
    ax.set_ylabel("training return")
    ax.set_title(args.out.stem)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=120)


if __name__ == "__main__":
    main()
