"""When an online run has converged: the plateau rule that ends a collector's training before its budget.

``collect.plateau`` (null: train for the whole budget):

    min_steps: {rware: 20000000, lbf: 5000000, ...}   # no stop before this many env steps (per env)
    window: 0.2                                       # w: the fraction of the steps so far in each window
    min_gain: 0.02                                    # g: the relative improvement that counts as learning

After each chunk at ``s >= min_steps`` env steps, with ``m_last`` the mean training return of the chunks in
``(s - w s, s]``, ``m_prev`` that of the chunks in ``(s - 2 w s, s - w s]`` and ``r_0`` the training return of
the run's first chunk with a finished episode (its start), the run has plateaued when it has learned and stopped
learning:

    m_last - r_0 >= g * max(|r_0|, eps)    and    m_last - m_prev < g * max(|m_prev|, eps)

(eps keeps a wobble around zero return from counting as learning). A run that never rose above its start
(a sparse reward not yet found: its return flat at the untrained policy's) trains on; the budget
(``collect.budget`` / ``collect.env_budget``) stays the cap, and the reference entry says how the run ended.
Learning is measured from the first chunk, not from a window that grows with the run: a task solved within the
first fifth of the steps would otherwise never count as learned (its first window already holds the solved
return) and would train on to the cap.

    stall_steps: {rware: 15000000}                    # optional, per env: give up on a run that has not learned

After each chunk at ``s >= stall_steps``, a run that has not learned (the first condition above is false) ends
there: its entry says ``no learning by <s> steps``. Such a run would have reached the cap unchanged (no learning,
no plateau), so the limit changes no run that learned; it is not among the options compared with finished runs
(a run that learned ends the same with or without it).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from mtmarl.errors import UserInputError

EPS = 1e-6


@dataclasses.dataclass(frozen=True)
class PlateauRule:
    min_steps: int
    window: float
    min_gain: float
    stall_steps: int | None = None

    def describe(self) -> str:
        w = f"{self.window:g}"
        text = (f"at least {self.min_steps:,} env steps, then stop when the mean training return of the last "
                f"{w} of the steps improves by less than {self.min_gain:g} (relative) on the {w} before it, once "
                f"it is at least {self.min_gain:g} (relative) above the first chunk's")
        if self.stall_steps is not None:
            text += f"; a run not that far above its first chunk by {self.stall_steps:,} env steps stops there"
        return text

    def to_json(self) -> dict[str, Any]:
        """The rule as a compared option: without ``stall_steps`` (see the module docstring)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "stall_steps"}


def rule_for(cfg, env: str) -> PlateauRule | None:
    """``collect.plateau`` for one env, checked (None: no rule, the budget alone ends training)."""
    value = cfg.collect.get("plateau")
    if value is None:
        return None
    known = {"min_steps", "window", "min_gain", "stall_steps"}
    unknown = sorted(set(value) - known)
    if unknown:
        raise UserInputError(f"collect.plateau.{unknown[0]} is not a key of the plateau rule; allowed: "
                             f"{', '.join(sorted(known))}")
    def per_env_steps(name: str, optional: bool) -> int | None:
        per_env = value.get(name)
        steps = per_env.get(env) if hasattr(per_env, "get") else per_env
        if steps is None and optional:
            return None
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            key = f"collect.plateau.{name}" + (f".{env}" if hasattr(per_env, "get") else "")
            raise UserInputError(f"{key}={steps!r} is not allowed: want an integer >= 0 (or a mapping env: integer)")
        return steps

    steps = per_env_steps("min_steps", optional=False)
    stall = per_env_steps("stall_steps", optional=True)
    for key, low, high in (("window", 0.0, 0.5), ("min_gain", 0.0, float("inf"))):
        v = value.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not low <= v <= high or (key == "window" and v == 0):
            allowed = "a number in (0, 0.5]" if key == "window" else "a number >= 0"
            raise UserInputError(f"collect.plateau.{key}={v!r} is not allowed: want {allowed}")
    return PlateauRule(int(steps), float(value["window"]), float(value["min_gain"]), stall)


def start_and_window_means(steps: np.ndarray, returns: np.ndarray, window: float) -> tuple[float, float, float] | None:
    """(r_0, m_prev, m_last): the first chunk's return (the first one with a return) and the mean returns of the
    chunks ending in the last two windows of ``window * steps[-1]`` env steps; None while either window holds no
    chunk with a return."""
    end = float(steps[-1])
    width = window * end
    finite = np.isfinite(returns)
    masks = (finite & (steps > end - 2 * width) & (steps <= end - width), finite & (steps > end - width))
    if not all(m.any() for m in masks):
        return None
    prev, last = (float(returns[m].mean()) for m in masks)
    return float(returns[finite][0]), prev, last


def _learned(start: float, last: float, rule: PlateauRule) -> bool:
    return last - start >= rule.min_gain * max(abs(start), EPS)


def _means(rule: PlateauRule, steps, returns) -> tuple[float, float, float] | None:
    steps = np.asarray(steps, dtype=np.float64)
    return start_and_window_means(steps, np.asarray([np.nan if r is None else r for r in returns], np.float64), rule.window)


def stalled(rule: PlateauRule, steps, returns) -> bool:
    """True when the run has reached ``rule.stall_steps`` without learning (its last window not ``min_gain``
    above its first chunk); never without a stall limit or while a window holds no return."""
    if rule.stall_steps is None or len(steps) == 0 or steps[-1] < rule.stall_steps:
        return False
    means = _means(rule, steps, returns)
    return means is not None and not _learned(means[0], means[2], rule)


def plateaued(rule: PlateauRule, steps, returns) -> bool:
    """True when the run (chunk end steps and their training returns, None for a chunk without a finished
    episode) has reached ``rule.min_steps``, has risen above its first chunk and its last window improves by
    less than ``min_gain`` on the one before."""
    if len(steps) == 0 or steps[-1] < rule.min_steps:
        return False
    means = _means(rule, steps, returns)
    if means is None:
        return False
    start, prev, last = means
    return _learned(start, last, rule) and last - prev < rule.min_gain * max(abs(prev), EPS)
