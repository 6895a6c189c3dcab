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


# Lab history belongs in commit messages and issue notes, not in the package: these patterns mark it. A run
# counter (`s31`, `session 12`, `stop 40`) and one compute set-up's limits (a lease, "8 files", "64 MiB",
# "minutes of GPU") are true of one sitting or one machine, not of the project.
HISTORY = {
    "a date": r"\b20\d\d-[01]\d-[0-3]\d\b",
    "an issue number": r"\b[Ii]ssues? #?\d+",
    "a paper called by its seed number": r"\b[Ss]eed[ _-]?00\d",
    "a work-log counter": r"\b(this|last|next|previous) (session|round)\b"
                          r"|\b(?!(first|second|third) session)[\w-]*(th|st|nd|rd) session\b",
    "a run counter": r"(?<![A-Za-z0-9])s\d\d(?![0-9])|\b[Ss](ession|top) \d+\b",
    "one set-up's limits": r"\b[Ll]eas(e|es|ed)\b|\blent\b|\b(8|eight) files\b|\b64 ?MiB\b|\bminutes of (GPU|device)",
    "a pointer into RESULTS.md": r"RESULTS\.md",
}
# Documents point into RESULTS.md by design; every other kind applies to them too.
DOC_HISTORY = [kind for kind in HISTORY if kind != "a pointer into RESULTS.md"]


def history_in(text: str, kinds=tuple(HISTORY)) -> list[str]:
    """Which of ``kinds`` of lab history ``text`` carries (empty if none)."""
    return [what for what in kinds if re.search(HISTORY[what], text)]


@pytest.mark.parametrize("text,kinds", [
    ("# our default until 2026-11-26", ["a date"]),
    ("(issue 14: Connector's vaults)", ["an issue number"]),
    ('"""Seed 004 Table 1"""', ["a paper called by its seed number"]),
    ("from mtmarl.experiments import seed002", ["a paper called by its seed number"]),
    ("# measured this session", ["a work-log counter"]),
    ("# the thirtieth session", ["a work-log counter"]),
    ("# the twenty-first session's runs", ["a work-log counter"]),
    ("# rows after update 4 of the first session are gone", []),
    ("# see RESULTS.md, Table 1", ["a pointer into RESULTS.md"]),
    ("`benchmarks/results/suite_s31_xeon.txt`", ["a run counter"]),
    ("measured in session 12", ["a run counter"]),
    ("Stop 40: the collection resumed", ["a run counter"]),
    ("# step 1 of the lease", ["one set-up's limits"]),
    ("at most 8 files of 64 MiB come back", ["one set-up's limits"]),
    ("15 minutes of GPU time", ["one set-up's limits"]),
    ("smax:map=3s5z, 1s10z and 25m", []),
    ("embed 64 (116,420 parameters), 6 files per set", []),
    ("dir: outputs/train/${now:%Y-%m-%d}", []),
    ("seed: 0  # seeds 0 .. 2 side by side", []),
    ("issues = tasks  # the tracker's word", []),
])
def test_history_scanner_flags_what_it_should(text, kinds):
    assert history_in(text) == kinds


def history_lines(paths, kinds=tuple(HISTORY)) -> list[str]:
    """``file:line: kinds: text`` for every line of ``paths`` that carries one of ``kinds`` of lab history."""
    found = []
    for path in paths:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if kinds_found := history_in(line, kinds):
                name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
                found.append(f"{name}:{n}: {', '.join(kinds_found)}: {line.strip()[:100]}")
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


def documents() -> list[Path]:
    """The repository's prose: the top-level documents, docs/, the benchmarks' and the data's READMEs, and every
    Markdown file under results/ (artefact READMEs and generated tables)."""
    paths = [ROOT / name for name in ("README.md", "RESULTS.md", "ARCHITECTURE.md")]
    paths += sorted((ROOT / "docs").glob("*.md")) + [ROOT / "benchmarks" / "README.md"]
    paths += [ROOT / folder / "README.md" for folder in ("vault_data", "vault_data_converged")]
    return [path for path in paths if path.is_file()] + files_under("results", (".md",))


