"""Vault reading (ours or og-marl's) into numpy arrays with fixed dtypes, a summary, and ``.npz`` export."""

from __future__ import annotations

import contextlib
import json
import os
import re
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from mtmarl.data.vault.check import check_experience, check_recorded, read_metadata, recorded_dims, verify_files
from mtmarl.data.vault.layout import ENCODING_KEY, FBX_META_FILE, META_FILE, _decode, _dims, _flatten, _nest, resolve
from mtmarl.data.vault.returns import episode_returns, return_stats
from mtmarl.errors import UserInputError


class NoMetadataWarning(UserWarning):
    """A vault read without ``mtmarl.json``: no checksums, task or shapes to check it against."""


def read_vault(path: str | os.PathLike, spec=None, *, uid: str | None = None,
               verify: bool = True) -> dict[str, Any]:
    """Read one vault (ours or og-marl's) into numpy arrays with og-marl's keys.

    ``path`` is a ``.vlt`` directory (with ``uid`` when it holds several datasets) or a uid
    directory. Files listed in ``mtmarl.json`` are checked against their sha256 first
    (``verify``). With ``spec`` the shapes are checked against the task (agents, obs size,
    actions, state), else against ``mtmarl.json`` when present, else only for consistency.
    Output dtypes are fixed (see the module docstring); og-marl's trailing action axis of
    size 1 is dropped. Any problem raises :class:`UserInputError` naming vault, file and key.
    """
    import tensorstore as ts

    vlt, uid = resolve(path, uid)
    base = vlt / uid
    meta = read_metadata(vlt)
    if meta is None:
        warnings.warn(f"vault {vlt} has no {META_FILE}: read as an og-marl vault, its files unverified and "
                      f"its shapes checked only for consistency", NoMetadataWarning, stacklevel=2)
    if verify:
        verify_files(vlt, uid, meta)
    fbx_meta_path = base / FBX_META_FILE
    try:
        fbx_meta = json.loads(fbx_meta_path.read_text())
        shapes = fbx_meta["structure_shape"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise UserInputError(f"vault {base}: {fbx_meta_path} is unreadable or not a Flashbax "
                             f"metadata file ({type(err).__name__}: {err})") from None
    encoding = fbx_meta.get(ENCODING_KEY, {}) or {}
    names = _leaf_names(shapes)

    def open_read(name: str, sl):
        try:
            store = ts.open(_ts_spec(base, name), open=True, read=True).result()
            return np.asarray(store[sl].read().result()), store
        except Exception as err:  # tensorstore raises ValueError/RuntimeError with its own text
            key = name.rstrip(".")
            raise UserInputError(f"vault {base}: cannot read key {key!r}{_ts_where(err)}: the vault is "
                                 f"corrupt or truncated ({_ts_message(err)})") from None

    index, _ = open_read("vault_index", slice(None))
    steps = int(index.reshape(-1)[0]) if index.size else 0
    flat = {}
    for name in names:
        key = name
        arr, _ = open_read(f"{name}.", (slice(None), slice(0, steps)))
        if arr.shape[1] != steps:
            raise UserInputError(f"vault {base}: key {key!r} holds {arr.shape[1]} steps, "
                                 f"vault_index says {steps}")
        try:
            flat[key] = _decode(arr, encoding.get(key), key)
        except UserInputError as err:
            raise UserInputError(f"vault {base}: {err}") from None
    # The arrays against the task's env when given, else against the sizes mtmarl.json records; then those
    # records against the sizes just checked (one rule for training, stats --validate and export alike).
    if spec is not None:
        dims, what = _dims(spec), spec.adhoc
    else:
        task = (meta or {}).get("task")
        dims, what = recorded_dims(meta), task.get("adhoc", "") if isinstance(task, dict) else ""
    if dims is not None and not dims.get("state"):
        if "infos.state" in flat and flat["infos.state"].shape[-1:] == (0,):
            flat.pop("infos.state")
    check_experience(flat, f"vault {base}", dims, what)
    if dims is not None:
        check_recorded(meta, dims, f"vault {base}", what)
    return _nest(flat)


def describe_vault(path: str | os.PathLike, spec=None, *, uid: str | None = None,
                   verify: bool = True) -> dict[str, Any]:
    """Transitions, episodes and return statistics of one vault (used by the stats CLI)."""
    vlt, uid = resolve(path, uid)
    exp = read_vault(vlt, spec, uid=uid, verify=verify)
    returns = episode_returns(exp)
    meta = read_metadata(vlt) or {}
    task = meta.get("task", {}).get("name") or (vlt.name[:-4] if vlt.name.endswith(".vlt") else vlt.name)
    obs = exp["observations"]
    return {"vault": str(vlt / uid), "task": task, "uid": uid,
            "transitions": int(obs.shape[0] * obs.shape[1]), "agents": int(obs.shape[2]),
            "returns": returns, **return_stats(returns)}


def flat_arrays(experience: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """:func:`read_vault`'s nested arrays as ``{"infos/legals": ...}`` (the keys of an exported ``.npz``)."""
    return {key.replace(".", "/"): np.asarray(value) for key, value in _flatten(experience).items()}


def export_npz(path: str | os.PathLike, out: str | os.PathLike, *, uid: str | None = None,
               verify: bool = True, force: bool = False) -> tuple[Path, dict[str, tuple[int, ...]]]:
    """Write one vault as an uncompressed ``.npz`` (og-marl keys, :func:`read_vault`'s dtypes), atomically.

    Why: numpy is the lowest common denominator for other tools; no Flashbax or tensorstore is
    needed to read the result (``np.load(out)["observations"]``, shapes ``(1, T, ...)``).
    An existing file is replaced only with ``force``; a target inside the vault (its ``.vlt``
    directory, a dataset's folder) is refused: its checksums list the files there.
    """
    out = Path(out)
    if out.suffix != ".npz":
        raise UserInputError(f"export target {out} must end in .npz")
    if out.is_dir():
        raise UserInputError(f"export target {out} is a directory")
    src = Path(path).resolve()
    vlt = src.parent if (src / FBX_META_FILE).is_file() else src  # a dataset (uid) folder: its .vlt
    if out.resolve().is_relative_to(vlt):
        raise UserInputError(f"export target {out} is inside the vault {vlt}; write it outside the vault")
    if out.exists() and not force:
        raise UserInputError(f"export target {out} exists; pass --force to replace it")
    arrays = flat_arrays(read_vault(path, uid=uid, verify=verify))
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, out)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise UserInputError(f"export target {out}: cannot write it ({err.strerror or err})") from None
    return out, {k: v.shape for k, v in arrays.items()}


def _ts_spec(base: Path, name: str) -> dict:
    return {"driver": "zarr",
            "kvstore": {"driver": "ocdbt", "base": f"file://{base.resolve()}", "path": name}}


def _leaf_names(tree: Mapping, prefix: str = "") -> list[str]:
    names = []
    for key, value in tree.items():
        if isinstance(value, Mapping):
            names += _leaf_names(value, f"{prefix}{key}.")
        else:
            names.append(f"{prefix}{key}")
    return names


def _ts_message(err: Exception) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    text = text.split(" [tensorstore_spec=")[0]
    return text if len(text) < 400 else text[:400] + "..."


def _ts_where(err: Exception) -> str:
    """The file (or OCDBT entry) a tensorstore error is about, as ' in ...'."""
    text = str(err)
    files = [f for f in re.findall(r'local file "([^"]+)"', text) if not f.endswith("/")]
    if files:
        return f" (file {files[-1]})"
    entries = re.findall(r'Error reading "([^"]+)" in OCDBT database', text)
    if entries:
        return f" (entry {entries[-1]!r} of its OCDBT store)"
    return ""
