"""The code passes ruff and mypy with the project's settings (pyproject.toml [tool.ruff], [tool.mypy]),
as CI's `make lint` does.

Both are dev dependencies (``pip install -e '.[dev]'``); in an environment without one the
test is skipped with that reason rather than passing silently.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str) -> str:
    exe = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(exe).is_file():
        pytest.skip(f"{name} is not installed (pip install -e '.[dev]')")
    return exe


def _run(*args: str) -> None:
    proc = subprocess.run(list(args), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_ruff_check_passes():
    _run(_tool("ruff"), "check", "--no-cache", ".")


def test_mypy_passes_on_the_typed_core():
    """mypy on [tool.mypy] files, resolving imports with this interpreter's packages (jax, optax, ...)."""
    _run(_tool("mypy"), "--python-executable", sys.executable)
