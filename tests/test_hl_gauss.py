"""HL-Gauss histogram targets, expectation read-out and loss."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtmarl.networks import HLGauss




HL = HLGauss(v_min=-5.0, v_max=15.0, num_bins=41)


def _logits(p):
    return jnp.log(jnp.maximum(p, 1e-30))


def test_probs_normalised_and_vectorised():
    x = jnp.linspace(-10, 20, 24).reshape(2, 3, 4)
    p = HL.to_probs(x)
    assert p.shape == (2, 3, 4, 41)
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)
    assert (p >= 0).all()
    assert HL.to_scalar(_logits(p)).shape == (2, 3, 4)
    assert HL.loss(_logits(p), x).shape == (2, 3, 4)


def test_probs_match_gaussian_bin_mass():
    """Interior target: each bin holds Phi(b - x) - Phi(a - x) (tails beyond the support are negligible)."""
    x = 4.3
    p = np.asarray(HL.to_probs(jnp.float32(x)))
    edges = np.linspace(-5.0, 15.0, 42)
    phi = lambda z: 0.5 * (1 + math.erf(z / (HL.sigma * math.sqrt(2))))  # noqa: E731
    expect = np.array([phi(b - x) - phi(a - x) for a, b in zip(edges[:-1], edges[1:])])
    np.testing.assert_allclose(p, expect, atol=1e-6)
    assert HL.sigma == pytest.approx(0.75 * 20 / 41)


def test_to_scalar_recovers_targets_and_clips():
    inner = jnp.linspace(HL.v_min + 3 * HL.sigma, HL.v_max - 3 * HL.sigma, 101)
    np.testing.assert_allclose(HL.to_scalar(_logits(HL.to_probs(inner))), inner, atol=2e-3)
    anywhere = jnp.linspace(HL.v_min, HL.v_max, 57)  # near the edges the truncated Gaussian is biased inwards
    err = jnp.abs(HL.to_scalar(_logits(HL.to_probs(anywhere))) - anywhere)
    assert float(err.max()) < HL.bin_width
    out = jnp.array([-100.0, 1e6])
    np.testing.assert_allclose(HL.to_probs(out), HL.to_probs(jnp.array([HL.v_min, HL.v_max])))


def test_loss_minimised_at_target_histogram():
    x = jnp.array([[-4.0, 0.0, 2.5], [7.7, 14.9, 30.0]])
    p = HL.to_probs(x)
    logits = _logits(p)
    grad = jax.grad(lambda lg: HL.loss(lg, x).sum())(logits)
    np.testing.assert_allclose(grad, 0.0, atol=1e-5)
    # Any other logits score worse, and the loss at the optimum equals the target entropy.
    worse = logits + jax.random.normal(jax.random.key(0), logits.shape)
    assert (HL.loss(worse, x) > HL.loss(logits, x)).all()
    entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), -1)
    np.testing.assert_allclose(HL.loss(logits, x), entropy, rtol=1e-4, atol=1e-5)
    # Gradient is softmax - target (uniform logits vs target histogram).
    g0 = jax.grad(lambda lg: HL.loss(lg, x).sum())(jnp.zeros_like(logits))
    np.testing.assert_allclose(g0, 1 / 41 - p, atol=1e-6)


def test_rejects_bad_support():
    with pytest.raises(ValueError):
        HLGauss(1.0, 1.0, 10)
    with pytest.raises(ValueError):
        HLGauss(0.0, 1.0, 1)
