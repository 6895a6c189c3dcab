"""Multi-task offline training from vaults, then zero-shot evaluation of the best checkpoint.

    python -m mtmarl.train +algo=mt_oryx +tasks=rware_15                 # make train (time: benchmarks/README.md)
    python -m mtmarl.train +algo=mt_bc_sable +tasks=lbf_5 training=quick  # smoke run
    python -m mtmarl.train +algo=mt_oryx +tasks=rware_15 training=paper network.embed_dim=256
    python -m mtmarl.train +algo=mt_oryx +tasks=rware_15 algo.hl_gauss=false data.balanced=false \\
        agents.shuffle=false agents.mask=false                            # ablation switches
    python -m mtmarl.train ... resume=true hydra.run.dir=<run dir>       # continue an interrupted run
    python -m mtmarl.train ... overwrite=true hydra.run.dir=<run dir>    # replace the run in that dir

Reads ``<data.root>/<env>/<task name>.vlt`` for every training task, trains
with updates compiled into ``lax.scan`` chunks pmapped over the local devices
(every process's devices with several processes),
evaluates train and test tasks every ``training.eval_every`` updates (the best
checkpoint is chosen on TRAINING tasks only), and finally evaluates the best
checkpoint with ``eval.episodes`` episodes per task. The run directory gets
``config.yaml`` (resolved), ``metrics.jsonl`` with TensorBoard event files beside it,
``curves.png``, ``checkpoints/``, ``results.json`` (marl-eval layout) and
``summary.json`` (per task and split); the last line printed says where the wall time
went, phase by phase (mtmarl.training.logging).

The config is checked before the run directory is touched; the directory is
then locked for the run (mtmarl.training.rundir), and Ctrl-C / SIGTERM stop
after the current compiled call with a checkpoint and the resume command
(mtmarl.training.stop), exiting 130 / 143.

Several processes (``distributed`` section, mtmarl.distributed; README, Several
processes) train one run data-parallel over all their devices. Process 0 alone
locks and writes the run directory and evaluates; the others write nothing and
wait for its final evaluation before they exit.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from mtmarl.errors import UserInputError
from mtmarl.runtime import enable_compilation_cache, hydra_cli, user_errors_exit


def _resolve(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain containers, checked before anything is written (mtmarl.config_check)."""
    from mtmarl.config_check import check_batch, check_train_config

    from mtmarl.algos import registry

    if cfg.get("algo") is None or cfg.algo.get("name") is None:
        raise UserInputError(f"no algorithm given: add +algo=<{'|'.join(registry.names())}>")
    plain = OmegaConf.to_container(cfg, resolve=True)
    check_train_config(plain)
    from mtmarl.training.logging import check_neptune

    check_neptune(plain["logger"].get("neptune"), plain["logger"].get("project"))
    # the algorithm's and network's own value checks (dataclass __post_init__), before any file is written
    from mtmarl.training.loop import algo_settings

    algo = algo_settings(plain["algo"], plain["training"], plain["data"], plain["agents"])
    registry.check(algo["name"], algo, plain.get("network"), int(plain["training"]["updates"]),
                   int(plain["training"]["updates_per_call"]))
    import jax

    check_batch(algo, plain["training"], jax.local_device_count() if jax.process_count() == 1 else jax.device_count())
    return plain


