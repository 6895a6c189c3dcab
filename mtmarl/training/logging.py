"""Training logs: ``metrics.jsonl`` and TensorBoard event files in the run directory, the learning-curve
picture, Neptune when a project is configured, and a rich progress bar that names the run's phase.

Every scalar row goes to ``metrics.jsonl`` and, under the same name and update, to
TensorBoard (tensorboardX; ``tensorboard --logdir <run dir or its parent>``). A resumed
run's event files purge the updates after its checkpoint, as ``metrics.jsonl`` drops them.
``curves.png`` is redrawn after every evaluation and when the logger closes
(also on an interrupted run); a failed drawing only warns.

Neptune (``logger.neptune``, the optional extra ``mtmarl[neptune]``): null (the default) logs
to it only when a project is set (``logger.project`` or ``NEPTUNE_PROJECT``), ``async`` with an
API token; true logs always (``offline`` into ``<run dir>/.neptune`` without project and
token, upload later with ``neptune sync``); false never.

Losses and gradient norms are watched (:mod:`mtmarl.training.anomaly`): a
non-finite value or a jump by orders of magnitude is logged as a one-line warning.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

from tensorboardX import SummaryWriter
from tensorboardX.proto.summary_pb2 import Summary

from mtmarl.errors import require_extra
from mtmarl.training.anomaly import MetricWatch
from mtmarl.training.curves import CURVE_NAME, plot_learning_curve
from mtmarl.training.phases import PhaseTimer

_logger = logging.getLogger(__name__)
TB_PREFIX = "events.out.tfevents."  # tensorboardX's event file names

_USER_NEPTUNE_DIR = os.environ.get("NEPTUNE_DATA_DIRECTORY")  # respected when the user set it


def neptune_wanted(neptune: bool | None, project: str | None) -> bool:
    """``logger.neptune``: null means on exactly when a project is configured (config or environment)."""
    if neptune is None:
        return bool(project or os.environ.get("NEPTUNE_PROJECT"))
    return bool(neptune)


def check_neptune(neptune: bool | None, project: str | None) -> None:
    """A one-line error when the settings ask for Neptune and the optional package is not installed."""
    if neptune_wanted(neptune, project):
        asked = ("logger.neptune=true" if neptune else
                 "logger.neptune=null with a Neptune project set (logger.project or NEPTUNE_PROJECT)")
        require_extra("neptune", asked, otherwise="logger.neptune=false")


class RunLogger:
    """The run's logs. ``start_epoch`` (a ``time.time()`` value) is when the run's process started: the
    phase timer's total counts from there. ``phase(name)`` times a phase and shows it on the bar."""

    def __init__(self, run_dir: str | Path, total_updates: int, *, neptune: bool | None = None,
                 project: str | None = None, token: str | None = None, mode: str | None = None,
                 tags: tuple[str, ...] = (), config: Mapping[str, Any] | None = None,
                 progress: bool = True, start: int = 0, resume_file: bool = False,
                 start_epoch: float | None = None, title: str | None = None):
        check_neptune(neptune, project)  # before any file is opened
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / "metrics.jsonl"
        self.curve_path = self.run_dir / CURVE_NAME
        self.title = title
        self._file = self.path.open("a" if resume_file else "w")
        self.t0 = time.perf_counter()
        self.latest: dict[str, float] = {}
        self.warnings: list[str] = []
        self._watch = MetricWatch()
        # purge_step: TensorBoard drops the earlier runs' events from this update on (a resume restarts
        # after its checkpoint's update ``start``; metrics.jsonl was cut there too)
        # The file name is events.out.tfevents.<second>.<host><suffix>, opened "wb": the count of earlier event files as the
        # suffix keeps two starts in the same second apart, and in order.
        earlier = len(list(self.run_dir.glob(f"{TB_PREFIX}*")))
        self._tb = SummaryWriter(logdir=str(self.run_dir), purge_step=start + 1 if resume_file else None,
                                 flush_secs=10, filename_suffix=f".{earlier}")
        self.neptune_run = None
        if neptune_wanted(neptune, project):
            self.neptune_run = _init_neptune(self.run_dir, project, token, mode, tags, config)
        self._progress = None
        self._step, self._total = start, total_updates
        if progress:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self._progress = Progress(SpinnerColumn(), TextColumn("[bold]{task.description:<12}"), BarColumn(),
                                      MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                                      TextColumn("{task.fields[info]}"))
            self._job = self._progress.add_task("starting", total=total_updates, completed=start, info="")
            self._progress.start()
        self._printed: str | None = None
        self.timer = PhaseTimer(start_epoch, on_change=self._show_phase)

    # ------------------------------------------------------------------------------------- phases
    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        # A log file sees no live bar: there, one line for each phase entered (not for the return to the
        # phase around it), unless it repeats the last line's.
        if self._progress is not None and not self._progress.console.is_terminal and name != self._printed:
            self._printed = name
            print(f"[{self.timer.summary()['total']:7.1f} s] {name} (update {self._step}/{self._total})",
                  file=sys.stderr, flush=True)
        with self.timer.phase(name):
            yield

    def _show_phase(self, name: str | None) -> None:
        if self._progress is not None and name is not None:
            self._progress.update(self._job, description=name)

    # ------------------------------------------------------------------------------------- metrics
    def log(self, step: int, metrics: Mapping[str, Any], prefix: str = "train") -> None:
        """One record at update ``step``: keys become ``<prefix>/<key>``; the numbers go to TensorBoard too."""
        flat = {f"{prefix}/{k}": _num(v) for k, v in metrics.items()}
        record = {"step": int(step), "time": round(time.perf_counter() - self.t0, 3), **flat}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        self.latest.update(flat)
        # As Summary protos: add_scalar would rename tags holding characters TensorFlow's op names lack
        # (a task's ``connector:grid=5,agents=2``); TensorBoard shows any tag.
        values = [Summary.Value(tag=f"{prefix}/{k}", simple_value=x) for k, x in
                  ((k, _scalar(v)) for k, v in metrics.items()) if x is not None]
        if values:
            self._tb.file_writer.add_summary(Summary(value=values), global_step=int(step))
        if prefix == "train":
            for line in self._watch.check(int(step), {f"{prefix}/{k}": v for k, v in metrics.items()}):
                self.warnings.append(line)
                _logger.warning(line)
        if self.neptune_run is not None:
            for k, v in flat.items():
                if isinstance(v, (int, float)):
                    self.neptune_run[k].append(v, step=int(step))
        if prefix == "eval":
            self._tb.flush()
            self.draw()

    def advance(self, step: int) -> None:
        self._step = step
        if self._progress is None:
            return
        shown = []
        for key in ("train/loss", "train/critic_loss", "train/policy_loss", "eval/train_return",
                    "eval/test_return"):
            if isinstance(self.latest.get(key), (int, float)):
                shown.append(f"{key.split('/', 1)[1]}={self.latest[key]:.3g}")
        self._progress.update(self._job, completed=step, info=" ".join(shown))

    def draw(self) -> None:
        """Redraw ``curves.png``; a failure is a warning, never the run's end."""
        try:
            plot_learning_curve(self.path, self.curve_path, self.title)
        except Exception as err:  # any plotting failure: the run goes on
            line = f"warning: {self.curve_path.name} not written: {type(err).__name__}: {err}"
            self.warnings.append(line)
            _logger.warning(line)

    def set_summary(self, key: str, value: Any) -> None:
        if self.neptune_run is not None:
            self.neptune_run[key] = value

    def close(self) -> None:
        if self._file.closed:
            return
        if self._progress is not None:
            self._progress.update(self._job, description="done" if self._step >= self._total else "stopped")
            self._progress.stop()
            self._progress = None
        self._file.close()
        self._tb.close()
        self.draw()
        if self.neptune_run is not None:
            self.neptune_run.stop()
            self.neptune_run = None
        self.timer.stop()


def _num(v: Any) -> Any:
    """Floats where possible; NaN/inf become None so metrics.jsonl stays strict JSON."""
    try:
        v = float(v)
    except (TypeError, ValueError):
        return v
    return v if math.isfinite(v) else None


def _scalar(v: Any) -> float | None:
    """The TensorBoard value of a metric (NaN/inf kept: TensorBoard shows them), None for a non-number."""
    if isinstance(v, (str, bytes)) or v is None:
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


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
