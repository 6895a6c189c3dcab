"""Vault writing: checked, encoded, written to a hidden directory and renamed into place, then ``mtmarl.json``."""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from mtmarl.data.vault.check import _file_hashes, check_experience, read_metadata
from mtmarl.data.vault.layout import (DEFAULT_UID, ENCODING_KEY, FORMAT_VERSION, META_FILE, OUT_DTYPES, _dims,
                                      _encode_real, _flatten, _nest, vault_path)
from mtmarl.data.vault.returns import episode_returns, return_stats
from mtmarl.errors import UserInputError


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
    try:
        _fbx_write(vlt, tmp_uid, _nest(stored), {ENCODING_KEY: encoding})
    except (OSError, ValueError, RuntimeError) as err:  # tensorstore reports a full disk as a ValueError
        shutil.rmtree(vlt / tmp_uid, ignore_errors=True)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise UserInputError(f"writing vault {final} failed ({type(err).__name__}: {first}); "
                             f"{'the vault there is unchanged' if final.exists() else 'nothing was written'}") from None
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
        "env": {"class": type(env).__name__, "spec": env.spec.to_json(),
                **({"jumanji_class": type(env.jumanji_env).__name__} if hasattr(env, "jumanji_env") else {})},
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
