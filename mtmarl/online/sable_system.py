"""The online Sable learner of the Anakin online builder: PPO on the retention network.

Only what is Sable's lives here (the loop, pools, pmap, GAE and recording are
:mod:`mtmarl.online.anakin`'s); one Sable network is both actor and critic:

* **acting**: ``SableNet.act`` per env (``vmap``), agents decoded one after
  another in index order, each sampling from its masked logits before the next
  sees its action; the retention state is carried across steps and wiped where
  an observation starts an episode (``step_count == 0``);
* **critic**: the network's per-agent state-value head on the encoder output
  (``SableConfig.value_head``), every agent regressed on the shared team
  reward, GAE per agent (the builder broadcasts the team reward to the values);
* **training**: a *sequence* learner. ``SableNet.apply_train`` over each env's
  whole rollout segment (T*N tokens) with teacher-forced actions. The retention
  state each env had when the segment began is stored with the rollout and
  passed in as the chunkwise pass's initial state, so before the first gradient
  step the training pass reproduces the behaviour log-probabilities and values
  exactly (tested). Minibatches split the envs, never the time axis.

Bootstrapping a truncated episode needs V of the observation that really
followed (before the auto-reset): one extra encoder step per env step on that
observation, continuing the episode's encoder state.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

from mtmarl.algos.registry import register_online
from mtmarl.envs import TimeStep
from mtmarl.errors import UserInputError
from mtmarl.evaluation.policies import Policy
from mtmarl.networks.retention import Ctx
from mtmarl.networks.sable import SableConfig, SableModule, SableNet, make_sable
from mtmarl.online import ppo
from mtmarl.online.anakin import PPOLearner, build
from mtmarl.online.rollout import EnvBatch, ResetPool, Transition, step_with_pool, transition

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
    head_init: float = 0.01  # orthogonal-init scale of the policy-logit and value output layers

    SYSTEM = "sable"
    FOREIGN = ("hidden", "critic_input")

    def __post_init__(self):
        super().__post_init__()
        if self.num_envs % self.minibatches:
            raise UserInputError(f"online.num_envs={self.num_envs} is not divisible by "
                                 f"online.minibatches={self.minibatches} (Sable minibatches split the envs)")
        self.network  # validates the network fields
        if not self.head_init > 0:
            raise UserInputError(f"online.head_init={self.head_init!r}; allowed: a positive float (the "
                                 "orthogonal-init scale of the policy and value output layers)")

    @property
    def network(self) -> SableConfig:
        """Scalar Q (unused here) and a scalar per-agent value head."""
        return SableConfig(**{f: getattr(self, f) for f in NETWORK_FIELDS}, q_bins=0, value_head=True)


# --------------------------------------------------------------------------- pure pieces
OUTPUT_LAYERS = ("policy_head", "value_head")  # each an MLP whose last Dense is ``layers_2``


def init_params(net: SableNet, obs_dim: int, key, head_init: float):
    """Network params with the policy-logit and value output kernels re-drawn orthogonal(``head_init``), biases 0.

    Why: with the network's default init the logits of the untrained policy spread over about one unit,
    so the first policy favours some actions in every state, and the value head starts far from the
    returns. A small output scale (the PPO practice, also Mava's Sable heads) starts from a near-uniform
    policy and a near-zero value; sparse-reward tasks need that uniform exploration until a first reward.
    """
    init_key, *head_keys = jax.random.split(key, 1 + len(OUTPUT_LAYERS))
    params = net.init(init_key, jnp.zeros((1, 1, 1, obs_dim)))
    inner = dict(params["params"])
    for name, k in zip(OUTPUT_LAYERS, head_keys):
        last = inner[name]["layers_2"]
        out = {"kernel": jax.nn.initializers.orthogonal(head_init)(k, last["kernel"].shape, jnp.float32),
               "bias": jnp.zeros_like(last["bias"])}
        inner[name] = {**inner[name], "layers_2": out}
    return {**params, "params": inner}


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


def sable_rollout(net: SableNet, env, params, batch: EnvBatch, carry, pool: ResetPool, key, length: int,
                  greedy: bool = False) -> tuple[EnvBatch, Any, Transition]:
    """``length`` steps of every env; transitions (T, B, ...) with per-agent ``value``/``next_value`` (N,)."""

    def body(c, step_key):
        batch, carry = c
        ts = batch.timestep
        actions, logp, v, carry = act_batch(net, params, carry, ts, step_key, greedy)
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


def sable_policy(net: SableNet, greedy: bool = False) -> Policy:
    """One-episode evaluator policy over the network params (agents in index order, as in training)."""
    def act(params, obs, carry, key):
        actions, _, carry = net.act(params, carry, obs.agents_view, obs.action_mask, obs.active,
                                    obs.step_count == 0, key, greedy=greedy)
        return actions, carry
    return Policy(init_carry=lambda params, num_agents: net.init_carry(), act=act)


# --------------------------------------------------------------------------- the learner
def make_learner(env, cfg: SableOnlineConfig) -> PPOLearner:
    """Online Sable on ``env`` as a :class:`~mtmarl.online.anakin.PPOLearner` (params: the whole network)."""
    net = make_sable(cfg.network, env.num_actions)
    o = env.obs_dim

    def loss(params, tr: Transition, adv, targets, carry0):
        out = teacher_forced(net, params, tr, carry0)
        active = tr.obs.active.astype(jnp.float32)
        mean = jnp.sum(adv * active) / jnp.maximum(active.sum(), 1.0)
        std = jnp.sqrt(jnp.sum(jnp.square(adv - mean) * active) / jnp.maximum(active.sum(), 1.0))
        adv = (adv - mean) / (std + 1e-8)
        info = ppo.ppo_loss(out.logits, tr.obs.action_mask, tr.actions, tr.logp, adv, out.value, tr.value,
                            targets, cfg.clip_eps, cfg.vf_coef, cfg.ent_coef, weight=active, value_weight=active)
        return info.total, info

    return PPOLearner(init=lambda key: init_params(net, o, key, cfg.head_init), init_carry=net.init_carry,
                   rollout=functools.partial(sable_rollout, net, env), loss=loss, sequences=True,
                   actor_params=lambda params: params, policy=sable_policy(net),
                   greedy_policy=sable_policy(net, greedy=True))


@register_online("sable", SableOnlineConfig, "Sable")
def make_system(env, cfg, num_devices: int | None = None):
    """online Sable on ``env``: :func:`make_learner` in the Anakin builder."""
    return build(env, cfg, make_learner(env, cfg), num_devices)
