"""Orbax checkpoints of a training run: periodic ("latest") and best-by-training-return ("best").

Layout inside the run directory::

    checkpoints/latest/<step>/   the last ``keep`` periodic checkpoints
    checkpoints/best/<step>/     the checkpoint with the highest training-task score

Each checkpoint holds the learner carry (params, target params, optimiser
state, update step, PRNG key) and a JSON ``meta`` item (update count, the
best score so far, the evaluation rows). Restoring the latest one and
continuing gives the same parameters as a run that was never interrupted.

The best checkpoint is chosen by :func:`train_score`, which reads the
training tasks only: held-out test tasks never influence model selection.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np

from mtmarl.algos.common import TrainState
from mtmarl.errors import UserInputError
from mtmarl.training.engine import Carry


def train_score(rows: Sequence[dict[str, Any]]) -> float:
    """Model-selection score: mean over TRAINING-split rows only (test rows are ignored).

    Uses the normalised return when every training task has one, else the raw
    mean return (mixing the two would weigh tasks arbitrarily).
    """
    train = [r for r in rows if r.get("split") == "train"]
    if not train:
        raise ValueError("no training-task rows to select a checkpoint by")
    if all(r.get("normalised_return") is not None for r in train):
        return float(np.mean([r["normalised_return"] for r in train]))
    return float(np.mean([r["mean_return"] for r in train]))


def is_better(score: float, best: float | None) -> bool:
    return math.isfinite(score) and (best is None or score > best)


def _to_tree(carry: Carry) -> dict[str, Any]:
    s = carry.state
    tree = {"params": s.params, "opt_state": s.opt_state, "step": s.step, "key": carry.key}
    if s.target_params is not None:
        tree["target_params"] = s.target_params
    return tree


def _from_tree(tree: dict[str, Any], template: Carry) -> Carry:
    s = template.state
    # Orbax restores containers as dicts/lists; rebuild the template's structure leaf by leaf.
    def rebuild(item, like):
        return jax.tree.unflatten(jax.tree.structure(like), jax.tree.leaves(item))
    state = TrainState(rebuild(tree["params"], s.params),
                       None if s.target_params is None else rebuild(tree["target_params"], s.target_params),
                       rebuild(tree["opt_state"], s.opt_state), np.asarray(tree["step"]))
    return Carry(state, np.asarray(tree["key"]))


class Checkpointer:
    """Periodic + best checkpoints of one run (synchronous saves, so a crash never leaves half a step)."""

    def __init__(self, directory: str | Path, keep: int = 2):
        import orbax.checkpoint as ocp

        self.ocp = ocp
        self.directory = Path(directory).resolve()
        opts = lambda n: ocp.CheckpointManagerOptions(  # noqa: E731
            max_to_keep=n, create=True, enable_async_checkpointing=False)
        self.latest = ocp.CheckpointManager(self.directory / "latest", options=opts(max(1, keep)))
        self.best = ocp.CheckpointManager(self.directory / "best", options=opts(1))

    def _save(self, manager, step: int, carry: Carry, meta: dict[str, Any]) -> None:
        ocp = self.ocp
        tree = jax.tree.map(np.asarray, _to_tree(carry))
        manager.save(int(step), args=ocp.args.Composite(state=ocp.args.StandardSave(tree),
                                                        meta=ocp.args.JsonSave(meta)), force=True)
        manager.wait_until_finished()

    def save_latest(self, step: int, carry: Carry, meta: dict[str, Any]) -> None:
        self._save(self.latest, step, carry, meta)

    def save_best(self, step: int, carry: Carry, meta: dict[str, Any]) -> None:
        self._save(self.best, step, carry, meta)

    def latest_step(self, which: str = "latest") -> int | None:
        return self._manager(which).latest_step()

    def _manager(self, which: str):
        if which not in ("latest", "best"):
            raise UserInputError(f"checkpoint kind must be 'latest' or 'best', got {which!r}")
        return self.latest if which == "latest" else self.best

    def restore(self, template: Carry, which: str = "latest", step: int | None = None) -> tuple[Carry, dict]:
        """(carry, meta) of checkpoint ``step`` (default: newest) of kind ``which``."""
        ocp = self.ocp
        manager = self._manager(which)
        step = manager.latest_step() if step is None else step
        if step is None:
            raise UserInputError(f"no {which} checkpoint in {self.directory}")
        abstract = jax.tree.map(lambda x: x if isinstance(x, jax.ShapeDtypeStruct)
                                else ocp.utils.to_shape_dtype_struct(np.asarray(x)), _to_tree(template))
        out = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                            meta=ocp.args.JsonRestore()))
        return _from_tree(out["state"], template), dict(out["meta"])

    def close(self) -> None:
        self.latest.close()
        self.best.close()
