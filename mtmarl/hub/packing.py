"""``pack``: zip a ``<task>.vlt`` directory reproducibly (same vault, same bytes, same sha256).

Why a module of its own: it is the sharing side of the hub, the inverse of
:mod:`mtmarl.hub.vaults`, and needs none of the download machinery.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Iterable

from mtmarl.data import vault as V
from mtmarl.errors import UserInputError


def _walk(vlt: Path) -> Iterable[Path]:
    return sorted(p for p in vlt.rglob("*") if p.is_file() and not p.name.startswith(".")
                  and not any(part.startswith(".") for part in p.relative_to(vlt).parts))


def pack(vault_dir: str | os.PathLike, zip_path: str | os.PathLike) -> str:
    """Zip a ``<task>.vlt`` directory (with ``mtmarl.json``) reproducibly; returns the zip's sha256."""
    vlt = Path(vault_dir)
    if (vlt / V.FBX_META_FILE).is_file():
        raise UserInputError(f"{vlt} is one dataset (uid) directory; pack its .vlt directory {vlt.parent}")
    if not V.list_uids(vlt):
        raise UserInputError(f"{vlt} is not a vault directory (no <uid>/{V.FBX_META_FILE} inside)")
    zip_path = Path(zip_path)
    if zip_path.resolve().is_relative_to(vlt.resolve()):
        raise UserInputError(f"output {zip_path} is inside the vault {vlt} it packs; write the zip elsewhere")
    if zip_path.is_dir():
        raise UserInputError(f"output {zip_path} is an existing directory; give a .zip file path")
    meta = V.read_metadata(vlt)
    for uid in V.list_uids(vlt):
        V.verify_files(vlt, uid, meta)
    top = vlt.resolve().name
    tmp = None
    try:
        zip_path.parent.mkdir(parents=True, exist_ok=True)
        # A name of its own: two packs to one output never write one partial file.
        fd, name = tempfile.mkstemp(dir=zip_path.parent, prefix=f".{zip_path.name}.", suffix=".part")
        tmp = Path(name)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would make the shared zip private
        with os.fdopen(fd, "wb") as fh, zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for path in _walk(vlt):
                info = zipfile.ZipInfo(f"{top}/{path.relative_to(vlt).as_posix()}", date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = 0o644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, path.read_bytes())
        os.replace(tmp, zip_path)
    except OSError as err:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()
        raise UserInputError(f"cannot write {zip_path} ({err.strerror or err}); nothing was written") from None
    return V.sha256_file(zip_path)
