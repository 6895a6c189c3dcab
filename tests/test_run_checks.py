"""Every command checks its values before it writes, takes the run directory's one lock, and turns a path the
file system refuses (full, read-only, too long, occupied) into one line; nothing it refused is left behind."""

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import synthetic_vault

from mtmarl import config_check, runtime
from mtmarl.configs import CONFIG_DIR
from mtmarl.errors import UserInputError
from mtmarl.training import rundir
from mtmarl.training.rundir import RunDirLock

ROOT = Path(__file__).resolve().parents[1]
TASK = "connector:grid=5,agents=2,horizon=8"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("checks") / "vault_data"
    synthetic_vault(root, TASK)
    return root


def _compose(config, overrides):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        return compose(config, overrides)


def _snapshot(d: Path) -> dict:
    return {str(p.relative_to(d)): (p.read_bytes() if p.is_file() else None) for p in sorted(d.rglob("*"))}


def _refused(capsys, fn, *args, **kwargs) -> str:
    """``fn`` exits 2 with one ``error:`` line and no traceback; returns that line."""
    with pytest.raises(SystemExit) as exit_:
        fn(*args, **kwargs)
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and err.startswith("error: ") and "\n" not in err, err
    return err


# ------------------------------------------------------------------------------ train values, in-process

TRAIN_BAD = [
    (["algo.lr=-0.01"], "algo.lr=-0.01 is not allowed: want a finite number > 0"),
    (["algo.lr=0"], "algo.lr=0"),
    (["algo.max_grad_norm=-1"], "algo.max_grad_norm=-1 is not allowed: want a finite number > 0"),
    (["algo.lr=nan"], "algo.lr=nan is not allowed: want a finite number"),
    (["algo.lr=inf"], "algo.lr=inf is not allowed: want a finite number"),
    (["+algo=mt_oryx", "algo.critic_coef=nan"], "algo.critic_coef=nan is not allowed: want a finite number"),
    (["+algo=hissd", "algo.critic_lr=-1e-3"], "algo.critic_lr=-0.001"),  # every algorithm: by field name
    (["algo.num_bins=abc"], "algo.num_bins='abc' is not allowed: want an integer"),
    (["algo.hl_gauss=maybe"], "algo.hl_gauss='maybe' is not allowed: want true or false"),
    (["training.batch_size=1"], "training.batch_size=1 is not allowed: want a multiple of the 2 learner devices"),
    (["training.batch_size=3"], "training.batch_size=3 is not allowed: want a multiple of the 2"),
    (["~training.batch_size", "algo.batch_size=5"], "algo.batch_size=5 is not allowed: want a multiple of the 2"),
    (["training.devices=3"], "training.devices=3 is not allowed: only 2 devices are available"),
    (["training.batch_size=100000000"], f"want an integer in [1, {config_check.MAX_BATCH_SIZE}]"),
    (["training.seq_len=10000000"], f"want an integer in [1, {config_check.MAX_SEQ_LEN}]"),
    (["~training.seq_len", "algo.seq_len=10000000"], "algo.seq_len=10000000"),
    (["seed=1180591620717411303424"], "seed=1180591620717411303424 is not allowed: want an integer in [0, 4294967295]"),
    (["+tasks=lbf_5"], "and +tasks=... were both given; pass one of them"),
    (["+online=mappo"], "+online=... does not apply to python -m mtmarl.train"),
    (["data.fraction=nan"], "data.fraction=nan"),
]


@pytest.mark.parametrize("args,want", TRAIN_BAD, ids=[" ".join(a) for a, _ in TRAIN_BAD])
def test_bad_train_value_is_one_line_before_the_run_dir(args, want, tmp_path, capsys, data_root):
    from mtmarl import train

    base = ["+algo=mt_bc_sable", f"task='{TASK}'", f"data.root={data_root}", "training=quick",
            "training.batch_size=16"]
    given = {a.split("=")[0].lstrip("~") for a in args}
    cfg = _compose("train", [b for b in base if b.split("=")[0] not in given] + args)
    err = _refused(capsys, train.run, cfg, run_dir=tmp_path / "run")
    assert want in err, err
    assert not (tmp_path / "run").exists()


