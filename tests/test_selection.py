"""Model selection per seed (mtmarl.training.selection) against a naive per-seed argmax."""

import numpy as np
import pytest

from mtmarl.training.engine import Carry
from mtmarl.training.selection import Selection


def _carry(step: int, population: int) -> Carry:
    """A population carry whose every leaf says which update it came from (seed i's slice: step * 10 + i)."""
    stamp = np.array([step * 10 + i for i in range(population)], np.float32)
    return Carry({"w": np.tile(stamp[:, None, None], (1, 2, 3)), "b": stamp.copy()},
                 np.tile(stamp.astype(np.uint32)[:, None], (1, 2)), np.full(population, step, np.int32))


def test_each_seed_keeps_its_own_best_update_in_the_composite():
    rng = np.random.default_rng(0)
    population, steps = 3, [100, 200, 300, 400, 500]
    scores = rng.normal(size=(len(steps), population))
    scores[2, 1] = np.nan  # a non-finite score never wins
    scores[:, 2] = scores[0, 2] - np.arange(len(steps))  # seed 2 peaks at its first evaluation
    sel = Selection(population)
    for step, row in zip(steps, scores):
        better = sel.offer(step, _carry(step, population), list(row))
        assert all(sel.steps[i] == step for i in better)
    for i in range(population):  # the naive reference: the first update with the highest finite score
        finite = np.where(np.isfinite(scores[:, i]), scores[:, i], -np.inf)
        want = steps[int(np.argmax(finite))]
        assert sel.steps[i] == want and sel.scores[i] == pytest.approx(finite.max())
        assert np.all(sel.carry.state["w"][i] == want * 10 + i) and sel.carry.state["b"][i] == want * 10 + i
        assert sel.carry.step[i] == want
    assert sel.steps[2] == 100


def test_meta_round_trips_and_one_seed_keeps_scalars():
    sel = Selection(2)
    assert not sel.any and sel.meta() == {"best_score": [None, None], "best_step": [None, None]}
    sel.offer(4, _carry(4, 2), [0.5, float("nan")])
    assert sel.any and sel.meta() == {"best_score": [0.5, None], "best_step": [4, None]}
    again = Selection.from_meta(2, sel.meta())
    assert again.scores == sel.scores and again.steps == sel.steps
    assert Selection.from_meta(2, {}).steps == [None, None]  # a checkpoint written before any evaluation
    one = Selection(1)
    one.offer(7, Carry({"w": np.ones(2)}, np.zeros(2, np.uint32), np.int32(7)), [1.25])
    assert one.meta() == {"best_score": 1.25, "best_step": 7}
    assert Selection.from_meta(1, one.meta()).steps == [7]
    with pytest.raises(ValueError, match="2 scores for 1 seeds"):
        one.offer(8, None, [1.0, 2.0])
