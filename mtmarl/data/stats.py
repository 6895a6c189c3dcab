"""Per-vault statistics read from the arrays: transitions, episodes and the episode-return distribution.

``python -m mtmarl.data stats <vault path | task set | ad-hoc task> [--hist out.png] [--validate]``
prints one row per dataset (a ``.vlt`` may hold several uids, e.g. og-marl's
Good/Medium/Poor). For a task set, each training task's vault is looked up at
``<root>/<env>/<task name>.vlt`` and missing ones are listed. The data card of a task set
(references, collection cost, datasets by quality, figures) is :mod:`mtmarl.data.card`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mtmarl.data import vault as V
from mtmarl.errors import UserInputError

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "vault_data"


def summarise(returns: np.ndarray) -> dict[str, Any]:
    """Episodes and mean/std/min/max/quantiles of episode returns (None when there are none)."""
    out = V.return_stats(returns)
    returns = np.asarray(returns, np.float64)
    for q in QUANTILES:
        out[f"q{int(q * 100):02d}"] = float(np.quantile(returns, q)) if returns.size else None
    return out


def vault_stats(path: str | os.PathLike, spec=None, *, verify: bool = True) -> list[dict[str, Any]]:
    """One row of statistics per dataset of a ``.vlt`` (or uid) directory."""
    path = Path(path)
    if (path / V.FBX_META_FILE).is_file():
        uids = [path.name]
        path = path.parent
    else:
        uids = V.list_uids(path)
        if not uids:
            V.resolve(path)  # raises with the reason
    rows = []
    for uid in uids:
        desc = V.describe_vault(path, spec, uid=uid, verify=verify)
        rows.append({**desc, **summarise(desc["returns"])})
    return rows


def set_stats(name: str, root: str | os.PathLike, *, verify: bool = True,
              validate: bool = False) -> tuple[list[dict[str, Any]], list[str]]:
    """Statistics of every training task's datasets of a task set (or an ad-hoc task), and missing vault paths."""
    from mtmarl import tasks

    task_set = tasks.load(name)
    rows, missing = [], []
    for spec in task_set.train:
        vlt = V.vault_path(root, spec)
        if not V.list_uids(vlt):
            missing.append(f"{spec.name}: {vlt}")
            continue
        for row in vault_stats(vlt, spec if validate else None, verify=verify):
            row["task"] = spec.name
            rows.append(row)
    return rows, missing


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


COLUMNS = ("task", "uid", "transitions", "episodes", "mean", "std", "min", "q05", "q25", "q50", "q75",
           "q95", "max")


def rich_table(title: str, headers: Sequence[str], cells: Sequence[Sequence[str]], left: int = 2):
    """A wide rich console and a table of ``cells`` (the first ``left`` columns left-aligned)."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(160, Console().width))
    table = Table(title=title)
    for i, head in enumerate(headers):
        table.add_column(head, justify="left" if i < left else "right")
    for row in cells:
        table.add_row(*row)
    console.print(table)
    return console


def print_table(rows: Sequence[dict[str, Any]], title: str, missing: Sequence[str] = ()) -> None:
    console = rich_table(title, COLUMNS, [[_fmt(row.get(col)) for col in COLUMNS] for row in rows])
    if missing:
        console.print(f"[bold red]missing vaults ({len(missing)}):[/]")
        for line in missing:
            console.print(f"  {line}", markup=False)


def save_histogram(rows: Sequence[dict[str, Any]], out: str | os.PathLike, bins: int = 30) -> Path:
    """Histogram of episode returns, one series per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for row in rows:
        if len(row["returns"]):
            ax.hist(row["returns"], bins=bins, alpha=0.5, label=f"{row['task']}/{row['uid']}")
    ax.set_xlabel("episode return")
    ax.set_ylabel("episodes")
    if len(rows) <= 12:
        ax.legend(fontsize="small")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def target_stats(target: str, root: str | os.PathLike, *, verify: bool = True,
                 validate: bool = False) -> tuple[list[dict[str, Any]], list[str]]:
    """Statistics of a vault path, else of a task set / ad-hoc task name; ``validate`` also checks the
    arrays against the task's env (the one ``mtmarl.json`` records, for a path)."""
    path = Path(target)
    if path.exists():
        spec = None
        if validate:
            from mtmarl.tasks import TaskSpec

            vlt = path if not (path / V.FBX_META_FILE).is_file() else path.parent
            meta = V.read_metadata(vlt)
            if meta is None:
                raise UserInputError(f"--validate needs {vlt / V.META_FILE} to know the task")
            spec = TaskSpec.parse(V.recorded_task(vlt, meta))
        return vault_stats(path, spec, verify=verify), []
    if "/" in target or target.endswith(".vlt"):
        raise UserInputError(f"vault {target} does not exist")
    return set_stats(target, root, verify=verify, validate=validate)
