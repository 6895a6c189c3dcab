"""Install the ``.vlt`` directories of a downloaded zip, only after each one checks out.

Why a module of its own: a download must never replace good data with bad, so the
zip is extracted to a staging directory inside the vault root, every vault found is
checked (Flashbax metadata present, sha256 of the files ``mtmarl.json`` lists) and
only then renamed into ``<root>/<env>/``. That staging-and-checking is independent of
where the zip came from (a download, or a file given by hand).

Confinement: nothing an archive says may place a file outside ``<root>``. Every
member name must resolve inside the staging directory, and the env and vault
names (from ``mtmarl.json``'s ``task.env`` or the zip's directories) must be plain
path components whose final path resolves inside ``<root>``; otherwise the archive
is refused before anything is installed.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path

from mtmarl.data import vault as V
from mtmarl.errors import UserInputError
from mtmarl.hub.sources import is_safe_name
from mtmarl.hub.transfer import DownloadError


def inside(root: Path, path: Path) -> bool:
    """``path``, with ``.``/``..`` collapsed, is ``root`` or below it.

    Lexical on purpose: a zip cannot create symlinks (``extractall`` writes plain files), and a
    symlink the user made inside the vault root (an env directory on another disk) is theirs to keep.
    """
    norm = lambda p: Path(os.path.normpath(os.path.abspath(p)))  # noqa: E731
    return norm(path).is_relative_to(norm(root))


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


def _env_of(vlt: Path, tmp: Path, env: str | None, origin: str) -> str:
    if env:
        return env
    meta = V.read_metadata(vlt)
    task = meta.get("task") if isinstance(meta, dict) else None
    if isinstance(task, dict) and task.get("env"):
        name, where = task["env"], f"its {V.META_FILE} task.env"
    elif vlt.parent != tmp:
        name, where = vlt.parent.name, "the directory it sits in"
    else:
        raise UserInputError(f"cannot tell which env {vlt.name} belongs to (no {V.META_FILE} with task.env); "
                             f"pass --env")
    if not is_safe_name(name):
        raise DownloadError(f"{origin}: {vlt.name} names env {name!r} ({where}), not a plain directory name; "
                            f"refused, nothing was installed (pass --env to choose the env directory)")
    return name


def _target(to: Path, env: str, vlt: Path, origin: str) -> Path:
    """``<to>/<env>/<vault>``, refused unless it is a plain name that stays inside ``to``."""
    final = to / env / vlt.name
    if not (is_safe_name(env) and is_safe_name(vlt.name) and inside(to / env, final)):
        raise DownloadError(f"{origin}: vault {vlt.name!r} of env {env!r} would be installed at {final}, outside "
                            f"--to {to}; refused, nothing was installed")
    return final


def _install(vlt: Path, final: Path, tmp: Path) -> str:
    """Rename a checked vault into place (the old one, if any, moved aside first and then removed).

    Two installs of one vault at once (two downloads of one archive) race only here: whichever
    rename loses finds a valid vault in place and keeps it.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    old = tmp / f"old-{final.name}"
    try:
        if final.exists():
            os.replace(final, old)
        os.replace(vlt, final)
    except OSError as err:
        if err.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT) and is_valid_vault(final):
            return "kept (installed at the same time by another download)"
        if old.exists() and not final.exists():
            os.replace(old, final)  # put the vault that was there back
        raise DownloadError(f"cannot install {final} ({err.strerror or err}); nothing was replaced") from None
    return "installed"


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
                    if (name.startswith(("/", "\\")) or ".." in Path(name).parts or "\\" in name
                            or re.match(r"^[A-Za-z]:", name) or not inside(tmp, tmp / name)):
                        raise DownloadError(f"{zip_path}: unsafe path {name!r} in the zip (it would be written "
                                            f"outside the vault root); refused, nothing was installed")
                bad = zf.testzip()
                if bad is not None:
                    raise DownloadError(f"{zip_path}: member {bad!r} is corrupt (CRC mismatch)")
                zf.extractall(tmp)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as err:
            raise DownloadError(f"{zip_path} is not a valid zip archive ({err})") from None
        except OSError as err:  # a full disk, a quota: the staging directory is removed below
            raise DownloadError(f"cannot extract {zip_path} into {to} ({err.strerror or err}); "
                                f"nothing was installed") from None
        vlts = _find_vaults(tmp, scenario)
        if not vlts:
            raise DownloadError(f"{zip_path} holds no <task>.vlt directory")
        staged = []
        for vlt in vlts:
            check_vault(vlt, str(zip_path))
            staged.append((vlt, _target(to, _env_of(vlt, tmp, env, str(zip_path)), vlt, str(zip_path))))
        for vlt, final in staged:
            if final.exists() and is_valid_vault(final) and not force:
                results.append((final, "kept (already present)"))
                continue
            results.append((final, _install(vlt, final, tmp)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return results
