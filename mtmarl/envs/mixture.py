"""Several tasks as one env whose every episode plays one of them, drawn at reset.

Why: an online stage that learns on a task *set* (HyGen's hybrid stage collects episodes in each of its
source tasks) needs one env per rollout slot whose shapes do not depend on the task. The tasks' stacked env
(:meth:`mtmarl.envs.MultiAgentEnv.stack`: one trace for all of them, the task a traced argument of
``reset``) already is that env; this adapter only draws the task, so it fits every vectorised rollout that
calls ``reset(key)``. A task is drawn uniformly per episode: over ``E`` envs and an iteration, each task
gets ``E / K`` episodes in expectation rather than exactly.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax

from mtmarl.envs.base import MultiAgentEnv, TimeStep
from mtmarl.errors import UserInputError


class TaskMixture(MultiAgentEnv):
    """``envs`` (tasks of one env class, or the same set's :class:`~mtmarl.envs.PaddedEnv` s) behind one
    ``reset(key)`` that draws the task index from ``key``; ``names`` label them in errors and reports."""

    def __init__(self, envs: Sequence[MultiAgentEnv], names: Sequence[str]):
        envs, names = list(envs), list(names)
        if not envs or len(envs) != len(names):
            raise ValueError(f"TaskMixture needs one name per env, got {len(envs)} envs and {len(names)} names")
        stacked = type(envs[0]).stack(envs) if len({type(e) for e in envs}) == 1 else None
        if stacked is None:
            raise UserInputError(
                f"tasks {', '.join(names)} cannot share one env: env {envs[0].name!r} does not stack its tasks "
                f"({type(getattr(envs[0], 'inner', envs[0])).__name__}.stack gives None; "
                f"RWARE, LBF, Connector and SMAX tasks of one set stack)"
            )
        self.stacked, self.names = stacked, names
        self.name, self.horizon, self.spec = stacked.name, stacked.horizon, stacked.spec

    @property
    def num_tasks(self) -> int:
        return len(self.names)

    def draw(self, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(task index, the key the stacked env resets with), both from ``key``."""
        k_task, k_env = jax.random.split(key)
        return jax.random.randint(k_task, (), 0, self.num_tasks), k_env

    def reset(self, key) -> tuple[Any, TimeStep]:
        task, k_env = self.draw(key)
        return self.stacked.reset(k_env, task)

    def step(self, state: Any, actions) -> tuple[Any, TimeStep]:
        return self.stacked.step(state, actions)

    def __repr__(self) -> str:
        return f"TaskMixture({', '.join(self.names)}; {self.stacked!r})"
