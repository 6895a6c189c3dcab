"""Offline algorithms: masking, overfitting, HL-Gauss/MSE, exact BC/CQL/ICQ pieces, Polyak targets."""


import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import random_params, random_task

from mtmarl.algos import common, mt_cql_sable, mt_oryx, registry
from mtmarl.algos.common import TrainState
from mtmarl.algos.registry import build as make_algo
from mtmarl.data.batching import SamplerConfig, make_buffers, sample
from mtmarl.networks import load_preset




A, B, T = 4, 4, 4
NET = load_preset("tiny", embed_dim=16, chunk_size=4)
# lr raised so 30 updates visibly overfit; few bins keep the Q head small.
OVERRIDES = {"lr": 2e-3, "num_bins": 11, "v_min": -3.0, "v_max": 3.0}
ALGOS = ["mt_bc_sable", "mt_cql_sable", "mt_oryx"]


def _task(rng, L, n, o):
    return random_task(rng, L, n, o, A)


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    buf = make_buffers([_task(rng, 30, 2, 3), _task(rng, 25, 3, 4)], seq_len=T)  # task 0 has a padded agent
    b = jax.jit(lambda k: sample(buf, k, 0, SamplerConfig(B, T)))(jax.random.key(3))
    assert (~np.asarray(b.active)).any() and len(set(np.asarray(b.task_ids))) == 2
    return b


def _random_params(algo, key, batch):
    return random_params(algo.net.init, key, batch.obs, 0.1)


_CACHE = {}


def _setup(name, batch, **extra):
    """(algo, jitted update, initial state), built once per configuration."""
    key = (name, tuple(sorted(extra.items())))
    if key not in _CACHE:
        algo = make_algo(name, {**OVERRIDES, **extra}, NET, A)

        @jax.jit
        def make_state(k):  # one small compile for parameters and optimiser state
            params = _random_params(algo, k, batch)
            target = None if name == "mt_bc_sable" else jax.tree.map(jnp.copy, params)
            return TrainState(params, target, algo.tx.init(params))

        state = make_state(jax.random.key(1))
        (stage,) = algo.stages  # one stage, 'train': a clipped-Adam step and a Polyak target update
        _CACHE[key] = (algo, jax.jit(stage.update), state)
    return _CACHE[key]


def _perturb_padded(batch, key):
    """New obs, actions and legals for padded agents (team rewards have no per-agent part)."""
    pad = ~np.asarray(batch.real)
    k1, k2 = jax.random.split(key)
    return batch._replace(
        obs=jnp.where(pad[..., None], 3.0 * jax.random.normal(k1, batch.obs.shape), batch.obs),
        actions=jnp.where(pad, jax.random.randint(k2, batch.actions.shape, 0, A), batch.actions),
        legals=jnp.where(pad[..., None], True, batch.legals))


def _tree_max_diff(a, b):
    return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize("name", ALGOS)
def test_padded_agents_change_no_loss(name, batch):
    algo, update, state = _setup(name, batch)
    other = _perturb_padded(batch, jax.random.key(9))
    key = jax.random.key(0)
    s1, m1 = update(state, batch, key)
    s2, m2 = update(state, other, key)
    for k in m1:
        np.testing.assert_allclose(m1[k], m2[k], rtol=1e-6, atol=1e-7, err_msg=k)
    assert _tree_max_diff(s1.params, s2.params) < 1e-7  # same gradients -> same Adam step
    # mask=False (ablation): padded agents count as agents, so the same perturbation shows up.
    unmasked = lambda b: b._replace(active=jnp.ones_like(b.active))  # noqa: E731
    _, m3 = update(state, unmasked(batch), key)
    _, m4 = update(state, unmasked(other), key)
    assert abs(float(m3["loss"]) - float(m4["loss"])) > 1e-4
    assert abs(float(m3["loss"]) - float(m1["loss"])) > 1e-4


@pytest.mark.parametrize("name", ALGOS)
def test_loss_decreases_on_fixed_batch(name, batch):
    algo, update, state = _setup(name, batch)
    losses = []
    for i in range(31):
        state, m = update(state, batch, jax.random.key(i))
        losses.append(float(m["loss"]))
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.7 * losses[0], losses


