"""Entity transformer agent network (UPDeT / ODIS style) over an env's declared entity groups.

Why: the skill-based seed systems (BC-t, UPDeT, ODIS, HiSSD) transfer across
SMAC maps because an agent reads its observation as a set of entity tokens
(itself, allies, enemies) and scores "attack enemy k" from enemy k's own
token, so neither the input nor the output depends on how many entities a map
has. The layout comes from the env (``EnvSpec``), so one network serves any
env on the protocol, flat Jumanji envs included (one token).

Tokens: each group's entities are embedded by that group's own linear map;
a recurrent *history* token (the previous step's output at that token)
carries memory across steps. An entity whose features are all zero (a padded
slot, or a dead or unseen unit) is left out of attention, so padding a task
to a bigger layout changes no output of the entities it has, and permuting
the entities of a group permutes their outputs and nothing else.

Action logits follow ``ActionLayout``: basic actions from the history token,
and one logit per entity of each targeted group from that entity's token.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtmarl.envs.layout import EnvSpec
from mtmarl.errors import UserInputError
from mtmarl.networks.config import NetworkConfig

NEG = -1e9


@dataclasses.dataclass(frozen=True)
class EntityConfig(NetworkConfig):
    width: int = 64      # token width
    heads: int = 1       # attention heads
    depth: int = 1       # transformer blocks
    ff_mult: int = 4     # feed-forward width = ff_mult * width
    # Trace a training sequence's steps as straight-line code rather than a loop (``lax.scan(unroll=True)``).
    # Why: XLA then fuses across steps instead of writing and re-reading each step's activations through
    # the loop: faster updates for a longer compile (benchmarks/README.md). The compile grows with the
    # sequence length, so set it false for long sequences.
    unroll_time: bool = True

    def __post_init__(self):
        if self.width < 1 or self.heads < 1 or self.depth < 1 or self.ff_mult < 1 or self.width % self.heads:
            raise UserInputError(f"entity network needs positive sizes and width divisible by heads, got {self}")
        if not isinstance(self.unroll_time, bool):
            raise UserInputError(f"network.unroll_time must be true or false, got {self.unroll_time!r}")


class Block(nn.Module):
    """Pre-norm self-attention + feed-forward over tokens with a key mask."""

    cfg: EntityConfig

    @nn.compact
    def __call__(self, x, present):
        mask = present[..., None, None, :]  # (..., 1 head-broadcast, 1 query, keys)
        h = nn.LayerNorm()(x)
        x = x + nn.MultiHeadDotProductAttention(num_heads=self.cfg.heads, qkv_features=self.cfg.width)(h, h, mask=mask)
        h = nn.LayerNorm()(x)
        h = nn.Dense(self.cfg.ff_mult * self.cfg.width)(h)
        return x + nn.Dense(self.cfg.width)(nn.gelu(h))


class EntityAgent(nn.Module):
    """One step of one agent: ``(hidden (..., W), obs (..., O)) -> (new hidden, logits (..., A))``.

    ``cond`` (..., C), optional: extra features (e.g. a return-to-go) read as one more token,
    always present, placed after the entity tokens; an agent built without it has no such token.
    """

    env: EnvSpec
    cfg: EntityConfig

    @nn.compact
    def __call__(self, hidden, obs, cond=None):
        groups = self.env.obs.split(obs)
        tokens, present = [hidden[..., None, :]], [jnp.ones(hidden.shape[:-1] + (1,), bool)]
        for g in self.env.obs.groups:
            x = groups[g.name]
            tokens.append(nn.Dense(self.cfg.width, name=f"embed_{g.name}")(x))
            present.append(jnp.any(x != 0, axis=-1))
        if cond is not None:
            tokens.append(nn.Dense(self.cfg.width, name="embed_cond")(cond)[..., None, :])
            present.append(jnp.ones(hidden.shape[:-1] + (1,), bool))
        x, keep = jnp.concatenate(tokens, axis=-2), jnp.concatenate(present, axis=-1)
        for _ in range(self.cfg.depth):
            x = Block(self.cfg)(x, keep)
        x = jnp.where(keep[..., None], nn.LayerNorm()(x), 0.0)
        # An agent that observes no entity (a padded slot, a dead unit) passes no gradient: its history
        # token is then a fixed point of this step, constant at initialisation (zero biases), where every
        # LayerNorm's Jacobian is 1/sqrt(eps) ~ 1e3; through time that overflows to inf/NaN within a few
        # steps once a loss weighs such an agent's output (a mixer over all agents' Qs).
        sees = jnp.any(jnp.concatenate(present[1: 1 + len(self.env.obs.groups)], axis=-1), axis=-1)
        x = jnp.where(sees[..., None, None], x, jax.lax.stop_gradient(x))
        new_hidden = x[..., 0, :]
        logits = [nn.Dense(self.env.actions.basic, name="basic_head")(new_hidden)]
        starts, start = {}, 1
        for g in self.env.obs.groups:
            starts[g.name], start = start, start + g.count
        for name, count in self.env.actions.targets:
            ent = x[..., starts[name]: starts[name] + count, :]
            score = nn.Dense(1, name=f"target_head_{name}")(ent)[..., 0]
            logits.append(jnp.where(keep[..., starts[name]: starts[name] + count], score, NEG))
        return new_hidden, jnp.concatenate(logits, axis=-1)


def unroll(agent: EntityAgent, params, obs, resets, hidden0=None, cond=None, hiddens: bool = False):
    """Logits of a sequence: ``obs`` (B, T, N, O), ``resets`` (B, T) -> (B, T, N, A).

    The history token starts at zero and is zeroed again at every episode start.
    ``cond`` (B, T, N, C): the agent's extra token input at every step (None: none).
    ``hiddens=True`` also returns each step's new history token (B, T, N, W), the
    agent's embedding of what it has seen (e.g. a mixer's per-agent input).
    """
    B, T, N, _ = obs.shape
    h = jnp.zeros((B, N, agent.cfg.width), obs.dtype) if hidden0 is None else hidden0
    time_major = lambda x: None if x is None else jnp.moveaxis(x, 1, 0)  # noqa: E731

    def step(h, xs):
        o, r, c = xs
        h = jnp.where(r[:, None, None], 0.0, h)
        h, logits = agent.apply(params, h, o, c)
        return h, (logits, h)

    _, (logits, hs) = jax.lax.scan(step, h, (time_major(obs), time_major(resets), time_major(cond)),
                                   unroll=agent.cfg.unroll_time)
    if hiddens:
        return jnp.moveaxis(logits, 0, 1), jnp.moveaxis(hs, 0, 1)
    return jnp.moveaxis(logits, 0, 1)
