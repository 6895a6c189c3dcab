"""``download``: a source name to installed vaults (resolve, skip if present, download, install).

Why a module of its own: it is the one place that strings the steps together and
decides what runs before any byte is fetched (source and env names, checksum,
a writable ``--to``, vaults already present), so the cheap refusals come first.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import tempfile
from pathlib import Path
from typing import Mapping

from mtmarl.data.stats import DEFAULT_ROOT
from mtmarl.errors import UserInputError
from mtmarl.hub.sources import expected_sha256, is_safe_name, load_manifest, resolve_source
from mtmarl.hub.transfer import download_file
from mtmarl.hub.vaults import extract_vaults, is_valid_vault


def download(name: str, to: str | os.PathLike = DEFAULT_ROOT, *, sha256: str | None = None,
             manifest: str | os.PathLike | Mapping[str, str] | None = None, env: str | None = None,
             force: bool = False, retries: int = 0, timeout: float = 60.0,
             progress: bool | None = None) -> list[tuple[Path, str]]:
    """Download and install a vault zip; returns [(vault path, status)] (see :mod:`mtmarl.hub`)."""
    source = resolve_source(name)
    if env is not None and not is_safe_name(env):
        raise UserInputError(f"--env {env!r} is not a plain directory name (letters, digits, _ . + - , =, not "
                             f"starting with a dot); the env directory is created inside --to")
    if isinstance(manifest, (str, os.PathLike)):
        manifest = load_manifest(manifest)
    expected = expected_sha256(name, source, sha256, manifest)
    to = Path(to)
    check_writable(to)
    env = env or source.env
    if source.scenario and not force:
        candidates = ([to / env / f"{source.scenario}.vlt"] if env
                      else sorted(to.glob(f"*/{glob_escape(source.scenario)}.vlt")))
        present = [c for c in candidates if is_valid_vault(c)]
        if present:
            return [(present[0], "skipped (already present)")]
    key = hashlib.sha256(source.url.encode()).hexdigest()[:10]
    name = f"{key}-{source.filename or 'download.zip'}"
    # The finished zip has a name of its own (two downloads of one archive at once each extract and delete
    # their own); an interrupted one waits under the URL's name for the next call to resume.
    zip_path = to / ".downloads" / f"{os.getpid()}-{secrets.token_hex(4)}-{name}"
    download_file(source.url, zip_path, sha256=expected, retries=retries, timeout=timeout, progress=progress,
                  partial=to / ".downloads" / f"{name}.part")
    try:
        return extract_vaults(zip_path, to, env=env, scenario=source.scenario, force=force)
    finally:
        zip_path.unlink(missing_ok=True)


def check_writable(to: Path) -> None:
    """Fail before downloading (not after) when the vault root cannot be written.

    A probe file is created and removed: permission bits alone say nothing for root
    or on read-only mounts, so actually writing is the only reliable test.
    """
    try:
        (to / ".downloads").mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=to / ".downloads", prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise UserInputError(f"cannot write to the vault root --to {to} ({err.strerror or err}); "
                             f"choose a writable directory") from None


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)
