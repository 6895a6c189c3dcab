"""Where does a value learner's critic start? Its last stage's loss metrics at initialisation, per seed.

Why: a critic bootstrapped from a target copy keeps feeding any offset it starts with back into its own
targets, and with a hard copy every few dozen updates a short offline budget has only a handful of copies
to wash it out (HyGen: 7 in 350 skill-Q updates). Comparing where Q_tot and its TD target start with the
returns the data can hold tells whether the init alone puts the critic out of range. Nothing trains: each
seed's state is built as ``mtmarl.train`` builds it (the same keys), and the value stage's update is
evaluated on ``--batches`` sampled batches; only the metrics it reports are kept (they are computed from
the parameters before the update is applied).

    python experiment_scripts/critic_init.py +algo=hygen +tasks=smax_marine_hard data.quality=medium \\
        --variant scale0.1:algo.mixer_init_scale=0.1 --variant scale0.01:algo.mixer_init_scale=0.01 \\
        --seeds 0 1 2 --out results/critic_init_hygen

Writes ``<out>/critic_init.{json,md}``: one row per variant and seed, each metric's mean (and range) over
the batches, beside the largest discounted return-to-go in the data.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from omegaconf import OmegaConf

from mtmarl.data.batching import sample
from mtmarl.diagnose import mc_returns
from mtmarl.errors import UserInputError
from mtmarl.evaluate import resolve_task_set
from mtmarl.experiments.config import compose_train
from mtmarl.training.data import build_buffers, load_task_data
from mtmarl.training.engine import Learner
from mtmarl.training.loop import algo_for_data


def max_discounted_return(data, gamma: float) -> float:
    """The largest discounted return-to-go over every step of every task's data (``mtmarl.diagnose.mc_returns``:
    the agents' mean reward, an episode ending at a terminal or a truncation)."""
    return float(mc_returns(data, max(len(d["rewards"]) for d in data), gamma).max())


def setup(overrides: list[str]):
    """(algo, buffers, learner, largest discounted return-to-go) as ``mtmarl.train`` builds them."""
    cfg = OmegaConf.to_container(compose_train(overrides), resolve=True)
    task_set = resolve_task_set(OmegaConf.create(cfg))
    data = load_task_data(task_set, cfg["data"]["root"], cfg["data"]["quality"], cfg["data"]["verify"],
                          float(cfg["data"]["fraction"]))
    algo = algo_for_data(cfg, data, task_set.env_spec)
    best = max_discounted_return(data, float(cfg["algo"].get("gamma", 0.99)))
    buffers = build_buffers(task_set, data, algo.sampler.seq_len, "train")
    return algo, buffers, Learner(algo, buffers, 1, 1, updates=int(cfg["training"]["updates"])), best


def probe_batch(algo, buffers, i: int):
    """The probe's ``i``-th batch, drawn as the value stage's sampler draws (fixed keys)."""
    stage = algo.stages[-1]
    return sample(buffers, jax.random.PRNGKey(1000 + i), jnp.int32(i), stage.sampler or algo.sampler)


def probe(overrides: list[str], seeds: list[int], batches: int) -> tuple[list[dict], float]:
    """Per seed, the value stage's metrics at init averaged over ``batches`` batches (and their range)."""
    algo, buffers, learner, best = setup(overrides)
    update = jax.jit(lambda state, batch, key: algo.stages[-1].update(state, batch, key)[1])
    rows = []
    for seed in seeds:
        state = jax.tree.map(jnp.asarray, learner.init(seed).state)
        ms = [update(state, probe_batch(algo, buffers, i), jax.random.PRNGKey(i)) for i in range(batches)]
        stats = {}
        for name in ms[0]:
            if np.ndim(ms[0][name]) == 0:
                vals = np.array([float(m[name]) for m in ms])
                stats[name] = {"mean": float(vals.mean()), "min": float(vals.min()), "max": float(vals.max())}
        rows.append({"seed": seed, "metrics": stats})
    return rows, best


def table(results: list[dict], keys: list[str]) -> str:
    head = "| variant | seed | " + " | ".join(keys) + " |"
    lines = [head, "|" + "---|" * (len(keys) + 2)]
    for res in results:
        for row in res["rows"]:
            cells = []
            for k in keys:
                s = row["metrics"].get(k)
                cells.append("n/a" if s is None else f"{s['mean']:.3f} [{s['min']:.3f}, {s['max']:.3f}]")
            lines.append(f"| {res['variant']} | {row['seed']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, _, rest = text.partition(":")
    if not name:
        raise UserInputError(f"--variant {text!r} needs a name before ':' (e.g. scale0.01:algo.mixer_init_scale=0.01)")
    return name, [o for o in rest.split(",") if o]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("overrides", nargs="+", help="mtmarl.train overrides shared by every variant")
    parser.add_argument("--variant", action="append", default=[], help="NAME:OVERRIDE,OVERRIDE (repeatable)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--keys", nargs="+", default=["q_tot", "td_target", "q_data", "td_loss"])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    variants = [parse_variant(v) for v in args.variant] or [("default", [])]
    results = []
    for name, extra in variants:
        rows, best = probe([*args.overrides, *extra], args.seeds, args.batches)
        results.append({"variant": name, "overrides": [*args.overrides, *extra], "rows": rows,
                        "max_discounted_return": best})
        print(f"{name}: largest discounted return-to-go in the data {best:.3f}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "critic_init.json").write_text(json.dumps(results, indent=1))
    md = table(results, args.keys)
    bests = ", ".join(f"{r['variant']} {r['max_discounted_return']:.3f}" for r in results)
    (args.out / "critic_init.md").write_text(
        f"Value-stage metrics at initialisation (mean [min, max] over {args.batches} batches)\n\n{md}\n\n"
        f"Largest discounted return-to-go in the data: {bests}\n")
    print(md)
    return results


def run_cli():
    """The command line (``experiment_scripts/critic_init.py``)."""
    main()
