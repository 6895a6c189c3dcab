"""Compiled zero-shot evaluation: E episodes of one task in one ``jit``.

Each episode is played once from its own key (no auto-reset): the batch of
episodes advances together inside a ``while_loop`` that stops when every
episode has ended or the horizon is reached; return and length are taken at
each episode's first end. With several devices the episodes are split across
them with ``pmap``; per-episode keys do not depend on the split, so results do
not depend on the device count.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from mtmarl.evaluation.policies import Policy


class EpisodeStats(NamedTuple):
    returns: jax.Array  # (E,) team return up to each episode's first end
    lengths: jax.Array  # (E,) steps to that end (horizon if it never ended)


def episode_keys(key: jax.Array, num_episodes: int, first=0) -> jax.Array:
    """Key i depends on (key, i) only, so padding the episode count changes no episode."""
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, first + jnp.arange(num_episodes))


def run_episodes(env, policy: Policy, params: Any, keys: jax.Array) -> EpisodeStats:
    """Play one episode per key, batched (traceable; the caller jits it)."""
    reset_keys, act_keys = jnp.moveaxis(jax.vmap(jax.random.split)(keys), 1, 0)
    env_state, ts = jax.vmap(env.reset)(reset_keys)
    carry = jax.vmap(lambda _: policy.init_carry(params, env.num_agents))(keys)
    zeros = jnp.zeros(keys.shape[0])

    def act_step(key, obs, carry):
        return policy.act(params, obs, carry, key)

    def body(loop):
        t, env_state, ts, carry, ret, length, done = loop
        step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(act_keys, t)
        actions, carry = jax.vmap(act_step)(step_keys, ts.observation, carry)
        env_state, ts = jax.vmap(env.step)(env_state, actions)
        ret = ret + jnp.where(done, 0.0, ts.reward)
        length = length + (~done)
        return t + 1, env_state, ts, carry, ret, length, done | ts.done

    def cond(loop):
        t, *_, done = loop
        return (t < env.horizon) & ~jnp.all(done)

    init = (jnp.int32(0), env_state, ts, carry, zeros, zeros.astype(jnp.int32), zeros.astype(bool))
    _, _, _, _, ret, length, _ = jax.lax.while_loop(cond, body, init)
    return EpisodeStats(ret, length)


def make_evaluator(env, policy: Policy, num_episodes: int,
                   num_devices: int | None = None) -> Callable[[Any, jax.Array], EpisodeStats]:
    """``evaluate(params, key) -> EpisodeStats`` compiled for ``env``.

    ``num_devices`` defaults to all local devices; episodes are padded up to a
    multiple of it and the extra ones dropped.
    """
    devices = jax.local_devices()[: num_devices or jax.local_device_count()]
    n_dev = len(devices)
    per_device = -(-num_episodes // n_dev)

    def batch(params, key, first):
        """Episodes first..first+per_device-1; keys are made inside the compiled program."""
        return run_episodes(env, policy, params, episode_keys(key, per_device, first))

    if n_dev == 1:
        compiled = jax.jit(batch)
        return lambda params, key: compiled(params, key, 0)

    sharded = jax.pmap(batch, in_axes=(None, None, 0), devices=devices)
    starts = jnp.arange(n_dev) * per_device

    def evaluate(params, key):
        stats = sharded(params, key, starts)
        return jax.tree.map(lambda x: x.reshape(-1)[:num_episodes], stats)
    return evaluate
