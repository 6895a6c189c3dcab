"""MT BC-Sable: autoregressive behaviour cloning with the Sable policy head.

Loss: cross-entropy of each active agent's dataset action under its
teacher-forced logits (agent k conditions on the dataset actions of the
agents before it in the batch's shuffled order), reduced per task and then
over tasks (``common.task_mean``). No critic and no target network.
With ``axis_name`` (data parallelism, see ``common``) the means run over the
global batch and the returned loss is this shard's share.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from mtmarl.algos import common
from mtmarl.algos.registry import register
from mtmarl.envs.layout import EnvSpec
from mtmarl.networks.sable import SableConfig, SableNet


@dataclasses.dataclass(frozen=True)
class Config(common.AlgoConfig):
    learns_values: ClassVar[bool] = False


def loss(params, target_params, batch, key, cfg: Config, net: SableNet, axis_name: str | None = None):
    del target_params, key
    out, _ = net.apply_train(params, batch.obs, batch.actions, batch.legals, batch.active, batch.resets)
    logp = common.legal_log_softmax(out.logits, batch.legals)          # (B, T, N, A)
    nll = -common.take_action(logp, batch.actions)                      # (B, T, N)
    total = common.task_mean(nll, batch.active, batch.task_ids, cfg.task_mean, axis_name)
    greedy = (out.logits.argmax(-1) == batch.actions)
    return total, {"bc_loss": common.global_sum(total, axis_name),
                   "accuracy": common.masked_mean(greedy, batch.active, axis_name)}


@register("mt_bc_sable", Config, network=SableConfig, online="finetune")
def make(cfg: Config, network: dict, env: EnvSpec) -> common.SableAlgorithm:
    return common.assemble(cfg, network, env, loss)
