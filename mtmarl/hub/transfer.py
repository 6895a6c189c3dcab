"""Resumable HTTP(S) / file downloads of one file, with an optional sha256 check.

Why a module of its own: the resume protocol (``.part`` file, ``Range`` with an
``If-Range`` validator, restarting on 200/416, retries after a dropped connection)
is the only network code of the hub and the part most likely to need care; it knows
nothing about vaults, so it can be tested against any file a server serves.
"""

from __future__ import annotations

import http.client
import json
import os
import re
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
