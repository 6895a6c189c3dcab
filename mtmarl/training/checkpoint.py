"""Orbax checkpoints of a training run: periodic ("latest") and best-by-training-return ("best").

Layout inside the run directory::

    checkpoints/latest/<step>/   the last ``keep`` periodic checkpoints
    checkpoints/best/<step>/     the checkpoint with the highest training-task score

Each checkpoint holds the learner carry (the algorithm's train state, whatever
its pytree, the PRNG key and the update count) and a JSON ``meta`` item: the
update count, the stage, the best score so far, the algorithm's description
(``Algorithm.spec``: name, configs, action count), the run's resolved config
and the carry's structure. It describes itself: ``mtmarl.training.restore``
rebuilds the algorithm from ``meta`` alone, and restoring into a carry of
another structure (another algorithm or network) is refused with both named.
Restoring the latest one and continuing gives the same parameters as a run that
was never interrupted.

The best checkpoint is chosen by :func:`train_score`, which reads the
training tasks only: held-out test tasks never influence model selection.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np

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


def _name(key) -> str:
    """One step of a pytree key path as a plain name (field, dict key or list index)."""
    for attr in ("name", "key", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _paths(carry: Carry):
    return [(tuple(_name(k) for k in path), leaf) for path, leaf in jax.tree_util.tree_flatten_with_path(carry)[0]]


def _to_tree(carry: Carry) -> dict[str, Any]:
    """The carry's leaves as nested dicts named by their paths (``state/params/...``, ``key``, ``step``).

    Generic over any algorithm's train state, and readable without a template.
    """
    tree: dict[str, Any] = {}
    for names, leaf in _paths(carry):
        node = tree
        for name in names[:-1]:
            node = node.setdefault(name, {})
        node[names[-1]] = leaf
    return tree


def structure(carry: Carry) -> str:
    """A fingerprint of the carry's pytree structure, stored to refuse restoring into another one."""
    return str(jax.tree.structure(carry))


def _from_tree(tree: dict[str, Any], template: Carry) -> Carry:
    def find(names):
        node = tree
        for name in names:
            node = node[name]
        return np.asarray(node)
    return jax.tree.unflatten(jax.tree.structure(template), [find(names) for names, _ in _paths(template)])


def _legacy_tree(carry: Carry) -> dict[str, Any]:
    """The layout of checkpoints written before the algorithm protocol (a Sable ``TrainState``)."""
    s = carry.state
    tree = {"params": s.params, "opt_state": s.opt_state, "step": carry.step, "key": carry.key}
    if s.target_params is not None:
        tree["target_params"] = s.target_params
    return tree


def _from_legacy(tree: dict[str, Any], template: Carry) -> Carry:
    s = template.state

    def rebuild(item, like):  # Orbax restores containers as dicts/lists: the template's structure, leaf by leaf
        return jax.tree.unflatten(jax.tree.structure(like), jax.tree.leaves(item))

    state = type(s)(rebuild(tree["params"], s.params),
                    None if s.target_params is None else rebuild(tree["target_params"], s.target_params),
                    rebuild(tree["opt_state"], s.opt_state))
    return Carry(state, np.asarray(tree["key"]), np.asarray(tree["step"]))


