"""Task-balanced sequence batching over padded per-task buffers (the multi-task Oryx paper, section 2.2).

All training tasks live on device in one set of arrays stacked over tasks and
padded to the set's longest dataset ``L``, most agents ``N`` and largest
observation ``O``, with each task's true length in ``lengths``; sampling a
batch is then one gather with static shapes, so the whole sampler runs under
``jax.jit`` (and inside a ``lax.scan`` of updates).

Observations dominate the memory (``M*L*N*O``, replicated on every device), so
when all of them take at most 256 distinct values (grid observations do: RWARE,
LBF and Connector take 6-12) they are held as ``uint8`` codes into a value
table and decoded after the gather: 4x less memory, the same float32 batches.

**Task shards** (``training.shard_data``): each device may instead hold only its
share of the tasks (task ``m`` on device ``m mod D``), so each process reads and
stores only its share of the vaults. Such buffers carry ``task_ids`` (the global id of
each slot; -1 marks an empty slot that pads every device to the same task count) and
each device draws its own ``B / D`` sequences from its own tasks, balanced over them;
the losses still weight tasks equally (``mtmarl.algos.reductions.task_mean`` groups the
global batch by task id), only the number of sequences per task can differ by device (and with ``balanced=False``
each device draws its own task; with ``tasks_per_batch=k`` its own ``k`` tasks).

Padded agents (beyond a task's own agent count) see zero observations, may
only take the no-op (action 0), carry action 0 and are flagged
``active=False``, matching ``mtmarl.envs.padding.PaddedEnv`` at evaluation.

A batch of ``B`` sequences of ``T`` steps over ``M`` tasks (``balanced=True``):
every task gives ``q = B // M`` sequences and the ``r = B - q*M`` leftover ones
go round-robin to tasks ``(u*r + j) mod M``, ``j < r``, at update ``u``, so over
any ``M`` consecutive updates every task gets exactly ``q*M + r`` sequences.
Start positions are uniform over ``[0, lengths[m] - T]``: sequences may cross
episode boundaries, marked by ``resets`` (the step is the first of an episode).
With ``shuffle=True`` each sequence gets its own random order of all ``N``
agents (active and padded alike), the same for all its ``T`` steps. Ablations:
``balanced=False`` draws the whole batch from one uniformly random task (``tasks_per_batch=k``:
``k`` distinct random tasks per update, the batch balanced over them),
``shuffle=False`` keeps dataset order, ``mask=False`` marks padded agents as
active (the network and the losses then treat them as real agents; ``real``
still holds the true mask for metrics).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mtmarl.envs.layout import EnvSpec
from mtmarl.errors import UserInputError

NOOP = 0  # the only legal action of a padded agent without a target EnvSpec (mtmarl.envs.base.NOOP)


class Buffers(NamedTuple):
    """All tasks' data, stacked over tasks ``M`` and padded (a pytree of device arrays)."""

    obs: jax.Array          # (M, L, N, O) float32, or uint8 codes into obs_values; zeros for padding
    actions: jax.Array      # (M, L, N) int32, NOOP for padded agents
    rewards: jax.Array      # (M, L) float32 team reward
    terminals: jax.Array    # (M, L) bool: the episode ended at this step (no bootstrap)
    truncations: jax.Array  # (M, L) bool: the episode was cut at this step (bootstrap impossible)
    legals: jax.Array       # (M, L, N, A) bool, only NOOP for padded agents
    first: jax.Array        # (M, L) bool: this step is the first of an episode
    active: jax.Array       # (M, N) bool: real agents of each task
    lengths: jax.Array      # (M,) int32 steps of each task's data
    returns: jax.Array      # (M, L) float32 undiscounted return-to-go to each step's episode end
    obs_values: jax.Array | None = None  # (K,) float32 value of each code when obs holds codes
    task_ids: jax.Array | None = None    # (M,) int32 global task of each slot (-1: empty) for a task shard, else None

    def decode_obs(self, raw: jax.Array) -> jax.Array:
        """float32 observations from stored ones (any slice or gather of ``obs``)."""
        if self.obs_values is None:
            return raw.astype(jnp.float32)
        return jnp.asarray(self.obs_values)[raw.astype(jnp.int32)]

    @property
    def num_tasks(self) -> int:
        return self.obs.shape[0]

    @property
    def num_agents(self) -> int:
        return self.obs.shape[2]

    @property
    def num_actions(self) -> int:
        return self.legals.shape[-1]


