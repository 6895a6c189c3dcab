"""Evaluation of one policy on every task of some splits of a task set, one summary row per task.

The evaluate CLI (``python -m mtmarl.evaluate``) and the online stages that report a zero-shot table
(HyGen's ``online.eval_set``) share it.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from mtmarl import envs as envs_layout
from mtmarl import tasks as task_registry
from mtmarl.evaluation.policies import Policy
from mtmarl.evaluation.references import reference_for
from mtmarl.evaluation.results import summarise, task_info
from mtmarl.evaluation.rollout import make_task_set_evaluator, task_key


# Episodes played at once per device, summed over the tasks of the set: bounds the memory of the batched env
# states and policy carries; a slot whose episode ends starts the task's next one, in one call.
CALL_EPISODES = 1024


def call_batch(episodes: int, num_tasks: int, num_devices: int) -> int:
    """Slots (episodes played at once) per task per device: within :data:`CALL_EPISODES`, split evenly."""
    per_device = -(-episodes // num_devices)
    calls = -(-per_device // max(1, CALL_EPISODES // max(num_tasks, 1)))
    return -(-per_device // calls)


def evaluate_set(task_set: task_registry.TaskSet, splits: list[str], policy: Policy, params: Any,
                 episodes: int, seed: int, references: dict[str, float],
                 devices: int | None = None, progress: bool = True,
                 layout: envs_layout.EnvSpec | None = None) -> list[dict[str, Any]]:
    """Evaluate every task of the given splits (one compiled program per agent count); one summary row per task.

    ``layout``: pad observations and actions to this layout instead of the set's (a trained net's, ``info["layout"]``
    of ``mtmarl.training.restore.load_run``).
    """
    todo = [(split, spec) for split in splits for spec in task_set.split(split)]
    if not todo:
        return []
    played = [task_set.evaluation_env(spec, layout) for _, spec in todo]
    n_dev = len(jax.local_devices()[: devices or jax.local_device_count()])
    fn = make_task_set_evaluator(played, policy, episodes, devices, call_batch(episodes, len(todo), n_dev),
                                 capacity=-(-episodes // n_dev))
    if progress:
        print(f"evaluating {len(todo)} tasks x {episodes} episodes, one compiled program per agent count", flush=True)
    stats = jax.device_get(fn(params, jnp.stack([task_key(seed, spec) for _, spec in todo])))
    rows = []
    for i, ((split, spec), env) in enumerate(zip(todo, played)):
        rows.append(summarise(task_info(split, spec, env), jax.tree.map(lambda x: x[i], stats),
                              reference_for(spec, references)))
    return rows
