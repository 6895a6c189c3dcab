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
import functools
import threading
import zlib
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mtmarl.errors import UserInputError
from mtmarl.evaluation.policies import Policy
from mtmarl.memory import release_freed_memory

# XLA CPU backend optimisation level for evaluation programs. Compiles dominate a short evaluation;
# level 1 compiles faster than the default and runs no slower, while level 0 compiles faster still but
# runs several times slower.
COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}
# How many of a task set's programs (one per agent group) compile at once. An XLA:CPU compile runs mostly on
# one core, so two at once use two cores; their transient memory adds up (docs/decisions.md).
COMPILE_THREADS = 2
# A stacked env resets the slots due a restart this many at a time (``_StackedEnv``).
RESET_CHUNK = 4


class EpisodeStats(NamedTuple):
    returns: jax.Array  # (E,) team return up to each episode's first end
    lengths: jax.Array  # (E,) steps to that end (horizon if it never ended)
    successes: jax.Array  # (E,) bool, the env's success signal (a win) at that end; False if it has none
    timeouts: jax.Array  # (E,) bool, the episode ended by the time limit (truncated, or still running at the
    #                      horizon), not by the task's own rules; with ``successes`` this splits ends into
    #                      win / loss / timeout (a loss: terminal and not won)


def compiler_options() -> dict:
    """:data:`COMPILER_OPTIONS`, unless the process asked for unoptimised compiles (``jax_disable_most_optimizations``,
    as the test suite and the CLIs it starts do): then none, so that setting's level 0 holds here too."""
    return {} if jax.config.read("jax_disable_most_optimizations") else dict(COMPILER_OPTIONS)


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
        t, env_state, ts, carry, ret, length, won, terminal, done = loop
        step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(act_keys, t)
        actions, carry = jax.vmap(act_step)(step_keys, ts.observation, carry)
        env_state, ts = jax.vmap(env.step)(env_state, actions)
        carry = jax.vmap(observe)(carry, ts.reward)
        ret = ret + jnp.where(done, 0.0, ts.reward)
        length = length + (~done)
        won = won | (~done & ts.success)
        terminal = terminal | (~done & ts.terminal)
        return t + 1, env_state, ts, carry, ret, length, won, terminal, done | ts.done

    def cond(loop):
        t, *_, done = loop
        return (t < env.horizon) & ~jnp.all(done)

    flags = zeros.astype(bool)
    init = (jnp.int32(0), env_state, ts, carry, zeros, zeros.astype(jnp.int32), flags, flags, flags)
    _, _, _, _, ret, length, won, terminal, _ = jax.lax.while_loop(cond, body, init)
    return EpisodeStats(ret, length, won, ~terminal)


def run_task_episodes(envs, policy: Policy, params: Any, keys: jax.Array, count=None,
                      slots: int | None = None, stack: bool = True) -> EpisodeStats:
    """Play episodes of several tasks with the same number of agents at once (traceable; the caller jits it).

    ``envs``: T envs with the same observation, state and action sizes and agent
    count (one agent group of a set's layout, ``TaskSet.evaluation_env``); ``keys``:
    (T, C) episode keys, row t for ``envs[t]``. The first ``count`` (default C; may
    be traced) episodes of every task are played in ``slots`` (default C)
    concurrent slots per task: a slot whose episode ends starts the task's next
    unplayed one, so no slot steps a finished episode while others play on (a
    fixed batch of episodes would loop to its longest one: about a third of
    RWARE's steps). Entries at or past ``count`` are zeros. The policy runs once
    per step on all slots of all tasks (one traced copy of the network). An
    episode counts reward and steps until its first end or its task's horizon,
    and its actions are drawn from its own key and step, so every task gets
    exactly what :func:`run_episodes` would give it for the same keys, whatever
    the slots.

    With ``stack`` (default) and envs whose class can stack its tasks
    (``MultiAgentEnv.stack``: RWARE, LBF, Connector, SMAX), all tasks play
    through one traced env with the task as data: one env step to compile
    instead of one per task. The stacked env follows each task's rules; the
    Jumanji stacks also replay its draws exactly (``mtmarl/envs/*_stack.py``),
    SMAX's may draw from other keys (:mod:`mtmarl.envs.smax_stack`).
    """
    check_same_shapes(envs)
    if len({env.num_agents for env in envs}) != 1:
        raise ValueError(f"one program plays tasks of one agent count, got {sorted({e.num_agents for e in envs})} "
                         f"(make_task_set_evaluator groups them)")
    T, C = keys.shape[:2]
    if T != len(envs):
        raise ValueError(f"got keys for {T} tasks but {len(envs)} envs")
    slots = C if slots is None else min(slots, C)
    return _run_same_agents(envs, policy, params, keys, C if count is None else count, slots, stack)