class Batch(NamedTuple):
    """B sequences of T steps; the agent axis is already shuffled (``perm``)."""

    obs: jax.Array          # (B, T, N, O)
    actions: jax.Array      # (B, T, N) int32
    rewards: jax.Array      # (B, T) team reward
    terminals: jax.Array    # (B, T) bool
    truncations: jax.Array  # (B, T) bool
    discounts: jax.Array    # (B, T) float32 = 1 - terminals
    legals: jax.Array       # (B, T, N, A) bool
    active: jax.Array       # (B, T, N) bool: agents the network and the losses count (all True if mask=False)
    real: jax.Array         # (B, T, N) bool: true agent mask (for metrics; equals active when mask=True)
    resets: jax.Array       # (B, T) bool: first step of an episode
    returns: jax.Array      # (B, T) undiscounted return-to-go to the episode's end in the data (return-conditioning)
    task_ids: jax.Array     # (B,) int32 -- metrics / per-task loss weighting only, never a model input
    starts: jax.Array       # (B,) int32 start step in the task's data (diagnostics)
    perm: jax.Array         # (B, N) int32: batch agent j is dataset agent perm[b, j]


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    batch_size: int = 64
    seq_len: int = 20
    balanced: bool = True   # task-balanced batches (else one random task per batch)
    shuffle: bool = True    # random agent order per sequence
    mask: bool = True       # padded agents inactive (else counted as real agents)
    tasks_per_batch: int | None = None  # balanced over k tasks drawn per update (None: over all tasks)

    def __post_init__(self):
        if self.batch_size < 1 or self.seq_len < 1:
            raise UserInputError(f"batch_size and seq_len must be >= 1, got {self.batch_size}, {self.seq_len}")
        k = self.tasks_per_batch
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise UserInputError(f"data.tasks_per_batch={k!r} is not allowed: want an integer >= 1 or null")
        if k is not None and not self.balanced:
            raise UserInputError(f"data.tasks_per_batch={k} needs data.balanced=true (balanced=false already "
                                 f"draws one task per batch, i.e. tasks_per_batch=1)")


# ---------------------------------------------------------------- building buffers

_KEYS = ("obs", "actions", "rewards", "terminals", "truncations", "legals")


def _task_arrays(task: Mapping, i: int) -> dict:
    missing = [k for k in _KEYS if k not in task]
    if missing:
        raise UserInputError(f"task {i}: missing arrays {missing}; need {list(_KEYS)}")
    obs = np.asarray(task["obs"], np.float32)
    if obs.ndim != 3:
        raise UserInputError(f"task {i}: obs must be (T, N, O), got shape {obs.shape}")
    L, n = obs.shape[:2]
    actions = np.asarray(task["actions"]).astype(np.int32)
    legals = np.asarray(task["legals"]).astype(bool)
    # Team reward / episode flags: (L,) or per agent (L, N) (og-marl vaults store them per agent;
    # cooperative tasks give every agent the same reward, so the mean is that reward).
    rewards = np.asarray(task["rewards"], np.float32)
    rewards = rewards.mean(-1) if rewards.ndim == 2 else rewards
    flags = {}
    for k in ("terminals", "truncations"):
        f = np.asarray(task[k]).astype(bool)
        flags[k] = f.any(-1) if f.ndim == 2 else f
    shapes = {"actions": (actions.shape, (L, n)), "legals": (legals.shape[:2], (L, n)),
              "rewards": (rewards.shape, (L,)), "terminals": (flags["terminals"].shape, (L,)),
              "truncations": (flags["truncations"].shape, (L,))}
    for k, (have, want) in shapes.items():
        if tuple(have) != want:
            raise UserInputError(f"task {i}: {k} has shape {have}, expected {want} to match obs {obs.shape}")
    return dict(obs=obs, actions=actions, rewards=rewards, legals=legals, **flags)


