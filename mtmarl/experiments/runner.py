"""Run a matrix of (config, seed) trainings of ``mtmarl.train``, resumably, each in its own process.

Every run is one ``python -m mtmarl.train <overrides> seed=<s>`` subprocess, so a
crash (or an out-of-memory kill) of one run loses only that run; its output
goes to ``<run dir>/train.log``. A run's directory is
``<results>/runs/<slug>-<hash>/seed_<s>``, where the hash covers every
override that defines it: the same configuration requested by two experiments
(or by a rerun) lands in the same directory, and a run whose ``results.json``,
``summary.json`` and ``run.json`` exist is not run again, unless what the
overrides compose to today differs from the ``config.yaml`` it was trained with
(a changed default, e.g. MT Oryx's learning rate): such a *stale* run is moved
aside to ``seed_<s>.stale-<n>`` and trained again, so a cached result never
stands for a configuration it was not trained with. An interrupted run is
continued from its latest checkpoint (``resume=true``).

``launcher='slurm'`` wraps each run in a one-job Hydra multirun with
``hydra/launcher=submitit_slurm`` (the Hydra submitit plugin submits it to SLURM
and waits); ``jobs`` runs are then in flight at once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Iterable, Sequence

FINISHED_FILES = ("results.json", "summary.json", "run.json")
LAUNCHERS = ("local", "slurm")


@dataclasses.dataclass(frozen=True)
class Run:
    """One training configuration at one seed.

    ``factors`` name the point in the experiment's matrix (e.g. ``{"algo": "mt_oryx", "k": 3}``) and are
    only used for grouping and naming; ``overrides`` alone define what is trained.
    """

    factors: tuple[tuple[str, Any], ...]
    overrides: tuple[str, ...]
    seed: int

    @staticmethod
    def make(factors: dict[str, Any], overrides: Sequence[str], seed: int) -> "Run":
        return Run(tuple(factors.items()), tuple(overrides), int(seed))

    @property
    def key(self) -> dict[str, Any]:
        return dict(self.factors)

    @property
    def config_id(self) -> str:
        """``<readable slug>-<hash>``, both from the overrides only (equal configs share a directory)."""
        digest = hashlib.sha256("\n".join(self.overrides).encode()).hexdigest()[:10]
        parts = []  # '+group=...' (algorithm, task set) first: they differ most between runs
        for item in sorted(self.overrides, key=lambda o: not o.startswith("+")):
            key, _, value = item.partition("=")
            key = key.lstrip("+~").rsplit(".", 1)[-1]
            if key.startswith("hydra") or "/" in value or len(value) > 24:
                continue
            parts.append(value if key in ("algo", "tasks", "training", "network") else f"{key}{value}")
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", "-".join(parts)).strip("_")[:80]
        return f"{slug}-{digest}" if slug else digest

    def directory(self, results: str | Path) -> Path:
        return Path(results).resolve() / "runs" / self.config_id / f"seed_{self.seed}"


# The config sections that decide what a run trains and how it is scored (logging, resume and the
# multi-process settings do not change its results).
DEFINING = ("algo", "network", "training", "data", "agents", "eval", "tasks", "task", "references", "seed")


def population_seeds(run_dir: Path) -> list[int] | None:
    """The seeds of a run that trained several side by side (``training.population`` > 1 in its
    ``config.yaml``: seeds ``seed .. seed+S-1``, each finished in ``seed_<s>/``); None for a one-seed run."""
    import yaml

    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    from mtmarl.config_check import population_seeds as seeds_of  # lazy, as this module's other imports

    return seeds_of(yaml.safe_load(path.read_text()) or {})


def result_dirs(run_dir: Path) -> list[Path]:
    """Where a run's results lie: the run directory, or each seed's directory of a population run."""
    seeds = population_seeds(run_dir)
    return [run_dir] if seeds is None else [run_dir / f"seed_{s}" for s in seeds]


def is_finished(run_dir: Path) -> bool:
    """Every results file written (for a population run: by every one of its seeds)."""
    return all((d / name).is_file() for d in result_dirs(run_dir) for name in FINISHED_FILES)


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: tree}


def stale_keys(run: Run, run_dir: Path) -> list[str]:
    """The defining config keys (dotted) whose value in ``run_dir/config.yaml`` differs from what
    ``run.overrides`` compose to now, plus ``data`` when the run's recorded data fingerprint
    (``run.json``) differs from today's vaults and references; ``[]`` for an up-to-date run (or one
    without a config yet)."""
    import yaml

    from mtmarl.experiments.config import compose_train, plain

    path = run_dir / "config.yaml"
    if not path.is_file():
        return []
    cfg = compose_train([*run.overrides, f"seed={run.seed}"])
    now = plain(cfg)
    then = yaml.safe_load(path.read_text()) or {}
    a = _flat({k: now.get(k) for k in DEFINING})
    b = _flat({k: then.get(k) for k in DEFINING})
    changed = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    # None: trained before fingerprints existed (a population's seeds share one fingerprint)
    trained_on = _read_json(result_dirs(run_dir)[0] / "run.json").get("data")
    if trained_on is not None and trained_on != _fingerprint(cfg):
        changed.append("data (vaults or references)")
    return changed


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _fingerprint(cfg) -> str | None:
    """Today's :func:`mtmarl.training.data.data_fingerprint` of a run's data (None if it cannot be read)."""
    from mtmarl.errors import UserInputError
    from mtmarl.evaluate import resolve_task_set
    from mtmarl.evaluation.references import default_path, load_references
    from mtmarl.training.data import data_fingerprint

    try:
        refs = load_references(cfg.references or default_path(cfg.data.root))
        return data_fingerprint(resolve_task_set(cfg), cfg.data.root, cfg.data.quality, refs)
    except (UserInputError, OSError):
        return None


def _up_to_date(run: Run, results: str | Path) -> bool:
    """Finished with today's config; a finished but stale run directory is moved aside (kept, renamed)."""
    run_dir = run.directory(results)
    if not is_finished(run_dir):
        return False
    changed = stale_keys(run, run_dir)
    if not changed:
        return True
    n = 1
    while run_dir.with_name(f"{run_dir.name}.stale-{n}").exists():
        n += 1
    aside = run_dir.rename(run_dir.with_name(f"{run_dir.name}.stale-{n}"))
    print(f"{run.config_id}/seed_{run.seed}: trained with another config ({', '.join(changed[:6])}"
          f"{', ...' if len(changed) > 6 else ''}); moved to {aside.name}, training again", file=sys.stderr)
    return False


