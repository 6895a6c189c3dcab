"""Several processes: config checks, start-up (explicit or detected from SLURM variables), and training over
2 real CPU processes joined through a local coordinator (gloo), compared with 1 process of 2 devices."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from helpers import xla_flags

from mtmarl.distributed import settings
from mtmarl.errors import UserInputError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_unset_means_one_process():
    assert settings(None) is None
    assert settings({"coordinator_address": None, "num_processes": None, "process_id": None,
                     "cpu_collectives": "gloo"}) is None


@pytest.mark.parametrize("cfg,message", [
    ({"num_processes": 2}, "missing coordinator_address, process_id"),
    ({"coordinator_address": "h:1", "num_processes": 0, "process_id": 0}, "num_processes must be"),
    ({"coordinator_address": "h:1", "num_processes": 2, "process_id": 2}, r"process_id must be an integer in 0\.\.1"),
    ({"coordinator_address": "h:1", "num_processes": 2, "process_id": True}, "process_id must be"),
    ({"coordinator_address": "nohost", "num_processes": 2, "process_id": 0}, "host:port"),
    ({"coordinator_address": "h:99999", "num_processes": 2, "process_id": 0}, "host:port"),
])
def test_bad_settings_are_one_clear_error(cfg, message):
    with pytest.raises(UserInputError, match=message):
        settings(cfg)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


WORKER = textwrap.dedent("""
    import json, sys
    import jax, jax.numpy as jnp
    import numpy as np
    from jax.experimental import multihost_utils
    from mtmarl.distributed import initialize

    pid, port = int(sys.argv[1]), int(sys.argv[2])
    assert initialize({"coordinator_address": f"127.0.0.1:{port}", "num_processes": 2, "process_id": pid,
                       "cpu_collectives": "gloo"})
    # a cross-process collective: every process contributes its id + 1 and receives all of them
    gathered = multihost_utils.process_allgather(jnp.array([pid + 1.0]))
    # and a psum over the global device mesh (one program spanning both processes)
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("d",))
    spec = jax.sharding.PartitionSpec("d")
    local = np.full((jax.local_device_count(),), pid + 1.0, np.float32)
    x = multihost_utils.host_local_array_to_global_array(local, mesh, spec)
    total = jax.jit(jnp.sum, out_shardings=jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))(x)
    print(json.dumps({"process_index": jax.process_index(), "process_count": jax.process_count(),
                      "global_devices": jax.device_count(), "local_devices": jax.local_device_count(),
                      "gathered": np.asarray(gathered).ravel().tolist(), "sum": float(total)}))
    jax.distributed.shutdown()