def _overrides() -> list[str]:
    """The command line's overrides (for the resume hint); none when run in-process without Hydra."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


_STARTED = time.time()  # before Hydra runs: a run dir created after this by Hydra is this process's own


@user_errors_exit
def run(cfg: DictConfig, run_dir: Path | None = None, stop_after: int | None = None) -> list[dict[str, Any]]:
    if run_dir is not None:
        return _run(cfg, run_dir, stop_after)
    run_dir = Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)
    try:
        return _run(cfg, run_dir, stop_after)
    except (UserInputError, OSError):
        from mtmarl.distributed import is_main
        from mtmarl.training.rundir import drop_new_dir

        if is_main():  # the directory is process 0's alone
            drop_new_dir(run_dir, _STARTED)
        raise


def _run(cfg: DictConfig, run_dir: Path, stop_after: int | None) -> list[dict[str, Any]]:
    # First: jax.distributed.initialize must precede anything that starts a JAX backend, and importing the
    # envs (Jumanji: the imports below, the config checks) already does. Its own settings are checked inside.
    _start_processes(OmegaConf.to_container(cfg.distributed, resolve=True) if cfg.get("distributed") else None)
    from mtmarl.distributed import announce_start, is_main

    plain = _resolve(cfg)
    if not is_main():
        return _follow(cfg, plain, run_dir, stop_after)
    try:
        return _lead(cfg, plain, run_dir, stop_after)
    except UserInputError as err:  # several processes: the others wait for process 0's go-ahead; tell them
        announce_start(str(err))
        raise


def _lead(cfg: DictConfig, plain: dict[str, Any], run_dir: Path, stop_after: int | None) -> list[dict[str, Any]]:
    """Process 0 (the only one, usually): owns the run directory, trains, evaluates, writes the results."""
    from mtmarl.evaluate import resolve_task_set
    from mtmarl.evaluation.references import default_path, load_references
    from mtmarl.training.data import check_datasets
    from mtmarl.training.rundir import RunDirLock
    from mtmarl.training.stop import Interrupted, catch_signals, resume_command

    task_set = resolve_task_set(cfg)
    _warn_long_sequences(plain, task_set)
    references = load_references(cfg.references or default_path(cfg.data.root))
    if not plain["data"].get("hub"):
        check_datasets(task_set, plain["data"]["root"], plain["data"]["quality"])  # data.hub fetches them later
    enable_compilation_cache()
    # Nothing above wrote anything; from here on this process owns the run directory.
    with RunDirLock(run_dir), catch_signals():
        try:
            return _train(cfg, plain, task_set, references, run_dir, stop_after)
        except Interrupted as stop:
            print(f"interrupted at update {stop.step} of {plain['training']['updates']}; checkpoint saved. "
                  f"Resume with: {resume_command(_overrides(), run_dir)}", flush=True)
            sys.exit(stop.exit_code)
        except KeyboardInterrupt:  # a second Ctrl-C: stopped at once, the last periodic checkpoint stands
            print(f"stopped at once; resume from the last periodic checkpoint with: "
                  f"{resume_command(_overrides(), run_dir)}", flush=True)
            sys.exit(130)


def _warn_long_sequences(plain: dict[str, Any], task_set) -> None:
    """A training sequence longer than every training task's episode compiles slowly: say so before it does."""
    from mtmarl.config_check import check_seq_len

    seq_len = int(plain["training"].get("seq_len") or plain["algo"]["seq_len"])
    horizon = max(spec.build().horizon for spec in task_set.train)
    key = "training.seq_len" if plain["training"].get("seq_len") else "algo.seq_len"
    warning = check_seq_len(seq_len, int(horizon), key)
    if warning:
        print(warning, file=sys.stderr, flush=True)


def _start_processes(dist_cfg) -> bool:
    """``jax.distributed.initialize`` from the ``distributed`` section, before anything touches JAX devices."""
    from mtmarl.distributed import initialize

    return initialize(dist_cfg)


def _follow(cfg: DictConfig, plain: dict[str, Any], run_dir: Path, stop_after: int | None) -> list[dict[str, Any]]:
    """A process other than 0: train in lockstep with process 0, write nothing, wait for its final evaluation.

    ``run_dir`` is only named (in messages); process 0 owns it, and may be the only one that can reach it.
    """
    from mtmarl.distributed import max_over_processes, wait_for_main
    from mtmarl.evaluate import resolve_task_set
    from mtmarl.training.loop import run_training
    from mtmarl.training.stop import Interrupted, catch_signals, requested

    task_set = resolve_task_set(cfg)
    enable_compilation_cache()
    with catch_signals():
        try:
            out = run_training(plain, task_set, run_dir, {}, log=None, stop_after=stop_after)
            if out["updates"] < int(plain["training"]["updates"]):
                return []
            signum = max_over_processes(requested() or 0)  # as process 0 asks in _train: it stops there too
            if signum:
                raise Interrupted(signum, out["updates"])
        except Interrupted as stop:
            sys.exit(stop.exit_code)
        wait_for_main("final-evaluation")
    return []


