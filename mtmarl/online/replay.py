"""The compiled replay loop of value-based online learners: act epsilon-greedily, write the sequences into a
ring buffer, update on batches drawn from it (and, for a hybrid learner, partly from offline vaults).

Why one module: HyGen's hybrid stage (:mod:`mtmarl.online.hygen`) and the online QMIX baseline it is
compared with (:mod:`mtmarl.online.qmix`) run the same loop on the same rollout and differ only in the
learner (its state, acting and update) and in the share of offline rows; a :class:`ReplayLearner` names
those, :func:`make_replay_system` compiles the rest.

One chunk = ``updates_per_chunk`` iterations under ``lax.scan`` (one compiled program, ``pmap``-ed on one
device so the collectors' (device, ...) layout holds). An iteration: ``num_envs`` envs act for ``seq_len``
steps (epsilon linear from ``eps_start`` to ``eps_end`` over ``eps_decay_steps`` env steps; history tokens
carried across iterations), the ``num_envs`` sequences go into a fixed-shape ring of ``buffer_size``
sequences, then ``updates_per_rollout`` updates. Each update's batch holds ``round(R * B)`` offline rows
(rows ``0..``) and the rest online ones, ``R`` the learner's ratio at the env steps taken so far: both
sources are sampled at full size ``B`` and rows picked by index, so every shape is static and one program
serves the whole schedule. Sequences may start mid-episode and cross episode ends (``resets``), like the
engine's offline samples. Logged per chunk (means over its iterations): the learner's losses, ``epsilon``,
``hybrid_ratio`` (the offline share), ``offline_rows``, ``buffer_sequences``, ``win_rate`` (wins over the episodes that ended
in an iteration; 0 if none ended). PPO-only columns are null.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mtmarl.data.batching import Batch, Buffers, SamplerConfig, sample
from mtmarl.online import ppo
from mtmarl.online.anakin import PPOLearner, System, UpdateMetrics
from mtmarl.online.rollout import EnvBatch, PoolMaker, ResetPool, carried_rollout, start_from_pool
from mtmarl.training.engine import AXIS


def linear(start: float, end: float, steps: int, t):
    """``start`` at t = 0, linear to ``end`` at t = ``steps``, ``end`` after (epsilon; HyGen's R_h, Eq. 3)."""
    frac = jnp.minimum(jnp.asarray(t, jnp.float32) / steps, 1.0)
    return start + (end - start) * frac


def offline_rows(ratio, batch_size: int):
    """round(R * B): how many rows of a batch of ``batch_size`` come from the offline data."""
    return jnp.round(ratio * batch_size).astype(jnp.int32)


def mix_batches(offline: Batch, online: Batch, n_offline) -> tuple[Batch, jax.Array]:
    """Rows ``i < n_offline`` from ``offline``, the rest from ``online`` (same shapes; static);
    also returns the (B,) bool mask of offline rows."""
    from_offline = jnp.arange(offline.task_ids.shape[0]) < n_offline

    def pick(a, b):
        return jnp.where(from_offline.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)

    return jax.tree.map(pick, offline, online), from_offline


class Ring(NamedTuple):
    """A fixed-shape ring of ``C`` sequences of ``T`` steps (the online replay buffer)."""

    obs: jax.Array  # (C, T, N, O)
    actions: jax.Array  # (C, T, N) int32
    rewards: jax.Array  # (C, T)
    terminals: jax.Array  # (C, T) bool
    truncations: jax.Array  # (C, T) bool
    legals: jax.Array  # (C, T, N, A) bool
    active: jax.Array  # (C, T, N) bool
    resets: jax.Array  # (C, T) bool
    count: jax.Array  # () int32 sequences ever written

    @staticmethod
    def empty(capacity: int, T: int, N: int, O: int, A: int) -> Ring:
        z = lambda *s, d=jnp.float32: jnp.zeros((capacity,) + s, d)  # noqa: E731
        return Ring(z(T, N, O), z(T, N, d=jnp.int32), z(T), z(T, d=bool), z(T, d=bool), z(T, N, A, d=bool),
                    z(T, N, d=bool), z(T, d=bool), jnp.zeros((), jnp.int32))

    @property
    def capacity(self) -> int:
        return self.actions.shape[0]

    def add(self, seqs: dict) -> Ring:
        """Write a batch of sequences (each leaf (b, T, ...)) at the ring's cursor, overwriting the oldest."""
        b = seqs["actions"].shape[0]
        idx = (self.count + jnp.arange(b)) % self.capacity
        new = {k: getattr(self, k).at[idx].set(v.astype(getattr(self, k).dtype)) for k, v in seqs.items()}
        return self._replace(**new, count=self.count + b)

    def sample(self, key, batch_size: int) -> Batch:
        """``batch_size`` sequences uniformly from those written (as a training :class:`Batch`)."""
        filled = jnp.maximum(jnp.minimum(self.count, self.capacity), 1)
        i = jax.random.randint(key, (batch_size,), 0, filled)
        terminals = self.terminals[i]
        N = self.actions.shape[2]
        return Batch(obs=self.obs[i], actions=self.actions[i], rewards=self.rewards[i], terminals=terminals,
                     truncations=self.truncations[i], discounts=1.0 - terminals.astype(jnp.float32),
                     legals=self.legals[i], active=self.active[i], real=self.active[i], resets=self.resets[i],
                     returns=jnp.zeros_like(self.rewards[i]), task_ids=jnp.full((batch_size,), -1, jnp.int32),
                     starts=jnp.zeros((batch_size,), jnp.int32),
                     perm=jnp.broadcast_to(jnp.arange(N, dtype=jnp.int32), (batch_size, N)))


def sequences(traj) -> dict:
    """Time-major (T, B, ...) rollout transitions -> batch-major sequences for the ring."""
    bm = lambda x: jnp.swapaxes(x, 0, 1)  # noqa: E731
    obs = traj.obs
    return {"obs": bm(obs.agents_view), "actions": bm(traj.actions), "rewards": bm(traj.reward),
            "terminals": bm(traj.terminal), "truncations": bm(traj.truncated), "legals": bm(obs.action_mask),
            "active": bm(obs.active), "resets": bm(obs.step_count == 0)}


class ReplayLearner(NamedTuple):
    """What differs between replay learners (HyGen's hybrid stage, online QMIX)."""

    algo: Any                 # the registered Algorithm: its policy evaluates, its init_carry starts histories
    state0: Callable          # key -> the learner state before the first update
    act: Callable             # (params, carry, obs, mask, reset, key, epsilon) -> (actions, _, carry); one env
    update: Callable          # (state, batch, offline_share, key) -> (state, metrics)
    acting_params: Callable   # state -> the params ``act`` and the policy read
    seq_len: int              # T of every sequence (rollout and offline samples)
    batch_size: int           # B rows per update
    metrics: tuple[str, ...]  # the update's metrics to log (those it returns)
    ratio: Callable | None = None       # env steps -> offline share R (None: online rows only)
    offline: Buffers | None = None      # the offline training buffers (with ``ratio``)
    sampler: SamplerConfig | None = None


class ReplayState(NamedTuple):
    params: Any  # the learner's state
    ring: Ring
    envs: EnvBatch
    carry: Any  # every env's history tokens (leading axis num_envs)
    key: jax.Array
    update: jax.Array  # () int32 updates done
    env_steps: jax.Array  # () int32 env steps taken


def make_replay_system(env, cfg, learner: ReplayLearner) -> System:
    """The compiled replay loop of ``learner`` on ``env`` (see the module docstring); ``cfg`` holds num_envs,
    buffer_size, updates_per_rollout, the eps_* schedule and the shared chunk/recording settings."""
    from mtmarl.training.policy import make_policy

    algo, T, Bn, B = learner.algo, learner.seq_len, cfg.num_envs, learner.batch_size
    hybrid = learner.ratio is not None
    spec = env.spec
    devices = jax.local_devices()[:1]
    per_iter = Bn * T

    def acting(eps, b: int = Bn):
        def act_batch(params, ts, carry, key):
            obs = ts.observation
            act = lambda c, o, m, r, k: learner.act(params, c, o, m, r, k, eps)  # noqa: E731
            actions, _, carry = jax.vmap(act)(carry, obs.agents_view, obs.action_mask, obs.step_count == 0,
                                              jax.random.split(key, b))
            return actions, jnp.zeros(actions.shape, jnp.float32), jnp.zeros((b,)), carry

        return act_batch

    zero_value = lambda params, ts, carry: jnp.zeros(ts.reward.shape)  # noqa: E731

    def batch_carry(b):
        return jax.tree.map(lambda x: jnp.broadcast_to(x, (b,) + x.shape), algo.init_carry())

    def init_one(key, pool: ResetPool):
        ring = Ring.empty(cfg.buffer_size, T, spec.num_agents, spec.obs_dim, spec.num_actions)
        state = learner.state0(jax.random.fold_in(key, 1))
        return ReplayState(state, ring, start_from_pool(pool), batch_carry(Bn), key, jnp.int32(0), jnp.int32(0))

    def iteration(s: ReplayState, pool: ResetPool, offline: Buffers | None):
        key, k_roll, k_upd = jax.random.split(s.key, 3)
        t = s.env_steps
        eps = linear(cfg.eps_start, cfg.eps_end, cfg.eps_decay_steps, t)
        share = learner.ratio(t) if hybrid else jnp.float32(0.0)
        envs = s.envs._replace(cursor=jnp.zeros_like(s.envs.cursor))
        envs, carry, traj = carried_rollout(env, acting(eps), zero_value, learner.acting_params(s.params), envs,
                                            s.carry, pool, k_roll, T)
        ring = s.ring.add(sequences(traj))
        state, update, metrics = s.params, s.update, None
        n_off = offline_rows(share, B)
        for i in range(cfg.updates_per_rollout):
            k_off, k_on, k_step = jax.random.split(jax.random.fold_in(k_upd, i), 3)
            batch = ring.sample(k_on, B)
            if hybrid:
                batch, _ = mix_batches(sample(offline, k_off, update, learner.sampler), batch, n_off)
            state, metrics = learner.update(state, batch, share, k_step)
            update = update + 1
        done = traj.done.astype(jnp.float32)
        nan = jnp.float32(jnp.nan)
        extra = {k: metrics[k] for k in learner.metrics if k in metrics}
        extra.update(epsilon=eps, hybrid_ratio=share, offline_rows=n_off.astype(jnp.float32),
                     buffer_sequences=jnp.minimum(ring.count, ring.capacity).astype(jnp.float32),
                     win_rate=traj.success.astype(jnp.float32).sum() / jnp.maximum(done.sum(), 1.0))
        info = ppo.LossInfo(total=metrics["loss"], policy=nan, value=nan, entropy=nan, approx_kl=nan, clip_frac=nan,
                            extra=extra)
        out = UpdateMetrics(jax.lax.psum(traj.episode_return.sum(), AXIS), jax.lax.psum(done.sum(), AXIS),
                            jax.lax.psum(traj.episode_length.sum(), AXIS), info)
        return ReplayState(state, ring, envs, carry, key, update, t + per_iter), out

    def chunk(s: ReplayState, pools: ResetPool, offline):
        return jax.lax.scan(lambda c, p: iteration(c, p, offline), s, pools)

    def record_one(s: ReplayState, pool: ResetPool, key, greedy: bool):
        eps = 0.0 if greedy else cfg.eps_end
        b = pool.timestep.reward.shape[0]
        _, _, traj = carried_rollout(env, acting(eps, b), zero_value, learner.acting_params(s.params),
                                     start_from_pool(pool), batch_carry(b), pool, key, cfg.record_len)
        return traj

    pools = PoolMaker(env, Bn * cfg.resets_per_env)
    pinit = jax.pmap(init_one, devices=devices, axis_name=AXIS)
    ptrain = jax.pmap(chunk, in_axes=(0, 0, None), devices=devices, axis_name=AXIS)
    precord = jax.pmap(record_one, devices=devices, axis_name=AXIS, static_broadcasted_argnums=3)
    rec_resets = cfg.record_resets or cfg.record_len // 5 + 1

    def init(key):
        key, pool_key = jax.random.split(key)
        return pinit(key[None], pools(pool_key, (1, Bn, 1)))

    def train_chunk(state, updates: int | None = None):  # updates: as anakin's (default updates_per_chunk)
        pool_key = jax.random.fold_in(np.asarray(jax.device_get(state.key[0])), 0x5EED)
        return ptrain(state, pools(pool_key, (1, updates or cfg.updates_per_chunk, Bn, cfg.resets_per_env)),
                      learner.offline)

    def record(state, key, greedy: bool = False):
        pool_key, key = jax.random.split(key)
        return precord(state, pools(pool_key, (1, cfg.record_envs, rec_resets)), key[None], bool(greedy))

    unused = lambda *a, **k: None  # noqa: E731  (the PPO learner interface; this system has its own loop)
    shell = PPOLearner(init=unused, init_carry=batch_carry, rollout=unused, loss=unused, sequences=True,
                    actor_params=lambda params: jax.device_get(learner.acting_params(params)),  # host copies
                    policy=make_policy(algo), greedy_policy=make_policy(algo, greedy=True))
    return System(cfg, 1, init, train_chunk, record, shell.policy, per_iter, pools, shell.greedy_policy, shell)


def check_schedule(cfg) -> None:
    """One-line errors for the epsilon schedule and the loop sizes every replay config shares."""
    from mtmarl.errors import UserInputError

    for key in ("eps_start", "eps_end"):
        if not 0.0 <= getattr(cfg, key) <= 1.0:
            raise UserInputError(f"online.{key}={getattr(cfg, key)!r} must be in [0, 1]")
    for key in ("eps_decay_steps", "buffer_size", "updates_per_rollout", "num_envs"):
        if not getattr(cfg, key) >= 1:
            raise UserInputError(f"online.{key}={getattr(cfg, key)!r} must be >= 1")
    for key in ("rollout_len", "batch_size"):
        if getattr(cfg, key) is not None and not getattr(cfg, key) >= 1:
            raise UserInputError(f"online.{key}={getattr(cfg, key)!r} must be >= 1 or null")


def sizes(cfg, seq_len: int, batch_size: int) -> tuple[int, int]:
    """(T, B): the sequence length (``online.rollout_len`` must be null or equal ``seq_len``) and batch size."""
    from mtmarl.errors import UserInputError

    if cfg.rollout_len is not None and cfg.rollout_len != seq_len:
        raise UserInputError(f"online.rollout_len={cfg.rollout_len} must equal the learner's algo.seq_len={seq_len} "
                             f"(online and offline sequences share one shape); leave it null")
    return seq_len, cfg.batch_size or batch_size

