"""Run safety: bad input is one clear error before anything is written; run directories have one owner;
a run is never overwritten or changed by accident; Ctrl-C / SIGTERM checkpoint and say how to resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers import synthetic_vault, xla_flags

from mtmarl.configs import CONFIG_DIR
from mtmarl.errors import UserInputError
from mtmarl.tasks import TaskSpec
from mtmarl.training import rundir
from mtmarl.training.rundir import RunDirLock

ROOT = Path(__file__).resolve().parents[1]
TASK = "connector:grid=5,agents=2,horizon=8"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """A vault root holding TASK (random data written with numpy: no env compile)."""
    root = tmp_path_factory.mktemp("safety") / "vault_data"
    synthetic_vault(root, TASK)
    return root


def _compose(overrides):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        return compose("train", overrides)


# ------------------------------------------------------------------------ bad train configs, in-process

TRAIN_BAD = [
    (["+training.updatez=5"], ["training.updatez", "did you mean training.updates"]),
    (["+trainin.updates=5"], ["trainin", "training"]),
    (["+foo=1"], ["'foo'"]),
    (["+data.rooot=x"], ["data.rooot", "data.root"]),
    (["+network.embed=3"], ["network.embed", "network.embed_dim"]),
    (["+algo.lrr=1"], ["algo.lrr", "algo.lr"]),
    (["+logger.nepture=false"], ["logger.nepture", "logger.neptune"]),
    (["+eval.episode=3"], ["eval.episode", "eval.episodes"]),
    (["training.updates=-25"], ["training.updates=-25", ">= 1"]),
    (["training.updates=0"], ["training.updates=0", ">= 1"]),
    (["training.updates=abc"], ["training.updates='abc'", "integer"]),
    (["training.updates=2.5"], ["training.updates=2.5"]),
    (["training.updates=true"], ["training.updates=True"]),
    (["training.updates=30"], ["training.updates=30", "multiple of training.updates_per_call=25"]),
    (["training.updates_per_call=0"], ["training.updates_per_call=0"]),
    (["training.batch_size=0"], ["training.batch_size=0"]),
    (["training.batch_size=abc"], ["training.batch_size='abc'"]),
    (["training.seq_len=0"], ["training.seq_len=0"]),
    (["training.devices=0"], ["training.devices=0"]),
    (["training.log_every=0"], ["training.log_every=0"]),
    (["training.eval_every=-1"], ["training.eval_every=-1"]),
    (["training.eval_episodes=0"], ["training.eval_episodes=0"]),
    (["training.eval_splits=[valid]"], ["training.eval_splits", "train and/or test"]),
    (["training.checkpoint_every=-5"], ["training.checkpoint_every=-5"]),
    (["training.keep_checkpoints=0"], ["training.keep_checkpoints=0"]),
    (["training.value_range=auto"], ["training.value_range='auto'", "data, config"]),
    (["eval.episodes=0"], ["eval.episodes=0"]),
    (["eval.episodes=abc"], ["eval.episodes='abc'"]),
    (["eval.devices=0"], ["eval.devices=0"]),
    (["eval.greedy=maybe"], ["eval.greedy='maybe'", "true or false"]),
    (["seed=-1"], ["seed=-1"]),
    (["seed=abc"], ["seed='abc'"]),
    (["resume=maybe"], ["resume='maybe'"]),
    (["overwrite=2"], ["overwrite=2"]),
    (["resume=true", "overwrite=true"], ["resume=true and overwrite=true"]),
    (["references=/nonexistent.json"], ["references='/nonexistent.json'", "existing file"]),
    (["data.fraction=0"], ["data.fraction=0"]),
    (["data.fraction=1.5"], ["data.fraction=1.5"]),
    (["data.verify=yes"], ["data.verify='yes'"]),
    (["data.balanced=1"], ["data.balanced=1"]),
    (["data.tasks_per_batch=0"], ["data.tasks_per_batch=0", ">= 1"]),
    (["data.balanced=false", "data.tasks_per_batch=2"], ["data.tasks_per_batch=2 needs data.balanced=true"]),
    (["data.hub_manifest=/nonexistent.json"], ["data.hub_manifest"]),
    (["data.quality=nope"], ["no dataset 'nope'", "it has default"]),  # the HyGen paper's expert / medium on SMAX
    (["agents.shuffle=nope"], ["agents.shuffle='nope'"]),
    (["agents.mask=2"], ["agents.mask=2"]),
    (["logger.neptune=sometimes"], ["logger.neptune='sometimes'"]),
    (["task='connector:grid=2,agents=10'"], ["grid=2", "agents=10"]),
    (["task='lbf:grid=8,agents=2,food=2,coop=maybe'"], ["coop='maybe'", "true/false"]),
    (["task='rware:rows=0,cols=3,height=8,agents=2'"], ["rows='0'", ">= 1"]),
    (["task='connector:grid=5,agents=2,horizon=0'"], ["horizon='0'", ">= 1"]),
    (["task='connector:grid=5,agentz=2'"], ["agentz"]),
    (["+algo=mt_oryx", "algo.td_lambda=2"], ["algo.td_lambda", "[0, 1]", "got 2"]),
    (["+algo=mt_oryx", "algo.policy_temperature=0"], ["algo.policy_temperature", "> 0"]),
    (["+algo=mt_oryx", "algo.gamma=1.5"], ["gamma", "[0, 1]"]),
    (["+algo=mt_oryx", "algo.lr_decay_updates=-5"], ["algo.lr_decay_updates", "got -5"]),
    (["network.embed_dim=31"], ["embed_dim (31)", "n_heads"]),
    (["training.population=0"], ["training.population=0", ">= 1"]),
    (["task='connector:grid=5,agents=2'", "data.root=/nonexistent"], ["grid=5,agents=2.vlt", "mtmarl.hub download"]),
]


@pytest.mark.parametrize("args,wants", TRAIN_BAD, ids=[" ".join(a) for a, _ in TRAIN_BAD])
def test_bad_train_config_is_one_line_and_writes_nothing(args, wants, tmp_path, capsys, data_root):
    base = ["+algo=mt_bc_sable", f"task='{TASK}'", f"data.root={data_root}", "training=quick"]
    given = {a.split("=")[0] for a in args}
    base = [b for b in base if b.split("=")[0] not in given]
    cfg = _compose(base + args)
    from mtmarl import train

    with pytest.raises(SystemExit) as exit_:
        train.run(cfg, run_dir=tmp_path / "run")
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and "Traceback" not in err and err.startswith("error: "), err
    for want in wants:
        assert want in err, f"{want!r} not in {err!r}"
    assert not (tmp_path / "run").exists()  # checked before the run dir was created


def test_cli_refusal_leaves_no_run_dir_behind(tmp_path):
    """Through Hydra (which creates the run dir before calling us): a refused run removes the empty dir it got,
    and keeps a directory that was there before."""
    old = tmp_path / "old"
    old.mkdir()
    for run in (tmp_path / "new", old):
        proc = subprocess.run([sys.executable, "-m", "mtmarl.train", "+algo=mt_bc_sable", f"task={TASK}",
                               "+training.updatez=5", f"hydra.run.dir={run}"], cwd=ROOT, env=_env(),
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert "unknown config key 'training.updatez'; did you mean training.updates?" in proc.stderr
    assert not (tmp_path / "new").exists() and old.is_dir()


def test_no_algorithm_is_one_line(tmp_path, capsys):
    from mtmarl import train

    with pytest.raises(SystemExit):
        train.run(_compose([f"task='{TASK}'"]), run_dir=tmp_path / "run")
    assert "+algo=" in capsys.readouterr().err and not (tmp_path / "run").exists()


@pytest.mark.parametrize("config,args,wants", [
    ("evaluate", ["+eval.episodez=3"], ["eval.episodez", "did you mean eval.episodes"]),
    ("evaluate", ["+tasks=lbf_5", "+tasks.nmu_train=3"], ["tasks.nmu_train", "tasks.num_train"]),
    ("collect", ["+collect.budgett=5"], ["collect.budgett", "collect.budget"]),
    ("collect", ["online=sable", "+online.lrr=1"], ["online.lrr", "online.lr"]),
    ("collect", ["collect.quality_min_episodes=0"], ["collect.quality_min_episodes=0", "null or an integer >= 1"]),
])
def test_bad_added_keys_and_values_of_evaluate_and_collect(config, args, wants, capsys):
    from hydra import compose, initialize_config_dir

    from mtmarl import collect, evaluate

    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        cfg = compose(config, args)
    with pytest.raises(SystemExit) as exit_:
        (evaluate if config == "evaluate" else collect).run(cfg)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err and all(w in err for w in wants), err


# ----------------------------------------------------------------------------- typed ad-hoc task params

TASK_BAD = [
    ("connector:grid=2,agents=10", ["grid=2", "agents=10"]),
    ("connector:grid=3,agents=5", ["grid=3", "agents=5"]),
    ("connector:grid=1,agents=1", ["grid='1'", ">= 2"]),
    ("connector:grid=0,agents=1", ["grid='0'"]),
    ("connector:grid=abc,agents=1", ["grid='abc'", "integer"]),
    ("connector:grid=5,agents=0", ["agents='0'"]),
    ("connector:grid=5,agents=2,horizon=0", ["horizon='0'"]),
    ("connector:grid=5,agents=2,horizon=-5", ["horizon='-5'"]),
    ("connector:grid=5,agents=2,horizon=1.5", ["horizon='1.5'"]),
    ("connector:grid=5,agents=true", ["agents='true'"]),
    ("rware:rows=0,cols=3,height=8,agents=2", ["rows='0'"]),
    ("rware:rows=1,cols=0,height=8,agents=2", ["cols='0'"]),
    ("rware:rows=1,cols=3,height=0,agents=2", ["height='0'"]),
    ("rware:rows=1,cols=3,height=8,agents=0", ["agents='0'"]),
    ("rware:rows=1,cols=4,height=8,agents=2", ["cols=4", "odd"]),
    ("rware:rows=1,cols=3,height=8,agents=2,sensor=0", ["sensor='0'"]),
    ("rware:rows=1,cols=3,height=8,agents=2,request=0", ["request='0'"]),
    ("rware:rows=1,cols=3,height=8,agents=2,request=100", ["request=100", "32 shelves"]),
    ("rware:rows=1,cols=1,height=8,agents=2", ["request (default agents=2)", "0 shelves"]),
    ("rware:rows=1,cols=3,height=8,agents=2,horizon=0", ["horizon='0'"]),
    ("rware:rows=abc,cols=3,height=8,agents=2", ["rows='abc'"]),
    ("lbf:grid=8,agents=2,food=2,coop=maybe", ["coop='maybe'", "true/false, yes/no, 1/0"]),
    ("lbf:grid=8,agents=2,food=2,coop=2", ["coop='2'"]),
    ("lbf:grid=4,agents=2,food=1", ["grid='4'", ">= 5"]),
    ("lbf:grid=6,agents=4,food=3", ["grid=6", "agents=4", "food=3"]),
    ("lbf:grid=8,agents=2,food=2,level=1", ["level='1'", ">= 2"]),
    ("lbf:grid=8,agents=2,food=2,fov=0", ["fov='0'"]),
    ("lbf:grid=8,agents=2,food=2,fov=20", ["fov=20", "grid=8"]),
    ("lbf:grid=8,agents=2,food=0", ["food='0'"]),
    ("lbf:grid=8,agents=0,food=2", ["agents='0'"]),
    ("lbf:grid=8,agents=2,food=2,horizon=0", ["horizon='0'"]),
]


@pytest.mark.parametrize("text,wants", TASK_BAD)
def test_bad_task_params_name_key_value_and_rule(text, wants):
    with pytest.raises(UserInputError) as err:
        TaskSpec.parse(text)
    for want in wants:
        assert want in str(err.value), f"{want!r} not in {err.value}"


@pytest.mark.parametrize("word,value", [("no", False), ("yes", True), ("0", False), ("1", True),
                                        ("FALSE", False), ("true", True)])
def test_boolean_words(word, value):
    spec = TaskSpec.parse(f"lbf:grid=8,agents=2,food=2,coop={word}")
    assert dict(spec.params)["coop"] is value
    assert TaskSpec.parse(spec.adhoc) == spec  # the canonical text reads back as the same task


# --------------------------------------------------------------------------------- ownership, in-process

def test_second_lock_is_refused_naming_the_owner(tmp_path):
    with RunDirLock(tmp_path / "run"):
        with pytest.raises(UserInputError, match=f"in use by pid {os.getpid()} on "):
            RunDirLock(tmp_path / "run").acquire()
    with RunDirLock(tmp_path / "run"):  # released: free again
        pass
    assert (tmp_path / "run" / ".lock").read_text() == ""


def test_unusable_run_dir_is_one_error(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UserInputError, match="cannot use run dir .*afile/run"):
        RunDirLock(tmp_path / "afile" / "run").acquire()


def test_stale_lock_of_a_dead_process_is_taken_over_with_a_warning(tmp_path, capsys):
    import socket

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / ".lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "x"}))
    with RunDirLock(tmp_path):
        owner = json.loads((tmp_path / ".lock").read_text())
    assert owner["pid"] == os.getpid()
    err = capsys.readouterr().err
    assert f"stale lock of pid {dead.pid}" in err and "no longer running" in err


def _save_tiny_checkpoint(directory: Path, step: int) -> None:
    """A real, verifiable periodic checkpoint of a tiny carry (a resume reads it before trusting it)."""
    from mtmarl.training.checkpoint import Checkpointer
    from mtmarl.training.engine import Carry

    ckpt = Checkpointer(directory)
    ckpt.save_latest(step, Carry({"w": np.zeros(2, np.float32)}, np.zeros(2, np.uint32), np.int32(step)),
                     {"updates": step})
    ckpt.close()


def _fake_run(run_dir: Path, step: int, finished: bool):
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("seed: 0\nnetwork:\n  embed_dim: 64\n")
    _save_tiny_checkpoint(run_dir / "checkpoints", step)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps({"step": s}) + "\n" for s in (25, 50, 75)))
    if finished:
        (run_dir / "results.json").write_text("{}")


def _snapshot(d: Path) -> dict:
    return {str(p.relative_to(d)): (p.read_bytes() if p.is_file() else None) for p in sorted(d.rglob("*"))}


@pytest.mark.parametrize("text", ["", "- just\n- a list\n", "seed: [unclosed\n"])
def test_resume_with_an_empty_or_broken_config_is_one_line_not_a_diff_of_every_key(tmp_path, text):
    run = tmp_path / "run"
    _fake_run(run, 50, finished=False)
    (run / "config.yaml").write_text(text)
    before = _snapshot(run)
    with pytest.raises(UserInputError, match="is empty or not a config mapping") as err:
        rundir.prepare(run, {"resume": True, "seed": 0, "network": {"embed_dim": 64}}, "seed: 0\n")
    assert "\n" not in str(err.value) and "embed_dim" not in str(err.value)
    assert _snapshot(run) == before


@pytest.mark.parametrize("finished", [True, False])
def test_dir_with_a_run_needs_resume_or_overwrite(tmp_path, finished):
    run = tmp_path / "run"
    _fake_run(run, 50, finished)
    before = _snapshot(run)
    with pytest.raises(UserInputError, match="resume=true to continue it, overwrite=true to replace it") as err:
        rundir.prepare(run, {"seed": 0, "network": {"embed_dim": 64}}, "seed: 0\n")
    assert ("finished run" if finished else "partial run (checkpoint at update 50)") in str(err.value)
    assert _snapshot(run) == before


def test_dir_of_a_run_that_never_trained_can_be_reused(tmp_path):
    (tmp_path / "config.yaml").write_text("old\n")
    (tmp_path / "metrics.jsonl").write_text("")
    assert rundir.prepare(tmp_path, {}, "new\n") is None
    assert (tmp_path / "config.yaml").read_text() == "new\n"
    (tmp_path / "metrics.jsonl").write_text('{"step": 4}\n')
    with pytest.raises(UserInputError, match="already holds a partial run"):
        rundir.prepare(tmp_path, {}, "new\n")


def test_overwrite_removes_old_checkpoints_first(tmp_path):
    run = tmp_path / "run"
    _fake_run(run, 50, True)
    (run / "notes.txt").write_text("mine")
    assert rundir.prepare(run, {"overwrite": True}, "seed: 1\n") is None
    assert not (run / "checkpoints").exists() and not (run / "results.json").exists()
    assert not (run / "metrics.jsonl").exists() and (run / "config.yaml").read_text() == "seed: 1\n"
    assert (run / "notes.txt").read_text() == "mine"  # not a run file: kept


def test_refused_resume_leaves_dir_identical_and_resumable(tmp_path):
    run = tmp_path / "run"
    _fake_run(run, 50, False)
    before = _snapshot(run)
    with pytest.raises(UserInputError, match=r"network.embed_dim \(64 -> 32\)"):
        rundir.prepare(run, {"resume": True, "seed": 0, "network": {"embed_dim": 32}}, "changed\n")
    assert _snapshot(run) == before
    # the same settings (log/eval/length changes allowed) resume, cutting metrics after the checkpoint
    start = rundir.prepare(run, {"resume": True, "seed": 0, "network": {"embed_dim": 64},
                                 "logger": {"neptune": False}, "training": {"updates": 500}}, "same\n")
    assert start == 50
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [25, 50]


# -------------------------------------------------------------------------------------- subprocess runs

def _train_cmd(data_root, run_dir, *extra):
    return [sys.executable, "-m", "mtmarl.train", "+algo=mt_bc_sable", f"task={TASK}", f"data.root={data_root}",
            f"hydra.run.dir={run_dir}", "training=quick", "training.updates_per_call=4", "training.batch_size=8",
            "training.seq_len=8", "training.devices=1", "training.checkpoint_every=400", "training.log_every=4",
            "network.embed_dim=16", "network.chunk_size=4", "eval.episodes=2", "training.eval_episodes=2",
            "logger.neptune=false", "logger.progress=false", *extra]


def _env():
    return {**os.environ, "XLA_FLAGS": xla_flags(2), "PYTHONWARNINGS": "ignore",
            "JAX_DISABLE_MOST_OPTIMIZATIONS": "true", "PYTHONPATH": str(ROOT)}


def _wait_for_metrics(run_dir: Path, proc, min_lines=1, timeout=240):
    t0 = time.time()
    path = run_dir / "metrics.jsonl"
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise AssertionError(f"run ended early: {proc.communicate()}")
        if path.exists() and len(path.read_text().splitlines()) >= min_lines:
            return
        time.sleep(0.2)
    raise AssertionError("no training progress")


def _params(run_dir: Path):
    """The latest checkpoint's parameters, read as plain arrays (no template needed)."""
    import orbax.checkpoint as ocp

    ckpt = run_dir / "checkpoints" / "latest"
    step = max(int(p.name) for p in ckpt.iterdir() if p.name.isdigit())
    with ocp.StandardCheckpointer() as c:
        tree = c.restore(ckpt / str(step) / "state")
    return step, tree["state"]["params"]


