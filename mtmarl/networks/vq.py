"""Vector quantisation (VQ-VAE, van den Oord et al. 2017) with a straight-through estimator.

Why its own module: M3 (the M3 paper) quantises its agent-sharing code with a learnable codebook,
and other skill methods (HyGen-like discrete skills) can reuse the same layer.

* :func:`nearest_codes`: index of the codebook row nearest (squared L2) to each vector.
* :func:`straight_through`: the forward value is the quantised vector ``e_k``; the backward
  pass copies the gradient w.r.t. ``e_k`` onto the encoder output ``z_e`` unchanged
  (``z_e + sg[e_k - z_e]``), since the arg-min has no gradient.
* :func:`vq_losses`: the M3 paper's Eq. 5 split in its two terms, per vector (summed over the code
  dimension): the codebook term ``||sg[z_e] - e||^2`` moves the chosen codes towards the
  encoder outputs; the commitment term ``||z_e - sg[e]||^2`` (weighted by ``beta`` by the
  caller) keeps the encoder near its codes.
* :class:`VectorQuantizer`: a flax module holding the ``(num_codes, dim)`` codebook.
* :func:`restart_dead_codes`: codes no vector of a batch chose are moved onto random encoder
  outputs (against codebook collapse), and :func:`perplexity` measures the code usage.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp


def nearest_codes(z, codebook):
    """z (..., D), codebook (K, D) -> (...,) int32: arg-min_k ||z - e_k||^2 (first index on ties)."""
    d = (jnp.sum(z * z, -1, keepdims=True) - 2.0 * z @ codebook.T + jnp.sum(codebook * codebook, -1))
    return jnp.argmin(d, axis=-1).astype(jnp.int32)


def straight_through(z_e, z_q):
    """Forward ``z_q``; backward the gradient w.r.t. the output goes to ``z_e`` unchanged (none to ``z_q``)."""
    return z_e + jax.lax.stop_gradient(z_q - z_e)


def vq_losses(z_e, z_q):
    """Per-vector (codebook, commitment) terms of the M3 paper's Eq. 5, each (...,), summed over the last axis.

    ``codebook = ||sg[z_e] - z_q||^2`` (gradient to the codebook only);
    ``commitment = ||z_e - sg[z_q]||^2`` (gradient to the encoder only). Eq. 5 is
    ``codebook + beta * commitment``.
    """
    sg = jax.lax.stop_gradient
    return jnp.sum(jnp.square(sg(z_e) - z_q), -1), jnp.sum(jnp.square(z_e - sg(z_q)), -1)


class Quantized(NamedTuple):
    z_st: jax.Array         # (..., D) forward e_k, gradient straight through to z_e
    z_q: jax.Array          # (..., D) e_k itself (gradient to the codebook)
    codes: jax.Array        # (...,) int32 k
    codebook_loss: jax.Array   # (...,) ||sg[z_e] - e_k||^2
    commitment_loss: jax.Array  # (...,) ||z_e - sg[e_k]||^2


def quantize(z_e, codebook) -> Quantized:
    codes = nearest_codes(jax.lax.stop_gradient(z_e), codebook)
    z_q = jnp.take(codebook, codes, axis=0)
    cb, commit = vq_losses(z_e, z_q)
    return Quantized(straight_through(z_e, z_q), z_q, codes, cb, commit)


class VectorQuantizer(nn.Module):
    """A learnable codebook of ``num_codes`` vectors of size ``dim``; ``__call__(z_e) -> Quantized``.

    Initialised uniformly in ``[-1/K, 1/K]`` as in the VQ-VAE reference.
    """

    num_codes: int
    dim: int

    @nn.compact
    def __call__(self, z_e) -> Quantized:
        k = self.num_codes
        codebook = self.param("codebook", lambda key, shape: jax.random.uniform(key, shape, jnp.float32, -1.0 / k, 1.0 / k),
                              (k, self.dim))
        return quantize(z_e, codebook)


def perplexity(codes, weight, num_codes: int, axis_name: str | None = None):
    """exp(entropy) of the code usage over entries with ``weight`` (1: one code used, K: all used evenly)."""
    counts = code_counts(codes, weight, num_codes, axis_name)
    p = counts / jnp.maximum(counts.sum(), 1e-8)
    return jnp.exp(-jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.maximum(p, 1e-12)), 0.0)))


def code_counts(codes, weight, num_codes: int, axis_name: str | None = None):
    """(K,) how many entries with ``weight`` chose each code, over the global batch."""
    w = weight.astype(jnp.float32)
    counts = jnp.sum(jax.nn.one_hot(codes, num_codes) * w[..., None], axis=tuple(range(codes.ndim)))
    return counts if axis_name is None else jax.lax.psum(counts, axis_name)


def restart_dead_codes(codebook, z_e, codes, weight, key, axis_name: str | None = None):
    """Codes no weighted entry of the (global) batch chose are replaced by random weighted encoder outputs.

    The "random restart" of Dhariwal et al. (2020, Jukebox) against codebook collapse (every vector
    quantised to one code); not part of the original VQ-VAE. ``z_e`` (..., D), ``codes`` and ``weight``
    (...). The choice uses the global batch and ``key`` only, so every data-parallel shard (same key)
    makes the same one. Returns ``(codebook, number of codes restarted)``.
    """
    k, d = codebook.shape
    dead = code_counts(codes, weight, k, axis_name) == 0
    z, w = z_e.reshape(-1, d), weight.reshape(-1).astype(jnp.float32)
    if axis_name is not None:
        z, w = jax.lax.all_gather(z, axis_name, tiled=True), jax.lax.all_gather(w, axis_name, tiled=True)
    pick = jax.random.choice(key, z.shape[0], (k,), p=w / jnp.maximum(w.sum(), 1e-8))
    fresh = jax.lax.stop_gradient(z[pick])
    dead = dead & (w.sum() > 0)
    return jnp.where(dead[:, None], fresh, codebook), dead.sum()
