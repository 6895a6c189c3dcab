"""The code passes ruff and mypy with the project's settings (pyproject.toml [tool.ruff], [tool.mypy]),
as CI's `make lint` does.

Both are dev dependencies (``pip install -e '.[dev]'``); in an environment without one the
test is skipped with that reason rather than passing silently.
"""

import re
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


def history_lines(paths) -> list[str]:
    """``file:line: kinds: text`` for every line of ``paths`` that carries lab history."""
    found = []
    for path in paths:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if kinds := history_in(line):
                found.append(f"{path.relative_to(ROOT)}:{n}: {', '.join(kinds)}: {line.strip()[:100]}")
    return found


def files_under(folder: str, suffixes: tuple[str, ...]) -> list[Path]:
    return sorted(path for path in (ROOT / folder).rglob("*") if path.suffix in suffixes)


def test_package_code_yaml_and_help_texts_carry_no_history():
    """Every .py and .yaml file of the package (help texts and config descriptions live there)."""
    found = history_lines(files_under("mtmarl", (".py", ".yaml")))
    assert not found, "\n".join(found)


def test_tests_benchmarks_and_scripts_carry_no_history():
    """Every .py, .sh and .yaml file of tests/, benchmarks/ and experiment_scripts/, the Makefile and
    pyproject.toml; not this file, whose scanner examples carry history on purpose."""
    paths = [ROOT / "Makefile", ROOT / "pyproject.toml"]
    for folder in ("tests", "benchmarks", "experiment_scripts"):
        paths += files_under(folder, (".py", ".sh", ".yaml"))
    found = history_lines(path for path in paths if path != Path(__file__).resolve())
    assert not found, "\n".join(found)


# --------------------------------------------------------------- RESULTS.md cites artefacts that exist

def cited_artefacts(text: str) -> list[str]:
    """Every ``results/...`` path in ``text`` (prose and commands), each as glob patterns: ``{a,b}`` and
    ``<a|b>`` expand to their alternatives, ``[x]`` to with and without ``x``, any other ``<placeholder>``
    matches any name."""
    out = []
    for path in re.findall(r"(?<![\w/])results/[^\s`'\"()]+", text):
        out.extend(_expand(path.rstrip(".,:;")))
    return out


def _expand(path: str) -> list[str]:
    alt = re.search(r"\{([^{}]*)\}|<([^<>|]*\|[^<>]*)>|\[([^\[\]]*)\]", path)
    if alt is None:
        return [re.sub(r"<[^<>]*>", "*", path)]
    if alt.group(3) is not None:
        options = ["", alt.group(3)]
    else:
        options = (alt.group(1) if alt.group(1) is not None else alt.group(2)).replace("|", ",").split(",")
    return [p for o in options for p in _expand(path[:alt.start()] + o + path[alt.end():])]


def test_the_artefact_scanner_expands_alternatives_and_placeholders():
    text = "see `results/a_{x,y}/` and (`results/s_<mh|sz>_<q>/`).\n```\n--out results/h_<p>_set[_rh1]\n```\n"
    assert cited_artefacts(text) == ["results/a_x/", "results/a_y/", "results/s_mh_*/", "results/s_sz_*/",
                                     "results/h_*_set", "results/h_*_set_rh1"]


def test_every_artefact_results_md_cites_is_in_the_tree():
    cited = cited_artefacts((ROOT / "RESULTS.md").read_text())
    assert len(cited) > 20  # the scanner still finds the tables' artefacts
    missing = [c for c in cited if not list(ROOT.glob(c.rstrip("/")))]
    assert not missing, f"RESULTS.md cites artefacts that are not in results/: {missing}"


def test_every_artefact_in_results_is_cited_by_a_document():
    """results/ keeps only what RESULTS.md, the README, docs/ or the data's README cite."""
    import fnmatch

    docs = [ROOT / "RESULTS.md", ROOT / "README.md", ROOT / "vault_data" / "README.md", *(ROOT / "docs").glob("*.md")]
    cited = [c.rstrip("/") for doc in docs for c in cited_artefacts(doc.read_text())]
    uncited = [d.name for d in (ROOT / "results").iterdir()
               if not any(fnmatch.fnmatch(f"results/{d.name}", c) for c in cited)]
    assert not uncited, f"results/ holds artefacts no document cites: {sorted(uncited)}"
