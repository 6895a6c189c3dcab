"""Trained policies back from a run directory (for evaluation outside the training run).

``load_trained(run_dir)`` rebuilds the algorithm from the checkpoint's own
description (the exact configs trained, including the HL-Gauss support taken
from the data), restores
the best checkpoint (else the latest) and returns an evaluator ``Policy``,
its params, the algorithm name and the run's task-set config. The network's
observation input has the run's padded size (``info["obs_dim"]``): tasks with
smaller observations are evaluated zero-padded, larger ones do not fit;
``info["layout"]`` is the run's whole padded layout (entity groups, targeted
actions), into which evaluation pads a task (``mtmarl.evaluation.trained``). The
agent count is free (retention over agents has no maximum).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from mtmarl.algos import registry
from mtmarl.config_check import population_seeds
from mtmarl.errors import UserInputError
from mtmarl.evaluation.references import default_path
from mtmarl.training.checkpoint import Checkpointer
from mtmarl.training.engine import Carry
from mtmarl.training.rundir import CONFIG_NAME
from mtmarl.training.policy import make_policy


def load_trained(run_dir: str | Path, which: str | None = None, greedy: bool | None = None,
                 seed: int | None = None):
    """(policy, params, algo name, info) from a training run directory.

    ``which``: 'best', 'latest' or None (best if there is one, else latest).
    ``greedy``: arg-max actions; None = as the run evaluated (its ``eval.greedy``).
    ``info`` is :func:`load_run`'s plus ``greedy``; ``seed`` picks one seed of a population run.
    """
    algo, params, cfg, info = load_run(run_dir, which, seed)
    if greedy is None:
        greedy = bool((cfg.get("eval") or {}).get("greedy", False))
    return make_policy(algo, greedy), params, algo.name, {**info, "greedy": greedy}


def check_run_seed(run_dir: str | Path, seed: int | None) -> None:
    """Refuse ``seed`` (``checkpoint_seed=`` / ``--seed``) for a one-seed run, from its ``config.yaml``, before
    anything is loaded or written (:func:`load_run` checks again against the checkpoint's own config)."""
    path = Path(run_dir).expanduser() / CONFIG_NAME
    if seed is not None and path.is_file():
        import yaml

        cfg = yaml.safe_load(path.read_text()) or {}
        if population_seeds(cfg) is None:
            _check_one_seed(Path(run_dir), cfg, seed)


def _check_one_seed(run_dir: Path, cfg, seed: int | None) -> None:
    if seed is not None and seed != cfg.get("seed", 0):
        raise UserInputError(f"{run_dir} trained one seed ({cfg.get('seed', 0)}), not a population "
                             f"(training.population > 1), so it has no seed {seed}: leave the seed out "
                             f"(`mtmarl.evaluate checkpoint_seed=`, `mtmarl.diagnose --seed`)")


def load_run(run_dir: str | Path, which: str | None = None, seed: int | None = None):
    """(algo, acting params, resolved run config, info) of a training run directory (``which`` as above).

    A run that trained several seeds side by side (``training.population``) holds them all in one checkpoint;
    ``seed`` names the one to load (required there; for a one-seed run it may only name that run's seed).

    The checkpoint describes itself (``mtmarl.training.checkpoint``): the
    algorithm and the run config come from its meta.
    ``info`` holds ``tasks`` (the run's task-set config, or None for an ad-hoc
    ``task``), ``task``, ``checkpoint`` (kind, update count, stage and meta), ``seed``,
    ``obs_dim`` and ``n_actions`` (the network's input and output sizes), ``layout`` (the run's padded
    ``EnvSpec``: the observation groups and actions the network reads and writes) and ``references``.
    """
    run_dir = Path(run_dir).expanduser()
    if not (run_dir / "checkpoints").is_dir():
        raise UserInputError(f"{run_dir} is not a training run directory (no checkpoints/); "
                             f"pass the directory `python -m mtmarl.train` wrote")
    ckpt = Checkpointer(run_dir / "checkpoints")
    try:
        if which is None:
            which = "best" if ckpt.latest_step("best") is not None else "latest"
        step = ckpt.latest_step(which)
        meta = ckpt.meta(which)
        spec, cfg = meta.get("algorithm"), meta.get("config")
        if spec is None or cfg is None:
            raise UserInputError(f"checkpoint {which}/{step} in {run_dir} does not describe its algorithm and run "
                                 f"config (its meta has no 'algorithm' / 'config'), so it was not written by "
                                 f"`python -m mtmarl.train`")
        algo = registry.from_spec(spec)
        layout = run_task_set(cfg).env_spec
        obs_dim = layout.obs_dim
        sample = jax.ShapeDtypeStruct((1, 1, 1, obs_dim), jnp.float32)
        state = jax.eval_shape(algo.init, jax.ShapeDtypeStruct((2,), jnp.uint32), sample)
        template = Carry(state, jax.ShapeDtypeStruct((2,), jnp.uint32), jax.ShapeDtypeStruct((), jnp.int32))
        seeds = population_seeds(cfg)
        index = None
        if seeds is not None:
            if seed not in seeds:
                raise UserInputError(f"{run_dir} trained seeds {seeds} side by side (training.population="
                                     f"{len(seeds)}); name one of them (got {seed}): `mtmarl.diagnose --seed S`, "
                                     f"`mtmarl.evaluate checkpoint_seed=S`, "
                                     f"`mtmarl.finetune online.init_seed=S`")
            index = seeds.index(seed)
            template = jax.tree.map(lambda x: jax.ShapeDtypeStruct((len(seeds), *x.shape), x.dtype), template)
        else:
            _check_one_seed(run_dir, cfg, seed)
        carry, meta = ckpt.restore(template, which)
        if index is not None:
            carry = jax.tree.map(lambda x: x[index], carry)
            if isinstance(meta.get("best_step"), list) and which == "best":  # a composite: this seed's own update
                step = meta["best_step"][index]
    finally:
        ckpt.close()
    info = {"tasks": cfg.get("tasks"), "task": cfg.get("task"),
            "seed": cfg.get("seed", 0) if index is None else seed,
            "checkpoint": {"kind": which, "step": step, "stage": meta.get("stage"), "meta": meta},
            "obs_dim": obs_dim, "n_actions": int(spec["n_actions"]), "layout": layout,
            # the references the run normalised by (its own setting, else its data root's)
            "references": str(cfg.get("references") or default_path((cfg.get("data") or {}).get("root")))}
    return algo, algo.acting_params(carry.state), cfg, info


def run_task_set(cfg: dict[str, Any]):
    """The task set a run trained on (its ad-hoc ``task`` or its ``tasks`` config)."""
    from mtmarl import tasks as task_registry

    if cfg.get("task"):
        return task_registry.load(str(cfg["task"]))
    return task_registry.from_config(cfg["tasks"])
