"""Golden values of the entity-network algorithms (BC-t, BC-r, UPDeT-m/-l, ODIS, HiSSD, HyGen, M3).

As ``tests/test_golden_algos.py`` does for the Sable algorithms: each runs 4 updates through the real
engine (sampling, two pmapped ``lax.scan`` calls of 2 updates on one device; the two-stage algorithms run
2 updates of each stage) on a tiny synthetic two-task buffer with an own / allies / enemies layout (the
2-agent task padded to 3 agents, so padded agents that see nothing are in every batch), then act once.
Actions and integer leaves are compared exactly; the metrics of each call within ``METRIC_RTOL``; the
initial state and the change the 4 updates made to it as fingerprints (``helpers.fingerprint``) within
``CHANGE_RTOL``. They pin the numbers through refactors of the algorithms, the engine and the registry.

Regenerate only on purpose: ``python tests/test_golden_entity_algos.py --write`` (XLA's optimisations on,
as the other golden files; the suite compiles with most of them off, which moves these values by less
than the tolerances).
"""

import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_fingerprints_close, assert_metrics_close, compact, fingerprint, random_task

GOLDEN = Path(__file__).resolve().parent / "golden" / "entity_algos.json"
NAMES = ("bc_t", "bc_r", "updet_m", "updet_l", "odis", "hissd", "hygen", "m3")
FAST = ("hissd",)  # the others run with the slow tests
METRIC_RTOL = 2e-3
CHANGE_RTOL = 2e-2
NET = {"width": 8, "heads": 2, "depth": 1, "ff_mult": 2}
COMMON = {"batch_size": 4, "seq_len": 4, "lr": 2e-3}
MIXER = {"mixer_width": 8, "mixer_mix_width": 8}
OVERRIDES = {
    "bc_t": {}, "bc_r": {}, "m3": {"num_codes": 8, "code_dim": 4, "agent_dim": 4, "head_width": 8},
    "updet_m": {**MIXER, "target_update_interval": 2}, "updet_l": {"target_update_interval": 2},
    "odis": {**MIXER, "skill_updates": 2, "target_update_interval": 2},
    "hygen": {**MIXER, "skill_updates": 2, "target_update_interval": 2},
    "hissd": {**MIXER, "skill_dim": 4, "critic_lr": 1e-3},
}
UPDATES, PER_CALL = 4, 2


def env_spec():
    from mtmarl.envs import ActionLayout, EntityGroup, EnvSpec, ObsLayout

    return EnvSpec(3, ObsLayout((EntityGroup("own", 1, 2), EntityGroup("allies", 2, 2), EntityGroup("enemies", 2, 3))),
                   ActionLayout(2, (("enemies", 2),), noop=0))


def _train(name):
    """(initial state, state after the updates, metrics of each call, actions of one step) through the engine."""
    from mtmarl.algos.registry import build
    from mtmarl.data.batching import make_buffers
    from mtmarl.training.engine import Learner

    spec = env_spec()
    rng = np.random.default_rng(0)
    A = spec.num_actions
    buffers = make_buffers([random_task(rng, 30, 3, spec.obs_dim, A), random_task(rng, 25, 2, spec.obs_dim, A)],
                           seq_len=COMMON["seq_len"], num_agents=spec.num_agents, obs_dim=spec.obs_dim)
    algo = build(name, {**COMMON, **OVERRIDES[name]}, NET, spec)
    learner = Learner(algo, buffers, updates_per_call=PER_CALL, num_devices=1, updates=UPDATES)
    carry = learner.init(0)
    initial = jax.tree.map(np.asarray, carry.state)  # before run(), which may reuse the carry's buffers
    metrics = []
    for _ in range(UPDATES // PER_CALL):
        carry, m = learner.run(carry)
        metrics.append(m)
    obs = buffers.decode_obs(buffers.obs[1, 5])  # task 1, step 5: 2 real agents, 1 padded
    acts, _, _ = jax.jit(algo.act, static_argnames="greedy")(
        algo.acting_params(carry.state), algo.init_carry(), obs, buffers.legals[1, 5], buffers.active[1],
        jnp.asarray(True), jax.random.key(5))
    return initial, carry.state, metrics, np.asarray(acts)


def record(name) -> dict:
    initial, state, metrics, acts = _train(name)
    return {"initial": fingerprint(initial), "change": fingerprint(state, initial),
            "metrics": [{k: float(v).hex() for k, v in sorted(m.items())} for m in metrics],
            "actions": acts.tolist()}


@pytest.mark.parametrize("name", [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in NAMES])
def test_four_updates_match_the_golden_values(name):
    golden = json.loads(GOLDEN.read_text())[name]
    got = record(name)
    assert got["actions"] == golden["actions"]
    assert len(got["metrics"]) == len(golden["metrics"])
    for i, (g, w) in enumerate(zip(got["metrics"], golden["metrics"])):
        assert_metrics_close(g, w, METRIC_RTOL, f"metrics of call {i}")
    for key in ("initial", "change"):
        assert_fingerprints_close(got[key], golden[key], CHANGE_RTOL, key)


if __name__ == "__main__" and "--write" in sys.argv:
    jax.config.update("jax_disable_most_optimizations", False)
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(compact({n: record(n) for n in NAMES}))
    print(GOLDEN.read_text()[:2000])