def train_command(run: Run, run_dir: Path, launcher: str = "local", slurm: Sequence[str] = (),
                  python: str | None = None) -> list[str]:
    """The ``mtmarl.train`` command line of one run."""
    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher must be one of {LAUNCHERS}, got {launcher!r}")
    common = [*run.overrides, f"seed={run.seed}", "resume=true", "logger.progress=false"]
    head = [python or sys.executable, "-m", "mtmarl.train"]
    if launcher == "local":
        return [*head, *common, f"hydra.run.dir={run_dir}"]
    return [*head, "--multirun", "hydra/launcher=submitit_slurm", *slurm, *common,
            f"hydra.sweep.dir={run_dir}", "hydra.sweep.subdir=."]


@dataclasses.dataclass
class Outcome:
    run: Run
    directory: Path
    status: str            # finished (this time) | skipped (finished before) | failed
    seconds: float = 0.0
    returncode: int | None = None
    error: str = ""

    def record(self) -> dict[str, Any]:
        return {"config_id": self.run.config_id, "factors": self.run.key, "seed": self.run.seed,
                "overrides": list(self.run.overrides), "directory": str(self.directory), "status": self.status,
                "seconds": round(self.seconds, 1), "returncode": self.returncode, "error": self.error}


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def execute(run: Run, results: str | Path, launcher: str = "local", slurm: Sequence[str] = (),
            python: str | None = None, env: dict[str, str] | None = None) -> Outcome:
    """Train one run in a subprocess (skipped when already finished); never raises for a failed run."""
    run_dir = run.directory(results)
    if _up_to_date(run, results):
        return Outcome(run, run_dir, "skipped")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir.parent / "overrides.json").write_text(json.dumps(
        {"factors": run.key, "overrides": list(run.overrides)}, indent=1))
    cmd = train_command(run, run_dir, launcher, slurm, python)
    log = run_dir / "train.log"
    start = time.perf_counter()
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        try:
            proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env or dict(os.environ))
            code = proc.returncode
        except OSError as err:
            out.write(f"could not start: {err}\n")
            code = -1
    seconds = time.perf_counter() - start
    if code == 0 and is_finished(run_dir):
        return Outcome(run, run_dir, "finished", seconds, code)
    return Outcome(run, run_dir, "failed", seconds, code, f"{failure_reason(code)}; log {log}:\n{_tail(log)}")


