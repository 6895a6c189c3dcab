"""JaxMARL's own SMAX MAPPO as an anchor for our online learner: same env, their code.

Why: the SMAX data are only as good as our learner, and JaxMARL's baseline is the public measure of it. This runs
JaxMARL's published recurrent MAPPO (``baselines/MAPPO/mappo_rnn_smax.py`` with
``config/mappo_homogenous_rnn_smax.yaml``, read from a JaxMARL checkout, not copied here) on one map, so the two
learning curves can be laid side by side (``plot.py``; ``results/smax_mappo_vs_jaxmarl/``). Its training
metrics (return and win rate of the episodes finished in each update) go to a JSON-lines file through the
``wandb`` stand-in in this folder.

    python experiment_scripts/jaxmarl_anchor/run.py --jaxmarl <checkout> --extra <site-dir> \\
        --map 5m_vs_6m --steps 10000000 --log jaxmarl_5m_vs_6m.jsonl

``--extra``: a directory holding what the baseline imports beyond our stack (distrax 0.1.5 and a
tensorflow-probability that runs on our jax: tfp-nightly 0.26.0.dev20261027, with decorator and gast).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jaxmarl", type=Path, required=True, help="a JaxMARL checkout (its baselines/ folder)")
    ap.add_argument("--extra", type=Path, default=None, help="site dir with distrax and tfp")
    ap.add_argument("--map", default="5m_vs_6m")
    ap.add_argument("--steps", type=float, default=1e7)
    ap.add_argument("--num-envs", type=int, default=None, help="default: the published config's")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log", type=Path, required=True)
    args = ap.parse_args()
    baseline = args.jaxmarl / "baselines" / "MAPPO"
    if not (baseline / "mappo_rnn_smax.py").is_file():
        sys.exit(f"--jaxmarl {args.jaxmarl}: no baselines/MAPPO/mappo_rnn_smax.py there")
    sys.path[:0] = [str(Path(__file__).parent), *([str(args.extra)] if args.extra else []), str(baseline)]
    args.log.parent.mkdir(parents=True, exist_ok=True)
    args.log.unlink(missing_ok=True)
    os.environ["JAXMARL_ANCHOR_LOG"] = str(args.log)

    import jax
    from omegaconf import OmegaConf

    import mappo_rnn_smax  # the baseline, from the checkout
    from jaxmarl.environments.smax import smax_env

    if args.map not in smax_env.MAP_NAME_TO_SCENARIO:  # a SMAC map JaxMARL does not list (e.g. 9m_vs_10m)
        from mtmarl.envs.smax import scenario

        smax_env.MAP_NAME_TO_SCENARIO[args.map] = scenario(args.map)

    config = OmegaConf.to_container(OmegaConf.load(baseline / "config" / "mappo_homogenous_rnn_smax.yaml"))
    config.update(MAP_NAME=args.map, TOTAL_TIMESTEPS=args.steps, SEED=args.seed)
    if args.num_envs:
        config["NUM_ENVS"] = args.num_envs
    key = jax.random.PRNGKey(args.seed)
    start = time.time()
    train = jax.jit(mappo_rnn_smax.make_train(config)).lower(key).compile()
    compiled = time.time()
    jax.block_until_ready(train(key))
    run_seconds = time.time() - compiled
    steps = len(args.log.read_text().splitlines()) * config["NUM_STEPS"] * config["NUM_ENVS"]  # one row per update
    args.log.with_suffix(".summary.json").write_text(json.dumps(
        {"env_steps": steps, "compile_seconds": compiled - start, "run_seconds": run_seconds}))
    print(f"{args.map}: {steps:,} steps in {run_seconds:.0f} s after a {compiled - start:.0f} s compile; "
          f"metrics in {args.log}")


if __name__ == "__main__":
    main()
