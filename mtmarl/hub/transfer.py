"""Resumable HTTP(S) / file downloads of one file, with an optional sha256 check.

Why a module of its own: the resume protocol (``.part`` file claimed by one process
at a time, ``Range`` with an ``If-Range`` validator, restarting on 200/416, retries
after a dropped connection, a full disk cleaned up)
is the only network code of the hub and the part most likely to need care; it knows
nothing about vaults, so it can be tested against any file a server serves.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import json
import os
import re
import secrets
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from mtmarl.data import vault as V
from mtmarl.errors import UserInputError

CHUNK = 1 << 16


class DownloadError(UserInputError):
    """A download failed (network, server or integrity); partial data is kept to resume."""


def _progress(enabled: bool):
    from rich.console import Console
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                               TransferSpeedColumn)

    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    TimeRemainingColumn(), console=Console(stderr=True), transient=True,
                    disable=not enabled)


def _claim(shared: Path, own: Path) -> None:
    """Take over a partial file left to resume: a rename, so exactly one process gets it."""
    with contextlib.suppress(FileNotFoundError):
        os.rename(shared, own)


def _disk_full(err: OSError) -> bool:
    return err.errno in (errno.ENOSPC, errno.EDQUOT)


def download_file(url: str, dest: str | os.PathLike, *, sha256: str | None = None, retries: int = 0,
                  timeout: float = 60.0, progress: bool | None = None,
                  partial: str | os.PathLike | None = None) -> Path:
    """Download ``url`` to ``dest``, resuming a partial download with a Range request.

    An interrupted download waits at ``partial`` (default ``<dest>.part``, with its validators in
    ``<partial>.json``) to be resumed by the next call. While downloading, a process writes a file
    of its own (``<partial>-<pid>-<random>``), claiming a waiting partial by renaming it, so two
    downloads of one URL at once never write one file; ``dest`` is renamed into place atomically.
    On a dropped connection the partial is kept (and resumed ``retries`` more times, or by the next
    call). A sha256 mismatch or a full disk deletes it and raises :class:`DownloadError`.
    """
    dest = Path(dest)
    shared = Path(partial) if partial is not None else dest.with_name(dest.name + ".part")
    shared_info = shared.with_name(shared.name + ".json")
    part = shared.with_name(f"{shared.name}-{os.getpid()}-{secrets.token_hex(4)}")
    info_path = part.with_name(part.name + ".json")
    progress = sys.stderr.isatty() if progress is None else progress
    is_http = urllib.parse.urlparse(url).scheme in ("http", "https")
    outcome = "keep"  # what to do with the partial file on the way out: keep (to resume), discard, done
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        _claim(shared, part)
        _claim(shared_info, info_path)
        _fetch(url, part, info_path, retries, timeout, progress, is_http, shared)
        if sha256:
            got = V.sha256_file(part)
            if got != sha256.lower():
                outcome = "discard"
                raise DownloadError(f"checksum mismatch for {url}: sha256 {got}, expected {sha256.lower()}; "
                                    f"the download was discarded and nothing was installed")
        os.replace(part, dest)
        outcome = "done"
    except OSError as err:
        if not _disk_full(err):
            raise
        outcome = "discard"
        raise DownloadError(f"no space left on the device writing {part.parent} while downloading {url} "
                            f"({err.strerror}); the partial download was removed: free space (or choose another "
                            f"--to) and run the same command again") from None
    finally:
        if outcome == "keep" and part.exists() and is_http:
            with contextlib.suppress(OSError):  # left for the next call to resume
                os.replace(info_path, shared_info)
                os.replace(part, shared)
        if outcome == "discard":
            shared_info.unlink(missing_ok=True)
        for path in (part, info_path):
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
    return dest


def _fetch(url: str, part: Path, info_path: Path, retries: int, timeout: float, progress: bool, is_http: bool,
           shared: Path) -> None:
    """Fill ``part`` with the bytes of ``url``, resuming what it holds (HTTP) and retrying ``retries`` times."""
    info = {}
    if part.exists() and info_path.exists():
        try:
            info = json.loads(info_path.read_text())
        except (OSError, json.JSONDecodeError):
            info = {}
    if part.exists() and (info.get("url") != url or not is_http):
        part.unlink()  # a leftover of another URL, or one that cannot resume
        info = {}

    attempt = 0
    while True:
        have = part.stat().st_size if part.exists() else 0
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
                    task = bar.add_task(shared.name.removesuffix(".part"), total=total, completed=have)
                    while True:
                        block = resp.read(CHUNK)
                        if not block:
                            break
                        fh.write(block)
                        done += len(block)
                        bar.update(task, completed=done)
            except (http.client.HTTPException, OSError) as err:
                if isinstance(err, OSError) and _disk_full(err):
                    raise
                if attempt < retries:
                    attempt += 1
                    continue
                raise DownloadError(f"download of {url} interrupted after {done} of "
                                    f"{total if total is not None else '?'} bytes ({type(err).__name__}: "
                                    f"{err}); run the same command again to resume ({shared} is kept)") from None
            if total is not None and done != total:
                if attempt < retries:
                    attempt += 1
                    continue
                raise DownloadError(f"download of {url} interrupted after {done} of {total} bytes (the "
                                    f"connection closed early); "
                                    f"run the same command again to resume ({shared} is kept)")
        return
