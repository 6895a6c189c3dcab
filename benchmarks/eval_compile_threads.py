"""A task set's evaluation programs compiled one at a time vs several at once (``rollout.COMPILE_THREADS``).

Why: an XLA:CPU compile uses mostly one core (an lbf_5 set compile took 74.6 s of wall time and 68.1 s of
CPU time, measured while another job ran), so on a 2-core machine two of a set's agent-group programs can
compile side by side; their transient memory then adds up, and the main job's peak RSS is to stay under
3 GiB. Run each setting in a fresh process (peak RSS is per process) with the persistent XLA cache off:

    MTMARL_XLA_CACHE=off python benchmarks/eval_compile_threads.py rware_15 1
    MTMARL_XLA_CACHE=off python benchmarks/eval_compile_threads.py rware_15 2

Prints one JSON line: compile wall time, peak RSS before and after compiling, and the mean return of a
16-episode evaluation (it must not depend on the setting). The policy is MT Oryx's ``small`` Sable net with
random parameters, as in ``eval_compile.py``.
"""

from __future__ import annotations

import json
import resource
import sys
import time

import jax
import jax.numpy as jnp
from omegaconf import OmegaConf

from eval_compile import random_params
from mtmarl import tasks
from mtmarl.algos.registry import build as make_algo
from mtmarl.configs import CONFIG_DIR
from mtmarl.evaluation import rollout
from mtmarl.training.policy import make_policy


def main() -> None:
    set_name, threads = sys.argv[1], int(sys.argv[2])
    rollout.COMPILE_THREADS = threads
    ts = tasks.load(set_name)
    specs = ts.train + ts.test
    envs = [ts.evaluation_env(s) for s in specs]
    net = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "network" / "small.yaml"))
    algo = make_algo("mt_oryx", None, net, ts.env_spec)
    params = random_params(algo, ts.env_spec.num_agents, envs[0].obs_dim)
    keys = jnp.stack([rollout.task_key(0, s) for s in specs])
    fn = rollout.make_task_set_evaluator(envs, make_policy(algo), 16, 1, 16, 320)
    rss = lambda: round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)  # noqa: E731
    before = rss()
    start = time.perf_counter()
    fn.compile(params, keys)
    compile_s = time.perf_counter() - start
    out = jax.block_until_ready(fn(params, keys))
    print(json.dumps({"set": set_name, "threads": threads, "programs": len(fn.parts), "compile_s": round(compile_s, 1),
                      "peak_rss_before_compile_gib": before, "peak_rss_gib": rss(),
                      "mean_return": float(out.returns.mean())}))


if __name__ == "__main__":
    main()
