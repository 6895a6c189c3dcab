"""Data card of expert/medium datasets (``collect.quality=expert_medium``) beside the HyGen paper's Table 5.

``python -m mtmarl.data quality <task set> [--root vault_data] [--markdown]``: one row per
training task and dataset: its episodes and transitions, the mean episode return and the
share of its episodes that were won (both from the recording itself), the win rate the
recorded policy scored when it was chosen (``collect.quality_episodes`` greedy episodes),
and the HyGen paper's numbers for the SMAC dataset of the same map and quality. Returns are not
comparable across the two (SMAC's scale is 0-20, SMAX's about 0-2); win rates are.
Metadata only, no arrays.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from mtmarl.data import vault as V

# The HyGen paper (HyGen), Table 5: trajectories, win rate (%) and mean return of the SMAC datasets (from ODIS).
SEED002_TABLE5: dict[tuple[str, str], tuple[int, float, float]] = {
    ("3m", "expert"): (2000, 99.10, 19.8929), ("3m", "medium"): (2000, 54.02, 13.9869),
    ("5m_vs_6m", "expert"): (2000, 71.85, 17.3424), ("5m_vs_6m", "medium"): (2000, 27.51, 12.6408),
    ("9m_vs_10m", "expert"): (2000, 94.31, 19.6140), ("9m_vs_10m", "medium"): (2000, 41.46, 15.5049),
    ("2s3z", "expert"): (2000, 96.02, 19.7655), ("2s3z", "medium"): (2000, 44.65, 16.6279),
    ("2s4z", "expert"): (2000, 95.09, 19.7402), ("2s4z", "medium"): (2000, 49.65, 16.8735),
    ("3s5z", "expert"): (2000, 95.18, 19.7850), ("3s5z", "medium"): (2000, 31.14, 16.3126),
}

COLUMNS = (("task", "task"), ("uid", "quality"), ("episodes", "episodes"), ("transitions", "transitions"),
           ("mean_return", "mean return"), ("data_win", "data win %"), ("policy_win", "policy win %"),
           ("paper_episodes", "the HyGen paper trajectories"), ("paper_win", "the HyGen paper win %"),
           ("paper_return", "the HyGen paper return (SMAC scale)"), ("mib", "MiB"))


def quality_rows(set_name: str, root: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows (task, uid) for every training task's datasets; a task without a vault gets one empty row."""
    from mtmarl import tasks
    from mtmarl.data.report import dir_mib

    rows = []
    for spec in tasks.load(set_name).train:
        vlt = V.vault_path(Path(root), spec)
        datasets = (V.read_metadata(vlt) or {}).get("datasets", {}) if V.list_uids(vlt) else {}
        if not datasets:
            rows.append({"task": spec.name, "uid": None})
        for uid, d in sorted(datasets.items()):
            coll = d.get("collector", {})
            wins = coll.get("data_wins", {}).get(uid, {})
            policy = coll.get("expert_score") if uid == "expert" else coll.get("medium_score")
            paper = SEED002_TABLE5.get((spec.name, uid))
            rows.append({"task": spec.name, "uid": uid, "episodes": d["returns"]["episodes"],
                         "transitions": d["transitions"], "mean_return": d["returns"]["mean"],
                         "data_win": 100 * wins["win_rate"] if wins else None,
                         "policy_win": 100 * policy if policy is not None and wins else None,
                         "paper_episodes": paper[0] if paper else None, "paper_win": paper[1] if paper else None,
                         "paper_return": paper[2] if paper else None, "mib": dir_mib(vlt / uid)})
    return rows


def _fmt(key: str, x: Any) -> str:
    if x is None:
        return ""
    if key in ("data_win", "policy_win", "paper_win"):
        return f"{x:.1f}"
    if key in ("mean_return", "paper_return"):
        return f"{x:.3f}" if key == "mean_return" else f"{x:.2f}"
    if key == "mib":
        return f"{x:.1f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


def cells(rows: Sequence[dict[str, Any]]) -> list[list[str]]:
    return [[_fmt(k, r.get(k)) for k, _ in COLUMNS] for r in rows]


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(h for _, h in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in cells(rows)])
