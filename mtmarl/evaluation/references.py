"""Per-task reference returns used to normalise evaluation returns.

The data pipeline writes ``vault_data/references.json``: a mapping from a task
(its ad-hoc string, e.g. ``rware:rows=2,cols=3,height=8,agents=4``, or its
name) to at least ``{"return": <final online return>}``. Seed 004 normalises
each task's return by the online system's final return on it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from mtmarl.errors import UserInputError
from mtmarl.tasks import TaskSpec

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "vault_data" / "references.json"


def load_references(path: str | Path | None = None) -> dict[str, float]:
    """Reference returns by task key; an absent file means no references."""
    path = Path(path) if path else DEFAULT_PATH
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text())
        return {k: float(v["return"] if isinstance(v, dict) else v) for k, v in raw.items()}
    except (ValueError, KeyError, TypeError) as err:
        raise UserInputError(f"reference file {path} is malformed: {err}") from None


def reference_for(spec: TaskSpec, references: dict[str, float]) -> float | None:
    for key in (spec.adhoc, spec.name):
        value = references.get(key)
        if value is not None and math.isfinite(value) and value != 0:
            return value
    return None
