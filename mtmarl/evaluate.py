"""Zero-shot evaluation of a policy on the tasks of a set (one compiled program per agent count).

    python -m mtmarl.evaluate policy=random +tasks=rware_15 split=test
    python -m mtmarl.evaluate task=rware:rows=2,cols=5,height=8,agents=6 eval.episodes=64
    python -m mtmarl.evaluate checkpoint=<train run dir>                  # its own task set, test split
    python -m mtmarl.evaluate checkpoint=<train run dir> task=rware:rows=2,cols=5,height=8,agents=8

A trained policy (``checkpoint=``, a directory written by ``mtmarl.train``;
``checkpoint_kind=best|latest``, default best if there is one) sees every task
padded to the layout its network was trained on (``mtmarl.evaluation.trained``:
zero features appended, or SMAX's allies and enemies padded in place with
attacks on missing enemies illegal); a task that does not fit inside that
layout is refused with both sizes named. Any agent count works.

Prints a table per task (mean, standard error, normalised return) and writes
``results.json`` (marl-eval layout) and ``summary.json`` into the Hydra run
directory; ``render=true`` adds one GIF per task.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mtmarl import tasks as task_registry
from mtmarl.errors import UserInputError
from mtmarl.evaluation.policies import POLICIES
from mtmarl.evaluation.references import load_references
from mtmarl.evaluation.render import check_renders, record_episode, save_gif
from mtmarl.evaluation.results import print_table, write_results
from mtmarl.evaluation.rollout import task_key
from mtmarl.evaluation.sets import evaluate_set
from mtmarl.evaluation.trained import check_trained_fits
from mtmarl.runtime import enable_compilation_cache, hydra_cli, user_errors_exit


def file_safe(name: str) -> str:
    """Ad-hoc task names contain ':', ',' and '='; keep file names portable."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def resolve_task_set(cfg: DictConfig, default: task_registry.TaskSet | None = None) -> task_registry.TaskSet:
    """``task=`` (a one-task set), else ``+tasks=<set>``, else ``default`` (if given); not both."""
    from mtmarl.config_check import check_one_task_source

    check_one_task_source(cfg)
    if cfg.get("task"):
        return task_registry.load(str(cfg.task))
    if cfg.get("tasks") is None and default is not None:
        return default
    if cfg.get("tasks") is None:
        raise UserInputError("no tasks given: add +tasks=<set> (one of "
                             f"{', '.join(task_registry.available_sets())}) or task=<env:key=value,...>")
    return task_registry.from_config(OmegaConf.to_container(cfg.tasks, resolve=True))


def _trained(cfg: DictConfig):
    """(policy, params, algorithm, description, load_trained info, the run's own task set) from checkpoint=."""
    from mtmarl.training.restore import check_run_seed, load_trained

    if cfg.get("policy") is not None:
        raise UserInputError(f"give either policy={cfg.policy} or checkpoint=<run dir>, not both")
    greedy = cfg.get("greedy")
    seed = cfg.get("checkpoint_seed")
    check_run_seed(cfg.checkpoint, None if seed is None else int(seed))
    policy, params, name, info = load_trained(cfg.checkpoint, cfg.get("checkpoint_kind"),
                                              None if greedy is None else bool(greedy),
                                              None if seed is None else int(seed))
    if info["task"]:
        own = task_registry.load(str(info["task"]))
    else:
        own = task_registry.from_config(info["tasks"])
    ck = info["checkpoint"]
    what = f"{name}, {ck['kind']} checkpoint of update {ck['step']}{', greedy' if info['greedy'] else ''}"
    return policy, params, name, what, info, own


_STARTED = time.time()  # before Hydra runs: a run dir created after this by Hydra is this process's own


@user_errors_exit
def run(cfg: DictConfig, run_dir: Path | None = None) -> list[dict[str, Any]]:
    """Evaluate into ``run_dir`` (default: Hydra's run dir). Everything is checked before the directory is
    locked; a refused evaluation leaves a directory that was there as it was, and removes one Hydra made."""
    from hydra.core.hydra_config import HydraConfig

    from mtmarl.config_check import check_evaluate_config

    from_hydra = run_dir is None and HydraConfig.initialized()
    if from_hydra:
        run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        check_evaluate_config(OmegaConf.to_container(cfg, resolve=True))
        return _run(cfg, run_dir)
    except (UserInputError, OSError):
        if from_hydra:
            from mtmarl.training.rundir import drop_new_dir

            drop_new_dir(run_dir, _STARTED)
        raise


def _run(cfg: DictConfig, run_dir: Path | None) -> list[dict[str, Any]]:
    from mtmarl.training.rundir import RunDirLock, holds_training

    enable_compilation_cache()
    layout, own = None, None
    if cfg.get("checkpoint"):
        policy, params, algorithm, what, info, own = _trained(cfg)
        layout = info["layout"]
    else:
        algorithm = what = "random" if cfg.get("policy") is None else str(cfg.policy)
        if algorithm not in POLICIES:
            raise UserInputError(f"unknown policy {algorithm!r}; valid: {', '.join(POLICIES)}")
        policy, params = POLICIES[algorithm], ()
    task_set = resolve_task_set(cfg, own)
    splits = ["train", "test"] if cfg.split == "all" else [cfg.split]
    if cfg.get("task") or (task_set is own and info["task"]):
        splits = ["train"]  # an ad-hoc task forms a one-task set
    for split in splits:
        task_set.split(split)  # validates the split name
    if cfg.render:
        check_renders([s for split in splits for s in task_set.split(split)])
    if layout is not None:
        check_trained_fits([s for split in splits for s in task_set.split(split)], layout, str(cfg.checkpoint))
    references = load_references(cfg.references or (info["references"] if own is not None else None))
    if run_dir is None:
        raise ValueError("evaluate.run outside a Hydra app needs run_dir")
    if holds_training(run_dir):
        raise UserInputError(f"run dir {run_dir} holds a training run, whose results.json and summary.json an "
                             f"evaluation would replace; write elsewhere: hydra.run.dir={run_dir / 'evaluate'}")
    with RunDirLock(run_dir):
        start = time.perf_counter()
        rows = evaluate_set(task_set, splits, policy, params, cfg.eval.episodes, cfg.seed,
                            references, cfg.eval.devices, layout=layout)
        elapsed = time.perf_counter() - start
        path = write_results(run_dir, rows, algorithm=algorithm, seed=cfg.seed)
        print_table(rows, title=f"{what} on {task_set.name} ({', '.join(splits)}), "
                                f"{cfg.eval.episodes} episodes/task, {elapsed:.0f} s")
        if cfg.render:
            for split in splits:
                for spec in task_set.split(split):
                    env = task_set.evaluation_env(spec, layout)
                    states = record_episode(env, policy, params, task_key(cfg.seed, spec), cfg.render_max_steps)
                    gif = save_gif(env, states, run_dir / f"{file_safe(spec.name)}.gif")
                    print(f"animation: {gif}")
    print(f"results: {path}")
    return rows


if __name__ == "__main__":
    hydra_cli("evaluate", run)
