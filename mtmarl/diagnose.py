"""What a trained run's critic and policy weights learned, per training task.

    python -m mtmarl.diagnose <run_dir> [--batches 20] [--eval-episodes 0] [--out DIR]

A run's final returns say *that* offline RL did or did not beat behaviour
cloning; these numbers say *why*. On batches drawn from the run's own training
data (task-balanced over all its tasks, whatever the run trained with; the run's sequence length), for every
training task:

* ``spearman``: rank correlation of the critic's Q(s, a_data) with the data's
  Monte-Carlo discounted return-to-go (does the critic order states at all?);
* ``q_state_std``: spread of Q(s, a_data) across the task's states, beside
  ``mc_std``, the spread of the Monte-Carlo returns it should follow;
* ``q_action_spread``: mean (max - min) of Q over the legal actions of one
  state (entries with at least two legal actions): if this is tiny next to the
  advantage temperature, the policy weights are flat and ICQ is BC;
* ``weight_share`` vs ``entry_share``: the task's share of the policy weight
  mass and of the weighted entries; ``weight_std``, ``weight_max`` and
  ``down_weighted`` (entries with weight < 0.5) describe how far the weights are
  from the flat weight 1 of BC;
* ``nll`` vs ``uniform_nll``: the policy's negative log-likelihood of the data
  action against a uniform choice among the legal actions;
* with ``--eval-episodes N``: the mean return of N episodes sampled from the
  policy and N with greedy (arg-max) actions.

Critic columns need a Q head (not BC); weight columns need an algorithm module
with ``policy_weights`` (MT Oryx). Results go to ``diagnostics.json`` and
``diagnostics.md`` in ``--out`` (default: the run directory).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mtmarl.algos import common, registry
from mtmarl.data.batching import returns_to_go, sample
from mtmarl.errors import UserInputError
from mtmarl.runtime import user_errors_exit

COLUMNS = ("task", "entries", "spearman", "mc_std", "q_state_std", "q_action_spread", "weight_share", "entry_share",
           "weight_std", "weight_max", "down_weighted", "nll", "uniform_nll", "sampled_return", "greedy_return")


def mc_returns(data: list[dict[str, np.ndarray]], length: int, gamma: float) -> np.ndarray:
    """(M, length) Monte-Carlo returns-to-go of every task's data, zero-padded like the buffers."""
    out = np.zeros((len(data), length), np.float32)
    for m, d in enumerate(data):
        ends = np.asarray(d["terminals"]).reshape(len(d["rewards"]), -1).any(1) | \
            np.asarray(d["truncations"]).reshape(len(d["rewards"]), -1).any(1)
        rewards = np.asarray(d["rewards"], np.float32)
        rewards = rewards.mean(-1) if rewards.ndim == 2 else rewards
        out[m, :len(rewards)] = returns_to_go(rewards, ends, gamma)
    return out


def make_probe(algo):
    """Jitted ``probe(params, batch) -> dict`` of per-entry (B, T, N) arrays for the statistics."""
    # the algorithm module's own policy weights (ICQ's), if it has any: found through the registry
    weights_fn = getattr(inspect.getmodule(registry.get(algo.name).make), "policy_weights", None)
    has_q = algo.cfg.learns_values

    @jax.jit
    def probe(params, batch):
        out, _ = algo.net.apply_train(params, batch.obs, batch.actions, batch.legals, batch.active, batch.resets)
        logp = common.legal_log_softmax(out.logits, batch.legals)
        n_legal = batch.legals.sum(-1)
        rec = {"nll": -common.take_action(logp, batch.actions), "uniform_nll": jnp.log(n_legal)}
        if has_q:
            q = algo.net.q_values(out.q, batch.legals)
            q_data = common.take_action(q, batch.actions)
            spread = jnp.max(q, -1) - jnp.min(jnp.where(batch.legals, q, jnp.inf), -1)
            rec.update(q_data=q_data, q_action_spread=jnp.where(n_legal > 1, spread, jnp.nan))
            if weights_fn is not None:
                rec["weight"] = weights_fn(q, q_data, logp, batch, algo.cfg)[1]
        return rec

    return probe


def spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    """Spearman rank correlation (average ranks for ties); None if either side is constant."""
    from scipy.stats import spearmanr

    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(spearmanr(x, y).statistic)


