"""HyGen's hybrid high-level policy learning (the HyGen paper, section 4.2): ``online.system=hygen``.

Why: skills and a skill Q-learner pretrained offline (``python -m mtmarl.train +algo=hygen``) are
limited by the data's quality; HyGen keeps training the high-level policy on batches that mix offline
sequences with sequences the policy itself collects in a source task, moving from mostly offline
(stable start) to mostly online (beyond the data's bottleneck). The learner and its losses are the
offline algorithm's own (:func:`mtmarl.algos.hygen.make`'s ``hybrid_update``: TD through the attention
mixer with double Q and a target network, consistency KL, conservative term weighted by ``R_h``, the
decoder refined), restored with every network from ``online.init_from`` (its best checkpoint, else its
latest); targets start as copies and the Adams fresh.

The hybrid ratio (Eq. 3). The paper's flattened text reads ``max(R_end, (R_start - R_end) * t / N)``,
which would *grow* with ``t``; its prose (a linear decay from ``R_start`` to the minimum ``R_end`` over
``N`` steps) fixes the reading used here::

    R_h(t) = max(R_end, R_start - (R_start - R_end) * t / N)

with ``t`` the env steps this stage has taken (before the current iteration) and ``N`` =
``online.r_decay_steps``. Each update's batch holds ``round(R_h * B)`` offline rows (rows ``0..``)
and ``B - round(R_h * B)`` online rows: both sources are sampled at full size ``B`` and rows picked by
index, so every shape is static and one compiled program serves the whole schedule.

One chunk = ``updates_per_chunk`` iterations under ``lax.scan`` (one compiled program, ``pmap``-ed on one
device so the collectors' (device, ...) layout holds). An iteration: ``num_envs`` envs act for
``rollout_len`` steps (epsilon-greedy over skills, epsilon linear from ``eps_start`` to ``eps_end`` over
``eps_decay_steps`` env steps, then the decoder's legal arg-max action; history tokens carried across
iterations), the ``num_envs`` sequences go into a fixed-shape ring buffer of ``buffer_size`` sequences,
then ``updates_per_rollout`` hybrid updates. Sequences are ``rollout_len`` = the offline run's
``algo.seq_len`` steps long (so online and offline rows share one shape); like offline samples they may
start mid-episode and cross episode ends (``resets``).

Scope: one source task per run (the collector's task; its env padded to the offline run's layout like
``finetune``); the offline rows come from all the offline run's training tasks (the multi-task
dataset D, with the engine's task-balanced sampler); online rows carry task id -1. Single device.
Learning rates and loss weights are the offline run's ``algo`` config. Logged per chunk (means over
its iterations): ``hybrid_ratio``, ``offline_rows``, ``epsilon``, ``buffer_sequences``, ``win_rate`` (wins
over episodes ended in an iteration; 0 if none ended), the losses. PPO-only settings of the shared
base config (epochs, minibatches, clip_eps, ...) are unused; the logged PPO columns are null.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mtmarl.data.batching import Batch, Buffers, sample
from mtmarl.errors import UserInputError
from mtmarl.online import ppo
from mtmarl.online.anakin import AXIS, Learner, System, UpdateMetrics
from mtmarl.online.rollout import EnvBatch, PoolMaker, ResetPool, carried_rollout, start_from_pool

LABEL = "HyGen (hybrid skill Q-learning)"


@dataclasses.dataclass(frozen=True)
class HyGenOnlineConfig(ppo.PPOSettings):
    """The hybrid stage's settings; the base's num_envs, updates_per_chunk, record_*, tt_threshold apply."""

    system: str = "hygen"
    init_from: str = ""  # the offline algo=hygen run directory (python -m mtmarl.train)
    init_seed: int | None = None  # which seed of a population run (training.population > 1) to continue
    rollout_len: int | None = None  # None: the offline run's algo.seq_len (must equal it)
    r_start: float = 1.0  # R_h at t = 0 (Table 6)
    r_end: float = 0.1  # R_h from t = r_decay_steps on (Table 6)
    r_decay_steps: int = 5000  # N of Eq. 3, in env steps (Table 6: 5000 linear decay steps)
    eps_start: float = 1.0  # epsilon over skills (HyGen's code: 1 -> 0.05 over 20000 steps)
    eps_end: float = 0.05
    eps_decay_steps: int = 20000
    buffer_size: int = 2000  # online ring buffer capacity, in sequences (HyGen's code: 2000)
    updates_per_rollout: int = 1  # hybrid updates per iteration
    batch_size: int | None = None  # B; None: the offline run's algo.batch_size

    SYSTEM = "hygen"
    FOREIGN = ("kl_coef", "hidden", "critic_input", "embed_dim")

    def __post_init__(self):
        super().__post_init__()
        if not str(self.init_from).strip():
            raise UserInputError(
                "online.init_from is not set: give the offline algo=hygen run directory "
                "(online.init_from=<dir written by python -m mtmarl.train +algo=hygen>)"
            )
        for key in ("r_start", "r_end", "eps_start", "eps_end"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise UserInputError(f"online.{key}={getattr(self, key)!r} must be in [0, 1]")
        if self.r_end > self.r_start:
            raise UserInputError(
                f"online.r_end={self.r_end!r} > online.r_start={self.r_start!r}: the hybrid "
                f"ratio decays, so r_end must be <= r_start"
            )
        for key in ("r_decay_steps", "eps_decay_steps", "buffer_size", "updates_per_rollout", "num_envs"):
            if not getattr(self, key) >= 1:
                raise UserInputError(f"online.{key}={getattr(self, key)!r} must be >= 1")
        for key in ("rollout_len", "batch_size"):
            if getattr(self, key) is not None and not getattr(self, key) >= 1:
                raise UserInputError(f"online.{key}={getattr(self, key)!r} must be >= 1 or null")

    @staticmethod
    def coerce(kw: dict) -> dict:
        if kw.get("init_from") is not None:
            kw["init_from"] = str(kw["init_from"])
        return kw


# --------------------------------------------------------------------------- schedules and batches
def hybrid_ratio(cfg: HyGenOnlineConfig, t):
    """Eq. 3 as read in the module docstring: R_start at t = 0, linear to R_end at t = N, R_end after."""
    return jnp.maximum(cfg.r_end, cfg.r_start - (cfg.r_start - cfg.r_end) * jnp.asarray(t, jnp.float32) / cfg.r_decay_steps)


def epsilon(cfg: HyGenOnlineConfig, t):
    """Linear epsilon over skills from eps_start at t = 0 to eps_end at t = eps_decay_steps."""
    frac = jnp.minimum(jnp.asarray(t, jnp.float32) / cfg.eps_decay_steps, 1.0)
    return cfg.eps_start + (cfg.eps_end - cfg.eps_start) * frac


def offline_rows(r_h, batch_size: int):
    """round(R_h * B): how many rows of a batch of ``batch_size`` come from the offline data."""
    return jnp.round(r_h * batch_size).astype(jnp.int32)


def mix_batches(offline: Batch, online: Batch, n_offline) -> tuple[Batch, jax.Array]:
    """Rows ``i < n_offline`` from ``offline``, the rest from ``online`` (same shapes; static);
    also returns the (B,) bool mask of offline rows."""
    from_offline = jnp.arange(offline.task_ids.shape[0]) < n_offline

    def pick(a, b):
        return jnp.where(from_offline.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)

    return jax.tree.map(pick, offline, online), from_offline


# --------------------------------------------------------------------------- the online ring buffer
class Ring(NamedTuple):
    """A fixed-shape ring of ``C`` sequences of ``T`` steps (the online replay buffer R)."""

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
        return Ring(
            z(T, N, O),
            z(T, N, d=jnp.int32),
            z(T),
            z(T, d=bool),
            z(T, d=bool),
            z(T, N, A, d=bool),
            z(T, N, d=bool),
            z(T, d=bool),
            jnp.zeros((), jnp.int32),
        )

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
        return Batch(
            obs=self.obs[i],
            actions=self.actions[i],
            rewards=self.rewards[i],
            terminals=terminals,
            truncations=self.truncations[i],
            discounts=1.0 - terminals.astype(jnp.float32),
            legals=self.legals[i],
            active=self.active[i],
            real=self.active[i],
            resets=self.resets[i],
            returns=jnp.zeros_like(self.rewards[i]),
            task_ids=jnp.full((batch_size,), -1, jnp.int32),
            starts=jnp.zeros((batch_size,), jnp.int32),
            perm=jnp.broadcast_to(jnp.arange(N, dtype=jnp.int32), (batch_size, N)),
        )


def sequences(traj) -> dict:
    """Time-major (T, B, ...) rollout transitions -> batch-major sequences for the ring."""
    bm = lambda x: jnp.swapaxes(x, 0, 1)  # noqa: E731
    obs = traj.obs
    return {
        "obs": bm(obs.agents_view),
        "actions": bm(traj.actions),
        "rewards": bm(traj.reward),
        "terminals": bm(traj.terminal),
        "truncations": bm(traj.truncated),
        "legals": bm(obs.action_mask),
        "active": bm(obs.active),
        "resets": bm(obs.step_count == 0),
    }


# --------------------------------------------------------------------------- the offline run
@functools.lru_cache(maxsize=2)
def _restore(run_dir: str, seed: int | None):
    from mtmarl.algos.hygen import HyGenAlgorithm
    from mtmarl.training.data import build_buffers, load_task_data, run_quality
    from mtmarl.training.restore import load_run, run_task_set

    path = Path(run_dir).expanduser()
    if not path.is_dir():
        raise UserInputError(
            f"online.init_from={run_dir!r}: no such directory (give an offline run directory "
            f"written by python -m mtmarl.train +algo=hygen)"
        )
    try:
        algo, params, run_cfg, _ = load_run(path, seed=seed)
    except UserInputError as e:
        raise UserInputError(f"online.init_from={run_dir!r}: {str(e).splitlines()[0]}") from None
    if not isinstance(algo, HyGenAlgorithm):
        raise UserInputError(
            f"online.init_from={run_dir!r} holds a {algo.name!r} run; online.system=hygen continues an algo=hygen run only"
        )
    data = run_cfg.get("data") or {}
    task_set = run_task_set(run_cfg)
    tasks = load_task_data(
        task_set,
        data.get("root", "vault_data"),
        run_quality(data),
        bool(data.get("verify", True)),
        float(data.get("fraction", 1.0)),
    )
    buffers = build_buffers(task_set, tasks, algo.cfg.seq_len, agents="set")  # mixed with the set-padded env's steps
    return algo, jax.device_get(params), buffers


def pretrained(cfg: HyGenOnlineConfig):
    """(offline HyGen algorithm, all its trained params, the offline run's training buffers)."""
    return _restore(str(cfg.init_from), cfg.init_seed)


def task_env(env, cfg: HyGenOnlineConfig):
    """``env`` seen with the offline run's padded EnvSpec (what its networks read)."""
    from mtmarl.envs import EnvSpec, PaddedEnv

    algo, _, _ = pretrained(cfg)
    target = EnvSpec.from_json(algo.spec["env"])
    return env if env.spec == target else PaddedEnv(env, target)


# --------------------------------------------------------------------------- the compiled system
class HybridState(NamedTuple):
    params: Any  # the learner (mtmarl.algos.hygen.HyGenState)
    ring: Ring
    envs: EnvBatch
    carry: Any  # every env's (Q agent, decoder) history tokens (leading axis num_envs)
    key: jax.Array
    update: jax.Array  # () int32 hybrid updates done
    env_steps: jax.Array  # () int32 env steps taken by this stage


def make_system(env, cfg: HyGenOnlineConfig, num_devices: int | None = None) -> System:
    """The compiled hybrid stage on ``env`` (already :func:`task_env`-padded); see the module docstring."""
    from mtmarl.training.policy import make_policy

    del num_devices  # one device (see the module docstring)
    algo, params0, buffers = pretrained(cfg)
    T, Bn = algo.cfg.seq_len, cfg.num_envs
    if cfg.rollout_len is not None and cfg.rollout_len != T:
        raise UserInputError(
            f"online.rollout_len={cfg.rollout_len} must equal the offline run's algo.seq_len={T} "
            f"(online and offline sequences share one shape); leave it null"
        )
    B = cfg.batch_size or algo.cfg.batch_size
    sampler = dataclasses.replace(algo.sampler, batch_size=B)
    spec = env.spec
    devices = jax.local_devices()[:1]
    per_iter = Bn * T

    def acting(eps, b: int = Bn):
        """The rollout's ``act`` for ``b`` envs: epsilon-greedy skills, then the decoder's legal arg-max."""

        def act_batch(params, ts, carry, key):
            obs = ts.observation
            act = lambda c, o, m, r, k: algo.act_skills(params, c, o, m, r, k, eps)  # noqa: E731
            actions, _, carry = jax.vmap(act)(
                carry, obs.agents_view, obs.action_mask, obs.step_count == 0, jax.random.split(key, b)
            )
            return actions, jnp.zeros(actions.shape, jnp.float32), jnp.zeros((b,)), carry

        return act_batch

    zero_value = lambda params, ts: jnp.zeros(ts.reward.shape)  # noqa: E731

    def batch_carry(b):
        return jax.tree.map(lambda x: jnp.broadcast_to(x, (b,) + x.shape), algo.init_carry())

    def init_one(key, pool: ResetPool):
        state = algo.state_from_params(params0)
        ring = Ring.empty(cfg.buffer_size, T, spec.num_agents, spec.obs_dim, spec.num_actions)
        return HybridState(state, ring, start_from_pool(pool), batch_carry(Bn), key, jnp.int32(0), jnp.int32(0))

    def iteration(s: HybridState, pool: ResetPool, offline: Buffers):
        key, k_roll, k_upd = jax.random.split(s.key, 3)
        t = s.env_steps
        eps, r_h = epsilon(cfg, t), hybrid_ratio(cfg, t)
        acting_params = algo.acting_params(s.params)
        envs = s.envs._replace(cursor=jnp.zeros_like(s.envs.cursor))
        envs, carry, traj = carried_rollout(env, acting(eps), zero_value, acting_params, envs, s.carry, pool, k_roll, T)
        ring = s.ring.add(sequences(traj))
        state, update, metrics = s.params, s.update, None
        n_off = offline_rows(r_h, B)
        for i in range(cfg.updates_per_rollout):
            k_off, k_on, k_step = jax.random.split(jax.random.fold_in(k_upd, i), 3)
            batch, _ = mix_batches(sample(offline, k_off, update, sampler), ring.sample(k_on, B), n_off)
            state, metrics = algo.hybrid_update(state, batch, r_h, k_step)
            update = update + 1
        done = traj.done.astype(jnp.float32)
        nan = jnp.float32(jnp.nan)
        extra = {k: metrics[k] for k in ("td_loss", "cql_loss", "consistency_loss", "q_tot", "label_agreement")}
        extra.update({k: metrics[k] for k in ("decoder_loss",) if k in metrics})
        extra.update(
            hybrid_ratio=r_h,
            offline_rows=n_off.astype(jnp.float32),
            epsilon=eps,
            buffer_sequences=jnp.minimum(ring.count, ring.capacity).astype(jnp.float32),
            win_rate=traj.success.astype(jnp.float32).sum() / jnp.maximum(done.sum(), 1.0),  # this iteration's
        )
        info = ppo.LossInfo(total=metrics["loss"], policy=nan, value=nan, entropy=nan, approx_kl=nan, clip_frac=nan, extra=extra)
        out = UpdateMetrics(
            jax.lax.psum(traj.episode_return.sum(), AXIS),
            jax.lax.psum(done.sum(), AXIS),
            jax.lax.psum(traj.episode_length.sum(), AXIS),
            info,
        )
        return HybridState(state, ring, envs, carry, key, update, t + per_iter), out

    def chunk(s: HybridState, pools: ResetPool, offline: Buffers):
        return jax.lax.scan(lambda c, p: iteration(c, p, offline), s, pools)

    def record_one(s: HybridState, pool: ResetPool, key, greedy: bool):
        eps = 0.0 if greedy else cfg.eps_end
        b = pool.timestep.reward.shape[0]
        _, _, traj = carried_rollout(
            env,
            acting(eps, b),
            zero_value,
            algo.acting_params(s.params),
            start_from_pool(pool),
            batch_carry(b),
            pool,
            key,
            cfg.record_len,
        )
        return traj

    pools = PoolMaker(env, Bn * cfg.resets_per_env)
    pinit = jax.pmap(init_one, devices=devices, axis_name=AXIS)
    ptrain = jax.pmap(chunk, in_axes=(0, 0, None), devices=devices, axis_name=AXIS)
    precord = jax.pmap(record_one, devices=devices, axis_name=AXIS, static_broadcasted_argnums=3)
    rec_resets = cfg.record_resets or cfg.record_len // 5 + 1

    def init(key):
        key, pool_key = jax.random.split(key)
        return pinit(key[None], pools(pool_key, (1, Bn, 1)))

    def train_chunk(state):
        pool_key = jax.random.fold_in(np.asarray(jax.device_get(state.key[0])), 0x5EED)
        return ptrain(state, pools(pool_key, (1, cfg.updates_per_chunk, Bn, cfg.resets_per_env)), buffers)

    def record(state, key, greedy: bool = False):
        pool_key, key = jax.random.split(key)
        return precord(state, pools(pool_key, (1, cfg.record_envs, rec_resets)), key[None], bool(greedy))

    unused = lambda *a, **k: None  # noqa: E731  (the PPO learner interface; this system has its own loop)
    learner = Learner(
        init=unused,
        init_carry=batch_carry,
        rollout=unused,
        loss=unused,
        sequences=True,
        actor_params=lambda params: jax.device_get(algo.acting_params(params)),  # host copies: any evaluator's devices
        policy=make_policy(algo),
        greedy_policy=make_policy(algo, greedy=True),
    )
    return System(cfg, 1, init, train_chunk, record, learner.policy, per_iter, pools, learner.greedy_policy, learner)


CONFIG = HyGenOnlineConfig
