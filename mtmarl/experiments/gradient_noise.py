"""How one update's policy gradient changes when its batch comes from k tasks instead of all (finding 5).

MT Oryx generalises better when each update sees one or two tasks than all fifteen of rware_15, and the
gain needs its ICQ-weighted policy loss (BC shows none). This probe asks what such a batch does to the
gradient at fixed, trained parameters: it loads a trained run (one seed of a population run with
``--seed``), draws ``--batches`` training batches from its own data with ``data.tasks_per_batch=k`` for every
``--k`` (``0`` = all tasks, the balanced batch), and reports for the policy loss (``critic_coef=0`` where the
algorithm has a critic; the whole loss otherwise):

* ``norm``: the mean global norm of one batch's gradient,
* ``mean_norm``: the norm of the mean gradient over the batches (the expected update direction's size),
* ``rel_noise``: E||g - mean g||^2 / ||mean g||^2 (unbiased over batches): how noisy one update is,
* ``cos_to_all``: cosine between this k's mean gradient and the all-task mean, the latter from batches of
  its own (a bias in direction; k = all gives the estimate's noise floor),
* ``cos_batch_all``: mean cosine between one batch's gradient and the all-task mean,
* ``ess``: for algorithms with ICQ policy weights, (sum w)^2 / (n sum w^2) over a batch's active entries,
  the share of the batch the weights effectively keep.

The checkpoint holds no target network, so the online parameters stand in for it (as in loss_gradients.py).

    python experiment_scripts/gradient_noise.py <run_dir> [<run_dir> ...] --seed 0 --batches 64 --k 0 2 1 \\
        --out results/gradient_noise/rware_15.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import jax
import numpy as np
from jax.flatten_util import ravel_pytree


def policy_gradient(algo):
    """Jitted ``(params, batch, key) -> flat gradient`` of the policy loss, compiled once for every k."""
    module = sys.modules[type(algo.cfg).__module__]
    cfg = dataclasses.replace(algo.cfg, critic_coef=0.0) if hasattr(algo.cfg, "critic_coef") else algo.cfg
    return jax.jit(lambda p, b, key: ravel_pytree(jax.grad(lambda q: module.loss(q, p, b, key, cfg, algo.net)[0])(p))[0])


def batch_gradients(algo, params, buffers, grad, probe, k: int, batches: int, seed: int):
    """(per-batch flattened policy gradients (batches, P), mean weight effective share or None) at ``k`` tasks."""
    from mtmarl.data.batching import sample

    sampler = dataclasses.replace(algo.cfg.sampler(), balanced=True, tasks_per_batch=(k or None))
    draw = jax.jit(lambda bufs, key, i: sample(bufs, key, i, sampler))  # the data as an argument, not a constant
    grads, ess = [], []
    for i in range(batches):
        key = jax.random.fold_in(jax.random.key(seed), i)
        batch = draw(buffers, key, i)
        grads.append(np.asarray(grad(params, batch, key), np.float64))
        rec = probe(params, batch)
        if "weight" in rec:
            ess.append(effective_share(np.asarray(rec["weight"], np.float64)[np.asarray(batch.active)]))
    return np.stack(grads), (float(np.mean(ess)) if ess else None)


def effective_share(w: np.ndarray) -> float:
    """Kish's effective sample size of weights ``w`` as a share of their count: 1 if equal, 1/n if one takes all."""
    return float(w.sum() ** 2 / (len(w) * np.square(w).sum()))


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def statistics(grads: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """The per-k numbers of the module docstring from (batches, P) gradients and the all-task mean gradient."""
    n = len(grads)
    mean = grads.mean(0)
    noise = np.square(grads - mean).sum(1).sum() / (n - 1)
    return {"norm": float(np.linalg.norm(grads, axis=1).mean()), "mean_norm": float(np.linalg.norm(mean)),
            "rel_noise": float(noise / np.square(mean).sum()), "cos_to_all": _cos(mean, reference),
            "cos_batch_all": float(np.mean([_cos(g, reference) for g in grads]))}


def probe(run_dir: str, seed: int | None, ks: list[int], batches: int) -> list[dict]:
    from mtmarl.diagnose import load_with_data

    from mtmarl.diagnose import make_probe

    algo, params, *_, buffers = load_with_data(run_dir, None, seed)
    grad, weights = policy_gradient(algo), make_probe(algo)
    # the all-task mean gradient from batches of its own, so that k = all is compared with fresh draws too
    reference = batch_gradients(algo, params, buffers, grad, weights, 0, batches, 999)[0].mean(0)
    results = {k: batch_gradients(algo, params, buffers, grad, weights, k, batches, 1000 + k) for k in ks}
    rows = []
    for k, (grads, ess) in results.items():
        rows.append({"run": run_dir, "algo": algo.name, "seed": seed, "k": k or int(buffers.num_tasks),
                     "batches": batches, **statistics(grads, reference), "ess": ess})
    return rows


def markdown(rows: list[dict]) -> str:
    cols = ["algo", "run", "k", "norm", "mean_norm", "rel_noise", "cos_to_all", "cos_batch_all", "ess"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [f"{r[c]:.3f}" if isinstance(r[c], float) else ("" if r[c] is None else str(r[c])) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dirs", nargs="+")
    parser.add_argument("--seed", type=int, default=None, help="which seed of a population run")
    parser.add_argument("--batches", type=int, default=64)
    parser.add_argument("--k", type=int, nargs="+", default=[0, 2, 1], help="tasks per batch; 0 = all")
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON (and .md beside it)")
    args = parser.parse_args(argv)
    if args.batches < 2:
        sys.exit(f"error: --batches must be >= 2 (a variance needs two), got {args.batches}")
    if any(k < 0 for k in args.k):
        sys.exit(f"error: --k must be >= 0 (0 = all tasks), got {args.k}")
    rows = []
    for run in args.run_dirs:
        rows.extend(probe(run, args.seed, args.k, args.batches))
        print(markdown(rows), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=1))
        args.out.with_suffix(".md").write_text(markdown(rows))


def run_cli():
    """The command line (``experiment_scripts/gradient_noise.py``)."""
    main()
