"""Where a vault zip comes from: source names and URLs, and the sha256 each must have.

Why a module of its own: naming a dataset (``ogmarl:...``, ``hf://...``, a URL) and
deciding which checksum it must match are pure functions of the command line and a
manifest; keeping them apart from the network and file-system code lets them be
checked (and reused, e.g. by ``data.hub`` in training) without downloading anything.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Mapping

from mtmarl.errors import UserInputError

OGMARL_REPO = "InstaDeepAI/og-marl"
SAFE_NAME = re.compile(r"^[A-Za-z0-9_+-][A-Za-z0-9_.+,=-]*$")  # one path component, not '.', '..' or hidden


def is_safe_name(name: object) -> bool:
    """``name`` is one plain path component (env, source, scenario or vault name): no separator, no
    ``.``/``..``, no leading dot; what an archive or a command line may name inside ``--to``."""
    return isinstance(name, str) and SAFE_NAME.fullmatch(name) is not None


@dataclasses.dataclass(frozen=True)
class Source:
    url: str
    filename: str  # the zip's file name
    env: str | None = None  # env directory, when the name says it
    scenario: str | None = None  # expected <scenario>.vlt, when the name says it


def _endpoint() -> str | None:
    return os.environ.get("HF_ENDPOINT") or None


def resolve_source(name: str) -> Source:
    """Map a source name or URL to the URL to download (see :mod:`mtmarl.hub`)."""
    name = name.strip()
    if name.startswith("ogmarl:"):
        parts = name[len("ogmarl:"):].strip("/").split("/")
        if len(parts) != 3 or not all(is_safe_name(p) for p in parts):
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


def expected_sha256(name: str, source: Source, sha256: str | None,
                    manifest: Mapping[str, str] | None) -> str | None:
    """The sha256 the zip of ``name`` must have: ``sha256`` if given, else the manifest's entry, else None."""
    if sha256:
        sha = sha256.strip().lower()
    elif manifest:
        keys = (name, source.url, source.filename, source.scenario)
        found = next((manifest[k] for k in keys if k and k in manifest), None)
        if found is None:
            raise UserInputError(f"manifest has no sha256 for {name!r} (looked up {', '.join(k for k in keys if k)})")
        sha = found
    else:
        return None
    if not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise UserInputError(f"sha256 {sha!r} is not 64 hex digits")
    return sha
