"""The command lines a researcher types: results files, GIFs and one-line errors for bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import xla_flags

ROOT = Path(__file__).resolve().parents[1]
TASK = "connector:grid=5,agents=2,horizon=8"


def run(*args, cwd=ROOT):
    # Compiled as the in-process tests compile (conftest's _fast_compiles): the CLIs here build envs and short
    # programs whose compiles dominate.
    env = {**os.environ, "XLA_FLAGS": xla_flags(2), "PYTHONWARNINGS": "ignore", "JAX_DISABLE_MOST_OPTIMIZATIONS": "true"}
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_evaluate_adhoc_task_writes_results_and_gif(tmp_path):
    refs = tmp_path / "refs.json"
    refs.write_text(json.dumps({TASK: {"return": 0.5}}))
    out = tmp_path / "run"
    proc = run("mtmarl.evaluate", f"task={TASK}", "eval.episodes=6", "render=true",
               "render_max_steps=4", f"references={refs}", f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr
    results = json.loads((out / "results.json").read_text())
    metrics = results["connector"][TASK]["random"]["seed_0"]["absolute_metrics"]
    assert metrics["episode_count"] == [6] and len(metrics["return"]) == 6
    mean = sum(metrics["return"]) / 6
    assert metrics["mean_normalised_return"][0] == pytest.approx(mean / 0.5)
    assert (out / "connector_grid_5_agents_2_horizon_8.gif").stat().st_size > 0
    assert "mean return" in proc.stdout


@pytest.mark.parametrize("args,message", [
    (["+tasks=nope"], "rware_15"),                                  # Hydra lists the valid sets
    (["task=rware:rows=2,colz=5,height=8,agents=6"], "colz"),
    (["task=lbf:grid=8,agents=2,food"], "food"),
    (["task=warehouse:rows=2"], "valid envs"),
    (["+tasks=lbf_5", "tasks.num_train=9"], "num_train=9"),
    (["+tasks=lbf_5", "split=validation"], "validation"),
    (["eval.episodez=3"], "episodez"),
    (["policy=random"], "no tasks given"),
])
def test_evaluate_bad_input_is_one_clear_error(args, message, monkeypatch, capsys):
    """The command line as ``python -m mtmarl.evaluate`` runs it (``runtime.hydra_cli``), in this process: a
    new interpreter per case only repeated the imports (the subprocess path is the next test's). Hydra's
    logging set-up is off (``none``): its ``dictConfig`` would close pytest's own log handlers."""
    from hydra.core.global_hydra import GlobalHydra

    from mtmarl import evaluate, runtime

    monkeypatch.setattr(sys, "argv", ["mtmarl.evaluate", *args, "hydra.run.dir=/tmp/mtmarl-test-bad-input",
                                      "hydra/job_logging=none", "hydra/hydra_logging=none"])
    try:
        with pytest.raises(SystemExit) as exit_:
            runtime.hydra_cli("evaluate", evaluate.run)
    finally:
        GlobalHydra.instance().clear()
    assert exit_.value.code not in (0, None)
    out = capsys.readouterr()
    assert message in out.err + out.out
    assert "Traceback" not in out.err


def test_evaluate_bad_input_exits_2_with_one_line_from_a_new_process():
    proc = run("mtmarl.evaluate", "policy=random", "hydra.run.dir=/tmp/mtmarl-test-bad-input")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: no tasks given")
    assert "Traceback" not in proc.stderr



def test_render_of_an_env_without_a_viewer_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    """``render=true`` on SMAX (no viewer): one line naming why and the envs that render, exit 2, before any
    episode is played (the evaluation is replaced by a failure here) and with nothing written."""
    from hydra.core.global_hydra import GlobalHydra

    from mtmarl import evaluate, runtime

    def no_work(*args, **kwargs):
        raise AssertionError("the evaluation ran before render=true was refused")

    monkeypatch.setattr(evaluate, "evaluate_set", no_work)
    out = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", ["mtmarl.evaluate", "task=smax:map=3m", "render=true", "eval.episodes=2",
                                      f"hydra.run.dir={out}", "hydra/job_logging=none", "hydra/hydra_logging=none"])
    try:
        with pytest.raises(SystemExit) as exit_:
            runtime.hydra_cli("evaluate", evaluate.run)
    finally:
        GlobalHydra.instance().clear()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err, err
    line = err.strip().splitlines()[-1]  # (JaxMARL's import chatter may come before it on stderr)
    assert line.startswith("error: render=true: smax tasks (smax:map=3m) cannot be rendered"), err
    assert "connector, lbf, rware" in line
    # nothing of the evaluation's: at most what Hydra writes into a run directory before the command starts
    assert not out.exists() or {p.name for p in out.iterdir()} <= {".hydra", "evaluate.log"}
