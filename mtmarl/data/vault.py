"""Per-task Flashbax vaults in og-marl's layout: writing, reading, validation, returns.

Layout (og-marl compatible)::

    vault_data/<env>/<task>.vlt/<uid>/      one Flashbax Vault (zarr arrays in an OCDBT store)
    vault_data/<env>/<task>.vlt/mtmarl.json metadata of every uid in this .vlt (see below)

``<task>`` is the task's label from its task set (``6x6-3a``) or, for an
ad-hoc task, its parameters (``grid=5,agents=2,horizon=8``). One experience
dict per vault, with a batch axis of 1 and time axis ``T``::

    observations (1, T, N, O)   actions (1, T, N)   rewards (1, T, N)
    terminals (1, T, N)         truncations (1, T, N)
    infos: {legals (1, T, N, A), state (1, T, S) only when the env has a global state}

Rewards and episode flags are the team's, broadcast to every agent.

Storage is compact but lossless: the writer picks, per array, the smallest
encoding that reproduces the data exactly and records it in the Vault's own
``metadata.json`` (key ``mtmarl_encoding``), so a uid directory decodes on its
own. Observations/states are stored as ``uint8`` when their values are small
integers (``cast``), as ``uint8`` indices into a table of at most 256 distinct
values (``codebook``; standardised grid observations take few values), as
``float16`` when that is exact, else as ``float32``; actions as ``uint8``;
legals and episode flags as ``bool``. :func:`read_vault` always returns the
same dtypes whatever the storage: observations/rewards/terminals/truncations/
state ``float32`` (og-marl's convention), actions ``int32``, legals ``bool``.

``mtmarl.json`` holds, per uid: the task (ad-hoc string, name, env), agent
count, observation/state size, action count, env and package versions, the
collector's configuration (free-form), return statistics, and the sha256 of
every file of the uid directory (checked by :func:`read_vault`). og-marl's own
vaults have no ``mtmarl.json`` and are read as they are, with a
:class:`NoMetadataWarning` (nothing is verified against a checksum, and a
folder copied without its ``mtmarl.json`` should not pass unnoticed).
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import io
import contextlib
import json
import os
import re
import shutil
import warnings
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
                                 f"(uid=... or the path {path}/<uid>)")
        uid = uids[0]
    if uid not in uids:
        raise UserInputError(f"vault {path} has no dataset {uid!r}; it has {', '.join(uids)}")
    return path, uid


# --------------------------------------------------------------------------- metadata
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


def verify_files(vlt: str | os.PathLike, uid: str, meta: Mapping | None = None) -> int:
    """Check the sha256 of every file ``mtmarl.json`` lists for ``uid``; returns how many."""
    vlt = Path(vlt)
    meta = read_metadata(vlt) if meta is None else meta
    entry = (meta or {}).get("datasets", {}).get(uid)
    if not entry or not entry.get("sha256"):
        return 0
    for rel, want in entry["sha256"].items():
        path = vlt / rel
        if not path.is_file():
            raise UserInputError(f"vault {vlt}: file {path} listed in {META_FILE} is missing")
        got = sha256_file(path)
        if got != want:
            raise UserInputError(f"vault {vlt}: file {path} is corrupt (sha256 {got[:12]}..., "
                                 f"{META_FILE} records {want[:12]}...)")
    return len(entry["sha256"])


def package_versions() -> dict[str, str | None]:
    out = {}
    for name in ("mtmarl", "jax", "jaxlib", "jumanji", "flashbax", "tensorstore", "numpy"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- shapes
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


def _fmt(shape) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


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


# --------------------------------------------------------------------------- returns
def team_rewards(experience: Mapping[str, Any]) -> np.ndarray:
    """(B, T) team reward: ``rewards[..., 0]`` when shared by all agents (mtmarl's), else the sum."""
    rew = np.asarray(experience["rewards"], np.float32)
    if rew.ndim == 2:
        return rew
    if np.all(rew == rew[..., :1]):
        return rew[..., 0]
    return rew.sum(axis=-1)


def episode_ends(experience: Mapping[str, Any]) -> np.ndarray:
    """(B, T) bool: the episode ends at this step (terminal or truncation of any agent)."""
    flags = [np.asarray(experience[k]) for k in ("terminals", "truncations")]
    done = (flags[0] != 0) | (flags[1] != 0)
    return done.any(axis=-1) if done.ndim == 3 else done


def episode_returns(experience: Mapping[str, Any]) -> np.ndarray:
    """Team return of every completed episode, in order (a trailing unfinished one is dropped).

    Episodes are split after each step flagged terminal or truncated; each batch row is its
    own stream.
    """
    rew, done = team_rewards(experience), episode_ends(experience)
    out = []
    for r, d in zip(rew.astype(np.float64), done):
        ends = np.flatnonzero(d)
        if ends.size == 0:
            continue
        csum = np.cumsum(r)[ends]
        out.append(np.diff(csum, prepend=0.0))
    return np.concatenate(out) if out else np.zeros((0,), np.float64)


def return_stats(returns: np.ndarray) -> dict[str, Any]:
    returns = np.asarray(returns, np.float64)
    if returns.size == 0:
        return {"episodes": 0, "mean": None, "std": None, "min": None, "max": None}
    return {"episodes": int(returns.size), "mean": float(returns.mean()), "std": float(returns.std()),
            "min": float(returns.min()), "max": float(returns.max())}


# --------------------------------------------------------------------------- writing
def write_vault(path_root: str | os.PathLike, spec, experience: Mapping[str, Any],
                metadata: Mapping[str, Any] | None = None, *, uid: str = DEFAULT_UID,
                overwrite: bool = False) -> Path:
    """Write ``experience`` (numpy arrays, og-marl keys) as ``<root>/<env>/<task>.vlt/<uid>``.

    ``metadata`` is the collector's configuration (free-form, stored in ``mtmarl.json``).
    Arrays may omit the leading batch axis. Shapes are checked against ``spec``; the vault
    is written to a hidden directory and renamed into place, then ``mtmarl.json`` is
    updated (other uids of the same ``.vlt`` are kept). Returns the uid directory.
    """
    if not uid or "/" in uid or uid.startswith("."):
        raise UserInputError(f"invalid vault uid {uid!r}")
    flat = {k: np.asarray(v) for k, v in _flatten(experience).items()}
    if "observations" in flat and flat["observations"].ndim == 3:
        flat = {k: v[None] for k, v in flat.items()}
    if "actions" in flat and flat["actions"].ndim == 4 and flat["actions"].shape[-1] == 1:
        flat["actions"] = flat["actions"][..., 0]
    unknown = set(flat) - set(OUT_DTYPES)
    if unknown:
        raise UserInputError(f"experience for {spec.name}: unknown key(s) {sorted(unknown)}; "
                             f"valid: {', '.join(OUT_DTYPES)}")
    dims = _dims(spec)
    where = f"experience for {spec.name}"
    if "infos.legals" not in flat:
        raise UserInputError(f"{where}: key 'infos.legals' is missing")
    if not dims["state"]:
        flat.pop("infos.state", None)
    info = check_experience(flat, where, dims, spec.adhoc)
    if info["batch"] != 1:
        raise UserInputError(f"{where}: batch axis is {info['batch']}, expected 1 (og-marl layout)")

    stored, encoding = {}, {}
    for key, arr in flat.items():
        if key in ("observations", "infos.state"):
            stored[key], encoding[key] = _encode_real(arr)
        elif key == "actions":
            dtype = np.uint8 if dims["actions"] <= 256 else np.int32
            stored[key], encoding[key] = arr.astype(dtype), {"kind": "cast", "stored": np.dtype(dtype).name}
        elif key in ("terminals", "truncations", "infos.legals"):
            stored[key], encoding[key] = arr != 0, {"kind": "cast", "stored": "bool"}
        else:
            stored[key], encoding[key] = arr.astype(np.float32), {"kind": "cast", "stored": "float32"}

    vlt = vault_path(path_root, spec)
    final = vlt / uid
    if final.exists() and not overwrite:
        raise UserInputError(f"vault {final} already exists (pass overwrite=True to replace it)")
    vlt.mkdir(parents=True, exist_ok=True)
    tmp_uid = f".{uid}.tmp-{os.getpid()}"
    for stale in vlt.glob(f".{uid}.tmp-*"):  # ours, or left by a writer that was killed
        if stale.name == tmp_uid or not _pid_alive(stale.name.rsplit("-", 1)[-1]):
            shutil.rmtree(stale, ignore_errors=True)
    _fbx_write(vlt, tmp_uid, _nest(stored), {ENCODING_KEY: encoding})
    if final.exists():
        shutil.rmtree(final)
    os.replace(vlt / tmp_uid, final)

    returns = episode_returns(_nest(flat))
    env = spec.build()
    entry = {
        "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "transitions": int(info["steps"]),
        "returns": return_stats(returns),
        "collector": _jsonable(dict(metadata or {})),
        "encoding": {k: {kk: vv for kk, vv in v.items() if kk != "values"} for k, v in encoding.items()},
        "sha256": _file_hashes(vlt, uid),
    }
    meta = read_metadata(vlt) or {}
    meta.update({
        "format": FORMAT_VERSION,
        "task": {"adhoc": spec.adhoc, "name": spec.name, "env": spec.env, "params": dict(spec.params)},
        "agents": dims["agents"], "obs_dim": dims["obs"], "num_actions": dims["actions"],
        "state_dim": dims["state"], "horizon": env.horizon,
        "env": {"class": type(env).__name__, "jumanji_class": type(env.jumanji_env).__name__},
        "versions": package_versions(),
    })
    meta.setdefault("datasets", {})[uid] = entry
    _write_json_atomic(vlt / META_FILE, _jsonable(meta))
    return final


def _pid_alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _fbx_write(vlt: Path, uid: str, experience: dict, fbx_metadata: dict) -> None:
    """Write a (1, T, ...) experience tree as a Flashbax Vault at ``vlt/uid``."""
    import jax.numpy as jnp
    from flashbax.buffers.trajectory_buffer import TrajectoryBufferState
    from flashbax.vault import Vault

    steps = experience["observations"].shape[1]
    state = TrajectoryBufferState(experience=experience, current_index=jnp.asarray(steps, jnp.int32),
                                  is_full=jnp.asarray(False))
    with contextlib.redirect_stdout(io.StringIO()):  # Flashbax prints progress notes
        vault = Vault(vault_name=vlt.name, experience_structure=experience, rel_dir=str(vlt.parent.resolve()),
                      vault_uid=uid, metadata=fbx_metadata)
        written = vault.write(state, source_interval=(0, steps))
    if written != steps:
        raise RuntimeError(f"Flashbax wrote {written} of {steps} steps to {vlt / uid}")


# --------------------------------------------------------------------------- reading
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
    dims = None
    what = ""
    if spec is not None:
        dims, what = _dims(spec), spec.adhoc
    elif meta is not None and all(k in meta for k in ("agents", "obs_dim", "num_actions")):
        dims = {"agents": meta["agents"], "obs": meta["obs_dim"], "actions": meta["num_actions"],
                "state": meta.get("state_dim", 0)}
        what = meta.get("task", {}).get("adhoc", "")
    if dims is not None and not dims.get("state"):
        if "infos.state" in flat and flat["infos.state"].shape[-1:] == (0,):
            flat.pop("infos.state")
    check_experience(flat, f"vault {base}", dims, what)
    return _nest(flat)


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
               verify: bool = True) -> tuple[Path, dict[str, tuple[int, ...]]]:
    """Write one vault as an uncompressed ``.npz`` (og-marl keys, :func:`read_vault`'s dtypes), atomically.

    Why: numpy is the lowest common denominator for other tools; no Flashbax or tensorstore is
    needed to read the result (``np.load(out)["observations"]``, shapes ``(1, T, ...)``).
    """
    out = Path(out)
    if out.suffix != ".npz":
        raise UserInputError(f"export target {out} must end in .npz")
    if out.is_dir():
        raise UserInputError(f"export target {out} is a directory")
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
