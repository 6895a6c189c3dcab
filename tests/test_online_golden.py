"""Golden values: the online learners train and record as they did before the Anakin builder.

MAPPO (feed-forward), recurrent MAPPO and online Sable each run 2 training
chunks of 2 PPO updates on a tiny Connector task, pmapped over the 2 forced CPU
devices (so the ``pmean`` of gradients and the per-device key streams are in the
program), then record once. The parameters, optimiser state, env batch and key
after the chunks, both chunks' metrics, the actor parameters the evaluator gets
and the recorded transitions are compared with ``tests/golden/online.json``:
integers, keys and actions exactly, floats as fingerprints (``helpers.fingerprint``:
the parameters' and optimiser state's change over the chunks, the rest as they are)
within ``RTOL``. A reordered key split, a lost reset or a different minibatch layout
changes the actions, keys or the update by far more than that.

Online Sable's values include its output-layer init (``online.head_init``); a change to the init or the
update is a change to these values, recorded on purpose.

The values were recorded with XLA's optimisations on; the suite compiles with most of them off (conftest),
which moves them by less than ``RTOL`` (measured below) and halves this file's time. Regenerate only on purpose:
``python tests/test_online_golden.py --write``.
"""

import json
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers import assert_fingerprints_close, assert_metrics_close, fingerprint

RTOL = 1e-3  # of each fingerprinted quantity's norm; measured noise (optimised vs unoptimised compile): below 5e-6
GOLDEN = Path(__file__).resolve().parent / "golden" / "online.json"
TASK = "connector:grid=5,agents=2"
PPO = {"num_envs": 4, "rollout_len": 8, "epochs": 2, "minibatches": 2, "updates_per_chunk": 2, "resets_per_env": 2,
       "record_envs": 4, "record_len": 16}
CONFIGS = {
    "mappo": {"system": "mappo", "hidden": [16], **PPO},
    "mappo_recurrent": {"system": "mappo", "hidden": [16], "recurrent": True, "gru_hidden": 8, **PPO},
    "sable": {"system": "sable", "embed_dim": 16, "n_heads": 2, "chunk_size": 3, **PPO},
}


def record(name) -> dict:
    from mtmarl.algos.registry import make_online_system, online_config
    from mtmarl.tasks import TaskSpec

    assert jax.local_device_count() == 2, "the golden values are for 2 devices"
    env = TaskSpec.parse(TASK).build()
    system = make_online_system(env, online_config(CONFIGS[name]))
    state = system.init(jax.random.PRNGKey(0))
    initial = jax.tree.map(np.asarray, (state.params, state.opt_state, system.actor_params(state)))
    metrics = []
    for _ in range(2):
        state, m = system.train_chunk(state)
        metrics.append(m)
    traj = system.record(state, jax.random.PRNGKey(1))
    # ``replayed_starts`` is not part of the golden values (its own test: tests/test_online.py)
    metrics = [m._replace(loss=m.loss._replace(extra={k: v for k, v in m.loss.extra.items() if k != "replayed_starts"}))
               for m in metrics]
    return {"initial": fingerprint(initial),
            "params": fingerprint(state.params, initial[0]), "opt_state": fingerprint(state.opt_state, initial[1]),
            "actor_params": fingerprint(system.actor_params(state), initial[2]),
            "envs": fingerprint(state.envs), "key": fingerprint(state.key), "update": np.asarray(state.update).tolist(),
            "metrics": fingerprint(metrics),
            # ``success`` joined Transition after the first golden values (Connector has no wins: all False)
            "record": fingerprint(traj._replace(success=None)), "no_success": not np.asarray(traj.success).any(),
            "recorded_actions": np.asarray(traj.actions)[:, :, 0, 0].tolist(),
            "return_sum": [float(x).hex() for x in np.asarray(metrics[-1].return_sum)[0]]}


# MAPPO in the fast suite; the recurrent and Sable learners share the builder and have their own replay tests
@pytest.mark.parametrize("name", [n if n == "mappo" else pytest.param(n, marks=pytest.mark.slow) for n in sorted(CONFIGS)])
def test_two_chunks_and_a_recording_match_the_golden_values(name):
    golden = json.loads(GOLDEN.read_text())[name]
    got = record(name)
    assert sorted(got) == sorted(golden)
    for key in ("update", "recorded_actions", "no_success"):
        assert got[key] == golden[key], key
    assert_metrics_close(dict(enumerate(got["return_sum"])), dict(enumerate(golden["return_sum"])), RTOL, "return_sum")
    for key in ("initial", "params", "opt_state", "actor_params", "envs", "key", "metrics", "record"):
        assert_fingerprints_close(got[key], golden[key], RTOL, key)
    assert got["no_success"]


if __name__ == "__main__" and "--write" in sys.argv:
    jax.config.update("jax_disable_most_optimizations", False)
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps({n: record(n) for n in sorted(CONFIGS)}, indent=1) + "\n")
    print(GOLDEN.read_text())