def test_polyak_update_interpolates_exactly(batch):
    algo, update, state = _setup("mt_oryx", batch)
    tau = algo.cfg.tau
    new, _ = update(state, batch, jax.random.key(0))
    expect = jax.tree.map(lambda p, t: tau * p + (1 - tau) * t, new.params, state.target_params)
    assert _tree_max_diff(new.target_params, expect) < 1e-6
    assert _tree_max_diff(new.params, state.params) > 1e-4  # the online net moved...
    assert _tree_max_diff(new.target_params, state.target_params) < 2 * tau * _tree_max_diff(new.params, state.params)
    p, t = {"w": jnp.array([1.0, 2.0])}, {"w": jnp.array([3.0, -2.0])}
    np.testing.assert_allclose(common.polyak(p, t, 0.25)["w"], [2.5, -1.0])
    bc, _, bc_state = _setup("mt_bc_sable", batch)
    assert bc_state.target_params is None


def test_bc_loss_is_hand_cross_entropy(batch):
    algo, update, state = _setup("mt_bc_sable", batch)
    _, m = update(state, batch, jax.random.key(0))  # metrics are at the pre-update parameters
    out, _ = jax.jit(algo.net.apply_train)(state.params, batch.obs, batch.actions, batch.legals,
                                          batch.active, batch.resets)
    b = jax.tree.map(np.asarray, batch)
    logits = np.where(b.legals, np.asarray(out.logits, np.float64), -np.inf)
    logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
        - logits.max(-1, keepdims=True)
    nll = -np.take_along_axis(logp, b.actions[..., None], -1)[..., 0]
    w = b.active.astype(float)
    per_task = [(nll * w)[b.task_ids == k].sum() / w[b.task_ids == k].sum() for k in np.unique(b.task_ids)]
    np.testing.assert_allclose(m["bc_loss"], np.mean(per_task), rtol=1e-5)
    plain = (nll * w).sum() / w.sum()
    assert abs(plain - np.mean(per_task)) > 1e-4  # eq. 1 differs from the plain masked mean here


def test_task_mean_is_eq1():
    x = jnp.array([[1.0, 3.0], [5.0, 7.0], [2.0, 100.0], [9.0, 9.0]])
    w = jnp.array([[1, 1], [1, 0], [1, 0], [0, 0]], bool)
    tasks = jnp.array([0, 0, 1, 2])  # task 2 has no active element: not present
    # task 0: (1 + 3 + 5) / 3 = 3; task 1: 2 -> (3 + 2) / 2
    tm = jax.jit(common.task_mean, static_argnums=3)
    np.testing.assert_allclose(tm(x, w, tasks, True), 2.5)
    np.testing.assert_allclose(tm(x, w, tasks, False), 11.0 / 4)
    g = jax.jit(jax.grad(lambda x: common.task_mean(x, w, tasks)))(x)
    np.testing.assert_allclose(g, [[1 / 6, 1 / 6], [1 / 6, 0], [0.5, 0], [0, 0]], rtol=1e-6)