def test_long_sequences_warn_of_the_compile_cost():
    assert config_check.check_seq_len(20, 100) is None and config_check.check_seq_len(100, 100) is None
    assert config_check.check_seq_len(64, 8) is None  # short sequences cost little however short the episodes
    warning = config_check.check_seq_len(1000, 100, "training.seq_len")
    assert warning.startswith("warning: training.seq_len=1000") and "longest episode (100 steps)" in warning
    assert "compile" in warning


def test_train_warns_of_a_sequence_longer_than_its_episodes(capsys):
    from mtmarl import tasks, train

    task_set = tasks.load(TASK)  # episodes of 8 steps
    plain = {"training": {"seq_len": None}, "algo": {"seq_len": 20}}
    train._warn_long_sequences(plain, task_set)
    assert capsys.readouterr().err == ""
    plain["training"]["seq_len"] = 1000
    train._warn_long_sequences(plain, task_set)
    assert capsys.readouterr().err.startswith("warning: training.seq_len=1000 is longer than the training tasks' "
                                              "longest episode (8 steps)")


def test_typed_fields_name_key_value_and_type():
    types = {"n": int, "x": float, "b": bool, "s": str, "k": int | None}
    config_check.check_typed_fields({"n": 3, "x": 2, "b": False, "s": "a", "k": None}, types)
    for values, want in (({"n": 2.5}, "algo.n=2.5 is not allowed: want an integer"),
                         ({"n": True}, "algo.n=True"),
                         ({"x": "abc"}, "algo.x='abc' is not allowed: want a number"),
                         ({"x": float("nan")}, "algo.x=nan is not allowed: want a finite number"),
                         ({"k": "3"}, "algo.k='3' is not allowed: want an integer or null"),
                         ({"b": "maybe"}, "want true or false")):
        with pytest.raises(UserInputError, match=want.replace("(", r"\(").replace(".", r"\.")):
            config_check.check_typed_fields(values, types)


def test_resume_compares_nan_as_itself():
    assert rundir.config_changes({"algo": {"lr": float("nan")}}, {"algo": {"lr": float("nan")}}) == []
    assert rundir.config_changes({"algo": {"lr": float("nan")}}, {"algo": {"lr": 0.1}}) == ["algo.lr (nan -> 0.1)"]


# --------------------------------------------------------------------------- evaluate values, in-process

EVALUATE_BAD = [
    (["greedy=maybe"], "greedy='maybe' is not allowed: want true, false or null"),
    (["eval.devices=0"], "eval.devices=0 is not allowed: want an integer >= 1 or null"),
    (["render_max_steps=-1"], "render_max_steps=-1 is not allowed: want an integer >= 1"),
    (["eval.episodes=-3"], "eval.episodes=-3"),
    (["seed=4294967296"], "seed=4294967296"),
    (["split=valid"], "split='valid'"),
    (["checkpoint_seed=5"], "checkpoint_seed=5 applies only to a trained policy: add checkpoint=<run dir>"),
    (["greedy=true"], "greedy=True applies only to a trained policy"),
    (["+tasks=lbf_5"], "and +tasks=... were both given"),
    (["+algo=mt_oryx"], "+algo=... does not apply to python -m mtmarl.evaluate: a checkpoint is evaluated with "
                        "the algorithm and network it was trained with"),
    (["+logger=default"], "+logger=... does not apply to python -m mtmarl.evaluate (it takes tasks)"),
]


@pytest.mark.parametrize("args,want", EVALUATE_BAD, ids=[" ".join(a) for a, _ in EVALUATE_BAD])
def test_bad_evaluate_value_is_one_line_and_writes_nothing(args, want, tmp_path, capsys):
    from mtmarl import evaluate

    cfg = _compose("evaluate", [f"task='{TASK}'", "eval.episodes=2", *args])
    err = _refused(capsys, evaluate.run, cfg, run_dir=tmp_path / "out")
    assert want in err, err
    assert not (tmp_path / "out").exists()


def _fake_training(run: Path, population: int = 1):
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(f"seed: 0\ntask: {TASK}\ntraining:\n  population: {population}\n")
    (run / "results.json").write_text('{"trained": 1}')


