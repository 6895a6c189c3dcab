"""JaxMARL's SMAX package, imported once for the SMAX adapters (``mtmarl.envs.smax``, ``mtmarl.envs.smax_stack``)."""

from __future__ import annotations

import contextlib
import os
import sys
from types import ModuleType


def jaxmarl_smax() -> ModuleType:
    """JaxMARL's SMAX package. Its first import prints what it loads; those lines go to stderr, so that the
    stdout of ``--json`` commands (``python -m mtmarl.tasks SET --json``) holds JSON only."""
    if "jaxmarl.environments.smax" not in sys.modules:
        with _stdout_to_stderr():
            import jaxmarl.environments.smax  # noqa: F401
    return sys.modules["jaxmarl.environments.smax"]


@contextlib.contextmanager
def _stdout_to_stderr():
    """Send stdout to stderr, for Python's ``sys.stdout`` and for file descriptor 1. Both: JaxMARL's import
    sets ``sys.stdout``/``sys.stderr`` back to the process's own streams midway (around its optional brax
    import) and prints after that; the streams in use before (a test's captured ones) are restored after."""
    streams = sys.stdout, sys.stderr
    for stream in {*streams, sys.__stdout__} - {None}:
        stream.flush()
    sys.stdout = sys.stderr
    try:
        saved = os.dup(1)
        os.dup2(2, 1)
    except OSError:  # no file descriptor 1 or 2 (an embedded interpreter)
        saved = None
    try:
        yield
    finally:
        for stream in {sys.stdout, sys.__stdout__} - {None}:
            stream.flush()  # what the import wrote while descriptor 1 was stderr's
        if saved is not None:
            os.dup2(saved, 1)
            os.close(saved)
        sys.stdout, sys.stderr = streams
