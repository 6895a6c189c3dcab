"""Vault checking: file checksums against ``mtmarl.json`` and the keys, shapes and dtypes of an experience."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from mtmarl.data.vault.layout import FLAG_KEYS, META_FILE
from mtmarl.errors import UserInputError


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _file_hashes(vlt: Path, uid: str) -> dict[str, str]:
    base = vlt / uid
    return {str(p.relative_to(vlt)): sha256_file(p) for p in sorted(base.rglob("*")) if p.is_file()}


def read_metadata(vlt: str | os.PathLike) -> dict[str, Any] | None:
    """``mtmarl.json`` of a ``.vlt`` directory, or None (og-marl vaults have none)."""
    path = Path(vlt) / META_FILE
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserInputError(f"vault metadata {path} is not valid JSON: {err}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("datasets"), dict):
        raise UserInputError(f"vault metadata {path}: expected an object with key 'datasets'")
    return meta


def first_bad_file(root: Path, sha256: Mapping[str, str]) -> tuple[Path, str | None, str] | None:
    """The first of ``sha256``'s files (paths relative to ``root``) that is missing (``got`` None) or whose
    sha256 differs from the recorded one, as ``(path, got, want)``; None when all match."""
    for rel, want in sha256.items():
        path = root / rel
        if not path.is_file():
            return path, None, want
        got = sha256_file(path)
        if got != want:
            return path, got, want
    return None


def verify_files(vlt: str | os.PathLike, uid: str, meta: Mapping | None = None) -> int:
    """Check the sha256 of every file ``mtmarl.json`` lists for ``uid``; returns how many."""
    vlt = Path(vlt)
    meta = read_metadata(vlt) if meta is None else meta
    entry = (meta or {}).get("datasets", {}).get(uid)
    if not entry or not entry.get("sha256"):
        return 0
    bad = first_bad_file(vlt, entry["sha256"])
    if bad is not None:
        path, got, want = bad
        if got is None:
            raise UserInputError(f"vault {vlt}: file {path} listed in {META_FILE} is missing")
        raise UserInputError(f"vault {vlt}: file {path} is corrupt (sha256 {got[:12]}..., "
                             f"{META_FILE} records {want[:12]}...)")
    return len(entry["sha256"])


def check_experience(flat: Mapping[str, np.ndarray], where: str, dims: Mapping[str, int] | None = None,
                     what: str = "") -> dict[str, int]:
    """Validate key set, shapes and dtypes of a flat experience dict (keys ``infos.legals`` ...).

    ``dims`` (agents/obs/actions/state) are the task's; when None they are read from the data.
    Raises :class:`UserInputError` naming ``where``, the key and expected vs found.
    """
    for key in ("observations", "actions", *FLAG_KEYS):
        if key not in flat:
            raise UserInputError(f"{where}: key {key!r} is missing (found {', '.join(sorted(flat))})")
    for key, arr in flat.items():
        if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
            raise UserInputError(f"{where}: key {key!r} has non-numeric dtype {arr.dtype}")
    obs = flat["observations"]
    if obs.ndim != 4:
        raise UserInputError(f"{where}: key 'observations' has shape {tuple(obs.shape)}, "
                             f"expected (batch, time, agents, obs) (4 axes)")
    batch, steps = obs.shape[:2]
    found = {"agents": obs.shape[2], "obs": obs.shape[3]}
    if "infos.legals" in flat and flat["infos.legals"].ndim == 4:
        found["actions"] = flat["infos.legals"].shape[3]
    if "infos.state" in flat and flat["infos.state"].ndim == 3:
        found["state"] = flat["infos.state"].shape[2]
    want = dict(found) if dims is None else dict(dims)
    desc = f" for task {what}" if what else ""
    n, o = want["agents"], want["obs"]
    expected = {"observations": (batch, steps, n, o), "actions": (batch, steps, n)}
    for key in FLAG_KEYS:
        expected[key] = (batch, steps, n)
    if "actions" in want:
        expected["infos.legals"] = (batch, steps, n, want["actions"])
    if want.get("state") or "infos.state" in flat:
        expected["infos.state"] = (batch, steps, want.get("state", 0))
    if dims is not None and want.get("state") and "infos.state" not in flat:
        raise UserInputError(f"{where}: key 'infos.state' is missing{desc}, expected shape "
                             f"{_fmt(expected['infos.state'])} (the env has a {want['state']}-dim state)")
    for key, shape in expected.items():
        if key not in flat:
            continue
        got = tuple(flat[key].shape)
        if got != shape:
            raise UserInputError(f"{where}: key {key!r} has shape {_fmt(got)}, expected {_fmt(shape)}"
                                 f"{desc} (agents={n}, obs={o}, actions={want.get('actions', '?')}"
                                 f"{', state=' + str(want['state']) if want.get('state') else ''})")
    acts = flat["actions"]
    if acts.size:
        if not np.issubdtype(acts.dtype, np.integer):
            if not np.all(np.isfinite(acts)) or not np.array_equal(acts, np.round(acts)):
                raise UserInputError(f"{where}: key 'actions' holds non-integer values (dtype {acts.dtype})")
        lo, hi = acts.min(), acts.max()
        if "actions" in want and (lo < 0 or hi >= want["actions"]):
            raise UserInputError(f"{where}: key 'actions' holds values in [{lo}, {hi}], expected "
                                 f"0..{want['actions'] - 1}{desc}")
    return {"batch": batch, "steps": steps, **want}


# mtmarl.json's size keys -> the names check_experience's dims use
RECORDED_DIMS = {"agents": "agents", "obs_dim": "obs", "num_actions": "actions", "state_dim": "state"}


def recorded_dims(meta: Mapping[str, Any] | None) -> dict[str, int] | None:
    """The sizes ``mtmarl.json`` records (None when it records none: og-marl vaults, or no metadata)."""
    if meta is None or not all(k in meta for k in ("agents", "obs_dim", "num_actions")):
        return None
    return {name: meta.get(key, 0) for key, name in RECORDED_DIMS.items()}


def check_recorded(meta: Mapping[str, Any] | None, dims: Mapping[str, int], where: str, what: str) -> None:
    """Refuse a vault whose ``mtmarl.json`` records other sizes than ``dims`` (those its arrays were just checked
    against: the task's env, or the recorded ones), so every reader accepts the same vaults whatever it checks
    the arrays against."""
    for key, name in RECORDED_DIMS.items():
        if meta is not None and key in meta and meta[key] != dims.get(name, 0):
            raise UserInputError(f"{where}: {META_FILE} records {key}={meta[key]}, but its arrays and task "
                                 f"{what or '?'} have {dims.get(name, 0)}")


def recorded_task(vlt: str | os.PathLike, meta: Mapping[str, Any] | None) -> str:
    """The ad-hoc task string ``mtmarl.json`` records (what a check against the env builds)."""
    task = (meta or {}).get("task")
    if not isinstance(task, dict) or not isinstance(task.get("adhoc"), str):
        raise UserInputError(f"vault {vlt}: {Path(vlt) / META_FILE} records no task (key task.adhoc), so there is "
                             f"no env to check it against")
    return task["adhoc"]


def _fmt(shape) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"