@pytest.mark.parametrize("task_ids", [[0, 1, 0, 1, 1, 2], [1, 1, 1, 1, 1, 1]], ids=["uneven-tasks", "one-task"])
def test_reductions_across_two_shards_equal_the_whole_batch(task_ids):
    """Data parallelism (common module docstring): loss shares of 2 shards sum to the single-batch
    value and their gradients sum to its gradient; metrics and ICQ weights are the global ones."""
    assert jax.local_device_count() >= 2
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(6, 3, 2)) * 3, jnp.float32)
    w = jnp.asarray(rng.random((6, 3, 2)) < 0.6).at[3].set(False).at[:, 2, 1].set(False)
    ids = jnp.asarray(task_ids, jnp.int32)

    def reductions(x, w, ids, axis_name):
        shares = [common.task_mean(x, w, ids, on, axis_name) for on in (True, False)]
        grads = [jax.grad(common.task_mean)(x, w, ids, on, axis_name) for on in (True, False)]
        return (shares, grads, common.masked_mean(x, w, axis_name),
                common.batch_softmax(x, w, 0.5, axis_name=axis_name),
                common.global_max(jnp.max(jnp.where(w, x, -9.0)), axis_name),
                common.task_softmax(x, w, 0.5, ids, axis_name), common.task_scale(x, w, ids, axis_name))

    whole = jax.jit(reductions, static_argnums=3)(x, w, ids, None)
    split = lambda a: a.reshape((2, 3) + a.shape[1:])  # noqa: E731
    sharded = jax.pmap(lambda *a: reductions(*a, "d"), axis_name="d")(split(x), split(w), split(ids))
    (shares, grads, mean, soft, top, tsoft, tscale) = whole
    (s_shares, s_grads, s_mean, s_soft, s_top, s_tsoft, s_tscale) = sharded
    for one, two in zip(shares, s_shares):
        np.testing.assert_allclose(np.sum(two), one, rtol=1e-6)
    for one, two in zip(grads, s_grads):
        np.testing.assert_allclose(np.asarray(two).reshape(one.shape), one, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(s_mean, [mean, mean], rtol=1e-6)
    np.testing.assert_allclose(s_top, [top, top])
    np.testing.assert_allclose(np.asarray(s_soft).reshape(soft.shape), soft, rtol=1e-6, atol=1e-8)
    for one, two in zip((*tsoft, tscale), (*s_tsoft, s_tscale)):  # per-task ICQ weights, counts and scales
        np.testing.assert_allclose(np.asarray(two).reshape(one.shape), one, rtol=1e-6, atol=1e-8)
    # per-shard normalisation would be wrong here: the shards' own task means differ from the global ones
    local = [float(common.task_mean(x[i:i + 3], w[i:i + 3], ids[i:i + 3])) for i in (0, 3)]
    assert abs(np.mean(local) - float(shares[0])) > 1e-3


def test_cql_penalty_is_logsumexp_minus_data_q():
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.normal(size=(5, 4)) * 3)
    legals = jnp.asarray(rng.random((5, 4)) < 0.6).at[:, 2].set(True).at[4].set(jnp.arange(4) == 2)
    actions = jnp.array([2, 2, 2, 2, 2])
    penalty = jax.jit(mt_cql_sable.cql_penalty)
    pen = np.asarray(penalty(jnp.where(legals, q, -1e9), legals, actions))
    qn, ln = np.asarray(q), np.asarray(legals)
    expect = [np.log(np.exp(qn[i][ln[i]]).sum()) - qn[i, 2] for i in range(5)]
    np.testing.assert_allclose(pen, expect, rtol=1e-5)
    assert (pen >= -1e-6).all() and abs(pen[4]) < 1e-6  # a single legal action: no penalty
    # Its gradient pushes Q(a_data) up and the other legal actions down: softmax - onehot.
    g = np.asarray(jax.jit(jax.grad(lambda q: penalty(q, legals, actions).sum()))(q))
    soft = np.where(ln, np.exp(qn - qn.max(-1, keepdims=True)), 0)
    soft /= soft.sum(-1, keepdims=True)
    np.testing.assert_allclose(g, soft - np.eye(4)[2], atol=1e-5)


def test_batch_softmax_sums_to_one_over_batch():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(6, 3, 2)) * 5)
    mask = jnp.asarray(rng.random((6, 3, 2)) < 0.7).at[:, 2, 1].set(False)
    soft = jax.jit(common.batch_softmax, static_argnums=2)
    w = np.asarray(soft(x, mask, 0.5))
    m = np.asarray(mask)
    assert (w[~m] == 0).all() and (w >= 0).all()
    np.testing.assert_allclose(w.sum(0)[m.any(0)], 1.0, rtol=1e-6)
    assert (w.sum(0)[~m.any(0)] == 0).all()
    # masked entries' values do not matter; the softmax is over the batch axis only
    w2 = np.asarray(soft(jnp.where(mask, x, 1e6), mask, 0.5))
    np.testing.assert_allclose(w, w2, rtol=1e-6)
    i, j = 0, 0
    sel = m[:, i, j]
    e = np.exp(np.asarray(x)[sel, i, j] / 0.5 - (np.asarray(x)[sel, i, j] / 0.5).max())
    np.testing.assert_allclose(w[sel, i, j], e / e.sum(), rtol=1e-5)
    # a huge temperature gives uniform weights (og-marl Oryx's critic default is 1000)
    np.testing.assert_allclose(np.asarray(soft(x, mask, 1e9)).sum(0)[m.any(0)], 1.0, rtol=1e-6)


