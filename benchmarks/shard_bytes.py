"""Training-data bytes each device holds, replicated vs ``training.shard_data=true``.

    python benchmarks/shard_bytes.py --tasks rware_15 lbf_5 connector_10 --devices 2 4 8 \\
        --out benchmarks/results/shard_bytes.json

Builds the buffers the trainer builds from the bundled vaults (``data.root``) both ways, for each device
count, and reports the bytes of one device's buffers (every array of :class:`~mtmarl.data.batching.Buffers`).
Numpy only (no device placement), so any device count can be asked for on one machine. Why it matters:
with replicated buffers every device holds every task; with shards a device holds only its tasks padded to
the shard shapes (the longest task of the whole set, the most tasks any device owns).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from mtmarl.data.batching import shard_tasks
from mtmarl.tasks import load
from mtmarl.training.data import build_buffers, build_shards, load_task_data

SEQ_LEN = 20  # the default budget's sequence length


def nbytes(buffers) -> int:
    return int(sum(np.asarray(x).nbytes for x in buffers if x is not None))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["rware_15", "lbf_5", "connector_10"])
    parser.add_argument("--devices", nargs="+", type=int, default=[2, 4, 8])
    parser.add_argument("--root", default="vault_data")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    rows = []
    for name in args.tasks:
        task_set = load(name)
        data = load_task_data(task_set, args.root, verify=False)
        ids = list(range(len(task_set.train)))
        length = max(d["obs"].shape[0] for d in data)
        replicated = nbytes(build_buffers(task_set, data, SEQ_LEN))
        for d in args.devices:
            if d > len(ids):
                continue
            owners = shard_tasks(len(ids), d)
            shards = build_shards(task_set, data, ids, SEQ_LEN, owners, list(range(d)), length)
            per = [nbytes(s) for s in shards]
            rows.append({"set": name, "tasks": len(ids), "devices": d, "replicated_mib": replicated / 2**20,
                         "shard_mib_max": max(per) / 2**20, "shard_mib_min": min(per) / 2**20,
                         "ratio_max": max(per) / replicated})
            print(f"{name:13s} D={d}: replicated {replicated / 2**20:8.1f} MiB per device, "
                  f"shard {min(per) / 2**20:7.1f}-{max(per) / 2**20:7.1f} MiB ({max(per) / replicated:.2f}x)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