def _train(cfg: DictConfig, plain: dict[str, Any], task_set, references, run_dir: Path,
           stop_after: int | None) -> list[dict[str, Any]]:
    """Prepare the locked run directory and train; a failure says what became of the run (removed, if it
    had no checkpoint yet and was not resumed: the same command then simply runs again)."""
    from mtmarl.errors import file_error
    from mtmarl.training.rundir import discard_unstarted, latest_checkpoint, prepare
    from mtmarl.training.stop import resume_command

    resumed = prepare(run_dir, plain, OmegaConf.to_yaml(cfg, resolve=True))
    try:
        return _train_prepared(plain, task_set, references, run_dir, stop_after, resumed)
    except (UserInputError, OSError) as err:
        failure = err if isinstance(err, UserInputError) else file_error(err)
        if failure is None:
            raise
        if resumed is None and discard_unstarted(run_dir):
            note = f"; the run in {run_dir} had no checkpoint yet and was removed"
        elif (step := latest_checkpoint(run_dir)) is not None and step == resumed:
            note = (f"; the checkpoint of update {step} stands, but this command resumed from it and stopped before "
                    f"saving a newer one: running it again meets the same failure until its cause above is fixed")
        elif step is not None:
            note = f"; the checkpoint of update {step} stands: resume with {resume_command(_overrides(), run_dir)}"
        else:
            note = ""
        raise type(failure)(f"{failure}{note}") from None


def _train_prepared(plain: dict[str, Any], task_set, references, run_dir: Path, stop_after: int | None,
                    resumed: int | None) -> list[dict[str, Any]]:
    from mtmarl.evaluation.results import print_table
    from mtmarl.training.logging import RunLogger
    from mtmarl.training.phases import process_start
    from mtmarl.training.loop import run_training
    from mtmarl.distributed import max_over_processes
    from mtmarl.training.stop import Interrupted, requested

    lg = plain["logger"]
    log = RunLogger(run_dir, int(plain["training"]["updates"]), neptune=lg.get("neptune"),
                    project=lg.get("project"), token=lg.get("api_token"), mode=lg.get("mode"),
                    tags=tuple(lg.get("tags") or ()) + (plain["algo"]["name"], task_set.name),
                    config=plain, progress=bool(lg.get("progress", True)), start=resumed or 0,
                    resume_file=resumed is not None, start_epoch=process_start() or _STARTED,
                    title=f"{plain['algo']['name']} on {task_set.name}")
    try:
        out = run_training(plain, task_set, run_dir, references, log=log, stop_after=stop_after)
        if out["updates"] < int(plain["training"]["updates"]):
            print(f"stopped after {out['updates']} updates; continue with resume=true hydra.run.dir={run_dir}")
            return []
        # a signal during the last call (on any process): training is complete and saved
        signum = max_over_processes(requested() or 0)
        if signum:
            raise Interrupted(signum, out["updates"])
        if out["population"] > 1:
            tables = _final_population(plain, out, task_set, references, run_dir, log)
        else:
            tables = [_final_single(plain, out, task_set, references, run_dir, log)]
    finally:
        log.close()
    for rows, title, path in tables:
        print_table(rows, title=title)
        print(f"results: {path}")
    # where the wall time since the process started went, the phases adding up to it
    print(log.timer.describe() + f" ({out['updates']} updates)")
    return [row for rows, _, _ in tables for row in rows]


