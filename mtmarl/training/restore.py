"""Trained policies back from a run directory (for evaluation outside the training run).

``load_trained(run_dir)`` rebuilds the algorithm from ``algo.json`` (the exact
configs trained, including the HL-Gauss support taken from the data), restores
the best checkpoint (else the latest) and returns an evaluator ``Policy``,
its params, the algorithm name and the run's task-set config. The network's
observation input has the run's padded size (``info["obs_dim"]``): tasks with
smaller observations are evaluated zero-padded, larger ones do not fit. The
agent count is free (retention over agents has no maximum).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from omegaconf import OmegaConf

from mtmarl.algos.common import load_algo_config, make_algo
from mtmarl.errors import UserInputError
from mtmarl.evaluation.references import default_path
from mtmarl.networks.sable import SableConfig
from mtmarl.training.checkpoint import Checkpointer
from mtmarl.training.engine import Carry, _ObsOnly as _Obs
from mtmarl.training.loop import ALGO_FILE
from mtmarl.training.rundir import CONFIG_NAME
from mtmarl.training.policy import make_policy


def load_trained(run_dir: str | Path, which: str | None = None, greedy: bool | None = None):
    """(policy, params, algo name, info) from a training run directory.

    ``which``: 'best', 'latest' or None (best if there is one, else latest).
    ``greedy``: arg-max actions; None = as the run evaluated (its ``eval.greedy``).
    ``info`` is :func:`load_run`'s plus ``greedy``.
    """
    algo, params, cfg, info = load_run(run_dir, which)
    if greedy is None:
        greedy = bool((cfg.get("eval") or {}).get("greedy", False))
    return make_policy(algo, greedy), params, algo.name, {**info, "greedy": greedy}


def load_run(run_dir: str | Path, which: str | None = None):
    """(algo, params, resolved run config, info) of a training run directory (``which`` as above).

    ``info`` holds ``tasks`` (the run's task-set config, or None for an ad-hoc
    ``task``), ``task``, ``checkpoint`` (kind and update count), ``seed``,
    ``obs_dim`` and ``n_actions`` (the network's input and output sizes) and ``references``.
    """
    run_dir = Path(run_dir).expanduser()
    algo_file, cfg_file = run_dir / ALGO_FILE, run_dir / CONFIG_NAME
    if not algo_file.is_file() or not cfg_file.is_file():
        raise UserInputError(f"{run_dir} is not a training run directory (no {ALGO_FILE} / {CONFIG_NAME}); "
                             f"pass the directory `python -m mtmarl.train` wrote")
    spec = json.loads(algo_file.read_text())
    cfg = OmegaConf.to_container(OmegaConf.load(cfg_file), resolve=True)
    algo_cfg = load_algo_config(spec["name"], **{k: v for k, v in spec["algo"].items() if k != "name"})
    algo = make_algo(spec["name"], algo_cfg, SableConfig.from_dict(spec["network"]), spec["n_actions"])

    obs_dim = _obs_dim(cfg)
    sample = _Obs(jax.ShapeDtypeStruct((1, 1, 1, obs_dim), jnp.float32))
    state = jax.eval_shape(algo.init, jax.ShapeDtypeStruct((2,), jnp.uint32), sample)
    template = Carry(state, jax.ShapeDtypeStruct((2,), jnp.uint32))
    ckpt = Checkpointer(run_dir / "checkpoints")
    try:
        if which is None:
            which = "best" if ckpt.latest_step("best") is not None else "latest"
        step = ckpt.latest_step(which)
        carry, meta = ckpt.restore(template, which)
    finally:
        ckpt.close()
    info = {"tasks": cfg.get("tasks"), "task": cfg.get("task"), "seed": cfg.get("seed", 0),
            "checkpoint": {"kind": which, "step": step, "meta": meta}, "obs_dim": obs_dim,
            "n_actions": int(spec["n_actions"]),
            # the references the run normalised by (its own setting, else its data root's)
            "references": str(cfg.get("references") or default_path((cfg.get("data") or {}).get("root")))}
    return algo, carry.state.params, cfg, info


def run_task_set(cfg: dict[str, Any]):
    """The task set a run trained on (its ad-hoc ``task`` or its ``tasks`` config)."""
    from mtmarl import tasks as task_registry

    if cfg.get("task"):
        return task_registry.load(str(cfg["task"]))
    return task_registry.from_config(cfg["tasks"])


def _obs_dim(cfg: dict[str, Any]) -> int:
    return run_task_set(cfg).padding["obs_dim"]
