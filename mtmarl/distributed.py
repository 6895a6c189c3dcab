"""Multi-process (multi-host) JAX start-up from the ``distributed`` config section.

Why: JAX sees other machines' devices only after ``jax.distributed.initialize``,
which must run before anything else touches a JAX backend. This module owns
that call and its checks, so every entry point starts the same way:

    distributed:
      coordinator_address: 10.0.0.1:12355   # host:port of process 0 (it listens there)
      num_processes: 2
      process_id: 0                         # 0 .. num_processes-1, one per process
      cpu_collectives: gloo                 # cross-process collectives on CPU

All three of address, count and id unset (the default) means one process and no
call. On CPU, cross-process collectives need an implementation (``gloo``);
``cpu_collectives`` sets JAX's ``jax_cpu_collectives_implementation`` before the
runtime starts (ignored by GPU/TPU backends).
"""

from __future__ import annotations

from typing import Any, Mapping

import jax

from mtmarl.errors import UserInputError

KEYS = ("coordinator_address", "num_processes", "process_id")


def settings(cfg: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The checked ``jax.distributed.initialize`` arguments, or None for a single process."""
    cfg = dict(cfg or {})
    given = {k: cfg.get(k) for k in KEYS if cfg.get(k) is not None}
    if not given:
        return None
    missing = [k for k in KEYS if k not in given]
    if missing:
        raise UserInputError(f"distributed: set all of {', '.join(KEYS)} (or none for one process); "
                             f"missing {', '.join(missing)}")
    n, pid, addr = given["num_processes"], given["process_id"], str(given["coordinator_address"])
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise UserInputError(f"distributed.num_processes must be an integer >= 1, got {n!r}")
    if not isinstance(pid, int) or isinstance(pid, bool) or not 0 <= pid < n:
        raise UserInputError(f"distributed.process_id must be an integer in 0..{n - 1}, got {pid!r}")
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserInputError(f"distributed.coordinator_address must be host:port (e.g. 10.0.0.1:12355), "
                             f"got {addr!r}")
    return {"coordinator_address": addr, "num_processes": n, "process_id": pid}


def initialize(cfg: Mapping[str, Any] | None) -> bool:
    """Start the multi-process runtime if ``cfg`` asks for it; True when it did.

    Call it first, before any JAX computation or device query in the process.
    """
    args = settings(cfg)
    if args is None:
        return False
    collectives = (cfg or {}).get("cpu_collectives")
    if collectives:
        jax.config.update("jax_cpu_collectives_implementation", str(collectives))
    jax.distributed.initialize(**args)
    return True
