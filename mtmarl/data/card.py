"""The data card of a collected task set: ``python -m mtmarl.data card <task set> [--root R] [--out DIR]``.

Why: a collection claims data from across each learner's curve and a trustworthy reference per task; the card
shows both at a glance, for the bundled data or any other root, generated rather than typed.

* **Tasks** (train, then test): the reference entry (untrained and final online return, env steps, ``collect s``
  = the logged ``train_seconds``: online training with its recordings, compiles included, or the whole
  scripted-planner task) beside the training vault's metadata (transitions, episodes, mean episode return, that
  mean on the task's untrained (0) to final (1) scale, size on disk), and a line of totals.
* **Datasets**, when a vault holds several (``collect.quality=expert_medium``): per dataset its episodes,
  transitions and mean return, the share of its episodes won (counted when recorded), the win rate its policy
  scored when it was chosen (``collect.quality_episodes`` greedy episodes), and the HyGen paper's SMAC dataset of
  the same map and quality. Returns are not comparable across the two (SMAC's scale is 0-20, SMAX's about 0-2);
  win rates are. A column no dataset fills is left out.

Both tables read metadata only, so the card is instant even on the full-size data. ``--out DIR`` writes them to
``DIR/<set>.md`` beside two figures: ``<set>_returns.png`` (the episode returns of every training vault, read from
its arrays, with the untrained and final returns marked) and ``<set>_curves.png`` (the collector's training
return against env steps, from ``<root>/logs``; the scripted RWARE planner logs one point per epsilon level).
Per-vault statistics from the arrays (return quantiles, ``--validate``): :mod:`mtmarl.data.stats`.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

from mtmarl.data import vault as V
from mtmarl.errors import UserInputError
from mtmarl.evaluation.references import read_entries

# The HyGen paper, Table 5: trajectories, win rate (%) and mean return of its SMAC datasets (ODIS's).
HYGEN_SMAC_DATASETS: dict[tuple[str, str], tuple[int, float, float]] = {
    ("3m", "expert"): (2000, 99.10, 19.8929), ("3m", "medium"): (2000, 54.02, 13.9869),
    ("5m_vs_6m", "expert"): (2000, 71.85, 17.3424), ("5m_vs_6m", "medium"): (2000, 27.51, 12.6408),
    ("9m_vs_10m", "expert"): (2000, 94.31, 19.6140), ("9m_vs_10m", "medium"): (2000, 41.46, 15.5049),
    ("2s3z", "expert"): (2000, 96.02, 19.7655), ("2s3z", "medium"): (2000, 44.65, 16.6279),
    ("2s4z", "expert"): (2000, 95.09, 19.7402), ("2s4z", "medium"): (2000, 49.65, 16.8735),
    ("3s5z", "expert"): (2000, 95.18, 19.7850), ("3s5z", "medium"): (2000, 31.14, 16.3126),
}

TASK_COLUMNS = (("task", "task"), ("split", "split"), ("initial", "initial return"), ("final", "final return"),
                ("env_steps", "env steps"), ("seconds", "collect s"), ("steps_per_s", "steps/s"),
                ("transitions", "transitions"), ("episodes", "episodes"), ("data_mean", "data mean return"),
                ("data_norm", "data mean normalised"), ("mib", "vault MiB"))
DATASET_COLUMNS = (("task", "task"), ("uid", "quality"), ("episodes", "episodes"), ("transitions", "transitions"),
                   ("mean_return", "mean return"), ("data_win", "data win %"), ("policy_win", "policy win %"),
                   ("paper_episodes", "the HyGen paper trajectories"), ("paper_win", "the HyGen paper win %"),
                   ("paper_return", "the HyGen paper return (SMAC scale)"), ("mib", "MiB"))
FORMATS = {"initial": ".3f", "final": ".3f", "data_mean": ".3f", "mean_return": ".3f", "data_norm": ".2f",
           "paper_return": ".2f", "data_win": ".1f", "policy_win": ".1f", "paper_win": ".1f", "mib": ".1f"}


def dir_mib(path: Path) -> float:
    """Bytes of every file under ``path``, in MiB."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def _datasets(vlt: Path) -> dict[str, Any]:
    return (V.read_metadata(vlt) or {}).get("datasets", {}) if V.list_uids(vlt) else {}


def normalised(x: float | None, initial: float | None, final: float | None) -> float | None:
    """``x`` on the task's untrained (0) to final (1) scale: the quality mix of a vault at a glance
    (near 1: mostly expert data, little for offline RL to improve on over BC)."""
    if x is None or initial is None or final is None or final == initial:
        return None
    return (x - initial) / (final - initial)