def value_table(arrays: Sequence[np.ndarray], limit: int = 256, chunk: int = 1 << 22) -> np.ndarray | None:
    """Sorted distinct values of all ``arrays`` plus 0 (the padding), or None if more than ``limit``.

    Chunked, and a chunk whose values are all known already costs one ``searchsorted``
    instead of a sort (building lbf_5's full-size buffers, 0.8 GiB of codes, took 23 s).
    """
    seen = np.zeros((1,), np.float32)
    for arr in arrays:
        flat = arr.reshape(-1)
        for start in range(0, flat.size, chunk):
            part = flat[start:start + chunk]
            part = part[seen[np.minimum(np.searchsorted(seen, part), seen.size - 1)] != part]
            if part.size:
                seen = np.union1d(seen, np.unique(part))
                if seen.size > limit or not np.isfinite(seen).all():
                    return None
    return seen


def _to_layout(task: dict, spec: EnvSpec, target: EnvSpec) -> dict:
    """One task's arrays in the padded entity and action layout of ``target`` (identity for flat envs)."""
    out = dict(task, obs=spec.obs.pad(task["obs"], target.obs))
    if spec.actions != target.actions:
        src, valid = spec.actions.action_map(target.actions)
        out["actions"] = spec.actions.index_in(target.actions)[task["actions"]]
        out["legals"] = task["legals"][..., src] & valid
    return out


