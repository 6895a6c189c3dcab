"""The code passes ruff with the project's settings (pyproject.toml [tool.ruff]), as CI's `make lint` does.

Ruff is a dev dependency (``pip install -e '.[dev]'``); in an environment without it the
test is skipped with that reason rather than passing silently.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ruff() -> list[str] | None:
    exe = shutil.which("ruff") or (Path(sys.executable).parent / "ruff")
    return [str(exe)] if Path(exe).is_file() else None


def test_ruff_check_passes():
    ruff = _ruff()
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[dev]')")
    proc = subprocess.run([*ruff, "check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
