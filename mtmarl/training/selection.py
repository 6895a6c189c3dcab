"""Which update scored best on the training tasks, per seed: the model selection of a run.

A run evaluates its training tasks every ``training.eval_every`` updates and keeps
the parameters that scored highest (``checkpoint.train_score``: held-out tasks
never take part). A population (``training.population`` seeds trained side by
side in one program) selects for every seed on its own, because its seeds peak
at different updates. Its "best" checkpoint is then a composite: seed i's slice
holds seed i's parameters at seed i's best update, so every tool that restores
one seed of a population checkpoint (evaluate, diagnose, collect) gets that
seed's best, and a resumed run keeps the slices of seeds that have not improved
since. A one-seed run keeps the scalar ``best_score`` / ``best_step`` of its
checkpoint meta; a population keeps one entry per seed.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import numpy as np

from mtmarl.training.checkpoint import is_better


class Selection:
    """Best training score and update per seed, and (population) the composite best carry on the host."""

    def __init__(self, population: int = 1, scores: Sequence[float | None] | None = None,
                 steps: Sequence[int | None] | None = None):
        self.population = population
        self.scores: list[float | None] = list(scores) if scores is not None else [None] * population
        self.steps: list[int | None] = list(steps) if steps is not None else [None] * population
        if len(self.scores) != population or len(self.steps) != population:
            raise ValueError(f"{population} seeds but {len(self.scores)} scores and {len(self.steps)} steps")
        self.carry: Any = None  # the best carry so far (a population's composite); None until one is offered

    @classmethod
    def from_meta(cls, population: int, meta: Mapping[str, Any]) -> "Selection":
        """What a checkpoint's meta recorded (``best_score``, ``best_step``: scalars for one seed, lists for
        a population; absent or null when nothing was evaluated yet)."""
        scores, steps = meta.get("best_score"), meta.get("best_step")
        if population == 1:
            return cls(1, [scores], [steps])
        return cls(population, scores or None, steps or None)

    def meta(self) -> dict[str, Any]:
        """The entries a checkpoint's meta records (the inverse of :meth:`from_meta`)."""
        if self.population == 1:
            return {"best_score": self.scores[0], "best_step": self.steps[0]}
        return {"best_score": list(self.scores), "best_step": list(self.steps)}

    @property
    def any(self) -> bool:
        return any(s is not None for s in self.steps)

    def offer(self, step: int, carry, scores: Sequence[float]) -> list[int]:
        """Take the seeds of ``carry`` whose score beats their best so far; returns their indices.

        ``carry`` is a host pytree (a population's with the seed axis first). The
        composite keeps every other seed's slice as it was.
        """
        if len(scores) != self.population:
            raise ValueError(f"{len(scores)} scores for {self.population} seeds")
        better = [i for i, s in enumerate(scores) if is_better(s, self.scores[i])]
        if not better:
            return better
        for i in better:
            self.scores[i], self.steps[i] = float(scores[i]), int(step)
        if self.population == 1 or self.carry is None:
            # No earlier composite: seeds that never scored take this update's slice too (their steps stay
            # None, so the final evaluation still uses their final parameters).
            self.carry = jax.tree.map(np.array, carry)
        else:
            take = np.zeros(self.population, bool)
            take[better] = True
            self.carry = jax.tree.map(
                lambda old, new: np.where(take.reshape((-1,) + (1,) * (np.ndim(new) - 1)), new, old),
                self.carry, jax.tree.map(np.asarray, carry))
        return better