def task_rows(set_name: str, root: str | os.PathLike, references: str | os.PathLike | None = None
              ) -> list[dict[str, Any]]:
    """One row per task (train then test); a training task's vault columns are None when it has no vault."""
    from mtmarl import tasks

    root = Path(root)
    entries = read_entries(references or root / "references.json")
    rows = []
    for split in ("train", "test"):
        for spec in tasks.load(set_name).split(split):
            entry = entries.get(spec.adhoc) or entries.get(spec.name) or {}
            seconds, steps = entry.get("train_seconds"), entry.get("env_steps")
            row = {"task": spec.name, "split": split, "initial": entry.get("initial_return"),
                   "final": entry.get("return"), "env_steps": steps, "seconds": seconds,
                   "steps_per_s": round(steps / seconds) if steps and seconds else None, "has_reference": bool(entry)}
            if split == "train":
                vlt = V.vault_path(root, spec)
                datasets = _datasets(vlt)
                row["has_vault"] = bool(V.list_uids(vlt))
                if datasets:
                    episodes = sum(d["returns"]["episodes"] for d in datasets.values())
                    row.update(transitions=sum(d["transitions"] for d in datasets.values()), episodes=episodes,
                               data_mean=(sum(d["returns"]["mean"] * d["returns"]["episodes"]
                                              for d in datasets.values()) / episodes if episodes else None))
                if row["has_vault"]:
                    row["mib"] = dir_mib(vlt)
                row["data_norm"] = normalised(row.get("data_mean"), row["initial"], row["final"])
            rows.append(row)
    return rows


def dataset_rows(set_name: str, root: str | os.PathLike) -> list[dict[str, Any]]:
    """One row per dataset (uid) of every training task's vault."""
    from mtmarl import tasks

    rows = []
    for spec in tasks.load(set_name).train:
        vlt = V.vault_path(Path(root), spec)
        for uid, d in sorted(_datasets(vlt).items()):
            coll = d.get("collector", {})
            wins = coll.get("data_wins", {}).get(uid, {})
            policy = coll.get("expert_score") if uid == "expert" else coll.get("medium_score")
            paper = HYGEN_SMAC_DATASETS.get((spec.name, uid), (None, None, None))
            rows.append({"task": spec.name, "uid": uid, "episodes": d["returns"]["episodes"],
                         "transitions": d["transitions"], "mean_return": d["returns"]["mean"],
                         "data_win": 100 * wins["win_rate"] if wins else None,
                         "policy_win": 100 * policy if policy is not None and wins else None,
                         "paper_episodes": paper[0], "paper_win": paper[1], "paper_return": paper[2],
                         "mib": dir_mib(vlt / uid)})
    return rows


