"""Training data: the training tasks' vaults read into padded device buffers (all tasks, or a device's share)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mtmarl.data.batching import Buffers, make_buffers, with_slots
from mtmarl.data.vault import read_vault, resolve, task_dirname, vault_path
from mtmarl.errors import UserInputError
from mtmarl.tasks import TaskSet


def missing_tasks(task_set: TaskSet, root: str | Path) -> list:
    """Training tasks of the set without a vault under ``root``."""
    return [spec for spec in task_set.train if not vault_path(root, spec).is_dir()]


def check_vaults(task_set: TaskSet, root: str | Path, hub: str | None = None) -> None:
    missing = missing_tasks(task_set, root)
    if missing:
        listing = "\n  ".join(str(vault_path(root, spec)) for spec in missing)
        tried = f"data.hub={hub} did not provide them. " if hub else ""
        raise UserInputError(
            f"{len(missing)} of {len(task_set.train)} training vault(s) of {task_set.name} are missing "
            f"under {root}:\n  {listing}\n{tried}"
            f"Get the data with `python -m mtmarl.hub download <url or hf://owner/repo/file.zip> "
            f"--to {root}{bundled_flag(root)}` (one zip per vault) or data.hub=<source> (see "
            f"mtmarl/configs/train.yaml), generate it "
            f"with the data collector, or point data.root=<dir> at an existing vault root.")


def check_datasets(task_set: TaskSet, root: str | Path, quality: str | None) -> None:
    """Every training vault holds the dataset ``quality`` picks (``data.quality``: a uid such as SMAX's
    expert / medium; None: the vault's only one); checked before a run writes anything, the error naming
    the datasets a vault has."""
    check_vaults(task_set, root)
    for spec in task_set.train:
        resolve(vault_path(root, spec), quality)


def fetch_missing(task_set: TaskSet, root: str | Path, hub: str | None,
                  manifest: str | None = None) -> list[tuple[Path, str]]:
    """Download the training vaults missing under ``root`` from ``hub`` (``data.hub``) before training.

    ``hub`` is any :mod:`mtmarl.hub` source. With ``{env}`` / ``{task}`` placeholders it names one
    zip per task (e.g. ``https://host/vaults/{env}/{task}.zip``, ``ogmarl:alberdice/{env}/{task}``)
    and only missing tasks are fetched; without, it is one archive holding all of them.
    Present vaults are never touched; a failed download leaves ``root`` as it was. Vaults
    still missing afterwards raise :func:`check_vaults`' error, naming the source.
    """
    missing = missing_tasks(task_set, root)
    if not hub or not missing:
        return []
    from mtmarl import hub as hub_io

    if "{" not in hub:
        out = hub_io.download(hub, root, manifest=manifest)
    else:
        out = []
        for spec in missing:
            try:
                source = hub.format(env=spec.env, task=task_dirname(spec))
            except (KeyError, IndexError, ValueError) as err:
                raise UserInputError(f"data.hub={hub!r}: only {{env}} and {{task}} can be filled in "
                                     f"({err!r})") from None
            out += hub_io.download(source, root, manifest=manifest, env=spec.env)
    check_vaults(task_set, root, hub)
    return out


def load_task_data(task_set: TaskSet, root: str | Path, uid: str | None = None,
                   verify: bool = True, fraction: float = 1.0,
                   tasks: Sequence[int] | None = None) -> list[dict[str, np.ndarray]]:
    """Per training task (only those indexed by ``tasks`` if given, in that order), time-major arrays
    in the form :func:`make_buffers` reads.

    ``fraction`` < 1 keeps only the first part of each task's data (see :func:`take_fraction`).
    """
    check_vaults(task_set, root)
    out = []
    for spec in (task_set.train if tasks is None else [task_set.train[m] for m in tasks]):
        exp = read_vault(vault_path(root, spec), spec, uid=uid, verify=verify)
        out.append(take_fraction({"obs": exp["observations"][0], "actions": exp["actions"][0],
                                  "rewards": exp["rewards"][0], "terminals": exp["terminals"][0],
                                  "truncations": exp["truncations"][0], "legals": exp["infos"]["legals"][0]},
                                 fraction))
    return out


def data_fingerprint(task_set: TaskSet, root: str | Path, uid: str | None,
                     references: dict[str, float]) -> str:
    """A sha256 of what a run's results stand for besides its config: each training task's vault
    metadata (``mtmarl.json``, which holds a sha256 of every data file) and the reference return
    of every task of the set.

    Why: re-recording a set's vaults leaves every config unchanged, so without this the experiment
    runner would take results trained on the old data as finished (``mtmarl.experiments.runner``).
    """
    h = hashlib.sha256(f"uid={uid}".encode())
    for spec in task_set.train:
        meta = vault_path(root, spec) / "mtmarl.json"
        h.update(f"\n{spec.adhoc}\n".encode())
        h.update(meta.read_bytes() if meta.is_file() else b"(no metadata)")
    refs = {spec.adhoc: references.get(spec.adhoc) for spec in task_set.split("all")}
    h.update(json.dumps(refs, sort_keys=True).encode())
    return h.hexdigest()


def take_fraction(task: dict[str, np.ndarray], fraction: float) -> dict[str, np.ndarray]:
    """About ``fraction`` of a task's timesteps as whole episodes spread evenly over the vault, in order.

    Why evenly, not the first part: vaults are recorded at intervals from a learner, so they are ordered by
    quality (rware_15's small-4ag: mean episode return 0.0 in the first tenth of its episodes, 3.1 in the
    last). A prefix would be the worst data, and the dataset-size experiment would measure quality, not
    size. Episode i of n is kept when ``floor((i + 1) f) > floor(i f)``: about f n episodes (so about f of
    the steps), every stretch of the vault giving its share. At least one whole episode is kept;
    ``fraction=1`` returns the data unchanged; steps after the last episode end are dropped.
    """
    fraction = float(fraction)
    if not 0.0 < fraction <= 1.0:
        raise UserInputError(f"data.fraction must be in (0, 1], got {fraction}")
    length = task["obs"].shape[0]
    if fraction == 1.0 or length == 0:
        return task
    done = np.asarray(task["terminals"]).reshape(length, -1).any(1) | \
        np.asarray(task["truncations"]).reshape(length, -1).any(1)
    ends = np.flatnonzero(done) + 1                      # exclusive end of every episode
    if not ends.size:                                    # no episode ends: nothing whole to keep but a prefix
        return {k: v[: max(1, int(round(fraction * length)))] for k, v in task.items()}
    i = np.arange(ends.size)
    chosen = np.flatnonzero(np.floor((i + 1) * fraction) > np.floor(i * fraction))
    chosen = chosen if chosen.size else np.array([0])
    starts = np.r_[0, ends[:-1]]
    rows = np.concatenate([np.arange(starts[e], ends[e]) for e in chosen])
    return {k: v[rows] for k, v in task.items()}


def build_buffers(task_set: TaskSet, data: list[dict[str, Any]], seq_len: int, agents: str = "train") -> Buffers:
    """Buffers in the whole set's observation and action layout (train and test), so evaluation shares
    the network's input shapes; agent slots up to the largest training task (``agents="train"``,
    :attr:`TaskSet.train_spec`) or the whole set's (``"set"``: where padded agents are not masked, or
    where batches are mixed with env steps of the set's padded shape)."""
    if agents not in ("train", "set"):
        raise ValueError(f"agents must be 'train' or 'set', got {agents!r}")
    specs = [spec.build().spec for spec in task_set.train]
    return make_buffers(data, seq_len, specs=specs,
                        target=task_set.train_spec if agents == "train" else task_set.env_spec)


def build_shards(task_set: TaskSet, data: Sequence[dict[str, Any]], ids: Sequence[int], seq_len: int,
                 owners: Sequence[Sequence[int]], devices: Sequence[int], length: int,
                 compact: bool = True, agents: str = "train") -> list[Buffers]:
    """Task-shard buffers (``training.shard_data``) of each of ``devices`` (global device positions).

    ``data`` holds the tasks ``ids`` (at least every task those devices own); ``owners[g]`` lists
    the tasks of device ``g``. Every shard is padded to the same shapes: ``length`` steps (the
    longest task of the whole set, agreed between processes), the most tasks any device owns,
    and, with ``compact``, a code table of 256 entries (the limit of ``value_table``); agent slots
    as :func:`build_buffers` pads them.
    """
    target = task_set.train_spec if agents == "train" else task_set.env_spec
    where = {m: i for i, m in enumerate(ids)}
    slots = max(len(o) for o in owners)
    out = []
    for g in devices:
        mine = list(owners[g])
        buffers = make_buffers([data[where[m]] for m in mine], seq_len, compact=compact,
                               specs=[task_set.train[m].build().spec for m in mine], target=target,
                               length=length, table_size=256 if compact else None, host=True)
        out.append(with_slots(buffers, mine, slots))
    return out


def bundled_flag(root) -> str:
    """`` --write-bundled`` when ``root`` is the bundled data (the hub's command line asks for it there)."""
    from mtmarl.hub import DEFAULT_ROOT

    return " --write-bundled" if Path(root).resolve().is_relative_to(DEFAULT_ROOT.resolve()) else ""
