"""BC-t: behaviour cloning with the entity transformer (the HyGen paper's BC-t baseline; ODIS's agent network).

Cross-entropy of each active agent's dataset action under the entity agent's
logits (:mod:`mtmarl.networks.entity`), the history token unrolled over each
sequence and reset at episode starts; reduced per task, then over tasks, like
MT BC-Sable. Agents act independently from their own observations (parameters
shared), so the policy reads any map of a set: attack logits come from the
enemy tokens, whatever their number. Acting samples (or arg-maxes) the legal
actions and carries each agent's history token.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from mtmarl.algos import common
from mtmarl.algos.protocol import Algorithm, Stage
from mtmarl.algos.registry import register
from mtmarl.envs.layout import EnvSpec
from mtmarl.networks.entity import EntityAgent, EntityConfig, unroll


@dataclasses.dataclass(frozen=True)
class Config(common.BatchConfig):
    lr: float
    max_grad_norm: float
    task_mean: bool


@register("bc_t", Config, network=EntityConfig)
def make(cfg: Config, network: dict, env: EnvSpec) -> Algorithm:
    agent = EntityAgent(env, EntityConfig.from_dict(dict(network)))
    tx = optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), optax.adam(cfg.lr))
    width = agent.cfg.width

    def init(key, sample_obs):
        params = agent.init(key, jnp.zeros(sample_obs.shape[:-1] + (width,)), sample_obs)
        return common.TrainState(params, None, tx.init(params))

    def loss(params, target_params, batch, key, axis_name=None):
        del target_params, key
        logits = unroll(agent, params, batch.obs, batch.resets)            # (B, T, N, A)
        nll = -common.take_action(common.legal_log_softmax(logits, batch.legals), batch.actions)
        total = common.task_mean(nll, batch.active, batch.task_ids, cfg.task_mean, axis_name)
        hit = jnp.where(batch.legals, logits, common.NEG).argmax(-1) == batch.actions
        return total, {"bc_loss": common.global_sum(total, axis_name),
                       "accuracy": common.masked_mean(hit, batch.active, axis_name)}

    def act(params, carry, obs, action_mask, active, reset, key, greedy=False):
        del active
        h = jnp.where(reset, 0.0, carry)
        h, logits = agent.apply(params, h, obs)
        logits = jnp.where(action_mask, logits, common.NEG)
        actions = jnp.where(greedy, logits.argmax(-1), jax.random.categorical(key, logits))
        return actions.astype(jnp.int32), None, h

    spec = {"name": cfg.name, "n_actions": env.num_actions, "env": env.to_json(),
            "algo": dataclasses.asdict(cfg), "network": dataclasses.asdict(agent.cfg)}
    return Algorithm(name=cfg.name, cfg=cfg, sampler=cfg.sampler(), init=init,
                     stages=(Stage("train", common.gradient_stage(loss, tx, 0.0)),), act=act,
                     init_carry=lambda num_agents=None: jnp.zeros((num_agents or env.num_agents, width)), spec=spec)