class Checkpointer:
    """Periodic + best checkpoints of one run (synchronous saves, so a crash never leaves half a step)."""

    def __init__(self, directory: str | Path, keep: int = 2):
        import orbax.checkpoint as ocp

        self.ocp = ocp
        self.directory = Path(directory).resolve()
        # Several processes: only process 0 checkpoints (the carry is the same everywhere), so Orbax must not
        # wait for the others at its barriers; it then leaves creating the directories to us.
        alone = {} if jax.process_count() == 1 else {"create": False, "multiprocessing_options":
                                                     ocp.options.MultiprocessingOptions(
                                                         primary_host=jax.process_index(),
                                                         active_processes={jax.process_index()})}
        if alone:
            for kind in ("latest", "best"):
                (self.directory / kind).mkdir(parents=True, exist_ok=True)
        opts = lambda n: ocp.CheckpointManagerOptions(  # noqa: E731
            **{"max_to_keep": n, "create": True, "enable_async_checkpointing": False, **alone})
        self.latest = ocp.CheckpointManager(self.directory / "latest", options=opts(max(1, keep)))
        self.best = ocp.CheckpointManager(self.directory / "best", options=opts(1))

    def _save(self, manager, step: int, carry: Carry, meta: dict[str, Any]) -> None:
        ocp = self.ocp
        tree = jax.tree.map(np.asarray, _to_tree(carry))
        meta = {**meta, "structure": structure(carry)}
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

    def _step(self, which: str, step: int | None) -> int:
        step = self._manager(which).latest_step() if step is None else step
        if step is None:
            raise UserInputError(f"no {which} checkpoint in {self.directory}")
        return step

    def meta(self, which: str = "latest", step: int | None = None) -> dict:
        """The JSON ``meta`` of a checkpoint alone (what to rebuild before restoring the arrays)."""
        ocp = self.ocp
        step = self._step(which, step)
        out = self._manager(which).restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(out["meta"])

    def restore(self, template: Carry, which: str = "latest", step: int | None = None) -> tuple[Carry, dict]:
        """(carry, meta) of checkpoint ``step`` (default: newest) of kind ``which``.

        ``template`` (host arrays or ``jax.ShapeDtypeStruct``) gives the structure;
        a checkpoint of another structure is refused, naming both.
        """
        ocp = self.ocp
        manager = self._manager(which)
        step = self._step(which, step)
        saved_meta = self.meta(which, step)
        saved = saved_meta.get("structure")
        if saved is None:  # written before checkpoints described themselves: the old Sable layout
            return self._restore_legacy(template, which, step)
        if saved != structure(template):
            algo = (saved_meta.get("algorithm") or {}).get("name", "?")
            raise UserInputError(f"checkpoint {which}/{step} in {self.directory} holds a train state of algorithm "
                                 f"{algo!r} with structure {saved[:300]}..., not the expected "
                                 f"{structure(template)[:300]}...: restore it with the algorithm and network "
                                 f"it was trained with (its meta 'algorithm' entry)")
        abstract = jax.tree.map(lambda x: x if isinstance(x, jax.ShapeDtypeStruct)
                                else ocp.utils.to_shape_dtype_struct(np.asarray(x)), _to_tree(template))
        out = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                            meta=ocp.args.JsonRestore()))
        return _from_tree(out["state"], template), dict(out["meta"])

    def _restore_legacy(self, template: Carry, which: str, step: int) -> tuple[Carry, dict]:
        ocp = self.ocp
        if not all(hasattr(template.state, f) for f in ("params", "target_params", "opt_state")):
            raise UserInputError(f"checkpoint {which}/{step} in {self.directory} predates self-describing "
                                 f"checkpoints and holds a Sable train state (params, target_params, opt_state); "
                                 f"the algorithm restoring it has another state")
        abstract = jax.tree.map(lambda x: x if isinstance(x, jax.ShapeDtypeStruct)
                                else ocp.utils.to_shape_dtype_struct(np.asarray(x)), _legacy_tree(template))
        out = self._manager(which).restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                                         meta=ocp.args.JsonRestore()))
        return _from_legacy(out["state"], template), dict(out["meta"])

    def close(self) -> None:
        self.latest.close()
        self.best.close()


class NoCheckpoints(Checkpointer):
    """What a process other than 0 holds in a multi-process run: it keeps no checkpoints (process 0 does, of
    the same carry) and finds none to resume from (process 0 hands it its carry)."""

    def __init__(self, directory: str | Path, keep: int = 2):
        self.directory = Path(directory).resolve()

    def save_latest(self, step: int, carry: Carry, meta: dict[str, Any]) -> None:
        """Nothing to write: process 0 saves the same carry."""

    def save_best(self, step: int, carry: Carry, meta: dict[str, Any]) -> None:
        """Nothing to write: process 0 saves the same carry."""

    def latest_step(self, which: str = "latest") -> int | None:
        return None

    def close(self) -> None:
        """No checkpoint manager was opened."""
