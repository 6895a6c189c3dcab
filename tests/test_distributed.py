"""Multi-process start-up: config checks, and 2 real CPU processes joined through a local coordinator."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

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
               XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
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


def test_train_refuses_several_processes_before_starting_them():
    """The learner is data-parallel within one process only: several processes are refused up front."""
    from mtmarl.train import _start_processes

    _start_processes(None)  # one process: nothing to do
    with pytest.raises(UserInputError, match="multi-process training is not supported yet"):
        _start_processes({"coordinator_address": "127.0.0.1:1", "num_processes": 2, "process_id": 0})
