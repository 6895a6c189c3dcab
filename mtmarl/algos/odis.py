"""ODIS: offline skill discovery, then skill-conditioned offline Q-learning (the HyGen paper; LAMDA-RL/ODIS).

Why: a policy that picks among a few team-level *skills* learnt from every task's
data, each skill decoded into actions by a network that reads any map, transfers
to unseen maps better than one that scores raw actions (the HyGen paper's claim over
UPDeT and BC). Two stages (:class:`~mtmarl.algos.protocol.Stage`):

**1. skill discovery** (``skill_updates``: a count, or a share of ``training.updates``;
the paper: 15k of 35k). A *state encoder* reads the whole team at one step: each
agent's observation entities and its data action (an entity agent of
:mod:`mtmarl.networks.entity` with the action as its extra token), then masked
self-attention over the team's agents (``mixer.agent_attention``); a linear *skill
head* turns each agent's output into logits over ``skill_dim`` skills. A soft
skill is drawn by Gumbel-softmax (temperature ``gumbel_temperature``) and the
*action decoder*, an entity agent reading the agent's own observation with the
skill as its extra token and its own history token, reconstructs the data
action. Per active agent and step::

    loss = -log p_dec(a_data | o, z) + beta * KL(softmax(skill logits) || uniform)

each term reduced per task, then over tasks (``common.task_mean``).

**2. skill-conditioned Q-learning** (the rest). Every step's skill label is the
arg-max of the (now frozen) state encoder's logits given the data actions. A
*Q agent* (an entity agent with one output per skill) scores skills from the
agent's own observation history; with the multi-task attention mixer it is
trained exactly like UPDeT-m with skills in the place of actions
(:mod:`mtmarl.algos.updet`: double-Q TD target through the target agent and
mixer, TD(lambda) option, hard or Polyak target updates, the conservative term
``greedy_mixed`` = ``Q_tot(greedy skills) - Q_tot(labels)`` or ``logsumexp``, weight
``cql_weight``), plus ``dist_weight`` times the cross-entropy of the labels under
the frozen skill head applied to the Q agent's token (the distillation: the Q
agent's representation learns to predict, from local observations only, the skill
the team-level encoder assigns). Stage 2 trains only the Q agent and the mixer
(a fresh Adam); the state encoder, skill head and decoder keep their stage-1
parameters, as ``requires_grad_(False)`` does in ODIS's learner.

Acting: each agent's arg-max skill under the Q agent, then the decoder's legal
arg-max action given that skill (epsilon-greedy over legal actions with
``epsilon`` > 0 when not asked for greedy actions). The carry holds both
history tokens.

As in ODIS's code (``odis_learner.py``, ``odis_agent.py``, ``odis.yaml``): two networks read
local observations (the Q agent, the decoder) and one reads the team with its actions
(the state encoder, without history); one linear skill head serves the encoder in
stage 1 and the distillation in stage 2; Gumbel-softmax skills at temperature 1;
hard labels (arg-max) in stage 2; double Q over skills; the conservative term on
``Q_tot``; weights 5 and 5, beta 0.001, skill_dim 3, lr 5e-4, clip 10, one Adam per
stage; frozen in stage 2: state encoder, skill head, decoder. Differences: the team
is each agent's observation entities (the batch holds no global state), attended
over by agent; the skill enters the decoder as an extra token, not concatenated
to the output token; the KL is the analytic one of the encoder's softmax (the code
evaluates it on the Gumbel sample and averages it over the skill axis too);
losses are masked per-task means over active agents, with illegal actions masked
in the reconstruction; one update is one batch over all tasks (the code steps
once per round of one batch per task), so its target interval of 80 task batches
is 27 updates here; sequences of ``seq_len`` steps instead of whole episodes.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from mtmarl.algos import common, updet
from mtmarl.algos.protocol import Algorithm, Stage
from mtmarl.algos.reductions import batch_noise
from mtmarl.algos.registry import register
from mtmarl.envs.layout import ActionLayout, EnvSpec
from mtmarl.errors import UserInputError
from mtmarl.networks.entity import EntityAgent, EntityConfig, unroll
from mtmarl.networks.mixer import agent_attention


@dataclasses.dataclass(frozen=True)
class Config(updet.MixerAlgoConfig):
    skill_dim: int              # number of discrete skills
    skill_updates: float        # stage 1 length: an update count, or a float in (0, 1): a share of training.updates
    beta: float                 # weight of the KL(skill posterior || uniform) regulariser (stage 1)
    dist_weight: float          # weight of the skill distillation cross-entropy (stage 2)
    gumbel_temperature: float   # Gumbel-softmax temperature of the stage-1 skill sample

    def __post_init__(self):
        super().__post_init__()
        checks = {"skill_dim": self.skill_dim >= 2, "skill_updates": self.skill_updates >= 0,
                  "beta": self.beta >= 0, "dist_weight": self.dist_weight >= 0,
                  "gumbel_temperature": self.gumbel_temperature > 0}
        for key, ok in checks.items():
            if not ok:
                raise UserInputError(f"algo.{key}={getattr(self, key)!r} of {self.name!r} is out of range "
                                     f"(skill_dim >= 2, gumbel_temperature > 0, the others >= 0)")


class StateEncoder(nn.Module):
    """``(obs (..., N, O), actions one-hot (..., N, A), active (..., N)) -> (..., N, W)``: each agent's
    entities and action through an entity agent (no history), then masked attention over the team."""

    env: EnvSpec
    cfg: EntityConfig

    @nn.compact
    def __call__(self, obs, actions_onehot, active):
        zeros = jnp.zeros(obs.shape[:-1] + (self.cfg.width,), obs.dtype)
        own, _ = EntityAgent(self.env, self.cfg, name="agent")(zeros, obs, actions_onehot)
        return agent_attention(own, active, self.cfg.width, self.cfg.heads)


class ODISState(NamedTuple):
    skills: common.TrainState   # {"state_encoder", "skill_head", "decoder"}; stage 1's Adam
    values: updet.ValueState    # {"agent", "mixer"} with their target copy; stage 2's Adam


@dataclasses.dataclass(frozen=True, kw_only=True)
class ODISAlgorithm(Algorithm):
    """The algorithm plus its pieces for tools and tests."""

    skill_loss: Callable    # (skill_params, None, batch, key, axis_name) -> (loss, metrics)
    value_loss: Callable    # (value_params, target_params, skill_params, batch, key, axis_name) -> (loss, metrics)
    skill_logits: Callable  # (skill_params, obs, actions, active) -> (..., N, skill_dim)
    nets: Any               # dict of the flax modules: state_encoder, skill_head, decoder, agent, mixer


def kl_to_uniform(logits):
    """KL(softmax(logits) || uniform) over the last axis."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    return jnp.sum(jnp.exp(logp) * (logp + jnp.log(logits.shape[-1])), axis=-1)