def test_checkpoint_seed_beyond_a_one_seed_run_is_refused(tmp_path, capsys):
    from mtmarl import diagnose, evaluate

    run = tmp_path / "run"
    _fake_training(run)
    before = _snapshot(run)
    cfg = _compose("evaluate", [f"checkpoint={run}", "checkpoint_seed=5"])
    err = _refused(capsys, evaluate.run, cfg, run_dir=tmp_path / "out")
    assert f"{run} trained one seed (0), not a population" in err and "no seed 5" in err
    err = _refused(capsys, diagnose.main, [str(run), "--seed", "5"])
    assert "no seed 5" in err
    assert _snapshot(run) == before and not (tmp_path / "out").exists()  # no seed_5/ either


@pytest.mark.parametrize("args,want", [(["--eval-episodes", "-3"], "--eval-episodes must be >= 0, got -3"),
                                       (["--batches", "0"], "--batches must be >= 1, got 0")])
def test_diagnose_counts_are_checked_before_anything(args, want, tmp_path, capsys):
    from mtmarl import diagnose

    run = tmp_path / "run"
    _fake_training(run)
    before = _snapshot(run)
    err = _refused(capsys, diagnose.main, [str(run), *args, "--out", str(tmp_path / "out")])
    assert want in err and _snapshot(run) == before and not (tmp_path / "out").exists()


def test_collect_seed_and_task_sources_are_checked(tmp_path, capsys):
    from mtmarl import collect

    for args, want in ((["seed=-1"], "seed=-1 is not allowed"), (["+tasks=lbf_5"], "were both given")):
        cfg = _compose("collect", [f"task='{TASK}'", f"collect.root={tmp_path / 'data'}", *args])
        assert want in _refused(capsys, collect.run, cfg)
    assert not (tmp_path / "data").exists()


# ---------------------------------------------------------------------------------- one lock per run dir

def test_evaluate_into_a_locked_dir_is_refused_and_changes_nothing(tmp_path, capsys):
    """A second evaluation into one directory (the first holds the lock) is refused with one line, before it
    evaluates anything; the first one's files stay as they are."""
    from mtmarl import evaluate

    out = tmp_path / "out"
    cfg = _compose("evaluate", [f"task='{TASK}'", "eval.episodes=2"])
    with RunDirLock(out):
        (out / "results.json").write_text('{"first": 1}')
        before = _snapshot(out)
        err = _refused(capsys, evaluate.run, cfg, run_dir=out)
        assert f"run dir {out} is in use by pid {os.getpid()}" in err and "choose another hydra.run.dir" in err
        assert _snapshot(out) == before


def test_evaluate_refuses_a_training_run_dir_naming_where_else(tmp_path, capsys):
    from mtmarl import evaluate

    run = tmp_path / "run"
    _fake_training(run)
    before = _snapshot(run)
    cfg = _compose("evaluate", [f"checkpoint={run}", f"task='{TASK}'"])
    monkey_trained = pytest.MonkeyPatch()
    # the checkpoint itself is fake: stand in for loading it (its checks ran already)
    monkey_trained.setattr(evaluate, "_trained", lambda cfg: (None, (), "x", "x", {
        "layout": None, "n_actions": 5, "task": TASK, "references": None}, None))
    try:
        err = _refused(capsys, evaluate.run, cfg, run_dir=run)
    finally:
        monkey_trained.undo()
    assert f"run dir {run} holds a training run" in err and f"hydra.run.dir={run / 'evaluate'}" in err
    assert _snapshot(run) == before


