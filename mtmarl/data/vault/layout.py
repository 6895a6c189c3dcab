"""Vault format: constants, paths of ``<root>/<env>/<task>.vlt/<uid>``, key nesting and the lossless
storage encodings (see the package docstring). Pure helpers: nothing here reads or writes arrays."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from mtmarl.errors import UserInputError

META_FILE = "mtmarl.json"  # next to the uid directories, inside <task>.vlt
FBX_META_FILE = "metadata.json"  # Flashbax's own, inside each uid directory
FORMAT_VERSION = 1
DEFAULT_UID = "default"
ENCODING_KEY = "mtmarl_encoding"

FLAG_KEYS = ("rewards", "terminals", "truncations")
OUT_DTYPES = {"observations": np.float32, "actions": np.int32, "rewards": np.float32,
              "terminals": np.float32, "truncations": np.float32,
              "infos.legals": np.bool_, "infos.state": np.float32}


# --------------------------------------------------------------------------- paths
def task_dirname(spec) -> str:
    """The ``<task>`` part of ``<task>.vlt``: the task's label, else its parameters."""
    if spec.label:
        return spec.label
    return spec.adhoc.partition(":")[2]


def vault_path(root: str | os.PathLike, spec) -> Path:
    """``<root>/<env>/<task>.vlt`` for ``spec``."""
    return Path(root) / spec.env / f"{task_dirname(spec)}.vlt"


def list_uids(vlt: str | os.PathLike) -> list[str]:
    """Uid directories (those holding a Flashbax ``metadata.json``) of a ``.vlt`` directory."""
    vlt = Path(vlt)
    if not vlt.is_dir():
        return []
    return sorted(p.name for p in vlt.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and (p / FBX_META_FILE).is_file())


def resolve(path: str | os.PathLike, uid: str | None = None) -> tuple[Path, str]:
    """(``.vlt`` directory, uid) for a ``.vlt`` directory (+ uid) or a uid directory."""
    path = Path(path)
    if not path.exists():
        raise UserInputError(f"vault {path} does not exist")
    if (path / FBX_META_FILE).is_file() and uid in (None, path.name):
        return path.parent, path.name
    uids = list_uids(path)
    if not uids:
        raise UserInputError(f"{path} is not a vault: no <uid>/{FBX_META_FILE} inside "
                             f"(expected <env>/<task>.vlt/<uid>/ as written by Flashbax)")
    if uid is None:
        if len(uids) > 1:
            raise UserInputError(f"vault {path} holds several datasets ({', '.join(uids)}); pick one "
                                 f"(training: data.quality=<one of them>; the data tools: --uid or the path {path}/<uid>)")
        uid = uids[0]
    if uid not in uids:
        raise UserInputError(f"vault {path} has no dataset {uid!r}; it has {', '.join(uids)}")
    return path, uid


# --------------------------------------------------------------------------- keys and shapes
def _dims(spec) -> dict[str, int]:
    env = spec.build()
    return {"agents": env.num_agents, "obs": env.obs_dim, "actions": env.num_actions,
            "state": env.state_dim}


def _flatten(exp: Mapping[str, Any]) -> dict[str, Any]:
    flat = {}
    for key, value in exp.items():
        if isinstance(value, Mapping):
            for sub, arr in value.items():
                flat[f"{key}.{sub}"] = arr
        else:
            flat[key] = value
    return flat


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        head, dot, tail = key.partition(".")
        if dot:
            out.setdefault(head, {})[tail] = value
        else:
            out[key] = value
    return out


# --------------------------------------------------------------------------- encoding
def _encode_real(arr: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """Smallest exact storage of a real-valued array (see the module docstring)."""
    arr = np.asarray(arr)
    if arr.dtype == np.bool_:
        return arr, {"kind": "cast", "stored": "bool"}
    if np.issubdtype(arr.dtype, np.integer):
        if arr.size == 0 or (arr.min() >= 0 and arr.max() <= 255):
            return arr.astype(np.uint8), {"kind": "cast", "stored": "uint8"}
        return arr.astype(np.int32), {"kind": "cast", "stored": "int32"}
    arr = arr.astype(np.float32)
    if arr.size == 0:
        return arr, {"kind": "cast", "stored": "float32"}
    if not np.all(np.isfinite(arr)):
        return arr, {"kind": "cast", "stored": "float32"}
    if arr.min() >= 0 and arr.max() <= 255 and np.array_equal(arr, np.round(arr)):
        return arr.astype(np.uint8), {"kind": "cast", "stored": "uint8"}
    values = _unique_upto(arr, 256)
    if values is not None:
        codes = np.searchsorted(values, arr).astype(np.uint8)
        return codes, {"kind": "codebook", "stored": "uint8", "values": [float(v) for v in values]}
    half = arr.astype(np.float16)
    if np.array_equal(half.astype(np.float32), arr):
        return half, {"kind": "cast", "stored": "float16"}
    return arr, {"kind": "cast", "stored": "float32"}


def _unique_upto(arr: np.ndarray, limit: int, chunk: int = 1 << 22) -> np.ndarray | None:
    """Sorted distinct values of ``arr`` if there are at most ``limit``, else None (chunked)."""
    flat = arr.reshape(-1)
    seen = np.zeros((0,), arr.dtype)
    for start in range(0, flat.size, chunk):
        seen = np.union1d(seen, np.unique(flat[start:start + chunk]))
        if seen.size > limit:
            return None
    return seen


def _decode(stored: np.ndarray, enc: Mapping[str, Any] | None, key: str) -> np.ndarray:
    out_dtype = OUT_DTYPES.get(key, np.float32)
    if enc and enc.get("kind") == "codebook":
        table = np.asarray(enc["values"], np.float64).astype(out_dtype)
        if stored.size and int(stored.max()) >= table.size:
            raise UserInputError(f"key {key!r}: code {int(stored.max())} is outside its "
                                 f"{table.size}-value codebook")
        return table[stored.astype(np.int64)]
    if key in ("actions",) and stored.ndim == 4 and stored.shape[-1] == 1:
        stored = stored[..., 0]  # og-marl RWARE stores actions as (1, T, N, 1)
    return stored.astype(out_dtype, copy=False)