def skill_logits(nets: dict, params, obs, actions, active):
    """The skill head's logits (..., N, skill_dim) on the state encoder's reading of the team and its actions."""
    A = nets["decoder"].env.num_actions
    enc = nets["state_encoder"].apply(params["state_encoder"], obs, jax.nn.one_hot(actions, A, dtype=obs.dtype), active)
    return nets["skill_head"].apply(params["skill_head"], enc)


def skill_loss(params, target_params, batch, key, cfg: Config, nets: dict, axis_name: str | None = None):
    """Stage 1, skill discovery: the decoder's reconstruction of the data actions from a Gumbel-softmax skill,
    plus ``beta`` times the KL of the skill logits to uniform (module docstring)."""
    del target_params
    ax = axis_name
    logits = skill_logits(nets, params, batch.obs, batch.actions, batch.active)         # (B, T, N, K)
    noise = batch_noise(jax.random.gumbel, key, logits.shape, ax)  # the same per sample on 1 or n devices
    z = jax.nn.softmax((logits + noise) / cfg.gumbel_temperature, axis=-1)
    dec = unroll(nets["decoder"], params["decoder"], batch.obs, batch.resets, cond=z)  # (B, T, N, A)
    nll = -common.take_action(common.legal_log_softmax(dec, batch.legals), batch.actions)
    recon = common.task_mean(nll, batch.active, batch.task_ids, cfg.task_mean, ax)
    kl = common.task_mean(kl_to_uniform(logits), batch.active, batch.task_ids, cfg.task_mean, ax)
    hit = jnp.where(batch.legals, dec, common.NEG).argmax(-1) == batch.actions
    used = jax.nn.one_hot(logits.argmax(-1), cfg.skill_dim) * batch.active[..., None]
    share = common.global_sum(used.sum((0, 1, 2)), ax) / jnp.maximum(common.global_sum(used.sum(), ax), 1.0)
    return recon + cfg.beta * kl, {"recon_loss": common.global_sum(recon, ax), "kl_loss": common.global_sum(kl, ax),
                                   "recon_accuracy": common.masked_mean(hit, batch.active, ax),
                                   "skill_share_max": jnp.max(share)}


def value_loss(params, target_params, skill_params, batch, key, cfg: Config, nets: dict,
               axis_name: str | None = None):
    """Stage 2, skill-conditioned Q-learning: UPDeT-m's losses with the frozen encoder's skill labels in
    the place of actions, plus ``dist_weight`` times the labels' cross-entropy under the frozen skill head
    on the Q agent's token (module docstring)."""
    del key
    ax = axis_name
    _, mix = updet.make_mix(cfg)
    labels = jax.lax.stop_gradient(skill_logits(nets, skill_params, batch.obs, batch.actions, batch.active)).argmax(-1)
    any_skill = jnp.ones(labels.shape + (cfg.skill_dim,), bool)
    q, h = unroll(nets["agent"], params["agent"], batch.obs, batch.resets, hiddens=True)   # (B,T,N,K), (B,T,N,W)
    qt, ht = unroll(nets["agent"], target_params["agent"], batch.obs, batch.resets, hiddens=True)
    y = updet.td_targets(cfg, mix, target_params, jax.lax.stop_gradient(q) if cfg.double_q else qt, qt, ht,
                         any_skill, batch)
    td_loss, cql_loss, metrics = updet.value_losses(cfg, mix, params, q, h, labels, any_skill, y, batch, ax)
    dist_logp = jax.nn.log_softmax(nets["skill_head"].apply(skill_params["skill_head"], h), axis=-1)
    dist = common.task_mean(-common.take_action(dist_logp, labels), batch.active, batch.task_ids, cfg.task_mean, ax)
    total = td_loss + cfg.cql_weight * cql_loss + cfg.dist_weight * dist
    return total, dict(metrics, dist_loss=common.global_sum(dist, ax),
                       label_agreement=common.masked_mean(q.argmax(-1) == labels, batch.active, ax))