def task_stats(recs: dict[str, np.ndarray], task: np.ndarray, mc: np.ndarray, names: list[str]) -> list[dict]:
    """One row per training task from the concatenated per-entry records (active entries only)."""
    rows = []
    w_all = recs.get("weight")
    w_total = float(w_all.sum()) if w_all is not None else None
    for m, name in enumerate(names):
        sel = task == m
        row: dict[str, Any] = {"task": name, "entries": int(sel.sum()), "nll": float(recs["nll"][sel].mean()),
                               "uniform_nll": float(recs["uniform_nll"][sel].mean())}
        if "q_data" in recs:
            row["spearman"] = spearman(recs["q_data"][sel], mc[sel])
            row["mc_std"] = float(mc[sel].std())
            row["q_state_std"] = float(recs["q_data"][sel].std())
            spread = recs["q_action_spread"][sel]
            row["q_action_spread"] = float(np.nanmean(spread)) if np.isfinite(spread).any() else None
        if w_all is not None:
            w = w_all[sel]
            row.update(weight_share=float(w.sum()) / max(w_total, 1e-12), entry_share=float(sel.mean()),
                       weight_std=float(w.std()), weight_max=float(w.max()),
                       down_weighted=float((w < 0.5).mean()))
        rows.append(row)
    return rows


def collect(algo, params, buffers, mc: np.ndarray, batches: int, seed: int = 0):
    """Per-entry records and their task ids / MC returns over ``batches`` sampled batches."""
    probe = make_probe(algo)
    # Task-balanced over all tasks whatever the run trained with (data.balanced=false, data.tasks_per_batch):
    # every task then has entries in every batch, and runs trained either way are probed on the same batches.
    cfg = dataclasses.replace(algo.cfg.sampler(), balanced=True, tasks_per_batch=None)
    draw = jax.jit(lambda k, i: sample(buffers, k, i, cfg))
    recs: dict[str, list] = {}
    tasks, mcs = [], []
    for i in range(batches):
        batch = draw(jax.random.fold_in(jax.random.key(seed), i), i)
        rec, b = jax.device_get((probe(params, batch), batch))
        act = np.asarray(b.active)
        for k, v in rec.items():
            recs.setdefault(k, []).append(np.asarray(v)[act])
        t_idx = np.asarray(b.starts)[:, None] + np.arange(b.actions.shape[1])
        steps = np.broadcast_to(mc[np.asarray(b.task_ids)[:, None], t_idx][..., None], act.shape)
        tasks.append(np.broadcast_to(np.asarray(b.task_ids)[:, None, None], act.shape)[act])
        mcs.append(steps[act])
    return {k: np.concatenate(v) for k, v in recs.items()}, np.concatenate(tasks), np.concatenate(mcs)


def eval_returns(algo, params, task_set, episodes: int, seed: int) -> dict[str, tuple[float, float]]:
    """(sampled, greedy) mean return of ``episodes`` episodes on every training task."""
    from mtmarl.evaluation.rollout import task_key
    from mtmarl.evaluation.rollout import make_evaluator
    from mtmarl.training.policy import make_policy

    out = {}
    for spec in task_set.train:
        env = task_set.evaluation_env(spec)
        means = []
        for greedy in (False, True):
            stats = make_evaluator(env, make_policy(algo, greedy), episodes)(params, task_key(seed, spec))
            means.append(float(np.mean(jax.device_get(stats.returns))))
        out[spec.name] = tuple(means)
        # Each compiled evaluator maps its code into memory; 30 of RWARE's (15 tasks x greedy/sampled) in one
        # process ran out of memory maps (LLVM "Cannot allocate memory"). Nothing here is reused: drop them.
        jax.clear_caches()
    return out


def load_with_data(run_dir: str | Path, which: str | None = None, run_seed: int | None = None):
    """A trained run and the training data it was trained on: (algo, params, cfg, info, task_set, data, buffers).

    For tools that probe a checkpoint on its own batches (this module's diagnostics)."""
    from mtmarl.training.data import build_buffers, load_task_data
    from mtmarl.training.restore import load_run, run_task_set

    algo, params, cfg, info = load_run(run_dir, which, run_seed)
    task_set = run_task_set(cfg)
    data_cfg = cfg.get("data") or {}
    data = load_task_data(task_set, data_cfg.get("root", "vault_data"), data_cfg.get("quality"), False,
                          float(data_cfg.get("fraction", 1.0)))
    return algo, params, cfg, info, task_set, data, build_buffers(task_set, data, algo.cfg.seq_len)


