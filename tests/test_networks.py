"""Retention forms agree; Sable respects causality, resets and padding; training == acting."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import random_params

from mtmarl.errors import UserInputError
from mtmarl.networks import NEG, SableConfig, load_preset, make_sable
from mtmarl.networks import retention as R
from mtmarl.networks.sable import _mask_outputs




# ---------------------------------------------------------------- retention core

B, T, N, H, DK, DV = 2, 7, 3, 2, 4, 5
GAMMA = jnp.array([0.6, 0.9])  # strong decays so a wrong exponent is visible


def _inputs(seed=0):
    return _make_inputs(jax.random.key(seed))


@jax.jit
def _make_inputs(key):
    ks = jax.random.split(key, 5)
    L = T * N
    q = jax.random.normal(ks[0], (B, L, H, DK))
    k = jax.random.normal(ks[1], (B, L, H, DK))
    v = jax.random.normal(ks[2], (B, L, H, DV))
    active = jnp.ones((B, T, N), bool).at[0, :, 1].set(False).at[1, :, 2].set(False).reshape(B, L)
    # resets inside chunks (t = 2, 5 for row 0; t = 4 for row 1); row 0 also resets at t = 0, row 1 does not
    resets = jnp.zeros((B, T), bool).at[0, 2].set(True).at[0, 5].set(True).at[1, 4].set(True).at[0, 0].set(True)
    state0 = jax.random.normal(ks[3], (B, H, DK, DV))
    return q, k, v, active, resets, state0


CHUNKS = (3, 4, 7)  # 3 and 4 do not divide T = 7 (remainders 1 and 3); 7 = one chunk


@functools.partial(jax.jit, static_argnums=0)
def _all_forms(causal, q, k, v, active, resets, state0):
    """Every form in one compiled program (compiles are the slow part of these tests on CPU)."""
    out = {"naive": R.naive_retention(q, k, v, active, resets, N, GAMMA, causal),
           "rec": R.recurrent_retention(q, k, v, active, resets, N, GAMMA, causal)}
    for c in CHUNKS:
        out[f"c{c}"] = R.chunkwise_retention(q, k, v, active, resets, N, GAMMA, causal, c)
    # Carried initial state (row 1 does not reset at t=0, see _inputs): must decay in identically.
    out["rec0"] = R.recurrent_retention(q, k, v, active, resets, N, GAMMA, causal, state0)
    out["chunk0"] = R.chunkwise_retention(q, k, v, active, resets, N, GAMMA, causal, 3, state0)
    return out


@pytest.mark.parametrize("causal", [False, True], ids=["encoder", "decoder"])
def test_retention_forms_agree(causal):
    out = _all_forms(causal, *_inputs())
    ref = out["naive"]
    rec, rec_state = out["rec"]
    close = functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-4)
    close(rec, ref)
    for c in CHUNKS:
        close(out[f"c{c}"][0], ref, err_msg=f"chunk={c}")
        close(out[f"c{c}"][1], rec_state, err_msg=f"state chunk={c}")
    (o0, s0), (c0, cs0), z = out["rec0"], out["chunk0"], out["c3"][0]
    close(c0, o0)
    close(cs0, s0)
    close(c0[0], z[0])  # row 0 resets at t=0: initial state invisible
    assert not np.allclose(c0[1], z[1], atol=1e-3)  # row 1: visible


def test_naive_reference_semantics():
    """Spot-check the reference itself against the definition for one token pair."""
    q, k, v, active, resets, _ = _inputs(2)
    resets = jnp.zeros_like(resets)
    # Only key/value at token j = N*1 + 0 (t=1, agent 0) non-zero.
    j = N
    kk = jnp.zeros_like(k).at[:, j].set(k[:, j])
    naive = jax.jit(R.naive_retention, static_argnums=(5, 7))
    out = np.asarray(naive(q, kk, v, jnp.ones_like(active), resets, N, GAMMA, True))
    q, k, v = map(np.asarray, (q, k, v))
    gamma = np.asarray(GAMMA)
    for i in range(T * N):
        ti, ai = divmod(i, N)
        expect = np.zeros((H, DV)) if ti < 1 else (gamma ** (ti - 1))[:, None] * (
            np.einsum("hd,hd->h", q[0, i], k[0, j])[:, None] * v[0, j])
        np.testing.assert_allclose(out[0, i], expect, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- Sable

A, O, NA, TS, BS = 5, 6, 4, 6, 2
# 2 blocks (multi-block agent-by-agent recurrence), HL-Gauss Q, chunk 4 does not divide TS = 6.
CFG = SableConfig(embed_dim=16, n_blocks=2, n_heads=2, chunk_size=4, q_bins=7, v_min=-2.0, v_max=3.0)


_PADDED = np.ones((BS, TS, NA), bool)
_PADDED[:, :, 1] = False  # padded agents interleaved with active ones: agent 1 (both rows), agent 3 (row 1)
_PADDED[1, :, 3] = False


@jax.jit
def _make_batch(key, active):
    ks = jax.random.split(key, 3)
    obs = jax.random.normal(ks[0], (BS, TS, NA, O)) * active[..., None]
    mask = jax.random.bernoulli(ks[1], 0.6, (BS, TS, NA, A)).at[..., 0].set(True)
    mask = jnp.where(active[..., None], mask, jnp.arange(A) == 0)
    actions = jax.random.categorical(ks[2], jnp.where(mask, 0.0, -jnp.inf))
    resets = jnp.zeros((BS, TS), bool).at[:, 0].set(True).at[0, 2].set(True).at[1, 5].set(True)
    return obs, actions, mask, active, resets


def _batch(seed=0, active=None):
    return _make_batch(jax.random.key(seed), jnp.asarray(_PADDED if active is None else active))


def _random_params(net, key):
    return random_params(net.init, key, jnp.zeros((1, 1, NA, O)), 0.2)


@pytest.fixture(scope="module")
def sable():
    net = make_sable(CFG, A)
    params = jax.jit(lambda k: _random_params(net, k))(jax.random.key(0))
    return net, params, jax.jit(net.apply_train), jax.jit(net.act)


def _changed(a, b, atol=1e-5):
    a, b = np.asarray(a), np.asarray(b)
    return np.abs(a - b).reshape(*a.shape[:3], -1).max(axis=-1) > atol


def test_train_matches_recurrent_act(sable):
    """Chunkwise training logits/Q/states == agent-by-agent acting with the same actions forced."""
    net, params, apply, act = sable
    obs, actions, mask, active, resets = _batch(1)
    perm = jnp.array([3, 1, 0, 2])  # decoding order (puts padded agents first and between active ones)
    out, final = apply(params, obs[:, :, perm], actions[:, :, perm], mask[:, :, perm], active[:, :, perm], resets)
    for b in range(BS):
        carry = net.init_carry(None, NA)
        for t in range(TS):
            acts, o, carry = act(params, carry, obs[b, t], mask[b, t], active[b, t], resets[b, t],
                                 jax.random.key(t), order=perm, forced_actions=actions[b, t])
            np.testing.assert_array_equal(acts, actions[b, t])
            np.testing.assert_allclose(o.logits[perm], out.logits[b, t], rtol=2e-4, atol=2e-4)
            np.testing.assert_allclose(o.q[perm], out.q[b, t], rtol=2e-4, atol=2e-4)
        for x, y in zip(jax.tree.leaves(carry), jax.tree.leaves(final)):
            np.testing.assert_allclose(x, y[b], rtol=2e-4, atol=2e-4)


def test_auto_chunks_follow_agents_and_change_no_output(sable, monkeypatch):
    """chunk_size 'auto' picks CHUNK_TOKENS // agents timesteps, and the training pass in those chunks (here 3
    chunks of 2 of the 6 steps) gives what the fixed chunk of 4 gives; bad values are refused naming the key."""
    import dataclasses

    import mtmarl.networks.sable as sable_module
    from mtmarl.errors import UserInputError

    net, params, apply, _ = sable
    auto = dataclasses.replace(CFG, chunk_size="auto")
    tokens = sable_module.CHUNK_TOKENS
    assert [auto.chunk_steps(n) for n in (1, 4, 12, 64)] == [tokens, tokens // 4, tokens // 12, 1]
    assert CFG.chunk_steps(12) == 4
    monkeypatch.setattr(sable_module, "CHUNK_TOKENS", 2 * NA)
    assert auto.chunk_steps(NA) == 2
    batch = _batch(3)
    out, final = make_sable(auto, A).apply_train(params, *batch)
    ref, ref_final = apply(params, *batch)
    np.testing.assert_allclose(out.logits, ref.logits, rtol=2e-4, atol=2e-4)
    np.testing.assert_allclose(out.q, ref.q, rtol=2e-4, atol=2e-4)
    for x, y in zip(jax.tree.leaves(final), jax.tree.leaves(ref_final)):
        np.testing.assert_allclose(x, y, rtol=2e-4, atol=2e-4)
    for bad in (0, "fast", 2.5):
        with pytest.raises(UserInputError, match=r"network.chunk_size must be an integer >= 1 or 'auto', got"):
            dataclasses.replace(CFG, chunk_size=bad)


def test_decoder_causal_over_agents_and_time(sable):
    net, params, apply, _ = sable
    obs, actions, mask, active, resets = _batch(2, active=jnp.ones((BS, TS, NA), bool))
    mask = jnp.ones_like(mask)
    base, _ = apply(params, obs, actions, mask, active, resets)
    t0 = 3
    for j in range(NA):
        new_actions = actions.at[:, t0, j].set((actions[:, t0, j] + 1) % A)
        out, _ = apply(params, obs, new_actions, mask, active, resets)
        ch = _changed(base.logits, out.logits) | _changed(base.q, out.q)
        assert not ch[:, :t0].any(), "an earlier timestep saw a later action"
        assert not ch[:, t0, : j + 1].any(), f"agent <= {j} saw agent {j}'s action"
        if j < NA - 1:  # the last agent's action is never a decoder input (Sable's shifted actions)
            assert ch[:, t0, j + 1].all(), "the next agent should see the action (test sensitivity)"
            assert ch[0, t0 + 1:].any() and ch[1, t0 + 1:t0 + 2].any(), "later steps should see it"
            assert not ch[1, t0 + 2:].any(), "row 1 resets at t=5: nothing crosses it"


def test_reset_isolates_episodes(sable):
    net, params, apply, _ = sable
    obs, actions, mask, active, resets = _batch(3)
    resets = jnp.zeros_like(resets).at[:, 3].set(True)
    base, _ = apply(params, obs, actions, mask, active, resets)
    k1, k2 = jax.random.split(jax.random.key(9))
    obs2 = obs.at[:, :3].add(jax.random.normal(k1, obs[:, :3].shape))
    actions2 = actions.at[:, :3].set(jax.random.randint(k2, actions[:, :3].shape, 0, A))
    out, _ = apply(params, obs2, actions2, mask, active, resets)
    assert not _changed(base.logits, out.logits)[:, 3:].any()
    assert not _changed(base.q, out.q)[:, 3:].any()
    # Without the reset the change must propagate (the test can fail).
    no_reset = jnp.zeros_like(resets)
    a, _ = apply(params, obs, actions, mask, active, no_reset)
    b, _ = apply(params, obs2, actions2, mask, active, no_reset)
    assert _changed(a.logits, b.logits)[:, 3:].any()


def test_padded_agents_are_inert(sable):
    net, params, apply, _ = sable
    obs, actions, mask, active, resets = _batch(4)
    base, _ = apply(params, obs, actions, mask, active, resets)
    k1, k2 = jax.random.split(jax.random.key(5))
    pad = ~active
    obs2 = jnp.where(pad[..., None], jax.random.normal(k1, obs.shape) * 3, obs)
    actions2 = jnp.where(pad, jax.random.randint(k2, actions.shape, 0, A), actions)
    out, _ = apply(params, obs2, actions2, mask, active, resets)
    live = np.asarray(active)
    assert not _changed(base.logits, out.logits)[live].any()
    assert not _changed(base.q, out.q)[live].any()
    # Sensitivity: the same perturbation on an active agent does reach the others.
    out3, _ = apply(params, obs.at[:, :, 0].add(1.0), actions, mask, active, resets)
    assert _changed(base.logits, out3.logits)[:, :, 2].any()


def test_masked_logits_never_pick_illegal(sable):
    net, params, apply, act = sable
    obs, actions, mask, active, resets = _batch(6)
    out, _ = apply(params, obs, actions, mask, active, resets)
    m = np.asarray(mask)
    assert (np.asarray(out.logits)[~m] == NEG).all()
    greedy = np.asarray(jnp.argmax(out.logits, -1))
    assert np.take_along_axis(m, greedy[..., None], -1).all()
    qv = np.asarray(net.q_values(out.q, mask))  # HL-Gauss logits -> masked scalars
    assert out.q.shape == (BS, TS, NA, A, CFG.q_bins)
    assert (qv[~m] == NEG).all() and (qv[m] >= CFG.v_min).all() and (qv[m] <= CFG.v_max).all()
    carry = net.init_carry(None, NA)
    for i in range(24):  # sampled actions: mask[1, 1] has several illegal actions per agent
        acts, o, carry = act(params, carry, obs[1, 1], mask[1, 1], active[1, 1], i == 0, jax.random.key(i))
        assert m[1, 1][np.arange(NA), np.asarray(acts)].all()
        assert (np.asarray(acts)[~np.asarray(active[1, 1])] == 0).all()
    assert (~m[1, 1]).sum() >= 4


def test_scalar_q_head_masked():
    """q_bins=0: scalar Q per action masked like the logits (shapes via eval_shape, masking directly)."""
    cfg = dataclasses.replace(CFG, q_bins=0, value_head=True)
    net = make_sable(cfg, A)
    params = jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((1, 1, NA, O)))
    out, _ = jax.eval_shape(net.apply_train, params, *_batch(7))
    assert out.q.shape == out.logits.shape == (BS, TS, NA, A) and out.value.shape == (BS, TS, NA)
    mask = np.array([[True, False, True]])
    logits, q = _mask_outputs(cfg, jnp.ones((1, 3)), jnp.full((1, 3), 2.0), mask)
    np.testing.assert_array_equal(q, [[2.0, NEG, 2.0]])
    np.testing.assert_array_equal(logits, [[1.0, NEG, 1.0]])


def test_swiglu_not_zero_init():
    """The real initialiser must give the FFN non-zero weights (a zero-initialised SwiGLU never trains)."""
    net = make_sable(dataclasses.replace(CFG, n_blocks=1, embed_dim=8, q_bins=0), A)
    params = jax.jit(net.init)(jax.random.key(0), jnp.zeros((1, 1, NA, O)))
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    ffn = [(jax.tree_util.keystr(p), x) for p, x in flat if "ffn" in jax.tree_util.keystr(p)]
    assert len(ffn) == 2 * 2  # fused w13 and w2 in the encoder and the decoder block
    for name, x in ffn:
        assert float(jnp.std(x)) > 1e-2, name


def test_presets_and_param_counts():
    base = load_preset("base")
    assert (base.embed_dim, base.n_blocks, base.n_heads) == (128, 1, 4)
    assert load_preset("base", embed_dim=256).embed_dim == 256
    assert load_preset("tiny").embed_dim < load_preset("small").embed_dim
    with pytest.raises(UserInputError):
        load_preset("base", embed_dim=130)
    with pytest.raises(UserInputError):
        load_preset("nope")
    counts = {}
    for e in (64, 128, 768):  # RWARE-sized inputs: 66 obs features, 5 actions, 12 agents
        net = make_sable(dataclasses.replace(base, embed_dim=e, q_bins=51), 5)  # the algorithms' Q head
        shapes = jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((1, 2, 12, 66)))
        counts[e] = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
    print("\nSable params (1 block, 4 heads, 51 HL-Gauss bins, obs 66, 5 actions): "
          + ", ".join(f"embed {e}: {c:,}" for e, c in counts.items())
          + "  (the multi-task Oryx paper reports 116k at 64, 13M at 768)")
    assert counts[64] < counts[128] < counts[768]


# ---------------------------------------------------------------- mixed-precision matmul

def test_bf16_matmul_values_and_gradients_match_float32():
    """The bf16 product (custom VJP) equals the float32 one to bf16 rounding, in value and both gradients.

    Inputs are exactly representable in bf16, so any difference beyond float32 accumulation error
    means a wrong transpose/contraction in the custom backward pass.
    """
    from mtmarl.networks.layers import matmul

    kx, kw, kg = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (3, 5, 16)).astype(jnp.bfloat16).astype(jnp.float32)
    w = jax.random.normal(kw, (16, 8)).astype(jnp.bfloat16).astype(jnp.float32)
    g = jax.random.normal(kg, (3, 5, 8)).astype(jnp.bfloat16).astype(jnp.float32)

    def grads(dtype):
        y, vjp = jax.vjp(lambda x, w: matmul(x, w, dtype), x, w)
        return (y, *vjp(g))

    for a, b in zip(grads("float32"), grads("bfloat16")):
        assert a.dtype == b.dtype == jnp.float32
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError):
        matmul(x, w, "float16")


def test_bf16_network_close_to_float32():
    """matmul_dtype only changes rounding: same params give close outputs (bf16 has ~3 significant digits)."""
    cfg32 = dataclasses.replace(CFG, q_bins=0)
    cfg16 = dataclasses.replace(cfg32, matmul_dtype="bfloat16")
    net32, net16 = make_sable(cfg32, A), make_sable(cfg16, A)
    params = random_params(net32.init, jax.random.key(1), jnp.zeros((1, 1, NA, O)))
    batch = _batch(3)
    (o32, _), (o16, _) = net32.apply_train(params, *batch), net16.apply_train(params, *batch)
    legal = batch[2]
    err = np.abs(np.where(legal, o16.logits - o32.logits, 0.0)).max()
    scale = np.abs(np.where(legal, o32.logits, 0.0)).max()
    assert 0 < err < 0.05 * scale
    with pytest.raises(UserInputError):
        dataclasses.replace(cfg32, matmul_dtype="float16")


def test_auto_matmul_dtype_is_bf16_only_where_bf16_is_fast():
    """``matmul_dtype: auto`` (the small/base presets): bf16 on accelerators and CPUs with bf16 instructions,
    float32 on other CPUs (where bf16 was measured slower); resolved when the config is built, so the
    algorithm spec a run stores names the dtype it trained with."""
    from mtmarl.networks.layers import fastest_matmul_dtype

    assert fastest_matmul_dtype("gpu") == fastest_matmul_dtype("tpu") == "bfloat16"
    assert fastest_matmul_dtype("cpu", {"avx2", "fma"}) == "float32"
    assert fastest_matmul_dtype("cpu", {"avx2", "avx512_bf16"}) == "bfloat16"
    assert fastest_matmul_dtype("cpu", {"amx_bf16", "amx_tile"}) == "bfloat16"
    cfg = SableConfig(matmul_dtype="auto")
    assert cfg.matmul_dtype == fastest_matmul_dtype() and dataclasses.asdict(cfg)["matmul_dtype"] != "auto"
    with pytest.raises(UserInputError, match="network.matmul_dtype .*'auto'.*got 'fp16'"):
        SableConfig(matmul_dtype="fp16")