@register("odis", Config, network=EntityConfig)
def make(cfg: Config, network: dict, env: EnvSpec) -> ODISAlgorithm:
    net_cfg = EntityConfig.from_dict(dict(network))
    width, K, A = net_cfg.width, cfg.skill_dim, env.num_actions
    state_encoder = StateEncoder(env, net_cfg)
    skill_head = nn.Dense(K)
    decoder = EntityAgent(env, net_cfg)
    agent = EntityAgent(dataclasses.replace(env, actions=ActionLayout(basic=K)), net_cfg)  # Q over skills
    mixer, _ = updet.make_mix(cfg)
    adam = lambda: optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), optax.adam(cfg.lr))  # noqa: E731
    tx_skills, tx_values = adam(), adam()
    nets = {"state_encoder": state_encoder, "skill_head": skill_head, "decoder": decoder, "agent": agent,
            "mixer": mixer}
    skill_loss_ = lambda p, tp, b, k, axis_name=None: skill_loss(p, tp, b, k, cfg, nets, axis_name)  # noqa: E731
    value_loss_ = lambda p, tp, sp, b, k, axis_name=None: value_loss(p, tp, sp, b, k, cfg, nets, axis_name)  # noqa: E731

    def init(key, sample_obs):
        ks = jax.random.split(key, 5)
        lead = sample_obs.shape[:-1]
        hidden = jnp.zeros(lead + (width,))
        skills = {"state_encoder": state_encoder.init(ks[0], sample_obs, jnp.zeros(lead + (A,)), jnp.ones(lead, bool)),
                  "skill_head": skill_head.init(ks[1], hidden),
                  "decoder": decoder.init(ks[2], hidden, sample_obs, jnp.zeros(lead + (K,)))}
        values = {"agent": agent.init(ks[3], hidden, sample_obs),
                  "mixer": mixer.init(ks[4], jnp.zeros(lead), hidden, jnp.ones(lead, bool))}
        return ODISState(common.TrainState(skills, None, tx_skills.init(skills)),
                         updet.ValueState(values, jax.tree.map(jnp.array, values), tx_values.init(values),
                                          jnp.zeros((), jnp.int32)))

    skill_step = common.gradient_stage(skill_loss_, tx_skills, 0.0)

    def skill_update(state: ODISState, batch, key, axis_name=None):
        skills, metrics = skill_step(state.skills, batch, key, axis_name)
        return state._replace(skills=skills), metrics

    # ------------------------------------------------------------ stage 2: skill-conditioned Q-learning
    def value_update(state: ODISState, batch, key, axis_name=None):
        frozen = state.skills.params
        loss = lambda p, tp, b, k, axis_name=None: value_loss_(p, tp, frozen, b, k, axis_name)  # noqa: E731
        values, metrics = updet.value_update(cfg, loss, tx_values)(state.values, batch, key, axis_name)
        return state._replace(values=values), metrics

    # ------------------------------------------------------------ acting
    def act(params, carry, obs, action_mask, active, reset, key, greedy=False):
        del active
        h_q, h_dec = (jnp.where(reset, 0.0, h) for h in carry)
        h_q, q_skill = agent.apply(params["agent"], h_q, obs)
        skill = jax.nn.one_hot(q_skill.argmax(-1), K, dtype=obs.dtype)
        h_dec, logits = decoder.apply(params["decoder"], h_dec, obs, skill)
        return updet.greedy_action(cfg, logits, action_mask, key, greedy), None, (h_q, h_dec)

    def init_carry(num_agents=None):
        n = num_agents or env.num_agents
        return jnp.zeros((n, width)), jnp.zeros((n, width))

    spec = {"name": cfg.name, "n_actions": A, "env": env.to_json(), "algo": dataclasses.asdict(cfg),
            "network": dataclasses.asdict(net_cfg)}
    return ODISAlgorithm(
        name=cfg.name, cfg=cfg, sampler=cfg.sampler(), init=init,
        stages=(Stage("skills", skill_update, cfg.skill_updates), Stage("policy", value_update)),
        act=act, init_carry=init_carry, spec=spec,
        acting_params=lambda s: {"agent": s.values.params["agent"], "decoder": s.skills.params["decoder"]},
        skill_loss=skill_loss_, value_loss=value_loss_, skill_logits=functools.partial(skill_logits, nets),
        nets=nets)
