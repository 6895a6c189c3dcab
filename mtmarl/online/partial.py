"""A task's online run saved between chunks, so that an interrupted collection continues where it stopped.

``<root>/.partial/<env>/<task>.pkl`` holds the learner's whole state (parameters, optimiser, envs, keys) and
the collector's progress (curve rows, recordings, snapshots, steps, time), written atomically every
``collect.checkpoint_min`` minutes and when a signal stops the run, removed once the task is finished. A run
of the task with other options or on another number of devices starts over (one line says why): its state
would not be the state of this run.
"""

from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path
from typing import Any

import jax

from mtmarl.data.vault.layout import task_dirname
from mtmarl.online.options import option_changes


def path(root: Path, spec) -> Path:
    return Path(root) / ".partial" / spec.env / f"{task_dirname(spec)}.pkl"


def save(file: Path, options: dict[str, Any], progress: dict[str, Any]) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f".{file.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        pickle.dump({"options": options, "devices": jax.local_device_count(),
                     "progress": jax.device_get(progress)}, fh, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, file)


def load(file: Path, options: dict[str, Any], fresh_state) -> dict[str, Any] | None:
    """The saved progress, its state placed like ``fresh_state``; None (and why, in one line) if there is none
    to continue from."""
    if not file.is_file():
        return None
    try:
        with open(file, "rb") as fh:
            saved = pickle.load(fh)
        progress = saved["progress"]
        changed = option_changes(saved["options"], options)
        if changed or saved["devices"] != jax.local_device_count():
            why = f"other options ({'; '.join(changed)})" if changed else f"{saved['devices']} device(s)"
            print(f"{file}: a partial run with {why}; starting the task over", file=sys.stderr)
            return None
        progress["state"] = jax.tree.map(lambda like, x: jax.device_put(x, like.sharding), fresh_state,
                                         progress["state"])
    except (OSError, EOFError, pickle.UnpicklingError, KeyError, TypeError, ValueError, AttributeError) as err:
        print(f"{file}: cannot be read ({type(err).__name__}); starting the task over", file=sys.stderr)
        return None
    return progress


def remove(file: Path) -> None:
    file.unlink(missing_ok=True)