def test_documents_and_results_carry_no_history():
    """No dates, issue numbers, papers by seed number, run counters or one set-up's limits in any document."""
    docs = documents()
    assert ROOT / "vault_data" / "README.md" in docs and len(docs) > 60
    found = history_lines(docs, DOC_HISTORY)
    assert not found, "\n".join(found)


def test_the_document_scan_fails_on_a_planted_line(tmp_path):
    doc = tmp_path / "README.md"
    doc.write_text("# Runs\n\nMeasured on 2026-11-27 in the s31 run, one lease of 15 minutes of GPU time.\n")
    found = history_lines([doc], DOC_HISTORY)
    assert len(found) == 1 and all(k in found[0] for k in ("a date", "a run counter", "one set-up's limits"))
    doc.write_text("# Runs\n\nSee RESULTS.md for the tables.\n")  # documents may point into RESULTS.md
    assert history_lines([doc], DOC_HISTORY) == []


def numbered_citations(text: str) -> list[str]:
    """Prose lines (outside code) that cite a paper by number, ``[1]`` or ``[1, 2]``: README.md's References give
    each paper one short name, and documents use that name."""
    prose = re.sub(r"`[^`]*`", "", re.sub(r"```.*?```", "", text, flags=re.S))  # a code span may wrap a line
    return [line for line in prose.splitlines() if re.search(r"(?<![\w\]])\[\d{1,2}(, ?\d{1,2})*\](?![(\w])", line)]


def test_documents_cite_papers_by_name():
    assert numbered_citations("MT Oryx [1, 2] on Sable [3]\n`seeds=[0,1]` and [0.85, 0.93]\n") == [
        "MT Oryx [1, 2] on Sable [3]"]
    found = [f"{d.relative_to(ROOT)}: {line.strip()[:100]}" for d in documents() for line in numbered_citations(d.read_text())]
    assert not found, "\n".join(found)


# --------------------------------------------------------------- documents cite paths that exist

# Where a document's relative path may start: the repository's tracked top-level folders and the package's
# subpackages (ARCHITECTURE.md names `algos/bc_t.py` inside `mtmarl/`). A path under any other first name
# (`outputs/`, `vault_data_full/`, `/tmp`, a run directory) is something a command writes, not a file of the tree.
TREE_ROOTS = ("mtmarl", "tests", "benchmarks", "experiment_scripts", "results", "docs", "vault_data",
              "vault_data_converged", ".ci")
PACKAGE_DIRS = ("algos", "configs", "data", "envs", "evaluation", "experiments", "hub", "networks", "online",
                "training")
# Written by commands, never committed: the experiment runner's run directories (git-ignored).
WRITTEN = ("results/runs",)


def cited_paths(text: str) -> list[str]:
    """Every path a document cites in code (inline or a fenced block) or a Markdown link and whose first name is a
    folder of the tree or of the package, as glob patterns (alternatives and placeholders expanded as in
    cited_artefacts)."""
    fences = re.findall(r"```[^\n]*\n(.*?)```", text, flags=re.S)
    spans = re.findall(r"`([^`]+)`", re.sub(r"```.*?```", "", text, flags=re.S)) + fences
    spans += re.findall(r"\]\(([^)\s]+)\)", text)
    out = []
    for span in spans:
        for word in span.split():
            if "://" in word:
                continue
            for token in word.split("=", 1)[-1].split(":"):  # key=path, and PATH-style lists a:b
                token = token.strip(".,;\"'()")
                if "/" not in token or token.startswith(("/", "~", "$", ".venv")):
                    continue
                first = token.split("/", 1)[0].strip("{<")
                if (first in TREE_ROOTS or first in PACKAGE_DIRS) and not token.startswith(WRITTEN):
                    out.extend(_expand(token))
    return out


