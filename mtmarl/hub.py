"""Download and share vault archives (zips of ``<task>.vlt`` directories).

``python -m mtmarl.hub download <name-or-url> [--to vault_data] [--sha256 HEX]``
fetches a zip, checks it, and installs every ``<task>.vlt`` it holds as
``<to>/<env>/<task>.vlt``. ``python -m mtmarl.hub pack <vault dir> <zip>`` makes
such a zip (deterministic: same vault, same bytes) and prints its sha256.

Sources:

* ``http://``, ``https://`` or ``file://`` URL of a zip;
* ``hf://<owner>/<repo>[@<revision>]/<path-in-repo>``: a file of a Hugging Face
  *dataset* repository (the URL comes from ``huggingface_hub.hf_hub_url``, so
  ``HF_ENDPOINT`` is honoured; public repositories only);
* ``ogmarl:<source>/<env>/<scenario>``: og-marl's published datasets in the
  ``InstaDeepAI/og-marl`` dataset repository: source ``core`` (or ``og_marl``)
  is ``core/<env>/<scenario>.zip``, any other source ``s`` is
  ``prior_work/<s>/<env>/<scenario>.zip``. og-marl's RWARE data is
  ``ogmarl:alberdice/rware/{tiny,small}-{2,4,6}ag``; e.g.
  ``ogmarl:core/smac_v1/3m`` -> ``.../resolve/main/core/smac_v1/3m.zip``.

The env directory a vault goes to is ``--env``, else the env of an og-marl name,
else the ``task.env`` of the vault's ``mtmarl.json``, else the directory the
``.vlt`` sits in inside the zip.

Integrity: the zip's sha256 is checked when given (``--sha256`` or a
``--manifest`` JSON file mapping the source name or zip file name to a sha256).
The download goes to ``<to>/.downloads/<name>.part`` and resumes with an HTTP
Range request (``If-Range`` guards against a changed file; a server answering
200 instead of 206 restarts it). The zip is extracted to a temporary directory
inside ``<to>``, each vault is checked (Flashbax metadata present, sha256 of the
files listed in ``mtmarl.json``) and only then renamed into place, so a failed or
corrupt download never replaces good data. A vault already present and valid is
skipped (``--force`` replaces it).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import Iterable, Mapping

from mtmarl.data import vault as V
from mtmarl.errors import UserInputError

DEFAULT_ROOT = Path(__file__).resolve().parents[1] / "vault_data"
OGMARL_REPO = "InstaDeepAI/og-marl"
CHUNK = 1 << 16
_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")


class DownloadError(UserInputError):
    """A download failed (network, server or integrity); partial data is kept to resume."""


@dataclasses.dataclass(frozen=True)
class Source:
    url: str
    filename: str  # the zip's file name
    env: str | None = None  # env directory, when the name says it
    scenario: str | None = None  # expected <scenario>.vlt, when the name says it


# --------------------------------------------------------------------------- sources
def _endpoint() -> str | None:
    return os.environ.get("HF_ENDPOINT") or None


def resolve_source(name: str) -> Source:
    """Map a source name or URL to the URL to download (see the module docstring)."""
    name = name.strip()
    if name.startswith("ogmarl:"):
        parts = name[len("ogmarl:"):].strip("/").split("/")
        if len(parts) != 3 or not all(_NAME.match(p) for p in parts):
            raise UserInputError(f"og-marl dataset {name!r} must look like ogmarl:<source>/<env>/<scenario> "
                                 f"(e.g. ogmarl:alberdice/rware/tiny-2ag or ogmarl:core/smac_v1/3m)")
        source, env, scenario = parts
        prefix = "core" if source in ("core", "og_marl") else f"prior_work/{source}"
        from huggingface_hub import hf_hub_url

        url = hf_hub_url(OGMARL_REPO, f"{prefix}/{env}/{scenario}.zip", repo_type="dataset",
                         endpoint=_endpoint())
        return Source(url, f"{scenario}.zip", env, scenario)
    if name.startswith("hf://"):
        rest = name[len("hf://"):].strip("/")
        parts = rest.split("/")
        if len(parts) < 3 or not all(parts):
            raise UserInputError(f"Hugging Face source {name!r} must look like "
                                 f"hf://<owner>/<repo>[@<revision>]/<path-in-repo>.zip")
        repo, _, revision = parts[1].partition("@")
        repo_id, filename = f"{parts[0]}/{repo}", "/".join(parts[2:])
        from huggingface_hub import hf_hub_url

        url = hf_hub_url(repo_id, filename, repo_type="dataset", revision=revision or None,
                         endpoint=_endpoint())
        return Source(url, os.path.basename(filename), None, _zip_stem(filename))
    parsed = urllib.parse.urlparse(name)
    if parsed.scheme in ("http", "https") and parsed.netloc:
        filename = os.path.basename(urllib.parse.unquote(parsed.path)) or "download.zip"
        return Source(name, filename, None, _zip_stem(filename))
    if parsed.scheme == "file" and parsed.path:
        filename = os.path.basename(urllib.parse.unquote(parsed.path))
        return Source(name, filename, None, _zip_stem(filename))
    raise UserInputError(f"unknown dataset source {name!r}; give an http(s):// or file:// URL of a zip, "
                         f"hf://<owner>/<repo>/<path>.zip, or ogmarl:<source>/<env>/<scenario>")


def _zip_stem(filename: str) -> str | None:
    base = os.path.basename(filename)
    if not base.endswith(".zip"):
        return None
    stem = base[:-4]
    return stem[:-4] if stem.endswith(".vlt") else stem


def load_manifest(path: str | os.PathLike) -> dict[str, str]:
    """``{name: sha256}`` from a JSON file (or an http(s)/file URL)."""
    text: str
    try:
        if re.match(r"^(https?|file)://", str(path)):
            with urllib.request.urlopen(str(path), timeout=60) as resp:
                text = resp.read().decode()
        else:
            text = Path(path).read_text()
        data = json.loads(text)
    except (OSError, urllib.error.URLError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserInputError(f"manifest {path}: cannot read it as JSON ({err})") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise UserInputError(f"manifest {path}: expected a JSON object mapping names to sha256 strings")
    return {k: v.lower() for k, v in data.items()}


def _expected_sha(name: str, source: Source, sha256: str | None, manifest: Mapping[str, str] | None):
    if sha256:
        sha = sha256.strip().lower()
    elif manifest:
        keys = (name, source.url, source.filename, source.scenario)
        sha = next((manifest[k] for k in keys if k and k in manifest), None)
        if sha is None:
            raise UserInputError(f"manifest has no sha256 for {name!r} (looked up {', '.join(k for k in keys if k)})")
    else:
        return None
    if not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise UserInputError(f"sha256 {sha!r} is not 64 hex digits")
    return sha


# --------------------------------------------------------------------------- download
def _progress(enabled: bool):
    from rich.console import Console
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                               TransferSpeedColumn)

    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    TimeRemainingColumn(), console=Console(stderr=True), transient=True,
                    disable=not enabled)


def download_file(url: str, dest: str | os.PathLike, *, sha256: str | None = None, retries: int = 0,
                  timeout: float = 60.0, progress: bool | None = None) -> Path:
    """Download ``url`` to ``dest`` via ``dest.part``, resuming a partial file with a Range request.

    On a dropped connection the partial file is kept (and resumed ``retries`` more times, or by
    the next call). A sha256 mismatch deletes the download and raises :class:`DownloadError`.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    info_path = dest.with_name(dest.name + ".part.json")
    progress = sys.stderr.isatty() if progress is None else progress
    is_http = urllib.parse.urlparse(url).scheme in ("http", "https")

    info = {}
    if part.exists() and info_path.exists():
        try:
            info = json.loads(info_path.read_text())
        except (OSError, json.JSONDecodeError):
            info = {}
    if part.exists() and info.get("url") != url:
        part.unlink()  # a leftover of another URL
        info = {}

    attempt = 0
    while True:
        have = part.stat().st_size if part.exists() and is_http else 0
        headers = {"User-Agent": "mtmarl-hub", "Accept-Encoding": "identity"}
        if have:
            headers["Range"] = f"bytes={have}-"
            validator = info.get("etag") or info.get("last_modified")
            if validator:
                headers["If-Range"] = validator
        try:
            resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
        except urllib.error.HTTPError as err:
            if err.code == 416 and have:  # our partial file does not fit the resource: restart
                part.unlink()
                info = {}
                continue
            if err.code in (401, 403, 404, 410):
                raise UserInputError(f"cannot download {url}: HTTP {err.code} {err.reason}") from None
            if attempt < retries:
                attempt += 1
                continue
            raise DownloadError(f"cannot download {url}: HTTP {err.code} {err.reason}") from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            if isinstance(err, urllib.error.URLError) and not isinstance(reason, (OSError, socket.timeout)):
                raise UserInputError(f"cannot download {url}: {reason}") from None
            if not is_http:
                raise UserInputError(f"cannot read {url}: {reason}") from None
            if attempt < retries:
                attempt += 1
                continue
            raise DownloadError(f"cannot download {url}: {reason}") from None

        with resp:
            status = getattr(resp, "status", None)
            if have and status == 206:
                content_range = resp.headers.get("Content-Range", "")
                m = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", content_range)
                if not m or int(m.group(1)) != have:
                    resp.close()
                    part.unlink()
                    info = {}
                    continue
                total = int(m.group(3)) if m.group(3) != "*" else None
                mode = "ab"
            else:  # a fresh download, or the server ignored our Range (200): start over
                have, mode = 0, "wb"
                length = resp.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                info = {"url": url, "etag": resp.headers.get("ETag"),
                        "last_modified": resp.headers.get("Last-Modified")}
                if is_http:
                    info_path.write_text(json.dumps(info))
            done = have
            try:
                with open(part, mode) as fh, _progress(progress) as bar:
                    task = bar.add_task(dest.name, total=total, completed=have)
                    while True:
                        block = resp.read(CHUNK)
                        if not block:
                            break
                        fh.write(block)
                        done += len(block)
                        bar.update(task, completed=done)
            except (http.client.HTTPException, OSError) as err:
                if attempt < retries:
                    attempt += 1
                    continue
                raise DownloadError(f"download of {url} interrupted after {done} of "
                                    f"{total if total is not None else '?'} bytes ({type(err).__name__}: "
                                    f"{err}); run the same command again to resume ({part} is kept)") from None
            if total is not None and done != total:
                if attempt < retries:
                    attempt += 1
                    continue
                raise DownloadError(f"download of {url} interrupted after {done} of {total} bytes (the "
                                    f"connection closed early); "
                                    f"run the same command again to resume ({part} is kept)")
        break

    if sha256:
        got = V.sha256_file(part)
        if got != sha256.lower():
            part.unlink()
            info_path.unlink(missing_ok=True)
            raise DownloadError(f"checksum mismatch for {url}: sha256 {got}, expected {sha256.lower()}; "
                                f"the download was discarded and nothing was installed")
    os.replace(part, dest)
    info_path.unlink(missing_ok=True)
    return dest