def make_buffers(tasks: Sequence[Mapping], seq_len: int, num_agents: int | None = None,
                 obs_dim: int | None = None, compact: bool = True,
                 specs: Sequence[EnvSpec] | None = None, target: EnvSpec | None = None,
                 length: int | None = None, table_size: int | None = None, host: bool = False) -> Buffers:
    """Stack per-task datasets into padded device ``Buffers``.

    Each task is a mapping of time-major arrays: ``obs`` (L_i, N_i, O_i),
    ``actions`` (L_i, N_i), ``rewards`` (L_i,) or (L_i, N_i), ``terminals`` and
    ``truncations`` (L_i,) or (L_i, N_i), ``legals`` (L_i, N_i, A). Episodes are
    stored back to back: the step after a terminal/truncated one starts a new
    episode. Every task needs at least ``seq_len`` steps and the same ``A``.
    ``compact`` stores observations as codes when they allow it (module docstring).
    ``specs`` (each task's ``EnvSpec``) and ``target`` (the set's) pad observations per
    entity group and move targeted actions to their padded index, as ``PaddedEnv`` does;
    ``target`` then also gives the sizes and the no-op of padded agents.
    ``length`` pads the time axis to at least that many steps and ``table_size`` the code table to
    exactly that many entries (its last value repeated), so task shards built apart share shapes;
    ``host`` keeps the arrays in numpy (a shard goes to its own device, not the default one).
    """
    if not tasks:
        raise UserInputError("no tasks given")
    data = [_task_arrays(t, i) for i, t in enumerate(tasks)]
    noop = NOOP
    if target is not None:
        if specs is None or len(specs) != len(data):
            raise UserInputError("make_buffers: give one EnvSpec per task with target")
        data = [_to_layout(d, s, target) for d, s in zip(data, specs)]
        num_agents, obs_dim, noop = target.num_agents, target.obs_dim, target.actions.noop
    acts = {d["legals"].shape[-1] for d in data}
    if len(acts) != 1:
        raise UserInputError(f"tasks disagree on the number of actions: {sorted(acts)}")
    (A,) = acts
    lens = [d["obs"].shape[0] for d in data]
    short = [i for i, n in enumerate(lens) if n < seq_len]
    if short:
        raise UserInputError(f"tasks {short} have fewer than seq_len={seq_len} steps ({[lens[i] for i in short]})")
    N = max(d["obs"].shape[1] for d in data) if num_agents is None else int(num_agents)
    O = max(d["obs"].shape[2] for d in data) if obs_dim is None else int(obs_dim)
    M, L = len(data), max(lens + [int(length or 0)])
    table = value_table([d["obs"] for d in data]) if compact else None
    if table is not None and table_size is not None:
        if table.size > table_size:
            raise UserInputError(f"{table.size} distinct observation values do not fit a table of {table_size}")
        table = np.concatenate([table, np.full(table_size - table.size, table[-1], table.dtype)])
    obs = np.zeros((M, L, N, O), np.float32 if table is None else np.uint8)
    if table is not None:
        obs[:] = np.searchsorted(table, 0.0)
    actions = np.full((M, L, N), noop, np.int32)
    rewards = np.zeros((M, L), np.float32)
    returns = np.zeros((M, L), np.float32)
    terminals = np.zeros((M, L), bool)
    truncations = np.zeros((M, L), bool)
    legals = np.zeros((M, L, N, A), bool)
    legals[..., noop] = True
    first = np.zeros((M, L), bool)
    active = np.zeros((M, N), bool)
    for m, d in enumerate(data):
        n_m, (l_m, _, o_m) = d["obs"].shape[1], d["obs"].shape
        if n_m > N or o_m > O:
            raise UserInputError(f"task {m} has {n_m} agents / {o_m} features, more than the padding {N} / {O}")
        obs[m, :l_m, :n_m, :o_m] = d["obs"] if table is None else np.searchsorted(table, d["obs"])
        actions[m, :l_m, :n_m] = d["actions"]
        legals[m, :l_m, :n_m] = d["legals"]
        rewards[m, :l_m] = d["rewards"]
        returns[m, :l_m] = returns_to_go(d["rewards"], d["terminals"] | d["truncations"], 1.0)
        terminals[m, :l_m] = d["terminals"]
        truncations[m, :l_m] = d["truncations"]
        first[m, 0] = True
        first[m, 1:l_m] = d["terminals"][:-1] | d["truncations"][:-1]
        active[m, :n_m] = True
    put = np.asarray if host else jnp.asarray
    return Buffers(*map(put, (obs, actions, rewards, terminals, truncations, legals, first, active,
                              np.asarray(lens, np.int32), returns)),
                   obs_values=None if table is None else put(table.astype(np.float32)))


def returns_to_go(rewards: np.ndarray, ends: np.ndarray, gamma: float) -> np.ndarray:
    """Discounted return-to-go of every step of back-to-back episodes (numpy, host side).

    ``ends[t]`` marks the last step of an episode (terminal or truncated): a
    truncated episode is treated as ending there, so these are Monte-Carlo
    returns of the data, not true values.
    """
    rewards = np.asarray(rewards, np.float32)
    g, out = np.float32(0.0), np.empty(len(rewards), np.float32)
    for s in range(len(out) - 1, -1, -1):
        g = rewards[s] + (np.float32(0.0) if ends[s] else gamma * g)  # float32 throughout
        out[s] = g
    return out


def return_range(tasks: Sequence[Mapping], gamma: float) -> tuple[float, float]:
    """Min and max discounted return-to-go over all steps of all tasks (:func:`returns_to_go`).

    A guide for the HL-Gauss support ``[v_min, v_max]``.
    """
    lo, hi = np.inf, -np.inf
    for i, t in enumerate(tasks):
        d = _task_arrays(t, i)
        out = returns_to_go(d["rewards"], d["terminals"] | d["truncations"], gamma)
        lo, hi = min(lo, float(out.min())), max(hi, float(out.max()))
    return lo, hi


