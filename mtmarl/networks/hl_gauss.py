"""HL-Gauss: value regression as classification (Farebrother et al., 2024).

The multi-task Oryx paper learns values with a categorical loss so tasks with very different
reward scales give gradients of similar size. A scalar target ``x`` becomes a
histogram over K equal bins on ``[v_min, v_max]``: the mass a Gaussian
N(x, sigma^2), sigma = sigma_ratio * bin_width, puts in each bin, renormalised
to the support (targets outside it are clipped first). The prediction is a
softmax over bins; its scalar value is the expected bin centre.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class HLGauss:
    v_min: float
    v_max: float
    num_bins: int
    sigma_ratio: float = 0.75

    def __post_init__(self):
        if not self.v_max > self.v_min or self.num_bins < 2:
            raise ValueError(f"HL-Gauss needs v_max > v_min and >= 2 bins, got {self}")

    @property
    def bin_width(self) -> float:
        return (self.v_max - self.v_min) / self.num_bins

    @property
    def sigma(self) -> float:
        return self.sigma_ratio * self.bin_width

    @property
    def edges(self) -> jax.Array:
        return jnp.linspace(self.v_min, self.v_max, self.num_bins + 1, dtype=jnp.float32)

    @property
    def centers(self) -> jax.Array:
        e = self.edges
        return (e[:-1] + e[1:]) / 2

    # Methods are jitted with the (frozen, hashable) support static: one compile per support and shape.
    @functools.partial(jax.jit, static_argnums=0)
    def to_probs(self, x: jax.Array) -> jax.Array:
        """Target histogram (..., K) for scalars (...): Gaussian mass per bin via erf differences."""
        x = jnp.clip(jnp.asarray(x, jnp.float32), self.v_min, self.v_max)[..., None]
        cdf = jax.scipy.special.erf((self.edges - x) / (math.sqrt(2.0) * self.sigma))
        mass = cdf[..., 1:] - cdf[..., :-1]
        # Renormalise by the mass inside the support (the tails beyond it are dropped).
        return mass / (cdf[..., -1:] - cdf[..., :1])

    @functools.partial(jax.jit, static_argnums=0)
    def to_scalar(self, logits: jax.Array) -> jax.Array:
        """Expected bin centre under softmax(logits) over the last axis."""
        return jnp.sum(jax.nn.softmax(logits, axis=-1) * self.centers, axis=-1)

    @functools.partial(jax.jit, static_argnums=0)
    def loss(self, logits: jax.Array, target: jax.Array) -> jax.Array:
        """Cross-entropy (...,) between softmax(logits) and to_probs(target); target is not differentiated."""
        probs = jax.lax.stop_gradient(self.to_probs(target))
        return -jnp.sum(probs * jax.nn.log_softmax(logits, axis=-1), axis=-1)
