"""Collect a task set in runs that end by a deadline and pack what they finished, merged where it accumulates.

For a machine held for a limited time (a preemptible node, a batch job with a wall-clock limit, a remote
box whose files come back by copy): each ``run`` collects the set's tasks that no earlier run finished,
stops the collectors before its deadline and packs the finished tasks into parts with a manifest;
``merge``, where the collection accumulates, verifies the parts and every vault in them and adds them.
The accumulated ``references.json`` is what the next run skips (``collect.done_in``)::

    python experiment_scripts/packed_collect.py run lbf_5 --minutes 30 --out <dir> [--procs 2] -- +recipe=converged
    python experiment_scripts/packed_collect.py merge lbf_5 <dir>          # into outputs/packed_collect/lbf_5

``run`` owns where the collectors write (a temporary root it names); a signal to it (Ctrl-C, SIGTERM) ends
the collectors at their current chunk, packs what finished and exits 128 + the signal; its collectors end
with it even when it is killed. A collection too large for ``--parts`` parts stays in its root, named in the
error, and ``merge`` takes that root as it is. ``merge`` refuses the whole merge, changing nothing, when a part
is missing or altered, a vault fails its checksums or names another task, a train task lacks its vault, or a
reference is not a finite number; it stages the new files beside the old and swaps them in. A task a signal
cut short is dropped (the next run collects it again), and tasks of another set are left out. A task whose run
never rose above its untrained return (``return <= initial_return``, or ``ended: no learning by ...``: the
learner did not learn it within its cap) keeps what the accumulated collection already holds for it, its vault
and reference, as the best data available; with nothing there, its new entry is taken (a reference of 0 leaves
its returns raw). Train with
``data.root=<the accumulated folder>``. A finished collection becomes the bundled data of its set as a whole::

    python experiment_scripts/packed_collect.py merge lbf_5 vault_data_converged --into vault_data --whole-set --write-bundled

A collection too large to bundle (SMAX's 2000 episodes per dataset) is bundled as a cut: ``--max-episodes N`` keeps
each dataset's first N episodes (:mod:`mtmarl.data.vault.cut`).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import math
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

DEFAULT_INTO = Path("outputs") / "packed_collect"
GRACE_S = 90.0  # after SIGTERM: the task in progress finishes its chunk, is scored and recorded
MANIFEST = "manifest.json"
OWNED = ("collect.root", "collect.references", "collect.log_dir", "collect.shard", "collect.done_in", "hydra.run.",
         "hydra.sweep.")


def accumulated(task_set: str, into: Path | None = None) -> Path:
    return into or DEFAULT_INTO / task_set


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- run
def check_run_args(minutes: float, part_mib: int, parts: int | None, procs: int, overrides: list[str],
                   grace_s: float) -> None:
    if not minutes * 60.0 > grace_s:
        raise UserInputError(f"--minutes={minutes} leaves no time to collect: the last {grace_s:.0f} s of a run "
                             f"are for the task in progress to stop; want --minutes > {grace_s / 60:.1f}")
    if part_mib < 1 or (parts is not None and parts < 1) or procs < 1:
        raise UserInputError(f"--part-mib={part_mib}, --parts={parts}, --procs={procs}: want integers >= 1")
    owned = [o for o in overrides if o.lstrip("+~").startswith(OWNED)]
    if owned:
        raise UserInputError(f"{owned[0]}: a packed run chooses where its collectors write and which tasks they "
                             f"skip (it packs that root); leave out collect.root, collect.references, "
                             f"collect.log_dir, collect.shard, collect.done_in and hydra.run.*")


def _end_with_parent() -> None:
    """In the collector (before exec): SIGTERM when the run that started it dies, however it dies (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def run(task_set: str, minutes: float, out: Path, overrides: list[str], into: Path | None = None,
        part_mib: int = 10, parts: int | None = None, procs: int = 1, grace_s: float = GRACE_S) -> dict:
    """Collect until ``minutes`` have passed (or a signal), then pack the finished tasks into ``out``.

    ``procs`` collectors share the set (``collect.shard=[i, procs]``): one online learner of small networks
    leaves most of an accelerator idle, so several side by side collect that many tasks at once."""
    check_run_args(minutes, part_mib, parts, procs, overrides, grace_s)
    from mtmarl.collect import check_writable

    check_writable({"--out": out})
    done = accumulated(task_set, into) / "references.json"
    root = Path(tempfile.mkdtemp(prefix=f"packed_collect_{task_set}_"))
    base = [sys.executable, "-m", "mtmarl.collect", f"+tasks={task_set}", f"collect.root={root}",
            "collect.progress=false", f"hydra.run.dir={root.with_name(root.name + '.hydra')}",
            *([f"collect.done_in={done.resolve()}"] if done.is_file() else []), *overrides]
    env = {**os.environ, **({"XLA_PYTHON_CLIENT_PREALLOCATE": "false"} if procs > 1 else {})}
    deadline = time.monotonic() + 60.0 * minutes - grace_s
    logs = [root.with_name(f"{root.name}.{i}.log") for i in range(procs)]
    got: list[int] = []
    old = {s: signal.signal(s, lambda signum, frame: got.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
    running: list[subprocess.Popen] = []
    cut = False
    try:
        for i, log in enumerate(logs):
            cmd = [*base, *([f"collect.shard=[{i},{procs}]"] if procs > 1 else [])]
            with open(log, "w") as fh:
                fh.write(" ".join(cmd) + "\n")
                fh.flush()
                # its own process group: a Ctrl-C reaches the run, which stops the collectors once, cleanly
                running.append(subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env,
                                                start_new_session=True, preexec_fn=_end_with_parent))
        while any(p.poll() is None for p in running) and time.monotonic() < deadline and not got:
            time.sleep(0.5)
        cut = any(p.poll() is None for p in running)
        if cut:  # each collector ends the task it is on at its chunk and writes it (stopped: signal)
            _stop(running, grace_s)
    finally:
        _stop(running, 5.0)
        for s, h in old.items():
            signal.signal(s, h)
    with open(out / "run.log", "w") as fh:
        for log in logs:
            fh.write(log.read_text())
            log.unlink()
    shutil.rmtree(root.with_name(root.name + ".hydra"), ignore_errors=True)
    from mtmarl.evaluation.references import read_entries

    entries = read_entries(root / "references.json")
    summary = {"task_set": task_set, "returncodes": [p.returncode for p in running], "cut_at_deadline": cut,
               "signal": signal.Signals(got[0]).name if got else None,
               "tasks": {k: {"return": v.get("return"), "env_steps": v.get("env_steps"), "stopped": v.get("stopped")}
                         for k, v in entries.items()}}
    summary["parts"] = pack(root, out, task_set, part_mib << 20, parts, summary)
    shutil.rmtree(root, ignore_errors=True)
    failed = [rc for rc in summary["returncodes"] if rc not in (0, 130, 143, -signal.SIGTERM, -signal.SIGINT)]
    if got:
        print(json.dumps(summary, indent=1))
        raise SystemExit(128 + got[0])
    if failed:
        raise UserInputError(f"a collector failed (exit {failed[0]}); its output is in {out / 'run.log'}, and the "
                             f"tasks that finished are packed in {out}")
    return summary


def _stop(procs: list[subprocess.Popen], grace_s: float) -> None:
    """SIGTERM to every collector still running, SIGKILL to those still there ``grace_s`` later."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    until = time.monotonic() + grace_s
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, until - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def pack(root: Path, out: Path, task_set: str, part_bytes: int, parts: int | None, summary: dict) -> list[str]:
    """``root`` as one gzipped tar in parts of ``part_bytes`` plus ``manifest.json`` (each part's sha256 and
    the run's summary). More than ``parts`` parts: nothing is written and ``root`` is kept, named in the error."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path in sorted(root.iterdir()):
            if not path.name.startswith("."):  # lock files
                tar.add(path, arcname=path.name)
    data = buf.getvalue()
    pieces = [data[i:i + part_bytes] for i in range(0, len(data), part_bytes)] or [b""]
    if parts is not None and len(pieces) > parts:
        raise UserInputError(f"the collection packs to {len(data) / 2**20:.1f} MiB, more than {parts} parts of "
                             f"{part_bytes / 2**20:.1f} MiB; it is kept in {root}: merge it from there "
                             f"(merge {task_set} {root}), and record less per task or raise --parts next time")
    out.mkdir(parents=True, exist_ok=True)
    for stale in [*out.glob(f"{task_set}.tar.gz.*"), out / MANIFEST]:  # an earlier run's files
        stale.unlink(missing_ok=True)
    names = []
    for k, piece in enumerate(pieces):
        names.append(f"{task_set}.tar.gz.{k:03d}")
        (out / names[-1]).write_bytes(piece)
    manifest = {**summary, "parts": [{"name": n, "bytes": len(p), "sha256": _sha256(p)} for n, p in zip(names, pieces)]}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return names


# --------------------------------------------------------------------------- merge
def unpack(task_set: str, files: Path, tmp: Path) -> Path:
    """The collection root in ``files``: its verified parts unpacked into ``tmp``, or ``files`` itself when it
    is a collection root (a run's kept root)."""
    manifest_path = files / MANIFEST
    if not manifest_path.is_file():
        if (files / "references.json").is_file():
            return files
        raise UserInputError(f"{files} holds no {MANIFEST} (the parts of a packed run) and no references.json "
                             f"(a collection root)")
    try:
        manifest = json.loads(manifest_path.read_text())
        listed = {p["name"]: p for p in manifest["parts"]}
        owner = manifest["task_set"]
    except (ValueError, KeyError, TypeError) as err:
        raise UserInputError(f"{manifest_path} is not a packed run's manifest ({type(err).__name__}: {err})") from None
    if owner != task_set:
        raise UserInputError(f"{files} holds a packed run of {owner}, not {task_set}")
    stray = sorted(p.name for p in files.glob(f"{task_set}.tar.gz.*") if p.name not in listed)
    if stray:
        raise UserInputError(f"{files} holds parts its {MANIFEST} does not list ({', '.join(stray)}): another "
                             f"run's; remove them")
    chunks = []
    for name, part in listed.items():
        path = files / name
        if not path.is_file():
            raise UserInputError(f"part {name} of {len(listed)} is missing from {files}")
        data = path.read_bytes()
        if _sha256(data) != part["sha256"]:
            raise UserInputError(f"part {name} in {files} does not match its sha256 in {MANIFEST} (altered or "
                                 f"cut short)")
        chunks.append(data)
    try:
        with tarfile.open(fileobj=io.BytesIO(b"".join(chunks)), mode="r:gz") as tar:
            tar.extractall(tmp, filter="data")  # no member may land outside tmp, no links out of it
    except (tarfile.TarError, OSError, EOFError) as err:
        raise UserInputError(f"the parts in {files} do not unpack ({type(err).__name__}: {err})") from None
    return tmp


def check_collection(root: Path) -> tuple[dict, dict, list[str]]:
    """(entries to merge, their vaults by task key, keys dropped as cut by a signal), every vault verified.

    Refused: a non-finite or non-numeric reference; a recorded train task without its vault; a vault whose
    ``mtmarl.json`` names a task with no entry, or is not where its task's vault belongs; a failed checksum."""
    from mtmarl.data.vault.check import read_metadata, verify_files
    from mtmarl.data.vault.layout import list_uids
    from mtmarl.evaluation.references import read_entries

    entries = read_entries(root / "references.json")
    vaults: dict[str, Path] = {}
    for vlt in sorted(root.glob("*/*.vlt")):
        meta = read_metadata(vlt)
        if meta is None:  # no mtmarl.json: a vault still being written (its task has no entry yet)
            continue
        key = (meta.get("task") or {}).get("adhoc")
        entry = entries.get(key)
        if not isinstance(entry, dict):
            raise UserInputError(f"vault {vlt.relative_to(root)} records task {key!r}, which has no reference entry")
        if vlt.parent.name != key.partition(":")[0] or vlt.stem not in (entry.get("name"), key.partition(":")[2]):
            raise UserInputError(f"vault {vlt.relative_to(root)} records task {key} ({entry.get('name')}), whose "
                                 f"vault belongs elsewhere")
        for uid in list_uids(vlt):
            verify_files(vlt, uid, meta)
        vaults[key] = vlt
    merged, dropped = {}, []
    for key, entry in entries.items():
        value = entry.get("return") if isinstance(entry, dict) else None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise UserInputError(f"reference {key}: return {value!r} is not a finite number")
        if str(entry.get("stopped") or "").startswith("signal"):
            dropped.append(key)
            continue
        options = entry.get("options") or {}
        if entry.get("split") == "train" and options.get("record", False) and key not in vaults:
            raise UserInputError(f"train task {key} ({entry.get('name')}) is finished but its vault is missing")
        merged[key] = entry
    return merged, vaults, dropped


def set_tasks(task_set: str, entries: dict, whole_set: bool) -> tuple[dict, list[str]]:
    """The entries of ``task_set``'s tasks and the keys left out (another set's). With ``whole_set``, every
    task of the set must be there (a set switches to new data only as a whole); an unknown set (one defined
    outside ``mtmarl/configs/tasks``) keeps every entry."""
    from mtmarl import tasks

    if task_set not in tasks.available_sets():
        if whole_set:
            raise UserInputError(f"--whole-set needs a set of mtmarl/configs/tasks; {task_set} is none of "
                                 f"{', '.join(tasks.available_sets())}")
        return entries, []
    keys = {spec.adhoc for split in ("train", "test") for spec in tasks.load(task_set).split(split)}
    missing = sorted(keys - set(entries))
    if whole_set and missing:
        raise UserInputError(f"{len(missing)} of the {len(keys)} tasks of {task_set} are not finished there "
                             f"(first: {missing[0]}); a set switches to new data only when all its tasks have it")
    return {k: v for k, v in entries.items() if k in keys}, sorted(set(entries) - keys)


def did_not_learn(entry: dict) -> bool:
    """The run ended no better than its untrained policy, or gave up for not learning (the plateau rule's
    ``stall_steps``); entries without an initial return count as learned."""
    if str(entry.get("ended") or "").startswith("no learning"):
        return True
    start = entry.get("initial_return")
    return isinstance(start, (int, float)) and not isinstance(start, bool) and entry["return"] <= start


def merge(task_set: str, files: Path, into: Path | None = None, whole_set: bool = False,
          write_bundled: bool = False, max_episodes: int | None = None) -> dict:
    """Add a packed run's collection (``files``: its parts and manifest, or a collection root) to the accumulated
    one: only ``task_set``'s tasks (all of them with ``whole_set``); into the bundled data only with
    ``write_bundled``; with ``max_episodes``, each vault's cut to that many episodes per dataset
    (:func:`mtmarl.data.vault.write_cut`)."""
    from mtmarl.data.stats import DEFAULT_ROOT as BUNDLED
    from mtmarl.data.vault import write_cut
    from mtmarl.evaluation.references import merge_entry, read_entries

    dest = accumulated(task_set, into)
    if dest.resolve().is_relative_to(BUNDLED.resolve()) and not write_bundled:
        raise UserInputError(f"--into {dest} is inside the bundled data {BUNDLED} (tracked vaults and the references "
                             f"that normalise them); add --write-bundled to switch a set's data there")
    with tempfile.TemporaryDirectory() as tmp:
        root = unpack(task_set, files, Path(tmp))
        entries, vaults, dropped = check_collection(root)
        entries, others = set_tasks(task_set, entries, whole_set)
        held = read_entries(dest / "references.json")
        kept = sorted(k for k, e in entries.items() if did_not_learn(e) and k in held)
        entries = {k: e for k, e in entries.items() if k not in kept}
        try:
            dest.mkdir(parents=True, exist_ok=True)
            stage = Path(tempfile.mkdtemp(prefix=".merge-", dir=dest))
        except OSError as err:
            raise UserInputError(f"--into {dest} cannot be written ({err.strerror or err})") from None
        try:
            moves = []  # (staged copy, its place in dest); all copied before any is moved in
            for key, entry in entries.items():
                env, _, params = key.partition(":")
                if key in vaults:
                    rel = vaults[key].relative_to(root)
                    if max_episodes is None:
                        shutil.copytree(vaults[key], stage / rel)
                    elif write_cut(vaults[key], stage, max_episodes) != stage / rel:
                        raise UserInputError(f"{vaults[key]}: its metadata names another task than its folder")
                    moves.append((stage / rel, dest / rel))
                for curve in sorted((root / "logs" / env).glob("*")):  # <task>.jsonl and .png
                    if curve.stem in (entry.get("name"), params):
                        rel = curve.relative_to(root)
                        (stage / rel).parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(curve, stage / rel)
                        moves.append((stage / rel, dest / rel))
            for staged, final in moves:
                final.parent.mkdir(parents=True, exist_ok=True)
                old = final.with_name(f".{final.name}.old-{os.getpid()}")
                if final.exists():
                    os.replace(final, old)
                os.replace(staged, final)
                if old.is_dir():
                    shutil.rmtree(old, ignore_errors=True)
                else:
                    old.unlink(missing_ok=True)
            for key, entry in entries.items():  # the entries last: a task is listed only once its files are in
                merge_entry(dest / "references.json", key, entry)
        except OSError as err:
            raise UserInputError(f"merging into {dest} failed ({err.strerror or err}); what was there is "
                                 f"unchanged except tasks already swapped in, each whole") from None
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    return {"into": str(dest), "merged": sorted(entries), "dropped (cut by a signal)": dropped,
            "kept (the new run did not learn)": kept, "left out (not in the set)": others}


# --------------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("run", help="collect until the deadline, then pack the finished tasks",
                       epilog="mtmarl.collect overrides follow a --, e.g. -- +recipe=converged online.num_envs=512")
    w.add_argument("task_set")
    w.add_argument("--minutes", type=float, required=True, help="the run's wall time, packing included")
    w.add_argument("--out", type=Path, required=True, help="where the parts, manifest.json and run.log go")
    w.add_argument("--into", type=Path, help=f"the accumulated collection (default {DEFAULT_INTO}/<set>)")
    w.add_argument("--procs", type=int, default=1, help="collectors side by side, each on every procs-th task")
    w.add_argument("--part-mib", type=int, default=10, help="size of each part")
    w.add_argument("--parts", type=int, default=None, help="at most this many parts (default: no limit)")
    m = sub.add_parser("merge", help="verify a packed run's parts and add them to the accumulated collection")
    m.add_argument("task_set")
    m.add_argument("files", type=Path, help="the folder holding the run's parts and manifest, or a kept root")
    m.add_argument("--into", type=Path, help=f"the accumulated collection (default {DEFAULT_INTO}/<set>)")
    m.add_argument("--whole-set", action="store_true", help="refuse unless every task of the set is finished there")
    m.add_argument("--write-bundled", action="store_true", help="allow --into inside the bundled vault_data/")
    m.add_argument("--max-episodes", type=int, default=None,
                   help="keep each dataset's first this many episodes (a cut of a large collection to bundle)")
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []  # (argparse mishandles -- after a subcommand)
    args = parser.parse_args(argv[:len(argv) - len(extra) - bool(extra or "--" in argv)])
    if args.command == "run":
        result = run(args.task_set, args.minutes, args.out, extra, args.into, args.part_mib, args.parts, args.procs)
    else:
        result = merge(args.task_set, args.files, args.into, args.whole_set, args.write_bundled, args.max_episodes)
    print(json.dumps(result, indent=1))
    return result


def run_cli():
    """The command line (``experiment_scripts/packed_collect.py``)."""
    try:
        main()
    except UserInputError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
