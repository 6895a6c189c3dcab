"""A cut of a vault: every dataset's first ``n`` completed episodes, written as a vault of its own.

Why: a collection of a paper's size (2000 episodes per dataset) is too large to bundle; the bundled data keep a
cut of it, and the cut must say what it is. Each dataset of the cut keeps its collector metadata with
``cut = {episodes, of_episodes, of_transitions}``; where the env makes a win readable from an episode's return
(``WIN_RETURN`` of its class), the datasets' win counts (``data_wins``) are recounted on the episodes kept, else
dropped (a count of the whole dataset would not describe the cut).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from mtmarl.data.vault.check import read_metadata
from mtmarl.data.vault.layout import list_uids, vault_path
from mtmarl.data.vault.read import read_vault
from mtmarl.data.vault.returns import episode_ends, episode_returns
from mtmarl.data.vault.write import write_vault
from mtmarl.errors import UserInputError


def _first_episodes(exp: dict[str, Any], n: int) -> tuple[dict[str, Any], int, int]:
    """(the stream cut after its ``n``-th episode end, episodes kept, episodes there were)."""
    ends = np.flatnonzero(episode_ends(exp)[0])
    if len(ends) <= n:
        return exp, len(ends), len(ends)
    stop = int(ends[n - 1]) + 1

    def cut(x):
        return {k: cut(v) for k, v in x.items()} if isinstance(x, dict) else np.asarray(x)[:, :stop]

    return cut(exp), n, len(ends)


def write_cut(src: str | os.PathLike, dest_root: str | os.PathLike, max_episodes: int) -> Path:
    """Write the first ``max_episodes`` episodes of every dataset of the vault ``src`` (a ``.vlt`` directory)
    to ``<dest_root>/<env>/<task>.vlt``; returns that path."""
    from mtmarl.envs import env_class
    from mtmarl.tasks import TaskSpec

    if isinstance(max_episodes, bool) or not isinstance(max_episodes, int) or max_episodes < 1:
        raise UserInputError(f"max_episodes={max_episodes!r} is not allowed: want an integer >= 1")
    vlt = Path(src)
    meta = read_metadata(vlt)
    if meta is None:
        raise UserInputError(f"vault {vlt} has no metadata (mtmarl.json): its task cannot be known")
    task = meta["task"]
    spec = TaskSpec.create(task["env"], task["params"], label=vlt.name.removesuffix(".vlt"))
    win_return = env_class(spec.env).WIN_RETURN
    cuts, wins = {}, {}
    for uid in list_uids(vlt):
        exp, kept, total = _first_episodes(read_vault(vlt, spec, uid=uid), max_episodes)
        cuts[uid] = (exp, {"episodes": kept, "of_episodes": total,
                           "of_transitions": int(meta["datasets"][uid]["transitions"])})
        if win_return is not None:
            won = int((episode_returns(exp) > win_return).sum())
            wins[uid] = {"episodes": kept, "wins": won, "win_rate": won / max(kept, 1)}
    for uid, (exp, cut) in cuts.items():
        collector = dict(meta["datasets"][uid].get("collector") or {})
        collector["cut"] = cut
        if "data_wins" in collector:
            if wins:
                collector["data_wins"] = {u: wins[u] for u in collector["data_wins"] if u in wins}
            else:
                del collector["data_wins"]
        write_vault(dest_root, spec, exp, collector, uid=uid, overwrite=True)
    return vault_path(dest_root, spec)