def totals(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Summed seconds, env steps, transitions and MiB, and the tasks lacking a reference or vault."""
    def total(key):
        return sum(r.get(key) or 0 for r in rows)
    return {"tasks": len(rows), "seconds": total("seconds"), "env_steps": total("env_steps"),
            "transitions": total("transitions"), "mib": total("mib"),
            "no_reference": [r["task"] for r in rows if not r["has_reference"]],
            "no_vault": [r["task"] for r in rows if r["split"] == "train" and not r["has_vault"]]}


def total_line(t: dict[str, Any]) -> str:
    line = (f"{t['tasks']} tasks: {t['seconds'] / 60:.1f} min of collection (sum of per-task seconds), "
            f"{t['env_steps']:,} env steps, {t['transitions']:,} transitions, {t['mib']:.1f} MiB of vaults")
    if t["no_reference"]:
        line += f"; no reference: {', '.join(t['no_reference'])}"
    if t["no_vault"]:
        line += f"; no vault: {', '.join(t['no_vault'])}"
    return line


def _fmt(key: str, x: Any) -> str:
    if x is None:
        return ""
    if key in FORMATS:
        return format(x, FORMATS[key])
    if isinstance(x, float):
        return f"{x:,.0f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


def cells(columns, rows: Sequence[dict[str, Any]]) -> list[list[str]]:
    return [[_fmt(k, r.get(k)) for k, _ in columns] for r in rows]


def shown_datasets(datasets: Sequence[dict[str, Any]]):
    """The dataset table's columns, or None when no vault holds more than one dataset (the task table says it)."""
    if len(datasets) <= len({r["task"] for r in datasets}):
        return None
    return [(k, h) for k, h in DATASET_COLUMNS if any(r.get(k) is not None for r in datasets)]


def _markdown_table(columns, rows) -> str:
    head = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(head + ["| " + " | ".join(c) + " |" for c in cells(columns, rows)])


def markdown(tasks: Sequence[dict[str, Any]], datasets: Sequence[dict[str, Any]] = ()) -> str:
    """The card as Markdown: the task table and its totals, then the dataset table when there is one."""
    parts = [_markdown_table(TASK_COLUMNS, tasks), total_line(totals(tasks))]
    columns = shown_datasets(datasets)
    return "\n\n".join(parts + ([_markdown_table(columns, datasets)] if columns else []))


def print_card(tasks: Sequence[dict[str, Any]], datasets: Sequence[dict[str, Any]], title: str) -> None:
    from mtmarl.data.stats import rich_table

    console = rich_table(title, [h for _, h in TASK_COLUMNS], cells(TASK_COLUMNS, tasks))
    console.print(total_line(totals(tasks)), markup=False)
    columns = shown_datasets(datasets)
    if columns:
        rich_table(f"{title}: datasets", [h for _, h in columns], cells(columns, datasets))


# ------------------------------------------------------------------------------------------ figures
def _grid(n: int, title: str):
    import matplotlib.pyplot as plt

    cols = min(5, n)
    fig, axes = plt.subplots(math.ceil(n / cols), cols, figsize=(3.0 * cols, 2.3 * math.ceil(n / cols)),
                             squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    return fig, list(axes.flat[:n])


def plot_returns(task_set, rows, root: Path, out: Path, verify: bool) -> None:
    from mtmarl.data.stats import vault_stats
    from mtmarl.runtime import save_figure

    by_task = {r["task"]: r for r in rows}
    fig, axes = _grid(len(task_set.train), f"{task_set.name}: episode returns in each training vault "
                      "(log count; dashed: untrained policy, solid: final online return)")
    for ax, spec in zip(axes, task_set.train):
        ax.set_title(spec.name, fontsize=8)
        if not V.list_uids(V.vault_path(root, spec)):
            ax.text(0.5, 0.5, "no vault", ha="center", transform=ax.transAxes)
            continue
        returns = [x for row in vault_stats(V.vault_path(root, spec), verify=verify) for x in row["returns"]]
        ax.hist(returns, bins=30, color="tab:blue", alpha=0.7, log=True)
        for key, style in (("initial", "--"), ("final", "-")):
            if by_task[spec.name].get(key) is not None:
                ax.axvline(by_task[spec.name][key], color="k", ls=style, lw=1)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    save_figure(fig, out)


def plot_curves(task_set, root: Path, out: Path) -> None:
    from mtmarl.runtime import save_figure

    specs = list(task_set.train) + list(task_set.test)
    fig, axes = _grid(len(specs), f"{task_set.name}: training return of the collector vs env steps, or per "
                      "epsilon level of the scripted planner (train tasks blue, test tasks red)")
    for ax, spec in zip(axes, specs):
        log = root / "logs" / spec.env / f"{V.task_dirname(spec)}.jsonl"
        ax.set_title(spec.name, fontsize=8)
        if not log.is_file():
            ax.text(0.5, 0.5, "no log", ha="center", transform=ax.transAxes)
            continue
        points = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        points = [p for p in points if p.get("return") is not None]
        scripted = all("epsilon" in p for p in points)  # one point per epsilon level, not a learner
        xs = range(len(points)) if scripted else [p["env_steps"] for p in points]
        ax.plot(xs, [p["return"] for p in points], color="tab:blue" if spec in task_set.train else "tab:red",
                lw=1.2, marker="o" if scripted else None, ms=3)
        if scripted:
            ax.set_xticks(list(xs), [f"{p['epsilon']:g}" for p in points])
            ax.set_xlabel("epsilon of the recorded level", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.xaxis.get_offset_text().set_fontsize(7)
    fig.tight_layout()
    save_figure(fig, out)


def write_card(set_name: str, root: str | os.PathLike, out: str | os.PathLike,
               references: str | os.PathLike | None = None, verify: bool = True) -> list[Path]:
    """``<out>/<set>.md``, ``<set>_returns.png`` and ``<set>_curves.png``; returns their paths."""
    import matplotlib

    from mtmarl import tasks

    matplotlib.use("Agg")
    task_set, root, out = tasks.load(set_name), Path(root), Path(out)
    rows = task_rows(set_name, root, references)
    paths = [out / f"{task_set.name}{suffix}" for suffix in (".md", "_returns.png", "_curves.png")]
    try:
        out.mkdir(parents=True, exist_ok=True)
        paths[0].write_text(markdown(rows, dataset_rows(set_name, root)) + "\n")
        plot_returns(task_set, rows, root, paths[1], verify)
        plot_curves(task_set, root, paths[2])
    except OSError as err:
        raise UserInputError(f"--out {out}: cannot write the card there ({err.strerror or err})") from None
    return paths
