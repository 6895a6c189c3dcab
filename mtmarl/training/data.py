"""Training data: every training task's vault read into one set of padded device buffers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mtmarl.data.batching import Buffers, make_buffers
from mtmarl.data.vault import read_vault, vault_path
from mtmarl.errors import UserInputError
from mtmarl.tasks import TaskSet


def missing_vaults(task_set: TaskSet, root: str | Path) -> list[Path]:
    return [vault_path(root, spec) for spec in task_set.train if not vault_path(root, spec).is_dir()]


def check_vaults(task_set: TaskSet, root: str | Path) -> None:
    missing = missing_vaults(task_set, root)
    if missing:
        listing = "\n  ".join(str(p) for p in missing)
        raise UserInputError(
            f"{len(missing)} of {len(task_set.train)} training vault(s) of {task_set.name} are missing "
            f"under {root}:\n  {listing}\n"
            f"Get the data with `python -m mtmarl.hub download <url or hf://owner/repo/file.zip> "
            f"--to {root}` (one zip per vault), or generate it with the data collector, "
            f"or point data.root=<dir> at an existing vault root.")


def load_task_data(task_set: TaskSet, root: str | Path, uid: str | None = None,
                   verify: bool = True) -> list[dict[str, np.ndarray]]:
    """Per training task, time-major arrays in the form :func:`make_buffers` reads."""
    check_vaults(task_set, root)
    out = []
    for spec in task_set.train:
        exp = read_vault(vault_path(root, spec), spec, uid=uid, verify=verify)
        out.append({"obs": exp["observations"][0], "actions": exp["actions"][0],
                    "rewards": exp["rewards"][0], "terminals": exp["terminals"][0],
                    "truncations": exp["truncations"][0], "legals": exp["infos"]["legals"][0]})
    return out


def build_buffers(task_set: TaskSet, data: list[dict[str, Any]], seq_len: int) -> Buffers:
    """Buffers padded to the whole set (train and test), so evaluation shares the training shapes."""
    pad = task_set.padding
    return make_buffers(data, seq_len, num_agents=pad["num_agents"], obs_dim=pad["obs_dim"])
