"""Warnings for losses and gradient norms that go non-finite or jump by orders of magnitude.

Host-side, on the rows the run logs (each a mean over one compiled call's updates),
so the compiled update is untouched. The rule, per metric whose name holds ``loss``
or ``grad_norm``:

* non-finite: always flagged (the loop then stops the run; the warning names the
  metric first);
* with at least ``MIN_HISTORY`` earlier finite rows: flagged when ``|x|`` exceeds
  ``FACTOR`` times the median of the last ``HISTORY`` values of ``|x|``, and also
  exceeds ``FLOOR``. Why: a row is a mean over many updates, so healthy noise between
  rows stays well inside one order of magnitude, and three orders catch a blow-up rows
  before it overflows; the median ignores one earlier outlier, and the floor keeps a
  metric that sits near zero (a loss converging to 0) from being flagged for noise
  that is tiny in absolute terms;
* in the first rows (no history to compare with): flagged above ``FIRST_BOUND``.
  Why: inputs are normalised and parameters freshly initialised, so losses and
  gradient norms start at the scale of the returns; a value past a million at the start
  means targets or inputs off in scale (or a diverging first update), not a run
  that will recover.
"""

from __future__ import annotations

import collections
import math
import statistics
from typing import Any, Mapping

FACTOR = 1e3
HISTORY = 10
MIN_HISTORY = 3
FLOOR = 1.0
FIRST_BOUND = 1e6


def watched(name: str) -> bool:
    """Losses and gradient norms (``train/loss``, ``train/critic_loss``, ``train/seed_3/grad_norm``, ...)."""
    leaf = name.rsplit("/", 1)[-1]
    return "loss" in leaf or "grad_norm" in leaf


class MetricWatch:
    """Feed it every logged row with :meth:`check`; it returns one warning line per flagged metric."""

    def __init__(self) -> None:
        self._history: dict[str, collections.deque[float]] = collections.defaultdict(
            lambda: collections.deque(maxlen=HISTORY))

    def check(self, step: int, metrics: Mapping[str, Any]) -> list[str]:
        lines = []
        for name, value in metrics.items():
            if not watched(name) or isinstance(value, bool):
                continue
            try:
                x = float(value)
            except (TypeError, ValueError):
                continue
            why = self._why(self._history[name], x)
            if why is not None:
                lines.append(f"warning: {name}={x:.3g} at update {step}: {why}")
            if math.isfinite(x):
                self._history[name].append(abs(x))
        return lines

    @staticmethod
    def _why(history: collections.deque[float], x: float) -> str | None:
        if not math.isfinite(x):
            return "not finite"
        if len(history) >= MIN_HISTORY:
            median = statistics.median(history)
            if abs(x) > max(FACTOR * median, FLOOR):
                return f"over {FACTOR:.0e} x the median {median:.3g} of its previous {len(history)} logged rows"
            return None
        if abs(x) > FIRST_BOUND:
            return f"above {FIRST_BOUND:.0e} in its first logged rows (expected near the scale of the returns)"
        return None
