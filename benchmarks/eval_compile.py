"""Evaluation wall time and compiled programs: one program per task vs one per task set.

Why this exists: a training run evaluates every task of its set periodically
and at the end. Compiling one evaluation program per task (23 for rware_15:
each a copy of the env and of the policy network) made evaluation most of the
main job's time. This script times both ways on the same policy, parameters
and keys, in one process, and checks that they give the same per-task returns
and episode lengths:

  per-task  the earlier path: ``make_evaluator`` per task, all
            compiled at once in threads (``compile_all``), then run one by one;
  set       ``make_task_set_evaluator``: all tasks of the set in one program
            per agent group, SMAX maps through one stacked env (``MultiAgentEnv.stack``);
  set-each  the same with every task's env traced on its own (``stack=False``,
            the set evaluator before SMAX stacking).

Stacked SMAX maps follow each map's rules but draw some random numbers from
other keys, so there the episodes are compared by their means (return, win
rate, length per task), not one by one.

Each is timed as a training run uses it: compile, a periodic evaluation
(``--episodes`` per task) and a final one (``--final-episodes`` per task, the
same program run several times). ``evaluator_programs`` counts the compiled
evaluation programs; ``xla_compile_s`` sums the duration of every XLA backend
compile in that phase (summed over threads, so it can exceed wall time), and
compiles over / under 0.5 s are counted apart (small eager ops compile too).
The load average at start and end is recorded: on a shared
machine the two ways may run under different load. The policy is MT Oryx's Sable net (``--network``) with random
parameters: evaluation cost does not depend on the parameter values, and
random ones give varied episodes to compare.

    python benchmarks/eval_compile.py                              # rware_15, 16 / 320 episodes
    python benchmarks/eval_compile.py --set lbf_5 --final-episodes 64 --devices 1

Writes ``results/eval_compile_<set>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from mtmarl import tasks
from mtmarl.algos.registry import build as make_algo
from mtmarl.configs import CONFIG_DIR
from mtmarl.evaluation import rollout
from mtmarl.evaluation.rollout import compile_all, make_evaluator, make_task_set_evaluator, task_key
from mtmarl.training.policy import make_policy

OUT = Path(__file__).resolve().parent / "results"


class CompileCounter:
    """Counts and times XLA backend compiles (jax.monitoring event) while active."""

    EVENT = "/jax/core/compile/backend_compile_duration"

    def __init__(self):
        self.durations: list[float] = []
        self.active = False
        jax.monitoring.register_event_duration_secs_listener(self._on_event)

    def _on_event(self, event: str, duration: float, **_) -> None:
        if self.active and event == self.EVENT:
            self.durations.append(duration)

    def __enter__(self):
        self.durations, self.active = [], True
        return self

    def __exit__(self, *exc):
        self.active = False

    def summary(self) -> dict:
        big = [d for d in self.durations if d > 0.5]
        return {"xla_compiles_over_0.5s": len(big), "xla_compiles_under_0.5s": len(self.durations) - len(big),
                "xla_compile_s": round(sum(self.durations), 2)}


def random_params(algo, num_agents: int, obs_dim: int, seed: int = 1):
    """Parameters of the real shapes without compiling the initialiser (scaled normal draws)."""
    obs = jnp.zeros((1, 1, num_agents, obs_dim), jnp.float32)
    leaves, tree = jax.tree.flatten(jax.eval_shape(lambda k: algo.net.init(k, obs), jax.random.PRNGKey(0)))
    rng = np.random.default_rng(seed)
    out = [rng.normal(size=x.shape).astype(x.dtype) / np.sqrt(x.shape[0]) if x.ndim > 1
           else (1.0 + 0.1 * rng.normal(size=x.shape)).astype(x.dtype) for x in leaves]
    return jax.tree.unflatten(tree, [jnp.asarray(x) for x in out])


def timed(fn):
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - start


def per_task(envs, policy, params, keys, episodes, final, devices, counter):
    n_dev = len(jax.local_devices()[: devices or jax.local_device_count()])
    batch = -(-episodes // n_dev)
    fns = [make_evaluator(env, policy, episodes, devices, batch) for env in envs]
    with counter:
        _, compile_s = timed(lambda: compile_all(fns, params, keys[0]))
        print(f"  per-task: compiled in {compile_s:.1f} s", flush=True)
        periodic, periodic_s = timed(lambda: [fn(params, k) for fn, k in zip(fns, keys)])
        print(f"  per-task: periodic evaluation {periodic_s:.1f} s", flush=True)
        last, final_s = timed(lambda: [fn.resized(final)(params, k) for fn, k in zip(fns, keys)])
    stack = lambda parts: jax.tree.map(lambda *xs: np.stack(xs), *jax.device_get(parts))  # noqa: E731
    return stack(periodic), stack(last), {"evaluator_programs": len({id(fn._compiled) for fn in fns}),
                                          "compile_s": compile_s, "periodic_s": periodic_s, "final_s": final_s,
                                          **counter.summary()}


def task_set(envs, policy, params, keys, episodes, final, devices, counter, stack=True):
    n_dev = len(jax.local_devices()[: devices or jax.local_device_count()])
    fn = make_task_set_evaluator(envs, policy, episodes, devices, -(-episodes // n_dev), stack=stack)
    keys = jnp.stack(keys)
    with counter:
        _, compile_s = timed(lambda: fn.compile(params, keys))
        print(f"  set: compiled in {compile_s:.1f} s", flush=True)
        periodic, periodic_s = timed(lambda: fn(params, keys))
        print(f"  set: periodic evaluation {periodic_s:.1f} s", flush=True)
        last, final_s = timed(lambda: fn.resized(final)(params, keys))
    return jax.device_get(periodic), jax.device_get(last), {"evaluator_programs": 1,
                                                            "compile_s": compile_s, "periodic_s": periodic_s,
                                                            "final_s": final_s, **counter.summary()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--set", default="rware_15")
    parser.add_argument("--network", default="small")
    parser.add_argument("--episodes", type=int, default=16, help="periodic evaluation episodes per task")
    parser.add_argument("--final-episodes", type=int, default=320, help="final evaluation episodes per task")
    parser.add_argument("--devices", type=int, default=None)
    parser.add_argument("--order", default="set,per-task", help="which ways to time, in this order")
    parser.add_argument("--tag", default="", help="suffix of the output file name")
    parser.add_argument("--compiler-options", default=None,
                        help="JSON dict replacing mtmarl.evaluation.rollout.COMPILER_OPTIONS (XLA debug options "
                             "of the evaluation programs), e.g. '{\"xla_backend_optimization_level\": 1, "
                             "\"xla_cpu_use_fusion_emitters\": false}'")
    args = parser.parse_args()
    if args.compiler_options is not None:
        rollout.COMPILER_OPTIONS = json.loads(args.compiler_options)

    from omegaconf import OmegaConf

    ts = tasks.load(args.set)
    specs = ts.train + ts.test
    envs = [ts.evaluation_env(s) for s in specs]  # as training evaluates them (agents rounded up to powers of 2)
    net_cfg = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "network" / f"{args.network}.yaml"))
    algo = make_algo("mt_oryx", None, net_cfg, ts.env_spec)
    params = random_params(algo, ts.env_spec.num_agents, envs[0].obs_dim)
    policy = make_policy(algo)
    keys = [task_key(0, s) for s in specs]
    counter = CompileCounter()
    ways = {"set": task_set, "per-task": per_task,
            "set-each": lambda *a: task_set(*a, stack=False)}
    results, stats = {"load_average_at_start": os.getloadavg()[0]}, {}
    for way in args.order.split(","):
        periodic, final, timing = ways[way](envs, policy, params, keys, args.episodes, args.final_episodes,
                                            args.devices, counter)
        timing["total_s"] = timing["compile_s"] + timing["periodic_s"] + timing["final_s"]
        results.setdefault("ways", {})[way] = {k: round(v, 2) if isinstance(v, float) else v
                                               for k, v in timing.items()}
        stats[way] = (periodic, final)
        print(f"{way:9s} " + " ".join(f"{k}={v}" for k, v in results["ways"][way].items()), flush=True)
    if len(stats) == 2:
        (p1, f1), (p2, f2) = stats.values()
        differ = {"periodic": ((p1.returns != p2.returns) | (p1.lengths != p2.lengths)).sum(1),
                  "final": ((f1.returns != f2.returns) | (f1.lengths != f2.lengths)).sum(1)}
        results["differing_episodes"] = {k: {s.name: int(n) for s, n in zip(specs, v) if n}
                                         for k, v in differ.items()}
        results["identical_returns_and_lengths"] = not any(v.any() for v in differ.values())
        print(f"per-task returns and lengths identical: {results['identical_returns_and_lengths']} "
              f"(differing episodes per task: {results['differing_episodes']})")
        # per task, the final evaluation's means of each way (what matters where draws differ)
        results["final_means"] = {
            way: {s.name: {"return": round(float(f.returns[i].mean()), 4), "win": round(float(f.successes[i].mean()), 4),
                           "length": round(float(f.lengths[i].mean()), 2)} for i, s in enumerate(specs)}
            for way, (_, f) in stats.items()}
        for way, per in results["final_means"].items():
            print(f"{way:9s} mean return {np.mean([v['return'] for v in per.values()]):.4f} "
                  f"win {np.mean([v['win'] for v in per.values()]):.4f}")
    results.update(load_average_at_end=os.getloadavg()[0], task_set=args.set, tasks=len(specs), network=args.network,
                   episodes=args.episodes,
                   final_episodes=args.final_episodes, devices=len(jax.local_devices()[: args.devices or
                                                                                  jax.local_device_count()]),
                   compiler_options=rollout.COMPILER_OPTIONS,
                   backend=jax.default_backend(), cpu=platform.processor() or platform.machine(),
                   jax=jax.__version__, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    OUT.mkdir(exist_ok=True)
    path = OUT / f"eval_compile_{args.set}{'_' + args.tag if args.tag else ''}.json"
    path.write_text(json.dumps(results, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