# --------------------------------------------------------------------------- install
def is_valid_vault(vlt: str | os.PathLike) -> bool:
    """A ``.vlt`` with at least one readable uid and matching sha256s (data is not decoded)."""
    vlt = Path(vlt)
    uids = V.list_uids(vlt)
    if not uids:
        return False
    try:
        meta = V.read_metadata(vlt)
        for uid in uids:
            json.loads((vlt / uid / V.FBX_META_FILE).read_text())["structure_shape"]
            V.verify_files(vlt, uid, meta)
    except (UserInputError, OSError, ValueError, KeyError, TypeError):
        return False
    return True


def _check_vault(vlt: Path, origin: str) -> None:
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
            _check_vault(vlt, str(zip_path))
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


def download(name: str, to: str | os.PathLike = DEFAULT_ROOT, *, sha256: str | None = None,
             manifest: str | os.PathLike | Mapping[str, str] | None = None, env: str | None = None,
             force: bool = False, retries: int = 0, timeout: float = 60.0,
             progress: bool | None = None) -> list[tuple[Path, str]]:
    """Download and install a vault zip; returns [(vault path, status)] (see the module docstring)."""
    source = resolve_source(name)
    if env is not None and not _NAME.match(env):
        raise UserInputError(f"invalid env name {env!r}")
    if isinstance(manifest, (str, os.PathLike)):
        manifest = load_manifest(manifest)
    expected = _expected_sha(name, source, sha256, manifest)
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
    zip_path = to / ".downloads" / f"{key}-{source.filename or 'download.zip'}"
    download_file(source.url, zip_path, sha256=expected, retries=retries, timeout=timeout, progress=progress)
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