def shard_tasks(num_tasks: int, num_shards: int) -> list[list[int]]:
    """The tasks of each of ``num_shards`` devices: task ``m`` on device ``m mod num_shards``."""
    if num_tasks < num_shards:
        raise UserInputError(f"training.shard_data=true needs at least one training task per device: "
                             f"{num_tasks} task(s) on {num_shards} devices (use fewer devices or shard_data=false)")
    return [list(range(d, num_tasks, num_shards)) for d in range(num_shards)]


def with_slots(buffers: Buffers, ids: Sequence[int], slots: int) -> Buffers:
    """``buffers`` of the tasks ``ids`` (global ids, in order) padded with empty slots to ``slots`` tasks (numpy).

    An empty slot (id -1) is never sampled; it holds zeros and a length of 1 so that
    the sampler's arithmetic stays valid for it.
    """
    M = buffers.num_tasks
    if len(ids) != M or slots < M:
        raise UserInputError(f"with_slots: {len(ids)} ids for {M} tasks, {slots} slots")

    def grow(x, fill=0):
        x = np.asarray(x)
        return np.concatenate([x, np.full((slots - M, *x.shape[1:]), fill, x.dtype)])

    per_task = {k: grow(getattr(buffers, k)) for k in ("obs", "actions", "rewards", "terminals", "truncations",
                                                      "legals", "first", "active", "returns")}
    return buffers._replace(**per_task, lengths=grow(buffers.lengths, 1),
                            task_ids=np.asarray([*ids, *[-1] * (slots - M)], np.int32))


# ---------------------------------------------------------------- sampling

def drawn_tasks(key, batch_size: int, num_tasks, slots: int, k: int) -> jax.Array:
    """Slot of each sequence when every update draws ``k`` distinct tasks and balances the batch over them.

    The tasks are a uniform draw without replacement among the first ``num_tasks`` (may be traced) of
    ``slots`` (static); sequence ``j`` takes drawn task ``j mod min(k, num_tasks)``, so each drawn task
    gets ``B // k`` sequences or one more. Between ``balanced=False`` (``k = 1``) and the balanced batch
    (``k = M``) this separates "one update sees few tasks" from "a task's weight in the batch".
    """
    k = min(k, slots)
    scores = jnp.where(jnp.arange(slots) < num_tasks, jax.random.uniform(key, (slots,)), 2.0)
    chosen = jnp.argsort(scores)[:k].astype(jnp.int32)
    return chosen[jnp.arange(batch_size, dtype=jnp.int32) % jnp.minimum(k, num_tasks)]


def task_assignment(step, batch_size: int, num_tasks: int, balanced: bool = True, key=None,
                    tasks_per_batch: int | None = None) -> jax.Array:
    """Task id of each of the ``batch_size`` sequences at update ``step`` (jit-compatible).

    Balanced: ``q = B // M`` per task (ids ``0..M-1`` repeated ``q`` times), then
    ``r`` extras for tasks ``(step*r + j) mod M``. Unbalanced: one task drawn
    uniformly with ``key`` for the whole batch. ``tasks_per_batch = k < M``:
    :func:`drawn_tasks` (``k`` tasks drawn with ``key``, the batch balanced over them).
    """
    if not balanced:
        return jnp.full((batch_size,), jax.random.randint(key, (), 0, num_tasks), jnp.int32)
    if tasks_per_batch is not None and tasks_per_batch < num_tasks:
        return drawn_tasks(key, batch_size, num_tasks, num_tasks, tasks_per_batch)
    q, r = divmod(batch_size, num_tasks)
    base = jnp.tile(jnp.arange(num_tasks, dtype=jnp.int32), q)
    offset = (jnp.asarray(step, jnp.int32) * r) % num_tasks
    extra = (offset + jnp.arange(r, dtype=jnp.int32)) % num_tasks
    return jnp.concatenate([base, extra])


