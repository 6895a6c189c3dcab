"""Per-task reference returns used to normalise evaluation returns.

The data pipeline writes ``vault_data/references.json``: a mapping from a task
(its ad-hoc string, e.g. ``rware:rows=2,cols=3,height=8,agents=4``, or its
name) to at least ``{"return": <final online return>}``. The multi-task Oryx paper normalises
each task's return by the online system's final return on it.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
from pathlib import Path
from typing import Any

from mtmarl.errors import UserInputError
from mtmarl.tasks import TaskSpec

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "vault_data" / "references.json"


def read_entries(path: str | Path) -> dict[str, Any]:
    """The whole entries (return, initial_return, env_steps, ...) by task key; {} if no file."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UserInputError(f"reference file {path} is malformed: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise UserInputError(f"reference file {path} is malformed: expected an object keyed by task")
    return data


def merge_entry(path: str | Path, key: str, entry: dict[str, Any]) -> None:
    """Add/replace one task's entry, keeping the others.

    Atomic (temp file + rename) so a crash never leaves half a file, and serialised by an
    exclusive lock on a sidecar file so collectors of different task sets running at once
    (``make -j2 data``) never drop each other's entries in the read-modify-write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = read_entries(path)
        data[key] = entry
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)


def default_path(data_root: str | Path | None) -> Path:
    """``<data_root>/references.json`` when it exists, else the bundled ``vault_data/references.json``.

    References belong to the data they came with: the full-size data (``make data``) has its
    own, made by longer online training, so training on it normalises by them by default.
    """
    candidate = Path(data_root) / "references.json" if data_root else None
    return candidate if candidate is not None and candidate.is_file() else DEFAULT_PATH


MIN_REFERENCE = 1e-6  # below it a normalised return (return / reference) is noise blown up, not a score


def check_reference(key: str, value: Any, where: str | Path) -> float:
    """A reference return as a float: a number (not a bool), finite, 0 (no reference: returns stay raw) or at
    least ``MIN_REFERENCE``; anything else would flip or blow up every normalised return of the task."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < 0 or 0 < value < MIN_REFERENCE:
        raise UserInputError(f"reference file {where}: task {key} has return {value!r}; want a finite number >= "
                             f"{MIN_REFERENCE:g} (the online learner's final return that normalises the task), or 0 "
                             f"for none")
    return float(value)


def load_references(path: str | Path | None = None) -> dict[str, float]:
    """Reference returns by task key (each checked by :func:`check_reference`); an absent file means none."""
    path = Path(path) if path else DEFAULT_PATH
    try:
        return {k: check_reference(k, v["return"] if isinstance(v, dict) else v, path)
                for k, v in read_entries(path).items()}
    except (KeyError, TypeError) as err:
        raise UserInputError(f"reference file {path} is malformed: {err}") from None


def reference_for(spec: TaskSpec, references: dict[str, float]) -> float | None:
    for key in (spec.adhoc, spec.name):
        value = references.get(key)
        if value is not None and math.isfinite(value) and value != 0:
            return value
    return None
