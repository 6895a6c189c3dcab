"""Run-directory ownership: one training per directory, and no run overwritten or changed by accident.

Why: without these checks two trainings started in one directory interleave
their checkpoints and metrics, rerunning a finished run silently replaces it
(leaving its checkpoints behind), and a resume with a changed config rewrites
``config.yaml`` before failing, so the original cannot be resumed.

* :class:`RunDirLock` holds an ``flock`` on ``<run dir>/.lock`` for the whole
  run; the file names the owner (pid, host, start time). The kernel drops the
  lock when its process dies, so a lock file still naming an owner while the
  lock is free is stale and is taken over with a warning. Every command that
  writes a directory (train, evaluate, diagnose, collect) takes it; one that
  fails removes the lock file and the directory again if it created them.
* :func:`prepare` runs under the lock before anything is written: a directory
  holding a run needs ``resume=true`` (same config) or ``overwrite=true``
  (the old run's files are removed first); a refused request writes nothing.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import Any, Mapping

import yaml

from mtmarl.atomic import atomic_write_text
from mtmarl.errors import UserInputError

LOCK_NAME = ".lock"
CONFIG_NAME = "config.yaml"
METRICS_NAME = "metrics.jsonl"
# What a training run writes; overwrite=true removes exactly these.
RUN_FILES = (CONFIG_NAME, METRICS_NAME, "algo.json", "run.json", "results.json", "summary.json", "curves.png")
RUN_DIRS = ("checkpoints", ".neptune")
RUN_GLOBS = ("events.out.tfevents.*",)  # TensorBoard: one event file per start of the run (resumes add one)
# Settings a resume may change: how the run is logged, evaluated, checkpointed, fed, extended, or spread over
# devices and processes; none of them changes the parameters trained (devices, processes: data parallelism is
# exact up to float rounding; a resumed multi-node job gets other nodes, so another coordinator address).
RESUMABLE_CHANGES = ("resume", "overwrite", "logger", "eval", "distributed", "training.updates", "training.devices",
                     "training.log_every", "training.eval_every", "training.eval_episodes",
                     "training.eval_splits", "training.checkpoint_every", "training.keep_checkpoints",
                     "data.hub", "data.hub_manifest", "data.verify")


class RunDirLock:
    """Exclusive ownership of a run directory (a context manager); creates the directory.

    ``elsewhere``: how the user names another directory (in the refusals). Leaving the context on an exception
    removes what acquiring created (the lock file; the directory, if it is empty again), so a failed command
    leaves a directory as it found it; ``tidy``: the lock file it created goes on success too (a data
    directory, whose files other tools list).
    """

    def __init__(self, run_dir: str | Path, elsewhere: str = "choose another hydra.run.dir", tidy: bool = False):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.elsewhere = elsewhere
        self.tidy = tidy
        self._fd: int | None = None
        self._created: list[Path] = []

    def acquire(self) -> "RunDirLock":
        missing = [p for p in (self.run_dir, *self.run_dir.parents) if not p.exists()]
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            had_lock = self.path.exists()
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            _remove_new_dirs(missing)
            raise UserInputError(f"cannot use run dir {self.run_dir}: {err.strerror or err} "
                                 f"({self.elsewhere})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read_owner(fd)
            os.close(fd)
            raise UserInputError(f"run dir {self.run_dir} is in use by {_describe(owner)}; wait for that run "
                                 f"to end or {self.elsewhere}") from None
        self._created = ([] if had_lock else [self.path]) + missing
        stale = _read_owner(fd)
        if stale:
            gone = "no longer running" if not _alive(stale) else "did not release it"
            print(f"warning: taking over the stale lock of {_describe(stale)} in {self.run_dir} ({gone})",
                  file=sys.stderr)
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": datetime.datetime.now().isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self, discard: bool = False) -> None:
        """Empty the file (a clean exit leaves no owner named), then drop the lock.

        ``discard``: also remove what :meth:`acquire` created (the lock file, removed while still held, and
        the directories it made, where empty)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):  # (a full disk): releasing must not become a second error
            os.ftruncate(self._fd, 0)
        if (discard or self.tidy) and self._created and self._created[0] == self.path:
            self.path.unlink(missing_ok=True)  # while still held: a process that opened it meanwhile is refused
        if discard:
            _remove_new_dirs([p for p in self._created if p != self.path])
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "RunDirLock":
        return self.acquire()

    def __exit__(self, kind, *exc) -> None:
        self.release(discard=kind is not None and not issubclass(kind, SystemExit))


def _remove_new_dirs(dirs: list[Path]) -> None:
    """Remove directories this process created (innermost first), each only while empty."""
    for path in dirs:
        try:
            path.rmdir()
        except OSError:
            return  # not empty (or gone): the directories above it hold it, so they stay too


def drop_new_dir(run_dir: Path, since: float) -> None:
    """Remove ``run_dir`` if it is empty and was made after ``since`` (Hydra creates a command's run dir
    before the command runs: a refused command takes back the one it got, and keeps one that was there)."""
    with contextlib.suppress(OSError):  # best effort: the refusal itself is what the user must see
        if run_dir.stat().st_ctime >= since and not any(run_dir.iterdir()):
            run_dir.rmdir()


def _read_owner(fd: int) -> dict[str, Any] | None:
    raw = os.pread(fd, 4096, 0)
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return {"pid": "?", "host": "?", "started": "?"}


def _describe(owner: Mapping[str, Any] | None) -> str:
    if not owner:
        return "another process"
    return f"pid {owner.get('pid')} on {owner.get('host')} (started {owner.get('started')})"


def _alive(owner: Mapping[str, Any]) -> bool:
    if owner.get("host") != socket.gethostname() or not isinstance(owner.get("pid"), int):
        return False
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ----------------------------------------------------------------------------------------- run state

