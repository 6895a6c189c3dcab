"""Collection report: per task of a set, the reference entry beside the task's vault.

``python -m mtmarl.data report <task set> [--root vault_data] [--markdown]`` joins
``references.json`` (untrained and final online return, env steps, seconds) with each
training task's ``mtmarl.json`` (transitions, episodes, mean return) and its size on
disk, so the per-task tables of a data card are generated rather than typed. It reads
metadata only (no arrays), so it is instant even on the full-size data. ``collect s`` is
the task's logged ``train_seconds``: online training with its recordings (compilation
included), or the whole scripted-planner task.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from mtmarl.data import vault as V
from mtmarl.evaluation.references import read_entries

COLUMNS = (("task", "task"), ("split", "split"), ("initial", "initial return"), ("final", "final return"),
           ("env_steps", "env steps"), ("seconds", "collect s"), ("steps_per_s", "steps/s"),
           ("transitions", "transitions"), ("episodes", "episodes"), ("data_mean", "data mean return"),
           ("data_norm", "data mean normalised"), ("mib", "vault MiB"))


def dir_mib(path: Path) -> float:
    """Bytes of every file under ``path``, in MiB."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def task_rows(set_name: str, root: str | os.PathLike, references: str | os.PathLike | None = None
              ) -> list[dict[str, Any]]:
    """One row per task (train then test); a train task's vault columns are None when it is missing."""
    from mtmarl import tasks

    root = Path(root)
    entries = read_entries(references or root / "references.json")
    task_set = tasks.load(set_name)
    rows = []
    for split in ("train", "test"):
        for spec in task_set.split(split):
            entry = entries.get(spec.adhoc) or entries.get(spec.name) or {}
            seconds, steps = entry.get("train_seconds"), entry.get("env_steps")
            row = {"task": spec.name, "split": split, "initial": entry.get("initial_return"),
                   "final": entry.get("return"), "env_steps": steps, "seconds": seconds,
                   "steps_per_s": round(steps / seconds) if steps and seconds else None,
                   "has_reference": bool(entry)}
            if split == "train":
                row.update(vault_columns(V.vault_path(root, spec)))
                row["data_norm"] = normalised(row.get("data_mean"), row["initial"], row["final"])
            rows.append(row)
    return rows


def normalised(x: float | None, initial: float | None, final: float | None) -> float | None:
    """``x`` on the task's untrained (0) to final (1) scale: the quality mix of a vault at a glance
    (near 1: mostly expert data, little for offline RL to improve on over BC)."""
    if x is None or initial is None or final is None or final == initial:
        return None
    return (x - initial) / (final - initial)


def vault_columns(vlt: Path) -> dict[str, Any]:
    if not V.list_uids(vlt):
        return {"has_vault": False}
    datasets = (V.read_metadata(vlt) or {}).get("datasets", {})
    episodes = sum(d["returns"]["episodes"] for d in datasets.values()) if datasets else None
    mean = (sum(d["returns"]["mean"] * d["returns"]["episodes"] for d in datasets.values()) / episodes
            if episodes else None)
    return {"has_vault": True, "transitions": sum(d["transitions"] for d in datasets.values()) if datasets else None,
            "episodes": episodes, "data_mean": mean, "mib": dir_mib(vlt)}


def totals(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Summed seconds, env steps, transitions and MiB, and the tasks lacking a reference or vault."""
    def total(key):
        return sum(r.get(key) or 0 for r in rows)
    return {"tasks": len(rows), "seconds": total("seconds"), "env_steps": total("env_steps"),
            "transitions": total("transitions"), "mib": total("mib"),
            "no_reference": [r["task"] for r in rows if not r["has_reference"]],
            "no_vault": [r["task"] for r in rows if r["split"] == "train" and not r["has_vault"]]}


def _fmt(key: str, x: Any) -> str:
    if x is None:
        return ""
    if key == "mib":
        return f"{x:.1f}"
    if isinstance(x, float):
        return f"{x:.3f}" if key in ("initial", "final", "data_mean") else f"{x:.2f}" if key == "data_norm" else f"{x:,.0f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


def total_line(t: dict[str, Any]) -> str:
    line = (f"{t['tasks']} tasks: {t['seconds'] / 60:.1f} min of collection (sum of per-task seconds), "
            f"{t['env_steps']:,} env steps, {t['transitions']:,} transitions, {t['mib']:.1f} MiB of vaults")
    if t["no_reference"]:
        line += f"; no reference: {', '.join(t['no_reference'])}"
    if t["no_vault"]:
        line += f"; no vault: {', '.join(t['no_vault'])}"
    return line


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(h for _, h in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_fmt(k, r.get(k)) for k, _ in COLUMNS) + " |" for r in rows]
    return "\n".join(lines + ["", total_line(totals(rows))])


def print_table(rows: Sequence[dict[str, Any]], title: str) -> None:
    from mtmarl.data.stats import rich_table

    console = rich_table(title, [h for _, h in COLUMNS], [[_fmt(k, r.get(k)) for k, _ in COLUMNS] for r in rows])
    console.print(total_line(totals(rows)), markup=False)
