"""Online Sable vs shared-parameter MAPPO (feed-forward or recurrent): learning curves per env step and per second.

Decides which online learner the collector should use on this machine:
both systems train on the same tasks, seeds and env-step budget with their
collector presets (``mtmarl/configs/online/{mappo,sable}.yaml``), and each chunk of K
updates logs the mean return of the training episodes that finished in it,
the env steps so far and the steady training seconds so far. Compilation is
timed separately: every (task, system) first runs one warm-up chunk from a
throwaway state (compile + one chunk), so the timed runs start compiled. The
initial and final policies are evaluated with the collector's evaluator
(stochastic policy, ``--eval-episodes`` episodes).

    XLA_FLAGS=--xla_force_host_platform_device_count=1 taskset -c 0 \\
        .venv/bin/python experiment_scripts/online_sable_vs_mappo.py \\
        --tasks connector:grid=5,agents=2 connector:grid=7,agents=3 \\
                lbf:grid=8,agents=2,food=2,level=2,fov=3 --budget 200000 --seeds 0

``--systems`` picks the learners: ``mappo``, ``sable`` and ``mappo_gru`` (MAPPO's
preset with ``recurrent=true``, the GRU actor), e.g. feed-forward vs recurrent MAPPO:

    XLA_FLAGS=--xla_force_host_platform_device_count=1 taskset -c 1 \\
        .venv/bin/python experiment_scripts/online_sable_vs_mappo.py --systems mappo mappo_gru \\
        --tasks lbf:grid=8,agents=2,food=2,level=2,fov=3 connector:grid=7,agents=3 --budget 204800 \\
        --seeds 0 --out results/online_learners/recurrent

Writes ``<out>/results.json`` (after every run, so a killed job keeps what
finished and a rerun skips it), ``<out>/curves.png`` and ``<out>/summary.md``
(a rerun with the same arguments only redraws these from the stored runs).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from mtmarl.configs import CONFIG_DIR  # noqa: E402
from mtmarl.evaluation.rollout import make_evaluator  # noqa: E402
from mtmarl.online.anakin import chunk_summary  # noqa: E402
from mtmarl.algos.registry import ONLINE, make_online_system, online_config  # noqa: E402
from mtmarl.runtime import enable_compilation_cache, save_figure  # noqa: E402
from mtmarl.tasks import TaskSpec  # noqa: E402

# learner name -> (preset in mtmarl/configs/online, overrides applied before the command line's)
PRESETS = {"mappo": ("mappo", []), "sable": ("sable", []), "mappo_gru": ("mappo", ["recurrent=true"])}
LABELS = {**{n: stage.label for n, stage in ONLINE.items()}, "mappo_gru": "MAPPO-GRU"}

DEFAULT_TASKS = ["connector:grid=5,agents=2", "connector:grid=7,agents=3",
                 "lbf:grid=8,agents=2,food=2,level=2,fov=3"]


def preset(name: str, overrides: list[str]) -> dict:
    file, base = PRESETS[name]
    cfg = OmegaConf.load(CONFIG_DIR / "online" / f"{file}.yaml")
    cfg.merge_with_dotlist(base + overrides)
    return OmegaConf.to_container(cfg, resolve=True)


def run_one(spec, system, evaluate, seed: int, budget: int) -> dict:
    key = jax.random.fold_in(jax.random.PRNGKey(seed), zlib.crc32(spec.adhoc.encode()))
    init_key, eval_key = jax.random.split(key)
    state = system.init(init_key)
    initial = float(np.mean(jax.device_get(evaluate(system.actor_params(state), eval_key)).returns))
    per_chunk = system.env_steps_per_update * system.config.updates_per_chunk
    rows, steps, train_s = [], 0, 0.0
    while steps < budget:
        t0 = time.perf_counter()
        state, metrics = system.train_chunk(state)
        summary = chunk_summary(metrics)  # blocks on the chunk
        train_s += time.perf_counter() - t0
        steps += per_chunk
        rows.append({"env_steps": steps, "train_s": round(train_s, 3),
                     **{k: (None if v != v else round(v, 5)) for k, v in summary.items()}})
    stats = jax.device_get(evaluate(system.actor_params(state), eval_key))
    return {"seed": seed, "initial_return": initial, "final_return": float(np.mean(stats.returns)),
            "final_std": float(np.std(stats.returns)), "env_steps": steps, "train_s": round(train_s, 2),
            "steps_per_s": round(steps / train_s, 1), "curve": rows}


def compile_system(spec, env, name: str, overrides: list[str], episodes: int) -> tuple:
    """The system and evaluator, compiled: one warm-up chunk from a throwaway state (timed)."""
    cfg = online_config(preset(name, overrides))
    system = make_online_system(env, cfg)
    t0 = time.perf_counter()
    state = system.init(jax.random.PRNGKey(12345))
    warm_chunk = time.perf_counter()
    jax.block_until_ready(system.train_chunk(state))
    warm_chunk = time.perf_counter() - warm_chunk
    evaluate = make_evaluator(env, system.policy, episodes)
    jax.block_until_ready(evaluate(system.actor_params(state), jax.random.PRNGKey(0)))
    return cfg, system, evaluate, {"warmup_s": round(time.perf_counter() - t0, 2),
                                   "warmup_chunk_s": round(warm_chunk, 2)}


def smooth(y: np.ndarray, k: int = 5) -> np.ndarray:
    y = np.asarray(y, float)
    out = np.empty_like(y)
    for i in range(len(y)):
        window = y[max(0, i - k + 1): i + 1]
        out[i] = np.nanmean(window) if np.isfinite(window).any() else np.nan
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(results["tasks"])
    fig, axes = plt.subplots(len(tasks), 2, figsize=(10, 3.1 * len(tasks)), squeeze=False)
    colours = {"mappo": "tab:blue", "sable": "tab:red", "mappo_gru": "tab:green"}
    for row, task in zip(axes, tasks):
        for name, entry in results["tasks"][task].items():
            for i, run in enumerate(entry["runs"]):
                c = run["curve"]
                ret = smooth([np.nan if r["return"] is None else r["return"] for r in c])
                label = f"{LABELS[name]} ({entry['steps_per_s']:,.0f} steps/s)" if i == 0 else None
                row[0].plot([r["env_steps"] for r in c], ret, color=colours[name], lw=1.3, alpha=0.85, label=label)
                row[1].plot([r["train_s"] for r in c], ret, color=colours[name], lw=1.3, alpha=0.85, label=label)
        row[0].set_title(f"{task}\nreturn vs env steps", fontsize=8)
        row[1].set_title(f"{task}\nreturn vs training seconds (compile excluded)", fontsize=8)
        row[0].set_xlabel("env steps")
        row[1].set_xlabel("seconds (1 CPU core, shared machine)")
        for ax in row:
            ax.set_ylabel("training return (5-chunk mean)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def _at(run: dict, key: str, x: float) -> float:
    """Smoothed training return of ``run`` at the last chunk with ``key`` <= x."""
    c = run["curve"]
    ret = smooth([np.nan if r["return"] is None else r["return"] for r in c])
    idx = [i for i, r in enumerate(c) if r[key] <= x + 1e-9]
    return float(ret[idx[-1]]) if idx else float("nan")


def _first_reach(run: dict, level: float) -> float:
    c = run["curve"]
    ret = smooth([np.nan if r["return"] is None else r["return"] for r in c])
    hit = [r for r, v in zip(c, ret) if v >= level]
    return (hit[0]["env_steps"], hit[0]["train_s"]) if hit else (float("nan"), float("nan"))


def table(results: dict) -> str:
    """Markdown: final evaluation, training return at fractions of the budget and at equal seconds."""
    lines = ["| task | system | steps/s | train s | compile s | initial eval | final eval (mean ± se, seeds) "
             "| train return @25% / 50% / 100% steps | @ MAPPO's train seconds | steps, s to 90% of MAPPO final train return |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for task, systems in results["tasks"].items():
        if "mappo" not in systems:
            continue
        m_runs = systems["mappo"]["runs"]
        m_secs = float(np.mean([r["train_s"] for r in m_runs]))
        target = 0.9 * float(np.mean([_at(r, "env_steps", 1e18) for r in m_runs]))
        for name, e in systems.items():
            runs = e["runs"]
            budget = e["budget"]
            finals = np.array([r["final_return"] for r in runs])
            se = finals.std(ddof=1) / np.sqrt(len(finals)) if len(finals) > 1 else float("nan")
            fr = [np.mean([_at(r, "env_steps", f * budget) for r in runs]) for f in (0.25, 0.5, 1.0)]
            eq = np.mean([_at(r, "train_s", m_secs) for r in runs])
            reach = np.array([_first_reach(r, target) for r in runs], float)
            reach_s = (f"{np.mean(reach[:, 0]):,.0f}, {np.mean(reach[:, 1]):.1f}"
                       if np.isfinite(reach).all() else f"not reached by {int(np.isnan(reach[:, 0]).sum())} seed(s)")
            lines.append(f"| {task} | {LABELS[name]} | {e['steps_per_s']:,.0f} | "
                         f"{np.mean([r['train_s'] for r in runs]):.0f} | {e.get('compile_s_est', float('nan')):.0f} | "
                         f"{e['initial_return_mean']:.2f} | {finals.mean():.3f} ± {se:.3f} | "
                         f"{fr[0]:.2f} / {fr[1]:.2f} / {fr[2]:.2f} | {eq:.2f} | {reach_s} |")
    return "\n".join(lines) + "\n"


def summarise(entry: dict) -> None:
    runs = entry["runs"]
    steps = sum(r["env_steps"] for r in runs)
    entry["steps_per_s"] = round(steps / sum(r["train_s"] for r in runs), 1)
    entry["final_return_mean"] = float(np.mean([r["final_return"] for r in runs]))
    entry["initial_return_mean"] = float(np.mean([r["initial_return"] for r in runs]))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", default=DEFAULT_TASKS)
    p.add_argument("--systems", nargs="+", default=["mappo", "sable"], choices=list(PRESETS))
    p.add_argument("--budget", type=int, default=200_000, help="env steps per run")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--eval-episodes", type=int, default=256)
    p.add_argument("--mappo", nargs="*", default=[], help="overrides of mtmarl/configs/online/mappo.yaml, key=value")
    p.add_argument("--sable", nargs="*", default=[], help="overrides of mtmarl/configs/online/sable.yaml, key=value")
    p.add_argument("--mappo-gru", nargs="*", default=[], help="overrides of mappo_gru (mappo.yaml, recurrent=true)")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "online_learners")
    args = p.parse_args(argv)

    enable_compilation_cache()
    args.out.mkdir(parents=True, exist_ok=True)
    res_path = args.out / "results.json"
    results = json.loads(res_path.read_text()) if res_path.is_file() else {"tasks": {}}
    results["machine"] = {"devices": jax.local_device_count(), "cpu_affinity": sorted(os.sched_getaffinity(0)),
                          "jax": jax.__version__}
    started = time.perf_counter()
    for task in args.tasks:
        spec = TaskSpec.parse(task)
        env = spec.build()
        for name in args.systems:
            entry = results["tasks"].setdefault(task, {}).setdefault(name, {"runs": []})
            todo = [s for s in args.seeds if s not in {r["seed"] for r in entry["runs"]}
                    or entry.get("budget") != args.budget]
            if entry.get("budget") != args.budget:
                entry["runs"] = []
            if not todo:
                print(f"{task} {name}: done, skipping", flush=True)
                continue
            cfg, system, evaluate, timing = compile_system(spec, env, name, getattr(args, name), args.eval_episodes)
            entry.update(budget=args.budget, config=dict(vars(cfg)) if hasattr(cfg, "__dict__") else None,
                         env_steps_per_update=system.env_steps_per_update, **timing)
            for seed in todo:
                run = run_one(spec, system, evaluate, seed, args.budget)
                entry["runs"].append(run)
                summarise(entry)
                # warm-up = compile of chunk + evaluator + one chunk; subtract a steady chunk's time
                per_chunk_s = run["train_s"] / len(run["curve"])
                entry["compile_s_est"] = round(timing["warmup_s"] - per_chunk_s, 1)
                print(f"{task} {LABELS[name]} seed {seed}: return {run['initial_return']:.3f} -> "
                      f"{run['final_return']:.3f}, {run['steps_per_s']:,.0f} steps/s, train {run['train_s']:.0f} s, "
                      f"compile ~{entry['compile_s_est']:.0f} s", flush=True)
                res_path.write_text(json.dumps(results, indent=1, default=str) + "\n")
                plot(results, args.out / "curves.png")
    plot(results, args.out / "curves.png")
    (args.out / "summary.md").write_text(table(results))
    print(table(results))
    print(f"total wall {time.perf_counter() - started:.0f} s; {res_path}", flush=True)


if __name__ == "__main__":
    main()
