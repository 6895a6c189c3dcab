"""Atomic file writes: a reader (or a resume after a kill) sees the old file or the new one, never half.

Why: a run killed while writing ``summary.json`` or ``metrics.jsonl`` must stay
readable and resumable.
"""

from __future__ import annotations

import os
from pathlib import Path


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to a temp file beside ``path``, flush it to disk, then rename it over ``path``.

    A failed write (a full disk) removes its temp file and leaves ``path`` as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
