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
    # the loop: faster updates for a longer compile (``benchmarks/``). The compile grows with the
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


def entity_tokens(env: EnvSpec, cfg: EntityConfig, extra, groups, cond=None):
    """The entity transformer's tokens, called inside a compact module (its layers become that module's).

    ``extra`` (..., K, W): tokens placed first, always present (a history token, skill tokens); then one
    token per entity of each of ``env``'s observation groups (``groups = env.obs.split(obs)``), embedded by
    that group's own linear map; ``cond`` (..., C), optional: extra features read as one more token after the
    entities. Returns the outputs (..., K + entities (+ 1), W), zero where absent, and which tokens are present.
    """
    tokens, present = [extra], [jnp.ones(extra.shape[:-1], bool)]
    for g in env.obs.groups:
        x = groups[g.name]
        tokens.append(nn.Dense(cfg.width, name=f"embed_{g.name}")(x))
        present.append(jnp.any(x != 0, axis=-1))
    if cond is not None:
        tokens.append(nn.Dense(cfg.width, name="embed_cond")(cond)[..., None, :])
        present.append(jnp.ones(extra.shape[:-2] + (1,), bool))
    x, keep = jnp.concatenate(tokens, axis=-2), jnp.concatenate(present, axis=-1)
    for _ in range(cfg.depth):
        x = Block(cfg)(x, keep)
    x = jnp.where(keep[..., None], nn.LayerNorm()(x), 0.0)
    # An agent that observes no entity (a padded slot, a dead unit) passes no gradient: its extra tokens
    # are then a fixed point of this step, constant at initialisation (zero biases), where every
    # LayerNorm's Jacobian is 1/sqrt(eps) ~ 1e3; through time that overflows to inf/NaN within a few
    # steps once a loss weighs such an agent's output (a mixer over all agents' outputs).
    sees = jnp.any(jnp.concatenate(present[1: 1 + len(env.obs.groups)], axis=-1), axis=-1)
    return jnp.where(sees[..., None, None], x, jax.lax.stop_gradient(x)), keep


def action_logits(env: EnvSpec, x, keep, first: int, token0=None):
    """Inside a compact module: logits of ``env``'s actions from :func:`entity_tokens`' outputs, the basic
    actions from token 0 (``token0``: ``x[..., 0, :]`` where the caller has it) and attack-entity-k from
    entity k's token (entity tokens start at ``first``)."""
    logits = [nn.Dense(env.actions.basic, name="basic_head")(x[..., 0, :] if token0 is None else token0)]
    starts, start = {}, first
    for g in env.obs.groups:
        starts[g.name], start = start, start + g.count
    for name, count in env.actions.targets:
        s = starts[name]
        score = nn.Dense(1, name=f"target_head_{name}")(x[..., s: s + count, :])[..., 0]
        logits.append(jnp.where(keep[..., s: s + count], score, NEG))
    return jnp.concatenate(logits, axis=-1)


class Tokens(nn.Module):
    """:func:`entity_tokens` as a module of its own: ``(extra (..., K, W), obs) -> (outputs, present)``."""

    env: EnvSpec
    cfg: EntityConfig

    @nn.compact
    def __call__(self, extra, obs):
        return entity_tokens(self.env, self.cfg, extra, self.env.obs.split(obs))


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
        x, keep = entity_tokens(self.env, self.cfg, hidden[..., None, :], groups, cond)
        new_hidden = x[..., 0, :]
        return new_hidden, action_logits(self.env, x, keep, first=1, token0=new_hidden)


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
