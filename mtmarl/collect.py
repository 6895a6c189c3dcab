"""Online collector CLI: train an online learner (or run a scripted / DAgger collector) per task,
record datasets, write reference returns.

    python -m mtmarl.collect +tasks=connector_10 collect.budget=2000000
    python -m mtmarl.collect task=connector:grid=5,agents=2 collect.budget=200000

For every task of the set (``split``), the env's collector
(:mod:`mtmarl.online.collectors`) runs on the task itself (unpadded): by default an
online learner that starts from scratch (``online=mappo``, the default, ``online=sable`` or
``online=qmix``; the stages that continue an offline run are ``python -m mtmarl.finetune``'s)
trains for ``collect.budget`` env steps (rounded up to a whole update, said in one line when that adds
steps; the last chunk is then shorter). After every
chunk of K updates it logs the mean return of the episodes finished in training to
``<log_dir>/<env>/<task>.jsonl`` (plus a PNG of the curve) and, for train tasks,
records R envs x T steps with the stochastic policy (completed episodes only). At
the end the final online return is evaluated with
:func:`mtmarl.evaluation.rollout.make_evaluator` (``eval.episodes`` episodes) and
merged into ``references.json`` (key: the task's ad-hoc string); train tasks get
their recordings written as one vault with :func:`mtmarl.data.vault.write_vault`.
RWARE can instead use the scripted planner (``collect.scripted.envs``) or its DAgger
student (``collect.dagger.envs``).

Everything goes under ``collect.root`` (default ``outputs/vault_data`` in the working
directory). The repository's bundled ``vault_data/`` (tracked vaults and the
``references.json`` that normalises them) is written only with
``collect.write_bundled=true`` (``make demo-data``); otherwise a root, references
file or log directory inside it is refused before anything runs.

Resumable: a task whose outputs exist (vault and reference for train tasks,
reference for test tasks) is skipped, so a killed run restarts at the task it
was on (that task starts over). Ctrl-C (or SIGTERM) loses nothing: the online
learner stops at the end of its current chunk, the policy it reached is scored
and recorded as usual (its reference and vault metadata say ``stopped``), and no
further task starts; a second Ctrl-C stops at once. ``collect.time_limit_min``
stops each task's online training the same way once that much time has passed.
This module is the CLI: task set, budgets, output paths, skipping, progress.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mtmarl import envs
from mtmarl import tasks as task_registry
from mtmarl.algos.registry import ONLINE, online_stage
from mtmarl.data import vault as vault_io
from mtmarl.errors import UserInputError
from mtmarl.evaluation.references import read_entries
from mtmarl.online.collectors import (collect_dagger_task, collect_scripted_task, collect_task, collector_kind,
                                      env_budget, env_quality, task_options)
from mtmarl.online.options import option_changes
from mtmarl.online.partial import path as partial_path
from mtmarl.online.quality import QUALITIES, min_episodes
from mtmarl.runtime import enable_compilation_cache, hydra_cli, user_errors_exit

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "vault_data"  # the data shipped with the repository (tracked vaults and references.json)
DEFAULT_ROOT = Path("outputs") / "vault_data"  # collect.root's default, under the working directory


# --------------------------------------------------------------------------- helpers
def vault_done(root: Path, spec, uid: str) -> bool:
    return (vault_io.vault_path(root, spec) / uid / vault_io.FBX_META_FILE).is_file()


def interrupted(entry: Any) -> bool:
    """An entry written when a signal stopped the task's training (or no entry at all): not done."""
    return not isinstance(entry, dict) or str(entry.get("stopped", "")).startswith("signal")


def skip_reason(spec, split: str, root: Path, uid: str, entry: Any, record: bool, options: dict[str, Any],
                redo: bool | str, where: Path) -> str | None:
    """Why a task is not collected again (None: collect it).

    A task is done when its reference entry says its training ended (budget, plateau rule or time limit, not a
    signal) and, for a recorded train task, its vault is there; a done task collected with other options is
    refused (one line naming them) unless ``collect.redo=true`` asks to collect it again, or ``collect.redo=keep``
    to keep it as it was collected (its entry records its own options)."""
    if interrupted(entry) or (split == "train" and record and not vault_done(root, spec, uid)):
        return None
    before = entry.get("options")
    if before is None or not isinstance(before, dict):
        if redo == "keep":
            return f"kept as collected ({where}; its options are not recorded)"
        if redo:
            return None
        raise UserInputError(f"{split} task {spec.name} is in {where} without the options it was collected with, "
                             "so this run cannot tell whether it matches; add collect.redo=true to collect it "
                             "again, or choose another collect.root")
    changes = option_changes(before, options)
    if not changes:
        return f"already collected ({where})"
    if redo == "keep":
        return f"kept as collected ({where}; with {'; '.join(changes)})"
    if redo:
        return None
    raise UserInputError(f"{split} task {spec.name} was collected with other options ({'; '.join(changes)}); "
                         "add collect.redo=true to collect it again with these, collect.redo=keep to keep it as it "
                         "is, or choose another collect.root")


