"""The run's logs: phase times that add up, loss/grad-norm warnings, TensorBoard events equal to
metrics.jsonl, the learning-curve picture, and Neptune only when a project is configured, a one-line error when
it is asked for without the package (all in-process)."""

from __future__ import annotations

import json
import logging
import math
import struct
import sys
import time
import types
from pathlib import Path

import pytest

from mtmarl.errors import UserInputError
from mtmarl.training.anomaly import MetricWatch
from mtmarl.training.curves import plot_learning_curve
from mtmarl.training.logging import RunLogger, neptune_wanted
from mtmarl.training.phases import PhaseTimer, process_start


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_phase_times_are_exclusive_and_add_up_to_the_wall_time():
    clock, seen = FakeClock(), []
    timer = PhaseTimer(clock=clock, on_change=seen.append)
    clock.now += 1.0                          # other
    with timer.phase("loading data"):
        clock.now += 2.0
    with timer.phase("training"):
        clock.now += 3.0
        with timer.phase("evaluating"):       # nested: not counted in training
            clock.now += 4.0
            with timer.phase("saving"):
                clock.now += 0.5
            clock.now += 1.0
        clock.now += 3.0
    clock.now += 0.25                          # other
    with timer.phase("training"):              # a phase entered again adds up
        clock.now += 1.0
    assert seen[:6] == ["loading data", None, "training", "evaluating", "saving", "evaluating"]
    summary = timer.summary()
    assert summary == {"loading data": 2.0, "training": 7.0, "evaluating": 5.0, "saving": 0.5, "other": 1.25,
                       "total": 15.75}
    assert sum(v for k, v in summary.items() if k != "total") == summary["total"] == clock.now - 100.0
    # a running phase counts up to now; stop() freezes the totals
    with timer.phase("compiling"):
        clock.now += 2.0
        assert timer.summary()["compiling"] == 2.0 and timer.summary()["total"] == 17.75
    timer.stop()
    clock.now += 50.0
    assert timer.summary()["total"] == 17.75
    assert list(timer.summary())[:5] == ["loading data", "compiling", "training", "evaluating", "saving"]


def test_phase_summary_line_adds_up_after_rounding():
    clock = FakeClock()
    timer = PhaseTimer(clock=clock)
    for name, seconds in (("loading data", 1.04), ("compiling", 2.04), ("training", 3.04)):
        with timer.phase(name):
            clock.now += seconds
    clock.now += 0.04
    line = timer.describe()
    total, parts = line.removeprefix("time: ").split(" s = ")
    numbers = [float(p.rsplit(" ", 2)[-2]) for p in parts.split(" + ")]
    assert line.startswith("time: 6.2 s = loading data 1.0 s + compiling 2.0 s + training 3.0 s + other")
    assert round(sum(numbers), 6) == float(total)


def test_phase_total_counts_from_the_given_start():
    start = time.time() - 5.0
    timer = PhaseTimer(start_epoch=start)
    assert 5.0 <= timer.summary()["total"] < 7.0
    began = process_start()  # this test process's own start (Linux), before the test ran
    assert began is None or 0 < time.time() - began < 3600


def _rows(watch, name, values, first_step=10):
    lines = []
    for i, v in enumerate(values):
        lines += watch.check(first_step * (i + 1), {name: v})
    return lines


def test_anomaly_rule_flags_jumps_non_finite_and_huge_first_rows():
    # ordinary noise, a loss converging to zero, negative losses: nothing
    watch = MetricWatch()
    assert _rows(watch, "train/loss", [2.0, 1.5, 3.0, 1.0, 0.8, 2.5, 0.5]) == []
    assert _rows(watch, "train/policy_loss", [-1.0, -3.0, -0.5, -8.0]) == []
    assert _rows(MetricWatch(), "train/loss", [1e-3, 1e-6, 1e-7, 1e-8, 0.5]) == []  # ~1e6 x the median, under the floor
    # a jump by more than 1e3 x the median of the earlier rows, named with its value and update
    watch = MetricWatch()
    lines = _rows(watch, "train/grad_norm", [2.0, 3.0, 2.5, 1.0, 3000.0, 4.0])
    assert lines == ["warning: train/grad_norm=3e+03 at update 50: over 1e+03 x the median 2.25 of its previous "
                     "4 logged rows"]
    # one outlier does not raise the bar for the next (the median ignores it)
    assert _rows(watch, "train/grad_norm", [2900.0], first_step=70)[0].startswith("warning: train/grad_norm=2.9e+03")
    # the first rows: no history, an absolute bound instead (a grad norm of 9.8e8 at once)
    lines = _rows(MetricWatch(), "train/grad_norm", [9.8e8, 5e8, 1.0])
    assert len(lines) == 2 and lines[0] == ("warning: train/grad_norm=9.8e+08 at update 10: above 1e+06 in its first "
                                            "logged rows (expected near the scale of the returns)")
    assert _rows(MetricWatch(), "train/loss", [5e5, 4e5]) == []
    # non-finite, also among other metrics of the row; metrics that are neither losses nor grad norms are left alone
    watch = MetricWatch()
    assert watch.check(4, {"train/critic_loss": float("nan"), "train/q_mean": 1e12, "train/stage": 0.0}) == [
        "warning: train/critic_loss=nan at update 4: not finite"]
    assert watch.check(8, {"train/seed_3/loss": float("inf")}) == ["warning: train/seed_3/loss=inf at update 8: not finite"]


