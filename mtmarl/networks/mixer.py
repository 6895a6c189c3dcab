"""Multi-task QMIX-style attention mixer over a variable number of agents (UPDeT-m, ODIS).

Why: QMIX mixes per-agent Q values with a state-conditioned network whose
weights are non-negative, so Q_tot is monotonic in every agent's Q and the
per-agent arg-max is the joint arg-max. Its hypernetworks read a fixed-size
state, which ties it to one map; the multi-task mixers of the skill systems
(ODIS's ``mt_qattn``) read per-entity embeddings through attention instead, so
one mixer serves maps with any number of agents. Here each agent contributes an
embedding (e.g. the entity agent's history token, which has attended to its own
observation's entity tokens); padded or inactive agents are masked out of the
attention, the pooling and the sum.

With ``h_i`` the agents' embeddings after masked self-attention and ``p`` their
masked mean:

    hidden_k = elu(sum_i |W1(h_i)|_k * q_i + b1(p)_k),   k < mix_width
    Q_tot    = sum_k |w2(p)|_k * hidden_k + b2(p)

``|.|`` keeps every mixing weight >= 0 and elu is increasing, so
``dQ_tot / dq_i >= 0``; the attention is permutation-equivariant and the sums
invariant, so Q_tot does not depend on the agents' order, and a masked agent
reaches nothing (its weight is zeroed, it is no attention key, it is out of
the mean), so padding a task with inactive agents leaves Q_tot unchanged.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from mtmarl.errors import UserInputError


@dataclasses.dataclass(frozen=True)
class MixerConfig:
    width: int = 32      # embedding width inside the mixer (attention and hypernetworks)
    heads: int = 1       # attention heads
    mix_width: int = 32  # QMIX hidden layer of the mixing network
    init_scale: float = 1.0  # variance scale of the hypernetworks' weight kernels (hyper_w1, hyper_w2) at init:
    #                          1.0 = flax's default (lecun normal); dQ_tot/dq_i starts near mix_width * 0.64 * scale

    def __post_init__(self):
        if self.width < 1 or self.heads < 1 or self.mix_width < 1 or self.width % self.heads or self.init_scale <= 0:
            raise UserInputError(f"attention mixer needs positive sizes, width divisible by heads and init_scale > 0, "
                                 f"got {self}")


def agent_attention(embeds, mask, width: int, heads: int):
    """Masked self-attention over agents, ``(..., N, E) -> (..., N, width)``; masked agents' rows are zero.

    A linear embedding, one residual attention layer in which only unmasked agents are keys and queries,
    and a LayerNorm. Call it inside a compact module's method: its layers (``embed``, ``attention``,
    ``norm``) become that module's.
    """
    x = nn.Dense(width, name="embed")(embeds)
    attn_mask = (mask[..., None, :] & mask[..., :, None])[..., None, :, :]  # (..., 1 head, N query, N key)
    x = x + nn.MultiHeadDotProductAttention(num_heads=heads, qkv_features=width, name="attention")(
        x, x, mask=attn_mask)
    x = nn.LayerNorm(name="norm")(x)
    return jnp.where(mask[..., None], x, 0.0)


class AttentionMixer(nn.Module):
    """``(qs (..., N), embeds (..., N, E), mask (..., N) bool) -> Q_tot (...)`` (module docstring)."""

    cfg: MixerConfig

    @nn.compact
    def __call__(self, qs, embeds, mask):
        w = self.cfg.width
        m = mask.astype(qs.dtype)
        x = agent_attention(embeds, mask, w, self.cfg.heads)
        pooled = jnp.sum(x, axis=-2) / jnp.maximum(jnp.sum(m, axis=-1, keepdims=True), 1.0)
        init = nn.initializers.variance_scaling(self.cfg.init_scale, "fan_in", "truncated_normal")
        w1 = jnp.abs(nn.Dense(self.cfg.mix_width, kernel_init=init, name="hyper_w1")(x)) * m[..., None]  # (..., N, K)
        b1 = nn.Dense(self.cfg.mix_width, name="hyper_b1")(pooled)                           # (..., K)
        hidden = nn.elu(jnp.einsum("...n,...nk->...k", jnp.where(mask, qs, 0.0), w1) + b1)
        w2 = jnp.abs(nn.Dense(self.cfg.mix_width, kernel_init=init, name="hyper_w2")(pooled))  # (..., K)
        b2 = nn.Dense(1, name="hyper_b2_out")(nn.relu(nn.Dense(w, name="hyper_b2")(pooled)))[..., 0]
        return jnp.sum(w2 * hidden, axis=-1) + b2


def vdn(qs, mask):
    """VDN: Q_tot = the sum of the active agents' Q values (UPDeT-l)."""
    return jnp.sum(jnp.where(mask, qs, 0.0), axis=-1)