def missing_paths(doc: Path, cited: list[str]) -> list[str]:
    """The cited patterns that match nothing relative to the repository, the document's folder, the package or its
    configs; ``--out <prefix>`` of a command that writes ``<prefix>.md``, ``.png`` ... counts as its files."""
    bases = (ROOT, doc.parent, ROOT / "mtmarl", ROOT / "mtmarl" / "configs")
    return [c for c in cited
            if not any(list(base.glob(c.rstrip("/"))) or list(base.glob(c + ".*")) for base in bases)]


def test_the_path_scanner_reads_code_spans_and_links_and_finds_a_missing_path():
    text = ("See `mtmarl/algos/{mt_oryx,odis}.py`, [the card](vault_data/README.md), `algos/hygen.py`,\n"
            "`python -m mtmarl.train data.root=vault_data_converged`, `outputs/quick/`, `results/runs/x/`, "
            "`benchmarks/gone.py`.\n```\npython experiment_scripts/nowhere.py\n```\n")
    cited = cited_paths(text)
    assert cited == ["mtmarl/algos/mt_oryx.py", "mtmarl/algos/odis.py", "algos/hygen.py", "benchmarks/gone.py",
                     "experiment_scripts/nowhere.py", "vault_data/README.md"]
    assert missing_paths(ROOT / "README.md", cited) == ["benchmarks/gone.py", "experiment_scripts/nowhere.py"]


def test_every_path_a_document_cites_is_in_the_tree():
    docs = [d for d in documents() if d.name == "README.md" or d.parent in (ROOT, ROOT / "docs")]
    assert ROOT / "ARCHITECTURE.md" in docs and ROOT / "results" / "smax_mappo_vs_jaxmarl" / "README.md" in docs
    missing = [f"{d.relative_to(ROOT)}: {c}" for d in docs for c in missing_paths(d, cited_paths(d.read_text()))]
    assert not missing, "documents cite paths that are not in the tree:\n" + "\n".join(missing)


def uncited_decisions(text: str) -> list[str]:
    """The rows of docs/decisions.md's table whose last cell (the artefact) names no path of the tree."""
    rows = [line for line in text.splitlines() if line.startswith("|") and not line.startswith(("| setting", "|---"))]
    return [row for row in rows if not cited_paths(row.rstrip(" |").rsplit("|", 1)[-1])]


def test_every_decision_cites_an_artefact():
    """Each default in docs/decisions.md names the file that holds its measurement (which then must exist:
    test_every_path_a_document_cites_is_in_the_tree); a pointer into git history is not a file."""
    bad_row = "| `algo.lr` | 1e-3 | 0.770 vs 0.204 | git history of RESULTS.md |"
    assert uncited_decisions(bad_row) == [bad_row]
    assert uncited_decisions("| `algo.tau` | 0.05 | 1.326 vs 0.796 | `results/table1_6000/` |") == []
    text = (ROOT / "docs" / "decisions.md").read_text()
    assert text.count("\n| ") >= 3 and not uncited_decisions(text), uncited_decisions(text)


def entry_points() -> set[str]:
    """``mtmarl.<x>`` for every module ``python -m`` runs: a ``__main__.py`` or an ``if __name__ == "__main__"``
    block. The experiment modules are left out: their command is ``experiment_scripts/<experiment>.py``."""
    found = set()
    for path in (ROOT / "mtmarl").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__main__":
            found.add(".".join(parts[:-1]))
        elif re.search(r"^if __name__ == .__main__.:", path.read_text(), re.M) and parts[1] != "experiments":
            found.add(".".join(parts))
    return found


def make_targets(makefile: str) -> set[str]:
    """The Makefile's targets, a pattern rule (``data-%``, ``data-smax_%``) by its stem (``data``)."""
    return {re.sub(r"-[^-]*%$", "", m) for m in re.findall(r"^([a-z][\w%-]*):(?!=)", makefile, re.M)}