def collector(cfg: DictConfig, env: str):
    """The collector of one env (:func:`mtmarl.online.collectors.collector_kind`)."""
    return {"dagger": collect_dagger_task, "scripted": collect_scripted_task,
            "online": collect_task}[collector_kind(cfg, env)]


def resolve_task_set(cfg: DictConfig) -> task_registry.TaskSet:
    from mtmarl.config_check import check_one_task_source

    check_one_task_source(cfg)
    if cfg.get("task"):
        return task_registry.load(str(cfg.task))
    if cfg.get("tasks") is None:
        raise UserInputError("no tasks given: add +tasks=<set> (one of "
                             f"{', '.join(task_registry.available_sets())}) or task=<env:key=value,...>")
    return task_registry.from_config(OmegaConf.to_container(cfg.tasks, resolve=True))


def _path(value, default: Path) -> Path:
    if value in (None, ""):
        return default
    path = Path(str(value))
    return path if path.is_absolute() else Path.cwd() / path


def refuse_bundled(cfg: DictConfig, paths: dict[str, Path]) -> None:
    """Collecting writes into the bundled ``vault_data/`` only when asked with ``collect.write_bundled=true``.

    Why: a collection there rewrites tracked vaults and merges its references into the
    ``references.json`` that normalises every later training and evaluation of those tasks.
    """
    if cfg.collect.get("write_bundled", False) is True:
        return
    bundled = BUNDLED.resolve()
    for key, path in paths.items():
        if path.resolve().is_relative_to(bundled):
            raise UserInputError(f"{key}={path} is inside the bundled data {bundled} (tracked vaults and the "
                                 f"references.json that normalises them); add collect.write_bundled=true to "
                                 f"write there, or leave {key} at its default (<cwd>/{DEFAULT_ROOT})")


def output_paths(cfg: DictConfig) -> tuple[Path, Path, Path]:
    """(vault root, references file, log directory) of a collection, refused inside the bundled data."""
    root = _path(cfg.collect.root, Path.cwd() / DEFAULT_ROOT)
    ref_path = _path(cfg.collect.references, root / "references.json")
    log_dir = _path(cfg.collect.log_dir, root / "logs")
    refuse_bundled(cfg, {"collect.root": root, "collect.references": ref_path, "collect.log_dir": log_dir})
    return root, ref_path, log_dir


def check_writable(paths: dict[str, Path]) -> None:
    """Refuse, before any training, an output folder that cannot be written (found at a task's end otherwise)."""
    import os
    import tempfile

    for key, path in paths.items():
        try:
            path.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=path, prefix=".write-test-")
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            raise UserInputError(f"{key}: {path} cannot be written ({err.strerror or err}); choose a writable "
                                 "folder") from None


def shard(cfg: DictConfig) -> tuple[int, None, int]:
    """``collect.shard=[i, n]`` as the slice ``i::n`` of the task list (null: every task)."""
    value = cfg.collect.get("shard")
    if value is None:
        return 0, None, 1
    pair = list(value) if not isinstance(value, (str, int, float)) else None
    if not (pair and len(pair) == 2 and all(type(v) is int for v in pair) and 0 <= pair[0] < pair[1]):
        raise UserInputError(f"collect.shard={value}; allowed: null or [i, n] with integers 0 <= i < n "
                             f"(process i of n collects every n-th task from the i-th)")
    return pair[0], None, pair[1]


def done_elsewhere(cfg: DictConfig) -> tuple[Path | None, dict[str, Any]]:
    """``collect.done_in``: the references file of collections whose vaults are kept elsewhere (a GPU window
    brings back only what it collected), and its entries; tasks with an entry there are not collected again."""
    value = cfg.collect.get("done_in")
    if value is None:
        return None, {}
    path = _path(value, Path.cwd())
    if not path.is_file():
        raise UserInputError(f"collect.done_in={value}: no such file; want a references.json of earlier "
                             f"collections (or null)")
    return path, read_entries(path)


