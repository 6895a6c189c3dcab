"""Zero-shot evaluation of a policy on the tasks of a set (one compiled program per agent count).

    python -m mtmarl.evaluate policy=random +tasks=rware_15 split=test
    python -m mtmarl.evaluate task=rware:rows=2,cols=5,height=8,agents=6 eval.episodes=64
    python -m mtmarl.evaluate checkpoint=<train run dir>                  # its own task set, test split
    python -m mtmarl.evaluate checkpoint=<train run dir> task=rware:rows=2,cols=5,height=8,agents=8

A trained policy (``checkpoint=``, a directory written by ``mtmarl.train``;
``checkpoint_kind=best|latest``, default best if there is one) sees every task
padded to its network's observation size (zero features appended); a task with
more observation features or another action count than it was trained on is
refused with both sizes named. Any agent count works.

Prints a table per task (mean, standard error, normalised return) and writes
``results.json`` (marl-eval layout) and ``summary.json`` into the Hydra run
directory; ``render=true`` adds one GIF per task.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from mtmarl import tasks as task_registry
from mtmarl.errors import UserInputError
from mtmarl.evaluation.policies import POLICIES
from mtmarl.evaluation.references import load_references
from mtmarl.evaluation.render import record_episode, save_gif
from mtmarl.evaluation.results import print_table, write_results
from mtmarl.evaluation.rollout import task_key
from mtmarl.evaluation.sets import evaluate_set
from mtmarl.runtime import enable_compilation_cache, hydra_cli, user_errors_exit


def file_safe(name: str) -> str:
    """Ad-hoc task names contain ':', ',' and '='; keep file names portable."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def resolve_task_set(cfg: DictConfig, default: task_registry.TaskSet | None = None) -> task_registry.TaskSet:
    """``task=`` (a one-task set), else ``+tasks=<set>``, else ``default`` (if given)."""
    if cfg.get("task"):
        return task_registry.load(str(cfg.task))
    if cfg.get("tasks") is None and default is not None:
        return default
    if cfg.get("tasks") is None:
        raise UserInputError("no tasks given: add +tasks=<set> (one of "
                             f"{', '.join(task_registry.available_sets())}) or task=<env:key=value,...>")
    return task_registry.from_config(OmegaConf.to_container(cfg.tasks, resolve=True))


def check_trained_fits(specs, obs_dim: int, n_actions: int, source: str) -> None:
    """One clear error if a task cannot be fed to a trained net of this input/output size."""
    for spec in specs:
        env = spec.build()
        if env.obs_dim > obs_dim:
            raise UserInputError(
                f"task {spec.name} has {env.obs_dim} observation features but the trained model ({source}) "
                f"takes {obs_dim} (its training set's padded size); only tasks with <= {obs_dim} features fit")
        if env.num_actions != n_actions:
            raise UserInputError(f"task {spec.name} has {env.num_actions} actions but the trained model "
                                 f"({source}) outputs {n_actions}")


def _trained(cfg: DictConfig):
    """(policy, params, algorithm, description, load_trained info, the run's own task set) from checkpoint=."""
    from mtmarl.training.restore import load_trained

    if cfg.get("policy") is not None:
        raise UserInputError(f"give either policy={cfg.policy} or checkpoint=<run dir>, not both")
    greedy = cfg.get("greedy")
    seed = cfg.get("checkpoint_seed")
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


@user_errors_exit
def run(cfg: DictConfig) -> list[dict[str, Any]]:
    from mtmarl.config_check import check_keys

    check_keys(OmegaConf.to_container(cfg, resolve=True), "evaluate")  # +key=... typos (Hydra allows new keys)
    enable_compilation_cache()
    if cfg.eval.episodes < 1:
        raise UserInputError(f"eval.episodes must be >= 1, got {cfg.eval.episodes}")
    obs_dim, own = None, None
    if cfg.get("checkpoint"):
        policy, params, algorithm, what, info, own = _trained(cfg)
        obs_dim = info["obs_dim"]
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
    if obs_dim is not None:
        check_trained_fits([s for split in splits for s in task_set.split(split)], obs_dim, info["n_actions"],
                           str(cfg.checkpoint))
    run_dir = Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)
    references = load_references(cfg.references or (info["references"] if own is not None else None))

    start = time.perf_counter()
    rows = evaluate_set(task_set, splits, policy, params, cfg.eval.episodes, cfg.seed,
                        references, cfg.eval.devices, obs_dim=obs_dim)
    elapsed = time.perf_counter() - start
    path = write_results(run_dir, rows, algorithm=algorithm, seed=cfg.seed)
    print_table(rows, title=f"{what} on {task_set.name} ({', '.join(splits)}), "
                            f"{cfg.eval.episodes} episodes/task, {elapsed:.0f} s")
    if cfg.render:
        for split in splits:
            for spec in task_set.split(split):
                env = task_set.evaluation_env(spec, obs_dim)
                states = record_episode(env, policy, params, task_key(cfg.seed, spec), cfg.render_max_steps)
                gif = save_gif(env, states, run_dir / f"{file_safe(spec.name)}.gif")
                print(f"animation: {gif}")
    print(f"results: {path}")
    return rows


if __name__ == "__main__":
    hydra_cli("evaluate", run)
