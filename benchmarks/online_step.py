"""Where one chunk of the online collector's learner spends its time, per task, on this machine.

Why: data collection is bounded by the online learner's env steps/s, and what to speed up depends on which
part dominates. For each task this builds the collector's system (``mtmarl/configs/online/<system>.yaml``
with ``--set`` overrides; the converged recipe's 32 envs per device by default) on one device and times,
each as its own compiled program and the best of ``--repeats`` calls:

  chunk    ``System.train_chunk``: K updates, the reset pools included (what the collector runs);
  pools    the chunk's reset pools, made on the host (``PoolMaker``);
  env      K x T steps of every env with random legal actions and the pool's auto-resets (no network);
  rollout  K rollouts of the learner (acting + env steps);
  update   K PPO updates (GAE, ``epochs`` x ``minibatches`` gradient steps) on one rollout's data.

``acting`` = rollout - env; the chunk minus the parts is the program's own overhead (scan, host round
trips). With ``--ops`` the update is traced under ``jax.profiler`` and its time split by XLA operation kind
(matrix products, XLA's own or YNNPACK fusions, vs the rest), and XLA's FLOP count of its gradient steps
gives its rate, beside this process's rate on one large square matrix product: a compute-bound update
shows as such.

    XLA_FLAGS=--xla_force_host_platform_device_count=1 python benchmarks/online_step.py --ops \\
        --tasks connector:grid=15,agents=10 rware:rows=2,cols=5,height=8,agents=8 \\
        --out benchmarks/results/online_step_mappo_epyc.json
"""

from __future__ import annotations

import os

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               " --xla_force_host_platform_device_count=1").strip()

import argparse  # noqa: E402
import collections  # noqa: E402
import glob  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from mtmarl.algos.registry import make_online_system, online_config, online_task_env  # noqa: E402
from mtmarl.configs import CONFIG_DIR  # noqa: E402
from mtmarl.online import ppo  # noqa: E402
from mtmarl.online.anakin import AXIS, advantages, samples  # noqa: E402
from mtmarl.online.rollout import step_with_pool  # noqa: E402
from mtmarl.tasks import TaskSpec  # noqa: E402


