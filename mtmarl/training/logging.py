"""Training logs: ``metrics.jsonl`` in the run directory, Neptune, and a rich progress bar.

Neptune runs ``offline`` by default (files under ``<run dir>/.neptune``, upload
later with ``neptune sync``); with a project and API token (config or the
``NEPTUNE_PROJECT`` / ``NEPTUNE_API_TOKEN`` environment variables) it logs
``async`` to the server; ``logger.neptune=false`` turns it off.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Mapping


_USER_NEPTUNE_DIR = os.environ.get("NEPTUNE_DATA_DIRECTORY")  # respected when the user set it


class RunLogger:
    def __init__(self, run_dir: str | Path, total_updates: int, *, neptune: bool = True,
                 project: str | None = None, token: str | None = None, mode: str | None = None,
                 tags: tuple[str, ...] = (), config: Mapping[str, Any] | None = None,
                 progress: bool = True, start: int = 0, resume_file: bool = False):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / "metrics.jsonl"
        self._file = self.path.open("a" if resume_file else "w")
        self.t0 = time.perf_counter()
        self.latest: dict[str, float] = {}
        self.neptune_run = None
        if neptune:
            self.neptune_run = _init_neptune(self.run_dir, project, token, mode, tags, config)
        self._progress = None
        if progress:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self._progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), TimeRemainingColumn(),
                                      TextColumn("{task.fields[info]}"))
            self._job = self._progress.add_task("train", total=total_updates, completed=start, info="")
            self._progress.start()

    def log(self, step: int, metrics: Mapping[str, Any], prefix: str = "train") -> None:
        """One record at update ``step``: keys become ``<prefix>/<key>``."""
        flat = {f"{prefix}/{k}": _num(v) for k, v in metrics.items()}
        record = {"step": int(step), "time": round(time.perf_counter() - self.t0, 3), **flat}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        self.latest.update(flat)
        if self.neptune_run is not None:
            for k, v in flat.items():
                if isinstance(v, (int, float)):
                    self.neptune_run[k].append(v, step=int(step))

    def advance(self, step: int) -> None:
        if self._progress is None:
            return
        shown = []
        for key in ("train/loss", "train/critic_loss", "train/policy_loss", "eval/train_return",
                    "eval/test_return"):
            if key in self.latest:
                shown.append(f"{key.split('/', 1)[1]}={self.latest[key]:.3g}")
        self._progress.update(self._job, completed=step, info=" ".join(shown))

    def set_summary(self, key: str, value: Any) -> None:
        if self.neptune_run is not None:
            self.neptune_run[key] = value

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        self._file.close()
        if self.neptune_run is not None:
            self.neptune_run.stop()
            self.neptune_run = None


def _num(v: Any) -> Any:
    """Floats where possible; NaN/inf become None so metrics.jsonl stays strict JSON."""
    try:
        v = float(v)
    except (TypeError, ValueError):
        return v
    return v if math.isfinite(v) else None


def _init_neptune(run_dir: Path, project, token, mode, tags, config):
    import neptune
    from neptune.utils import stringify_unsupported

    project = project or os.environ.get("NEPTUNE_PROJECT")
    token = token or os.environ.get("NEPTUNE_API_TOKEN")
    if mode is None:
        mode = "async" if project and token else "offline"
    if _USER_NEPTUNE_DIR is None:
        os.environ["NEPTUNE_DATA_DIRECTORY"] = str(run_dir / ".neptune")
    kwargs = {"mode": mode, "tags": list(tags), "capture_stdout": False, "capture_stderr": False,
              "capture_hardware_metrics": False, "source_files": []}
    if mode != "offline":
        kwargs.update(project=project, api_token=token)
    run = neptune.init_run(**kwargs)
    if config:
        run["config"] = stringify_unsupported(dict(config))
    return run
