"""Online Sable: the training pass reproduces acting, a chunk trains, the collector records with it, it learns."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import tiny_collect
from omegaconf import OmegaConf

from mtmarl.configs import CONFIG_DIR
from mtmarl.data.vault import episode_returns
from mtmarl.errors import UserInputError
from mtmarl.online import ppo
from mtmarl.online.anakin import chunk_summary, to_experience
from mtmarl.online.collectors import get_system
from mtmarl.networks import make_sable
from mtmarl.algos.registry import make_online_system, online_config
from mtmarl.online.rollout import make_reset_pool, start_from_pool
from mtmarl.online.sable_system import (SableOnlineConfig, batch_major, make_learner, sable_rollout,
                                        teacher_forced)
from mtmarl.online.system import MappoConfig
from mtmarl.tasks import TaskSpec


TASK = "connector:grid=5,agents=2"
CONFIG = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "online" / "sable.yaml"))
TINY = {**CONFIG, "num_envs": 4, "rollout_len": 8, "updates_per_chunk": 2, "record_envs": 4, "record_len": 24,
        "embed_dim": 16, "chunk_size": 3}


def test_config_switch_and_validation():
    assert isinstance(online_config(CONFIG), SableOnlineConfig)
    mappo = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "online" / "mappo.yaml"))
    assert isinstance(online_config(mappo), MappoConfig)
    with pytest.raises(UserInputError, match="online=sable"):  # online.system=sable on the MAPPO preset
        online_config({**mappo, "system": "sable"})
    with pytest.raises(UserInputError, match="bogus"):
        online_config({**CONFIG, "bogus": 1})
    with pytest.raises(UserInputError, match="divisible"):
        online_config({**CONFIG, "num_envs": 5, "minibatches": 2})
    with pytest.raises(UserInputError, match="unknown online.system"):
        online_config({**CONFIG, "system": "vdn_bogus"})


def test_training_pass_reproduces_behaviour_logp_and_values():
    """Before any update, teacher-forced chunkwise outputs == the autoregressive acting ones (ratio 1).

    Two consecutive segments: the second starts mid-episode, so its stored
    initial retention state matters (and chunk_size=3 does not divide T=8).
    """
    env = TaskSpec.parse(TASK + ",horizon=5").build()  # time limits inside every 8-step segment
    cfg = SableOnlineConfig(**TINY)
    net, B, T = make_sable(cfg.network, env.num_actions), cfg.num_envs, cfg.rollout_len
    params = net.init(jax.random.PRNGKey(3), jnp.zeros((1, 1, 1, env.obs_dim)))

    @jax.jit
    def two_segments(key):
        pool = make_reset_pool(env, key, B, 4)
        batch, carry0 = start_from_pool(pool), net.init_carry(B)
        out = []
        for i in range(2):
            batch = batch._replace(cursor=jnp.zeros_like(batch.cursor))
            batch, carry1, traj = sable_rollout(net, env, params, batch, carry0, pool,
                                                jax.random.fold_in(key, i), T)
            tr = batch_major(traj)
            o = teacher_forced(net, params, tr, carry0)
            out.append((tr, o, carry0))
            carry0 = carry1
        return out

    segs = two_segments(jax.random.PRNGKey(0))
    for tr, out, carry0 in segs:
        logp = ppo.log_prob(out.logits, tr.obs.action_mask, tr.actions)
        np.testing.assert_allclose(np.asarray(logp), np.asarray(tr.logp), atol=2e-5)
        np.testing.assert_allclose(np.asarray(out.value), np.asarray(tr.value), atol=2e-5)
        # V of the next observation: equals the next step's value wherever the episode continues
        cont = ~np.asarray(tr.done)[:, :-1]
        np.testing.assert_allclose(np.asarray(tr.next_value)[:, :-1][cont], np.asarray(tr.value)[:, 1:][cont],
                                   atol=2e-5)
        assert np.asarray(tr.truncated).any() and np.isfinite(np.asarray(logp)).all()
    tr2, _, carry_mid = segs[1]
    starts_mid = ~np.asarray(tr2.obs.step_count[:, 0] == 0)
    assert starts_mid.any()  # some env's second segment continues an episode ...
    nonzero = np.abs(np.asarray(carry_mid["enc"][0])).reshape(B, -1).max(1) > 0
    assert nonzero[starts_mid].all()  # ... from a non-zero stored state
    # Dropping the stored state changes those envs' outputs: the check above is not vacuous.
    tr2, out2, _ = segs[1]
    zero = teacher_forced(net, params, tr2, net.init_carry(B))
    diff = np.abs(np.asarray(zero.logits - out2.logits)).reshape(B, -1).max(1)
    assert (diff[starts_mid] > 1e-4).any()


def test_untrained_policy_is_near_uniform_and_value_near_zero():
    """The output layers start at orthogonal(head_init): on random observations every agent's masked
    policy has near-maximal entropy and the value is near 0 (the network's default init gave a
    markedly non-uniform first policy, which a sparse-reward task then never explores out of)."""
    env = TaskSpec.parse(TASK).build()
    cfg = SableOnlineConfig(**TINY)
    learner, net = make_learner(env, cfg), make_sable(cfg.network, env.num_actions)
    params = learner.init(jax.random.PRNGKey(0))
    B, T, N, A = 4, 3, 2, env.num_actions
    k_obs, k_mask, k_act = jax.random.split(jax.random.PRNGKey(1), 3)
    obs = jax.random.normal(k_obs, (B, T, N, env.obs_dim))
    mask = jax.random.bernoulli(k_mask, 0.6, (B, T, N, A)).at[..., 0].set(True)
    actions = jax.random.randint(k_act, (B, T, N), 0, A)
    out, _ = jax.jit(net.apply_train)(params, obs, actions, mask, jnp.ones((B, T, N), bool),
                                      jnp.zeros((B, T), bool).at[:, 0].set(True))
    ent = np.asarray(ppo.entropy(out.logits, mask))
    uniform = np.log(np.asarray(mask).sum(-1))
    np.testing.assert_allclose(ent, uniform, atol=1e-3)
    assert np.abs(np.asarray(out.value)).max() < 0.05
    with pytest.raises(UserInputError, match="head_init"):
        SableOnlineConfig(**{**TINY, "head_init": 0.0})


@pytest.mark.slow  # the fast suite keeps the replay test
def test_train_chunk_runs_with_finite_metrics_and_records():
    spec = TaskSpec.parse(TASK)
    cfg = online_config(TINY)
    system = get_system(spec, spec.build(), cfg)
    state = system.init(jax.random.PRNGKey(0))
    state, metrics = system.train_chunk(state)
    s = chunk_summary(metrics)
    assert s["episodes"] > 0
    for k in ("return", "policy_loss", "value_loss", "entropy", "approx_kl"):
        assert np.isfinite(s[k]), (k, s)
    assert int(np.asarray(state.update)[0]) == cfg.updates_per_chunk
    assert 0 < s["entropy"] <= np.log(5) + 1e-5 and s["approx_kl"] >= 0
    exp = to_experience(system.record(state, jax.random.PRNGKey(1)))
    assert exp["observations"].shape[2:] == (2, 128) and episode_returns(exp).size > 0


@pytest.mark.slow  # the collector path is MAPPO's (tests/test_online.py); the Sable learner: the replay test
def test_collect_with_online_sable_writes_a_readable_vault(tmp_path):
    res, exp, _ = tiny_collect(tmp_path, TASK, TINY)
    assert res["system"] == "sable"


@pytest.mark.slow
def test_online_sable_learns_small_connector():
    spec = TaskSpec.parse(TASK)
    cfg = online_config({**CONFIG, "updates_per_chunk": 5})  # the collector preset, 16 envs x 128 steps per update
    system = make_online_system(spec.build(), cfg, num_devices=1)
    state = system.init(jax.random.PRNGKey(0))
    curve = []
    for _ in range(8):  # 82k env steps
        state, metrics = system.train_chunk(state)
        curve.append(chunk_summary(metrics)["return"])
    # the near-uniform initial policy scores ~0.1 on this task
    assert curve[-1] > curve[0] + 0.5 and curve[-1] > 0.8, curve


@pytest.mark.slow
def test_online_sable_learns_sparse_small_warehouse():
    """RWARE's reward is sparse (a delivered shelf) and collisions end episodes: a policy that drifts away
    from uniform before the first deliveries never finds them. The preset must get past that on a small
    warehouse within a few hundred thousand env steps, as MAPPO does."""
    spec = TaskSpec.parse("rware:rows=1,cols=3,height=2,agents=2,horizon=100")
    system = make_online_system(spec.build(), online_config(CONFIG), num_devices=1)
    state = system.init(jax.random.PRNGKey(0))
    curve = []
    for _ in range(15):  # 307k env steps
        state, metrics = system.train_chunk(state)
        curve.append(chunk_summary(metrics)["return"])
    # a uniform random policy seldom delivers a shelf here
    assert curve[0] < 0.05 and min(curve[-3:]) > 0.3, curve
