"""A task set's evaluation under the layouts the set evaluator chose between: compile, memory, call times, returns.

The set evaluator (``mtmarl.evaluation.rollout.TaskSetEvaluator``, as training and ``mtmarl.evaluate`` use it)
compiles one program per agent group, plays each task with its agent slots rounded up to a power of two
(``TaskSet.evaluation_env``), steps a group's tasks through one stacked env and compiles
``rollout.COMPILE_THREADS`` programs at once. Each other layout changes one of these:

  groups        the set evaluator as training uses it (the reference);
  one-program   every agent group's loop inside one compiled program;
  padded        every task at the set's agent count (``TaskSet.padded``): one group, more agents decoded;
  unstacked     every task's env traced on its own (``stack=False``);
  sequential    the groups' programs compiled one at a time (``COMPILE_THREADS = 1``).

Each layout runs in a fresh process (peak RSS is per process) with the persistent XLA cache off, on the same
policy (MT Oryx's Sable net of ``--network`` with random parameters: the cost does not depend on their values,
and random ones give varied episodes) and the same keys. Per layout: the compiled programs, compile seconds, the
compile's transient memory (peak RSS while compiling minus RSS before, sampled every 50 ms), RSS once the freed
heap is returned, the seconds of a periodic (``--episodes``) and of a final (``--final-episodes``) evaluation,
and each task's mean return. one-program and sequential compute what groups computes, and so does unstacked
on RWARE, LBF and Connector (their stacks replay each task's draws): their per-task returns must equal the
reference's. Padded agents take part in the key draws and stacked SMAX maps draw from other keys, so those agree
in distribution only.

    python benchmarks/eval_layouts.py                                  # rware_15, every layout
    python benchmarks/eval_layouts.py --set lbf_5 --layouts groups one-program --final-episodes 64

Writes ``results/eval_layouts_<set>.json`` (or ``--out``); exits non-zero when returns that must agree do not.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "results"
LAYOUTS = ("groups", "one-program", "padded", "unstacked", "sequential")


def rss_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 2**20
    return 0.0


def must_match(layout: str, env: str) -> bool:
    """Whether ``layout`` plays exactly the reference's episodes (see the module docstring)."""
    return layout in ("one-program", "sequential") or (layout == "unstacked" and env != "smax")


