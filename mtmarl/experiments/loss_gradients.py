"""How much of an MT Oryx / MT CQL-Sable update reaches the shared Sable torso from the critic vs the policy.

Sable's decoder feeds both heads (``policy_head`` and ``q_head``); everything else (embeddings, encoder,
decoder blocks) is shared. The critic's loss shapes that shared representation only as far as its gradient
there is comparable to the policy's. This probe loads a trained run (one seed of a population run with
``--seed``), draws training batches from its own data, and reports the global norms of

* ``critic``: the gradient of ``critic_coef * critic_loss`` (the total loss minus the policy-only loss),
* ``policy``: the gradient of the loss with ``critic_coef = 0``,

over the shared parameters and over each head. The checkpoint holds no target network, so the online
parameters stand in for it (they differ by Polyak lag only; the probe compares magnitudes, not values).

    python experiment_scripts/loss_gradients.py <run_dir> [<run_dir> ...] [--seed S] [--batches 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

HEADS = ("policy_head", "q_head")


def _norm(tree) -> float:
    leaves = jax.tree.leaves(tree)
    return float(jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in leaves))) if leaves else 0.0


def split(grads) -> dict[str, dict]:
    """The gradient tree's parts: ``shared`` (every module but the heads) and each head."""
    inner = grads["params"]
    parts = {"shared": {k: v for k, v in inner.items() if k not in HEADS}}
    parts.update({h: inner[h] for h in HEADS if h in inner})
    return parts


def probe(run_dir: str, seed: int | None, batches: int) -> dict[str, float]:
    from mtmarl.data.batching import sample
    from mtmarl.diagnose import load_with_data

    algo, params, *_, buffers = load_with_data(run_dir, None, seed)
    if not hasattr(algo.cfg, "critic_coef"):
        sys.exit(f"error: {run_dir}: {algo.name} has no critic (critic_coef); nothing to split")
    module = sys.modules[type(algo.cfg).__module__]  # the algorithm's own loss(), to call with critic_coef 0
    policy_cfg = dataclasses.replace(algo.cfg, critic_coef=0.0)

    def grads(p, batch, key):
        total = jax.grad(lambda q: algo.loss(q, p, batch, key)[0])(p)
        policy = jax.grad(lambda q: module.loss(q, p, batch, key, policy_cfg, algo.net)[0])(p)
        return jax.tree.map(jnp.subtract, total, policy), policy

    draw = jax.jit(lambda k, i: sample(buffers, k, i, algo.cfg.sampler()))
    grads = jax.jit(grads)
    sums: dict[str, list[float]] = {}
    for i in range(batches):
        key = jax.random.fold_in(jax.random.key(0), i)
        critic, policy = grads(params, draw(key, i), key)
        for name, g in (("critic", critic), ("policy", policy)):
            for part, tree in split(g).items():
                sums.setdefault(f"{name}/{part}", []).append(_norm(tree))
    out = {k: float(np.mean(v)) for k, v in sums.items()}
    out["critic_share_of_shared"] = out["critic/shared"] / (out["critic/shared"] + out["policy/shared"])
    out["critic_coef"] = float(algo.cfg.critic_coef)
    out["hl_gauss"] = bool(getattr(algo.cfg, "hl_gauss", False))
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dirs", nargs="+")
    parser.add_argument("--seed", type=int, default=None, help="which seed of a population run")
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    if args.batches < 1:
        sys.exit(f"error: --batches must be >= 1, got {args.batches}")
    rows = []
    for run in args.run_dirs:
        row = {"run": run, "seed": args.seed, **probe(run, args.seed, args.batches)}
        rows.append(row)
        print(f"{run} (seed {args.seed}): hl_gauss={row['hl_gauss']} critic_coef={row['critic_coef']:g}  shared torso: "
              f"critic {row['critic/shared']:.3g}, policy {row['policy/shared']:.3g} "
              f"(critic share {row['critic_share_of_shared']:.3f}); q_head {row.get('critic/q_head', 0):.3g}, "
              f"policy_head {row.get('policy/policy_head', 0):.3g}")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


def run_cli():
    """The command line (``experiment_scripts/loss_gradients.py``)."""
    main()
