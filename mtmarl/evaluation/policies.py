"""Policies as pure functions the evaluator can compile.

A policy is ``init_carry(params, num_agents) -> carry`` plus
``act(params, obs, carry, key) -> (actions, carry)`` for one episode, and
``observe(params, carry, reward) -> carry``, which the evaluator calls after
every env step with the team reward received (a return-conditioned policy
counts its return-to-go down; by default nothing changes). The evaluator vmaps
them over episodes. ``carry`` holds recurrent state (Sable's retention state;
nothing for the random policy).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from mtmarl.envs import Observation


def ignore_reward(params, carry, reward):
    """The default ``Policy.observe``: the reward changes nothing."""
    del params, reward
    return carry


class Policy(NamedTuple):
    init_carry: Callable[[Any, int], Any]
    act: Callable[[Any, Observation, Any, jax.Array], tuple[jax.Array, Any]]
    observe: Callable[[Any, Any, jax.Array], Any] = ignore_reward


def masked_sample(key: jax.Array, logits: jax.Array, action_mask: jax.Array) -> jax.Array:
    """Sample one legal action per agent (illegal logits pushed to -inf)."""
    return jax.random.categorical(key, jnp.where(action_mask, logits, -jnp.inf), axis=-1)


def uniform_legal(key: jax.Array, action_mask: jax.Array) -> jax.Array:
    """Uniform over each agent's legal actions with one uniform draw per agent.

    Cheaper than Gumbel sampling over every action, which matters on CPU where
    random bits dominate a random policy's cost.
    """
    legal = action_mask.astype(jnp.int32)
    pick = jnp.floor(jax.random.uniform(key, legal.shape[:-1]) * legal.sum(-1)).astype(jnp.int32)
    return jnp.argmax(jnp.cumsum(legal, -1) > pick[..., None], axis=-1)


def _random_act(params, obs: Observation, carry, key):
    return uniform_legal(key, obs.action_mask), carry


RANDOM = Policy(init_carry=lambda params, num_agents: (), act=_random_act)

POLICIES = {"random": RANDOM}
