"""Golden values: the three algorithms train exactly as they did before the algorithm protocol.

Each algorithm runs 3 updates through the real engine (sampling, one pmapped
``lax.scan`` call on one device) on a tiny synthetic two-task buffer, then acts
once. The parameters, target parameters, optimiser state, metrics and actions
are hashed bit for bit and compared with ``tests/golden/algos.json``, recorded
on main 78e54a2 before the refactor. A change of any bit (a reordered sum, a
different key split, a lost Polyak step) fails the test.

The compile setting is pinned (XLA optimisations on) since it can change float
rounding. Regenerate only on purpose: ``python tests/test_golden_algos.py --write``.
"""

import hashlib
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import random_task

GOLDEN = Path(__file__).resolve().parent / "golden" / "algos.json"
NAMES = ("mt_bc_sable", "mt_cql_sable", "mt_oryx")
A = 4
OVERRIDES = {"num_bins": 11, "v_min": -3.0, "v_max": 3.0, "batch_size": 4, "seq_len": 4, "lr": 2e-3}


def _task(rng, L, n, o):
    return random_task(rng, L, n, o, A)


def _digest(tree) -> str:
    """sha256 (16 hex digits) of the bytes, dtypes and shapes of a pytree's leaves, in order."""
    h = hashlib.sha256()
    for x in jax.tree.leaves(tree):
        x = np.asarray(x)
        h.update(f"{x.dtype}{x.shape}".encode())
        h.update(x.tobytes())
    return h.hexdigest()[:16]


def _train(name):
    """(state after 3 updates, metrics of that call, actions of one step) through the engine."""
    from mtmarl.algos.registry import build
    from mtmarl.data.batching import make_buffers
    from mtmarl.networks import load_preset
    from mtmarl.training.engine import Learner

    rng = np.random.default_rng(0)
    buffers = make_buffers([_task(rng, 30, 2, 3), _task(rng, 25, 3, 4)], seq_len=OVERRIDES["seq_len"])
    algo = build(name, OVERRIDES, load_preset("tiny", embed_dim=16, chunk_size=4), A)
    learner = Learner(algo, buffers, updates_per_call=3, num_devices=1)
    carry, metrics = learner.run(learner.init(0))
    obs = buffers.decode_obs(buffers.obs[1, 5])  # task 1, step 5: 3 agents
    acts, _, _ = jax.jit(algo.act, static_argnames="greedy")(
        carry.state.params, algo.net.init_carry(), obs, buffers.legals[1, 5], buffers.active[1],
        jnp.asarray(True), jax.random.key(5))
    return carry.state, metrics, np.asarray(acts)


def record(name) -> dict:
    state, metrics, acts = _train(name)
    return {"params": _digest(state.params), "target_params": _digest(state.target_params),
            "opt_state": _digest(state.opt_state),
            "metrics": {k: float(v).hex() for k, v in sorted(metrics.items())},
            "actions": acts.tolist()}


# MT CQL-Sable shares MT Oryx's network and sampler; its golden values run with the slow tests
@pytest.mark.parametrize("name", [n if n != "mt_cql_sable" else pytest.param(n, marks=pytest.mark.slow) for n in NAMES])
def test_three_updates_are_bit_identical_to_the_golden_values(name, _xla_optimisations_on):
    golden = json.loads(GOLDEN.read_text())[name]
    got = record(name)
    assert got["metrics"] == golden["metrics"], {k: float.fromhex(v) for k, v in got["metrics"].items()}
    for key in ("params", "target_params", "opt_state", "actions"):
        assert got[key] == golden[key], key


if __name__ == "__main__" and "--write" in sys.argv:
    jax.config.update("jax_disable_most_optimizations", False)
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps({n: record(n) for n in NAMES}, indent=1) + "\n")
    print(GOLDEN.read_text())