def _blank(shapes):
    """Zeros of a pytree of ``ShapeDtypeStruct`` (PRNG key leaves: copies of key 0)."""
    def leaf(x):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jnp.broadcast_to(jax.random.key(0), x.shape)
        return jnp.zeros(x.shape, x.dtype)
    return jax.tree.map(leaf, shapes)


def _batched_shapes(fn, lead: tuple, *args):
    """The output shapes of ``fn`` vmapped over ``lead`` axes, from one unbatched trace.

    A vmap gives every output leaf the mapped axes in front, so tracing ``fn`` once without batching gives the same
    shapes for less: an env's reset (Connector's random-walk generator) is its costliest trace, and tracing it under
    two vmaps took about a quarter of a small evaluation program's trace time."""
    out = jax.eval_shape(fn, *args)
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(lead + x.shape, x.dtype), out)


def _where_rows(rows, new, old):
    """``new`` where ``rows`` (S,) is set, else ``old``, leaf by leaf over a pytree batched on axis 0."""
    return jax.tree.map(lambda n, o: jnp.where(rows.reshape(rows.shape + (1,) * (n.ndim - 1)), n, o), new, old)


class _EachEnv:
    """The tasks' envs traced one by one: each task's reset and step run under its own ``lax.cond``, so a task
    with nothing to restart (or nothing left to play) skips its env. States: a tuple, one pytree per task."""

    def __init__(self, envs, reset_keys, slots: int):
        self.envs, self.reset_keys = envs, reset_keys
        # Every env's reset is traced once, inside the loop (compile time and its memory grow with each traced
        # env function): the loop starts from blank states with every slot due a reset.
        blanks = [_blank(_batched_shapes(env.reset, (slots,), k[0])) for env, k in zip(envs, reset_keys)]
        self.init = tuple(s for s, _ in blanks), jax.tree.map(lambda *xs: jnp.stack(xs), *(t for _, t in blanks))

    def reset(self, states, ts, start, first):
        """Slots in ``start`` (T, S) reset from the keys of episodes ``first`` (T, S)."""
        restarted = [jax.lax.cond(jnp.any(start[i]),
                                  lambda s, x, i=i, env=env: _where_rows(start[i], jax.vmap(env.reset)(
                                      self.reset_keys[i, first[i]]), (s, x)),
                                  lambda s, x: (s, x), s, jax.tree.map(lambda x: x[i], ts))
                     for i, (env, s) in enumerate(zip(self.envs, states))]
        return tuple(s for s, _ in restarted), jax.tree.map(lambda *xs: jnp.stack(xs), *(x for _, x in restarted))

    def step(self, states, ts, actions, idle):
        """Every task's slots step, but a task that is ``idle`` keeps its state (nothing of it counts any more,
        and skipping its env step saves time while other tasks play on)."""
        stepped = [jax.lax.cond(idle[i], lambda s, a, i=i: (s, jax.tree.map(lambda x: x[i], ts)),
                                jax.vmap(env.step), s, a)
                   for i, (env, s, a) in enumerate(zip(self.envs, states, actions))]
        return tuple(s for s, _ in stepped), jax.tree.map(lambda *xs: jnp.stack(xs), *(x for _, x in stepped))


class _OneTask:
    """One task's env as a stack of one (``reset(key, task)`` ignores the task), so that a group of one task
    plays through :class:`_StackedEnv`'s loop: resets of only the slots due one, no ``lax.cond`` around the
    step, which is several times faster than :class:`_EachEnv` for one task (docs/decisions.md)."""

    def __init__(self, env):
        self.env, self.spec, self.horizon = env, env.spec, env.horizon

    def reset(self, key, task):
        del task
        return self.env.reset(key)

    def step(self, state, actions):
        return self.env.step(state, actions)


