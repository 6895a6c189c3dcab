"""The attention mixer: invariance to the agents' order and to padded agents, monotonicity in every Q."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtmarl.errors import UserInputError
from mtmarl.networks.mixer import AttentionMixer, MixerConfig, vdn

CFG = MixerConfig(width=8, heads=2, mix_width=6)
MIXER = AttentionMixer(CFG)


@pytest.fixture(scope="module")
def setup():
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    qs = jax.random.normal(k1, (3, 4))          # 3 states, 4 agents
    emb = jax.random.normal(k2, (3, 4, 5))
    mask = jnp.array([[True] * 4, [True, True, True, False], [True, False, True, True]])
    params = MIXER.init(k3, qs, emb, mask)
    return params, qs, emb, mask


def test_permuting_agents_with_their_qs_leaves_q_tot_unchanged(setup):
    params, qs, emb, mask = setup
    want = MIXER.apply(params, qs, emb, mask)
    perm = jnp.array([2, 0, 3, 1])
    got = MIXER.apply(params, qs[:, perm], emb[:, perm], mask[:, perm])
    np.testing.assert_allclose(got, want, atol=1e-5)
    # permuting the Qs alone (not their embeddings) does change it: the weights are per agent
    assert not np.allclose(MIXER.apply(params, qs[:, perm], emb, mask), want, atol=1e-3)


def test_padded_agents_change_nothing(setup):
    params, qs, emb, mask = setup
    want = MIXER.apply(params, qs, emb, mask)
    k = jax.random.PRNGKey(7)
    pad_q, pad_e = jax.random.normal(k, (3, 3)) * 50, jax.random.normal(k, (3, 3, 5)) * 50  # arbitrary junk
    got = MIXER.apply(params, jnp.concatenate([qs, pad_q], 1), jnp.concatenate([emb, pad_e], 1),
                      jnp.concatenate([mask, jnp.zeros((3, 3), bool)], 1))
    np.testing.assert_allclose(got, want, atol=1e-5)
    # a masked agent inside the tuple (state 1's last) is likewise ignored, whatever its values
    junk = MIXER.apply(params, qs.at[1, 3].set(100.0), emb.at[1, 3].set(9.0), mask)
    np.testing.assert_allclose(junk, want, atol=1e-5)
    # ...while an active agent's embedding does matter
    assert not np.isclose(MIXER.apply(params, qs, emb.at[0, 3].set(9.0), mask)[0], want[0], atol=1e-4)


def test_q_tot_is_monotonic_in_every_agent_q(setup):
    params, _, emb, mask = setup
    grad = jax.grad(lambda q: MIXER.apply(params, q, emb, mask).sum())
    for seed in range(5):
        qs = 5.0 * jax.random.normal(jax.random.PRNGKey(seed), (3, 4))
        g = np.asarray(grad(qs))
        assert (g >= 0).all(), g
        assert (g[~np.asarray(mask)] == 0).all() and (g[np.asarray(mask)] > 0).any()


def test_vdn_sums_active_agents_and_bad_sizes_are_refused():
    np.testing.assert_allclose(vdn(jnp.array([[1.0, 2.0, 40.0]]), jnp.array([[True, True, False]])), [3.0])
    with pytest.raises(UserInputError, match="divisible"):
        MixerConfig(width=5, heads=2)


def test_init_scale_shrinks_the_initial_mixing_gain_and_keeps_it_monotonic():
    """dQ_tot/dq_i at init is a product of the two hypernetwork weights: scaling their kernels' variance by
    0.1 scales it by about 0.1 (each |w| by sqrt(0.1)); it stays >= 0. At the default the gain is several
    times a VDN sum's 1, which made UPDeT-m's TD targets diverge on SMAX (docs/decisions.md, ``algo.mixer_init_scale``)."""
    qs = 0.1 * jax.random.normal(jax.random.PRNGKey(0), (64, 6))
    emb = jax.random.normal(jax.random.PRNGKey(1), (64, 6, 16))
    mask = jnp.ones((64, 6), bool)
    gains = {}
    for scale in (1.0, 0.1):
        mixer = AttentionMixer(MixerConfig(init_scale=scale))
        params = mixer.init(jax.random.PRNGKey(2), qs, emb, mask)
        grad = jax.grad(lambda q: mixer.apply(params, q, emb, mask).sum())(qs)
        assert (grad >= 0).all()
        gains[scale] = float(grad.mean())
    assert gains[1.0] > 2.0, gains  # far above VDN's 1 at flax's default init
    assert 0.05 < gains[0.1] / gains[1.0] < 0.2, gains
    with pytest.raises(UserInputError, match="init_scale"):
        MixerConfig(init_scale=0.0)
