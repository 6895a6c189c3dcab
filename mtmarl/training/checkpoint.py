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

Integrity: Orbax keeps no checksum of the array data (a flipped byte restores
silently as other numbers), so after each save the sha256 of every file of the
step is written to ``<step>/checksums.json`` (written last, atomically), and
every read (``meta``, ``restore``: evaluation and resuming alike) first checks
them: a changed, missing or unlisted-but-required file is refused in one line
naming it. A checkpoint without ``checksums.json`` (a save cut off between
Orbax's commit and the manifest) loads with a warning; if Orbax then cannot
read it, that too is one line.

Resuming (:meth:`Checkpointer.newest_readable`) takes the newest periodic step
that verifies and reads; a newer one that does not is renamed ``<step>.corrupt``
(Orbax only lists integer step names, so it drops out of the run, and its files
stay for inspection) with one warning line.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np

from mtmarl.data.vault.check import first_bad_file, sha256_file
from mtmarl.errors import UserInputError
from mtmarl.training.engine import Carry

CHECKSUMS = "checksums.json"


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


def write_checksums(step_dir: Path) -> None:
    """Record the sha256 of every file of a saved step in ``<step_dir>/checksums.json`` (atomically)."""
    files = {p.relative_to(step_dir).as_posix(): sha256_file(p)
             for p in sorted(step_dir.rglob("*")) if p.is_file() and p.name != CHECKSUMS}
    tmp = step_dir / f".{CHECKSUMS}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps({"format": 1, "sha256": files}, indent=1))
    os.replace(tmp, step_dir / CHECKSUMS)


def verify_checksums(step_dir: Path, label: str) -> bool:
    """Check a step's files against its ``checksums.json``; False when it has none (a cut-off save).

    Raises :class:`UserInputError` naming the first missing or changed file.
    """
    manifest = step_dir / CHECKSUMS
    if not step_dir.is_dir():
        raise UserInputError(f"checkpoint {label}: its directory {step_dir} is missing")
    if not manifest.is_file():
        return False
    try:
        files = json.loads(manifest.read_text())["sha256"]
        if not isinstance(files, dict) or not files:
            raise ValueError("no files listed")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserInputError(f"checkpoint {label}: {manifest} is unreadable ({err}); the checkpoint cannot be "
                             f"verified") from None
    bad = first_bad_file(step_dir, files)
    if bad is not None:
        path, got, want = bad
        if got is None:
            raise UserInputError(f"checkpoint {label} is incomplete: {path} is missing (listed in {CHECKSUMS})")
        raise UserInputError(f"checkpoint {label} is corrupt: {path} has sha256 {got[:12]}..., "
                             f"{CHECKSUMS} records {want[:12]}...")
    return True


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
        self._checked: set[tuple[str, int]] = set()  # (kind, step) verified by this process

    def _save(self, manager, step: int, carry: Carry, meta: dict[str, Any]) -> None:
        ocp = self.ocp
        tree = jax.tree.map(np.asarray, _to_tree(carry))
        meta = {**meta, "structure": structure(carry)}
        manager.save(int(step), args=ocp.args.Composite(state=ocp.args.StandardSave(tree),
                                                        meta=ocp.args.JsonSave(meta)), force=True)
        manager.wait_until_finished()
        write_checksums(Path(manager.directory) / str(int(step)))
        self._checked -= {("latest", int(step)), ("best", int(step))}  # rewritten: verify it again when read

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

    def newest_readable(self, which: str = "latest") -> int | None:
        """The newest step of ``which`` whose files verify and whose meta reads; each newer step that fails is
        set aside as ``<step>.corrupt`` (one warning line each). None when no step is left."""
        manager = self._manager(which)
        found, moved = None, False
        for step in sorted(manager.all_steps(), reverse=True):
            try:
                self.meta(which, step)
                found = step
                break
            except UserInputError as err:
                path = Path(manager.directory) / str(step)
                aside = path.with_name(f"{step}.corrupt")
                n = 1
                while aside.exists():
                    n += 1
                    aside = path.with_name(f"{step}.corrupt{n}")
                os.replace(path, aside)
                moved = True
                print(f"warning: {err}; set aside as {aside}, trying the step before it", file=sys.stderr, flush=True)
        if moved:
            manager.reload()
        return found

    def resume_point(self) -> tuple[str, int] | None:
        """(kind, step) a resumed run continues from: the newest readable ``latest`` step, else the newest readable
        ``best`` one. None when the run never saved a checkpoint; refused when every saved one is unreadable
        (each is set aside first), so a resume never silently starts over."""
        saved = self.latest_step() is not None or self.latest_step("best") is not None
        for kind in ("latest", "best"):
            step = self.newest_readable(kind)
            if step is not None:
                return kind, step
        if saved:
            raise UserInputError(f"resume=true but no checkpoint in {self.directory} can be read (each was set aside "
                                 f"as <step>.corrupt, see the warnings above); start again with overwrite=true")
        return None

    def verify(self, which: str, step: int) -> None:
        """Refuse a corrupt or incomplete checkpoint (see the module's Integrity); each step is hashed once."""
        if (which, step) in self._checked:
            return
        label = f"{which}/{step} in {self.directory}"
        if not verify_checksums(Path(self._manager(which).directory) / str(step), label):
            print(f"warning: checkpoint {label} has no {CHECKSUMS} (its save was cut off before the manifest); "
                  f"loading it unverified", file=sys.stderr)
        self._checked.add((which, step))

    def _read(self, which: str, step: int, args) -> dict:
        """Orbax's restore of a verified step; what it still cannot read (an unverified step) is one line."""
        self.verify(which, step)
        try:
            return self._manager(which).restore(step, args=args)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
            raise UserInputError(f"checkpoint {which}/{step} in {self.directory} cannot be read "
                                 f"({type(err).__name__}: {first})") from None

    def meta(self, which: str = "latest", step: int | None = None) -> dict:
        """The JSON ``meta`` of a checkpoint alone (what to rebuild before restoring the arrays)."""
        ocp = self.ocp
        step = self._step(which, step)
        out = self._read(which, step, ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(out["meta"])

    def restore(self, template: Carry, which: str = "latest", step: int | None = None) -> tuple[Carry, dict]:
        """(carry, meta) of checkpoint ``step`` (default: newest) of kind ``which``.

        ``template`` (host arrays or ``jax.ShapeDtypeStruct``) gives the structure;
        a checkpoint of another structure is refused, naming both.
        """
        ocp = self.ocp
        step = self._step(which, step)
        saved_meta = self.meta(which, step)
        saved = saved_meta.get("structure")
        if saved is None:
            raise UserInputError(f"checkpoint {which}/{step} in {self.directory} records no carry structure in its "
                                 f"meta, so it was not written by mtmarl.training.checkpoint; it cannot be restored")
        if saved != structure(template):
            algo = (saved_meta.get("algorithm") or {}).get("name", "?")
            raise UserInputError(f"checkpoint {which}/{step} in {self.directory} holds a train state of algorithm "
                                 f"{algo!r} with structure {saved[:300]}..., not the expected "
                                 f"{structure(template)[:300]}...: restore it with the algorithm and network "
                                 f"it was trained with (its meta 'algorithm' entry)")
        abstract = jax.tree.map(lambda x: x if isinstance(x, jax.ShapeDtypeStruct)
                                else ocp.utils.to_shape_dtype_struct(np.asarray(x)), _to_tree(template))
        out = self._read(which, step, ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                         meta=ocp.args.JsonRestore()))
        return _from_tree(out["state"], template), dict(out["meta"])

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

    def newest_readable(self, which: str = "latest") -> int | None:
        return None

    def resume_point(self) -> tuple[str, int] | None:
        return None

    def close(self) -> None:
        """No checkpoint manager was opened."""