def diagnose(run_dir: str | Path, batches: int = 20, eval_episodes: int = 0, which: str | None = None,
             seed: int = 0, run_seed: int | None = None) -> dict[str, Any]:
    """The diagnostics of a run as a dict (``rows``: one per training task; ``summary``; ``run``).

    ``seed`` draws the probe batches; ``run_seed`` picks one seed of a population run's checkpoint."""
    if batches < 1:
        raise UserInputError(f"--batches must be >= 1, got {batches}")
    algo, params, cfg, info, task_set, data, buffers = load_with_data(run_dir, which, run_seed)
    mc = mc_returns(data, int(buffers.obs.shape[1]), algo.cfg.gamma)
    del data
    recs, tasks, mcs = collect(algo, params, buffers, mc, batches, seed)
    rows = task_stats(recs, tasks, mcs, [spec.name for spec in task_set.train])
    if eval_episodes > 0:
        returns = eval_returns(algo, params, task_set, eval_episodes, seed)
        for row in rows:
            row["sampled_return"], row["greedy_return"] = returns[row["task"]]
    summary = {k: _mean([r.get(k) for r in rows]) for k in COLUMNS[2:]}
    summary["weight_share_max_over_fair"] = (max(r["weight_share"] / r["entry_share"] for r in rows)
                                             if "weight_share" in rows[0] else None)
    return {"run": str(run_dir), "algo": algo.name, "checkpoint": info["checkpoint"]["kind"],
            "update": info["checkpoint"]["step"], "seed": info["seed"], "batches": batches, "rows": rows,
            "summary": summary}


def _mean(values):
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def markdown(result: dict[str, Any]) -> str:
    cols = [c for c in COLUMNS if any(c in r for r in result["rows"])]
    lines = [f"# Diagnostics of {result['run']}", "",
             f"{result['algo']}, {result['checkpoint']} checkpoint (update {result['update']}), "
             f"{result['batches']} batches of the run's training data.", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in result["rows"]]
    lines += ["| **mean** | | " + " | ".join(_fmt(result["summary"].get(c)) for c in cols[2:]) + " |", ""]
    return "\n".join(lines)


@user_errors_exit
def main(argv=None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m mtmarl.diagnose", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--batches", type=int, default=20, help="batches of training data to probe")
    parser.add_argument("--eval-episodes", type=int, default=0, help="sampled vs greedy episodes per task")
    parser.add_argument("--which", choices=["best", "latest"], default=None, help="checkpoint (default best)")
    parser.add_argument("--out", default=None, help="folder for diagnostics.json/.md (default: run_dir, or its "
                        "seed_<s>/ for one seed of a population run)")
    parser.add_argument("--seed", type=int, default=None, help="which seed of a population run (training.population)")
    args = parser.parse_args(argv)
    from mtmarl.atomic import atomic_write_text
    from mtmarl.data.stats import rich_table
    from mtmarl.training.restore import check_run_seed
    from mtmarl.training.rundir import RunDirLock

    for flag, value, least in (("--batches", args.batches, 1), ("--eval-episodes", args.eval_episodes, 0)):
        if value < least:
            raise UserInputError(f"{flag} must be >= {least}, got {value}")
    if not Path(args.run_dir, "checkpoints").is_dir():
        raise UserInputError(f"{args.run_dir} is not a training run directory (no checkpoints/); "
                             f"pass the directory `python -m mtmarl.train` wrote")
    check_run_seed(args.run_dir, args.seed)  # before seed_<s>/ is made for it
    out = Path(args.out or (Path(args.run_dir) / f"seed_{args.seed}" if args.seed is not None else args.run_dir))
    # The output directory has one writer at a time (a training run writing it included); a refused or failed
    # diagnosis removes the directory again if it made it.
    with RunDirLock(out, elsewhere="pass --out <another dir>"):
        result = diagnose(args.run_dir, args.batches, args.eval_episodes, args.which, run_seed=args.seed)
        atomic_write_text(out / "diagnostics.json", json.dumps(result, indent=1))
        atomic_write_text(out / "diagnostics.md", markdown(result))
    cols = [c for c in COLUMNS if any(c in r for r in result["rows"])]
    rich_table(f"{result['algo']} diagnostics ({result['checkpoint']}, update {result['update']})", cols,
               [[_fmt(r.get(c)) for c in cols] for r in result["rows"]]
               + [["mean", ""] + [_fmt(result["summary"].get(c)) for c in cols[2:]]], left=1)
    print(f"written: {out / 'diagnostics.md'}")
    return result


if __name__ == "__main__":
    main()