def best_of(fn, repeats: int) -> float:
    """Seconds of the fastest of ``repeats`` calls after one warm-up (compile) call."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return min(times)


def dense_matmul_gflops(size: int = 1024, repeats: int = 5) -> float:
    """This process's float32 rate on one large square matrix product: the ceiling the update's products
    (64-unit layers) are compared with."""
    x = jax.random.normal(jax.random.PRNGKey(0), (size, size))
    mm = jax.jit(lambda a: a @ a)
    return 2 * size**3 / best_of(lambda: mm(x), repeats) / 1e9


def learner_config(system: str, overrides: list[str]):
    preset = OmegaConf.load(Path(CONFIG_DIR) / "online" / f"{system}.yaml")
    merged = OmegaConf.merge(preset, OmegaConf.from_dotlist(overrides))
    return online_config(OmegaConf.to_container(merged, resolve=True))


def op_split(update, args, calls: int) -> dict[str, float]:
    """Seconds per call of ``update`` by XLA operation kind, from a ``jax.profiler`` trace."""
    from jax._src.profiler import ProfileData  # jax's own reader of the trace it writes

    trace_dir = tempfile.mkdtemp(prefix="online-step-trace-")
    jax.profiler.start_trace(trace_dir)
    for _ in range(calls):
        jax.block_until_ready(update(*args))
    jax.profiler.stop_trace()
    kinds: collections.Counter = collections.Counter()
    # Events that only wait for or wrap others: their time is already in the operations inside them.
    wrappers = ("ThunkExecutor", "SlinkyThreadPool", "while", "conditional", "call")
    for plane in ProfileData.from_file(glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True)[0]).planes:
        for line in plane.lines:
            if not line.name.startswith("tf_XLAEigen"):  # XLA:CPU's threads that run the program's operations
                continue
            for ev in line.events:
                if not ev.name.startswith(wrappers):
                    kinds["dot" if ev.name.startswith(("dot", "ynn")) else "other"] += ev.duration_ns
    return {k: v / 1e9 / calls for k, v in kinds.items()}


def profile_task(task: str, cfg, repeats: int, ops: bool) -> dict:
    spec = TaskSpec.parse(task)
    env = online_task_env(spec.build(), cfg)
    system = make_online_system(env, cfg, num_devices=1)
    learner = system.learner
    K, B, T = cfg.updates_per_chunk, cfg.num_envs, cfg.rollout_len
    state = system.init(jax.random.PRNGKey(0))
    dev0 = lambda tree: jax.tree.map(lambda x: x[0], tree)  # noqa: E731
    params, opt_state, envs0, carry0 = dev0(state.params), dev0(state.opt_state), dev0(state.envs), dev0(state.carry)
    pool = dev0(system.pools(jax.random.PRNGKey(1), (1, B, cfg.resets_per_env)))
    fresh = lambda e: e._replace(cursor=jnp.zeros_like(e.cursor))  # noqa: E731

    @jax.jit
    def env_only(envs, key):
        def update(envs, k):
            def step(e, kk):
                mask = e.timestep.observation.action_mask
                actions = jax.random.categorical(kk, jnp.where(mask, 0.0, ppo.NEG_INF), axis=-1)
                e, real = step_with_pool(env, e, actions, pool)
                return e, real.reward
            return jax.lax.scan(step, fresh(envs), jax.random.split(k, T))
        return jax.lax.scan(update, envs, jax.random.split(key, K))[1]

    @jax.jit
    def rollouts(params, envs, carry, key):
        def update(c, k):
            e, ca, traj = learner.rollout(params, fresh(c[0]), c[1], pool, k, T)
            return (e, ca), traj.reward
        return jax.lax.scan(update, (envs, carry), jax.random.split(key, K))[1]

    tx = cfg.optimiser()
    _, _, traj = jax.jit(lambda p, e, c, k: learner.rollout(p, e, c, pool, k, T))(params, envs0, carry0,
                                                                                   jax.random.PRNGKey(2))

    def one_update(params, opt_state, traj, key):
        data = samples(learner.sequences, traj, *advantages(cfg, traj), carry0)
        return ppo.optimise(learner.loss, tx, params, opt_state, data, key, cfg.epochs, cfg.minibatches, AXIS)

    lead = lambda tree: jax.tree.map(lambda x: x[None], tree)  # noqa: E731
    update = jax.pmap(one_update, axis_name=AXIS)
    update_args = (lead(params), lead(opt_state), lead(traj), jax.random.PRNGKey(3)[None])

    t = {"chunk": best_of(lambda: system.train_chunk(state)[1], repeats),
         "pools": best_of(lambda: system.pools(jax.random.PRNGKey(4), (1, K, B, cfg.resets_per_env)), repeats),
         "env": best_of(lambda: env_only(envs0, jax.random.PRNGKey(5)), repeats),
         "rollout": best_of(lambda: rollouts(params, envs0, carry0, jax.random.PRNGKey(6)), repeats),
         "update": K * best_of(lambda: update(*update_args), repeats)}
    t["acting"] = t["rollout"] - t["env"]
    t["overhead"] = t["chunk"] - t["pools"] - t["rollout"] - t["update"]
    steps = K * B * T
    out = {"task": spec.adhoc, "agents": env.num_agents, "obs_dim": env.obs_dim, "num_envs": B, "rollout_len": T,
           "updates_per_chunk": K, "env_steps_per_s": steps / t["chunk"], "seconds_per_chunk": t,
           "share": {k: t[k] / t["chunk"] for k in ("pools", "env", "acting", "update", "overhead")}}
    if ops:
        split = op_split(update, update_args, 3)
        out["update_ops_s"] = split
        out["update_dot_share"] = split.get("dot", 0.0) / max(sum(split.values()), 1e-12)
        data = samples(learner.sequences, traj, *advantages(cfg, traj), carry0)
        mb = jax.tree.map(lambda x: x[: x.shape[0] // cfg.minibatches], data)
        grad = jax.jit(jax.grad(lambda p, m: learner.loss(p, *m)[0]))
        cost = grad.lower(params, mb).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        flops = float(cost.get("flops", 0.0)) * cfg.epochs * cfg.minibatches
        out["update_gflop"] = flops / 1e9
        out["update_gflop_per_s"] = flops / 1e9 / (t["update"] / K)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", nargs="+", required=True, help="ad-hoc task strings (python -m mtmarl.tasks)")
    ap.add_argument("--system", default="mappo", help="online learner preset (mtmarl/configs/online/)")
    ap.add_argument("--set", nargs="*", default=["num_envs=32"], metavar="KEY=VALUE",
                    help="overrides of the preset (default: the converged recipe's num_envs=32)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ops", action="store_true", help="split the update's time by XLA operation kind")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    cfg = learner_config(a.system, a.set)
    dense = dense_matmul_gflops()
    print(f"dense float32 matrix product: {dense:.0f} GFLOP/s", flush=True)
    rows = []
    for task in a.tasks:
        r = profile_task(task, cfg, a.repeats, a.ops)
        rows.append(r)
        s = r["share"]
        ops = (f", update: {r['update_dot_share']:.0%} in matrix products, {r['update_gflop']:.2f} GFLOP "
               f"at {r['update_gflop_per_s']:.0f} GFLOP/s" if a.ops else "")
        print(f"{task}: {r['env_steps_per_s']:,.0f} env steps/s; chunk = update {s['update']:.0%}, env "
              f"{s['env']:.0%}, acting {s['acting']:.0%}, pools {s['pools']:.0%}, overhead {s['overhead']:.0%}{ops}",
              flush=True)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                                     "jax": jax.__version__, "dense_matmul_gflop_per_s": dense,
                                     "argv": sys.argv, "system": a.system,
                                     "config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
                                     "tasks": rows}, indent=1, default=str))


if __name__ == "__main__":
    main()