def latest_checkpoint(run_dir: Path) -> int | None:
    """The newest finished periodic checkpoint (Orbax names a finished step directory by its number)."""
    latest = run_dir / "checkpoints" / "latest"
    steps = [int(p.name) for p in latest.iterdir() if p.name.isdigit()] if latest.is_dir() else []
    return max(steps, default=None)


def resume_step(run_dir: Path) -> int | None:
    """The update a resume continues from (:meth:`Checkpointer.resume_point`, which sets unreadable steps aside)."""
    from mtmarl.training.checkpoint import Checkpointer

    if not (run_dir / "checkpoints").is_dir():
        return None
    ckpt = Checkpointer(run_dir / "checkpoints")
    try:
        point = ckpt.resume_point()
    finally:
        ckpt.close()
    return None if point is None else point[1]


def holds_training(run_dir: Path) -> bool:
    """True for a directory ``mtmarl.train`` wrote (its config, metrics or checkpoints), finished or not."""
    return any((run_dir / name).exists() for name in (CONFIG_NAME, METRICS_NAME, "checkpoints"))


def discard_unstarted(run_dir: Path) -> bool:
    """Remove the run files of a fresh run that failed before its first checkpoint, so that the same command
    can simply be run again (a run with a checkpoint stays: it resumes). True if anything was removed."""
    if latest_checkpoint(run_dir) is not None:
        return False
    removed = False
    for name in RUN_FILES:
        with contextlib.suppress(FileNotFoundError):
            (run_dir / name).unlink()
            removed = True
    for pattern in RUN_GLOBS:
        for path in run_dir.glob(pattern):
            path.unlink(missing_ok=True)
            removed = True
    for name in RUN_DIRS:
        if (run_dir / name).exists():
            shutil.rmtree(run_dir / name, ignore_errors=True)
            removed = True
    return removed


def holds_run(run_dir: Path) -> bool:
    """True once a run trained here: a checkpoint, a metrics record or results.

    A directory with only ``config.yaml`` (a run that failed while loading its data)
    holds nothing worth protecting, so starting again there needs no flag.
    """
    metrics = run_dir / METRICS_NAME
    return (latest_checkpoint(run_dir) is not None or (run_dir / "results.json").exists()
            or (metrics.exists() and metrics.stat().st_size > 0))


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, Mapping):
        return {prefix[:-1]: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flatten(value, f"{prefix}{key}."))
    return out


def _same(x: Any, y: Any) -> bool:
    return x == y or (isinstance(x, float) and isinstance(y, float) and x != x and y != y)  # nan == nan here


def config_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``key (old -> new)`` for every setting that differs, except those a resume may change."""
    a, b = _flatten(old), _flatten(new)
    out = []
    for key in sorted(set(a) | set(b)):
        if any(key == k or key.startswith(k + ".") for k in RESUMABLE_CHANGES):
            continue
        if not _same(a.get(key, "<absent>"), b.get(key, "<absent>")):
            out.append(f"{key} ({a.get(key, '<absent>')!r} -> {b.get(key, '<absent>')!r})")
    return out


def truncate_metrics(path: Path, step: int) -> int:
    """Drop ``metrics.jsonl`` records after update ``step`` (atomically); returns how many were dropped."""
    if not path.exists():
        return 0
    lines = path.read_text().splitlines()
    kept = []
    for line in lines:
        try:
            if int(json.loads(line)["step"]) <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            pass  # a line cut by a kill mid-write
    atomic_write_text(path, "".join(f"{line}\n" for line in kept))
    return len(lines) - len(kept)


def prepare(run_dir: Path, cfg: Mapping[str, Any], config_text: str) -> int | None:
    """Apply resume / overwrite to a locked run directory, then write ``config.yaml``.

    Returns the update the run resumes from (None: a fresh start). Every refusal
    happens before the first write, so a refused directory is left as it was.
    """
    resume, overwrite = bool(cfg.get("resume")), bool(cfg.get("overwrite"))
    start = None
    if holds_run(run_dir):
        step = latest_checkpoint(run_dir)
        if overwrite:
            for name in RUN_FILES:
                (run_dir / name).unlink(missing_ok=True)
            for name in RUN_DIRS:
                shutil.rmtree(run_dir / name, ignore_errors=True)
            for pattern in RUN_GLOBS:
                for path in run_dir.glob(pattern):
                    path.unlink(missing_ok=True)
            print(f"overwrite=true: removed the previous run in {run_dir}")
        elif resume:
            stored = run_dir / CONFIG_NAME
            if stored.exists():
                try:
                    saved = yaml.safe_load(stored.read_text())
                except yaml.YAMLError as err:
                    saved = err
                if not isinstance(saved, dict) or not saved:
                    # an empty or broken file: comparing it would list every key as changed
                    raise UserInputError(f"resume=true refused: {stored} is empty or not a config mapping, so "
                                         f"this run's settings cannot be checked against it; restore the file, "
                                         f"or start again with overwrite=true")
                changes = config_changes(saved, cfg)
                if changes:
                    raise UserInputError(
                        f"resume=true refused: the config differs from {stored} in {'; '.join(changes)}. "
                        f"Resume with the run's own settings, or start a new run in another hydra.run.dir")
            start = resume_step(run_dir) or 0
            truncate_metrics(run_dir / METRICS_NAME, start)
        else:
            state = ("a finished run" if (run_dir / "results.json").exists() else
                     f"a partial run (checkpoint at update {step})" if step is not None else "a partial run")
            raise UserInputError(f"run dir {run_dir} already holds {state}; pass resume=true to continue it, "
                                 f"overwrite=true to replace it, or choose another hydra.run.dir")
    atomic_write_text(run_dir / CONFIG_NAME, config_text)
    return start
