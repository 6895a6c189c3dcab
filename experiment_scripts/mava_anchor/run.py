"""Mava's own feed-forward MAPPO on RWARE tiny-2ag: an anchor for our MAPPO's learning curve and speed.

Why: our MAPPO's curve and env steps/s on tiny-2ag are only meaningful beside a published implementation run on
the same env with the same recipe. This runs Mava's Anakin FF-MAPPO (``mava/systems/ppo/anakin/ff_mappo.py`` and
its Hydra configs, read from a Mava checkout, nothing of it copied here) with our recipe: 64 envs in total
(``arch.num_envs`` per device with ``system.update_batch_size=1``), rollout 32, 4 epochs, 2 minibatches, actor
and critic MLPs [64, 64] tanh. The env is Mava's ``rware`` / ``tiny-2ag`` scenario, whose Jumanji generator and
time limit already equal our ``rware_15.yaml`` tiny-2ag (rows=1, cols=3, height=8, agents=2, sensor 1, request
queue = agents = 2, horizon 500); they are still passed explicitly. Mava's episode return (mean over agents of
the repeated shared reward) equals our team reward. One difference stays: Mava feeds Jumanji's raw view plus a
one-hot agent id, where we rescale the coordinates (``mtmarl.envs.rware.COORD_SCALE``).

Our loop replaces ``run_experiment``'s: it calls Mava's ``learner_setup`` and its pmapped learner, without the
evaluator or logger. Each call runs ``num_updates // arch.num_evaluation`` updates (Mava's split, at least one)
and appends one JSON line: ``env_steps``, ``return`` (mean of the episodes finished in that call, null if none)
and ``seconds``, counted from the end of compilation (the learner is compiled ahead of the first call).

    python experiment_scripts/mava_anchor/run.py --mava <checkout> --extra <site-dir> \\
        --steps 3276800 --seed 0 --log results/mava_anchor/tiny-2ag_seed0.jsonl

Set-up, outside our venv (checkout: Mava 57c8e64, its newest stored snapshot):

    git --git-dir=<fetched Mava> archive HEAD | tar -x -C /tmp/mava
    .venv/bin/pip install --no-deps --target /tmp/mava_extra colorama==0.4.6 tfp-nightly==0.26.0.dev20261027 \\
        decorator==5.3.1 gast==0.7.0 id-marl-eval==0.0.4

Patches for our stack (Mava pins jax 0.4.30 and a Jumanji 0.x fork; here it runs on our jax 0.10.2 and Jumanji
1.1.2, so its RobotWarehouse is the very env our adapter wraps). Before Mava is imported: ``mava.utils.make_env``
and ``mava.wrappers`` import the libraries of envs we do not run (gigastep, matrax, brax through jaxmarl's MABrax)
and ``mava.utils.logger`` imports tensorboard_logger (protobuf 3 code, unused here); these get empty stand-in
modules, and Jumanji 1.x's ``Connector`` is also named ``MaConnector`` (only a type annotation uses it). After:
Jumanji 1.x's ``observation_spec``/``action_spec`` are properties that Mava calls as methods, so the env that
``make_env`` builds gets a thin wrapper with them as methods.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import types
from pathlib import Path

SYSTEM = Path("mava/systems/ppo/anakin/ff_mappo.py")
STAND_INS = ("gigastep", "gigastep.gigastep_env", "matrax", "matrax.env", "brax", "brax.envs",
             "jaxmarl.environments.mabrax", "tensorboard_logger")

# Our tiny-2ag (mtmarl/configs/tasks/rware_15.yaml with mtmarl.envs.rware.RwareEnv's defaults).
TINY_2AG = {"shelf_rows": 1, "shelf_columns": 3, "column_height": 8, "num_agents": 2, "sensor_range": 1,
            "request_queue_size": 2}
HORIZON = 500


def stand_in(name: str) -> None:
    """An empty module whose every attribute is a fresh placeholder class."""
    module = types.ModuleType(name)
    module.__getattr__ = lambda attr: type(attr, (), {})
    sys.modules[name] = module


def before_import() -> None:
    """Stand-ins for the unused libraries, and Jumanji 1.x's ``Connector`` under its old name ``MaConnector``."""
    for name in STAND_INS:
        stand_in(name)
    import jumanji.environments.routing.connector as connector

    connector.MaConnector = connector.Connector


def spec_methods(make_env: types.ModuleType) -> None:
    """Jumanji 1.x's specs are properties, Mava calls them as methods (as in the 0.x fork it was written for):
    what Mava's ``make_env`` builds gets a thin wrapper whose specs are methods again."""
    import jumanji
    from jumanji.wrappers import Wrapper

    class SpecMethods(Wrapper):
        def observation_spec(self):
            return self._env.observation_spec

        def action_spec(self):
            return self._env.action_spec

    make_env.jumanji = types.SimpleNamespace(make=lambda *a, **kw: SpecMethods(jumanji.make(*a, **kw)))