def test_run_logger_warns_once_per_flagged_row(tmp_path, caplog):
    log = RunLogger(tmp_path, 10, neptune=False, progress=False)
    with caplog.at_level(logging.WARNING, logger="mtmarl.training.logging"):
        for step, g in ((2, 1.0), (4, 1.5), (6, 1.2), (8, 5e4), (10, 1.3)):
            log.log(step, {"loss": 1.0, "grad_norm": g})
        log.log(10, {"train_return": 1e9}, prefix="eval")  # returns are not watched
    log.close()
    assert [r.getMessage() for r in caplog.records] == log.warnings == [
        "warning: train/grad_norm=5e+04 at update 8: over 1e+03 x the median 1.2 of its previous 3 logged rows"]


def read_scalars(run_dir: Path) -> list[tuple[str, int, float]]:
    """(tag, step, value) of every scalar in the run's event files, as TensorBoard shows them: the files in
    name order, each record's CRCs checked, and a session start at step s purging earlier events at >= s."""
    from tensorboardX.proto import event_pb2
    from tensorboardX.record_writer import masked_crc32c

    out: list[tuple[str, int, float]] = []
    for path in sorted(run_dir.glob("events.out.tfevents.*")):
        data, i = path.read_bytes(), 0
        while i < len(data):
            header = data[i:i + 8]
            (n,) = struct.unpack("<Q", header)
            assert struct.unpack("<I", data[i + 8:i + 12])[0] == masked_crc32c(header)
            body = data[i + 12:i + 12 + n]
            assert struct.unpack("<I", data[i + 12 + n:i + 16 + n])[0] == masked_crc32c(body)
            i += 16 + n
            event = event_pb2.Event.FromString(body)
            if event.HasField("session_log") and event.session_log.status == event_pb2.SessionLog.START:
                out = [s for s in out if s[1] < event.step]
            for value in event.summary.value:
                out.append((value.tag, int(event.step), value.simple_value))
    return out


def jsonl_scalars(path: Path) -> list[tuple[str, int, float]]:
    out = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        out += [(k, row["step"], math.nan if v is None else v) for k, v in row.items() if k not in ("step", "time")]
    return out


def same_scalars(a, b):
    """The same (tag, step) pairs with values equal up to TensorBoard's float32."""
    assert len(a) == len(b)
    for (ka, sa, va), (kb, sb, vb) in zip(sorted(a, key=str), sorted(b, key=str)):
        assert (ka, sa) == (kb, sb) and (va == pytest.approx(vb) or (math.isnan(va) and math.isnan(vb)))


def test_tensorboard_events_hold_every_metric_of_metrics_jsonl(tmp_path):
    log = RunLogger(tmp_path, 6, neptune=False, progress=False)
    log.log(2, {"loss": 1.25, "grad_norm": 0.5, "stage": 0.0})
    log.log(4, {"loss": float("nan"), "grad_norm": 0.25, "stage": 1.0})
    log.log(4, {"train_return": 3.5, "test/lbf_a": -1.0}, prefix="eval")
    log.log(6, {"loss": 0.75, "grad_norm": 0.125, "stage": 1.0})
    log.log(6, {"train/connector:grid=5,agents=2": 2.0}, prefix="final")  # a task's name as it is
    log.close()
    scalars = read_scalars(tmp_path)
    assert ("eval/test/lbf_a", 4, -1.0) in scalars and len(scalars) == 12
    same_scalars(scalars, jsonl_scalars(tmp_path / "metrics.jsonl"))

    # a resumed session (checkpoint at update 2, metrics.jsonl cut there as rundir.prepare does) replaces
    # the later updates in TensorBoard too
    from mtmarl.training.rundir import truncate_metrics

    truncate_metrics(tmp_path / "metrics.jsonl", 2)
    log = RunLogger(tmp_path, 6, neptune=False, progress=False, start=2, resume_file=True)
    log.log(4, {"loss": 0.5, "grad_norm": 0.25, "stage": 1.0})
    log.close()
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 2
    same_scalars(read_scalars(tmp_path), jsonl_scalars(tmp_path / "metrics.jsonl"))


