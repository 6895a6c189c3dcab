"""Compiled zero-shot evaluation: E episodes of one task, or of every task of a set, in one ``jit``.

Each episode is played once from its own key (no auto-reset): the batch of
episodes advances together inside a ``while_loop`` that stops when every
episode has ended or the horizon is reached; return and length are taken at
each episode's first end. With several devices the episodes are split across
them with ``pmap``; per-episode keys do not depend on the split, so results do
not depend on the device count.
"""

from __future__ import annotations

import copy
import zlib
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mtmarl.errors import UserInputError
from mtmarl.evaluation.policies import Policy

# XLA CPU backend optimisation level for evaluation programs. Compiles dominate a short evaluation
# (an RWARE task: 17 s to compile, 2 s to play 32 episodes); level 1 compiled the same program in
# 12 s and it ran no slower, while level 0 halved the compile but ran 3-4x slower.
COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}


class EpisodeStats(NamedTuple):
    returns: jax.Array  # (E,) team return up to each episode's first end
    lengths: jax.Array  # (E,) steps to that end (horizon if it never ended)
    successes: jax.Array  # (E,) bool, the env's success signal (a win) at that end; False if it has none


def task_key(seed: int, spec) -> jax.Array:
    """A task's evaluation key depends on the seed and the task (``spec.adhoc``), not on its set or position."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), zlib.crc32(spec.adhoc.encode()))


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

    def observe(carry, reward):
        return policy.observe(params, carry, reward)

    def body(loop):
        t, env_state, ts, carry, ret, length, won, done = loop
        step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(act_keys, t)
        actions, carry = jax.vmap(act_step)(step_keys, ts.observation, carry)
        env_state, ts = jax.vmap(env.step)(env_state, actions)
        carry = jax.vmap(observe)(carry, ts.reward)
        ret = ret + jnp.where(done, 0.0, ts.reward)
        length = length + (~done)
        won = won | (~done & ts.success)
        return t + 1, env_state, ts, carry, ret, length, won, done | ts.done

    def cond(loop):
        t, *_, done = loop
        return (t < env.horizon) & ~jnp.all(done)

    flags = zeros.astype(bool)
    init = (jnp.int32(0), env_state, ts, carry, zeros, zeros.astype(jnp.int32), flags, flags)
    _, _, _, _, ret, length, won, _ = jax.lax.while_loop(cond, body, init)
    return EpisodeStats(ret, length, won)


def run_task_episodes(envs, policy: Policy, params: Any, keys: jax.Array) -> EpisodeStats:
    """Play one episode per key of every task at once (traceable; the caller jits it).

    ``envs``: T envs with the same observation, state and action sizes (a set's
    layout, ``TaskSet.evaluation_env``); ``keys``: (T, E) episode keys, row t
    for ``envs[t]``. Tasks with the same number of agents form a group: the
    policy runs once per step on all of a group's episodes (one traced copy of
    the network per group, not per task) and decodes only that group's agents,
    so a 2-agent task costs the policy a sixth of a 12-agent one. Each group
    plays in its own loop, which ends when the group's episodes have. An
    episode counts reward and steps until its first end or its task's horizon,
    so every task gets exactly what :func:`run_episodes` would give it for the
    same keys.
    """
    check_same_shapes(envs)
    T = len(envs)
    if keys.shape[0] != T:
        raise ValueError(f"got keys for {keys.shape[0]} tasks but {T} envs")
    groups: dict[int, list[int]] = {}
    for i, env in enumerate(envs):
        groups.setdefault(env.num_agents, []).append(i)
    played = [_run_same_agents([envs[i] for i in idx], policy, params, keys[jnp.asarray(idx)])
              for idx in groups.values()]
    task_order = np.argsort([i for idx in groups.values() for i in idx])  # group-major rows back to task order
    return jax.tree.map(lambda *xs: jnp.concatenate(xs)[task_order], *played)


def _run_same_agents(envs, policy: Policy, params: Any, keys: jax.Array) -> EpisodeStats:
    """:func:`run_task_episodes` for envs that also agree on the number of agents: one loop for all."""
    num_agents = envs[0].num_agents
    split = jax.vmap(jax.vmap(jax.random.split))(keys)  # (T, E, 2, key)
    reset_keys, act_keys = split[:, :, 0], split[:, :, 1]
    starts = [jax.vmap(env.reset)(k) for env, k in zip(envs, reset_keys)]
    env_states = tuple(s for s, _ in starts)
    ts = jax.tree.map(lambda *xs: jnp.stack(xs), *(t for _, t in starts))
    carry = jax.vmap(jax.vmap(lambda _: policy.init_carry(params, num_agents)))(keys)
    horizons = jnp.array([env.horizon for env in envs], jnp.int32)[:, None]
    zeros = jnp.zeros(keys.shape[:2])

    def act_step(key, obs, carry):
        return policy.act(params, obs, carry, key)

    def observe(carry, reward):
        return policy.observe(params, carry, reward)

    def body(loop):
        t, env_states, ts, carry, ret, length, won, done = loop
        step_keys = jax.vmap(jax.vmap(jax.random.fold_in, in_axes=(0, None)), in_axes=(0, None))(act_keys, t)
        actions, carry = jax.vmap(jax.vmap(act_step))(step_keys, ts.observation, carry)
        # A task whose episodes have all ended keeps its state: nothing of it counts any more, and
        # skipping its env step saves time while other tasks play on.
        finished = jnp.all(done | (t >= horizons), axis=1)
        stepped = [jax.lax.cond(finished[i], lambda s, a, i=i: (s, jax.tree.map(lambda x: x[i], ts)),
                                jax.vmap(env.step), s, a)
                   for i, (env, s, a) in enumerate(zip(envs, env_states, actions))]
        env_states = tuple(s for s, _ in stepped)
        ts = jax.tree.map(lambda *xs: jnp.stack(xs), *(x for _, x in stepped))
        carry = jax.vmap(jax.vmap(observe))(carry, ts.reward)
        live = ~done & (t < horizons)  # steps past a task's horizon never happen in run_episodes
        ret = ret + jnp.where(live, ts.reward, 0.0)
        length = length + live
        won = won | (live & ts.success)
        return t + 1, env_states, ts, carry, ret, length, won, done | ts.done

    def cond(loop):
        t, *_, done = loop
        return ~jnp.all(done | (t >= horizons))

    flags = zeros.astype(bool)
    init = (jnp.int32(0), env_states, ts, carry, zeros, zeros.astype(jnp.int32), flags, flags)
    _, _, _, _, ret, length, won, _ = jax.lax.while_loop(cond, body, init)
    return EpisodeStats(ret, length, won)


def check_same_shapes(envs) -> None:
    """Tasks evaluated in one program must agree on every padded size but the agent count; say which does not."""
    if not envs:
        raise UserInputError("no tasks to evaluate")
    first = envs[0]
    sizes = ("obs_dim", "state_dim", "num_actions")
    for env in envs[1:]:
        diff = [f"{k} {getattr(env, k)} vs {getattr(first, k)}" for k in sizes if getattr(env, k) != getattr(first, k)]
        if diff:
            raise UserInputError(f"tasks evaluated together must be padded to one shape: {env!r} differs from "
                                 f"{first!r} in {', '.join(diff)} (pad them with one TaskSet)")


class Evaluator:
    """``evaluator(params, key) -> EpisodeStats`` of ``num_episodes`` episodes of one env.

    Episodes run in calls of at most ``batch`` episodes per device; the program
    of one call is compiled once and reused. Because episode i's key depends
    only on (key, i), the number of calls changes no episode, and evaluators of
    the same env, policy and ``batch`` run the identical program whatever their
    episode count (the periodic and final evaluations of a training run share
    it, and the persistent XLA cache serves it to later runs). ``compile``
    builds the program ahead of time, so several tasks can compile in parallel
    threads (see :func:`compile_all`).

    With ``tasks=True`` (see :func:`make_task_set_evaluator`), ``env`` is a list
    of padded envs, ``key`` holds one key per task, and every field of the
    result has a leading task axis: all tasks play in one program.
    """

    def __init__(self, env, policy: Policy, num_episodes: int, num_devices: int | None = None,
                 batch: int | None = None, tasks: bool = False):
        if num_episodes < 1:
            raise UserInputError(f"the number of evaluation episodes must be >= 1, got {num_episodes}")
        self.devices = jax.local_devices()[: num_devices or jax.local_device_count()]
        n_dev = len(self.devices)
        per_device = -(-num_episodes // n_dev)
        self.batch = min(per_device, batch) if batch else per_device
        self.tasks = tasks
        self._set_episodes(num_episodes)

        if tasks:
            check_same_shapes(env)
            envs = list(env)
            self.num_tasks = len(envs)

            def run(params, keys, first):
                """Episodes first..first+batch-1 of every task."""
                ep_keys = jax.vmap(lambda k: episode_keys(k, self.batch, first))(keys)
                return run_task_episodes(envs, policy, params, ep_keys)
        else:
            def run(params, key, first):
                """Episodes first..first+batch-1; keys are made inside the compiled program."""
                return run_episodes(env, policy, params, episode_keys(key, self.batch, first))

        self._fn = jax.jit(run) if n_dev == 1 else jax.pmap(run, in_axes=(None, None, 0), devices=self.devices)
        self._compiled = [None]  # shared with resized() copies

    def _set_episodes(self, num_episodes: int) -> None:
        self.num_episodes = num_episodes
        self.calls = -(-num_episodes // (len(self.devices) * self.batch))
        self.per_device = self.calls * self.batch  # padded up; extra episodes are dropped

    def resized(self, num_episodes: int) -> "Evaluator":
        """The same compiled program for another episode count (more or fewer calls)."""
        other = copy.copy(self)
        other._set_episodes(num_episodes)
        return other

    def _firsts(self, call: int):
        base = call * self.batch
        if len(self.devices) == 1:
            return jnp.int32(base)
        return jnp.arange(len(self.devices), dtype=jnp.int32) * self.per_device + base

    def compile(self, params, key) -> "Evaluator":
        if self._compiled[0] is None:
            lowered = self._fn.lower(params, key, self._firsts(0))
            self._compiled[0] = lowered.compile(compiler_options=COMPILER_OPTIONS)
        return self

    def __call__(self, params, key) -> EpisodeStats:
        self.compile(params, key)
        parts = [self._compiled[0](params, key, self._firsts(c)) for c in range(self.calls)]
        # ([devices,] [tasks,] batch) per call -> episode order: device-major, then call, then slot
        stats = jax.tree.map(lambda *xs: jnp.stack(xs, axis=-2), *parts)
        if not self.tasks:
            return jax.tree.map(lambda x: x.reshape(-1)[: self.num_episodes], stats)
        if len(self.devices) > 1:  # (devices, tasks, calls, batch) -> (tasks, devices, calls, batch)
            stats = jax.tree.map(lambda x: jnp.moveaxis(x, 1, 0), stats)
        return jax.tree.map(lambda x: x.reshape(self.num_tasks, -1)[:, : self.num_episodes], stats)


def make_evaluator(env, policy: Policy, num_episodes: int, num_devices: int | None = None,
                   batch: int | None = None) -> Evaluator:
    """``evaluate(params, key) -> EpisodeStats`` compiled for ``env`` (see :class:`Evaluator`).

    ``num_devices`` defaults to all local devices; episodes are padded up to a
    multiple of the devices (and of ``batch``) and the extra ones dropped.
    """
    return Evaluator(env, policy, num_episodes, num_devices, batch)


def make_task_set_evaluator(envs, policy: Policy, num_episodes: int, num_devices: int | None = None,
                            batch: int | None = None) -> Evaluator:
    """``evaluate(params, keys) -> EpisodeStats`` of shape (tasks, episodes): all ``envs`` in one program.

    ``envs`` are the tasks of one set padded to the set's shape (``TaskSet.padded``)
    and ``keys`` is (tasks, 2), one evaluation key per task. Task t's episodes
    are those :func:`make_evaluator` gives ``envs[t]`` for ``keys[t]`` (see
    :func:`run_task_episodes`), but the whole set compiles once: one copy of the
    policy network instead of one per task, and one program for the periodic and
    final evaluations of a training run.
    """
    return Evaluator(list(envs), policy, num_episodes, num_devices, batch, tasks=True)


def compile_all(evaluators, params, key, threads: int | None = None) -> None:
    """Compile many evaluators at once (XLA compiles outside the GIL, one per thread)."""
    from concurrent.futures import ThreadPoolExecutor

    todo = list({id(e._compiled): e for e in evaluators if e._compiled[0] is None}.values())
    if not todo:
        return
    with ThreadPoolExecutor(threads or min(len(todo), jax.local_device_count() * 2, 8)) as pool:
        list(pool.map(lambda e: e.compile(params, key), todo))
