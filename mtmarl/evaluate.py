"""Zero-shot evaluation of a policy on the tasks of a set (one compiled program per task).

    python -m mtmarl.evaluate policy=random +tasks=rware_15 split=test
    python -m mtmarl.evaluate task=rware:rows=2,cols=5,height=8,agents=6 eval.episodes=64

Prints a table per task (mean, standard error, normalised return) and writes
``results.json`` (marl-eval layout) and ``summary.json`` into the Hydra run
directory; ``render=true`` adds one GIF per task.
"""

from __future__ import annotations

import re
import time
import zlib
from pathlib import Path
from typing import Any

import hydra
import jax
from omegaconf import DictConfig, OmegaConf

from mtmarl import tasks as task_registry
from mtmarl.errors import UserInputError
from mtmarl.evaluation.policies import POLICIES, Policy
from mtmarl.evaluation.references import load_references, reference_for
from mtmarl.evaluation.render import record_episode, save_gif
from mtmarl.evaluation.results import print_table, summarise, write_results
from mtmarl.evaluation.rollout import make_evaluator
from mtmarl.runtime import enable_compilation_cache, hydra_cli, user_errors_exit


def task_key(seed: int, spec: task_registry.TaskSpec) -> jax.Array:
    """A task's evaluation key depends on the seed and the task, not on its set or position."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), zlib.crc32(spec.adhoc.encode()))


def file_safe(name: str) -> str:
    """Ad-hoc task names contain ':', ',' and '='; keep file names portable."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def resolve_task_set(cfg: DictConfig) -> task_registry.TaskSet:
    if cfg.get("task"):
        return task_registry.load(str(cfg.task))
    if cfg.get("tasks") is None:
        raise UserInputError("no tasks given: add +tasks=<set> (one of "
                             f"{', '.join(task_registry.available_sets())}) or task=<env:key=value,...>")
    return task_registry.from_config(OmegaConf.to_container(cfg.tasks, resolve=True))


def evaluate_set(task_set: task_registry.TaskSet, splits: list[str], policy: Policy, params: Any,
                 episodes: int, seed: int, references: dict[str, float],
                 devices: int | None = None, progress: bool = True) -> list[dict[str, Any]]:
    """Evaluate every task of the given splits; one summary row per task."""
    from rich.progress import Progress

    todo = [(split, spec) for split in splits for spec in task_set.split(split)]
    rows = []
    with Progress(disable=not progress, transient=True) as bar:
        job = bar.add_task("evaluating", total=len(todo))
        for split, spec in todo:
            bar.update(job, description=f"{split}: {spec.name}")
            env = task_set.padded(spec)
            stats = make_evaluator(env, policy, episodes, devices)(params, task_key(seed, spec))
            stats = jax.device_get(stats)
            info = {"name": spec.name, "task": spec.adhoc, "env": spec.env, "split": split,
                    "agents": env.inner.num_agents}
            rows.append(summarise(info, stats, reference_for(spec, references)))
            bar.advance(job)
    return rows


@user_errors_exit
def run(cfg: DictConfig) -> list[dict[str, Any]]:
    enable_compilation_cache()
    if cfg.policy not in POLICIES:
        raise UserInputError(f"unknown policy {cfg.policy!r}; valid: {', '.join(POLICIES)}")
    if cfg.eval.episodes < 1:
        raise UserInputError(f"eval.episodes must be >= 1, got {cfg.eval.episodes}")
    policy, params = POLICIES[cfg.policy], ()
    task_set = resolve_task_set(cfg)
    splits = ["train", "test"] if cfg.split == "all" else [cfg.split]
    if cfg.get("task"):
        splits = ["train"]  # an ad-hoc task forms a one-task set
    for split in splits:
        task_set.split(split)  # validates the split name
    run_dir = Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)
    references = load_references(cfg.references)

    start = time.perf_counter()
    rows = evaluate_set(task_set, splits, policy, params, cfg.eval.episodes, cfg.seed,
                        references, cfg.eval.devices)
    elapsed = time.perf_counter() - start
    path = write_results(run_dir, rows, algorithm=str(cfg.policy), seed=cfg.seed)
    print_table(rows, title=f"{cfg.policy} on {task_set.name} ({', '.join(splits)}), "
                            f"{cfg.eval.episodes} episodes/task, {elapsed:.0f} s")
    if cfg.render:
        for split in splits:
            for spec in task_set.split(split):
                env = task_set.padded(spec)
                states = record_episode(env, policy, params, task_key(cfg.seed, spec), cfg.render_max_steps)
                gif = save_gif(env, states, run_dir / f"{file_safe(spec.name)}.gif")
                print(f"animation: {gif}")
    print(f"results: {path}")
    return rows


if __name__ == "__main__":
    hydra_cli("evaluate", run)
