"""Why does a trained ODIS (or HyGen) win little? Its two acting parts judged apart on a trained run.

ODIS acts in two steps: the Q agent picks a skill, the frozen stage-1 decoder turns (observation,
skill) into an action. A low win rate can come from either. This replays the run's checkpoint on its
task set with the acting step changed, all else equal (same keys, episodes, evaluator):

* ``odis``: as trained (Q's arg-max skill, the decoder's arg-max action);
* ``odis-sample``: Q's skill, an action sampled from the decoder's softmax (as the BC baselines act);
* ``skill-k``: skill k for every agent at every step, decoder arg-max (the Q agent unused);
* ``soft-uniform``: the decoder given the uniform mixture of skills (stage 1 fed it soft Gumbel samples).

If every decoder variant wins as little as ``odis``, the decoder (stage 1) is the cause; if a fixed
skill wins clearly more, the Q agent's skill choice is.

    python experiment_scripts/odis_probe.py results/runs/<odis run>/seed_0 --out results/odis_probe
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp

from mtmarl import tasks as task_registry
from mtmarl.evaluation.sets import evaluate_set
from mtmarl.networks.entity import NEG
from mtmarl.evaluation.references import load_references
from mtmarl.evaluation.results import print_table
from mtmarl.runtime import enable_compilation_cache
from mtmarl.training.policy import make_policy
from mtmarl.training.restore import load_run


def skill_count(algo) -> int:
    """ODIS's ``skill_dim``; HyGen's 0 means one skill per attention head, the width of its local skill head."""
    return algo.cfg.skill_dim or algo.nets["local_head"].features


def variant_act(algo, name: str):
    """An ``act`` with ODIS's acting step replaced as ``name`` says (module docstring)."""
    agent, decoder, K = algo.nets["agent"], algo.nets["decoder"], skill_count(algo)

    def act(params, carry, obs, action_mask, active, reset, key, greedy=False):
        del active, greedy
        h_q, h_dec = (jnp.where(reset, 0.0, h) for h in carry)
        h_q, q_skill = agent.apply(params["agent"], h_q, obs)
        if name.startswith("skill-"):
            skill = jnp.zeros_like(q_skill).at[..., int(name.split("-")[1])].set(1.0)
        elif name == "soft-uniform":
            skill = jnp.full_like(q_skill, 1.0 / K)
        else:
            skill = jax.nn.one_hot(q_skill.argmax(-1), K, dtype=obs.dtype)
        h_dec, logits = decoder.apply(params["decoder"], h_dec, obs, skill)
        logits = jnp.where(action_mask, logits, NEG)
        if name == "odis-sample":
            actions = jax.random.categorical(key, logits)
        else:
            actions = logits.argmax(-1)
        return actions.astype(jnp.int32), None, (h_q, h_dec)

    return act


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--episodes", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", nargs="*", default=None)
    args = parser.parse_args(argv)
    enable_compilation_cache()
    algo, params, cfg, info = load_run(args.run_dir)
    task_set = task_registry.from_config(info["tasks"])
    names = args.variants or ["odis", "odis-sample", "soft-uniform"] + [f"skill-{k}" for k in range(skill_count(algo))]
    args.out.mkdir(parents=True, exist_ok=True)
    table = {}
    for name in names:
        policy = make_policy(dataclasses.replace(algo, act=variant_act(algo, name)))
        rows = evaluate_set(task_set, ["train", "test"], policy, params, args.episodes, args.seed,
                            load_references(info["references"]), progress=False)
        print_table(rows, name)
        table[name] = rows
        (args.out / "odis_probe.json").write_text(json.dumps({"run": str(args.run_dir), "episodes": args.episodes,
                                                              "checkpoint": info["checkpoint"]["step"],
                                                              "variants": table}, indent=1, default=str))
    (args.out / "odis_probe.md").write_text(summary_markdown(table, args))
    print(summary_markdown(table, args))
    return 0


def summary_markdown(table: dict, args) -> str:
    """Per variant and split: mean win rate, normalised return and episode length over the split's maps."""
    lines = [f"ODIS acting variants, {args.run_dir}, {args.episodes} episodes per map, seed {args.seed}", "",
             "| variant | train win | train normalised | train length | test win | test normalised | test length |",
             "|---|---|---|---|---|---|---|"]
    for name, rows in table.items():
        cells = []
        for split in ("train", "test"):
            rs = [r for r in rows if r["split"] == split]
            for key in ("win_rate", "normalised_return", "mean_length"):
                vals = [r[key] for r in rs if r.get(key) is not None]
                cells.append(f"{sum(vals) / len(vals):.3f}" if vals else "n/a")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_cli():
    """The command line (``experiment_scripts/odis_probe.py``)."""
    raise SystemExit(main())