def shard_assignment(step, batch_size: int, num_tasks, balanced: bool = True, key=None,
                     tasks_per_batch: int | None = None, slots: int | None = None) -> jax.Array:
    """Slot of each sequence for a task shard holding ``num_tasks`` (traced) tasks in its first slots.

    Balanced: sequence ``j`` of update ``step`` takes slot ``(step * B + j) mod M``: every task
    gets ``B // M`` or one more, and over ``M`` updates exactly ``B`` (the same counts as
    :func:`task_assignment`, which needs a static ``M``). Unbalanced: one slot drawn with ``key``.
    ``tasks_per_batch`` below the shard's ``slots`` (static): :func:`drawn_tasks` over its tasks.
    """
    if not balanced:
        return jnp.full((batch_size,), jax.random.randint(key, (), 0, num_tasks), jnp.int32)
    if tasks_per_batch is not None and tasks_per_batch < slots:
        return drawn_tasks(key, batch_size, num_tasks, slots, tasks_per_batch)
    return ((jnp.asarray(step, jnp.int32) * batch_size + jnp.arange(batch_size, dtype=jnp.int32)) % num_tasks
            ).astype(jnp.int32)


def sample(buffers: Buffers, key: jax.Array, step, cfg: SamplerConfig) -> Batch:
    """One batch for update ``step`` (an int or traced int32); jit with ``cfg`` static."""
    B, T = cfg.batch_size, cfg.seq_len
    M, N = buffers.num_tasks, buffers.num_agents
    k_task, k_start, k_perm = jax.random.split(key, 3)
    if buffers.task_ids is None:
        task = task_assignment(step, B, M, cfg.balanced, k_task, cfg.tasks_per_batch)
        ids = task
    else:  # a task shard: slots, then their global ids
        task = shard_assignment(step, B, jnp.sum(buffers.task_ids >= 0), cfg.balanced, k_task, cfg.tasks_per_batch,
                                M)
        ids = buffers.task_ids[task]
    n_starts = jnp.maximum(buffers.lengths[task] - T + 1, 1)  # make_buffers guarantees lengths >= T
    start = jax.random.randint(k_start, (B,), 0, n_starts, dtype=jnp.int32)
    if cfg.shuffle:
        perm = jax.vmap(lambda k: jax.random.permutation(k, N))(jax.random.split(k_perm, B)).astype(jnp.int32)
    else:
        perm = jnp.broadcast_to(jnp.arange(N, dtype=jnp.int32), (B, N))
    t_idx = start[:, None] + jnp.arange(T, dtype=jnp.int32)          # (B, T)
    m3, t3, a3 = task[:, None, None], t_idx[:, :, None], perm[:, None, :]  # broadcast to (B, T, N)
    m2 = task[:, None]
    real = jnp.broadcast_to(buffers.active[task[:, None], perm][:, None, :], (B, T, N))
    terminals = buffers.terminals[m2, t_idx]
    return Batch(
        obs=buffers.decode_obs(buffers.obs[m3, t3, a3]),
        actions=buffers.actions[m3, t3, a3],
        rewards=buffers.rewards[m2, t_idx],
        terminals=terminals,
        truncations=buffers.truncations[m2, t_idx],
        discounts=1.0 - terminals.astype(jnp.float32),
        legals=buffers.legals[m3, t3, a3],
        active=real if cfg.mask else jnp.ones_like(real),
        real=real,
        resets=buffers.first[m2, t_idx],
        returns=buffers.returns[m2, t_idx],
        task_ids=ids,
        starts=start,
        perm=perm,
    )


def make_sampler(cfg: SamplerConfig):
    """``jax.jit``-ed ``(buffers, key, step) -> Batch`` for this config."""
    return jax.jit(lambda buffers, key, step: sample(buffers, key, step, cfg))
