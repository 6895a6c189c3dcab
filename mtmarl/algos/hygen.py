"""HyGen's offline side (the HyGen paper): ODIS-style skill discovery, then hybrid-ready skill Q-learning.

Why: HyGen keeps ODIS's recipe (team-level skills learnt offline from every task's data, a policy that
picks skills from local observations, a decoder that turns a skill into an action on any map) but
trains the high-level policy on a *hybrid* batch: a share ``R_h`` of offline sequences and the rest
from an online replay buffer filled in the source tasks (:mod:`mtmarl.online.hygen`). This module is
the algorithm both stages share; run purely offline (``python -m mtmarl.train +algo=hygen ...``) every
row is offline, i.e. ``R_h = 1``: a valid ablation and the starting point of the online stage.

**1. skill discovery** is ODIS's stage 1 (:mod:`mtmarl.algos.odis`, reused by import: the same state
encoder with attention over the team's agents, skill head, Gumbel-softmax sample, decoder and
beta-VAE loss with a KL to the uniform prior). HyGen's choice: one skill per attention head of the
encoder (``skill_dim: 0`` takes the entity network's ``heads``; the paper's Table 6: 4 heads, 4 skills).

**2. high-level policy** (:func:`hybrid_loss`, the paper's Eq. 4-6) on a batch whose rows may come
from either source:

* TD through the attention mixer with double Q over skills and a target network (ODIS's / UPDeT's
  :func:`mtmarl.algos.updet.td_targets` and ``value_losses``); the data's skill of each agent is the
  arg-max of the frozen global encoder given the data actions;
* the conservative term, weighted by ``cql_weight * R_h`` (Eq. 6: the less offline data, the less
  conservatism);
* the consistency loss (Eq. 5), weight ``dist_weight``: ``KL(q_local(.|tau_i) || q(.|s, a, i))`` with
  ``q_local`` a trainable *local head* on the Q agent's history token and ``q`` the frozen global
  encoder's softmax. ODIS instead distils the arg-max label through its frozen skill head by
  cross-entropy; HyGen matches the whole distribution with a head of its own;
* the decoder is refined on the same mixed batch (``refine_decoder``): ``-log p_dec(a | o, z)`` with
  ``z`` the frozen encoder's arg-max skill, by its own Adam so the frozen encoder and skill head stay
  exactly as stage 1 left them.

Losses are masked means over the whole batch by default (``task_mean: false``): Eq. 4 is an
expectation over the mixed batch, so ``R_h`` is the offline share of what the loss averages. Online
rows carry task id -1.

Acting: each agent's arg-max skill under the Q agent (epsilon-greedy over skills with ``epsilon`` when
not greedy; the online stage passes its own schedule), then the decoder's legal arg-max action.

Deviations from the paper: stage 2's R_h schedule lives in the online stage (here it is an input);
the skill labels of Eq. 4 are the encoder's arg-max, as in ODIS; one update is one batch over all tasks;
``acting_params`` holds every trained network (not the targets or optimiser states) so an online stage
can restart the whole learner from a run directory.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from mtmarl.algos import common, odis, updet
from mtmarl.algos.protocol import Algorithm, Stage
from mtmarl.algos.registry import register
from mtmarl.envs.layout import EnvSpec
from mtmarl.errors import UserInputError
from mtmarl.networks.entity import NEG, EntityConfig, unroll

CQL_SCHEDULES = ("dynamic", "fixed")
ONLINE_TASK_ID = -1  # the task id of online rows in a mixed batch (their own group if task_mean)


@dataclasses.dataclass(frozen=True)
class Config(odis.Config):
    """ODIS's keys (``skill_dim: 0`` = one skill per attention head; ``dist_weight`` = alpha of the consistency
    KL; ``cql_weight`` = eta, scaled by R_h) plus ``refine_decoder``."""

    refine_decoder: bool  # stage 2 also trains the action decoder on the (mixed) batch
    cql_schedule: str     # dynamic: eta * R_h (Eq. 6); fixed: eta at every R_h (the HyGen paper's Table 2 ablation)

    def __post_init__(self):
        updet.MixerAlgoConfig.__post_init__(self)
        if self.cql_schedule not in CQL_SCHEDULES:
            raise UserInputError(f"algo.cql_schedule={self.cql_schedule!r} of {self.name!r} is not one of "
                                 f"{list(CQL_SCHEDULES)}")
        checks = {
            "skill_dim": self.skill_dim == 0 or self.skill_dim >= 2,
            "skill_updates": self.skill_updates >= 0,
            "beta": self.beta >= 0,
            "dist_weight": self.dist_weight >= 0,
            "gumbel_temperature": self.gumbel_temperature > 0,
        }
        for key, ok in checks.items():
            if not ok:
                raise UserInputError(
                    f"algo.{key}={getattr(self, key)!r} of {self.name!r} is out of range "
                    f"(skill_dim: 0 (= network.heads) or >= 2, gumbel_temperature > 0, "
                    f"the others >= 0)"
                )


class HyGenState(NamedTuple):
    skills: common.TrainState  # {"state_encoder", "skill_head", "decoder"}; stage 1's Adam
    values: updet.ValueState  # {"agent", "mixer", "local_head"} with their target copy; stage 2's Adam
    decoder_opt: Any  # the decoder's own Adam state for its refinement in stage 2


@dataclasses.dataclass(frozen=True, kw_only=True)
class HyGenAlgorithm(Algorithm):
    """The algorithm plus the pieces the online stage and tests use."""

    num_skills: int
    hybrid_update: Callable  # (state, batch, r_h, key, axis_name=None) -> (state, metrics)
    hybrid_loss: Callable  # (value_params, target_params, skill_params, batch, r_h) -> (loss, metrics)
    act_skills: Callable  # (params, carry, obs, action_mask, reset, key, epsilon) -> (actions, skills, carry)
    state_from_params: Callable  # acting params -> a fresh HyGenState (targets copied, fresh Adams)
    skill_logits: Callable
    nets: Any


def kl_categorical(logp, logq):
    """KL(p || q) over the last axis from log-probabilities."""
    return jnp.sum(jnp.exp(logp) * (logp - logq), axis=-1)


def hybrid_loss(params, target_params, skill_params, batch, r_h, cfg: Config, nets: dict, axis_name: str | None = None):
    """Stage 2 (Eq. 4-6): TD through the mixer on the frozen encoder's skill labels, ``eta * R_h`` times the
    conservative term (``eta`` alone with ``cql_schedule: fixed``), ``alpha`` times the consistency KL of the
    local head to the encoder's skill distribution."""
    ax = axis_name
    K = nets["local_head"].features
    _, mix = updet.make_mix(cfg)
    agent = nets["agent"]
    enc = jax.lax.stop_gradient(odis.skill_logits(nets, skill_params, batch.obs, batch.actions, batch.active))
    labels = enc.argmax(-1)
    any_skill = jnp.ones(labels.shape + (K,), bool)
    q, h = unroll(agent, params["agent"], batch.obs, batch.resets, hiddens=True)
    qt, ht = unroll(agent, target_params["agent"], batch.obs, batch.resets, hiddens=True)
    y = updet.td_targets(cfg, mix, target_params, jax.lax.stop_gradient(q) if cfg.double_q else qt, qt, ht, any_skill, batch)
    td, cql, metrics = updet.value_losses(cfg, mix, params, q, h, labels, any_skill, y, batch, ax)
    local = jax.nn.log_softmax(nets["local_head"].apply(params["local_head"], h), axis=-1)
    consistency = common.task_mean(
        kl_categorical(local, jax.nn.log_softmax(enc, axis=-1)), batch.active, batch.task_ids, cfg.task_mean, ax
    )
    eta = cfg.cql_weight * (r_h if cfg.cql_schedule == "dynamic" else 1.0)
    total = td + eta * cql + cfg.dist_weight * consistency
    return total, dict(
        metrics,
        consistency_loss=common.global_sum(consistency, ax),
        label_agreement=common.masked_mean(q.argmax(-1) == labels, batch.active, ax),
    )


