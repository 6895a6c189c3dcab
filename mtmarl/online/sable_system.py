"""Anakin-style online Sable: PPO on the retention network, envs and learner in one compiled program.

The same loop as :mod:`mtmarl.online.system` (K updates per ``lax.scan``,
``pmap`` over devices, a fresh reset pool per update, GAE and the clipped PPO
loss of :mod:`mtmarl.online.ppo`), with one Sable network as both actor and
critic:

* **acting**: ``SableNet.act`` per env (``vmap``), agents decoded one after
  another in index order, each sampling from its masked logits before the next
  sees its action; the retention state is carried across steps and wiped where
  an observation starts an episode (``step_count == 0``);
* **critic**: the network's per-agent state-value head on the encoder output
  (``SableConfig.value_head``), every agent regressed on the shared team
  reward, GAE per agent;
* **training**: ``SableNet.apply_train`` over each env's whole rollout segment
  (T*N tokens) with teacher-forced actions. The retention state each env had
  when the segment began is stored with the rollout and passed in as the
  chunkwise pass's initial state, so before the first gradient step the
  training pass reproduces the behaviour log-probabilities and values exactly
  (tested). Minibatches split the envs, never the time axis.

Bootstrapping a truncated episode needs V of the observation that really
followed (before the auto-reset): one extra encoder step per env step on that
observation, continuing the episode's encoder state.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mtmarl.envs import TimeStep
from mtmarl.errors import UserInputError
from mtmarl.evaluation.policies import Policy
from mtmarl.networks.retention import Ctx
from mtmarl.networks.sable import SableConfig, SableModule, SableNet, make_sable
from mtmarl.online import ppo
from mtmarl.online.rollout import (EnvBatch, PoolMaker, ResetPool, Transition, start_from_pool, step_with_pool,
                                   transition)
from mtmarl.online.system import AXIS, UpdateMetrics, update_metrics

NETWORK_FIELDS = ("embed_dim", "n_blocks", "n_heads", "chunk_size", "ffn_mult", "matmul_dtype")


@dataclasses.dataclass(frozen=True)
class SableOnlineConfig(ppo.PPOSettings):
    """PPO settings (minibatches split the envs, so ``num_envs`` must be divisible by them) + the network."""

    system: str = "sable"
    embed_dim: int = 32
    n_blocks: int = 1
    n_heads: int = 2
    chunk_size: int = 16  # timesteps per chunk of the training pass (speed only)
    ffn_mult: float = 1.0
    matmul_dtype: str = "float32"

    SYSTEM = "sable"
    FOREIGN = ("hidden", "critic_input")

    def __post_init__(self):
        super().__post_init__()
        if self.num_envs % self.minibatches:
            raise UserInputError(f"online.num_envs={self.num_envs} is not divisible by "
                                 f"online.minibatches={self.minibatches} (Sable minibatches split the envs)")
        self.network  # validates the network fields

    @property
    def network(self) -> SableConfig:
        """Scalar Q (unused here) and a scalar per-agent value head."""
        return SableConfig(**{f: getattr(self, f) for f in NETWORK_FIELDS}, q_bins=0, value_head=True)


class TrainState(NamedTuple):
    params: Any
    opt_state: Any
    envs: EnvBatch
    carry: Any  # retention state of every env before its current timestep, leaves (B, H, dh, dh)
    key: jax.Array
    update: jax.Array


class SableSystem(NamedTuple):
    """The fields of :class:`mtmarl.online.system.System`, plus the network."""

    config: SableOnlineConfig
    num_devices: int
    init: Callable[[jax.Array], TrainState]
    train_chunk: Callable[[TrainState], tuple[TrainState, UpdateMetrics]]
    record: Callable[[TrainState, jax.Array], Transition]
    policy: Policy
    env_steps_per_update: int
    pools: PoolMaker
    greedy_policy: Policy
    net: SableNet

    def actor_params(self, state: TrainState) -> Any:
        return jax.tree.map(lambda x: x[0], state.params)


# --------------------------------------------------------------------------- pure pieces
def encoder_value(net: SableNet, params, carry, ts: TimeStep) -> jax.Array:
    """(B, N) values of ``ts``'s observations continuing each env's episode from ``carry``."""
    obs = ts.observation
    n = obs.agents_view.shape[-2]
    ctx = Ctx("step", obs.active, jnp.zeros(obs.active.shape[:1], bool), n)
    _, value, _ = net.module.apply(params, obs.agents_view, carry["enc"], ctx, method=SableModule.encode)
    return value


def act_batch(net: SableNet, params, carry, ts: TimeStep, key, greedy: bool = False):
    """Autoregressive actions for B envs: (actions, logp, values (B, N), carry after this step)."""
    obs = ts.observation
    keys = jax.random.split(key, obs.active.shape[0])
    act = lambda c, o, m, a, r, k: net.act(params, c, o, m, a, r, k, greedy=greedy)  # noqa: E731
    actions, out, carry = jax.vmap(act)(carry, obs.agents_view, obs.action_mask, obs.active,
                                        obs.step_count == 0, keys)
    return actions, ppo.log_prob(out.logits, obs.action_mask, actions), out.value, carry


def sable_rollout(net: SableNet, env, params, batch: EnvBatch, carry, pool: ResetPool, key, length: int
                  ) -> tuple[EnvBatch, Any, Transition]:
    """``length`` steps of every env; transitions (T, B, ...) with per-agent ``value``/``next_value`` (N,)."""

    def body(c, step_key):
        batch, carry = c
        ts = batch.timestep
        actions, logp, v, carry = act_batch(net, params, carry, ts, step_key)
        new, real = step_with_pool(env, batch, actions, pool)
        return (new, carry), transition(batch, real, actions, logp, v, encoder_value(net, params, carry, real))

    (batch, carry), traj = jax.lax.scan(body, (batch, carry), jax.random.split(key, length))
    return batch, carry, traj


def teacher_forced(net: SableNet, params, traj: Transition, carry0):
    """Chunkwise outputs for batch-major (B, T, ...) transitions from the stored initial carries."""
    obs = traj.obs
    out, _ = net.apply_train(params, obs.agents_view, traj.actions, obs.action_mask, obs.active,
                             obs.step_count == 0, carry0)
    return out


def batch_major(traj: Transition) -> Transition:
    return jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), traj)


def make_policy(net: SableNet, greedy: bool = False) -> Policy:
    """One-episode evaluator policy over the network params (agents in index order, as in training)."""
    def act(params, obs, carry, key):
        actions, _, carry = net.act(params, carry, obs.agents_view, obs.action_mask, obs.active,
                                    obs.step_count == 0, key, greedy=greedy)
        return actions, carry
    return Policy(init_carry=lambda params, num_agents: net.init_carry(), act=act)


# --------------------------------------------------------------------------- the system
def make_sable_system(env, cfg: SableOnlineConfig, num_devices: int | None = None) -> SableSystem:
    devices = jax.local_devices()[: num_devices or jax.local_device_count()]
    n_dev = len(devices)
    o = env.obs_dim
    net = make_sable(cfg.network, env.num_actions)
    tx = optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), optax.adam(cfg.lr, eps=1e-5))
    B, T, M = cfg.num_envs, cfg.rollout_len, cfg.minibatches
    rec_envs = -(-cfg.record_envs // n_dev)
    rec_resets = cfg.record_resets or cfg.record_len // 5 + 1

    def init_one(state_key, param_key, pool: ResetPool):
        params = net.init(param_key, jnp.zeros((1, 1, 1, o)))
        return TrainState(params, tx.init(params), start_from_pool(pool), net.init_carry(B), state_key,
                          jnp.int32(0))

    def loss_fn(params, tr: Transition, carry0, adv, targets):
        out = teacher_forced(net, params, tr, carry0)
        active = tr.obs.active.astype(jnp.float32)
        mean = jnp.sum(adv * active) / jnp.maximum(active.sum(), 1.0)
        std = jnp.sqrt(jnp.sum(jnp.square(adv - mean) * active) / jnp.maximum(active.sum(), 1.0))
        adv = (adv - mean) / (std + 1e-8)
        info = ppo.ppo_loss(out.logits, tr.obs.action_mask, tr.actions, tr.logp, adv, out.value, tr.value,
                            targets, cfg.clip_eps, cfg.vf_coef, cfg.ent_coef, weight=active, value_weight=active)
        return info.total, info

    def update(state: TrainState, pool: ResetPool):
        key, roll_key, shuffle_key = jax.random.split(state.key, 3)
        envs = state.envs._replace(cursor=jnp.zeros_like(state.envs.cursor))  # fresh pool
        carry0 = state.carry
        envs, carry, traj = sable_rollout(net, env, state.params, envs, carry0, pool, roll_key, T)
        team = lambda x: x[..., None]  # noqa: E731  (team reward and flags apply to every agent)
        adv, targets = ppo.gae(team(traj.reward), traj.value, traj.next_value, team(traj.terminal),
                               team(traj.done), cfg.gamma, cfg.gae_lambda)
        data = (batch_major(traj), carry0, jnp.swapaxes(adv, 0, 1), jnp.swapaxes(targets, 0, 1))

        (params, opt_state), infos = ppo.optimise(loss_fn, tx, state.params, state.opt_state, data, shuffle_key,
                                                  cfg.epochs, M, AXIS)
        metrics = update_metrics(traj, infos)
        return TrainState(params, opt_state, envs, carry, key, state.update + 1), metrics

    def chunk(state: TrainState, pools: ResetPool):
        return jax.lax.scan(update, state, pools)

    def record_one(state: TrainState, pool: ResetPool, key):
        envs = start_from_pool(pool)
        _, _, traj = sable_rollout(net, env, state.params, envs, net.init_carry(envs.cursor.shape[0]), pool,
                                   key, cfg.record_len)
        return traj

    pools = PoolMaker(env, B * cfg.resets_per_env)
    pinit = jax.pmap(init_one, in_axes=(0, None, 0), devices=devices, axis_name=AXIS)
    ptrain = jax.pmap(chunk, devices=devices, axis_name=AXIS)
    precord = jax.pmap(record_one, devices=devices, axis_name=AXIS)

    def init(key):
        key, param_key, pool_key = jax.random.split(key, 3)
        return pinit(jax.random.split(key, n_dev), param_key, pools(pool_key, (n_dev, B, 1)))

    def train_chunk(state):
        pool_key = jax.random.fold_in(np.asarray(jax.device_get(state.key[0])), 0x5EED)
        return ptrain(state, pools(pool_key, (n_dev, cfg.updates_per_chunk, B, cfg.resets_per_env)))

    def record(state, key):
        pool_key, key = jax.random.split(key)
        return precord(state, pools(pool_key, (n_dev, rec_envs, rec_resets)), jax.random.split(key, n_dev))

    return SableSystem(cfg, n_dev, init, train_chunk, record, make_policy(net), n_dev * B * T, pools,
                       make_policy(net, greedy=True), net)