def test_learning_curve_png_from_a_tiny_metrics_file(tmp_path):
    from PIL import Image

    rows = [{"step": 2, "time": 0.1, "train/loss": 1.0, "train/grad_norm": 3.0, "train/stage": 0.0},
            {"step": 4, "time": 0.2, "train/loss": 0.5, "train/grad_norm": None, "train/stage": 0.0},
            {"step": 4, "time": 0.3, "eval/train_return": 1.5, "eval/test_return": 0.5},
            {"step": 6, "time": 0.4, "train/loss": 0.25, "train/grad_norm": 2.0, "train/stage": 0.0}]
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 8, "train/lo')  # a killed write
    png = plot_learning_curve(metrics, tmp_path / "curve.png", title="toy")
    with Image.open(png) as image:
        image.verify()
    with Image.open(png) as image:
        assert image.format == "PNG" and image.width > 600 and image.height > 200  # three panels in a row
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert plot_learning_curve(empty, tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()


def test_a_failed_plot_warns_and_the_run_goes_on(tmp_path, monkeypatch, caplog):
    import mtmarl.training.logging as logging_module

    def broken(*args, **kwargs):
        raise RuntimeError("no fonts")

    monkeypatch.setattr(logging_module, "plot_learning_curve", broken)
    log = RunLogger(tmp_path, 2, neptune=False, progress=False)
    log.log(2, {"train_return": 1.0}, prefix="eval")
    with caplog.at_level(logging.WARNING, logger="mtmarl.training.logging"):
        log.close()
    assert "curves.png not written: RuntimeError: no fonts" in caplog.text
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 1


def test_neptune_only_when_a_project_is_configured(tmp_path, monkeypatch):
    import mtmarl.training.logging as logging_module

    monkeypatch.delenv("NEPTUNE_PROJECT", raising=False)
    assert not neptune_wanted(None, None) and neptune_wanted(None, "team/proj") and not neptune_wanted(False, "t/p")
    assert neptune_wanted(True, None)
    started = []

    class FakeRun(dict):
        def stop(self):
            started.append("stopped")

    def fake_init(run_dir, project, token, mode, tags, config):
        started.append(project)
        return FakeRun()

    monkeypatch.setattr(logging_module, "_init_neptune", fake_init)
    monkeypatch.setitem(sys.modules, "neptune", types.ModuleType("neptune"))  # the optional extra, installed or not
    RunLogger(tmp_path / "off", 2, progress=False).close()  # the default: no project, no Neptune
    assert started == [] and not (tmp_path / "off" / ".neptune").exists()
    monkeypatch.setenv("NEPTUNE_PROJECT", "team/env")
    RunLogger(tmp_path / "env", 2, progress=False).close()
    assert started == [None, "stopped"]  # the project comes from the environment inside _init_neptune


def test_neptune_asked_for_without_the_package_is_one_line_before_any_file(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "neptune", None)  # not installed: importing it raises ImportError
    monkeypatch.delenv("NEPTUNE_PROJECT", raising=False)
    with pytest.raises(UserInputError) as err:
        RunLogger(tmp_path / "run", 2, neptune=True, progress=False)
    assert str(err.value) == ("logger.neptune=true needs the package neptune, which is not installed: "
                              "pip install 'mtmarl[neptune]' (or logger.neptune=false)")
    assert not (tmp_path / "run").exists()
    monkeypatch.setenv("NEPTUNE_PROJECT", "team/env")  # null with a project: asked for too
    with pytest.raises(UserInputError, match=r"logger.neptune=null with a Neptune project set .*mtmarl\[neptune\]"):
        RunLogger(tmp_path / "run", 2, progress=False)
    RunLogger(tmp_path / "run", 2, neptune=False, progress=False).close()  # switched off: no package needed
    assert (tmp_path / "run" / "metrics.jsonl").is_file()


def test_overwrite_removes_the_event_files_and_curve(tmp_path):
    from mtmarl.training.rundir import prepare

    log = RunLogger(tmp_path, 2, neptune=False, progress=False)
    log.log(2, {"loss": 1.0})
    log.close()
    assert (tmp_path / "curves.png").exists() and list(tmp_path.glob("events.out.tfevents.*"))
    prepare(tmp_path, {"overwrite": True}, "seed: 0\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]
