"""Critic learning curves without environment evaluation: does Q follow the data's returns?

Usage and options: the docstring of ``mtmarl/experiments/config.py`` (or ``--help``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from mtmarl.algos import common, mt_oryx
from mtmarl.algos.protocol import Stage
from mtmarl.diagnose import collect, mc_returns, task_stats
from mtmarl.experiments.config import compose_train
from mtmarl.training.data import build_buffers, load_task_data
from mtmarl.training.engine import Learner
from mtmarl.training.loop import algo_for_data

STATS = ("spearman", "mc_std", "q_state_std", "q_action_spread", "weight_std", "nll")


def mc_step_returns(mc, batch):
    """(B, T) Monte-Carlo return-to-go of every step of the batch, looked up by task and start step."""
    steps = batch.starts[:, None] + jnp.arange(batch.actions.shape[1])
    return mc[batch.task_ids[:, None], steps]


def with_mc_critic(algo, mc: np.ndarray):
    """MT Oryx whose critic target is the data's Monte-Carlo return (``mc``: (M, L)), not a TD target."""
    mc_j = jnp.asarray(mc)

    def loss(params, target_params, batch, key, cfg, net, axis_name=None):
        out, _, q, _ = common.critic_forward(params, target_params, batch, net, target_at_data=True)
        valid = batch.active[:, :-1]
        target = jnp.broadcast_to(mc_step_returns(mc_j, batch)[:, :-1, None], valid.shape)
        critic_loss = common.task_mean(common.td_error_loss(net, out, q, batch, target), valid, batch.task_ids,
                                       cfg.task_mean, axis_name)
        logp = common.legal_log_softmax(out.logits, batch.legals)
        _, coef = mt_oryx.policy_weights(q, common.take_action(q, batch.actions), logp, batch, cfg, axis_name)
        policy_loss = common.task_mean(-coef * common.take_action(logp, batch.actions), batch.active,
                                       batch.task_ids, cfg.task_mean, axis_name)
        total = cfg.critic_coef * critic_loss + policy_loss
        return total, {"critic_loss": common.global_sum(critic_loss, axis_name),
                       "policy_loss": common.global_sum(policy_loss, axis_name)}

    bound = lambda p, tp, b, k, axis_name=None: loss(p, tp, b, k, algo.cfg, algo.net, axis_name)  # noqa: E731
    return dataclasses.replace(algo, loss=bound,
                               stages=(Stage("train", common.gradient_stage(bound, algo.tx, algo.cfg.tau)),))


def probe_variant(task_set_name: str, overrides: list[str], updates: int, every: int, batches: int, seed: int):
    """[(update, {stat: mean over tasks})] of one variant, plus its wall seconds."""
    mc_critic = "mc" in overrides
    overrides = [o for o in overrides if o != "mc"]
    from omegaconf import OmegaConf

    from mtmarl import tasks as task_registry

    cfg = OmegaConf.to_container(compose_train(["+algo=mt_oryx", f"+tasks={task_set_name}", *overrides]),
                                 resolve=True)
    task_set = task_registry.from_config(cfg["tasks"])
    data = load_task_data(task_set, cfg["data"]["root"], verify=False)
    algo = algo_for_data(cfg, data)
    buffers = build_buffers(task_set, data, algo.cfg.seq_len)
    mc = mc_returns(data, int(buffers.obs.shape[1]), algo.cfg.gamma)
    if mc_critic:
        algo = with_mc_critic(algo, mc)
    names = [spec.name for spec in task_set.train]
    del data
    learner = Learner(algo, buffers, every)
    carry, curve, start = learner.init(seed), [], time.perf_counter()
    for done in range(every, updates + 1, every):
        carry, _ = learner.run(carry)
        recs, tasks, mcs = collect(algo, carry.state.params, buffers, mc, batches, seed)
        rows = task_stats(recs, tasks, mcs, names)
        point = {k: float(np.mean([r[k] for r in rows if r.get(k) is not None])) for k in STATS
                 if any(r.get(k) is not None for r in rows)}
        curve.append((done, point))
        print(f"  update {done}: " + ", ".join(f"{k} {v:.3f}" for k, v in point.items()), flush=True)
    return curve, time.perf_counter() - start


def plot(results: dict, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, res in results.items():
        steps = [u for u, _ in res["curve"]]
        axes[0].plot(steps, [p["spearman"] for _, p in res["curve"]], marker="o", label=name)
        axes[1].plot(steps, [p["q_state_std"] / p["mc_std"] for _, p in res["curve"]], marker="o", label=name)
    axes[0].set(xlabel="updates", ylabel="Spearman(Q, MC return)", title="critic ranks states")
    axes[1].set(xlabel="updates", ylabel="std Q / std MC return", title="critic spread over states")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path = out / "critic_probe.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default="lbf_5")
    parser.add_argument("--updates", type=int, default=1500)
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variant", action="append", required=True, help="NAME:override,override,...")
    parser.add_argument("--out", default="results/critic_probe")
    args = parser.parse_args(argv)
    if args.updates % args.every:
        parser.error(f"--updates ({args.updates}) must be a multiple of --every ({args.every})")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for spec in args.variant:
        name, _, rest = spec.partition(":")
        overrides = [o for o in rest.split(",") if o]
        print(f"{name}: {overrides}", flush=True)
        curve, seconds = probe_variant(args.tasks, overrides, args.updates, args.every, args.batches, args.seed)
        results[name] = {"overrides": overrides, "curve": curve, "seconds": round(seconds, 1)}
        (out / "critic_probe.json").write_text(json.dumps({"argv": argv, "tasks": args.tasks, "results": results},
                                                         indent=1))
    lines = [f"Critic probe on {args.tasks}, seed {args.seed}, {args.batches} batches per point.", "",
             "| variant | update | " + " | ".join(STATS) + " |", "|---|---|" + "---|" * len(STATS)]
    for name, res in results.items():
        for done, point in res["curve"]:
            lines.append(f"| {name} | {done} | " + " | ".join(f"{point.get(k, float('nan')):.3f}" for k in STATS) + " |")
    (out / "critic_probe.md").write_text("\n".join(lines) + "\n")
    plot(results, out)
    print(f"written: {out}/critic_probe.{{json,md,png}}")


if __name__ == "__main__":
    main()
