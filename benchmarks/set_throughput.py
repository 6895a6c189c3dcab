"""Env-step cost of the set evaluator that training runs use, against raw Jumanji stepping.

Why this exists: evaluation stepping should stay within 2x of raw Jumanji
stepping. ``env_throughput.py`` measures the per-task evaluator; training and
``mtmarl.evaluate`` now play a whole task set through ``make_task_set_evaluator``,
where the tasks of one agent group step through one stacked env (grids, shelves,
food and agents padded to the group's largest) with refilled slots and batched
restarts. This script measures that evaluator on every task of a set, with the
RANDOM policy (so the network's cost is left out), one device:

  raw    for each task, Jumanji alone: ``jit(scan(vmap(step)))`` over ``--raw-steps``
         steps of ``--slots`` envs after their reset (no auto-reset: every executed step
         costs), and the same program with no steps (the resets' cost);
  set    ``make_task_set_evaluator`` over all tasks of the set (the training run's
         programs: one per agent group, stacked), ``--episodes`` per task played
         through ``--slots`` slots per task;
  each   (``--each``) the same with ``stack=False`` (each task's env traced apart).

The evaluator's cost is counted per *useful* step (a step of an episode, up to its
end: the sum of the returned lengths), so idle or waiting slots count against it.
Raw Jumanji's cost of the same work is, summed over tasks, (episodes x its seconds
per reset) + (useful steps x its seconds per step): every episode starts with a
reset on both sides (short episodes, such as random play on Connector, are mostly
resets). The ratio of the two is the overhead factor the target bounds at 2; the
factor against raw steps alone is reported beside it.

    python benchmarks/set_throughput.py --set lbf_5
    python benchmarks/set_throughput.py --set rware_15 --each --out benchmarks/results/set_throughput_rware_15.json
"""

from __future__ import annotations

import os

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               " --xla_force_host_platform_device_count=2").strip()

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from env_throughput import make_baseline, timed  # noqa: E402

from mtmarl import tasks  # noqa: E402
from mtmarl.evaluation.policies import RANDOM  # noqa: E402
from mtmarl.evaluation.rollout import episode_keys, make_task_set_evaluator, task_key  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def steady(call, reps: int) -> tuple[float, float, list[float]]:
    """(compile + first run s, median steady s, steady times): one warm-up run after the first."""
    first, _, _ = timed(call)
    timed(call)
    times = [timed(call)[0] for _ in range(reps)]
    return first, statistics.median(times), times


def make_resets(jenv, num_episodes: int):
    """The resets of ``make_baseline`` alone, every field of their output summed (so none is compiled away)."""
    def run(params, key):
        del params
        reset_keys = jax.vmap(jax.random.split)(episode_keys(key, num_episodes))[:, 0]
        leaves = jax.tree.leaves(jax.vmap(jenv.reset)(reset_keys))
        data = [jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x for x in leaves]
        return sum(jnp.sum(x.astype(jnp.float32)) for x in data)
    return jax.jit(run, static_argnums=0)


def raw_costs(specs, slots: int, raw_steps: int, reps: int) -> list[dict]:
    """Seconds per reset and per executed step of each task's raw Jumanji env: ``slots`` envs reset and
    stepped ``raw_steps`` times, against the same program with no steps (its time is the resets')."""
    out = []
    key = jax.random.PRNGKey(0)
    for spec in specs:
        env = spec.build()
        steps = min(raw_steps, env.horizon)
        fn, reset_only = make_baseline(env.jumanji_env, steps, slots), make_resets(env.jumanji_env, slots)
        compile_s, med, times = steady(lambda: fn(None, key), reps)
        _, reset_s, reset_times = steady(lambda: reset_only(None, key), reps)
        per_step = max(med - reset_s, 0.0) / (slots * steps)
        out.append({"task": spec.name, "agents": env.num_agents, "compile_s": compile_s, "steady_s": med,
                    "times": times, "reset_times": reset_times, "executed_steps": slots * steps,
                    "s_per_step": per_step, "s_per_reset": reset_s / slots})
        print(f"raw {spec.name}: {1e6 * per_step:.2f} us/step, {1e6 * reset_s / slots:.2f} us/reset "
              f"(compile {compile_s:.1f} s)", flush=True)
    return out


def set_cost(task_set, specs, episodes: int, slots: int, reps: int, stack: bool) -> dict:
    """The set evaluator's time, compile and useful steps per task (one device)."""
    envs = [task_set.evaluation_env(spec) for spec in specs]
    fn = make_task_set_evaluator(envs, RANDOM, episodes, num_devices=1, batch=slots, capacity=episodes, stack=stack)
    keys = jnp.stack([task_key(0, spec) for spec in specs])
    t0 = time.perf_counter()
    fn.compile(None, keys)
    compile_s = time.perf_counter() - t0
    first, med, times = steady(lambda: fn(None, keys), reps)
    stats = jax.device_get(fn(None, keys))
    lengths = np.asarray(stats.lengths)
    return {"stack": stack, "compile_s": compile_s, "first_call_s": first, "steady_s": med, "times": times,
            "groups": [[specs[i].name for i in idx] for idx in fn.groups],
            "useful_steps": lengths.sum(1).tolist(), "mean_return": np.asarray(stats.returns).mean(1).tolist()}


