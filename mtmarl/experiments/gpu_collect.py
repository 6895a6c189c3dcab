"""Collect a task set in short GPU windows that resume one another, task by task.

A device window is minutes long and brings back a few files, so a set is collected over several windows:
each runs ``python -m mtmarl.collect`` on the tasks no earlier window finished, stops it before its deadline,
and packs what it collected into at most ``--parts`` files; here, ``merge`` adds those to the set's
accumulated collection, whose references file is what the next window skips.

On the device machine, from the checkout (``.whl/`` and ``outputs/gpu_collect/<set>/references.json`` carried;
``../shared/gpu/README.md`` installs the wheels)::

    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    PYTHONPATH=/tmp/site:$PWD python3 experiment_scripts/gpu_collect.py window lbf_5 --minutes 8 --procs 4 --out $OUT \\
        -- online.num_envs=512 collect.budget=30000000 collect.time_limit_min=2 collect.quality=levels

Here, once the window's files are back::

    python experiment_scripts/gpu_collect.py merge lbf_5 <the window's files>

``window`` passes ``collect.done_in=<accumulated references>`` (when there is one) and ``collect.root`` under
``/tmp``; at the deadline it sends SIGTERM, so the task in progress ends at its chunk and is written with
``stopped: signal ...``, and it kills the collector if the grace period passes too. The collector's output goes
to ``window.log``, the collection (vaults, learning curves, references) to ``<set>.tar.gz.<k>`` parts.
``merge`` unpacks those into ``outputs/gpu_collect/<set>/`` (``--into``). It drops a task the window's signal
cut short, with its vault, so the next window collects it again, and merges every other task's entry, vault
and curve. Train with ``data.root=outputs/gpu_collect/<set>``. The same commands run on a CPU, slower.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from mtmarl.errors import UserInputError

DEFAULT_INTO = Path("outputs") / "gpu_collect"
GRACE_S = 90.0  # after SIGTERM: the task in progress finishes its chunk, is scored and recorded


def accumulated(task_set: str, into: Path | None = None) -> Path:
    return into or DEFAULT_INTO / task_set


def window(task_set: str, minutes: float, out: Path, overrides: list[str], into: Path | None = None,
           part_mib: int = 10, parts: int = 6, procs: int = 1, grace_s: float = GRACE_S) -> dict:
    """Collect until ``minutes`` have passed, then pack the collection into ``out``; returns a summary.

    ``procs`` collectors share the set (``collect.shard=[i, procs]``) and the device: one online learner of
    small networks leaves most of a GPU idle, so several side by side collect that many tasks per window.
    """
    if not minutes > 0 or part_mib < 1 or parts < 1 or procs < 1:
        raise UserInputError(f"--minutes={minutes}, --part-mib={part_mib}, --parts={parts}, --procs={procs}: "
                             f"want positive values")
    out.mkdir(parents=True, exist_ok=True)
    done = accumulated(task_set, into) / "references.json"
    root = Path(tempfile.mkdtemp(prefix=f"gpu_collect_{task_set}_"))
    base = [sys.executable, "-m", "mtmarl.collect", f"+tasks={task_set}", f"collect.root={root}",
            "collect.progress=false", *([f"collect.done_in={done.resolve()}"] if done.is_file() else []), *overrides]
    env = {**os.environ, **({"XLA_PYTHON_CLIENT_PREALLOCATE": "false"} if procs > 1 else {})}
    deadline = time.monotonic() + 60.0 * minutes
    logs = [root.with_name(f"{root.name}.{i}.log") for i in range(procs)]
    running = []
    for i, log in enumerate(logs):
        cmd = [*base, *([f"collect.shard=[{i},{procs}]"] if procs > 1 else [])]
        with open(log, "w") as fh:
            fh.write(" ".join(cmd) + "\n")
            fh.flush()
            running.append(subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env))
    cut = not _wait_all(running, deadline - grace_s)
    if cut:  # each collector ends the task it is on at its chunk and writes it (stopped: signal)
        for proc in running:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        if not _wait_all(running, time.monotonic() + grace_s):
            for proc in running:
                if proc.poll() is None:
                    proc.kill()
            _wait_all(running, None)
    with open(out / "window.log", "w") as fh:
        for log in logs:
            fh.write(log.read_text())
            log.unlink()
    written = pack(root, out, task_set, part_mib << 20, parts)
    entries = json.loads((root / "references.json").read_text()) if (root / "references.json").is_file() else {}
    shutil.rmtree(root, ignore_errors=True)
    summary = {"task_set": task_set, "returncodes": [p.returncode for p in running], "cut_at_deadline": cut,
               "tasks": {k: {"return": v.get("return"), "env_steps": v.get("env_steps"), "stopped": v.get("stopped")}
                         for k, v in entries.items()},
               "parts": [p.name for p in written]}
    (out / "window.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def _wait_all(procs: list[subprocess.Popen], until: float | None) -> bool:
    """Wait for every process until the monotonic time ``until`` (None: for ever); whether all ended."""
    for proc in procs:
        try:
            proc.wait(timeout=None if until is None else max(0.0, until - time.monotonic()))
        except subprocess.TimeoutExpired:
            return False
    return True


def pack(root: Path, out: Path, task_set: str, part_bytes: int, parts: int) -> list[Path]:
    """``root`` as one gzipped tar, split into parts of ``part_bytes``; refused if it needs more than ``parts``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path in sorted(root.iterdir()):
            tar.add(path, arcname=path.name)
    data, size = buf.getvalue(), part_bytes
    pieces = [data[i:i + size] for i in range(0, len(data), size)] or [b""]
    if len(pieces) > parts:
        raise UserInputError(f"the collection packs to {len(data) / 2**20:.1f} MiB, more than {parts} parts of "
                             f"{size / 2**20:.1f} MiB: record less per task (online.record_envs, "
                             f"collect.quality_records) or collect fewer tasks per window")
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(f"{task_set}.tar.gz.*"):  # an earlier window's parts would be joined to these
        stale.unlink()
    written = []
    for k, piece in enumerate(pieces):
        written.append(out / f"{task_set}.tar.gz.{k:03d}")
        written[-1].write_bytes(piece)
    return written


