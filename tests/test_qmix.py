"""Online QMIX (``online.system=qmix``), HyGen's online baseline on the same replay loop.

The traced epsilon-greedy choice against its two limits and a frequency count; the config from its yaml
(the learner's yaml under the overrides) and one-line errors; one compiled chunk on the toy duel: env
steps and ring writes per iteration as configured, online rows only, the Q agent and mixer trained from
fresh parameters, the target copied only at its interval, the collector's JP / TT entry.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from omegaconf import OmegaConf
from test_entity import toy_env  # noqa: F401  (toy_env is a fixture)

from mtmarl.algos import updet
from mtmarl.configs import CONFIG_DIR
from mtmarl.errors import UserInputError
from mtmarl.online import qmix
from mtmarl.algos.registry import online_config
from mtmarl.tasks import TaskSpec

TASK = "toy_duel:agents=2,enemies=2,hp=3,horizon=4"
PRESET = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "online" / "qmix.yaml"))
SEQ, ENVS, CHUNK, BATCH = 4, 2, 3, 4


def tiny(**kw):
    algo = {"seq_len": SEQ, "batch_size": BATCH, "mixer_width": 8, "mixer_mix_width": 8,
            "target_update_interval": 2}  # online.algo wins over online.target_update_interval
    return online_config({**PRESET, "algo": algo, "network": {"width": 8, "heads": 2, "ff_mult": 2},
                          "num_envs": ENVS, "updates_per_chunk": CHUNK, "buffer_size": 5, "eps_decay_steps": 16,
                          "record_envs": 2, "record_len": 4, **kw})


def test_epsilon_greedy_is_the_legal_argmax_at_0_uniform_over_legal_at_1():
    q = jnp.array([[3.0, 1.0, 2.0, 0.0], [0.0, 5.0, 1.0, 9.0]])
    mask = jnp.array([[False, True, True, True], [True, True, True, False]])  # each agent's best action illegal
    pick = jax.jit(updet.epsilon_greedy)
    keys = jax.random.split(jax.random.PRNGKey(0), 4000)
    np.testing.assert_array_equal(pick(q, mask, keys[0], 0.0), [2, 1])
    draws = np.asarray(jax.vmap(lambda k: pick(q, mask, k, 1.0))(keys))
    assert mask[0][draws[:, 0]].all() and mask[1][draws[:, 1]].all()
    for agent, legal in ((0, [1, 2, 3]), (1, [0, 1, 2])):
        share = np.bincount(draws[:, agent], minlength=4)[legal] / len(draws)
        np.testing.assert_allclose(share, 1 / 3, atol=0.03)
    # a traced rate: 0.3 explores on about 0.3 of the draws, 2/3 of which leave the arg-max
    mixed = np.asarray(jax.vmap(lambda k: pick(q, mask, k, jnp.float32(0.3)))(keys))
    assert abs((mixed[:, 0] != 2).mean() - 0.3 * 2 / 3) < 0.03


def test_config_takes_the_learners_yaml_under_its_overrides_and_names_bad_keys(toy_env):  # noqa: F811
    cfg = online_config(PRESET)
    assert cfg.learner == "updet_m" and json.loads(cfg.algo) == {}
    assert hash(cfg) == hash(online_config(PRESET))  # frozen and hashable: compiled systems are cached per config
    algo = qmix.algorithm(TaskSpec.parse(TASK).build(), cfg)
    assert algo.cfg.cql_weight == 0.0 and not algo.cfg.task_mean  # plain QMIX over updet_m.yaml's 5.0 / true
    assert algo.cfg.target_update_interval == 50  # online.target_update_interval over updet_m.yaml's 200
    assert algo.cfg.lr == 5e-4 and algo.cfg.double_q  # the rest from updet_m.yaml
    conservative = online_config({**PRESET, "algo": {"cql_weight": 1.0}})
    assert qmix.algorithm(TaskSpec.parse(TASK).build(), conservative).cfg.cql_weight == 1.0
    for bad, needle in (({"learner": "odis"}, "online.learner='odis'"), ({"eps_end": 1.5}, "online.eps_end=1.5"),
                        ({"buffer_size": 0}, "online.buffer_size=0"), ({"algo": [1]}, "online.algo=[1]"),
                        ({"init_from": "x"}, "init_from")):
        with pytest.raises(UserInputError) as err:
            online_config({**PRESET, **bad})
        assert needle in str(err.value) and "\n" not in str(err.value), str(err.value)
    with pytest.raises(UserInputError, match=r"online.algo=\{'lrr': 1\}.*did you mean algo.lr"):
        qmix.algorithm(TaskSpec.parse(TASK).build(), online_config({**PRESET, "algo": {"lrr": 1}}))
    with pytest.raises(UserInputError, match="algo.seq_len=20"):
        qmix.make_system(TaskSpec.parse(TASK).build(), online_config({**PRESET, "rollout_len": 7}))


@pytest.fixture(scope="module")
def chunk_run(toy_env):  # noqa: F811
    from mtmarl.online.collectors import get_system

    cfg = tiny(tt_threshold=-1.0)  # the collector test's config: it reuses this compiled system
    system = get_system(TaskSpec.parse(TASK), TaskSpec.parse(TASK).build(), cfg)
    s0 = system.init(jax.random.PRNGKey(0))
    s1, metrics = system.train_chunk(s0)
    return cfg, system, jax.device_get(s0), jax.device_get(s1), jax.device_get(metrics)


def test_one_chunk_trains_from_fresh_params_on_online_rows_only(chunk_run):
    cfg, system, s0, s1, m = chunk_run
    changed = lambda a, b: any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))  # noqa: E731
    for net in ("agent", "mixer"):
        assert changed(s0.params.params[net], s1.params.params[net]), net
    assert int(s1.params.steps[0]) == CHUNK
    # hard target copies at updates 2 (interval 2): the target is update 2's params, not update 3's
    assert changed(s0.params.target_params, s1.params.target_params)
    assert changed(s1.params.params, s1.params.target_params)
    # env steps and ring writes per iteration as configured; capacity 5 wrapped
    assert system.env_steps_per_update == ENVS * SEQ
    assert int(s1.env_steps[0]) == ENVS * SEQ * CHUNK and int(s1.ring.count[0]) == ENVS * CHUNK
    assert s1.ring.obs.shape[1:3] == (5, SEQ) and s1.ring.resets[0].any()
    extra = m.loss.extra
    assert (extra["offline_rows"][0] == 0).all() and (extra["hybrid_ratio"][0] == 0).all()
    want_eps = [1.0 + (0.05 - 1.0) * min(i * ENVS * SEQ / 16, 1.0) for i in range(CHUNK)]
    np.testing.assert_allclose(extra["epsilon"][0], want_eps, rtol=1e-6)
    assert np.isfinite(m.loss.total).all() and np.isfinite(extra["td_loss"]).all()
    # fresh parameters come from the collector's key: another key, other initial params
    other = jax.device_get(system.init(jax.random.PRNGKey(1)))
    assert changed(s0.params.params, other.params.params)


def test_collector_reports_jp_and_tt_for_qmix(chunk_run, tmp_path):
    from mtmarl import collect

    online = {**PRESET, "algo": {"seq_len": SEQ, "batch_size": BATCH, "mixer_width": 8,
                                 "mixer_mix_width": 8, "target_update_interval": 2},
              "network": {"width": 8, "heads": 2, "ff_mult": 2}, "num_envs": ENVS, "updates_per_chunk": CHUNK,
              "buffer_size": 5, "eps_decay_steps": 16, "record_envs": 2, "record_len": 4, "tt_threshold": -1.0}
    assert online_config(online) == chunk_run[0]  # the fixture's config: its compiled system is reused
    cfg = OmegaConf.create({"task": TASK, "split": "train", "seed": 0, "online": online, "online_env": {},
                            "collect": {"budget": ENVS * SEQ * CHUNK, "root": str(tmp_path / "vaults"),
                                        "uid": "default", "references": None, "log_dir": str(tmp_path / "logs"), "record": False,
                                        "progress": False, "initial_eval": True},
                            "eval": {"episodes": 2, "devices": None, "greedy": True}})
    (res,) = collect.run(cfg)
    assert res["system"] == "qmix" and res["env_steps"] == ENVS * SEQ * CHUNK
    assert res["jp"] == res["initial_return"] and np.isfinite(res["jp"]) and res["tt"] == 0
    (log,) = (tmp_path / "logs").rglob("*.jsonl")
    (row,) = [json.loads(x) for x in log.read_text().splitlines()]
    assert row["offline_rows"] == 0 and row["hybrid_ratio"] == 0 and row["policy_loss"] is None
    assert 0.0 <= row["win_rate"] <= 1.0 and row["episodes"] > 0 and np.isfinite(row["td_loss"])