def summarise(raw: list[dict], played: dict, episodes: int) -> dict:
    """The overhead factor: evaluator seconds over raw seconds for the same work (one reset per episode plus
    the episodes' useful steps); ``factor_steps_only`` leaves the resets out of the raw side, and
    ``factor_vs_group_largest`` prices every step of an agent group at the raw cost of the group's costliest
    task (what a stack padded to the group's largest task could at best reach)."""
    useful = {r["task"]: n for r, n in zip(raw, played["useful_steps"])}
    by_name = {r["task"]: r for r in raw}
    total = sum(useful.values())
    raw_steps_s = sum(useful[r["task"]] * r["s_per_step"] for r in raw)
    raw_s = raw_steps_s + sum(episodes * r["s_per_reset"] for r in raw)
    largest_s = 0.0
    for group in played["groups"]:
        worst = max(by_name[n]["s_per_step"] for n in group)
        largest_s += sum(useful[n] for n in group) * worst
    return {"useful_steps": int(total), "raw_s": raw_s, "raw_steps_s": raw_steps_s,
            "raw_steps_at_group_largest_s": largest_s, "evaluator_s": played["steady_s"],
            "factor": played["steady_s"] / raw_s, "factor_steps_only": played["steady_s"] / raw_steps_s,
            "factor_vs_group_largest": played["steady_s"] / largest_s,
            "evaluator_us_per_useful_step": 1e6 * played["steady_s"] / total,
            "raw_us_per_useful_step": 1e6 * raw_s / total}


def print_table(name: str, variants: dict, rows: dict, episodes: int, slots: int, tasks: int) -> None:
    print(f"\n{name}: {tasks} tasks, {episodes} episodes per task through {slots} slots, 1 device")
    print("| evaluator | compile s | steady s | useful steps | us / useful step | raw us / useful step (resets in) "
          "| factor | factor, raw steps only | factor, raw at each group's largest task |")
    print("|---|---|---|---|---|---|---|---|---|")
    for key, r in rows.items():
        print(f"| {key} | {variants[key]['compile_s']:.1f} | {r['evaluator_s']:.3f} | {r['useful_steps']} | "
              f"{r['evaluator_us_per_useful_step']:.2f} | {r['raw_us_per_useful_step']:.2f} | {r['factor']:.2f}x | "
              f"{r['factor_steps_only']:.2f}x | {r['factor_vs_group_largest']:.2f}x |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--set", required=True, help="task set name (python -m mtmarl.tasks lists them)")
    p.add_argument("--episodes", type=int, default=64, help="episodes per task")
    p.add_argument("--slots", type=int, default=16, help="episodes of a task played at once (raw: envs per task)")
    p.add_argument("--raw-steps", type=int, default=100, help="steps of each raw scan (at most the horizon)")
    p.add_argument("--reps", type=int, default=3, help="steady-state runs (median)")
    p.add_argument("--each", action="store_true", help="also time the evaluator with each task traced apart")
    p.add_argument("--out", type=Path, default=None, help="JSON output (default results/set_throughput_<set>.json)")
    p.add_argument("--summary-of", type=Path, default=None, help="only reprint the table of an earlier JSON")
    args = p.parse_args(argv)
    if args.summary_of:
        done = json.loads(args.summary_of.read_text())
        episodes, slots = done["meta"]["episodes"], done["meta"]["slots"]
        rows = {k: summarise(done["raw"], v, episodes) for k, v in done["evaluators"].items()}
        print_table(done["meta"]["set"], done["evaluators"], rows, episodes, slots, len(done["raw"]))
        return 0
    task_set = tasks.load(args.set)
    specs = list(task_set.split("all"))

    variants = {"set": set_cost(task_set, specs, args.episodes, args.slots, args.reps, True)}
    if args.each:
        variants["each"] = set_cost(task_set, specs, args.episodes, args.slots, args.reps, False)
    raw = raw_costs(specs, args.slots, args.raw_steps, args.reps)
    rows = {name: summarise(raw, v, args.episodes) for name, v in variants.items()}

    print_table(args.set, variants, rows, args.episodes, args.slots, len(specs))
    out = args.out or RESULTS / f"set_throughput_{args.set}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"jax": jax.__version__, "cpu_count": os.cpu_count(), "machine": platform.machine(),
            "processor": platform.processor(), "argv": sys.argv, "set": args.set,
            "episodes": args.episodes, "slots": args.slots, "raw_steps": args.raw_steps,
            "xla_flags": os.environ.get("XLA_FLAGS", "")}
    out.write_text(json.dumps({"meta": meta, "raw": raw, "evaluators": variants, "summary": rows}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