def random_params(algo, num_agents: int, obs_dim: int, seed: int = 1):
    """Parameters of the real shapes without compiling the initialiser (scaled normal draws)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    obs = jnp.zeros((1, 1, num_agents, obs_dim), jnp.float32)
    leaves, tree = jax.tree.flatten(jax.eval_shape(lambda k: algo.net.init(k, obs), jax.random.PRNGKey(0)))
    rng = np.random.default_rng(seed)
    out = [rng.normal(size=x.shape).astype(x.dtype) / np.sqrt(x.shape[0]) if x.ndim > 1
           else (1.0 + 0.1 * rng.normal(size=x.shape)).astype(x.dtype) for x in leaves]
    return jax.tree.unflatten(tree, [jnp.asarray(x) for x in out])


def one_program(envs, policy, episodes: int, batch: int, capacity: int):
    """Every agent group's loop inside one compiled program, from the set evaluator's own pieces."""
    import jax
    import jax.numpy as jnp

    from mtmarl.evaluation.rollout import Evaluator, TaskSetEvaluator, episode_keys, run_task_episodes

    ev = Evaluator(envs, policy, episodes, None, batch, tasks=True, capacity=capacity)
    grouped = TaskSetEvaluator(envs, policy, episodes, None, batch, capacity)  # its groups and task order only

    def run(params, keys, first, count):
        ep_keys = jax.vmap(lambda k: episode_keys(k, ev.capacity, first))(keys)
        played = [run_task_episodes([envs[i] for i in idx], policy, params, ep_keys[idx], count, ev.batch)
                  for idx in grouped.groups]
        return jax.tree.map(lambda *xs: jnp.concatenate(xs)[grouped.order], *played)

    ev._fn = jax.jit(run) if len(ev.devices) == 1 else jax.pmap(run, in_axes=(None, None, 0, None),
                                                                devices=ev.devices)
    return ev


def measure(layout: str, set_name: str, network: str, episodes: int, final: int) -> dict:
    """One layout, in this process: compile, a periodic and a final evaluation."""
    peak = [0.0]

    def sample():
        while True:
            peak[0] = max(peak[0], rss_gib())
            time.sleep(0.05)

    threading.Thread(target=sample, daemon=True).start()
    import jax
    import jax.numpy as jnp
    import numpy as np
    from omegaconf import OmegaConf

    from mtmarl import tasks
    from mtmarl.algos.registry import build as make_algo
    from mtmarl.configs import CONFIG_DIR
    from mtmarl.evaluation import rollout
    from mtmarl.memory import release_freed_memory
    from mtmarl.training.policy import make_policy

    if layout == "sequential":
        rollout.COMPILE_THREADS = 1
    task_set = tasks.load(set_name)
    specs = task_set.split("all")
    envs = [(task_set.padded if layout == "padded" else task_set.evaluation_env)(spec) for spec in specs]
    net = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "network" / f"{network}.yaml"))
    algo = make_algo("mt_oryx", None, net, task_set.env_spec)
    params = random_params(algo, task_set.env_spec.num_agents, envs[0].obs_dim)
    policy = make_policy(algo)
    keys = jnp.stack([rollout.task_key(0, spec) for spec in specs])
    n_dev = jax.local_device_count()
    batch, capacity = -(-episodes // n_dev), -(-final // n_dev)
    fn = (one_program(envs, policy, episodes, batch, capacity) if layout == "one-program"
          else rollout.make_task_set_evaluator(envs, policy, episodes, None, batch, capacity,
                                               stack=layout != "unstacked"))
    release_freed_memory()
    base = peak[0] = rss_gib()
    start = time.perf_counter()
    fn.compile(params, keys)
    compile_s, compiled_peak = time.perf_counter() - start, peak[0]
    release_freed_memory()
    trimmed = rss_gib()
    times, returns = [], None
    for n in (episodes, final):
        start = time.perf_counter()
        stats = jax.device_get(fn.resized(n)(params, keys))
        times.append(time.perf_counter() - start)
        returns = np.asarray(stats.returns).mean(axis=1)
    return {"layout": layout, "env": task_set.env, "programs": len(getattr(fn, "parts", [fn])), "tasks": len(specs),
            "compile_s": compile_s, "transient_gib": compiled_peak - base, "base_gib": base, "trimmed_gib": trimmed,
            "periodic_s": times[0], "final_s": times[1], "task_returns": returns.tolist(),
            "mean_return": float(returns.mean())}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", default="rware_15")
    parser.add_argument("--network", default="small", help="a preset of mtmarl/configs/network/")
    parser.add_argument("--layouts", nargs="+", choices=LAYOUTS, default=list(LAYOUTS),
                        help="which to run; each is compared with groups when groups runs too")
    parser.add_argument("--episodes", type=int, default=16, help="periodic evaluation episodes per task")
    parser.add_argument("--final-episodes", type=int, default=320, help="final evaluation episodes per task")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--layout", help=argparse.SUPPRESS)  # the child process's layout
    args = parser.parse_args(argv)
    if args.layout:
        print(json.dumps(measure(args.layout, args.set, args.network, args.episodes, args.final_episodes)))
        return
    env = {**os.environ, "MTMARL_XLA_CACHE": "off"}
    env.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    rows = []
    for layout in args.layouts:
        out = subprocess.run([sys.executable, __file__, "--set", args.set, "--network", args.network, "--episodes",
                              str(args.episodes), "--final-episodes", str(args.final_episodes), "--layout", layout],
                             env=env, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    ref = next((r for r in rows if r["layout"] == "groups"), None)
    differ = [r["layout"] for r in rows if ref and must_match(r["layout"], r["env"])
              and r["task_returns"] != ref["task_returns"]]
    print(f"{args.set}: {rows[0]['tasks']} tasks, periodic {args.episodes} / final {args.final_episodes} episodes "
          f"per task, {args.network} net")
    print(f"{'layout':>12} {'programs':>8} {'compile s':>9} {'transient GiB':>13} {'trimmed GiB':>11} "
          f"{'periodic s':>10} {'final s':>8} {'mean return':>11}")
    for r in rows:
        print(f"{r['layout']:>12} {r['programs']:>8} {r['compile_s']:>9.1f} {r['transient_gib']:>13.2f} "
              f"{r['trimmed_gib']:>11.2f} {r['periodic_s']:>10.1f} {r['final_s']:>8.1f} {r['mean_return']:>11.4f}")
    path = args.out or OUT / f"eval_layouts_{args.set}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"command": " ".join(sys.argv), "differ_from_groups": differ, "rows": rows}, indent=1))
    print(f"wrote {path}")
    if differ:
        sys.exit(f"per-task returns differ from the groups layout's: {', '.join(differ)}")


if __name__ == "__main__":
    main()