@user_errors_exit
def run(cfg: DictConfig) -> list[dict[str, Any]]:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from mtmarl.config_check import SEED_MAX, check_finite, check_keys, check_values, int_in

    plain = OmegaConf.to_container(cfg, resolve=True)
    check_keys(plain, "collect")  # +key=... typos (Hydra allows new keys)
    stage = str(OmegaConf.select(cfg, "online.system", default="mappo"))
    if online_stage(stage).pretrained:
        collectors = ", ".join(n for n, s in ONLINE.items() if not s.pretrained)
        raise UserInputError(f"online={stage} continues an offline run and records no data: launch it with "
                             f"python -m mtmarl.finetune online={stage} online.init_from=<run dir> task=...; "
                             f"mtmarl.collect collects data with {collectors}")
    check_values(plain, {"seed": int_in(0, SEED_MAX)})
    check_finite(plain)
    root, ref_path, log_dir = output_paths(cfg)
    enable_compilation_cache()
    for env in envs.ENVS:
        if env_budget(cfg, env) < 1:
            raise UserInputError(f"the collect budget for {env} must be >= 1, got {env_budget(cfg, env)} "
                                 "(collect.budget / collect.env_budget)")
    if int(cfg.eval.episodes) < 1:
        raise UserInputError(f"eval.episodes must be >= 1, got {cfg.eval.episodes}")
    qualities = {env: env_quality(cfg, env) for env in envs.ENVS}
    for env, quality in qualities.items():
        if quality not in QUALITIES:
            key = f"collect.env_quality.{env}" if (cfg.collect.get("env_quality") or {}).get(env) else "collect.quality"
            raise UserInputError(f"{key}={quality!r}; allowed: {', '.join(QUALITIES)}")
    levels = list(cfg.collect.get("quality_levels") or [])
    if "levels" in qualities.values() and (not levels or any(not 0.0 <= float(q) <= 1.0 for q in levels)):
        raise UserInputError(f"collect.quality_levels={levels}; allowed: a non-empty list of fractions in [0, 1] "
                             "(0 = the untrained policy's score, 1 = the final one's)")
    min_episodes(cfg)  # refused now, not after the online runs
    task_set = resolve_task_set(cfg)
    split = "train" if cfg.get("task") else str(cfg.split)
    splits = ["train", "test"] if split == "all" else [split]
    todo = [(s, spec) for s in splits for spec in task_set.split(s)]
    every = len(todo)
    todo = todo[slice(*shard(cfg))]
    if not todo:
        raise UserInputError(f"collect.shard={list(cfg.collect.shard)} selects none of the {every} tasks "
                             f"(split={split}); want i < the number of tasks")
    check_writable({"collect.root": root, "collect.references": ref_path.parent, "collect.log_dir": log_dir})
    console = Console(stderr=True)
    results = []
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:,.0f} steps"),
               TextColumn("return {task.fields[ret]:.3f}"), TimeElapsedColumn(), TimeRemainingColumn())
    from mtmarl.online.collectors import time_limit_s
    from mtmarl.training.rundir import RunDirLock
    from mtmarl.training.stop import catch_signals, requested

    time_limit_s(cfg)  # refused now, not after the first task
    redo = cfg.collect.get("redo", False)
    if not (isinstance(redo, bool) or redo == "keep"):
        raise UserInputError(f"collect.redo={redo!r}; allowed: false (refuse a finished task collected with other "
                             "options), true (collect it again), keep (keep it as it is)")
    done_path, done = done_elsewhere(cfg)
    with Progress(*columns, console=console, disable=not cfg.collect.progress) as bar, catch_signals():
        for s, spec in todo:
            if requested() is not None:  # Ctrl-C / SIGTERM: the task it stopped is written; no new one starts
                console.print(f"stopped on a signal before {s} task {spec.name}; run the same command again "
                              "to go on (finished tasks are skipped)")
                break
            # the dataset a finished task has last
            uid = "medium" if qualities[spec.env] == "expert_medium" else str(cfg.collect.uid)
            options = task_options(cfg, spec, s)
            where = skip_reason(spec, s, root, uid, read_entries(ref_path).get(spec.adhoc),
                                bool(cfg.collect.record), options, redo, ref_path)
            if where is None and spec.adhoc in done and not interrupted(done[spec.adhoc]):
                # its vault is kept elsewhere: the entry alone says it is done
                where = skip_reason(spec, s, root, uid, done[spec.adhoc], False, options, redo, done_path) and \
                    f"listed in {done_path}"
            if where is not None:
                console.print(f"skip {s} task {spec.name}: {where}")
                results.append({"name": spec.name, "split": s, "skipped": True})
                continue
            # One collector per task: collectors of other tasks may share the root (references.json merges are
            # locked), two of one task would write the same dataset, reference and partial run.
            lock = RunDirLock(partial_path(root, spec).with_suffix(""), tidy=True)
            try:
                lock.acquire()
            except UserInputError:
                console.print(f"skip {s} task {spec.name}: another collector has it ({lock.run_dir})")
                results.append({"name": spec.name, "split": s, "skipped": True, "busy": True})
                continue
            try:
                res = collector(cfg, spec.env)(spec, s, cfg, root, ref_path, log_dir, bar)
            except KeyboardInterrupt:  # a second Ctrl-C: no clean stop, but one line, not a traceback
                console.print(f"stopped at once on a second signal during {s} task {spec.name}; the next run "
                              "continues it from its last partial save")
                raise SystemExit(130) from None
            finally:
                lock.release(discard=True)
            console.print(f"{s} task {spec.name}: final return {res['return']:.3f} after "
                          f"{res['env_steps']:,} steps ({res['env_steps_per_second']:,.0f} steps/s)"
                          + (f", vault {res['vault']} ({res['transitions']:,} transitions)" if "vault" in res else "")
                          + (f"; training stopped early ({res['stopped']})" if res.get("stopped") else ""))
            results.append(res)
        signum = requested()
    console.print(f"references: {ref_path}")
    if signum is not None:
        raise SystemExit(128 + signum)  # as a shell reports a signal: 130 for Ctrl-C
    return results


if __name__ == "__main__":
    hydra_cli("collect", run)
