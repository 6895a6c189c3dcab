"""BC-r: behaviour cloning conditioned on the return-to-go (the HyGen paper's BC-r baseline).

Why: mixed-quality data (medium, or expert plus failures) holds both good and
bad actions in the same situations; plain BC (BC-t) averages them. Conditioning
the policy on the return the rest of the episode actually earned (as in
decision-transformer style "upside-down" RL) lets acting ask for a high return
and so pick the actions that led to one.

Training: BC-t's cross-entropy on the entity transformer
(:mod:`mtmarl.networks.entity`), with one extra token per agent embedding
``return_to_go / return_scale``; the return-to-go of step t is the undiscounted
sum of the rewards from t to its episode's end in the data
(``Batch.returns``, computed over whole episodes, not only the sampled window).

Acting: the carry holds each episode's history tokens and its return-to-go,
set to ``target_return`` at the episode's first step and lowered by every team
reward received (``Algorithm.observe``), as the data's return-to-go is.

Target rule: the HyGen paper conditions on 20, the top of SMAC's normalised 0-20
return scale, i.e. the best return a task allows. Here ``target_return`` is
in the env's own reward units and defaults to the best episode return of the
env's scale: SMAX's shared reward pays the enemies' total health as a fraction
(at most 1) plus 1 for a win, so 2.0 (set it for other envs, e.g. the data's
best return). ``return_scale`` only normalises the network input (the same
value is the natural choice).
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
from mtmarl.errors import UserInputError
from mtmarl.networks.entity import EntityAgent, EntityConfig, unroll


@dataclasses.dataclass(frozen=True)
class Config(common.BatchConfig):
    lr: float
    max_grad_norm: float
    task_mean: bool
    target_return: float   # return-to-go asked for at an episode's start (env reward units)
    return_scale: float    # network input = return-to-go / return_scale

    def __post_init__(self):
        if not self.return_scale > 0:
            raise UserInputError(f"algo.return_scale={self.return_scale!r} of {self.name!r} must be > 0")
        if not self.lr > 0:
            raise UserInputError(f"algo.lr={self.lr!r} of {self.name!r} must be > 0")


@register("bc_r", Config, network=EntityConfig)
def make(cfg: Config, network: dict, env: EnvSpec) -> Algorithm:
    agent = EntityAgent(env, EntityConfig.from_dict(dict(network)))
    tx = optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), optax.adam(cfg.lr))
    width = agent.cfg.width

    def cond_input(returns, n_agents: int):
        """(...,) returns-to-go -> (..., N, 1): every agent reads the team's scaled return-to-go."""
        return jnp.broadcast_to((returns / cfg.return_scale)[..., None, None], returns.shape + (n_agents, 1))

    def init(key, sample_obs):
        lead = sample_obs.shape[:-1]
        params = agent.init(key, jnp.zeros(lead + (width,)), sample_obs, jnp.zeros(lead + (1,)))
        return common.TrainState(params, None, tx.init(params))

    def loss(params, target_params, batch, key, axis_name=None):
        del target_params, key
        cond = cond_input(batch.returns, batch.obs.shape[2])
        logits = unroll(agent, params, batch.obs, batch.resets, cond=cond)               # (B, T, N, A)
        nll = -common.take_action(common.legal_log_softmax(logits, batch.legals), batch.actions)
        total = common.task_mean(nll, batch.active, batch.task_ids, cfg.task_mean, axis_name)
        hit = jnp.where(batch.legals, logits, common.NEG).argmax(-1) == batch.actions
        return total, {"bc_loss": common.global_sum(total, axis_name),
                       "accuracy": common.masked_mean(hit, batch.active, axis_name),
                       "return_to_go": common.masked_mean(batch.returns, batch.resets, axis_name)}

    def init_carry(num_agents=None):
        return jnp.zeros((num_agents or env.num_agents, width)), jnp.float32(cfg.target_return)

    def act(params, carry, obs, action_mask, active, reset, key, greedy=False):
        del active
        h, rtg = carry
        h, rtg = jnp.where(reset, 0.0, h), jnp.where(reset, jnp.float32(cfg.target_return), rtg)
        h, logits = agent.apply(params, h, obs, cond_input(rtg, obs.shape[0]))
        logits = jnp.where(action_mask, logits, common.NEG)
        actions = jnp.where(greedy, logits.argmax(-1), jax.random.categorical(key, logits))
        return actions.astype(jnp.int32), None, (h, rtg)

    def observe(params, carry, reward):
        del params
        h, rtg = carry
        return h, rtg - reward

    spec = {"name": cfg.name, "n_actions": env.num_actions, "env": env.to_json(),
            "algo": dataclasses.asdict(cfg), "network": dataclasses.asdict(agent.cfg)}
    return Algorithm(name=cfg.name, cfg=cfg, sampler=cfg.sampler(), init=init,
                     stages=(Stage("train", common.gradient_stage(loss, tx, 0.0)),), act=act,
                     init_carry=init_carry, observe=observe, spec=spec)