@pytest.mark.parametrize("sig,code", [pytest.param(signal.SIGTERM, 143, marks=pytest.mark.slow), (signal.SIGINT, 130)])
def test_signal_checkpoints_prints_resume_line_and_second_run_is_refused(data_root, tmp_path, sig, code, capsys):
    """One long run: a second run in its dir is refused at once (the first unharmed); a signal then stops the
    first after its current call with a checkpoint, the exact resume command and exit 128+signal."""
    run = tmp_path / "run"
    first = subprocess.Popen(_train_cmd(data_root, run, "training.updates=40000"), cwd=ROOT, env=_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_metrics(run, first)
        config = (run / "config.yaml").read_bytes()
        second = subprocess.run(_train_cmd(data_root, run, "training.updates=8", "resume=true"), cwd=ROOT,
                                env=_env(), capture_output=True, text=True, timeout=300)
        assert second.returncode == 2 and "Traceback" not in second.stderr
        assert f"is in use by pid {first.pid}" in second.stderr, second.stderr
        assert (run / "config.yaml").read_bytes() == config and first.poll() is None
        first.send_signal(sig)
        out, err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == code, err[-3000:]
    assert "Traceback" not in err
    line = [ln for ln in out.splitlines() if ln.startswith("interrupted at update")]
    assert len(line) == 1, out
    step = int(line[0].split()[3])
    assert f"update {step} of 40000; checkpoint saved" in line[0]
    assert line[0].endswith(f"resume=true hydra.run.dir={run}") and "training.updates=40000" in line[0]
    assert _params(run)[0] == step and step % 4 == 0 and step < 40000
    records = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == step
    assert (run / "curves.png").is_file()  # drawn on the way out of an interrupted run too
    assert (run / ".lock").read_text() == ""  # released on the way out
    # The interrupted run is protected: rerunning it needs resume=true, and a resume with a changed config is
    # refused before anything is written (checked in-process: both refusals come before any compile).
    from mtmarl import train
    from mtmarl.runtime import quote_task_overrides

    overrides = quote_task_overrides(_train_cmd(data_root, run, "training.updates=40000")[3:])
    overrides = [o for o in overrides if not o.startswith("hydra.")]
    before = _snapshot(run)
    for extra, want in ((["network.embed_dim=32", "resume=true"], "network.embed_dim (16 -> 32)"),
                        ([], f"already holds a partial run (checkpoint at update {step})")):
        with pytest.raises(SystemExit) as exit_:
            train.run(_compose(overrides + extra), run_dir=run)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and want in err, err
        assert _snapshot(run) == before, want


@pytest.mark.slow
def test_sigterm_then_resume_equals_an_uninterrupted_run(data_root, tmp_path):
    total = 400
    ref = tmp_path / "ref"
    proc = subprocess.run(_train_cmd(data_root, ref, f"training.updates={total}"), cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "run"
    first = subprocess.Popen(_train_cmd(data_root, run, f"training.updates={total}"), cwd=ROOT, env=_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_metrics(run, first)
    first.send_signal(signal.SIGTERM)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 143, err[-3000:]
    step = _params(run)[0]
    assert step < total, "stopped too late to test a resume"
    (run / "metrics.jsonl").open("a").write(json.dumps({"step": step + 4, "train/loss": 0.0}) + "\n")  # a kill's tail
    proc = subprocess.run(_train_cmd(data_root, run, f"training.updates={total}", "resume=true"), cwd=ROOT,
                          env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resumed from update {step} of {total}" in proc.stdout
    records = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    loss_steps = [r["step"] for r in records if "train/loss" in r]
    assert loss_steps == list(range(4, total + 1, 4)), loss_steps  # the stale tail after the checkpoint is gone
    (a_step, a), (b_step, b) = _params(ref), _params(run)
    assert a_step == b_step == total
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)


def test_xla_cache_switch(monkeypatch, tmp_path):
    """``MTMARL_XLA_CACHE`` turns the persistent cache on, off or to a directory, always size-limited
    (JAX locks a size-limited cache, so concurrent processes cannot read half-written entries),
    and names the allowed values when wrong."""
    from mtmarl import runtime
    from mtmarl.errors import UserInputError

    old = {k: getattr(jax.config, k) for k in ("jax_compilation_cache_dir", "jax_compilation_cache_max_size",
                                            "jax_persistent_cache_min_compile_time_secs")}
    try:
        monkeypatch.setenv("MTMARL_XLA_CACHE", "off")
        jax.config.update("jax_compilation_cache_dir", None)
        runtime.enable_compilation_cache()
        assert jax.config.jax_compilation_cache_dir is None
        monkeypatch.setenv("MTMARL_XLA_CACHE", "on")
        jax.config.update("jax_compilation_cache_max_size", -1)
        runtime.enable_compilation_cache()
        assert jax.config.jax_compilation_cache_dir == str(runtime.CACHE_DIR / "xla_lru")
        assert jax.config.jax_compilation_cache_max_size == runtime.CACHE_MAX_BYTES > 0
        assert jax.config.jax_persistent_cache_min_compile_time_secs == float(os.environ["MTMARL_XLA_CACHE_MIN_SECS"])
        monkeypatch.delenv("MTMARL_XLA_CACHE_MIN_SECS")
        runtime.enable_compilation_cache()
        assert jax.config.jax_persistent_cache_min_compile_time_secs == 1.0
        monkeypatch.setenv("MTMARL_XLA_CACHE", str(tmp_path))
        runtime.enable_compilation_cache(min_compile_secs=0.25)
        assert jax.config.jax_compilation_cache_dir == str(tmp_path)
        assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.25
        for bad in ("soon", "-1", "nan"):
            monkeypatch.setenv("MTMARL_XLA_CACHE_MIN_SECS", bad)
            with pytest.raises(UserInputError, match=rf"MTMARL_XLA_CACHE_MIN_SECS='{bad}'.*seconds >= 0"):
                runtime.enable_compilation_cache()
        monkeypatch.delenv("MTMARL_XLA_CACHE_MIN_SECS")
        for bad in ("maybe", "relative/dir"):
            monkeypatch.setenv("MTMARL_XLA_CACHE", bad)
            with pytest.raises(UserInputError, match=rf"MTMARL_XLA_CACHE='{bad}'.*'on', 'off' and an absolute directory"):
                runtime.enable_compilation_cache()
    finally:
        for k, v in old.items():
            jax.config.update(k, v)


def test_garbage_collector_tuning_freezes_what_is_alive_and_still_collects_later_cycles():
    """The CLIs' (and the suite's) collector set-up: objects alive at the call are never walked again (so a
    cycle among them is kept: call it after the imports), cycles made later are still freed."""
    import gc
    import weakref

    from mtmarl import runtime

    class Node:
        pass

    before = Node()
    before.me = before
    ref_before = weakref.ref(before)
    runtime.tune_garbage_collector()
    assert gc.get_threshold() == runtime.GC_THRESHOLDS and gc.get_freeze_count() > 0
    del before
    gc.collect()
    assert ref_before() is not None
    after = Node()
    after.me = after
    ref_after = weakref.ref(after)
    del after
    gc.collect()
    assert ref_after() is None


def test_resume_without_a_latest_checkpoint_continues_from_the_newest_other_one(data_root, tmp_path, capsys):
    """``checkpoints/latest`` gone, ``best`` there: resume=true continues from best (one line says so), never
    a fresh start that would replace the run's checkpoints and metrics."""
    import shutil

    from mtmarl import train
    from mtmarl.runtime import quote_task_overrides

    run = tmp_path / "run"
    args = [o for o in quote_task_overrides(_train_cmd(data_root, run, "training.eval_every=4")[3:])
            if not o.startswith("hydra.")]
    train.run(_compose([*args, "training.updates=8"]), run_dir=run)
    best = max(int(p.name) for p in (run / "checkpoints" / "best").iterdir() if p.name.isdigit())
    shutil.rmtree(run / "checkpoints" / "latest")
    capsys.readouterr()
    train.run(_compose([*args, "training.updates=12", "resume=true"]), run_dir=run)
    out = capsys.readouterr().out
    assert f"resuming from best/{best}" in out and f"resumed from update {best} of 12" in out, out
    assert "starting from scratch" not in out
    records = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["step"] <= best and records[-1]["step"] == 12


def _flip_a_byte(step_dir: Path) -> None:
    path = max((p for p in (step_dir / "state").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_resume_past_a_corrupt_latest_step_continues_from_the_one_before(data_root, tmp_path, capsys):
    """latest/8 damaged, latest/4 intact: resume=true sets 8 aside (kept, renamed, one warning), continues from
    4 with the metrics cut back to 4, and saves new steps that a later resume reads; a run whose every
    checkpoint is damaged is refused in one line, never started over."""
    from mtmarl import train
    from mtmarl.runtime import quote_task_overrides

    run = tmp_path / "run"
    args = [o for o in quote_task_overrides(_train_cmd(data_root, run, "training.checkpoint_every=4")[3:])
            if not o.startswith("hydra.")]
    train.run(_compose([*args, "training.updates=8"]), run_dir=run)
    latest = run / "checkpoints" / "latest"
    assert sorted(p.name for p in latest.iterdir()) == ["4", "8"]
    _flip_a_byte(latest / "8")
    capsys.readouterr()
    train.run(_compose([*args, "training.updates=12", "resume=true"]), run_dir=run)
    out, err = capsys.readouterr()
    assert "resumed from update 4 of 12" in out, out
    assert "latest/8" in err and "is corrupt" in err and "8.corrupt" in err, err
    assert (latest / "8.corrupt").is_dir() and sorted(int(p.name) for p in latest.iterdir() if p.name.isdigit()) == \
        [8, 12]
    steps = [json.loads(ln)["step"] for ln in (run / "metrics.jsonl").read_text().splitlines()
             if "train/loss" in json.loads(ln)]
    assert steps == [4, 8, 12], steps  # the rows after update 4 of the first session are gone, none twice

    for kind in ("latest", "best"):
        for step in (p for p in (run / "checkpoints" / kind).iterdir() if p.name.isdigit()):
            _flip_a_byte(step)
    before = sorted(p.name for p in (run / "checkpoints").rglob("*") if p.parent.parent == run / "checkpoints")
    with pytest.raises(SystemExit) as exit_:
        train.run(_compose([*args, "training.updates=16", "resume=true"]), run_dir=run)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "no checkpoint" in err and "can be read" in err, err
    assert (run / "results.json").is_file()  # the finished session's results stand
    assert not any(p.name.isdigit() for p in (run / "checkpoints" / "latest").iterdir()), before


def test_a_failure_hint_offers_resume_only_when_resuming_can_get_further(data_root, tmp_path, capsys, monkeypatch):
    """A run that fails after saving a checkpoint says how to resume; a resume that fails before saving a newer
    one does not send the user back to the command that just failed."""
    from mtmarl import train
    from mtmarl.runtime import quote_task_overrides

    run = tmp_path / "run"
    args = [o for o in quote_task_overrides(_train_cmd(data_root, run, "training.checkpoint_every=4")[3:])
            if not o.startswith("hydra.")]
    real = train._train_prepared

    def fail_after(*a, **k):  # trains (saving update 4), then fails as a full disk would at the end
        real(*a, **k)
        raise UserInputError("disk full")

    monkeypatch.setattr(train, "_train_prepared", fail_after)
    with pytest.raises(SystemExit):
        train.run(_compose([*args, "training.updates=4"]), run_dir=run)
    err = capsys.readouterr().err
    assert "disk full; the checkpoint of update 4 stands: resume with python -m mtmarl.train" in err, err

    def fail_at_once(*a, **k):
        raise UserInputError("bad restore")

    monkeypatch.setattr(train, "_train_prepared", fail_at_once)
    with pytest.raises(SystemExit):
        train.run(_compose([*args, "training.updates=8", "resume=true"]), run_dir=run)
    err = capsys.readouterr().err
    assert "bad restore; the checkpoint of update 4 stands, but this command resumed from it" in err, err
    assert "resume with" not in err
