"""Process-level set-up shared by the command-line entry points."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Callable

import jax

from mtmarl.configs import CONFIG_DIR
from mtmarl.errors import UserInputError, file_error, require_extra

CACHE_DIR = Path(os.environ.get("MTMARL_CACHE", Path.home() / ".cache" / "mtmarl"))
CACHE_MAX_BYTES = 8 << 30  # least recently used executables are evicted beyond this


def enable_compilation_cache(min_compile_secs: float | None = None) -> None:
    """Persist XLA executables: Jumanji envs take 5-20 s each to compile on CPU.

    ``MTMARL_XLA_CACHE`` is ``on`` (the default: ``$MTMARL_CACHE/xla_lru``), ``off``, or an
    absolute directory. JAX writes cache entries with a plain (non-atomic) write and
    reads them without a lock unless the cache has a size limit; several processes
    sharing one directory (a sweep, a test suite in workers) could then load a half
    written executable, and a crash loses the run. So a size limit is always set,
    which makes JAX take a file lock around every read and write. A size-limited cache also keeps an
    access-time file beside every entry, and JAX fails to write into a directory that holds entries
    without one (a cache written without the limit), so the default directory is a new one, ``xla_lru``.

    Programs that compile faster than ``min_compile_secs`` are not stored; unset, it is
    ``MTMARL_XLA_CACHE_MIN_SECS`` (default 1.0), which processes started by a parent (the test suite's CLIs)
    inherit.
    """
    if min_compile_secs is None:
        text = os.environ.get("MTMARL_XLA_CACHE_MIN_SECS", "1.0")
        try:
            min_compile_secs = float(text)
        except ValueError:
            min_compile_secs = None
        if min_compile_secs is None or not min_compile_secs >= 0:  # (also refuses nan)
            raise UserInputError(f"MTMARL_XLA_CACHE_MIN_SECS={text!r}: allowed values are numbers of seconds >= 0")
    setting = os.environ.get("MTMARL_XLA_CACHE", "on")
    if setting not in ("on", "off") and not os.path.isabs(setting):
        raise UserInputError(
            f"MTMARL_XLA_CACHE={setting!r}: allowed values are 'on', 'off' and an absolute directory")
    if setting == "off":
        return
    path = CACHE_DIR / "xla_lru" if setting == "on" else Path(setting)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_compilation_cache_max_size", CACHE_MAX_BYTES)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_secs)


GC_THRESHOLDS = (100_000, 50, 50)  # CPython's defaults: (700, 10, 10)


def tune_garbage_collector() -> None:
    """Collect cyclic garbage less often, and never walk what is alive now (the imported libraries).

    Why: tracing and lowering a JAX program allocates a great many short-lived containers, so at CPython's
    default thresholds the collector runs all the time, and each full collection (also every
    ``release_freed_memory``) walks the hundreds of thousands of objects of jax, flax, jumanji and hydra.
    Objects alive at the call are never collected afterwards: call it once, after the imports.
    """
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def user_errors_exit(fn: Callable) -> Callable:
    """Print a :class:`UserInputError` (or a file system's refusal: :func:`mtmarl.errors.file_error`) as one
    line and exit 2 instead of a traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (UserInputError, OSError) as err:
            message = err if isinstance(err, UserInputError) else file_error(err)
            if message is None:
                raise
            print(f"error: {message}", file=sys.stderr)
            sys.exit(2)
    return wrapper


def quote_task_overrides(argv: list[str], keys: tuple[str, ...] = ("task",)) -> list[str]:
    """Let ``task=rware:rows=2,cols=5`` through Hydra's override grammar.

    Unquoted, Hydra reads the commas as a list and rejects the inner ``=``;
    quoting the value keeps the ad-hoc task syntax typeable as documented.
    """
    out = []
    for arg in argv:
        key, eq, value = arg.partition("=")
        if eq and key.lstrip("+~") in keys and value and value[0] not in "'\"":
            arg = f"{key}='{value}'"
        out.append(arg)
    return out


def quiet_library_logs() -> None:
    """Hydra logs INFO to the console; Orbax (via absl) would flood it with checkpoint-manager lines."""
    import logging

    for name in ("absl", "orbax", "jax._src.xla_bridge"):
        logging.getLogger(name).setLevel(logging.WARNING)


def hydra_cli(config_name: str, run: Callable) -> None:
    """Run ``run(cfg)`` as a Hydra app on ``mtmarl/configs/<config_name>.yaml`` (ad-hoc task args quoted)."""
    import hydra

    @functools.wraps(run)
    def task(cfg):
        quiet_library_logs()  # after Hydra has configured logging
        tune_garbage_collector()  # everything the command needs is imported by now
        return run(cfg)

    sys.argv = quote_task_overrides(sys.argv)
    _check_run_dir_argument(sys.argv[1:])
    _check_launcher_argument(sys.argv[1:])
    hydra.main(version_base=None, config_path=str(CONFIG_DIR), config_name=config_name)(task)()


NAME_MAX = 255  # bytes in one file name on Linux's and macOS's file systems


def check_run_path(run_dir: str | Path, elsewhere: str = "choose another hydra.run.dir") -> None:
    """Refuse a run directory that cannot be created or written, before anything (Hydra included) tries:
    a name too long, a file in the way, a read-only or foreign place."""
    path = Path(run_dir).absolute()
    long = [part for part in path.parts if len(os.fsencode(part)) > NAME_MAX]
    if long:  # (asking whether such a path exists is already an error)
        why: str | None = f"the name {long[0][:40]}... is longer than the {NAME_MAX} bytes a file name may have"
    else:
        existing = next(p for p in (path, *path.parents) if p.exists())
        why = (f"{existing} is a file, not a directory" if not existing.is_dir() else
               f"{existing} is not writable (read-only or not permitted)"
               if not os.access(existing, os.W_OK | os.X_OK) else None)
    if why is not None:
        raise UserInputError(f"cannot use run dir {run_dir}: {why} ({elsewhere})")


@user_errors_exit
def _check_run_dir_argument(argv: list[str]) -> None:
    """``hydra.run.dir=<path>``: a path no run can use is refused before Hydra creates it (its own error is a
    traceback)."""
    for arg in argv:
        key, eq, value = arg.partition("=")
        if eq and key.lstrip("+") == "hydra.run.dir" and "${" not in value:
            check_run_path(value.strip("'\""))


@user_errors_exit
def _check_launcher_argument(argv: list[str]) -> None:
    """``hydra/launcher=submitit_*`` needs the optional extra that provides Hydra's submitit launcher; without it,
    one line naming the extra instead of Hydra's report of a missing config."""
    for arg in argv:
        key, eq, value = arg.partition("=")
        if eq and key.lstrip("+~") == "hydra/launcher" and value.startswith("submitit"):
            require_extra("slurm", f"hydra/launcher={value}")


def save_figure(fig, path: Path, dpi: int = 110) -> None:
    """Write a matplotlib figure atomically (temp file + rename) and close it.

    Long jobs redraw their figures as they go; a crash mid-write must not leave a truncated PNG.
    """
    import matplotlib.pyplot as plt

    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    os.replace(tmp, path)
