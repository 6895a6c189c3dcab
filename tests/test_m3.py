"""M3 pretraining (the M3 paper): the VQ layer against a naive numpy reference (nearest code, the
straight-through gradient, Eq. 5's codebook and commitment terms), the agent-invariance KL against a
hand-computed value, one M3 update on a tiny batch, and M3 trained from a toy vault through the CLI."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_entity import duel_vaults, toy_env  # noqa: F401  (toy_env is a fixture)
from test_updet import NET, SPEC, tiny_batch

from mtmarl.algos import registry
from mtmarl.algos.m3 import M3Net, gaussian_kl, previous_actions
from mtmarl.networks.vq import nearest_codes, perplexity, quantize, restart_dead_codes, straight_through, vq_losses


def _naive_nearest(z, codebook):
    out = []
    for v in z:
        dists = [sum((v[d] - e[d]) ** 2 for d in range(len(v))) for e in codebook]
        out.append(int(np.argmin(dists)))
    return np.array(out)


def test_nearest_code_matches_a_naive_loop():
    rng = np.random.default_rng(0)
    codebook = rng.normal(size=(7, 3)).astype(np.float32)
    z = rng.normal(size=(50, 3)).astype(np.float32)
    z[:3] = codebook[[4, 0, 6]] + 1e-3  # near a code: must pick it
    idx = np.asarray(nearest_codes(jnp.asarray(z), jnp.asarray(codebook)))
    np.testing.assert_array_equal(idx, _naive_nearest(z, codebook))
    assert list(idx[:3]) == [4, 0, 6]
    q = quantize(jnp.asarray(z), jnp.asarray(codebook))
    np.testing.assert_allclose(np.asarray(q.z_st), codebook[idx], atol=1e-6)  # forward: the code (z_e + (e - z_e))
    np.testing.assert_array_equal(np.asarray(q.z_q), codebook[idx])


def test_straight_through_gradient_equals_the_gradient_at_the_quantised_vector():
    rng = np.random.default_rng(1)
    codebook = jnp.asarray(rng.normal(size=(5, 4)), jnp.float32)
    z_e = jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)
    f = lambda x: jnp.sum(jnp.sin(x) * w)  # noqa: E731  (nonlinear: its gradient depends on where it is taken)
    z_q = codebook[nearest_codes(z_e, codebook)]
    g_enc = jax.grad(lambda z: f(quantize(z, codebook).z_st))(z_e)
    np.testing.assert_allclose(np.asarray(g_enc), np.asarray(jax.grad(f)(z_q)), rtol=1e-6)
    assert not np.allclose(np.asarray(g_enc), np.asarray(jax.grad(f)(z_e)))  # taken at z_q, not at z_e
    # no gradient reaches the codebook through the straight-through output
    g_cb = jax.grad(lambda cb: f(straight_through(z_e, cb[nearest_codes(z_e, cb)])))(codebook)
    np.testing.assert_array_equal(np.asarray(g_cb), 0.0)


def test_codebook_and_commitment_losses_and_their_gradients_match_numpy():
    rng = np.random.default_rng(2)
    codebook = rng.normal(size=(4, 3)).astype(np.float32)
    z_e = rng.normal(size=(5, 3)).astype(np.float32)
    beta = 0.25
    idx = _naive_nearest(z_e, codebook)
    diff = z_e - codebook[idx]
    want_cb, want_commit = (diff ** 2).sum(-1), (diff ** 2).sum(-1)
    q = quantize(jnp.asarray(z_e), jnp.asarray(codebook))
    np.testing.assert_allclose(np.asarray(q.codebook_loss), want_cb, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(q.commitment_loss), want_commit, rtol=1e-5)

    def eq5(z, cb):
        out = quantize(z, cb)
        return jnp.sum(out.codebook_loss + beta * out.commitment_loss)

    g_z, g_cb = jax.grad(eq5, argnums=(0, 1))(jnp.asarray(z_e), jnp.asarray(codebook))
    # encoder: only the commitment term, 2 beta (z_e - e); codebook: only the codebook term, 2 (e - z_e) summed per code
    np.testing.assert_allclose(np.asarray(g_z), 2 * beta * diff, rtol=1e-5)
    want_g_cb = np.zeros_like(codebook)
    for i, k in enumerate(idx):
        want_g_cb[k] += -2 * diff[i]
    np.testing.assert_allclose(np.asarray(g_cb), want_g_cb, rtol=1e-5, atol=1e-6)
    cb_only, commit_only = vq_losses(jnp.asarray(z_e), jnp.asarray(codebook[idx]))
    np.testing.assert_allclose(np.asarray(cb_only), want_cb, rtol=1e-5)


def test_perplexity_counts_code_usage_over_weighted_entries():
    codes = jnp.array([0, 0, 1, 1, 3, 3])
    assert float(perplexity(codes, jnp.ones(6), 4)) == pytest.approx(3.0)
    assert float(perplexity(codes, jnp.array([1, 1, 0, 0, 0, 0]), 4)) == pytest.approx(1.0)


def test_dead_codes_restart_on_active_encoder_outputs_and_live_codes_stay():
    codebook = jnp.array([[0.0, 0.0], [10.0, 10.0], [100.0, 100.0], [-100.0, 0.0]])
    z = jnp.array([[0.1, 0.0], [9.0, 10.0], [0.0, 0.2], [55.0, 55.0]])
    active = jnp.array([True, True, True, False])  # the inactive entry is nearest code 2 but does not count
    codes = nearest_codes(z, codebook)
    for seed in range(5):
        new, n = restart_dead_codes(codebook, z, codes, active, jax.random.PRNGKey(seed))
        new = np.asarray(new)
        assert int(n) == 2
        np.testing.assert_array_equal(new[:2], np.asarray(codebook[:2]))
        for k in (2, 3):  # each dead code is now one of the active encoder outputs
            assert any(np.array_equal(new[k], np.asarray(z[i])) for i in range(3)), new
    same, n = restart_dead_codes(codebook, z, codes, jnp.zeros(4, bool), jax.random.PRNGKey(0))
    assert int(n) == 0 and np.array_equal(np.asarray(same), np.asarray(codebook))  # nothing to restart from


def test_agent_invariance_kl_against_a_hand_computed_value():
    mu = jnp.array([[0.0, 0.0], [1.0, -2.0]])
    logvar = jnp.array([[0.0, 0.0], [np.log(2.0), 0.0]])
    # row 0 is the prior itself: 0; row 1: 0.5 * [(1 + 2 - 1 - ln 2) + (4 + 1 - 1 - 0)] = 0.5 * (6 - ln 2)
    np.testing.assert_allclose(np.asarray(gaussian_kl(mu, logvar)), [0.0, 0.5 * (6.0 - np.log(2.0))], rtol=1e-6)


def test_previous_actions_shift_by_one_and_restart_at_episode_starts():
    actions = jnp.array([[[1], [2], [0], [1]]])                  # (B=1, T=4, N=1)
    resets = jnp.array([[True, False, True, False]])
    prev = np.asarray(previous_actions(actions, resets, 3))[0, :, 0]
    np.testing.assert_array_equal(prev, [[0, 0, 0], [0, 1, 0], [0, 0, 0], [1, 0, 0]])


@pytest.mark.slow
def test_one_update_on_a_tiny_batch_is_finite_and_acting_is_legal():
    algo = registry.build("m3", {"num_codes": 4, "code_dim": 3, "agent_dim": 2, "head_width": 8}, NET, SPEC)
    batch = tiny_batch()
    state = algo.init(jax.random.PRNGKey(0), batch.obs[:1])
    new, metrics = jax.jit(algo.stages[0].update)(state, batch, jax.random.PRNGKey(1))
    assert all(np.isfinite(float(v)) for v in metrics.values()), metrics
    assert 1.0 <= float(metrics["code_perplexity"]) <= 4.0
    cb = lambda s: np.asarray(s.params["params"]["vq"]["codebook"])  # noqa: E731
    assert not np.allclose(cb(new), cb(state))  # Eq. 5's codebook term moved the codes
    mask = batch.legals[0, 0]
    act = jax.jit(algo.act, static_argnames="greedy")
    actions, _, (h, prev) = act(new.params, algo.init_carry(), batch.obs[0, 0], mask, None, True,
                                jax.random.PRNGKey(2), greedy=True)
    assert bool(np.asarray(mask)[np.arange(SPEC.num_agents), np.asarray(actions)].all())
    np.testing.assert_array_equal(np.asarray(prev).argmax(-1), np.asarray(actions))  # carried for the next step


@pytest.mark.parametrize("policy_input", ["quantized", "continuous"])
def test_the_policy_reads_the_quantised_code_or_z_e(policy_input):
    """With ``quantized`` two entries with the same code get the same logits whatever else differs;
    with ``continuous`` (z_e) they do not."""
    algo = registry.build("m3", {"num_codes": 2, "code_dim": 3, "agent_dim": 2, "head_width": 8,
                                 "policy_input": policy_input}, NET, SPEC)
    batch = tiny_batch()
    params = algo.init(jax.random.PRNGKey(0), batch.obs[:1]).params
    rng = np.random.default_rng(0)
    hs, obs = jnp.asarray(rng.normal(size=(40, NET["width"])), jnp.float32), batch.obs.reshape(-1, SPEC.obs_dim)[:40]
    out = algo.net.apply(params, hs, obs, jnp.zeros((40, 2)), method=M3Net.heads)
    codes, logits = np.asarray(out.codes), np.asarray(out.logits)
    same = np.flatnonzero(codes == np.bincount(codes).argmax())
    assert len(same) >= 2
    spread = np.abs(logits[same] - logits[same[0]]).max()
    assert (spread < 1e-5) if policy_input == "quantized" else (spread > 1e-3), spread


@pytest.fixture(scope="module")
def vaults(toy_env, tmp_path_factory):  # noqa: F811
    return duel_vaults(tmp_path_factory.mktemp("m3"), 12)


@pytest.mark.slow  # test_finetune.py trains M3 through mtmarl.train in the fast suite
def test_trains_through_the_cli_its_loss_falls_and_it_evaluates(vaults, tmp_path):
    from mtmarl import train
    from mtmarl.experiments.config import compose_train

    cfg = compose_train(["+algo=m3", "+tasks=duel", f"hydra.searchpath=[file://{vaults / 'conf'}]",
                         f"data.root={vaults / 'vaults'}", "network.width=16", "training=quick",
                         "training.updates=30", "training.updates_per_call=5", "training.log_every=5",
                         "training.eval_every=0", "training.batch_size=8", "training.seq_len=4", "algo.lr=3e-3",
                         "algo.num_codes=8", "algo.code_dim=8", "algo.agent_dim=4", "algo.head_width=16",
                         "eval.episodes=4", "logger.neptune=false", "logger.progress=false"])
    rows = train.run(cfg, run_dir=tmp_path / "run")
    logs = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    loss = [r["train/loss"] for r in logs if "train/loss" in r]
    sl = [r["train/sl_loss"] for r in logs if "train/sl_loss" in r]
    assert len(loss) >= 3 and loss[-1] < 0.7 * loss[0], loss
    assert sl[-1] < sl[0], sl
    perplexity_ = [r["train/code_perplexity"] for r in logs if "train/code_perplexity" in r]
    assert perplexity_[-1] > 2.0, perplexity_  # dead codes restarted: the codebook has not collapsed to one code
    assert [r["name"] for r in rows] == ["2v2", "3v1", "2v4"] and all("win_rate" in r for r in rows)
    assert json.loads((tmp_path / "run" / "algo.json").read_text())["name"] == "m3"


@pytest.mark.slow
def test_one_and_two_devices_give_the_same_update():
    """The data-parallel contract: a batch split over two devices gives the single-device update (the
    reparameterisation noise of z_i included), metrics included."""
    import optax
    from helpers import random_task
    from test_updet import A

    from mtmarl.data.batching import make_buffers
    from mtmarl.training.engine import Learner

    assert jax.local_device_count() >= 2
    rng = np.random.default_rng(1)
    buffers = make_buffers([random_task(rng, 30, 3, SPEC.obs_dim, A), random_task(rng, 25, 2, SPEC.obs_dim, A)],
                           seq_len=4)
    algo = registry.build("m3", {"batch_size": 6, "seq_len": 4, "lr": 3e-3, "num_codes": 4, "code_dim": 3,
                                 "agent_dim": 2, "head_width": 8}, NET, SPEC)
    runs = []
    for devices in (1, 2):
        learner = Learner(algo, buffers, 1, num_devices=devices)
        runs.append(learner.run(learner.init(0)))
    (one, m1), (two, m2) = runs
    mu1, mu2 = optax.tree.get(one.state.opt_state, "mu"), optax.tree.get(two.state.opt_state, "mu")
    scale = max(float(np.max(np.abs(x))) for x in jax.tree.leaves(mu1))
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(mu1), jax.tree.leaves(mu2)))
    assert diff < 1e-5 * scale, (diff, scale)
    for k in m1:
        np.testing.assert_allclose(m2[k], m1[k], rtol=1e-5, atol=1e-6, err_msg=k)


@pytest.mark.slow
def test_one_update_and_one_act_on_the_smax_marine_hard_layout():
    """M3 pretraining updates once on the padded SMAX layout and acts legally."""
    from helpers import smax_layout_update_and_act

    smax_layout_update_and_act("m3", {"num_codes": 8, "code_dim": 4, "agent_dim": 2, "head_width": 8})



def test_config_comes_from_its_yaml_and_bad_values_name_the_key():
    import dataclasses

    from mtmarl.errors import UserInputError

    entry = registry.get("m3")
    assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(entry.config))
    assert registry.load_config("m3").beta == 0.25
    with pytest.raises(UserInputError, match="algo.policy_input='codes'"):
        registry.load_config("m3", policy_input="codes")
    with pytest.raises(UserInputError, match="algo.beta=-1"):
        registry.load_config("m3", beta=-1.0)
    with pytest.raises(UserInputError, match="algo.num_codes=0"):
        registry.load_config("m3", num_codes=0)