def _two_scale_tasks(rng):
    """8 samples of 2 tasks whose values differ 100x (returns of ~1 and ~100), as (x, mask, ids)."""
    ids = jnp.array([0, 1, 1, 0, 0, 1, 0, 1], jnp.int32)
    scale = np.where(np.asarray(ids) == 1, 100.0, 1.0)[:, None, None]
    x = jnp.asarray(scale * (1.0 + 0.3 * rng.normal(size=(8, 3, 2))), jnp.float32)
    mask = jnp.asarray(rng.random((8, 3, 2)) < 0.8).at[:, 0, 0].set(True).at[:, 2, 1].set(False)
    return x, mask, ids


def test_per_task_icq_weights_average_one_within_each_task():
    x, mask, ids = _two_scale_tasks(np.random.default_rng(4))
    icq = jax.jit(mt_oryx.icq_weights, static_argnums=(2, 4))
    m, t = np.asarray(mask), np.asarray(ids)
    for temp in (0.1, 1.0, 1000.0):
        w = np.asarray(icq(x, mask, temp, ids, True))
        assert (w[~m] == 0).all()
        for task in (0, 1):
            sel = t == task
            valid = m[sel].any(0)                      # positions where the task has entries
            mean = w[sel].sum(0)[valid] / m[sel].sum(0)[valid]
            np.testing.assert_allclose(mean, 1.0, rtol=1e-5)
        # naive reference: a softmax over one task's valid entries at one position, times their count
        xs = np.asarray(x)[(t == 0) & m[:, 1, 0], 1, 0] / temp
        e = np.exp(xs - xs.max())
        np.testing.assert_allclose(w[(t == 0) & m[:, 1, 0], 1, 0], len(xs) * e / e.sum(), rtol=1e-5)
    # the batch-wide softmax hands (nearly) all the weight to the task with the larger values
    w = np.asarray(icq(x, mask, 1.0, ids, False))
    assert w[t == 0].sum() < 1e-6 * w[t == 1].sum()
    np.testing.assert_allclose(w.sum(0)[m.any(0)] / m.sum(0)[m.any(0)], 1.0, rtol=1e-5)


def test_task_scale_is_each_tasks_std():
    x, mask, ids = _two_scale_tasks(np.random.default_rng(5))
    s = np.asarray(jax.jit(common.task_scale)(x, mask, ids))
    assert s.shape == (8, 1, 1)
    for b in range(8):
        sel = np.asarray(ids) == np.asarray(ids)[b]
        vals = np.asarray(x)[sel][np.asarray(mask)[sel]]
        np.testing.assert_allclose(s[b, 0, 0], vals.std(), rtol=1e-4)
    # a constant task hits the floor instead of dividing by zero
    const = np.asarray(common.task_scale(jnp.ones((4, 2)), jnp.ones((4, 2), bool), jnp.zeros(4, jnp.int32)))
    np.testing.assert_allclose(const, 1e-3)


