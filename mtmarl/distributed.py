"""Multi-process (multi-host) JAX: start-up from the ``distributed`` config section, and the few
cross-process steps the trainer needs.

Why: JAX sees other machines' devices only after ``jax.distributed.initialize``,
which must run before anything else touches a JAX backend. This module owns
that call and its checks, so every entry point starts the same way:

    distributed:
      auto: false                           # true: let JAX detect the three below (SLURM, Open MPI, TPU)
      coordinator_address: 10.0.0.1:12355   # host:port of process 0 (it listens there)
      num_processes: 2
      process_id: 0                         # 0 .. num_processes-1, one per process
      local_device_ids: null                # null = every device the process sees
      cpu_collectives: gloo                 # cross-process collectives on CPU

With ``auto: false``, all three of address, count and id unset (the default)
means one process and no call; setting some but not all is an error. With
``auto: true``, ``jax.distributed.initialize`` is called with only what is set
(usually nothing) and detects the rest from the cluster's environment: under
SLURM the coordinator is the first node of ``SLURM_STEP_NODELIST`` on a port
derived from ``SLURM_JOB_ID``, the count is ``SLURM_NTASKS`` and the id
``SLURM_PROCID``. On CPU, cross-process collectives need an implementation
(``gloo``); ``cpu_collectives`` sets JAX's ``jax_cpu_collectives_implementation``
before the runtime starts (ignored by GPU/TPU backends).

The trainer's other cross-process needs are here too (:func:`is_main`,
:func:`announce_start` / :func:`await_start`, :func:`wait_for_main`,
:func:`broadcast_from_main`, :func:`max_over_processes`):
process 0 alone writes the run directory and evaluates, the others wait for it
at coordination-service barriers (which have a timeout of their own, unlike a
device collective that one process would enter long before the other).
All of them are no-ops in a single process.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import numpy as np

from mtmarl.errors import UserInputError

KEYS = ("coordinator_address", "num_processes", "process_id")
WAIT_S = 24 * 3600  # how long the other processes wait for process 0's evaluation / checkpoint (a dead one fails sooner)


def _check_count(n) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise UserInputError(f"distributed.num_processes must be an integer >= 1, got {n!r}")


def _check_address(addr: str) -> None:
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserInputError(f"distributed.coordinator_address must be host:port (e.g. 10.0.0.1:12355), "
                             f"got {addr!r}")


def _check_id(pid, n: int | None) -> None:
    top = "" if n is None else f" in 0..{n - 1}"
    if not isinstance(pid, int) or isinstance(pid, bool) or pid < 0 or (n is not None and pid >= n):
        raise UserInputError(f"distributed.process_id must be an integer{top}, got {pid!r}")


def settings(cfg: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The checked ``jax.distributed.initialize`` arguments, or None for a single process.

    ``auto: true`` gives only the keys that are set (possibly none: JAX detects them);
    otherwise all three are set and cluster detection is switched off, so what the
    config says is what runs.
    """
    cfg = dict(cfg or {})
    auto = cfg.get("auto", False)
    if not isinstance(auto, bool):
        raise UserInputError(f"distributed.auto must be true or false, got {auto!r}")
    given = {k: cfg.get(k) for k in KEYS if cfg.get(k) is not None}
    if not given and not auto:
        return None
    missing = [k for k in KEYS if k not in given]
    if missing and not auto:
        raise UserInputError(f"distributed: set all of {', '.join(KEYS)} (or none for one process, or "
                             f"distributed.auto=true to detect them under SLURM / Open MPI); missing {', '.join(missing)}")
    if "num_processes" in given:
        _check_count(given["num_processes"])
    if "process_id" in given:
        _check_id(given["process_id"], given.get("num_processes"))
    if "coordinator_address" in given:
        given["coordinator_address"] = str(given["coordinator_address"])
        _check_address(given["coordinator_address"])
    ids = cfg.get("local_device_ids")
    if ids is not None:
        ids = [ids] if isinstance(ids, int) and not isinstance(ids, bool) else ids
        if not isinstance(ids, (list, tuple)) or not ids or \
                not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
            raise UserInputError(f"distributed.local_device_ids must be null or a list of device ids >= 0, "
                                 f"got {cfg.get('local_device_ids')!r}")
        given["local_device_ids"] = list(ids)
    if not auto:
        given["cluster_detection_method"] = "deactivate"
    return given


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


# ------------------------------------------------------------ the trainer's cross-process steps

def is_main() -> bool:
    """Process 0: the one that writes the run directory, checkpoints, logs and evaluates."""
    return jax.process_index() == 0


def wait_for_main(name: str, timeout_s: float = WAIT_S) -> None:
    """A barrier of every process named ``name`` (each name used once): the others wait here for process 0.

    It is the coordination service's barrier, not a device collective: waiting on
    it for minutes (process 0 evaluating) is what it is for, and a process that
    died makes it fail instead of hang.
    """
    if jax.process_count() > 1:
        _client().wait_at_barrier(f"mtmarl/{name}", int(timeout_s * 1000))


def _client():
    from jax._src.distributed import global_state

    return global_state.client


def announce_start(refusal: str | None = None) -> None:
    """Process 0: tell the others the run goes ahead (the run directory is locked, the data is there),
    or why it does not. Without it, a refusal on process 0 would leave them waiting."""
    if jax.process_count() > 1:
        _client().key_value_set("mtmarl/start", refusal or "ok", allow_overwrite=True)


def await_start(timeout_s: float = WAIT_S) -> None:
    """The other processes: wait for :func:`announce_start`; process 0's refusal becomes theirs."""
    if jax.process_count() == 1:
        return
    verdict = _client().blocking_key_value_get("mtmarl/start", int(timeout_s * 1000))
    if verdict != "ok":
        raise UserInputError(f"process 0 did not start the run: {verdict}")


def broadcast_from_main(tree):
    """Process 0's value of a host pytree (numpy leaves) on every process, same dtypes and shapes."""
    if jax.process_count() == 1:
        return tree
    from jax.experimental import multihost_utils

    out = multihost_utils.broadcast_one_to_all(tree)
    return jax.tree.map(lambda got, like: np.asarray(got).astype(np.asarray(like).dtype), out, tree)


def max_over_processes(value: int) -> int:
    """The largest ``value`` any process holds (every process must call it at the same point)."""
    if jax.process_count() == 1:
        return int(value)
    from jax.experimental import multihost_utils

    return int(np.max(multihost_utils.process_allgather(np.int32(value))))