def _final_single(plain: dict[str, Any], out: dict[str, Any], task_set, references, run_dir: Path, log):
    """The final evaluation of the best (or final) parameters; returns (rows, table title, results path)."""
    from mtmarl.distributed import wait_for_main
    from mtmarl.evaluation.results import write_results
    from mtmarl.training.checkpoint import Checkpointer
    from mtmarl.training.data import data_fingerprint
    from mtmarl.training.loop import write_json

    algo, carry = out["algo"], out["carry"]
    with log.phase("evaluating"):
        params, which = algo.acting_params(carry.state), "final"
        if out["best_step"] is not None:
            ckpt = Checkpointer(run_dir / "checkpoints")
            best, _ = ckpt.restore(out["template"], "best")
            ckpt.close()
            params, which = algo.acting_params(best.state), f"best (update {out['best_step']})"
        splits = [s for s in ("train", "test") if task_set.split(s)]
        start = time.perf_counter()
        # The periodic evaluators' compiled programs, run as often as eval.episodes needs.
        rows = out["evaluator"](params, None, splits, episodes=int(plain["eval"]["episodes"]))
        elapsed = time.perf_counter() - start
        wait_for_main("final-evaluation")  # several processes: the others may exit now
    with log.phase("saving"):
        for row in rows:
            log.log(out["updates"], {f"{row['split']}/{row['name']}": row["mean_return"]}, prefix="final")
        path = write_results(run_dir, rows, algorithm=algo.name, seed=int(plain["seed"]))
        write_json(run_dir / "run.json", {"updates": out["updates"], "best_step": out["best_step"],
                                          "best_train_score": out["best_score"], "evaluated": which,
                                          "train_seconds": out["train_seconds"], "eval_seconds": elapsed,
                                          "data": data_fingerprint(task_set, plain["data"]["root"],
                                                                   plain["data"]["quality"], references)})
        log.set_summary("summary/best_step", out["best_step"] if out["best_step"] is not None else -1)
    title = f"{algo.name} on {task_set.name}: {which} params, {plain['eval']['episodes']} episodes/task"
    return rows, title, path


def _final_population(plain: dict[str, Any], out: dict[str, Any], task_set, references, run_dir: Path,
                      log) -> list[tuple[list[dict[str, Any]], str, Path]]:
    """Seeds trained side by side (``training.population``): each seed's best parameters (by its periodic
    training-task evaluations, ``mtmarl.training.selection``; its final ones when the run had none) through
    the same evaluation programs with that seed's evaluation keys, written to ``<run dir>/seed_<s>/`` as a
    run of that seed alone writes its directory (results.json, summary.json, run.json), so seed-matrix tools
    read them. Returns (rows, table title, results path) per seed."""
    from mtmarl.evaluation.results import write_results
    from mtmarl.training.data import data_fingerprint
    from mtmarl.distributed import wait_for_main
    from mtmarl.training.engine import seed_slice
    from mtmarl.training.loop import write_json

    from mtmarl.config_check import population_seeds

    algo, carry, selection = out["algo"], out["carry"], out["selection"]
    best = selection.carry if selection.any else None
    splits = [s for s in ("train", "test") if task_set.split(s)]
    episodes = int(plain["eval"]["episodes"])
    fingerprint = data_fingerprint(task_set, plain["data"]["root"], plain["data"]["quality"], references)
    tables = []
    for i, seed in enumerate(population_seeds(plain)):
        step = selection.steps[i]
        which = "final" if step is None else f"best (update {step})"
        chosen = carry if step is None else best
        with log.phase("evaluating"):
            start = time.perf_counter()
            rows = out["evaluator"](algo.acting_params(seed_slice(chosen.state, i)), None, splits,
                                    episodes=episodes, seed=seed)
            elapsed = time.perf_counter() - start
        with log.phase("saving"):
            for row in rows:
                log.log(out["updates"], {f"seed_{seed}/{row['split']}/{row['name']}": row["mean_return"]},
                        prefix="final")
            path = write_results(run_dir / f"seed_{seed}", rows, algorithm=algo.name, seed=seed)
            write_json(run_dir / f"seed_{seed}" / "run.json",
                       {"updates": out["updates"], "best_step": step, "best_train_score": selection.scores[i],
                        "evaluated": which,
                        "population": out["population"], "train_seconds": out["train_seconds"],
                        "eval_seconds": elapsed, "data": fingerprint})
        title = (f"{algo.name} on {task_set.name}, seed {seed} of a population of {out['population']}: "
                 f"{which} params, {episodes} episodes/task")
        tables.append(([{**row, "seed": seed} for row in rows], title, path))
    with log.phase("evaluating"):
        wait_for_main("final-evaluation")  # several processes: the others may exit now
    return tables


if __name__ == "__main__":
    hydra_cli("train", run)
