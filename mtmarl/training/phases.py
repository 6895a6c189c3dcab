"""Where a run's wall time goes: exclusive seconds per named phase, the rest counted as "other".

Phases nest (a checkpoint saved during an evaluation): the inner one's seconds are
not counted in the outer one, so the phases never overlap and
``sum(phases) + other == total``, ``total`` being the seconds since the timer's start
(the process's start when the run gives it, so interpreter and library start-up
count as "other").
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Callable, Iterator

# The order a summary lists the phases in; any other name follows them in the order first seen.
PHASES = ("loading data", "compiling", "training", "evaluating", "saving")


def process_start() -> float | None:
    """This process's start as a ``time.time()`` value (Linux ``/proc``; kernel clock ticks, so about 10 ms
    resolution), or None where that cannot be read."""
    try:
        with open("/proc/self/stat") as f:
            # field 22 (starttime, ticks after boot); counted after the ")" that closes the command name,
            # which may itself hold spaces, it is the 20th
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime"))
        start = boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return start if 0 <= time.time() - start < 30 * 86400 else None  # a clock that disagrees: not trusted


class PhaseTimer:
    """Wall-clock seconds per phase (``with timer.phase("compiling"): ...``).

    ``start_epoch`` (a ``time.time()`` value, e.g. :func:`process_start`) dates the
    start back before the timer existed; ``clock`` is a monotonic clock in seconds;
    ``on_change`` is called with the phase that is current after every switch (None
    when none is).
    """

    def __init__(self, start_epoch: float | None = None, clock: Callable[[], float] = time.perf_counter,
                 on_change: Callable[[str | None], None] | None = None):
        self.clock = clock
        now = clock()
        self.t0 = now if start_epoch is None else now - max(0.0, time.time() - start_epoch)
        self.seconds: dict[str, float] = {}
        self.on_change = on_change
        self._stack: list[str] = []
        self._since = now
        self._stopped: float | None = None

    @property
    def current(self) -> str | None:
        return self._stack[-1] if self._stack else None

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self._switch(lambda: self._stack.append(name))
        try:
            yield
        finally:
            self._switch(self._stack.pop)

    def _switch(self, change: Callable[[], object]) -> None:
        now = self.clock()
        if self._stack:
            self.seconds[self._stack[-1]] = self.seconds.get(self._stack[-1], 0.0) + now - self._since
        change()
        self._since = now
        if self.on_change is not None:
            self.on_change(self.current)

    def stop(self) -> None:
        """Freeze the totals (a later :meth:`summary` reports the run up to now)."""
        if self._stopped is None:
            self._stopped = self.clock()

    def summary(self) -> dict[str, float]:
        """Seconds per phase (the running one up to now), then "other" and "total", which they sum to."""
        now = self.clock() if self._stopped is None else self._stopped
        seconds = dict(self.seconds)
        if self._stack:
            seconds[self._stack[-1]] = seconds.get(self._stack[-1], 0.0) + now - self._since
        ordered = {k: seconds[k] for k in PHASES if k in seconds}
        ordered.update({k: v for k, v in seconds.items() if k not in ordered})
        total = now - self.t0
        return {**ordered, "other": total - sum(ordered.values()), "total": total}

    def describe(self) -> str:
        """One line, e.g. ``time: 133.0 s = loading data 4.1 s + ... + other 6.2 s``. Every phase is rounded
        to 0.1 s and "other" is the rounded total less their rounded sum, so the printed numbers add up."""
        parts = {k: round(v, 1) for k, v in self.summary().items()}
        total = parts.pop("total")
        parts["other"] = round(total - sum(v for k, v in parts.items() if k != "other"), 1)
        return f"time: {total:.1f} s = " + " + ".join(f"{k} {v:.1f} s" for k, v in parts.items())
