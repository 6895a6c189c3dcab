"""Where the test suite's time goes: JAX's own compile events (trace, lowering, XLA compile) per program and file.

As a pytest plugin every process of the suite (the xdist workers too) records each compile event
``jax.monitoring`` reports, with the test it happened in, and writes them to ``$SUITE_PROFILE_DIR``; run as a
script it sums those files into one report. CLIs that tests start are separate processes: their time is in
the test's duration, not in these events.

    SUITE_PROFILE_DIR=/tmp/prof PYTHONPATH=benchmarks python -m pytest -q -n 2 --dist loadfile -p suite_profile \\
        --durations=0 > /tmp/prof/durations.txt
    python benchmarks/suite_profile.py /tmp/prof --durations /tmp/prof/durations.txt \\
        --out benchmarks/results/suite_profile_epyc.json
"""

from __future__ import annotations

import argparse
import atexit
import collections
import json
import os
import re
from pathlib import Path

PHASES = {"jaxpr_trace_duration": "trace", "jaxpr_to_mlir_module_duration": "lower",
          "backend_compile_duration": "compile"}
SMALL = 0.05  # seconds: an XLA compile this short is one eager primitive or a tiny helper program

_events: list[tuple[str | None, str, str | None, float]] = []
_current = {"test": None}


def _listener(event: str, duration: float, fun_name: str | None = None, **_) -> None:
    phase = PHASES.get(event.rsplit("/", 1)[-1])
    if phase is not None:
        _events.append((_current["test"], phase, fun_name, duration))


def _dump() -> None:
    out = Path(os.environ["SUITE_PROFILE_DIR"])
    out.mkdir(parents=True, exist_ok=True)
    (out / f"events_{os.getpid()}.json").write_text(json.dumps(_events))


def pytest_configure(config) -> None:
    if "SUITE_PROFILE_DIR" not in os.environ:
        raise SystemExit("suite_profile: set SUITE_PROFILE_DIR to the folder for the event files")
    import jax

    jax.monitoring.register_event_duration_secs_listener(_listener)
    atexit.register(_dump)


def pytest_runtest_setup(item) -> None:
    _current["test"] = item.nodeid


def durations_by_file(text: str) -> dict[str, float]:
    """Seconds per test file from pytest's ``--durations=0`` lines (setup + call + teardown)."""
    per: dict[str, float] = collections.Counter()
    for line in text.splitlines():
        m = re.match(r"\s*([\d.]+)s (?:setup|call|teardown)\s+(\S+)", line)
        if m:
            per[m.group(2).split("::")[0]] += float(m.group(1))
    return dict(per)


def summarise(folder: Path, durations: Path | None, top: int) -> dict:
    events = [e for f in sorted(folder.glob("events_*.json")) for e in json.loads(f.read_text())]
    phases = collections.Counter()
    programs: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    files: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    small = collections.Counter()
    for test, phase, name, secs in events:
        phases[phase] += secs
        # trace events name the Python function, lower/compile events jit(<function>): one key per program
        key = re.sub(r"^jit\((.*)\)$", r"\1", name or "?")
        programs[key][phase] += secs
        programs[key]["compiles"] += phase == "compile"
        files[(test or "(collection)").split("::")[0]][phase] += secs
        if phase == "compile" and secs < SMALL:
            small["compiles"] += 1
            small["seconds"] += secs
    total = lambda c: c["trace"] + c["lower"] + c["compile"]  # noqa: E731
    report = {
        "in_process_seconds": {k: round(v, 1) for k, v in phases.items()} | {"all": round(sum(phases.values()), 1)},
        "xla_compiles": sum(1 for e in events if e[1] == "compile"),
        f"compiles_under_{SMALL}s": {"count": small["compiles"], "seconds": round(small["seconds"], 1)},
        "programs": [{"program": k, "compiles": int(c["compiles"]), **{p: round(c[p], 1) for p in PHASES.values()},
                      "all": round(total(c), 1)} for k, c in sorted(programs.items(), key=lambda kv: -total(kv[1]))[:top]],
    }
    wall = durations_by_file(durations.read_text()) if durations else {}
    if wall:
        report["test_seconds"] = round(sum(wall.values()), 1)
    report["files"] = [{"file": f, "compile_work": round(total(c), 1), "test_seconds": round(wall.get(f, 0.0), 1)}
                       for f, c in sorted(files.items(), key=lambda kv: -wall.get(kv[0], total(kv[1])))[:top]]
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path, help="SUITE_PROFILE_DIR of the profiled run")
    ap.add_argument("--durations", type=Path, help="that run's output with --durations=0")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    report = summarise(args.folder, args.durations, args.top)
    text = json.dumps(report, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
