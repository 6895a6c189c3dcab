"""MT CQL-Sable: autoregressive conservative Q-learning on the Sable Q head.

Agent k's Q(s, a^k | a^{<k}) comes from the decoder, so it conditions on the
dataset actions of the agents before it in the batch's (shuffled) order.

* TD target for agent i at step t: r_t + gamma * (1 - terminal_t) *
  max_{a' legal} Q_target(t+1, i, a'), i.e. the same agent's greedy target Q
  on the next step of the sequence (teacher-forced on the next step's dataset
  actions of earlier agents). Steps cut by truncation have no target and are
  dropped (``common.td_valid``), as is the last step of each sequence.
* TD loss: HL-Gauss cross-entropy of Q(t, i, a_data) logits against the
  target (``hl_gauss=true``) or 0.5 * squared error (``hl_gauss=false``).
* CQL penalty: logsumexp over legal actions of scalar Q(t, i, .) minus
  Q(t, i, a_data) (>= 0), weighted by ``alpha``; on every active agent-step.

The policy is greedy (or softmax(Q / act_temperature)) over Q, decoded agent
by agent: ``q_act`` chooses each agent's action from its Q values before the
next agent is decoded (Sable's own ``act`` samples from the policy logits,
which CQL never trains).

``axis_name`` (data parallelism, see ``common``): the means run over the global
batch and the returned loss is this shard's share.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from mtmarl.algos import common
from mtmarl.algos.registry import register
from mtmarl.envs.layout import EnvSpec
from mtmarl.networks.retention import Ctx, decay_state, head_decays
from mtmarl.networks.sable import Outputs, SableConfig, SableModule, SableNet, _mask_outputs


@dataclasses.dataclass(frozen=True)
class Config(common.AlgoConfig):
    alpha: float  # CQL penalty weight
    act_temperature: float  # acting: 0 = greedy over Q, > 0 = sample softmax(Q / T)


def cql_penalty(q_scalar, legals, actions):
    """logsumexp_{a legal} Q(a) - Q(a_data), per agent-step (>= 0 when a_data is legal)."""
    lse = jax.nn.logsumexp(jnp.where(legals, q_scalar, -jnp.inf), axis=-1)
    return lse - common.take_action(q_scalar, actions)


def loss(params, target_params, batch, key, cfg: Config, net: SableNet, axis_name: str | None = None):
    del key
    ax = axis_name
    out, _, q, q_tgt = common.critic_forward(params, target_params, batch, net)  # (B, T, N, A)
    q_next = jax.lax.stop_gradient(q_tgt[:, 1:].max(-1))                    # (B, T-1, N)
    target = batch.rewards[:, :-1, None] + cfg.gamma * batch.discounts[:, :-1, None] * q_next
    target = jax.lax.stop_gradient(target)
    td = common.td_error_loss(net, out, q, batch, target)
    td_w = batch.active[:, :-1] & common.td_valid(batch)[..., None]
    td_loss = common.task_mean(td, td_w, batch.task_ids, cfg.task_mean, ax)
    pen = cql_penalty(q, batch.legals, batch.actions)
    penalty = common.task_mean(pen, batch.active, batch.task_ids, cfg.task_mean, ax)
    total = td_loss + cfg.alpha * penalty
    q_data = common.take_action(q, batch.actions)
    return total, {"td_loss": common.global_sum(td_loss, ax), "cql_penalty": common.global_sum(penalty, ax),
                   "q_data": common.masked_mean(q_data, batch.active, ax),
                   "td_target": common.masked_mean(target, td_w, ax)}


def q_act(net: SableNet, temperature: float = 0.0):
    """Recurrent acting by Q: ``(params, carry, obs, action_mask, active, reset, key, order=None,
    greedy=False) -> (actions, Outputs, carry)`` with ``net.act``'s conventions.

    Mirrors ``SableNet.act`` but picks each agent's action from its (masked,
    scalar) Q values; the chosen action is the next agent's decoder token.
    """
    cfg, n_actions, module = net.cfg, net.n_actions, net.module

    def act(params, carry, obs, action_mask, active, reset, key, order=None, greedy=False):
        N = obs.shape[0]
        order = jnp.arange(N) if order is None else jnp.asarray(order)
        obs_p, mask_p, active_p = obs[order][None], action_mask[order], active[order][None]
        reset = jnp.asarray(reset, bool).reshape(1)
        enc = jax.tree.map(lambda s: s[None], carry["enc"])
        obs_rep, value, enc = module.apply(params, obs_p, enc, Ctx("step", active_p, reset, N),
                                           method=SableModule.encode)
        dec = jax.tree.map(lambda s: decay_state(s[None], reset, head_decays(cfg.n_heads)), carry["dec"])

        def body(c, xs):
            states, prev = c
            rep, mask, act_i, k = xs
            logits, q, states = module.apply(params, prev[None, None], rep[None, None], states,
                                             Ctx("agent", act_i[None, None]), method=SableModule.decode)
            logits, q = _mask_outputs(cfg, logits[0, 0], q[0, 0], mask)
            qs = net.q_values(q, mask)
            if temperature > 0:
                sampled = jax.random.categorical(k, jnp.where(mask, qs / temperature, -jnp.inf))
                a = jnp.where(greedy, jnp.argmax(qs), sampled)
            else:
                a = jnp.argmax(qs)
            prev = jnp.where(act_i, a, prev).astype(jnp.int32)
            return (states, prev), (a.astype(jnp.int32), logits, q)

        xs = (obs_rep[0], mask_p, active_p[0], jax.random.split(key, N))
        (dec, _), (acts, logits, q) = jax.lax.scan(body, (dec, jnp.int32(n_actions)), xs)
        inv = jnp.argsort(order)
        value = None if value is None else value[0][inv]
        new_carry = jax.tree.map(lambda s: s[0], {"enc": enc, "dec": dec})
        return acts[inv], Outputs(logits[inv], q[inv], value), new_carry

    return act


@register("mt_cql_sable", Config, network=SableConfig)
def make(cfg: Config, network: dict, env: EnvSpec) -> common.SableAlgorithm:
    return common.assemble(cfg, network, env, loss, lambda net: q_act(net, cfg.act_temperature))