def merge(task_set: str, files: Path, into: Path | None = None) -> dict:
    """Add a window's collection (the ``<set>.tar.gz.<k>`` parts in ``files``) to the accumulated one."""
    from mtmarl.evaluation.references import merge_entry, read_entries

    parts = sorted(files.glob(f"{task_set}.tar.gz.*"))
    if not parts:
        raise UserInputError(f"{files} holds no {task_set}.tar.gz.<k> parts (the files a window wrote)")
    dest = accumulated(task_set, into)
    with tempfile.TemporaryDirectory() as tmp:
        stream = io.BytesIO(b"".join(p.read_bytes() for p in parts))
        with tarfile.open(fileobj=stream, mode="r:gz") as tar:
            tar.extractall(tmp, filter="data")  # no member may land outside tmp
        root = Path(tmp)
        vaults = vaults_by_task(root)
        kept, dropped = [], []
        for key, entry in read_entries(root / "references.json").items():
            if str(entry.get("stopped") or "").startswith("signal"):
                dropped.append(key)
                continue
            if key in vaults:
                rel = vaults[key].relative_to(root)
                shutil.rmtree(dest / rel, ignore_errors=True)
                shutil.copytree(vaults[key], dest / rel)
            env, _, params = key.partition(":")
            for curve in (root / "logs" / env).glob("*"):  # <task>.jsonl and .png, <task> its label or params
                if curve.stem in (entry.get("name"), params):
                    (dest / "logs" / env).mkdir(parents=True, exist_ok=True)
                    shutil.copy2(curve, dest / "logs" / env / curve.name)
            merge_entry(dest / "references.json", key, entry)
            kept.append(key)
    return {"into": str(dest), "merged": kept, "dropped (cut by the window's deadline)": dropped}


def vaults_by_task(root: Path) -> dict[str, Path]:
    """``<root>/<env>/<task>.vlt`` directories by the task key (``env:params``) their ``mtmarl.json`` records."""
    out = {}
    for vlt in sorted(root.glob("*/*.vlt")):
        meta = vlt / "mtmarl.json"
        if meta.is_file():
            out[json.loads(meta.read_text())["task"]["adhoc"]] = vlt
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("window", help="collect until the deadline, then pack the collection",
                       epilog="mtmarl.collect overrides follow a --, e.g. -- online.num_envs=512")
    w.add_argument("task_set")
    w.add_argument("--minutes", type=float, required=True, help="the window's wall time, packing included")
    w.add_argument("--out", type=Path, required=True, help="where the parts, window.log and window.json go")
    w.add_argument("--into", type=Path, help=f"the accumulated collection (default {DEFAULT_INTO}/<set>)")
    w.add_argument("--procs", type=int, default=1, help="collectors side by side, each on every procs-th task")
    # The device brings back at most 8 files and 64 MiB: 6 parts of 10 MiB, window.log and window.json.
    w.add_argument("--part-mib", type=int, default=10)
    w.add_argument("--parts", type=int, default=6)
    m = sub.add_parser("merge", help="add a window's parts to the accumulated collection")
    m.add_argument("task_set")
    m.add_argument("files", type=Path, help="the directory holding the window's parts")
    m.add_argument("--into", type=Path, help=f"the accumulated collection (default {DEFAULT_INTO}/<set>)")
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []  # (argparse mishandles -- after a subcommand)
    args = parser.parse_args(argv[:len(argv) - len(extra) - bool(extra or "--" in argv)])
    if args.command == "window":
        result = window(args.task_set, args.minutes, args.out, extra, args.into, args.part_mib, args.parts,
                        args.procs)
    else:
        result = merge(args.task_set, args.files, args.into)
    print(json.dumps(result, indent=1))
    return result


def run_cli():
    """The command line (``experiment_scripts/gpu_collect.py``)."""
    try:
        main()
    except UserInputError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
