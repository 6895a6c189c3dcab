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


# Lab history belongs in commit messages and issue notes, not in the package: these patterns mark it.
HISTORY = {
    "a date": r"\b20\d\d-[01]\d-[0-3]\d\b",
    "an issue number": r"\b[Ii]ssues? #?\d+",
    "a paper called by its seed number": r"\b[Ss]eed[ _-]?00\d",
    "a work-log counter": r"\b(this|last|next|previous) (session|round)\b|\b\w+(th|st|nd|rd) session\b",
    "a pointer into RESULTS.md": r"RESULTS\.md",
}


def history_in(text: str) -> list[str]:
    """What kinds of lab history ``text`` carries (empty if none)."""
    import re

    return [what for what, pattern in HISTORY.items() if re.search(pattern, text)]


@pytest.mark.parametrize("text,kinds", [
    ("# our default until 2026-11-26", ["a date"]),
    ("(issue 14: Connector's vaults)", ["an issue number"]),
    ('"""Seed 004 Table 1"""', ["a paper called by its seed number"]),
    ("from mtmarl.experiments import seed002", ["a paper called by its seed number"]),
    ("# measured this session", ["a work-log counter"]),
    ("# the thirtieth session", ["a work-log counter"]),
    ("# see RESULTS.md, Table 1", ["a pointer into RESULTS.md"]),
    ("dir: outputs/train/${now:%Y-%m-%d}", []),
    ("seed: 0  # seeds 0 .. 2 side by side", []),
    ("issues = tasks  # the tracker's word", []),
])
def test_history_scanner_flags_what_it_should(text, kinds):
    assert history_in(text) == kinds


def test_package_code_yaml_and_help_texts_carry_no_history():
    """Every .py and .yaml file of the package (help texts and config descriptions live there)."""
    found = []
    for path in sorted((ROOT / "mtmarl").rglob("*")):
        if path.suffix not in (".py", ".yaml"):
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if kinds := history_in(line):
                found.append(f"{path.relative_to(ROOT)}:{n}: {', '.join(kinds)}: {line.strip()[:100]}")
    assert not found, "\n".join(found)
