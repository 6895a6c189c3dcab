"""Ctrl-C / SIGTERM during training: finish the compiled call, checkpoint, print how to resume.

Why: Python's default handler interrupts JAX mid-call with a traceback, losing
the updates since the last periodic checkpoint and giving no hint how to go on.
The handler only sets a flag; the training loop polls it between compiled
calls (:func:`requested`) and raises :class:`Interrupted` after saving.
A second signal while the first is being handled stops at once.
"""

from __future__ import annotations

import contextlib
import shlex
import signal
import sys
from typing import Iterator, Sequence

_signal: int | None = None


class Interrupted(Exception):
    """Training stopped on a signal after checkpointing update ``step``."""

    def __init__(self, signum: int, step: int):
        super().__init__(f"{signal.Signals(signum).name} at update {step}")
        self.signum, self.step = signum, step

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # 130 for SIGINT, 143 for SIGTERM, as a shell reports them


def requested() -> int | None:
    """The signal received since :func:`catch_signals` started, if any."""
    return _signal


def _handler(signum, frame):
    global _signal
    if _signal is not None:  # second signal: give up on the clean stop
        raise KeyboardInterrupt
    _signal = signum
    print(f"\n{signal.Signals(signum).name}: stopping after the current compiled call "
          f"(send it again to stop at once)", file=sys.stderr, flush=True)


@contextlib.contextmanager
def catch_signals() -> Iterator[None]:
    """Route SIGINT and SIGTERM to the flag (main thread only; elsewhere a no-op)."""
    global _signal
    _signal = None
    try:
        old = {s: signal.signal(s, _handler) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: signals cannot be caught here
        yield
        return
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        _signal = None


def resume_command(overrides: Sequence[str], run_dir) -> str:
    """The command line that continues this run: its overrides, minus resume/overwrite/run dir, plus them."""
    drop = ("resume=", "overwrite=", "hydra.run.dir=", "+resume=", "+overwrite=", "++resume=", "++overwrite=")
    kept = [_unquote_task(o) for o in overrides if not o.startswith(drop)]
    return " ".join(shlex.quote(a) for a in ["python", "-m", "mtmarl.train", *kept, "resume=true",
                                             f"hydra.run.dir={run_dir}"])


def _unquote_task(override: str) -> str:
    """``task='env:a=1,b=2'`` (quoted for Hydra by runtime.quote_task_overrides) back to what was typed."""
    key, eq, value = override.partition("=")
    if eq and key.lstrip("+~") == "task" and len(value) > 1 and value[0] == value[-1] and value[0] in "'\"":
        return f"{key}={value[1:-1]}"
    return override