def decoder_loss(dec_params, skill_params, batch, cfg: Config, nets: dict, axis_name: str | None = None):
    """The decoder's refinement: the data actions' likelihood given the frozen encoder's arg-max skill."""
    K = nets["local_head"].features
    enc = odis.skill_logits(nets, skill_params, batch.obs, batch.actions, batch.active)
    z = jax.nn.one_hot(jax.lax.stop_gradient(enc).argmax(-1), K, dtype=batch.obs.dtype)
    logits = unroll(nets["decoder"], dec_params, batch.obs, batch.resets, cond=z)
    nll = -common.take_action(common.legal_log_softmax(logits, batch.legals), batch.actions)
    return common.task_mean(nll, batch.active, batch.task_ids, cfg.task_mean, axis_name)


@register("hygen", Config, network=EntityConfig, online="hygen")
def make(cfg: Config, network: dict, env: EnvSpec) -> HyGenAlgorithm:
    net_cfg = EntityConfig.from_dict(dict(network))
    K = cfg.skill_dim or net_cfg.heads
    if K < 2:
        raise UserInputError(
            f"algo.skill_dim=0 takes network.heads={net_cfg.heads} skills, but HyGen needs >= 2 "
            f"(raise network.heads or set algo.skill_dim >= 2)"
        )
    base = odis.make(dataclasses.replace(cfg, skill_dim=K), network, env)  # stage 1 and the networks
    nets = dict(base.nets, local_head=nn.Dense(K))
    agent, decoder = nets["agent"], nets["decoder"]
    width, A = net_cfg.width, env.num_actions
    adam = lambda: optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), optax.adam(cfg.lr))  # noqa: E731
    tx_skills, tx_values, tx_decoder = adam(), adam(), adam()

    def state_from_params(params):
        skills = {k: params[k] for k in ("state_encoder", "skill_head", "decoder")}
        values = {k: params[k] for k in ("agent", "mixer", "local_head")}
        return HyGenState(
            common.TrainState(skills, None, tx_skills.init(skills)),
            updet.ValueState(values, jax.tree.map(jnp.array, values), tx_values.init(values), jnp.zeros((), jnp.int32)),
            tx_decoder.init(skills["decoder"]),
        )

    def init(key, sample_obs):
        k_base, k_head = jax.random.split(key)
        s = base.init(k_base, sample_obs)
        hidden = jnp.zeros(sample_obs.shape[:-1] + (width,))
        return state_from_params({**s.skills.params, **s.values.params, "local_head": nets["local_head"].init(k_head, hidden)})

    # ------------------------------------------------------------ stage 2: the (hybrid) high-level policy
    hybrid_loss_ = lambda p, tp, sp, b, r_h, axis_name=None: hybrid_loss(p, tp, sp, b, r_h, cfg, nets, axis_name)  # noqa: E731

    def hybrid_update(state: HyGenState, batch, r_h, key, axis_name=None):
        skill_params = state.skills.params
        loss = lambda p, tp, b, k, axis_name=None: hybrid_loss_(p, tp, skill_params, b, r_h, axis_name)  # noqa: E731
        values, metrics = updet.value_update(cfg, loss, tx_values)(state.values, batch, key, axis_name)
        metrics = dict(metrics, hybrid_ratio=jnp.asarray(r_h, jnp.float32))
        if not cfg.refine_decoder:
            return state._replace(values=values), metrics
        dec_loss, grads = jax.value_and_grad(decoder_loss)(skill_params["decoder"], skill_params, batch, cfg, nets,
                                                           axis_name)
        if axis_name is not None:
            grads = jax.lax.psum(grads, axis_name)
        updates, dec_opt = tx_decoder.update(grads, state.decoder_opt, skill_params["decoder"])
        skills = state.skills._replace(params=dict(skill_params, decoder=optax.apply_updates(skill_params["decoder"], updates)))
        return (HyGenState(skills, values, dec_opt), dict(metrics, decoder_loss=common.global_sum(dec_loss, axis_name)))

    def offline_update(state, batch, key, axis_name=None):
        return hybrid_update(state, batch, 1.0, key, axis_name)  # every row offline: R_h = 1

    # ------------------------------------------------------------ acting
    def act_skills(params, carry, obs, action_mask, reset, key, epsilon):
        h_q, h_dec = (jnp.where(reset, 0.0, h) for h in carry)
        h_q, q_skill = agent.apply(params["agent"], h_q, obs)
        k_explore, k_skill = jax.random.split(key)
        skill = q_skill.argmax(-1)
        explore = jax.random.uniform(k_explore, skill.shape) < epsilon
        skill = jnp.where(explore, jax.random.randint(k_skill, skill.shape, 0, K), skill)
        h_dec, logits = decoder.apply(params["decoder"], h_dec, obs, jax.nn.one_hot(skill, K, dtype=obs.dtype))
        actions = jnp.where(action_mask, logits, NEG).argmax(-1).astype(jnp.int32)
        return actions, skill, (h_q, h_dec)

    def act(params, carry, obs, action_mask, active, reset, key, greedy=False):
        del active
        eps = jnp.where(jnp.asarray(greedy), 0.0, cfg.epsilon)
        actions, _, carry = act_skills(params, carry, obs, action_mask, reset, key, eps)
        return actions, None, carry

    def init_carry(num_agents=None):
        n = num_agents or env.num_agents
        return jnp.zeros((n, width)), jnp.zeros((n, width))

    def acting_params(state: HyGenState):
        return {**state.skills.params, **state.values.params}

    spec = {
        "name": cfg.name,
        "n_actions": A,
        "env": env.to_json(),
        "algo": dataclasses.asdict(cfg),
        "network": dataclasses.asdict(net_cfg),
    }
    return HyGenAlgorithm(
        name=cfg.name,
        cfg=cfg,
        sampler=cfg.sampler(),
        init=init,
        stages=(Stage("skills", base.stages[0].update, cfg.skill_updates), Stage("policy", offline_update)),
        act=act,
        init_carry=init_carry,
        spec=spec,
        acting_params=acting_params,
        num_skills=K,
        hybrid_update=hybrid_update,
        hybrid_loss=hybrid_loss_,
        act_skills=act_skills,
        state_from_params=state_from_params,
        skill_logits=base.skill_logits,
        nets=nets,
    )
