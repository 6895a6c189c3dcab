"""Anakin-style MAPPO: envs and learner in one compiled program per task.

One *chunk* is ``updates_per_chunk`` PPO updates under a ``lax.scan``, ``pmap``-ed
over devices (each device steps its own ``num_envs`` envs; gradients are
averaged with ``pmean``). Each update: a fresh reset pool, a ``rollout_len``-step
rollout of every env (:mod:`mtmarl.online.rollout`), GAE, then ``epochs`` passes
of ``minibatches`` shuffled minibatches of the PPO loss (:mod:`mtmarl.online.ppo`).

The actor is one MLP shared by every agent, reading only that agent's
observation (no agent id), so it applies to any agent count; the centralised
critic reads every agent's observation concatenated (``critic_input=obs``) or
the env's global state (``critic_input=state``) and predicts the team value.

``recurrent=true`` makes it the shared-parameter *recurrent* MAPPO: a
``flax.linen.GRUCell`` (``gru_hidden`` units) between the MLP torso and the
logits head, so an agent can use its observation history (partial views such
as LBF's ``fov``); parameters are still shared, the hidden state is per (env,
agent). Acting carries it across env steps and zeroes it after an episode ends
(:func:`mtmarl.online.rollout.carried_rollout`). As in online Sable, each update
stores every env's hidden state at the start of its rollout, and the loss re-runs
the GRU over the rollout's time axis from it, with the same resets
(:func:`replay_actor`), so before the first gradient step it reproduces the
behaviour log-probabilities (tested); PPO minibatches then split the envs, not
the time steps. The critic stays feed-forward. The default is feed-forward
(what the bundled data were collected with).

``record`` plays ``record_envs`` envs (split over devices) for ``record_len``
steps with the stochastic policy from fresh resets; :func:`to_experience` turns
that into og-marl's layout, keeping only completed episodes.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mtmarl.envs import Observation, TimeStep
from mtmarl.errors import UserInputError
from mtmarl.evaluation.policies import Policy
from mtmarl.online import ppo
from mtmarl.online.rollout import (EnvBatch, PoolMaker, ResetPool, Transition, carried_rollout, reset_where,
                                   start_from_pool)

AXIS = "device"


@dataclasses.dataclass(frozen=True)
class MappoConfig(ppo.PPOSettings):
    system: str = "mappo"
    hidden: tuple[int, ...] = (64, 64)
    critic_input: str = "obs"  # obs | state
    recurrent: bool = False  # GRU actor (minibatches then split the envs)
    gru_hidden: int = 64

    SYSTEM = "mappo"
    FOREIGN = ("embed_dim", "n_blocks", "n_heads", "chunk_size", "ffn_mult", "matmul_dtype")

    def __post_init__(self):
        super().__post_init__()
        if self.recurrent and self.num_envs % self.minibatches:
            raise UserInputError(f"online.num_envs={self.num_envs} is not divisible by online.minibatches="
                                 f"{self.minibatches} (recurrent MAPPO minibatches split the envs)")

    @staticmethod
    def coerce(kw: dict) -> dict:
        if "hidden" in kw:
            kw["hidden"] = tuple(int(h) for h in kw["hidden"])
        if "recurrent" in kw:
            if not isinstance(kw["recurrent"], bool):
                raise UserInputError(f"online.recurrent must be true or false, got {kw['recurrent']!r}")
        if "gru_hidden" in kw:
            kw["gru_hidden"] = int(kw["gru_hidden"])
        return kw


def torso(x: jax.Array, hidden: Sequence[int]) -> jax.Array:
    """tanh MLP layers (called inside a compact module, whose Dense_i they become)."""
    for h in hidden:
        x = nn.tanh(nn.Dense(h, kernel_init=nn.initializers.orthogonal(math.sqrt(2)))(x))
    return x


def logits_head(x: jax.Array, num_actions: int) -> jax.Array:
    return nn.Dense(num_actions, kernel_init=nn.initializers.orthogonal(0.01))(x)


class Actor(nn.Module):
    """MLP torso -> logits. Same interface as :class:`RecurrentActor`, with an empty carry ``()``
    passed through, so acting, recording and evaluation never ask which actor they hold."""

    hidden: Sequence[int]
    num_actions: int

    def initial_carry(self, lead_shape: tuple[int, ...]) -> tuple:
        return ()

    @nn.compact
    def __call__(self, carry, agents_view: jax.Array) -> tuple[Any, jax.Array]:
        return carry, logits_head(torso(agents_view, self.hidden), self.num_actions)


class RecurrentActor(nn.Module):
    """MLP torso -> GRU cell -> logits, over any leading axes: ``(h, view) -> (h', logits)``."""

    hidden: Sequence[int]
    gru_hidden: int
    num_actions: int

    def initial_carry(self, lead_shape: tuple[int, ...]) -> jax.Array:
        """The episode-start state: zeros of ``lead_shape + (gru_hidden,)``."""
        return jnp.zeros(tuple(lead_shape) + (self.gru_hidden,))

    @nn.compact
    def __call__(self, h: jax.Array, agents_view: jax.Array) -> tuple[jax.Array, jax.Array]:
        h, x = nn.GRUCell(self.gru_hidden)(h, torso(agents_view, self.hidden))
        return h, logits_head(x, self.num_actions)


def replay_actor(actor: RecurrentActor, params, h0: jax.Array, traj: Transition) -> jax.Array:
    """Logits (B, T, N, A) of batch-major transitions, the GRU re-run from ``h0`` (B, N, G).

    The same steps as acting in :func:`carried_rollout`: the state after a step that
    ended an episode is zeroed before the next step.
    """
    def body(h, x):
        view, done = x
        h, logits = actor.apply(params, h, view)
        return reset_where(done, h), logits

    time_major = lambda x: jnp.swapaxes(x, 0, 1)  # noqa: E731
    _, logits = jax.lax.scan(body, h0, (time_major(traj.obs.agents_view), time_major(traj.done)))
    return time_major(logits)


class Critic(nn.Module):
    hidden: Sequence[int]

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for h in self.hidden:
            x = nn.tanh(nn.Dense(h, kernel_init=nn.initializers.orthogonal(math.sqrt(2)))(x))
        return nn.Dense(1, kernel_init=nn.initializers.orthogonal(1.0))(x)[..., 0]


class TrainState(NamedTuple):
    params: Any  # {"actor": ..., "critic": ...}
    opt_state: Any
    envs: EnvBatch
    key: jax.Array
    update: jax.Array  # () int32 updates done
    hidden: Any = ()  # recurrent: (B, N, gru_hidden) actor state of every env before its current timestep


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
    config: MappoConfig
    num_devices: int
    init: Callable[[jax.Array], TrainState]  # -> state with a leading device axis
    train_chunk: Callable[[TrainState], tuple[TrainState, UpdateMetrics]]  # metrics (D, K)
    record: Callable[[TrainState, jax.Array], Transition]  # (D, T, B_dev, ...)
    policy: Policy  # for make_evaluator, with params = actor params
    env_steps_per_update: int
    pools: PoolMaker
    greedy_policy: Policy  # argmax over legal actions

    def actor_params(self, state: TrainState) -> Any:
        return jax.tree.map(lambda x: x[0], state.params["actor"])


def masked_sample(key: jax.Array, logits: jax.Array, mask: jax.Array) -> jax.Array:
    return jax.random.categorical(key, jnp.where(mask, logits, ppo.NEG_INF), axis=-1)


def act_batch(actor: nn.Module, value_fn: Callable, params, ts: TimeStep, carry, key):
    """Sampled actions of B envs: ``(actions, logp, value, carry')`` (a :func:`carried_rollout` act)."""
    obs = ts.observation
    carry, logits = actor.apply(params["actor"], carry, obs.agents_view)
    keys = jax.random.split(key, logits.shape[0])
    actions = jax.vmap(masked_sample)(keys, logits, obs.action_mask)
    return actions, ppo.log_prob(logits, obs.action_mask, actions), value_fn(params, ts), carry


def make_policy(actor: nn.Module, greedy: bool = False) -> Policy:
    """One-episode policy over actor params (the evaluator's interface).

    The recurrent actor's carry is the (N, gru_hidden) hidden state, zeros at the episode's start.
    """
    def act(params, obs: Observation, carry, key):
        carry, logits = actor.apply(params, carry, obs.agents_view)
        if greedy:
            return jnp.argmax(jnp.where(obs.action_mask, logits, ppo.NEG_INF), -1), carry
        return masked_sample(key, logits, obs.action_mask), carry

    return Policy(init_carry=lambda params, num_agents: actor.initial_carry((num_agents,)), act=act)


def make_system(env, cfg: MappoConfig, num_devices: int | None = None) -> System:
    devices = jax.local_devices()[: num_devices or jax.local_device_count()]
    n_dev = len(devices)
    if cfg.critic_input not in ("obs", "state"):
        raise ValueError(f"critic_input must be obs or state, got {cfg.critic_input!r}")
    if cfg.critic_input == "state" and env.state_dim == 0:
        raise ValueError(f"{env!r} has no global state; use critic_input=obs")
    n, o, a = env.num_agents, env.obs_dim, env.num_actions
    actor = RecurrentActor(cfg.hidden, cfg.gru_hidden, a) if cfg.recurrent else Actor(cfg.hidden, a)
    critic = Critic(cfg.hidden)
    critic_dim = n * o if cfg.critic_input == "obs" else env.state_dim
    tx = optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), optax.adam(cfg.lr, eps=1e-5))
    batch_size = cfg.num_envs * cfg.rollout_len
    if not cfg.recurrent and batch_size % cfg.minibatches:
        raise ValueError(f"num_envs*rollout_len={batch_size} is not divisible by minibatches={cfg.minibatches}")
    rec_envs = -(-cfg.record_envs // n_dev)
    rec_resets = cfg.record_resets or cfg.record_len // 5 + 1

    def critic_in(ts_obs: Observation, state: jax.Array) -> jax.Array:
        if cfg.critic_input == "obs":
            return ts_obs.agents_view.reshape(ts_obs.agents_view.shape[:-2] + (n * o,))
        return state

    def value_fn(params, ts: TimeStep) -> jax.Array:
        return critic.apply(params["critic"], critic_in(ts.observation, ts.state))

    act_fn = functools.partial(act_batch, actor, value_fn)

    def init_one(state_key, param_key, pool: ResetPool):
        params = {"actor": actor.init(param_key, actor.initial_carry((1,)), jnp.zeros((1, o))),
                  "critic": critic.init(jax.random.fold_in(param_key, 1), jnp.zeros((1, critic_dim)))}
        return TrainState(params, tx.init(params), start_from_pool(pool), state_key, jnp.int32(0),
                          actor.initial_carry((cfg.num_envs, n)))

    def loss_fn(params, mb: Transition, adv, targets, h0=None):
        """Feed-forward: a minibatch of (flattened) steps; recurrent: of whole env rollouts (B', T) + h0."""
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)  # per minibatch
        if cfg.recurrent:
            logits = replay_actor(actor, params["actor"], h0, mb)
        else:
            _, logits = actor.apply(params["actor"], (), mb.obs.agents_view)
        values = critic.apply(params["critic"], critic_in(mb.obs, mb.state))
        active = mb.obs.active.astype(jnp.float32)
        info = ppo.ppo_loss(logits, mb.obs.action_mask, mb.actions, mb.logp, adv[..., None], values,
                            mb.value, targets, cfg.clip_eps, cfg.vf_coef, cfg.ent_coef, weight=active)
        return info.total, info

    def update(state: TrainState, pool: ResetPool):
        key, roll_key, shuffle_key = jax.random.split(state.key, 3)
        envs = state.envs._replace(cursor=jnp.zeros_like(state.envs.cursor))  # fresh pool
        h0 = state.hidden
        envs, hidden, traj = carried_rollout(env, act_fn, value_fn, state.params, envs, h0, pool, roll_key,
                                             cfg.rollout_len)
        adv, targets = ppo.gae(traj.reward, traj.value, traj.next_value, traj.terminal, traj.done,
                               cfg.gamma, cfg.gae_lambda)
        if cfg.recurrent:  # samples = envs (time order kept), each with its stored initial state
            data = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), (traj, adv, targets)) + (h0,)
        else:
            data = jax.tree.map(lambda x: x.reshape((batch_size,) + x.shape[2:]), (traj, adv, targets))

        (params, opt_state), infos = ppo.optimise(loss_fn, tx, state.params, state.opt_state, data, shuffle_key,
                                                  cfg.epochs, cfg.minibatches, AXIS)
        metrics = update_metrics(traj, infos)
        return TrainState(params, opt_state, envs, key, state.update + 1, hidden), metrics

    def chunk(state: TrainState, pools: ResetPool):
        return jax.lax.scan(update, state, pools)

    def record_one(state: TrainState, pool: ResetPool, key):
        envs = start_from_pool(pool)
        _, _, traj = carried_rollout(env, act_fn, value_fn, state.params, envs, actor.initial_carry((rec_envs, n)), pool, key,
                                     cfg.record_len)
        return traj

    pools = PoolMaker(env, cfg.num_envs * cfg.resets_per_env)
    pinit = jax.pmap(init_one, in_axes=(0, None, 0), devices=devices, axis_name=AXIS)
    ptrain = jax.pmap(chunk, devices=devices, axis_name=AXIS)
    precord = jax.pmap(record_one, devices=devices, axis_name=AXIS)

    def init(key):
        key, param_key, pool_key = jax.random.split(key, 3)
        return pinit(jax.random.split(key, n_dev), param_key, pools(pool_key, (n_dev, cfg.num_envs, 1)))

    def train_chunk(state):
        # The chunk's reset pools come from the state's key stream (device 0's key).
        pool_key = jax.random.fold_in(np.asarray(jax.device_get(state.key[0])), 0x5EED)
        return ptrain(state, pools(pool_key, (n_dev, cfg.updates_per_chunk, cfg.num_envs, cfg.resets_per_env)))

    def record(state, key):
        pool_key, key = jax.random.split(key)
        return precord(state, pools(pool_key, (n_dev, rec_envs, rec_resets)), jax.random.split(key, n_dev))

    return System(cfg, n_dev, init, train_chunk, record, make_policy(actor),
                  n_dev * cfg.num_envs * cfg.rollout_len, pools, make_policy(actor, greedy=True))


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


def chunk_summary(metrics: UpdateMetrics) -> dict[str, float]:
    """Host-side summary of one chunk's (D, K) metrics (device 0; they are all-reduced)."""
    m = jax.tree.map(lambda x: np.asarray(x)[0], jax.device_get(metrics))
    eps = float(m.episodes.sum())
    return {"episodes": eps,
            "return": float(m.return_sum.sum() / eps) if eps else float("nan"),
            "length": float(m.length_sum.sum() / eps) if eps else float("nan"),
            "policy_loss": float(m.loss.policy.mean()), "value_loss": float(m.loss.value.mean()),
            "entropy": float(m.loss.entropy.mean()), "approx_kl": float(m.loss.approx_kl.mean())}
