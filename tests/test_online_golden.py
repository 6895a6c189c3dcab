"""Golden values: the online learners train and record exactly as before the Anakin builder.

MAPPO (feed-forward), recurrent MAPPO and online Sable each run 2 training
chunks of 2 PPO updates on a tiny Connector task, pmapped over the 2 forced CPU
devices (so the ``pmean`` of gradients and the per-device key streams are in the
program), then record once. The parameters, optimiser state, env batch and key
after the chunks, both chunks' metrics, the actor parameters the evaluator gets
and the recorded transitions are hashed bit for bit and compared with
``tests/golden/online.json``, recorded on branch online-builder (aef3234) before
the online systems shared one builder. A change of any bit (a reordered key
split, a lost reset, a different minibatch layout) fails the test.

The compile setting is pinned (XLA optimisations on) since it can change float
rounding. Regenerate only on purpose: ``python tests/test_online_golden.py --write``.
"""

import hashlib
import json
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

GOLDEN = Path(__file__).resolve().parent / "golden" / "online.json"
TASK = "connector:grid=5,agents=2"
PPO = {"num_envs": 4, "rollout_len": 8, "epochs": 2, "minibatches": 2, "updates_per_chunk": 2, "resets_per_env": 2,
       "record_envs": 4, "record_len": 16}
CONFIGS = {
    "mappo": {"system": "mappo", "hidden": [16], **PPO},
    "mappo_recurrent": {"system": "mappo", "hidden": [16], "recurrent": True, "gru_hidden": 8, **PPO},
    "sable": {"system": "sable", "embed_dim": 16, "n_heads": 2, "chunk_size": 3, **PPO},
}


def _digest(tree) -> str:
    """sha256 (16 hex digits) of the bytes, dtypes and shapes of a pytree's leaves, in order."""
    h = hashlib.sha256()
    for x in jax.tree.leaves(tree):
        x = np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x)
        h.update(f"{x.dtype}{x.shape}".encode())
        h.update(x.tobytes())
    return h.hexdigest()[:16]


def record(name) -> dict:
    from mtmarl.online.registry import make_online_system, online_config
    from mtmarl.tasks import TaskSpec

    assert jax.local_device_count() == 2, "the golden values are for 2 devices"
    env = TaskSpec.parse(TASK).build()
    system = make_online_system(env, online_config(CONFIGS[name]))
    state = system.init(jax.random.PRNGKey(0))
    metrics = []
    for _ in range(2):
        state, m = system.train_chunk(state)
        metrics.append(m)
    traj = system.record(state, jax.random.PRNGKey(1))
    return {"params": _digest(state.params), "opt_state": _digest(state.opt_state), "envs": _digest(state.envs),
            "key": _digest(state.key), "update": np.asarray(state.update).tolist(),
            "actor_params": _digest(system.actor_params(state)), "metrics": _digest(metrics),
            # ``success`` joined Transition after the golden values (Connector has no wins: all False)
            "record": _digest(traj._replace(success=None)), "no_success": not np.asarray(traj.success).any(),
            "recorded_actions": np.asarray(traj.actions)[:, :, 0, 0].tolist(),
            "return_sum": [float(x).hex() for x in np.asarray(metrics[-1].return_sum)[0]]}


# MAPPO in the fast suite; the recurrent and Sable learners share the builder and have their own replay tests
@pytest.mark.parametrize("name", [n if n == "mappo" else pytest.param(n, marks=pytest.mark.slow) for n in sorted(CONFIGS)])
def test_two_chunks_and_a_recording_are_bit_identical_to_the_golden_values(name, _xla_optimisations_on):
    golden = json.loads(GOLDEN.read_text())[name]
    got = record(name)
    for key in golden:
        assert got[key] == golden[key], key
    assert got["no_success"]


if __name__ == "__main__" and "--write" in sys.argv:
    jax.config.update("jax_disable_most_optimizations", False)
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps({n: record(n) for n in sorted(CONFIGS)}, indent=1) + "\n")
    print(GOLDEN.read_text())