def failure_reason(code: int) -> str:
    """Why a run's subprocess ended without results; a SIGKILL is named, since on a shared machine it is
    most often the kernel's out-of-memory killer (the log then ends mid-run, with no Python error)."""
    if code == -signal.SIGKILL:
        return (f"exit code {code} (killed by SIGKILL: most often the out-of-memory killer; check `dmesg` and "
                f"what else ran beside it; the run resumes from its last checkpoint)")
    return f"exit code {code}" if code else "no results written"


def run_matrix(runs: Iterable[Run], results: str | Path, launcher: str = "local", jobs: int = 1,
               slurm: Sequence[str] = (), python: str | None = None, manifest: Path | None = None,
               progress: bool = True) -> list[Outcome]:
    """Run every not-yet-finished run, ``jobs`` at a time; a failed run does not stop the others.

    Writes ``manifest`` (JSON, one record per run, rewritten as runs complete) if given.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    runs = list(dict.fromkeys(runs))
    outcomes: dict[Run, Outcome] = {}
    console = Console(stderr=True)

    def save() -> None:
        if manifest is not None:
            manifest.parent.mkdir(parents=True, exist_ok=True)
            done = [outcomes[r].record() if r in outcomes else
                    {"config_id": r.config_id, "factors": r.key, "seed": r.seed, "status": "pending",
                     "directory": str(r.directory(results))} for r in runs]
            manifest.write_text(json.dumps(done, indent=1))

    todo = []
    for run in runs:
        if _up_to_date(run, results):
            outcomes[run] = Outcome(run, run.directory(results), "skipped")
        else:
            todo.append(run)
    save()
    console.print(f"{len(runs)} run(s): {len(runs) - len(todo)} already finished, {len(todo)} to run "
                  f"({launcher}, {jobs} at a time)")
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, disable=not progress or not todo) as bar, \
            ThreadPoolExecutor(max_workers=max(1, int(jobs))) as pool:
        job = bar.add_task("training", total=len(todo))
        futures = {pool.submit(execute, run, results, launcher, slurm, python): run for run in todo}
        for fut in as_completed(futures):
            out = fut.result()
            outcomes[out.run] = out
            save()
            bar.advance(job)
            label = f"{out.run.config_id}/seed_{out.run.seed}"
            if out.status == "failed":
                console.print(f"[red]failed[/red] {label} ({out.error.splitlines()[0]})")
            else:
                console.print(f"[green]done[/green] {label} in {out.seconds:.0f} s")
    failed = [o for o in outcomes.values() if o.status == "failed"]
    if failed:
        console.print(f"[red]{len(failed)} run(s) failed[/red]; rerun the same command to retry them "
                      f"(finished runs are skipped). Logs: " + ", ".join(str(o.directory / 'train.log')
                                                                         for o in failed[:5]))
    return [outcomes[r] for r in runs]