class _StackedEnv:
    """All tasks in one traced env (``MultiAgentEnv.stack``): the task index is data, every slot of every task
    steps in one ``vmap``. States: one pytree with leading (T, S) axes.

    Resets: the slots due a restart reset ``RESET_CHUNK`` at a time, in a loop that runs as many chunks as there
    are restarts this step (none on most steps of long episodes). Why: a reset costs tens of env steps
    (Connector's reset is a random walk), and
    a ``vmap`` over a fixed batch of slots pays for every slot of the batch whenever any one of them restarts:
    with a quarter of the slots (at least one task's) per loop step, random play on connector_10 spent most of its
    time in resets of slots that had nothing to restart. Every slot due a restart restarts in its step."""

    def __init__(self, env, reset_keys, slots: int):
        self.env, self.reset_keys = env, reset_keys
        T = reset_keys.shape[0]
        self.slots, self.size = slots, T * slots
        self.chunk = min(self.size, RESET_CHUNK)
        self.init = _blank(_batched_shapes(env.reset, (T, slots), reset_keys[0, 0], jnp.int32(0)))

    def reset(self, states, ts, start, first):
        """Slots in ``start`` (T, S) reset from the keys of episodes ``first`` (T, S)."""
        flat_start = start.reshape(-1)
        # the restarting slots first (row-major), then past-the-end indices, whose writes are dropped
        order = jnp.nonzero(flat_start, size=self.size + self.chunk, fill_value=self.size)[0]
        flat = jax.tree.map(lambda x: x.reshape((self.size,) + x.shape[2:]), (states, ts))  # 0-size leaves too

        def restart(i, flat):
            idx = jax.lax.dynamic_slice(order, (i * self.chunk,), (self.chunk,))
            safe = jnp.minimum(idx, self.size - 1)
            task, slot = safe // self.slots, safe % self.slots
            new = jax.vmap(self.env.reset)(self.reset_keys[task, first[task, slot]], task)
            return jax.tree.map(lambda x, n: x.at[idx].set(n, mode="drop"), flat, new)

        chunks = (flat_start.sum() + self.chunk - 1) // self.chunk
        merged = jax.lax.fori_loop(0, chunks, restart, flat)
        return jax.tree.map(lambda x: x.reshape(start.shape + x.shape[1:]), merged)

    def step(self, states, ts, actions, idle):
        del ts, idle  # one traced step for all tasks: nothing to skip per task
        return jax.vmap(jax.vmap(self.env.step))(states, actions)