def test_concurrent_evaluate_from_another_process_is_refused(tmp_path):
    """Through the command line, from a new process: the lock held here refuses it with one line and exit 2."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    with RunDirLock(out):
        before = _snapshot(out)
        proc = subprocess.run([sys.executable, "-m", "mtmarl.evaluate", f"task={TASK}", "eval.episodes=2",
                               f"hydra.run.dir={out}"], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=300)
        assert _snapshot(out) == before  # no .hydra/, no evaluate.log
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[-1].startswith(f"error: run dir {out} is in use by pid {os.getpid()}"), proc.stderr


def test_refused_evaluate_through_hydra_leaves_no_dir(tmp_path, monkeypatch, capsys):
    """Hydra makes the run dir before evaluate runs: a refusal takes a new one back, and keeps an old one as
    it was (no .hydra/, no evaluate.log)."""
    from hydra.core.global_hydra import GlobalHydra

    from mtmarl import evaluate, runtime

    old = tmp_path / "old"
    old.mkdir()
    (old / "notes.txt").write_text("mine")
    for out in (tmp_path / "new", old):
        monkeypatch.setattr(sys, "argv", ["mtmarl.evaluate", f"task={TASK}", "greedy=maybe",
                                          f"hydra.run.dir={out}", "hydra/hydra_logging=none",
                                          "hydra/job_logging=none"])
        try:
            err = _refused(capsys, runtime.hydra_cli, "evaluate", evaluate.run)
        finally:
            GlobalHydra.instance().clear()
        assert "greedy='maybe'" in err
    assert not (tmp_path / "new").exists() and _snapshot(old) == {"notes.txt": b"mine"}


def test_collect_takes_each_tasks_lock_and_skips_a_task_another_collector_holds(tmp_path, capsys):
    from mtmarl import collect
    from mtmarl.online.partial import path as partial_path
    from mtmarl.tasks import TaskSpec

    root = tmp_path / "data"
    held = partial_path(root, TaskSpec.parse(TASK)).with_suffix("")
    cfg = _compose("collect", [f"task='{TASK}'", f"collect.root={root}", "collect.progress=false"])
    with RunDirLock(held):
        (res,) = collect.run(cfg)
    assert res["busy"] and f"another collector has it ({held})" in "".join(capsys.readouterr().err.split("\n"))


def test_diagnose_takes_its_output_dirs_lock(tmp_path, capsys):
    from mtmarl import diagnose

    run = tmp_path / "run"
    _fake_training(run)
    with RunDirLock(run):
        err = _refused(capsys, diagnose.main, [str(run)])
    assert "is in use by pid" in err and "pass --out <another dir>" in err


def test_failed_command_removes_what_its_lock_created(tmp_path):
    new = tmp_path / "a" / "b"
    with pytest.raises(RuntimeError), RunDirLock(new):
        raise RuntimeError("failed")
    assert not (tmp_path / "a").exists()
    old = tmp_path / "old"
    old.mkdir()
    (old / ".lock").write_text("")
    with pytest.raises(RuntimeError), RunDirLock(old):
        raise RuntimeError("failed")
    assert (old / ".lock").exists()  # it was there before
    with RunDirLock(new):
        pass
    assert (new / ".lock").read_text() == ""  # a finished command keeps its directory
    with RunDirLock(tmp_path / "data", tidy=True):
        pass
    assert not list((tmp_path / "data").iterdir())  # a data directory keeps no lock file


# ------------------------------------------------------------------------- paths the file system refuses

def test_run_paths_the_file_system_refuses(tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("x")
    for path, want in ((tmp_path / "afile", "afile is a file, not a directory"),
                       (tmp_path / "afile" / "run", "afile is a file, not a directory"),
                       (tmp_path / ("x" * 300), "is longer than the")):
        with pytest.raises(UserInputError, match=f"cannot use run dir .*: .*{want}.*choose another hydra.run.dir"):
            runtime.check_run_path(path)
    runtime.check_run_path(tmp_path / "new" / "run")  # a place that can be made is fine
    monkeypatch.setattr(os, "access", lambda *a, **k: False)  # as on a read-only file system
    with pytest.raises(UserInputError, match="is not writable"):
        runtime.check_run_path(tmp_path / "new" / "run")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_run_dir_argument_is_checked_before_hydra(tmp_path, monkeypatch, capsys):
    from mtmarl import evaluate, runtime

    monkeypatch.setattr(sys, "argv", ["mtmarl.evaluate", f"task={TASK}", f"hydra.run.dir={tmp_path / ('x' * 300)}"])
    err = _refused(capsys, runtime.hydra_cli, "evaluate", evaluate.run)
    assert "cannot use run dir" in err and not list(tmp_path.iterdir())


@pytest.mark.parametrize("value", ["abc", "0", "-4", "2.5"])
def test_malformed_host_device_count_is_one_line(value):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MTMARL_HOST_DEVICES": value}
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run([sys.executable, "-c", "import mtmarl"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip() == (
        f"error: MTMARL_HOST_DEVICES={value!r} is not allowed: want an integer >= 1"), proc.stderr


def _enospc(path):
    def raise_(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return raise_


def test_disk_full_in_evaluate_is_one_line_and_leaves_the_dir_as_it_was(tmp_path, monkeypatch, capsys):
    from mtmarl import evaluate

    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(evaluate, "evaluate_set", lambda *a, **k: [])  # nothing to compile: the write fails
    monkeypatch.setattr(evaluate, "write_results", _enospc(out / "results.json"))
    err = _refused(capsys, evaluate.run, _compose("evaluate", [f"task='{TASK}'"]), run_dir=out)
    assert err == f"error: cannot write ({out / 'results.json'}): No space left on device"
    assert not list(out.iterdir())  # its lock file went with it


def test_atomic_write_on_a_full_disk_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    from mtmarl.atomic import atomic_write_text

    path = tmp_path / "summary.json"
    path.write_text("old")
    monkeypatch.setattr(os, "fsync", _enospc(path))
    with pytest.raises(OSError):
        atomic_write_text(path, "new")
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"] and path.read_text() == "old"


@pytest.mark.parametrize("checkpoint", [False, True])
def test_disk_full_in_training_is_one_line_and_the_rerun_is_not_blocked(checkpoint, tmp_path, capsys, data_root,
                                                                        monkeypatch):
    """Before its first checkpoint a failed run is removed (the same command runs again); after one, it stays
    and the line says how to resume."""
    from mtmarl import train
    from mtmarl.training import loop

    run = tmp_path / "run"

    def full(cfg, task_set, run_dir, references, log, stop_after):
        log.log(4, {"loss": 1.0})
        if checkpoint:
            (run_dir / "checkpoints" / "latest" / "4").mkdir(parents=True)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(run_dir / "metrics.jsonl"))

    monkeypatch.setattr(loop, "run_training", full)
    cfg = _compose("train", ["+algo=mt_bc_sable", f"task='{TASK}'", f"data.root={data_root}", "training=quick",
                             "logger.neptune=false", "logger.progress=false"])
    err = _refused(capsys, train.run, cfg, run_dir=run)
    assert f"cannot write ({run / 'metrics.jsonl'}): No space left on device" in err
    if checkpoint:
        assert "the checkpoint of update 4 stands: resume with" in err and "resume=true" in err
        assert (run / "config.yaml").exists() and (run / "metrics.jsonl").read_text()
    else:
        assert "had no checkpoint yet and was removed" in err and not run.exists()


@pytest.mark.parametrize("damage", ["malformed", "wrong_env"])
def test_a_bad_vault_is_one_line_and_leaves_no_run_behind(damage, tmp_path, capsys, data_root):
    """A vault whose metadata is not JSON, or one recorded on another env, is refused while loading; the fresh
    run directory (config, metrics, TensorBoard events) goes with it, so the same command can run again."""
    import shutil

    from mtmarl import train
    from mtmarl.tasks import TaskSpec

    root = tmp_path / "vault_data"
    shutil.copytree(data_root, root)
    vault = next(root.glob("*/*.vlt"))
    if damage == "malformed":
        (vault / "mtmarl.json").write_text("{not json")
    else:  # an LBF vault where the Connector task's vault belongs
        shutil.rmtree(vault)
        other = tmp_path / "other"
        synthetic_vault(other, "lbf:grid=5,agents=2,food=1")
        shutil.copytree(next(other.glob("*/*.vlt")), vault)
    run = tmp_path / "run"
    cfg = _compose("train", ["+algo=mt_bc_sable", f"task='{TASK}'", f"data.root={root}", "training=quick",
                             "logger.neptune=false", "logger.progress=false"])
    err = _refused(capsys, train.run, cfg, run_dir=run)
    assert str(vault) in err and "had no checkpoint yet and was removed" in err
    assert not run.exists() and TaskSpec.parse(TASK).env == "connector"