""")


@pytest.mark.slow
def test_two_cpu_processes_share_collectives(tmp_path):
    """Two processes on 127.0.0.1 (gloo): each sees both processes' devices and collectives span them."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               XLA_FLAGS=xla_flags(2), JAX_PLATFORMS="cpu")
    procs = [subprocess.Popen([sys.executable, str(script), str(i), str(port)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for i in range(2)]
    outs = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        assert p.returncode == 0, err[-3000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    assert [o["process_index"] for o in outs] == [0, 1]
    for o in outs:
        assert (o["process_count"], o["global_devices"], o["local_devices"]) == (2, 4, 2)
        assert o["gathered"] == [1.0, 2.0]
        assert o["sum"] == 2 * 1.0 + 2 * 2.0  # each process's 2 devices hold its id + 1


TASK = "connector:grid=5,agents=2,horizon=8"

TRAIN_WORKER = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import jax, numpy as np
    from hydra import compose, initialize_config_dir
    from mtmarl import train
    from mtmarl.configs import CONFIG_DIR
    from mtmarl.runtime import tune_garbage_collector

    tune_garbage_collector()  # as the CLI does after its imports (each full collection would walk them)
    pid, port, root, run_dir, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], Path(sys.argv[4]), sys.argv[5]
    stop_after, resume = int(sys.argv[6]) or None, sys.argv[7]  # stop after that many updates / resume
    tasks = json.loads(sys.argv[8]) if len(sys.argv) > 8 else ["task='%s'"]  # the task overrides
    got, start = {"read": []}, train._start_processes

    def start_then_spy(dist):  # keep run_training's final carry and the tasks read; its module starts JAX
        started = start(dist)
        from mtmarl.training import loop
        real, read = loop.run_training, loop.load_task_data
        loop.run_training = lambda *a, **k: got.setdefault("out", real(*a, **k))
        loop.load_task_data = lambda *a, **k: got["read"].append(k.get("tasks")) or read(*a, **k)
        return started

    train._start_processes = start_then_spy
    overrides = ["+algo=mt_bc_sable", *tasks, f"data.root={root}", "network=tiny", "network.embed_dim=16",
                 "training=quick", "training.updates=4", "training.updates_per_call=2", "training.batch_size=4",
                 "training.seq_len=8", "training.checkpoint_every=2", "training.eval_every=2",
                 "training.eval_episodes=2", "eval.episodes=2", "algo.lr=1e-2", "logger.progress=false",
                 "logger.neptune=false", f"resume={resume}"]
    if pid >= 0:  # else one process (the reference)
        overrides += [f"distributed.coordinator_address=127.0.0.1:{port}", "distributed.num_processes=2",
                      f"distributed.process_id={pid}"]
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        cfg = compose("train", overrides)
    rows = train.run(cfg, run_dir=run_dir, stop_after=stop_after)
    np.savez(out, *jax.tree.leaves(got["out"]["carry"]))
    print(json.dumps({"processes": jax.process_count(), "devices": jax.device_count(), "rows": len(rows),
                      "read": got["read"]}))
""" % TASK)


def _spawn(script, args, devices: int):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               XLA_FLAGS=xla_flags(devices), JAX_PLATFORMS="cpu",
               JAX_DISABLE_MOST_OPTIMIZATIONS="true", PYTHONWARNINGS="ignore")
    return subprocess.Popen([sys.executable, str(script), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _finish(procs, timeout=600):
    outs = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        assert p.returncode == 0, err[-3000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    return outs


# Two ad-hoc training tasks of one set, each device holding only its share (task m on device m mod 2;
# uneven shares and empty slots are tested in-process, tests/test_batching.py). One agent count: process 0
# evaluates both in one stacked program (a second agent count would add a program to trace and compile).
SHARDED = ["+tasks=connector_10", "tasks.train=[{grid:5,agents:2,horizon:8},{grid:6,agents:2,horizon:8}]",
           "tasks.test=[]", "training.shard_data=true"]


def _two_processes_and_reference(tmp_path, resume_midway: bool, sharded: bool = False) -> None:
    """Train 4 updates with 2 processes x 1 CPU device (gloo), and with 1 process x 2 devices; compare.

    ``resume_midway``: the 2-process run stops after 2 updates and a second 2-process run resumes it.
    ``sharded``: two tasks with ``training.shard_data=true``; each process reads only its own vaults.
    """
    from helpers import synthetic_vault

    tasks = [TASK, "connector:grid=6,agents=2,horizon=8"] if sharded else [TASK]
    for task in tasks:
        synthetic_vault(tmp_path / "vaults", task)
    extra = [json.dumps(SHARDED)] if sharded else []
    script = tmp_path / "train_worker.py"
    script.write_text(TRAIN_WORKER)
    runs = [tmp_path / "run", tmp_path / "run_p1", tmp_path / "run_ref"]
    two = lambda *how: [_spawn(script, [pid, port, tmp_path / "vaults", run, tmp_path / f"params{pid}.npz", *how,
                                        *extra], devices=1) for pid, run in enumerate(runs[:2])]  # noqa: E731
    ref = _spawn(script, [-1, 0, tmp_path / "vaults", runs[2], tmp_path / "params_ref.npz", 0, "false", *extra],
                 devices=2)
    port = _free_port()
    if resume_midway:
        assert [o["rows"] for o in _finish(two(2, "false"))] == [0, 0]  # stopped: no final evaluation
        port = _free_port()
    outs = _finish(two(0, str(resume_midway).lower()) + [ref])
    if sharded:  # process p reads the tasks of device p; the reference process both devices' tasks
        assert [o["read"] for o in outs] == [[[0]], [[1]], [[0, 1]]]
    assert [(o["processes"], o["devices"]) for o in outs] == [(2, 2), (2, 2), (1, 2)]
    assert outs[0]["rows"] == outs[2]["rows"] == len(tasks) and outs[1]["rows"] == 0  # process 0 evaluates
    ref = np.load(tmp_path / "params_ref.npz")
    assert int(ref[ref.files[-1]]) == 4  # the carry's last leaf counts the updates done
    for pid in (0, 1):
        got = np.load(tmp_path / f"params{pid}.npz")
        assert len(got.files) == len(ref.files)
        for name in ref.files:
            np.testing.assert_allclose(got[name], ref[name], rtol=1e-5, atol=1e-6, err_msg=name)
    # process 0 alone wrote its run directory (one log, checkpoints, results); process 1 touched nothing
    metrics = (runs[0] / "metrics.jsonl").read_text()
    assert "eval/train_score" in metrics and ("run/resumed_from" in metrics) == resume_midway
    assert (runs[0] / "results.json").is_file() and (runs[0] / "checkpoints" / "latest").is_dir()
    assert not runs[1].exists()


@pytest.mark.slow
def test_two_processes_train_the_parameters_of_one_process_with_two_devices(tmp_path):
    """2 processes x 1 device train what 1 process x 2 devices trains; only process 0 writes and evaluates.

    Every device takes slice d (its global index) of the same global batch, so the two layouts compute the
    same update; parameters agree up to the order of float reductions. Process 1 waits for process 0's
    periodic evaluation (update 2) and final one at barriers. (Slow: the sharded test below runs the same
    path with task shards; the resume test covers replicated buffers too.)
    """
    _two_processes_and_reference(tmp_path, resume_midway=False)


def test_two_processes_reading_their_share_of_the_vaults_train_what_one_process_trains(tmp_path):
    """``training.shard_data=true`` over 2 tasks: process 0 reads task 0, process 1 task 1, and they
    train the parameters 1 process x 2 devices trains with the same shards (each device draws its half of
    the batch from its own tasks with the key folded with its global index)."""
    _two_processes_and_reference(tmp_path, resume_midway=False, sharded=True)


@pytest.mark.slow
def test_two_processes_resume_on_process_0s_checkpoint(tmp_path):
    """Stopped after 2 of 4 updates and resumed: process 0 reads its checkpoint and hands the carry to
    process 1; the result is still that of 1 uninterrupted process with 2 devices."""
    _two_processes_and_reference(tmp_path, resume_midway=True)


def test_a_refusal_on_process_0_stops_every_process_with_its_reason(tmp_path):
    """Process 0 refuses (no vaults under data.root): the other process is told why instead of waiting for it."""
    script = tmp_path / "train_worker.py"
    script.write_text(TRAIN_WORKER)
    port = _free_port()
    procs = [_spawn(script, [pid, port, tmp_path / "empty", tmp_path / f"run{pid}", tmp_path / "unused.npz", 0,
                             "false"], 1) for pid in (0, 1)]
    errs = []
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 2, err[-3000:]
        errs.append(err)
    assert "training vault(s)" in errs[0] and "process 0 did not start the run" not in errs[0]
    assert "process 0 did not start the run" in errs[1] and "training vault(s)" in errs[1]
    assert not any((tmp_path / f"run{pid}").exists() for pid in (0, 1))


SLURM_WORKER = textwrap.dedent("""
    import json
    import jax, jax.numpy as jnp, numpy as np
    from jax.experimental import multihost_utils
    from mtmarl.distributed import initialize

    assert initialize({"auto": True, "cpu_collectives": "gloo"})  # everything from the SLURM variables
    gathered = multihost_utils.process_allgather(jnp.array([jax.process_index() + 1.0]))
    print(json.dumps({"process_index": jax.process_index(), "process_count": jax.process_count(),
                      "gathered": np.asarray(gathered).ravel().tolist()}))
""")


def test_auto_detects_two_processes_from_slurm_variables(tmp_path):
    """``distributed.auto=true`` under (simulated) SLURM: JAX reads count, id and coordinator node itself."""
    script = tmp_path / "slurm_worker.py"
    script.write_text(SLURM_WORKER)
    slurm = {"SLURM_JOB_ID": "4242", "SLURM_STEP_NODELIST": "localhost", "SLURM_NTASKS": "2",
             "SLURM_LOCALID": "0", "JAX_COORDINATOR_PORT": str(_free_port())}  # the port: else one from the job id
    procs = []
    for pid in (0, 1):
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   XLA_FLAGS=xla_flags(1), JAX_PLATFORMS="cpu",
                   SLURM_PROCID=str(pid), **slurm)
        procs.append(subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, env=env))
    outs = _finish(procs, timeout=240)
    assert [(o["process_index"], o["process_count"]) for o in outs] == [(0, 2), (1, 2)]
    assert all(o["gathered"] == [1.0, 2.0] for o in outs)


def test_the_train_config_selects_auto_detection():
    """``distributed.auto=true`` (+ local_device_ids) composes, passes the config checks, and initialises
    with nothing but the device ids."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from mtmarl.config_check import check_train_config
    from mtmarl.configs import CONFIG_DIR

    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        cfg = compose("train", ["+algo=mt_bc_sable", "+tasks=lbf_5", "distributed.auto=true",
                                "distributed.local_device_ids=[0,1]"])
    plain = OmegaConf.to_container(cfg, resolve=True)
    check_train_config(plain)
    assert settings(plain["distributed"]) == {"local_device_ids": [0, 1]}
    with pytest.raises(UserInputError, match="distributed.auto must be true or false"):
        settings({**plain["distributed"], "auto": "yes"})
    with pytest.raises(UserInputError, match="local_device_ids must be"):
        settings({**plain["distributed"], "local_device_ids": [-1]})


def test_train_starts_the_processes_from_the_distributed_section(monkeypatch):
    """``auto=true`` hands detection to ``jax.distributed.initialize`` (no arguments: SLURM, Open MPI);
    explicit settings switch detection off; none means one process and no call."""
    import jax

    from mtmarl.train import _start_processes

    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    assert not _start_processes(None) and not calls
    assert _start_processes({"auto": True, "coordinator_address": None, "num_processes": None, "process_id": None})
    assert _start_processes({"coordinator_address": "h:1", "num_processes": 2, "process_id": 1,
                             "local_device_ids": [0, 1]})
    assert calls == [{}, {"coordinator_address": "h:1", "num_processes": 2, "process_id": 1,
                          "local_device_ids": [0, 1], "cluster_detection_method": "deactivate"}]


@pytest.mark.slow
def test_a_signal_to_one_process_stops_both_with_process_0s_checkpoint(tmp_path):
    """The CLI over 2 processes: SIGTERM to process 1 alone stops both after the same call (they agree once
    per call); process 0 checkpoints that update and prints the resume line; both exit 143."""
    import signal
    import time

    from helpers import synthetic_vault

    synthetic_vault(tmp_path / "vaults", TASK)
    port, runs = _free_port(), [tmp_path / "run", tmp_path / "run_p1"]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), JAX_PLATFORMS="cpu",
               XLA_FLAGS=xla_flags(1), JAX_DISABLE_MOST_OPTIMIZATIONS="true",
               PYTHONWARNINGS="ignore")
    cmd = lambda pid: [sys.executable, "-m", "mtmarl.train", "+algo=mt_bc_sable", f"task={TASK}",  # noqa: E731
                       f"data.root={tmp_path / 'vaults'}", f"hydra.run.dir={runs[pid]}", "network=tiny",
                       "network.embed_dim=16", "training=quick", "training.updates=40000", "training.updates_per_call=2",
                       "training.batch_size=4", "training.seq_len=8", "training.log_every=2", "eval.episodes=2",
                       "logger.neptune=false", "logger.progress=false", f"distributed.coordinator_address=127.0.0.1:{port}",
                       "distributed.num_processes=2", f"distributed.process_id={pid}"]
    procs = [subprocess.Popen(cmd(pid), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for pid in (0, 1)]
    try:
        metrics, t0 = runs[0] / "metrics.jsonl", time.time()
        while not (metrics.exists() and metrics.read_text().strip()):  # process 0 logs: training is under way
            assert time.time() - t0 < 300 and all(p.poll() is None for p in procs), "no training progress"
            time.sleep(0.2)
        procs[1].send_signal(signal.SIGTERM)
        outs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [143, 143], outs[0][1][-2000:] + outs[1][1][-2000:]
    line = [ln for ln in outs[0][0].splitlines() if ln.startswith("interrupted at update")]
    assert len(line) == 1 and "checkpoint saved" in line[0], outs[0][0]
    step = int(line[0].split()[3])
    assert (runs[0] / "checkpoints" / "latest" / str(step)).is_dir() and 0 < step < 40000
    assert not any(runs[1].iterdir())  # Hydra made process 1's directory; nothing was written into it