def overrides(args: argparse.Namespace, mava: Path, envs_per_device: int) -> list[str]:
    torso = "network.{}_network.pre_torso"
    task = ",".join(f"{k}:{v}" for k, v in TINY_2AG.items())
    return [
        f"hydra.searchpath=[file://{mava / 'mava' / 'configs'}]",
        "env=rware", "env/scenario=tiny-2ag", f"env.scenario.task_config={{{task}}}",
        f"env.kwargs.time_limit={HORIZON}",
        f"arch.num_envs={envs_per_device}", "system.update_batch_size=1",
        "system.rollout_length=32", "system.ppo_epochs=4", "system.num_minibatches=2",
        f"system.total_timesteps={int(args.steps)}", f"system.seed={args.seed}",
        *([f"system.actor_lr={args.lr}", f"system.critic_lr={args.lr}"] if args.lr else []),
        *(f"{torso.format(net)}.{key}={value}" for net in ("actor", "critic")
          for key, value in (("layer_sizes", "[64,64]"), ("activation", "tanh"))),
        "logger.use_console=False", "logger.checkpointing.save_model=False",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mava", type=Path, required=True, help="a Mava checkout (its mava/ package)")
    ap.add_argument("--extra", type=Path, default=None, help="site dir with colorama, tfp-nightly, marl_eval")
    ap.add_argument("--steps", type=float, default=3276800)
    ap.add_argument("--num-envs", type=int, default=64, help="in total, over all devices")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=None, help="actor and critic learning rate (default: Mava's)")
    ap.add_argument("--log", type=Path, required=True)
    args = ap.parse_args()
    mava = args.mava.resolve()
    if not (mava / SYSTEM).is_file():
        sys.exit(f"--mava {args.mava}: no {SYSTEM} there")
    sys.path[:0] = [*([str(args.extra)] if args.extra else []), str(mava)]
    before_import()
    import jax
    import numpy as np
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from mava.systems.ppo.anakin import ff_mappo  # the system, from the checkout
    from mava.utils import make_env
    from mava.utils.total_timestep_checker import check_total_timesteps
    from mava.wrappers.episode_metrics import get_final_step_metrics

    spec_methods(make_env)

    devices = jax.device_count()
    if args.num_envs % devices:
        sys.exit(f"--num-envs {args.num_envs} does not split over {devices} devices")
    with initialize_config_dir(config_dir=str(mava / "mava" / "configs" / "default"), version_base="1.2"):
        config = compose("ff_mappo", overrides=overrides(args, mava, args.num_envs // devices))
    OmegaConf.set_struct(config, False)
    config.logger.system_name = "ff_mappo"

    env, _ = make_env.make(config=config, add_global_state=True)
    key, _, actor_key, critic_key = jax.random.split(jax.random.PRNGKey(args.seed), 4)  # as run_experiment
    learn, _, state = ff_mappo.learner_setup(env, (key, actor_key, critic_key), config)
    config = check_total_timesteps(config)
    per_call = max(1, config.system.num_updates // config.arch.num_evaluation)
    config.system.num_updates_per_eval = per_call
    calls = config.system.num_updates // per_call
    steps_per_call = per_call * config.system.rollout_length * args.num_envs

    args.log.parent.mkdir(parents=True, exist_ok=True)
    args.log.unlink(missing_ok=True)
    compile_start = time.time()
    learn = learn.lower(state).compile()
    start = time.time()
    mlps = [f"{list(n.pre_torso.layer_sizes)} {n.pre_torso.activation}"
            for n in (config.network.actor_network, config.network.critic_network)]
    print(f"Mava ff_mappo on {config.env.scenario.task_name} {dict(config.env.scenario.task_config)}, "
          f"time limit {config.env.kwargs.time_limit}; {devices} device(s) x {config.arch.num_envs} envs, rollout "
          f"{config.system.rollout_length}, {config.system.ppo_epochs} epochs x {config.system.num_minibatches} "
          f"minibatches, lr {config.system.actor_lr} / {config.system.critic_lr} (actor / critic), actor MLP "
          f"{mlps[0]}, critic MLP {mlps[1]}; compiled in {start - compile_start:.0f} s; "
          f"{calls} calls of {per_call} updates ({steps_per_call:,} env steps each)", flush=True)
    with args.log.open("a") as log:
        for call in range(calls):
            out = jax.block_until_ready(learn(state))
            state = out.learner_state
            episodes, finished = get_final_step_metrics(dict(out.episode_metrics))
            row = {"env_steps": (call + 1) * steps_per_call,
                   "return": float(np.mean(episodes["episode_return"])) if finished else None,
                   "seconds": round(time.time() - start, 3)}
            log.write(json.dumps(row) + "\n")
            log.flush()
    seconds = time.time() - start
    print(f"tiny-2ag seed {args.seed}: {calls * steps_per_call:,} env steps in {seconds:.0f} s after compiling, "
          f"{calls * steps_per_call / seconds:,.0f} env steps/s; last return {row['return']}; log {args.log}")


if __name__ == "__main__":
    main()
