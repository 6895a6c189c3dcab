"""Golden values: the three algorithms train as they did before the algorithm protocol.

Each algorithm runs 3 updates through the real engine (sampling, one pmapped
``lax.scan`` call on one device) on a tiny synthetic two-task buffer, then acts
once. The actions are compared exactly with ``tests/golden/algos.json``; the
metrics within ``METRIC_RTOL``; the initial state and the change 3 updates made to
the parameters, target parameters and optimiser state as fingerprints
(``helpers.fingerprint``: integers exactly, floats as a random projection) within
``CHANGE_RTOL`` of the golden change. A different key split, batch, loss term or a
lost Polyak step changes the update by far more than that.

Why tolerances and not bits: the golden values were first hashed bit for bit (recorded
on main 78e54a2, before the algorithm protocol), and on a CPU with other vector units
(AVX2) that very commit's code disagreed in the last bits (metrics up to 5e-4 relative),
while the protocol's code matched it there bit for bit. The fingerprints were then
recorded from the protocol's code on that CPU.

The values were recorded with XLA's optimisations on; the suite compiles with most of them off (conftest),
which moves these quantities by less than the tolerances (measured above), and saves about 20 s of compiling per
run of this file. Regenerate only on purpose: ``python tests/test_golden_algos.py --write``.
"""

import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_fingerprints_close, assert_metrics_close, fingerprint, random_task

GOLDEN = Path(__file__).resolve().parent / "golden" / "algos.json"
NAMES = ("mt_bc_sable", "mt_cql_sable", "mt_oryx")
A = 4
METRIC_RTOL = 2e-3   # cross-CPU: at most 4.8e-4 measured (MT CQL-Sable's gradient norm)
# of the update's size. Measured noise (XLA's optimised vs unoptimised compile of the same code, a harsher change
# than another CPU): MT Oryx / MT BC-Sable below 1e-4, MT CQL-Sable 1.1e-2 (its target parameters); a lost
# Polyak step alone moves the target change by about a third.
CHANGE_RTOL = {"mt_bc_sable": 1e-2, "mt_oryx": 1e-2, "mt_cql_sable": 5e-2}
# tau pinned: the values were recorded at tau 0.005, MT Oryx's earlier default (now 0.05)
OVERRIDES = {"num_bins": 11, "v_min": -3.0, "v_max": 3.0, "batch_size": 4, "seq_len": 4, "lr": 2e-3, "tau": 0.005}


def _task(rng, L, n, o):
    return random_task(rng, L, n, o, A)


def _train(name):
    """(initial state, state after 3 updates, metrics of that call, actions of one step) through the engine."""
    from mtmarl.algos.registry import build
    from mtmarl.data.batching import make_buffers
    from mtmarl.networks import load_preset
    from mtmarl.training.engine import Learner

    rng = np.random.default_rng(0)
    buffers = make_buffers([_task(rng, 30, 2, 3), _task(rng, 25, 3, 4)], seq_len=OVERRIDES["seq_len"])
    algo = build(name, OVERRIDES, load_preset("tiny", embed_dim=16, chunk_size=4), A)
    learner = Learner(algo, buffers, updates_per_call=3, num_devices=1)
    start = learner.init(0)
    initial = jax.tree.map(np.asarray, start.state)  # before run(), which may reuse the carry's buffers
    carry, metrics = learner.run(start)
    obs = buffers.decode_obs(buffers.obs[1, 5])  # task 1, step 5: 3 agents
    acts, _, _ = jax.jit(algo.act, static_argnames="greedy")(
        carry.state.params, algo.net.init_carry(), obs, buffers.legals[1, 5], buffers.active[1],
        jnp.asarray(True), jax.random.key(5))
    return initial, carry.state, metrics, np.asarray(acts)


def record(name) -> dict:
    initial, state, metrics, acts = _train(name)
    out = {"initial": fingerprint(initial)}
    for key in ("params", "target_params", "opt_state"):
        out[key] = fingerprint(getattr(state, key), getattr(initial, key))
    return {**out, "metrics": {k: float(v).hex() for k, v in sorted(metrics.items())}, "actions": acts.tolist()}


# MT CQL-Sable shares MT Oryx's network and sampler; its golden values run with the slow tests
@pytest.mark.parametrize("name", [n if n != "mt_cql_sable" else pytest.param(n, marks=pytest.mark.slow) for n in NAMES])
def test_three_updates_match_the_golden_values(name):
    golden = json.loads(GOLDEN.read_text())[name]
    got = record(name)
    assert got["actions"] == golden["actions"]
    assert_metrics_close(got["metrics"], golden["metrics"], METRIC_RTOL)
    for key in ("initial", "params", "target_params", "opt_state"):
        assert_fingerprints_close(got[key], golden[key], CHANGE_RTOL[name], key)


if __name__ == "__main__" and "--write" in sys.argv:
    jax.config.update("jax_disable_most_optimizations", False)
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps({n: record(n) for n in NAMES}, indent=1) + "\n")
    print(GOLDEN.read_text())