def test_architecture_names_every_entry_point_and_make_target():
    arch = (ROOT / "ARCHITECTURE.md").read_text()
    points = entry_points()
    assert {"mtmarl.train", "mtmarl.data", "mtmarl.hub", "mtmarl.tasks"} <= points
    assert make_targets("lint: install\n\truff\ndata-%: install\ndata-smax_%: x\nX := 1\n") == {"lint", "data"}
    missing = sorted(p for p in points if f"python -m {p}`" not in arch)
    missing += sorted(t for t in make_targets((ROOT / "Makefile").read_text()) if not re.search(f"`{t}[`\\[-]", arch))
    assert not missing, f"ARCHITECTURE.md does not name these entry points / make targets: {missing}"
    listed = set(re.findall(r"python -m (mtmarl[\w.]*)", arch))
    assert listed <= points, f"ARCHITECTURE.md names commands that do not exist: {sorted(listed - points)}"


DURATION = r"\b\d+(\.\d+)? ?(s|sec|seconds?|min|minutes?|h|hours?)\b|\b\d+:\d\d\b|\ba few minutes\b"


def main_job_times(text: str) -> list[str]:
    """Lines about the main job (``make train``) that state a duration."""
    return [line.strip() for line in text.splitlines()
            if re.search(r"make train|main job", line, re.I) and re.search(DURATION, line)]


def test_the_main_jobs_time_is_stated_only_in_the_benchmarks():
    """One measured time for ``make train``, beside its artefact in benchmarks/README.md; the README, the
    Makefile, the trainer's help and its default budget point there instead of carrying figures of their own."""
    assert main_job_times("make train   # the main job, a few minutes on 2 cores\n# main job: 5:41 cold\n"
                          "make train   # time: benchmarks/README.md\n") == [
        "make train   # the main job, a few minutes on 2 cores", "# main job: 5:41 cold"]
    paths = [ROOT / "README.md", ROOT / "Makefile", ROOT / "mtmarl" / "train.py",
             ROOT / "mtmarl" / "configs" / "training" / "default.yaml"]
    found = [f"{p.relative_to(ROOT)}: {line}" for p in paths for line in main_job_times(p.read_text())]
    assert not found, "\n".join(found)
    bench = (ROOT / "benchmarks" / "README.md").read_text()
    section = bench[bench.index("## `make train`"):].split("\n## ", 1)[0]
    assert re.search(DURATION, section) and "`results/make_train_" in section


# --------------------------------------------------------------- results/ holds each file once

DUPLICATE_MIN_BYTES = 1024  # below this two files may agree by chance (an empty table, a one-line summary)


def duplicate_files(root: Path, min_bytes: int = DUPLICATE_MIN_BYTES) -> list[list[str]]:
    """Groups of files under ``root`` (each group sorted, relative to ``root``) with identical content. A symlink
    is not a copy: one run shared by two experiments is stored once and linked from the other."""
    import hashlib

    root = root.resolve()
    files = sorted({p.resolve() for p in root.rglob("*") if p.is_file()})
    by_hash: dict[str, list[str]] = {}
    for path in (p for p in files if p.stat().st_size > min_bytes):
        by_hash.setdefault(hashlib.sha256(path.read_bytes()).hexdigest(), []).append(str(path.relative_to(root)))
    return [group for group in by_hash.values() if len(group) > 1]


def test_the_duplicate_scan_finds_a_copied_file(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "table.md").write_text("x" * 2000)
    (tmp_path / "b.md").write_text("x" * 2000)
    (tmp_path / "c.md").write_text("y" * 2000)
    (tmp_path / "small.md").write_text("x")
    (tmp_path / "small2.md").write_text("x")
    (tmp_path / "linked").symlink_to(tmp_path / "a")
    assert duplicate_files(tmp_path) == [["a/table.md", "b.md"]]


def test_no_results_file_is_committed_twice():
    dups = duplicate_files(ROOT / "results")
    assert not dups, "results/ holds the same file more than once (keep one, cite it):\n" + \
        "\n".join(" = ".join(group) for group in dups)


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