@pytest.mark.parametrize("switches", [{}, {"per_task_weights": True, "adv_norm": True}], ids=["batch", "per-task"])
def test_oryx_without_critic_and_flat_weights_is_bc(batch, switches):
    """The degenerate case is exact: critic weight 0 and a huge policy temperature give BC's loss and gradient."""
    from mtmarl.algos import mt_bc_sable

    algo = make_algo("mt_oryx", {**OVERRIDES, "critic_coef": 0.0, "policy_temperature": 1e9, **switches}, NET, A)
    params = _random_params(algo, jax.random.key(7), batch)
    bc_cfg = registry.load_config("mt_bc_sable", lr=OVERRIDES["lr"])
    bc = lambda p: mt_bc_sable.loss(p, None, batch, None, bc_cfg, algo.net)[0]  # noqa: E731
    oryx = lambda p: algo.loss(p, params, batch, jax.random.key(0))[0]  # noqa: E731
    (l_bc, g_bc), (l_or, g_or) = jax.jit(jax.value_and_grad(bc))(params), jax.jit(jax.value_and_grad(oryx))(params)
    np.testing.assert_allclose(l_or, l_bc, rtol=1e-6)
    assert float(l_bc) > 0.1
    for a, b in zip(jax.tree.leaves(g_or), jax.tree.leaves(g_bc)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
    # and a temperature that is not huge does change the loss (the test can tell the difference)
    sharp = make_algo("mt_oryx", {**OVERRIDES, "critic_coef": 0.0, "policy_temperature": 1e-3, **switches}, NET, A)
    l_sharp = jax.jit(lambda p: sharp.loss(p, p, batch, jax.random.key(0))[0])(params)
    assert abs(float(l_sharp) - float(l_bc)) > 1e-3


def test_oryx_critic_and_policy_losses_each_reach_only_their_own_head(batch):
    """The policy loss holds Q constant and the critic loss never reads the policy head: with critic_coef 0 no
    gradient reaches ``q_head``, and the critic's part (the full loss's gradient minus that one) none reaches
    ``policy_head``; both reach the shared torso."""
    algo = make_algo("mt_oryx", OVERRIDES, NET, A)
    policy_only = make_algo("mt_oryx", {**OVERRIDES, "critic_coef": 0.0}, NET, A)
    params = _random_params(algo, jax.random.key(11), batch)
    grad = lambda a: jax.jit(jax.grad(lambda p: a.loss(p, params, batch, jax.random.key(0))[0]))(params)  # noqa: E731
    policy = grad(policy_only)["params"]
    critic = jax.tree.map(jnp.subtract, grad(algo)["params"], policy)
    norm = lambda tree: float(jnp.sqrt(sum(jnp.sum(x * x) for x in jax.tree.leaves(tree))))  # noqa: E731
    shared = lambda g: {k: v for k, v in g.items() if k not in ("policy_head", "q_head")}  # noqa: E731
    assert norm(policy["q_head"]) == 0 and norm(policy["policy_head"]) > 0
    assert norm(critic["policy_head"]) <= 1e-6 * norm(policy["policy_head"]) and norm(critic["q_head"]) > 0
    assert norm(shared(critic)) > 0 and norm(shared(policy)) > 0


@pytest.mark.parametrize("name", ["mt_cql_sable", "mt_oryx"])
def test_hl_gauss_and_mse_both_run(name, batch):
    hl, update, state = _setup(name, batch)
    _, m_hl = update(state, batch, jax.random.key(0))
    # Oryx: a huge value temperature makes its ICQ next-step weights n * w exactly uniform (1)
    flat = {"value_temperature": 1e9} if name == "mt_oryx" else {}
    mse = make_algo(name, {**OVERRIDES, "hl_gauss": False, **flat}, NET, A)
    assert mse.net.cfg.q_bins == 0 and hl.net.cfg.q_bins == OVERRIDES["num_bins"]
    params = jax.jit(lambda k: _random_params(mse, k, batch))(jax.random.key(1))
    loss, m = jax.jit(mse.loss)(params, params, batch, jax.random.key(0))
    td = "td_loss" if name == "mt_cql_sable" else "critic_loss"
    assert np.isfinite(float(loss)) and float(m[td]) > 0 and np.isfinite(float(m_hl[td]))
    # MSE critic on the scalar head, recomputed from the raw network outputs (target net = online here):
    # 0.5 * (Q(t, a_data) - y)^2 with y = r + gamma * d * (CQL: max_a Q(t+1, a); Oryx: Q(t+1, a_data))
    out, _ = mse.net.apply_train(params, batch.obs, batch.actions, batch.legals, batch.active, batch.resets)
    q = mse.net.q_values(out.q, batch.legals)                                      # (B, T, N, A)
    q_data = common.take_action(q, batch.actions)
    valid = batch.active[:, :-1] & common.td_valid(batch)[..., None]
    if name == "mt_cql_sable":
        nxt = q[:, 1:].max(-1)
    else:
        nxt = jnp.where(valid & batch.active[:, 1:] & ~batch.terminals[:, :-1, None], q_data[:, 1:], 0.0)
    y = batch.rewards[:, :-1, None] + mse.cfg.gamma * batch.discounts[:, :-1, None] * nxt
    want = common.task_mean(0.5 * jnp.square(q_data[:, :-1] - y), valid, batch.task_ids)
    np.testing.assert_allclose(float(m[td]), float(want), rtol=1e-5)
    np.testing.assert_allclose(float(m["td_target"]), float(common.masked_mean(y, valid)), rtol=1e-5)


def test_cql_acts_greedily_on_q_autoregressively(batch):
    algo, _, state = _setup("mt_cql_sable", batch)
    act = jax.jit(mt_cql_sable.q_act(algo.net), static_argnames="greedy")
    b = 0 if not np.asarray(batch.active)[0, 0].all() else 1
    obs, legals, active = batch.obs[b, 0], batch.legals[b, 0], batch.active[b, 0]
    order = jnp.array([2, 0, 1])
    acts, out, _ = act(state.params, algo.net.init_carry(None), obs, legals, active, True,
                       jax.random.key(0), order=order)
    acts = np.asarray(acts)
    assert np.asarray(legals)[np.arange(3), acts].all()
    # Teacher-forcing the chosen actions in the same order reproduces Q, and each agent took its argmax.
    p = np.asarray(order)
    tr, _ = jax.jit(algo.net.apply_train)(state.params, obs[p][None, None], jnp.asarray(acts[p])[None, None],
                                          legals[p][None, None], active[p][None, None], jnp.ones((1, 1), bool))
    qv = np.asarray(algo.net.q_values(tr.q, legals[p][None, None]))[0, 0]
    np.testing.assert_allclose(np.asarray(algo.net.q_values(out.q, legals))[p], qv, rtol=2e-4, atol=2e-4)
    live = np.asarray(active)[p]
    np.testing.assert_array_equal(acts[p][live], qv.argmax(-1)[live])


@pytest.mark.parametrize("hl", [True, False], ids=["hl_gauss", "scalar"])
def test_target_q_at_data_actions_equals_gathering_all_actions(batch, hl):
    """The cheap target path (convert only the dataset action's histogram) gives the full path's numbers."""
    algo, _, state = _setup("mt_oryx", batch, hl_gauss=hl)
    params, target = state.params, jax.tree.map(lambda x: x * 1.1, state.params)

    @jax.jit
    def both(p, t):
        full = common.critic_forward(p, t, batch, algo.net)[3]
        cheap = common.critic_forward(p, t, batch, algo.net, target_at_data=True)[3]
        return common.take_action(full, batch.actions), cheap

    full, cheap = both(params, target)
    assert cheap.shape == batch.actions.shape
    np.testing.assert_allclose(cheap, full, rtol=1e-5, atol=1e-5)


def test_lambda_returns_match_a_naive_loop():
    """TD(lambda) over 6 steps with a termination (step 1), a cut episode (no target at step 3) and the
    sequence end: lambda 0 is the one-step target, lambda 1 the return to the sequence end."""
    rng = np.random.default_rng(3)
    B, T1, N = 2, 6, 2
    r = rng.random((B, T1, 1)).astype(np.float32)
    d = np.ones((B, T1, 1), np.float32)
    d[:, 1] = 0.0                                            # step 1 terminates its episode
    v = rng.normal(size=(B, T1, N)).astype(np.float32) * (d > 0)
    valid = np.ones((B, T1, N), bool)
    valid[:, 3] = False                                      # step 3 ends by truncation: no target
    valid[1, :, 1] = False                                   # an inactive agent
    lr = jax.jit(common.lambda_returns, static_argnums=(4, 5))
    for lam in (0.0, 0.6, 1.0):
        g = np.asarray(lr(r, d, v, valid, 0.9, lam))
        expect = np.zeros_like(v)
        for b in range(B):
            for n in range(N):
                for t in reversed(range(T1)):
                    tail = expect[b, t + 1, n] if t + 1 < T1 and valid[b, t + 1, n] else v[b, t, n]
                    expect[b, t, n] = r[b, t, 0] + 0.9 * d[b, t, 0] * ((1 - lam) * v[b, t, n] + lam * tail)
        np.testing.assert_allclose(g, expect, rtol=1e-5, atol=1e-6)
        if lam == 0.0:
            np.testing.assert_allclose(g, r + 0.9 * d * v, rtol=1e-6)
    # lambda 1: steps 4..5 sum their rewards and bootstrap once at the sequence end
    g1 = np.asarray(lr(r, d, v, valid, 0.9, 1.0))
    np.testing.assert_allclose(g1[0, 4, 0], r[0, 4, 0] + 0.9 * (r[0, 5, 0] + 0.9 * v[0, 5, 0]), rtol=1e-5)


def test_oryx_td_lambda_changes_only_the_critic_target(batch):
    """lambda 0 is the one-step loss exactly; lambda > 0 changes the critic loss, not the policy loss."""
    base = make_algo("mt_oryx", OVERRIDES, NET, A)
    params = _random_params(base, jax.random.key(9), batch)
    metrics = {}
    for lam in (0.0, 0.8):
        algo = make_algo("mt_oryx", {**OVERRIDES, "td_lambda": lam}, NET, A)
        metrics[lam] = jax.jit(lambda p: algo.loss(p, p, batch, jax.random.key(0))[1])(params)
    ref = jax.jit(lambda p: base.loss(p, p, batch, jax.random.key(0))[1])(params)
    assert float(metrics[0.0]["critic_loss"]) == float(ref["critic_loss"])
    assert abs(float(metrics[0.8]["critic_loss"]) - float(ref["critic_loss"])) > 1e-4
    np.testing.assert_allclose(metrics[0.8]["policy_loss"], ref["policy_loss"], rtol=1e-6)
    with pytest.raises(Exception, match="td_lambda"):
        make_algo("mt_oryx", {"td_lambda": 1.5}, NET, A)


def test_cosine_lr_scales_each_adam_step_by_the_schedule():
    """With ``lr_decay_updates`` each Adam step is the constant-lr step times the hand-computed cosine factor
    (Adam's moments do not depend on the lr), and after the decay the rate stays at ``lr * lr_end``."""
    lr, n, end = 1e-3, 8, 0.1
    const = common.make_optimizer(registry.load_config("mt_oryx", lr=lr))
    decay = common.make_optimizer(registry.load_config("mt_oryx", lr=lr, lr_decay_updates=n, lr_end=end))
    params = {"w": jnp.zeros(3)}
    grads = [{"w": jnp.asarray(g, jnp.float32)} for g in np.random.default_rng(0).normal(size=(12, 3))]
    s_c, s_d = const.init(params), decay.init(params)
    for t, g in enumerate(grads):
        u_c, s_c = const.update(g, s_c, params)
        u_d, s_d = decay.update(g, s_d, params)
        factor = end + (1 - end) * 0.5 * (1 + np.cos(np.pi * min(t, n) / n))  # cosine from 1 to lr_end
        np.testing.assert_allclose(u_d["w"], factor * u_c["w"], rtol=1e-5, atol=1e-12)
    assert common.learning_rate(registry.load_config("mt_oryx")) == registry.load_config("mt_oryx").lr  # default


@pytest.mark.parametrize("key,value,wants", [("lr_decay_updates", -1, "integer >= 0"),
                                             ("lr_decay_updates", 2.5, "want an integer"),
                                             ("lr_end", 1.5, "[0, 1]")])
def test_bad_lr_schedule_names_the_key(key, value, wants):
    with pytest.raises(Exception, match=rf"algo\.{key}.*{re.escape(wants)}.*"):
        registry.load_config("mt_bc_sable", **{key: value})