def _run_same_agents(envs, policy: Policy, params: Any, keys: jax.Array, count, slots: int,
                     stack: bool) -> EpisodeStats:
    """:func:`run_task_episodes` once its arguments are checked: one loop for all tasks."""
    num_agents = envs[0].num_agents
    T, C = keys.shape[:2]
    split = jax.vmap(jax.vmap(jax.random.split))(keys)  # (T, C, 2, key)
    reset_keys, act_keys = split[:, :, 0], split[:, :, 1]
    rows = jnp.arange(T)[:, None]
    stacked = type(envs[0]).stack(envs) if stack and len(envs) > 1 else None
    if stacked is not None and stacked.spec == envs[0].spec and stacked.horizon == max(e.horizon for e in envs):
        tasks = _StackedEnv(stacked, reset_keys, slots)
    elif len(envs) == 1:
        tasks = _StackedEnv(_OneTask(envs[0]), reset_keys, slots)
    else:
        tasks = _EachEnv(envs, reset_keys, slots)
    env_states, ts = tasks.init
    fresh = jax.tree.map(jnp.asarray, policy.init_carry(params, num_agents))
    carry = jax.tree.map(lambda x: jnp.broadcast_to(x, (T, slots) + x.shape), fresh)
    horizons = jnp.array([env.horizon for env in envs], jnp.int32)[:, None]
    episode = jnp.broadcast_to(jnp.arange(slots, dtype=jnp.int32), (T, slots))  # the episode each slot plays

    def act_step(key, obs, carry):
        return policy.act(params, obs, carry, key)

    def observe(carry, reward):
        return policy.observe(params, carry, reward)

    def restart(env_states, ts, carry, start, episode, steps, acc):
        """Slots in ``start`` begin episode ``episode``: env reset from its key, fresh carry, zero counters."""
        env_states, ts = tasks.reset(env_states, ts, start, jnp.minimum(episode, C - 1))
        carry = jax.tree.map(lambda f, c: jnp.where(start.reshape(start.shape + (1,) * f.ndim), f, c), fresh, carry)
        ret, length, won = acc
        return (env_states, ts, carry, jnp.where(start, 0, steps),
                (jnp.where(start, 0.0, ret), jnp.where(start, 0, length), won & ~start))

    def body(loop):
        env_states, ts, carry, episode, steps, playing, start, played, acc, out = loop
        env_states, ts, carry, steps, (ret, length, won) = restart(env_states, ts, carry, start, episode, steps, acc)
        step_keys = jax.vmap(jax.vmap(jax.random.fold_in))(act_keys[rows, episode], steps)
        actions, carry = jax.vmap(jax.vmap(act_step))(step_keys, ts.observation, carry)
        env_states, ts = tasks.step(env_states, ts, actions, ~jnp.any(playing, axis=1))
        carry = jax.vmap(jax.vmap(observe))(carry, ts.reward)
        ret = ret + jnp.where(playing, ts.reward, 0.0)
        length = length + playing
        won = won | (playing & ts.success)
        steps = steps + 1
        ended = playing & (ts.done | (steps >= horizons))
        slot_of = jnp.where(ended, episode, C)  # C is past the end: the write is dropped
        timeout = ~ts.terminal  # an end that is no termination: the time limit or the task's horizon
        out = tuple(o.at[rows, slot_of].set(v, mode="drop") for o, v in zip(out, (ret, length, won, timeout)))
        # ended slots take the task's next episodes in slot order
        episode = jnp.where(ended, played[:, None] + jnp.cumsum(ended, axis=1) - ended, episode)
        played = played + ended.sum(axis=1)
        start = ended & (episode < count)  # restarted at the top of the next iteration
        playing = (playing & ~ended) | start
        return env_states, ts, carry, episode, steps, playing, start, played, (ret, length, won), out

    def cond(loop):
        return jnp.any(loop[5])

    zeros = jnp.zeros((T, slots))
    out = (jnp.zeros((T, C)), jnp.zeros((T, C), jnp.int32), jnp.zeros((T, C), bool), jnp.zeros((T, C), bool))
    playing = episode < count
    acc = (zeros, zeros.astype(jnp.int32), zeros.astype(bool))
    init = (env_states, ts, carry, episode, jnp.zeros((T, slots), jnp.int32), playing, playing,
            jnp.full((T,), slots, jnp.int32), acc, out)
    *_, out = jax.lax.while_loop(cond, body, init)
    return EpisodeStats(*out)


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
    of padded envs with one agent count, ``key`` holds one key per task, and every
    field of the result has a leading task axis: all tasks play in one program. There
    ``batch`` is the number of episodes of a task a device plays at once (its
    slots) and ``capacity`` (default ``batch``) how many of them one call plays
    through those slots: a call is given the count to play, so fewer episodes
    (a periodic evaluation) and more (the final one, in as few calls as
    ``capacity`` allows) run the same program.
    """

    def __init__(self, env, policy: Policy, num_episodes: int, num_devices: int | None = None,
                 batch: int | None = None, tasks: bool = False, capacity: int | None = None, stack: bool = True):
        if num_episodes < 1:
            raise UserInputError(f"the number of evaluation episodes must be >= 1, got {num_episodes}")
        self.devices = jax.local_devices()[: num_devices or jax.local_device_count()]
        n_dev = len(self.devices)
        per_device = -(-num_episodes // n_dev)
        # slots: up to the episodes one call plays (with tasks, a call may play more than num_episodes: capacity)
        most = max(per_device, capacity or 0) if tasks else per_device
        self.batch = min(most, batch) if batch else per_device
        self.capacity = max(capacity or self.batch, self.batch) if tasks else self.batch
        self.tasks = tasks
        self._set_episodes(num_episodes)

        if tasks:
            check_same_shapes(env)
            envs = list(env)
            self.num_tasks = len(envs)

            def run(params, keys, first, count):
                """Episodes first..first+count-1 of every task (count <= capacity), ``batch`` at a time."""
                ep_keys = jax.vmap(lambda k: episode_keys(k, self.capacity, first))(keys)
                return run_task_episodes(envs, policy, params, ep_keys, count, self.batch, stack)
        else:
            def run(params, key, first, count):
                """Episodes first..first+batch-1; keys are made inside the compiled program."""
                del count
                return run_episodes(env, policy, params, episode_keys(key, self.batch, first))

        self._fn = jax.jit(run) if n_dev == 1 else jax.pmap(run, in_axes=(None, None, 0, None),
                                                             devices=self.devices)
        self._compiled = [None]  # shared with resized() copies

    def _set_episodes(self, num_episodes: int) -> None:
        self.num_episodes = num_episodes
        per_device = -(-num_episodes // len(self.devices))
        self.calls = -(-per_device // self.capacity)
        # padded up to whole calls; extra episodes are dropped. A task program's last call plays only what is left.
        self.per_device = per_device if self.tasks else self.calls * self.batch

    def _count(self, call: int) -> int:
        return min(self.capacity, self.per_device - call * self.capacity)

    def resized(self, num_episodes: int) -> "Evaluator":
        """The same compiled program for another episode count (more or fewer calls)."""
        other = copy.copy(self)
        other._set_episodes(num_episodes)
        return other

    def _firsts(self, call: int):
        base = call * self.capacity
        if len(self.devices) == 1:
            return jnp.int32(base)
        return jnp.arange(len(self.devices), dtype=jnp.int32) * self.per_device + base

    def compile(self, params, key) -> "Evaluator":
        if self._compiled[0] is None:
            lowered = self._fn.lower(params, key, self._firsts(0), jnp.int32(self.capacity))
            self._compiled[0] = lowered.compile(compiler_options=compiler_options())
        return self

    def __call__(self, params, key) -> EpisodeStats:
        self.compile(params, key)
        parts = [self._compiled[0](params, key, self._firsts(c), jnp.int32(self._count(c)))
                 for c in range(self.calls)]
        if not self.tasks:
            # ([devices,] batch) per call -> episode order: device-major, then call, then slot
            stats = jax.tree.map(lambda *xs: jnp.stack(xs, axis=-2), *parts)
            return jax.tree.map(lambda x: x.reshape(-1)[: self.num_episodes], stats)
        # ([devices,] tasks, capacity) per call: the episodes each call played, then device-major per task
        stats = jax.tree.map(lambda *xs: jnp.concatenate([x[..., : self._count(c)] for c, x in enumerate(xs)],
                                                          axis=-1), *parts)
        if len(self.devices) > 1:  # (devices, tasks, per_device) -> (tasks, devices, per_device)
            stats = jax.tree.map(lambda x: jnp.moveaxis(x, 1, 0), stats)
        return jax.tree.map(lambda x: x.reshape(self.num_tasks, -1)[:, : self.num_episodes], stats)


def make_evaluator(env, policy: Policy, num_episodes: int, num_devices: int | None = None,
                   batch: int | None = None) -> Evaluator:
    """``evaluate(params, key) -> EpisodeStats`` compiled for ``env`` (see :class:`Evaluator`).

    ``num_devices`` defaults to all local devices; episodes are padded up to a
    multiple of the devices (and of ``batch``) and the extra ones dropped.
    """
    return Evaluator(env, policy, num_episodes, num_devices, batch)


class TaskSetEvaluator:
    """``evaluate(params, keys) -> EpisodeStats`` of shape (tasks, episodes) for the tasks of a set.

    Tasks with the same number of agents share one compiled program (a task
    :class:`Evaluator`: one traced copy of the policy, decoding only that many
    agents); the programs compile one after another, each compile's freed heap
    handed back to the OS before the next. Why not one program for the whole
    set: one program's compile needs far more transient memory (the main job's
    peak) than the per-group programs, for the same compile and play time
    (``benchmarks/eval_layouts.py``; docs/decisions.md).
    """

    def __init__(self, envs, policy: Policy, num_episodes: int, num_devices: int | None = None,
                 batch: int | None = None, capacity: int | None = None, stack: bool = True):
        envs = list(envs)
        check_same_shapes(envs)
        groups: dict[int, list[int]] = {}
        for i, env in enumerate(envs):
            groups.setdefault(env.num_agents, []).append(i)
        self.groups = [np.asarray(idx) for idx in groups.values()]
        self.parts = [Evaluator([envs[i] for i in idx], policy, num_episodes, num_devices, batch, tasks=True,
                                capacity=capacity, stack=stack) for idx in self.groups]
        self.order = np.argsort(np.concatenate(self.groups))  # group-major rows back to task order
        self.num_tasks = len(envs)
        self._compiling: list[Future | None] = [None]  # shared with resized() copies
        self._stop = threading.Event()

    @property
    def batch(self) -> int:
        return self.parts[0].batch

    @property
    def calls(self) -> int:
        return self.parts[0].calls

    @property
    def num_episodes(self) -> int:
        return self.parts[0].num_episodes

    def resized(self, num_episodes: int) -> "TaskSetEvaluator":
        """The same compiled programs for another episode count (more or fewer calls)."""
        other = copy.copy(self)
        other.parts = [part.resized(num_episodes) for part in self.parts]
        return other

    def compile(self, params, keys, background: bool = False) -> "TaskSetEvaluator":
        """Compile every group's program, one after another (each compile's freed heap trimmed).

        ``background=True`` starts the compiles in a worker thread and returns at once (XLA compiles
        outside the GIL), so a learner on an accelerator goes on updating meanwhile while the host's
        cores compile; any later call (or the first evaluation) waits for them. Not for a learner on the
        CPU: there the overlapped compiles and the updates compete for the same cores, so neither gains.
        """
        if self._compiling[0] is None:
            shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), (params, keys))
            self._compiling[0] = _compiler().submit(self._compile_parts, *shapes)
        if not background:
            self._compiling[0].result()  # re-raises what the compile raised
        return self

    def _compile_parts(self, params, keys) -> None:
        # Abstract shapes, not arrays: the caller's arrays may be donated to the training step meanwhile.
        def one(part_idx):
            part, idx = part_idx
            if part._compiled[0] is None and not self._stop.is_set():
                part.compile(params, jax.ShapeDtypeStruct((len(idx),) + keys.shape[1:], keys.dtype))
                release_freed_memory()

        todo = list(zip(self.parts, self.groups))
        threads = min(COMPILE_THREADS, len(todo))
        if threads <= 1:
            for item in todo:
                one(item)
        else:  # several at once, each in its own thread
            with ThreadPoolExecutor(threads, thread_name_prefix="mtmarl-compile-part") as pool:
                list(pool.map(one, todo))

    def close(self) -> None:
        """Stop background compiling after the program in progress (a compile cannot be interrupted) and wait
        for it, so that nothing compiles on once a run has ended (crashed, stopped early, interrupted). A
        program left uncompiled compiles when it is first called."""
        self._stop.set()
        if self._compiling[0] is not None:
            wait([self._compiling[0]])

    def __call__(self, params, keys) -> EpisodeStats:
        self.compile(params, keys)
        played = [part(params, keys[idx]) for part, idx in zip(self.parts, self.groups)]
        return jax.tree.map(lambda *xs: jnp.concatenate(xs)[self.order], *played)


@functools.cache
def _compiler() -> ThreadPoolExecutor:
    """One worker thread for background compiles: programs compile one at a time, as in the foreground
    (two at once would stack their transient memory, the peak RSS of a training run)."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="mtmarl-compile")


