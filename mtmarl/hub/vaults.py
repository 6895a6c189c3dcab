"""Install the ``.vlt`` directories of a downloaded zip, only after each one checks out.

Why a module of its own: a download must never replace good data with bad, so the
zip is extracted to a staging directory inside the vault root, every vault found is
checked (Flashbax metadata present, sha256 of the files ``mtmarl.json`` lists) and
only then renamed into ``<root>/<env>/``. That staging-and-checking is independent of
where the zip came from (a download, or a file given by hand).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path

from mtmarl.data import vault as V
from mtmarl.errors import UserInputError
from mtmarl.hub.transfer import DownloadError


def check_vault(vlt: Path, origin: str) -> None:
    """Raise :class:`DownloadError` (named after ``origin``) unless ``vlt`` holds Flashbax datasets whose files
    match the sha256s of its ``mtmarl.json``."""
    uids = V.list_uids(vlt)
    if not uids:
        raise DownloadError(f"{origin}: {vlt.name} has no dataset (no <uid>/{V.FBX_META_FILE})")
    meta = V.read_metadata(vlt)
    for uid in uids:
        try:
            json.loads((vlt / uid / V.FBX_META_FILE).read_text())["structure_shape"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise DownloadError(f"{origin}: {vlt.name}/{uid}/{V.FBX_META_FILE} is not a Flashbax "
                                f"metadata file ({err})") from None
        V.verify_files(vlt, uid, meta)


def is_valid_vault(vlt: str | os.PathLike) -> bool:
    """A ``.vlt`` with at least one readable uid and matching sha256s (data is not decoded)."""
    try:
        check_vault(Path(vlt), str(vlt))
    except (UserInputError, OSError, ValueError, KeyError, TypeError):
        return False
    return True


def _find_vaults(root: Path, scenario: str | None) -> list[Path]:
    vlts = sorted(p for p in root.rglob("*.vlt") if p.is_dir())
    vlts = [p for p in vlts if not any(q != p and q in p.parents for q in vlts)]  # top-most only
    if not vlts and V.list_uids(root) and scenario:
        target = root / f"{scenario}.vlt"  # a zip of bare uid directories
        target.mkdir()
        for child in list(root.iterdir()):
            if child != target:
                shutil.move(str(child), target / child.name)
        vlts = [target]
    return vlts


def _env_of(vlt: Path, tmp: Path, env: str | None) -> str:
    if env:
        return env
    meta = V.read_metadata(vlt)
    if meta and meta.get("task", {}).get("env"):
        return str(meta["task"]["env"])
    if vlt.parent != tmp:
        return vlt.parent.name
    raise UserInputError(f"cannot tell which env {vlt.name} belongs to (no mtmarl.json with task.env); "
                         f"pass --env")


def extract_vaults(zip_path: str | os.PathLike, to: str | os.PathLike, *, env: str | None = None,
                   scenario: str | None = None, force: bool = False) -> list[tuple[Path, str]]:
    """Install the ``.vlt`` directories of a zip under ``<to>/<env>/``: [(path, status)]."""
    zip_path, to = Path(zip_path), Path(to)
    to.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=to))
    results = []
    try:
        try:
            with zipfile.ZipFile(zip_path) as zf:
                for member in zf.infolist():
                    name = member.filename
                    if name.startswith(("/", "\\")) or ".." in Path(name).parts or re.match(r"^[A-Za-z]:", name):
                        raise DownloadError(f"{zip_path}: unsafe path {name!r} in the zip")
                bad = zf.testzip()
                if bad is not None:
                    raise DownloadError(f"{zip_path}: member {bad!r} is corrupt (CRC mismatch)")
                zf.extractall(tmp)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as err:
            raise DownloadError(f"{zip_path} is not a valid zip archive ({err})") from None
        vlts = _find_vaults(tmp, scenario)
        if not vlts:
            raise DownloadError(f"{zip_path} holds no <task>.vlt directory")
        staged = []
        for vlt in vlts:
            check_vault(vlt, str(zip_path))
            staged.append((vlt, to / _env_of(vlt, tmp, env) / vlt.name))
        for vlt, final in staged:
            if final.exists() and is_valid_vault(final) and not force:
                results.append((final, "kept (already present)"))
                continue
            final.parent.mkdir(parents=True, exist_ok=True)
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            if final.exists():
                os.replace(final, old)
            os.replace(vlt, final)
            shutil.rmtree(old, ignore_errors=True)
            results.append((final, "installed"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return results
