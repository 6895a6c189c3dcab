"""The one Anakin online builder: envs and a PPO learner in one compiled program per task.

Every online learner (MAPPO feed-forward or recurrent, online Sable, later the
online phases of HyGen / M3) shares the same loop, so it lives here once and a
learner only supplies its network-specific pure functions as a :class:`PPOLearner`
(like an optax ``GradientTransformation``: a tuple of functions, no state). The
builder never asks which learner it holds.

One *chunk* is ``updates_per_chunk`` PPO updates under a ``lax.scan``, ``pmap``-ed
over devices (each device steps its own ``num_envs`` envs; gradients are averaged
with ``pmean`` in :func:`mtmarl.online.ppo.optimise`). Each update: a fresh reset
pool (made outside the program by :class:`~mtmarl.online.rollout.PoolMaker` from the
state's key stream), a ``rollout_len``-step rollout of every env from the carried
recurrent state, GAE (team reward and flags broadcast to the value's shape: a team
value (T, B) or per-agent values (T, B, N)), then ``epochs`` passes of
``minibatches`` shuffled minibatches of the learner's loss. A *sequence* learner
(recurrent) trains on whole env rollouts with the carry each env had when its
rollout began, so minibatches split the envs; a step learner trains on single
steps.

``record`` plays ``record_envs`` envs (split over devices) for ``record_len`` steps
with the stochastic policy from fresh resets; :func:`to_experience` turns that into
og-marl's layout, keeping only completed episodes.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mtmarl.evaluation.policies import Policy
from mtmarl.online import ppo
from mtmarl.online.rollout import EnvBatch, PoolMaker, ResetPool, Transition, start_from_pool
from mtmarl.training.engine import AXIS



class PPOLearner(NamedTuple):
    """What a learner plugs into :func:`build`: pure functions, traced inside ``pmap`` (keys are passed in).

    ``init(key) -> params``; ``init_carry(B)`` the per-env recurrent state at an episode
    start (``()`` for none); ``rollout(params, envs, carry, pool, key, length, greedy=False) ->
    (envs, carry, transitions (T, B, ...))`` acts (samples, or argmax if ``greedy``) and steps
    every env, carrying the state;
    ``loss(params, traj, adv, targets, carry0) -> (total, ppo.LossInfo)`` on a minibatch
    (``carry0`` is the rollout-start carry of sequence samples, ``()`` for step samples);
    ``sequences``: samples are whole env rollouts (B, T, ...), else single steps (B*T, ...);
    ``actor_params(params)`` is what ``policy`` / ``greedy_policy`` (the evaluator's
    interface: sampled and argmax actions) read; ``samples(traj, adv, targets, carry0)``, when given,
    replaces :func:`samples` (e.g. :func:`agent_samples`: one sample per (env, agent)).
    """

    init: Callable[[jax.Array], Any]
    init_carry: Callable[[int], Any]
    rollout: Callable[..., tuple[EnvBatch, Any, Transition]]
    loss: Callable[..., tuple[jax.Array, ppo.LossInfo]]
    sequences: bool
    actor_params: Callable[[Any], Any]
    policy: Policy
    greedy_policy: Policy
    samples: Callable[..., tuple] | None = None


class PPOState(NamedTuple):
    params: Any
    opt_state: Any
    envs: EnvBatch
    carry: Any  # every env's recurrent state before its current timestep (leading axis B); () if none
    key: jax.Array
    update: jax.Array  # () int32 updates done


class UpdateMetrics(NamedTuple):
    return_sum: jax.Array  # sum of returns of episodes finished during the update's rollout
    episodes: jax.Array  # how many finished
    length_sum: jax.Array
    loss: ppo.LossInfo


def update_metrics(traj: Transition, infos: ppo.LossInfo) -> UpdateMetrics:
    """Episode sums over all devices and loss means of one update (inside pmap over ``AXIS``)."""
    done = traj.done.astype(jnp.float32)
    return UpdateMetrics(jax.lax.psum(traj.episode_return.sum(), AXIS), jax.lax.psum(done.sum(), AXIS),
                         jax.lax.psum(traj.episode_length.sum(), AXIS),
                         jax.tree.map(lambda x: jax.lax.pmean(x.mean(), AXIS), infos))


class System(NamedTuple):
    """A built learner, what the collectors use; every array of a state has a leading device axis."""

    config: ppo.PPOSettings
    num_devices: int
    init: Callable[[jax.Array], PPOState]
    train_chunk: Callable[..., tuple[PPOState, UpdateMetrics]]  # (state, updates=K) -> metrics (D, updates)
    record: Callable[[PPOState, jax.Array], Transition]  # (D, T, B_dev, ...)
    policy: Policy  # for make_evaluator, with params = actor_params(state)
    env_steps_per_update: int
    pools: PoolMaker
    greedy_policy: Policy  # argmax over legal actions
    learner: PPOLearner

    def actor_params(self, state: PPOState) -> Any:
        return jax.tree.map(lambda x: x[0], self.learner.actor_params(state.params))


def advantages(cfg: ppo.PPOSettings, traj: Transition) -> tuple[jax.Array, jax.Array]:
    """GAE of time-major transitions; the team reward and flags apply to every value entry."""
    team = lambda x: x.reshape(x.shape + (1,) * (traj.value.ndim - x.ndim))  # noqa: E731
    return ppo.gae(team(traj.reward), traj.value, traj.next_value, team(traj.terminal), team(traj.done),
                   cfg.gamma, cfg.gae_lambda)


def samples(sequences: bool, traj: Transition, adv, targets, carry0) -> tuple:
    """PPO samples (leading axis = samples): whole env rollouts with their start carry, or single steps."""
    if sequences:
        return jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), (traj, adv, targets)) + (carry0,)
    flat = lambda x: x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:])  # noqa: E731
    return jax.tree.map(flat, (traj, adv, targets)) + ((),)


# Transition fields with an agent axis (the rest are per env); ``state`` may hold per-agent inputs (below).
AGENT_FIELDS = ("actions", "logp", "value", "next_value")
OBS_AGENT_FIELDS = ("agents_view", "action_mask", "active")


def agent_samples(data: tuple, num_agents: int, sequences: bool, agent_state: bool) -> tuple:
    """:func:`samples` output -> one sample per (env, agent): JaxMARL's SMAX MAPPO draws its minibatches from
    every (env, agent) sequence, not from whole envs.

    An agent's leaf (S, [T,] N, ...) becomes (S*N, [T,] 1, ...), sample ``s*N + i`` being agent ``i`` of sample
    ``s``; a per-env leaf (S, ...) is repeated N times to match; the start carry (S, N, ...) of a sequence
    learner becomes (S*N, 1, ...). Per-agent values are required (adv and targets are split like them);
    ``agent_state``: ``traj.state`` holds per-agent inputs (S, [T,] N, ...) too (a critic's input with the
    agent's id), else it is the env's state."""
    traj, adv, targets, carry0 = data
    axis = 2 if sequences else 1  # the agent axis of a transition leaf

    def agent(x):
        x = jnp.moveaxis(x, axis, 1)  # (S, N, [T,] ...)
        x = x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:])
        return jnp.expand_dims(x, axis)

    env = lambda x: jnp.repeat(x, num_agents, axis=0)  # noqa: E731
    obs = traj.obs.replace(**{f: agent(getattr(traj.obs, f)) for f in OBS_AGENT_FIELDS},
                           step_count=env(traj.obs.step_count))
    per_agent = {f: agent(getattr(traj, f)) for f in AGENT_FIELDS}
    rest = {f: jax.tree.map(env, getattr(traj, f)) for f in traj._fields
            if f not in AGENT_FIELDS + ("obs", "state")}
    traj = traj._replace(obs=obs, state=agent(traj.state) if agent_state else env(traj.state), **per_agent, **rest)
    carry0 = jax.tree.map(lambda h: h.reshape((h.shape[0] * h.shape[1], 1) + h.shape[2:]), carry0)
    return traj, agent(adv), agent(targets), carry0


def build(env, cfg: ppo.PPOSettings, learner: PPOLearner, num_devices: int | None = None) -> System:
    """The compiled system of ``learner`` on ``env`` with the PPO settings ``cfg``."""
    devices = jax.local_devices()[: num_devices or jax.local_device_count()]
    n_dev = len(devices)
    B, T = cfg.num_envs, cfg.rollout_len
    if not learner.sequences and (B * T) % cfg.minibatches:
        raise ValueError(f"num_envs*rollout_len={B * T} is not divisible by minibatches={cfg.minibatches}")
    tx = cfg.optimiser()
    rec_envs = -(-cfg.record_envs // n_dev)
    rec_resets = cfg.record_resets or cfg.record_len // 5 + 1

    def init_one(state_key, param_key, pool: ResetPool):
        params = learner.init(param_key)
        return PPOState(params, tx.init(params), start_from_pool(pool), learner.init_carry(B), state_key,
                          jnp.int32(0))

    def update(state: PPOState, pool: ResetPool):
        key, roll_key, shuffle_key = jax.random.split(state.key, 3)
        envs = state.envs._replace(cursor=jnp.zeros_like(state.envs.cursor))  # fresh pool
        carry0 = state.carry
        envs, carry, traj = learner.rollout(state.params, envs, carry0, pool, roll_key, T)
        adv, targets = advantages(cfg, traj)
        data = (learner.samples or functools.partial(samples, learner.sequences))(traj, adv, targets, carry0)
        (params, opt_state), infos = ppo.optimise(learner.loss, tx, state.params, state.opt_state, data,
                                                  shuffle_key, cfg.epochs, cfg.minibatches, AXIS)
        # An env whose episodes end more often than its pool row holds starts wraps around the row and replays its
        # start states (with their env keys): fewer distinct episodes per update. Reported as a share of episodes.
        replayed = jax.lax.psum(jnp.maximum(envs.cursor - pool.timestep.reward.shape[1], 0).sum(), AXIS)
        share = replayed / jnp.maximum(jax.lax.psum(traj.done.sum(), AXIS), 1)
        infos = infos._replace(extra={**infos.extra, "replayed_starts": share.astype(jnp.float32)})
        return PPOState(params, opt_state, envs, carry, key, state.update + 1), update_metrics(traj, infos)

    def chunk(state: PPOState, pools: ResetPool):
        return jax.lax.scan(update, state, pools)

    def record_one(state: PPOState, pool: ResetPool, key, greedy: bool):
        _, _, traj = learner.rollout(state.params, start_from_pool(pool), learner.init_carry(rec_envs), pool, key,
                                     cfg.record_len, greedy=greedy)
        return traj

    pools = PoolMaker(env, B * cfg.resets_per_env)
    pinit = jax.pmap(init_one, in_axes=(0, None, 0), devices=devices, axis_name=AXIS)
    ptrain = jax.pmap(chunk, devices=devices, axis_name=AXIS)
    precord = jax.pmap(record_one, devices=devices, axis_name=AXIS, static_broadcasted_argnums=3)

    def init(key):
        key, param_key, pool_key = jax.random.split(key, 3)
        return pinit(jax.random.split(key, n_dev), param_key, pools(pool_key, (n_dev, B, 1)))

    def train_chunk(state, updates: int | None = None):
        # The chunk's reset pools come from the state's key stream (device 0's key). ``updates`` (default
        # ``updates_per_chunk``) sets the scan's length: a shorter last chunk ends a budget on a whole update.
        pool_key = jax.random.fold_in(np.asarray(jax.device_get(state.key[0])), 0x5EED)
        return ptrain(state, pools(pool_key, (n_dev, updates or cfg.updates_per_chunk, B, cfg.resets_per_env)))

    def record(state, key, greedy: bool = False):
        pool_key, key = jax.random.split(key)
        return precord(state, pools(pool_key, (n_dev, rec_envs, rec_resets)), jax.random.split(key, n_dev),
                       bool(greedy))

    return System(cfg, n_dev, init, train_chunk, record, learner.policy, n_dev * B * T, pools,
                  learner.greedy_policy, learner)


def to_experience(traj: Transition) -> dict[str, Any]:
    """Recorded (D, T, B, ...) transitions -> og-marl experience (1, L, ...) of completed episodes.

    Each env is one stream starting at a fresh reset; steps after its last
    episode end are dropped, and the streams are concatenated along time.
    """
    traj = jax.device_get(traj)
    streams = lambda x: np.swapaxes(np.asarray(x), 1, 2).reshape((x.shape[0] * x.shape[2], x.shape[1]) + x.shape[3:])
    tr = jax.tree.map(streams, traj)  # (D*B, T, ...)
    done = tr.terminal | tr.truncated
    pieces = []
    for i in range(done.shape[0]):
        ends = np.flatnonzero(done[i])
        if ends.size:
            pieces.append((i, ends[-1] + 1))
    n = tr.actions.shape[-1]

    def cat(x):
        if not pieces:
            return np.zeros((0,) + x.shape[2:], x.dtype)
        return np.concatenate([x[i, :stop] for i, stop in pieces])

    team = lambda x: np.repeat(cat(x)[:, None], n, axis=1)
    exp = {
        "observations": cat(tr.obs.agents_view).astype(np.float32),
        "actions": cat(tr.actions).astype(np.int32),
        "rewards": team(tr.reward).astype(np.float32),
        "terminals": team(tr.terminal).astype(np.float32),
        "truncations": team(tr.truncated).astype(np.float32),
        "infos": {"legals": cat(tr.obs.action_mask).astype(bool),
                  "state": cat(tr.state).astype(np.float32)},
    }
    return jax.tree.map(lambda x: x[None], exp)


def recorded_wins(traj: Transition) -> tuple[int, int]:
    """(episodes, wins) of the completed episodes :func:`to_experience` keeps from the same recording
    (every episode that ended inside it): the data card's win rate of a dataset."""
    traj = jax.device_get(traj)
    done = np.asarray(traj.terminal | traj.truncated)
    return int(done.sum()), int(np.asarray(traj.success).sum())


def chunk_summary(metrics: UpdateMetrics) -> dict[str, float]:
    """Host-side summary of one chunk's (D, K) metrics (device 0; they are all-reduced)."""
    m = jax.tree.map(lambda x: np.asarray(x)[0], jax.device_get(metrics))
    eps = float(m.episodes.sum())
    return {"episodes": eps,
            "return": float(m.return_sum.sum() / eps) if eps else float("nan"),
            "length": float(m.length_sum.sum() / eps) if eps else float("nan"),
            "policy_loss": float(m.loss.policy.mean()), "value_loss": float(m.loss.value.mean()),
            "entropy": float(m.loss.entropy.mean()), "approx_kl": float(m.loss.approx_kl.mean()),
            **{k: float(np.mean(v)) for k, v in m.loss.extra.items()}}  # a learner's own diagnostics