def make_task_set_evaluator(envs, policy: Policy, num_episodes: int, num_devices: int | None = None,
                            batch: int | None = None, capacity: int | None = None,
                            stack: bool = True) -> TaskSetEvaluator:
    """``evaluate(params, keys) -> EpisodeStats`` of shape (tasks, episodes) for all ``envs`` (see
    :class:`TaskSetEvaluator`).

    ``envs`` are the tasks of one set padded to the set's shape (``TaskSet.padded``)
    and ``keys`` is (tasks, 2), one evaluation key per task. Task t's episodes
    are those :func:`make_evaluator` gives ``envs[t]`` for ``keys[t]`` (see
    :func:`run_task_episodes`; stacked RWARE, LBF and Connector tasks play the same episodes, stacked
    SMAX maps draw some numbers from other keys unless ``stack=False``), but the set compiles once per agent count: one
    copy of the policy network per group instead of one per task, and the same
    programs for the periodic and final evaluations of a training run.
    """
    return TaskSetEvaluator(envs, policy, num_episodes, num_devices, batch, capacity, stack)


def compile_all(evaluators, params, key, threads: int | None = None) -> None:
    """Compile many evaluators at once (XLA compiles outside the GIL, one per thread)."""
    todo = list({id(e._compiled): e for e in evaluators if e._compiled[0] is None}.values())
    if not todo:
        return
    with ThreadPoolExecutor(threads or min(len(todo), jax.local_device_count() * 2, 8)) as pool:
        list(pool.map(lambda e: e.compile(params, key), todo))
