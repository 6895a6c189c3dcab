"""Dense layer with an optional bfloat16 matmul (float32 parameters, float32 accumulation).

Why: on CPUs with bf16 matrix units (e.g. AMX on Sapphire Rapids) a bf16 x bf16
product accumulated in float32 runs 2-3x faster than a float32 one, and the
Sable step is dominated by (tokens x E) @ (E x E) products. Parameters,
optimiser state, activations between layers and every non-matmul op stay
float32; only the operands of the three products of a layer (forward, input
gradient, weight gradient) are rounded to bf16. ``float32`` is exact and the
default; ``bfloat16`` is a speed option (``network.matmul_dtype``).

The custom VJP matters: JAX's own transpose of a mixed-precision dot keeps the
incoming float32 cotangent and so falls back to a slow float32 product for the
gradients; here both gradient products take bf16 operands too.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

MATMUL_DTYPES = ("float32", "bfloat16")
BF16_CPU_FLAGS = {"amx_bf16", "avx512_bf16"}  # /proc/cpuinfo flags of CPUs with bf16 matrix instructions


def fastest_matmul_dtype(backend: str | None = None, cpu_flags: set[str] | None = None) -> str:
    """What ``matmul_dtype: auto`` resolves to: ``bfloat16`` where bf16 matmuls are the fast path (GPUs,
    TPUs, CPUs with AMX or AVX512-BF16), else ``float32``.

    Why: without bf16 instructions XLA converts the operands and multiplies in float32 anyway, so bf16 is
    slower *and* inexact (``benchmarks/train_step.py`` compares the two).
    """
    backend = backend or jax.default_backend()
    if backend != "cpu":
        return "bfloat16"
    if cpu_flags is None:
        try:
            text = open("/proc/cpuinfo").read()
        except OSError:  # not Linux: no way to tell, take the exact path
            text = ""
        cpu_flags = {f for line in text.splitlines() if line.startswith("flags") for f in line.split(":", 1)[1].split()}
    return "bfloat16" if cpu_flags & BF16_CPU_FLAGS else "float32"


def _contract_last(x, w, dtype):
    return lax.dot_general(x.astype(dtype), w.astype(dtype), (((x.ndim - 1,), (0,)), ((), ())),
                           preferred_element_type=jnp.float32)


@jax.custom_vjp
def bf16_matmul(x, w):
    """x (..., K) @ w (K, N) with bf16 operands and a float32 result."""
    return _contract_last(x, w, jnp.bfloat16)


def _bf16_fwd(x, w):
    xb, wb = x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)
    return _contract_last(xb, wb, jnp.bfloat16), (xb, wb)


def _bf16_bwd(res, g):
    xb, wb = res
    gb = g.astype(jnp.bfloat16)
    dx = lax.dot_general(gb, wb, (((g.ndim - 1,), (1,)), ((), ())), preferred_element_type=jnp.float32)
    lead = tuple(range(g.ndim - 1))
    dw = lax.dot_general(xb, gb, ((lead, lead), ((), ())), preferred_element_type=jnp.float32)
    return dx, dw


bf16_matmul.defvjp(_bf16_fwd, _bf16_bwd)


def matmul(x, w, dtype: str = "float32"):
    """x (..., K) @ w (K, N) in float32, or with bf16 operands (see module docstring)."""
    if dtype == "float32":
        return _contract_last(x, w, jnp.float32)
    if dtype == "bfloat16":
        return bf16_matmul(x, w)
    raise ValueError(f"matmul_dtype must be one of {MATMUL_DTYPES}, got {dtype!r}")


class Dense(nn.Module):
    """``nn.Dense`` with the matmul of :func:`matmul` (same default initialisers)."""

    features: int
    use_bias: bool = True
    matmul_dtype: str = "float32"
    kernel_init: Any = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features), jnp.float32)
        y = matmul(x, kernel, self.matmul_dtype)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        return y