# --------------------------------------------------------------------------- pack
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
    meta = V.read_metadata(vlt)
    for uid in V.list_uids(vlt):
        V.verify_files(vlt, uid, meta)
    zip_path = Path(zip_path)
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = zip_path.with_name(zip_path.name + ".part")
    top = vlt.resolve().name
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in _walk(vlt):
            info = zipfile.ZipInfo(f"{top}/{path.relative_to(vlt).as_posix()}", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes())
    os.replace(tmp, zip_path)
    return V.sha256_file(zip_path)


# --------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtmarl.hub", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("download", help="download and install a vault zip")
    d.add_argument("source", help="http(s)/file URL, hf://<owner>/<repo>/<path>.zip or "
                                  "ogmarl:<source>/<env>/<scenario>")
    d.add_argument("--to", default=str(DEFAULT_ROOT), help="vault root (default: %(default)s)")
    d.add_argument("--sha256", default=None, help="expected sha256 of the zip")
    d.add_argument("--manifest", default=None, help="JSON file mapping names to sha256")
    d.add_argument("--env", default=None, help="env directory to install into (default: from the vault)")
    d.add_argument("--force", action="store_true", help="replace a vault that is already present")
    d.add_argument("--retries", type=int, default=3, help="resume attempts after a dropped connection")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    p = sub.add_parser("pack", help="zip a <task>.vlt directory and print its sha256")
    p.add_argument("vault", help="a <task>.vlt directory")
    p.add_argument("zip", help="output zip path")
    args = parser.parse_args(argv)
    try:
        if args.command == "pack":
            sha = pack(args.vault, args.zip)
            print(f"{sha}  {args.zip}")
            return 0
        results = download(args.source, args.to, sha256=args.sha256, manifest=args.manifest, env=args.env,
                           force=args.force, retries=max(0, args.retries),
                           progress=False if args.quiet else None)
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path, status in results:
        print(f"{status}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
