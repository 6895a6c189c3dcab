"""Vectorised env rollouts with auto-reset from a pre-generated pool of reset states.

Jumanji's ``AutoResetWrapper`` computes a reset inside every ``step``; under
``vmap`` both branches of its ``cond`` run, so every env pays for a reset each
step. Here the resets a rollout may need are generated once per rollout chunk
(``per_env`` reset states for each of the ``B`` envs: ``make_reset_pool`` inside a
trace, or :class:`PoolMaker` outside it), and an env whose episode ends takes the next
unused state of its own row with a ``jnp.where`` select. Within a chunk an env
wraps around its row only after ``per_env`` episodes have ended.

Everything here is traceable (no ``jit`` inside); the system jits and scans it.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mtmarl.envs import Observation, TimeStep


class ResetPool(NamedTuple):
    state: Any  # env states with leading axes (B, K)
    timestep: TimeStep  # (B, K, ...)


class EnvBatch(NamedTuple):
    state: Any  # env states (B, ...)
    timestep: TimeStep  # the current timestep of every env (B, ...)
    cursor: jax.Array  # (B,) int32 next pool entry of each env's row
    ep_return: jax.Array  # (B,) float32 team return of the running episode
    ep_length: jax.Array  # (B,) int32 steps of the running episode


class Transition(NamedTuple):
    """One step of every env (leading axes (T, B) once scanned)."""

    obs: Observation  # what the policy saw (agents_view (N, O), action_mask (N, A), ...)
    state: jax.Array  # (S,) global state at that observation
    actions: jax.Array  # (N,) int32
    logp: jax.Array  # (N,) behaviour log-probabilities
    value: jax.Array  # () V(s_t)
    next_value: jax.Array  # () V of the observation that really followed (pre-reset)
    reward: jax.Array  # () team reward of the transition
    terminal: jax.Array  # () bool: ended by the task's rules
    truncated: jax.Array  # () bool: hit the time limit
    episode_return: jax.Array  # () return of the episode that ended here (0 otherwise)
    episode_length: jax.Array  # () its length (0 otherwise)
    success: jax.Array  # () bool: the episode that ended here was won (envs with EnvSpec.has_success)
    extras: Any = ()  # what the acting function asked to keep (fine-tuning: the key each step acted with)

    @property
    def done(self) -> jax.Array:
        return self.terminal | self.truncated


# ``act(params, timestep, key) -> (actions, logp, value)`` and ``value(params, timestep) -> value``,
# both over a batch of envs.
ActFn = Callable[[Any, TimeStep, jax.Array], tuple[jax.Array, jax.Array, jax.Array]]
ValueFn = Callable[[Any, TimeStep], jax.Array]
# A recurrent policy: ``act(params, timestep, carry, key) -> (actions, logp, value, carry[, extras])``;
# ``extras`` (any pytree per env) is kept in ``Transition.extras``.
CarriedActFn = Callable[[Any, TimeStep, Any, jax.Array], tuple[jax.Array, jax.Array, jax.Array, Any]]
# Its ``value(params, timestep, carry)`` gets the carry after the step that produced ``timestep`` (what a
# recurrent critic reads the next state's value with).
CarriedValueFn = Callable[[Any, TimeStep, Any], jax.Array]


def make_reset_pool(env, key: jax.Array, num_envs: int, per_env: int) -> ResetPool:
    """``per_env`` reset states for each of ``num_envs`` envs (traceable)."""
    keys = jax.random.split(key, num_envs * per_env)
    state, ts = jax.vmap(env.reset)(keys)
    shape = lambda x: x.reshape((num_envs, per_env) + x.shape[1:])
    return ResetPool(jax.tree.map(shape, state), jax.tree.map(shape, ts))


class PoolMaker:
    """Reset pools of any shape from one compiled ``vmap(env.reset)`` of ``block`` keys.

    Some resets (Connector's random-walk generator) take far longer to compile
    than a step; making every pool outside the training program from one
    fixed-size executable compiles the reset once per task, whatever the pool
    shapes (training, recording, initial states).
    """

    def __init__(self, env, block: int):
        self.block = int(block)
        self._reset = jax.jit(jax.vmap(env.reset))

    def __call__(self, key: jax.Array, shape: tuple[int, ...]) -> ResetPool:
        """A pool with leading axes ``shape``, assembled on the host (numpy arrays)."""
        total = int(np.prod(shape))
        blocks = -(-total // self.block)
        keys = jax.random.split(key, blocks * self.block).reshape(blocks, self.block, -1)
        outs = jax.device_get([self._reset(keys[i]) for i in range(blocks)])
        cat = lambda *xs: np.concatenate(xs)[:total].reshape(tuple(shape) + xs[0].shape[1:])
        state, ts = jax.tree.map(cat, *outs)
        return ResetPool(state, ts)


def start_from_pool(pool: ResetPool) -> EnvBatch:
    """Every env starts at entry 0 of its row (entries 1.. serve its auto-resets)."""
    first = lambda x: x[:, 0]
    ts = jax.tree.map(first, pool.timestep)
    b = ts.reward.shape[0]
    return EnvBatch(jax.tree.map(first, pool.state), ts, jnp.ones((b,), jnp.int32),
                    jnp.zeros((b,), jnp.float32), jnp.zeros((b,), jnp.int32))


def fresh_pool(env, key: jax.Array, batch: EnvBatch, per_env: int) -> tuple[EnvBatch, ResetPool]:
    """A new pool for the next chunk, with every env's cursor back at its row's start."""
    pool = make_reset_pool(env, key, batch.cursor.shape[0], per_env)
    return batch._replace(cursor=jnp.zeros_like(batch.cursor)), pool


def _where(cond: jax.Array, a: Any, b: Any) -> Any:
    def sel(x, y):
        c = cond.reshape(cond.shape + (1,) * (x.ndim - cond.ndim))
        return jnp.where(c, x, y)
    return jax.tree.map(sel, a, b)


def step_with_pool(env, batch: EnvBatch, actions: jax.Array, pool: ResetPool
                   ) -> tuple[EnvBatch, TimeStep]:
    """Step every env; ended envs continue from their next pool state.

    Returns the new batch (whose timestep is a reset one where an episode ended)
    and the real timestep of the transition (reward, flags, next observation).
    """
    state, ts = jax.vmap(env.step)(batch.state, actions)
    done = ts.done
    per_env = pool.timestep.reward.shape[1]
    idx = batch.cursor % per_env
    pick = lambda x: jax.vmap(lambda row, i: row[i])(x, idx)
    reset_state = jax.tree.map(pick, pool.state)
    reset_ts = jax.tree.map(pick, pool.timestep)
    new_state = _where(done, reset_state, state)
    new_ts = _where(done, reset_ts, ts)
    ep_return = batch.ep_return + ts.reward
    ep_length = batch.ep_length + 1
    new = EnvBatch(new_state, new_ts, batch.cursor + done.astype(jnp.int32),
                   jnp.where(done, 0.0, ep_return), jnp.where(done, 0, ep_length))
    return new, ts


def transition(batch: EnvBatch, real: TimeStep, actions: jax.Array, logp: jax.Array, value: jax.Array,
               next_value: jax.Array, extras: Any = ()) -> Transition:
    """The record of one step from ``batch`` (before the step) and the real timestep it produced."""
    ts, done = batch.timestep, real.done
    return Transition(obs=ts.observation, state=ts.state, actions=actions, logp=logp, value=value,
                      next_value=next_value, reward=real.reward, terminal=real.terminal, truncated=real.truncated,
                      episode_return=jnp.where(done, batch.ep_return + real.reward, 0.0),
                      episode_length=jnp.where(done, batch.ep_length + 1, 0), success=done & real.success,
                      extras=extras)


def rollout(env, act: ActFn, value: ValueFn, params: Any, batch: EnvBatch, pool: ResetPool,
            key: jax.Array, length: int) -> tuple[EnvBatch, Transition]:
    """``length`` steps of the batch under ``act``; transitions are (T, B, ...).

    Pass a fresh ``pool`` with ``batch.cursor`` zeroed (:func:`fresh_pool`) per chunk.
    """
    stateless = lambda p, ts, carry, k: (*act(p, ts, k), carry)  # noqa: E731
    batch, _, traj = carried_rollout(env, stateless, lambda p, ts, carry: value(p, ts), params, batch, (), pool, key,
                                     length)
    return batch, traj


def reset_where(done: jax.Array, carry: Any) -> Any:
    """Zero every leaf of a per-env recurrent state (leading axis B) where ``done`` (B,)."""
    return _where(done, jax.tree.map(jnp.zeros_like, carry), carry)


def carried_rollout(env, act: CarriedActFn, value: CarriedValueFn, params: Any, batch: EnvBatch, carry: Any,
                    pool: ResetPool, key: jax.Array, length: int) -> tuple[EnvBatch, Any, Transition]:
    """:func:`rollout` for a recurrent policy: ``carry`` (per env, leading axis B) goes from step to step.

    ``act`` returns the carry after its step; where that step ended an episode the carry is
    zeroed, so the next step (the reset observation) starts from zeros. Returns the carry
    after the last step alongside the batch.
    """

    def body(c, step_key):
        batch, carry = c
        actions, logp, v, carry, *extras = act(params, batch.timestep, carry, step_key)
        new, real = step_with_pool(env, batch, actions, pool)
        record = transition(batch, real, actions, logp, v, value(params, real, carry), extras[0] if extras else ())
        return (new, reset_where(real.done, carry)), record

    (batch, carry), traj = jax.lax.scan(body, (batch, carry), jax.random.split(key, length))
    return batch, carry, traj
