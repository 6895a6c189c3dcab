"""MT Oryx: sequential (autoregressive) ICQ on Sable, as in the Oryx paper (README, References).

Agent k's policy logits and Q(s, a^k | a^{<k}) come from the decoder, teacher-
forced on the dataset actions of earlier agents in the batch's shuffled order.

Critic (ICQ in-sample target): for agent i at step t,
  y = r_t + gamma * (1 - terminal_t) * n * w * Q_target(t+1, i, a_data),
  w = softmax over the batch axis of Q_target(t+1, i, a_data) / value_temperature,
computed separately for every (t, agent-slot) position over the ``n`` valid
batch entries there (active at t and t+1, non-terminal, with a TD target), so
the weights of a position sum to 1 and ``n * w`` averages to 1. Loss:
HL-Gauss cross-entropy (``hl_gauss=true``) or 0.5 * squared error.

Policy: advantage-weighted log-likelihood of the dataset action,
  A = Q(s, a_data) - sum_a pi(a|s) Q(s, a)   (policy-weighted baseline),
  weight = n * softmax over the batch axis of A / policy_temperature,
with A and the weights held constant (no gradient into Q through the policy
loss). Total = critic_coef * critic + policy, each reduced per task then over
tasks (``common.task_mean``).

With ``axis_name`` (data parallelism, see ``common``) the softmaxes, the counts
``n`` and every mean run over the global batch, so a sharded update equals the
single-device one; the returned loss is this shard's share.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from mtmarl.algos import common
from mtmarl.algos.registry import register
from mtmarl.envs.layout import EnvSpec
from mtmarl.errors import UserInputError
from mtmarl.networks.sable import SableConfig, SableNet


@dataclasses.dataclass(frozen=True)
class Config(common.AlgoConfig):
    value_temperature: float  # ICQ critic-target softmax temperature (large = near-uniform)
    policy_temperature: float  # ICQ policy advantage softmax temperature
    critic_coef: float  # weight of the critic loss in the total
    per_task_weights: bool  # ICQ softmaxes within each task's slice of the batch (common.task_softmax)
    adv_norm: bool  # advantages divided by their per-task batch std (common.task_scale)
    td_lambda: float  # critic target: 0 = one-step ICQ target, > 0 = TD(lambda) over the sequence

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.td_lambda <= 1.0:
            raise UserInputError(f"algo.td_lambda must be in [0, 1], got {self.td_lambda}")
        for key in ("value_temperature", "policy_temperature"):
            if not getattr(self, key) > 0:
                raise UserInputError(f"algo.{key} must be > 0, got {getattr(self, key)}")


def icq_weights(x, mask, temperature: float, task_ids, per_task: bool, axis_name: str | None = None):
    """ICQ weights ``n * softmax(x / temperature)`` over the batch axis: they average 1 per position.

    ``per_task``: the softmax and the count ``n`` are taken within each task's
    samples, so the weights average 1 in every task's slice (no task can take
    the others' weight); else over the whole batch at each position.
    """
    if per_task:
        w, n = common.task_softmax(x, mask, temperature, task_ids, axis_name)
    else:
        w = common.batch_softmax(x, mask, temperature, axis=0, axis_name=axis_name)
        n = common.global_sum(mask.sum(0, keepdims=True), axis_name)
    return jax.lax.stop_gradient(n * w)


def policy_weights(q, q_data, logp, batch, cfg: Config, axis_name: str | None = None):
    """(advantage, weight) of every entry: the advantage over the policy-weighted baseline, as used."""
    baseline = jnp.sum(jnp.where(batch.legals, jnp.exp(logp) * q, 0.0), axis=-1)
    adv = jax.lax.stop_gradient(q_data - baseline)
    scaled = adv / common.task_scale(adv, batch.active, batch.task_ids, axis_name) if cfg.adv_norm else adv
    coef = icq_weights(scaled, batch.active, cfg.policy_temperature, batch.task_ids, cfg.per_task_weights, axis_name)
    return adv, coef


def loss(params, target_params, batch, key, cfg: Config, net: SableNet, axis_name: str | None = None):
    del key
    ax = axis_name
    out, _, q, qt_data = common.critic_forward(params, target_params, batch, net, target_at_data=True)
    q_data = common.take_action(q, batch.actions)                          # (B, T, N); q is (B, T, N, A)
    qt_data = jax.lax.stop_gradient(qt_data)

    # ---- critic: in-sample ICQ target from the next step
    valid = batch.active[:, :-1] & common.td_valid(batch)[..., None]       # (B, T-1, N) has a target
    boot = valid & batch.active[:, 1:] & ~batch.terminals[:, :-1, None]     # entries that bootstrap
    w_next = icq_weights(qt_data[:, 1:], boot, cfg.value_temperature, batch.task_ids, cfg.per_task_weights, ax)
    next_v = jnp.where(boot, w_next * qt_data[:, 1:], 0.0)
    if cfg.td_lambda > 0:
        target = common.lambda_returns(batch.rewards[:, :-1, None], batch.discounts[:, :-1, None], next_v, valid,
                                       cfg.gamma, cfg.td_lambda)
    else:
        target = batch.rewards[:, :-1, None] + cfg.gamma * batch.discounts[:, :-1, None] * next_v
    target = jax.lax.stop_gradient(target)
    critic = common.td_error_loss(net, out, q, batch, target)
    critic_loss = common.task_mean(critic, valid, batch.task_ids, cfg.task_mean, ax)

    # ---- policy: advantage-weighted likelihood with batch-softmax weights
    logp = common.legal_log_softmax(out.logits, batch.legals)
    adv, coef = policy_weights(q, q_data, logp, batch, cfg, ax)
    act_mask = batch.active
    logp_data = common.take_action(logp, batch.actions)
    policy_loss = common.task_mean(-coef * logp_data, act_mask, batch.task_ids, cfg.task_mean, ax)

    total = cfg.critic_coef * critic_loss + policy_loss
    return total, {"critic_loss": common.global_sum(critic_loss, ax),
                   "policy_loss": common.global_sum(policy_loss, ax),
                   "q_data": common.masked_mean(q_data, act_mask, ax),
                   "advantage": common.masked_mean(adv, act_mask, ax),
                   "td_target": common.masked_mean(target, valid, ax),
                   "policy_weight_max": common.global_max(jnp.max(jnp.where(act_mask, coef, 0.0)), ax),
                   "nll": common.masked_mean(-logp_data, act_mask, ax)}


@register("mt_oryx", Config, network=SableConfig, online="finetune")
def make(cfg: Config, network: dict, env: EnvSpec) -> common.SableAlgorithm:
    return common.assemble(cfg, network, env, loss)
