"""HiSSD (mtmarl/algos/hissd.py): its losses against naive references, the ablation switches, and a CLI run
on the toy entity env of tests/test_env_protocol.py."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_entity import duel_vaults, toy_env  # noqa: F401  (toy_env is a fixture)

from mtmarl.algos import registry
from mtmarl.algos.hissd import expectile_loss, info_nce, negative_mask, planner_weights
from mtmarl.data.batching import Batch
from mtmarl.envs import ActionLayout, EntityGroup, EnvSpec, ObsLayout
from mtmarl.errors import UserInputError


def _task_mean_np(x, valid, ids):
    means = [x[(ids == t)[:, None] & valid].mean() for t in np.unique(ids) if valid[ids == t].any()]
    return float(np.mean(means))


@pytest.mark.parametrize("code_faithful", [False, True])
def test_expectile_loss_matches_a_naive_computation(code_faithful):
    rng = np.random.default_rng(0)
    u = rng.normal(size=(6, 5)).astype(np.float32)
    valid = rng.random((6, 5)) > 0.3
    ids = np.array([0, 0, 1, 1, 1, 2])
    tau = 0.9
    if code_faithful:  # the code: one weight |tau - 1(V - y < 0)| averaged over the batch, times the MSE
        w = np.abs(tau - (u[valid] > 0)).mean()
        want = w * _task_mean_np(u * u, valid, ids)
    else:  # IQL: |tau - 1(u < 0)| u^2 per entry, u = y - V
        want = _task_mean_np(np.where(u < 0, 1 - tau, tau) * u * u, valid, ids)
    got = expectile_loss(jnp.asarray(u), jnp.asarray(valid), tau, jnp.asarray(ids), code_faithful)
    np.testing.assert_allclose(float(got), want, rtol=1e-5)
    # the two forms differ (the check has teeth), and tau = 0.5 is half the mean squared error in the paper form
    other = expectile_loss(jnp.asarray(u), jnp.asarray(valid), tau, jnp.asarray(ids), not code_faithful)
    assert abs(float(other) - want) > 1e-3
    half = expectile_loss(jnp.asarray(u), jnp.asarray(valid), 0.5, jnp.asarray(ids))
    np.testing.assert_allclose(float(half), 0.5 * _task_mean_np(u * u, valid, ids), rtol=1e-5)


def test_planner_weight_is_exp_of_scaled_td_capped_at_100():
    td = jnp.array([[-1.0, 0.0, 0.2], [0.45, 0.5, 50.0]])
    valid = jnp.array([[True, True, True], [True, True, False]])
    got = np.asarray(planner_weights(td, valid, 10.0, 100.0))
    want = np.minimum(np.exp(np.minimum(10.0 * np.asarray(td), 10.0)), 100.0)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert got.max() == 100.0 and np.isfinite(got).all() and got[0, 1] == 1.0
    # code_faithful: one weight from the masked batch-mean TD (0.03), the same everywhere
    faithful = np.asarray(planner_weights(td, valid, 10.0, 100.0, code_faithful=True))
    np.testing.assert_allclose(faithful, np.full((2, 3), np.exp(10.0 * 0.03)), rtol=1e-5)
    g = jax.grad(lambda x: planner_weights(x, valid, 10.0, 100.0).sum())(td)
    assert not np.asarray(g).any()  # a weight, never a gradient path


def _naive_info_nce(a, p, k, mask, w):
    out = []
    for b in range(a.shape[0]):
        lp = a[b] @ w @ p[b]
        negs = [a[b] @ w @ k[j] for j in range(k.shape[0]) if mask[b, j]]
        out.append(-math.log(math.exp(lp) / (math.exp(lp) + sum(math.exp(x) for x in negs))))
    return np.array(out)


@pytest.mark.parametrize("fraction", [1.0, 0.5])
def test_contrastive_loss_matches_a_naive_loop_and_half_negatives_halves_them(fraction):
    ids = jnp.array([0, 0, 1, 1, 2, 2])
    mask = np.asarray(negative_mask(ids, ids, jax.random.uniform(jax.random.PRNGKey(3), (6, 6)), fraction))
    other = np.asarray(ids)[:, None] != np.asarray(ids)[None, :]
    assert not (mask & ~other).any()                             # negatives only from other tasks
    np.testing.assert_array_equal(mask.sum(1), np.full(6, 4 * fraction))  # 4 other-task samples each
    if fraction < 1:  # a random half, not always the same one
        again = np.asarray(negative_mask(ids, ids, jax.random.uniform(jax.random.PRNGKey(4), (6, 6)), fraction))
        assert (again != mask).any()
    few = jnp.array([0, 1, 1, 1])
    assert negative_mask(few, few, jnp.zeros((4, 4)), 0.5).sum(1).tolist() == [2, 1, 1, 1]  # ceil(0.5 * 3) = 2
    rng = np.random.default_rng(1)
    a, p, k = (rng.normal(size=(6, 3)).astype(np.float32) for _ in range(3))
    w = rng.normal(size=(3, 3)).astype(np.float32)
    got = np.asarray(info_nce(jnp.asarray(a), jnp.asarray(p), jnp.asarray(k), jnp.asarray(mask), jnp.asarray(w)))
    np.testing.assert_allclose(got, _naive_info_nce(a, p, k, mask, w), rtol=1e-4, atol=1e-5)


def _tiny_batch(spec: EnvSpec, key):
    B, T, N, A = 4, 5, spec.num_agents, spec.num_actions
    ks = jax.random.split(key, 3)
    return Batch(obs=jax.random.normal(ks[0], (B, T, N, spec.obs_dim)), actions=jax.random.randint(ks[1], (B, T, N), 0, A),
                 rewards=jax.random.normal(ks[2], (B, T)), terminals=jnp.zeros((B, T), bool),
                 truncations=jnp.zeros((B, T), bool), discounts=jnp.ones((B, T)), legals=jnp.ones((B, T, N, A), bool),
                 active=jnp.ones((B, T, N), bool), real=jnp.ones((B, T, N), bool),
                 resets=jnp.zeros((B, T), bool).at[:, 0].set(True), returns=jnp.zeros((B, T)), task_ids=jnp.array([0, 0, 1, 1]),
                 starts=jnp.zeros(B, jnp.int32), perm=jnp.tile(jnp.arange(N), (B, 1)))


def test_without_forward_prediction_the_predictor_gets_no_loss_and_no_gradient():
    obs = ObsLayout((EntityGroup("own", 1, 2), EntityGroup("allies", 1, 1), EntityGroup("enemies", 2, 2)))
    spec = EnvSpec(2, obs, ActionLayout(2, (("enemies", 2),), noop=0))
    net = {"width": 8, "heads": 1, "depth": 1, "ff_mult": 2}
    key = jax.random.PRNGKey(0)
    batch = _tiny_batch(spec, key)
    out, state = {}, None
    for on in (True, False):  # the same parameters for both (the predictor exists either way)
        algo = registry.build("hissd", {"skill_dim": 4, "forward_prediction": on, "mixer_init_scale": 0.04}, net, spec)
        state = jax.jit(algo.init)(key, batch.obs[:1]) if state is None else state
        # the gradient with respect to the predictor only (cheap to compile: no backward pass through the nets)
        loss_of = lambda pred, algo=algo: algo.loss({**state.params, "predictor": pred},  # noqa: E731
                                                    state.target_params, batch, key)
        (loss, metrics), grads = jax.jit(jax.value_and_grad(loss_of, has_aux=True))(state.params["predictor"])
        out[on] = float(loss), metrics, grads
    (with_, m_on, g_on), (without, m_off, g_off) = out[True], out[False]
    norm = lambda g: float(sum(jnp.abs(x).sum() for x in jax.tree.leaves(g)))  # noqa: E731
    assert norm(g_on) > 0 and norm(g_off) == 0.0
    assert float(m_on["planner_loss"]) > 0 and float(m_off["planner_loss"]) == 0.0
    np.testing.assert_allclose(without, with_ - float(m_on["planner_loss"]), rtol=1e-5)  # only that term left
    # algo.mixer_init_scale reaches the attention mixer: its hypernetwork kernels have variance scale / fan_in
    # (flax's truncated-normal variance scaling), 5x below the default's standard deviation at 0.04
    mixer = state.params["mixer"]["params"]
    for name in ("hyper_w1", "hyper_w2"):
        kernel = np.asarray(mixer[name]["kernel"])
        assert np.std(kernel) == pytest.approx(np.sqrt(0.04 / kernel.shape[0]), rel=0.25), name
    for bad, key in (({"mixer_init_scale": 0.0}, "mixer_init_scale"), ({"expectile": 1.5}, "expectile"),
                     ({"negatives_fraction": 0.0}, "negatives_fraction"), ({"ssl_window": 0}, "ssl_window"),
                     ({"tau": 2.0}, "tau")):
        with pytest.raises(UserInputError, match=key):
            registry.build("hissd", bad, net, spec)


def test_two_shards_give_the_whole_batch_loss():
    """Data parallelism (mtmarl.algos.reductions): the shards' loss shares sum to the one-device loss, with
    the same random anchors, positives and negatives (drawn per global row). code_faithful: its batch-wide
    weights must be global too (the paper form's weights are per entry)."""
    obs = ObsLayout((EntityGroup("own", 1, 2), EntityGroup("enemies", 2, 2)))
    spec = EnvSpec(2, obs, ActionLayout(2, (("enemies", 2),), noop=0))
    algo = registry.build("hissd", {"skill_dim": 4, "code_faithful": True, "negatives_fraction": 0.5},
                          {"width": 8, "heads": 1, "depth": 1, "ff_mult": 1}, spec)
    key = jax.random.PRNGKey(1)
    batch = _tiny_batch(spec, key)._replace(task_ids=jnp.array([0, 1, 2, 0]))
    state = jax.jit(algo.init)(key, batch.obs[:1])
    whole, m = jax.jit(algo.loss)(state.params, state.target_params, batch, key)
    split = jax.tree.map(lambda a: a.reshape((2, a.shape[0] // 2) + a.shape[1:]), batch)
    shares, sm = jax.pmap(lambda b: algo.loss(state.params, state.target_params, b, key, axis_name="d"),
                          axis_name="d")(split)
    np.testing.assert_allclose(float(shares.sum()), float(whole), rtol=1e-5)
    for name in ("contrastive_loss", "value_loss", "planner_loss", "bc_loss"):
        np.testing.assert_allclose(np.asarray(sm[name]), [float(m[name])] * 2, rtol=1e-5, atol=1e-7, err_msg=name)
    assert float(m["contrastive_loss"]) > 0


@pytest.mark.slow
def test_hissd_trains_through_the_cli_and_evaluates(toy_env, tmp_path):  # noqa: F811
    from mtmarl import train
    from mtmarl.experiments.config import compose_train

    duel_vaults(tmp_path, 20)
    cfg = compose_train(["+algo=hissd", "+tasks=duel", f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
                         f"data.root={tmp_path / 'vaults'}", "network.width=16", "algo.skill_dim=8", "training=quick",
                         "training.updates=40", "training.updates_per_call=5", "training.log_every=5",
                         "training.eval_every=0", "training.batch_size=8", "training.seq_len=4", "algo.lr=3e-3",
                         "algo.critic_lr=1e-3", "eval.episodes=4", "logger.neptune=false", "logger.progress=false"])
    rows = train.run(cfg, run_dir=tmp_path / "run")
    logs = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    bc = [r["train/bc_loss"] for r in logs if "train/bc_loss" in r]
    assert bc[-1] < 0.6 * bc[0], bc
    assert all(math.isfinite(r["train/loss"]) for r in logs if "train/loss" in r)
    assert any(r.get("train/contrastive_loss", 0) > 0 for r in logs)  # both tasks in a balanced batch: negatives
    assert [r["name"] for r in rows] == ["2v2", "3v1", "2v4"] and all("win_rate" in r for r in rows)


@pytest.mark.slow
def test_one_update_and_one_act_on_the_smax_marine_hard_layout():
    """HiSSD updates once on the padded SMAX layout and acts legally; a batch of two tasks has negatives."""
    from helpers import smax_layout_update_and_act

    (metrics,) = smax_layout_update_and_act("hissd", {"skill_dim": 8}, batch_size=4)
    assert float(metrics["contrastive_loss"]) > 0
