"""UPDeT-m and UPDeT-l: offline conservative Q-learning on the entity transformer (the HyGen paper's baselines).

Why: the HyGen paper (ODIS) compares its skills against plain value decomposition on
the same transferable agent: UPDeT's transformer (here the entity agent of
:mod:`mtmarl.networks.entity`, one Q value per action, attack Qs from the enemy
tokens) with the multi-task attention mixer (UPDeT-m,
:mod:`mtmarl.networks.mixer`) or with a VDN sum (UPDeT-l). Offline, both need a
conservative term, as in ODIS's offline baselines, or the greedy policy picks
actions the data never shows.

Loss over a sampled sequence (history token unrolled, reset at episode starts):

* TD: ``0.5 * (Q_tot(s_t, a_t) - y_t)^2`` on steps with a target
  (``common.td_valid``), ``y_t = r_t + gamma * (1 - terminal_t) * Q'_tot(s_{t+1}, a*)``
  or its TD(lambda) form over the sequence (``td_lambda``). ``Q'`` is the target
  network (agent and mixer); ``a*`` is each agent's arg-max over its legal
  actions under the online agent (``double_q``) or under the target agent.
  The mixer reads the agents' history tokens as its per-agent input (no
  gradient flows into the agent through them, as QMIX's state is an input).
* Conservative, weighted by ``cql_weight``; ``conservative: logsumexp`` (CQL):
  for every active agent and step, ``logsumexp_{legal a} Q_i(a) - Q_i(a_data)``;
  ``conservative: greedy_mixed`` (what ODIS's UPDeT learner computes): for every
  step, ``Q_tot(s, a_greedy) - Q_tot(s, a_data)`` through the online mixer, with
  each agent's greedy legal action under the online agent (gradient through both).

Both are reduced per task, then over tasks (``common.task_mean``). The target
network is copied from the online one every ``target_update_interval`` updates
(``target_update: hard``) or moved by Polyak averaging with ``tau`` every update
(``polyak``). Acting is greedy over the legal actions, or epsilon-greedy with
``epsilon`` when not asked for greedy actions (default 0: always greedy).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mtmarl.algos import common
from mtmarl.algos.protocol import Algorithm, Stage
from mtmarl.algos.registry import register
from mtmarl.envs.layout import EnvSpec
from mtmarl.errors import UserInputError
from mtmarl.evaluation.policies import uniform_legal
from mtmarl.networks.entity import NEG, EntityAgent, EntityConfig, unroll
from mtmarl.networks.mixer import AttentionMixer, MixerConfig, vdn

TARGET_UPDATES = ("hard", "polyak")
CONSERVATIVE = ("logsumexp", "greedy_mixed")


@dataclasses.dataclass(frozen=True)
class Config(common.BatchConfig):
    lr: float
    max_grad_norm: float
    gamma: float
    td_lambda: float           # 0: one-step target; (0, 1]: TD(lambda) over the sampled sequence
    double_q: bool             # next action chosen by the online agent, valued by the target network
    cql_weight: float          # weight of the conservative term
    conservative: str          # 'logsumexp' (per-agent CQL) or 'greedy_mixed' (Q_tot greedy - Q_tot data; ODIS code)
    target_update: str         # 'hard' (copy every target_update_interval updates) or 'polyak' (tau each update)
    target_update_interval: int
    tau: float
    epsilon: float             # exploration when acting non-greedily (0: always greedy)
    task_mean: bool

    def __post_init__(self):
        checks = {"gamma": 0.0 <= self.gamma <= 1.0, "td_lambda": 0.0 <= self.td_lambda <= 1.0,
                  "tau": 0.0 <= self.tau <= 1.0, "epsilon": 0.0 <= self.epsilon <= 1.0,
                  "cql_weight": self.cql_weight >= 0.0, "target_update_interval": self.target_update_interval >= 1,
                  "lr": self.lr > 0.0}
        for key, ok in checks.items():
            if not ok:
                allowed = {"target_update_interval": ">= 1", "cql_weight": ">= 0", "lr": "> 0"}.get(key, "in [0, 1]")
                raise UserInputError(f"algo.{key}={getattr(self, key)!r} of {self.name!r} is out of range: {allowed}")
        for key, allowed_values in (("target_update", TARGET_UPDATES), ("conservative", CONSERVATIVE)):
            if getattr(self, key) not in allowed_values:
                raise UserInputError(f"algo.{key}={getattr(self, key)!r} of {self.name!r} is not one of "
                                     f"{list(allowed_values)}")


@dataclasses.dataclass(frozen=True)
class MixerAlgoConfig(Config):
    mixer_width: int           # attention mixer: embedding width
    mixer_heads: int           #   attention heads
    mixer_mix_width: int       #   QMIX hidden layer
    mixer_init_scale: float    #   variance scale of its hypernetwork weights at init (1.0: flax's default)

    def __post_init__(self):
        super().__post_init__()
        if self.mixer_init_scale <= 0:
            raise UserInputError(f"algo.mixer_init_scale={self.mixer_init_scale!r} of {self.name!r} must be > 0")
        for key in ("mixer_width", "mixer_heads", "mixer_mix_width"):
            if getattr(self, key) < 1:
                raise UserInputError(f"algo.{key}={getattr(self, key)!r} of {self.name!r} must be >= 1")
        if self.mixer_width % self.mixer_heads:
            raise UserInputError(f"algo.mixer_width={self.mixer_width} of {self.name!r} must be divisible by "
                                 f"algo.mixer_heads={self.mixer_heads}")

    def mixer(self) -> MixerConfig:
        return MixerConfig(self.mixer_width, self.mixer_heads, self.mixer_mix_width, self.mixer_init_scale)


class ValueState(NamedTuple):
    params: Any          # {"agent": ..., "mixer": ...} (no mixer for VDN)
    target_params: Any
    opt_state: Any
    steps: jax.Array     # updates done (hard target copies every target_update_interval)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ValueAlgorithm(Algorithm):
    """The algorithm plus its pieces for tools and tests: ``loss`` and ``td_target``; ``act_epsilon(params,
    carry, obs, action_mask, reset, key, epsilon)``, ``act`` with a traced exploration rate (online QMIX's
    schedule, :mod:`mtmarl.online.qmix`)."""

    loss: Callable
    td_target: Callable
    act_epsilon: Callable


def conservative_gap(q, legals, actions):
    """CQL's per-entry term: ``logsumexp`` of Q over the legal actions minus Q of the data action."""
    return jax.nn.logsumexp(jnp.where(legals, q, -jnp.inf), axis=-1) - common.take_action(q, actions)


def update_target(cfg: Config, params, target, steps):
    """The target network after ``steps`` updates: Polyak with ``tau``, or a copy every ``target_update_interval``."""
    if cfg.target_update == "polyak":
        return common.polyak(params, target, cfg.tau)
    copy = steps % cfg.target_update_interval == 0
    return jax.tree.map(lambda p, t: jnp.where(copy, p, t), params, target)


def make_mix(cfg: Config):
    """``(mixer or None, mix(params, qs, hidden, active) -> Q_tot)``: the attention mixer (``params["mixer"]``,
    reading the agents' embeddings without gradient) for a mixer config, else a VDN sum."""
    mixer = AttentionMixer(cfg.mixer()) if isinstance(cfg, MixerAlgoConfig) else None

    def mix(params, qs, hidden, active):
        if mixer is None:
            return vdn(qs, active)
        return mixer.apply(params["mixer"], qs, jax.lax.stop_gradient(hidden), active)

    return mixer, mix


def td_targets(cfg: Config, mix: Callable, target_params, q_pick, qt, ht, legals, batch):
    """(B, T-1) TD targets of steps 0..T-2 (no gradient): each agent's next choice is its legal arg-max of
    ``q_pick`` (the online Qs with ``double_q``, else the target's), valued by the target Qs ``qt`` and
    mixed by the target mixer over the target embeddings ``ht``. Choices may be actions or, for ODIS, skills."""
    best = jnp.where(legals, q_pick, NEG).argmax(-1)[:, 1:]                              # (B, T-1, N)
    q_next = common.take_action(qt[:, 1:], best)
    next_v = mix(target_params, q_next, ht[:, 1:], batch.active[:, 1:])[..., None]       # (B, T-1, 1)
    y = common.lambda_returns(batch.rewards[:, :-1, None], batch.discounts[:, :-1, None], next_v,
                              common.td_valid(batch)[..., None], cfg.gamma, cfg.td_lambda)
    return jax.lax.stop_gradient(y[..., 0])


def value_losses(cfg: Config, mix: Callable, params, q, h, choices, legals, y, batch, axis_name=None):
    """(td_loss, conservative_loss, metrics) of per-agent Qs ``q`` (B, T, N, C) over choices (actions, or
    ODIS's skills) at the data's ``choices`` (B, T, N), embeddings ``h`` and TD targets ``y`` (module docstring)."""
    ax = axis_name
    q_data = common.take_action(q, choices)                                              # (B, T, N)
    q_tot = mix(params, q_data[:, :-1], h[:, :-1], batch.active[:, :-1])                 # (B, T-1)
    valid = common.td_valid(batch) & jnp.any(batch.active[:, :-1], axis=-1)
    td_loss = common.task_mean(0.5 * jnp.square(q_tot - y), valid, batch.task_ids, cfg.task_mean, ax)
    if cfg.conservative == "logsumexp":
        gap = conservative_gap(q, legals, choices)
        cql_loss = common.task_mean(gap, batch.active, batch.task_ids, cfg.task_mean, ax)
    else:
        greedy = jnp.where(legals, jax.lax.stop_gradient(q), NEG).argmax(-1)
        gap = mix(params, common.take_action(q, greedy), h, batch.active) - mix(params, q_data, h, batch.active)
        cql_loss = common.task_mean(gap, jnp.any(batch.active, -1), batch.task_ids, cfg.task_mean, ax)
    metrics = {"td_loss": common.global_sum(td_loss, ax), "cql_loss": common.global_sum(cql_loss, ax),
               "q_tot": common.masked_mean(q_tot, valid, ax), "td_target": common.masked_mean(y, valid, ax),
               "q_data": common.masked_mean(q_data, batch.active, ax)}
    return td_loss, cql_loss, metrics


def value_update(cfg: Config, loss: Callable, tx: optax.GradientTransformation):
    """A stage update of a :class:`ValueState`: one clipped-Adam step on ``loss(params, target, batch, key,
    axis_name)`` (gradients summed over the pmap axis), then the target update of ``cfg``."""

    def update(state: ValueState, batch, key, axis_name=None):
        (total, metrics), grads = jax.value_and_grad(loss, has_aux=True)(
            state.params, state.target_params, batch, key, axis_name=axis_name)
        if axis_name is not None:
            grads = jax.lax.psum(grads, axis_name)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        steps = state.steps + 1
        metrics = dict(metrics, loss=common.global_sum(total, axis_name), grad_norm=optax.tree.norm(grads))
        return ValueState(params, update_target(cfg, params, state.target_params, steps), opt_state, steps), metrics

    return update


def epsilon_greedy(q, action_mask, key, epsilon):
    """Each agent's legal arg-max of ``q``, replaced with probability ``epsilon`` (may be traced) by a uniform
    legal action."""
    k_explore, k_random = jax.random.split(key)
    explore = jax.random.uniform(k_explore, action_mask.shape[:-1]) < epsilon
    return jnp.where(explore, uniform_legal(k_random, action_mask),
                     jnp.where(action_mask, q, NEG).argmax(-1)).astype(jnp.int32)


def greedy_action(cfg: Config, q, action_mask, key, greedy):
    """Each agent's legal arg-max of ``q``; epsilon-greedy over the legal actions when not ``greedy``."""
    if cfg.epsilon > 0:
        return epsilon_greedy(q, action_mask, key, jnp.where(jnp.asarray(greedy), 0.0, cfg.epsilon))
    return jnp.where(action_mask, q, NEG).argmax(-1).astype(jnp.int32)


def build(cfg: Config, network: dict, env: EnvSpec) -> ValueAlgorithm:
    agent = EntityAgent(env, EntityConfig.from_dict(dict(network)))
    mixer, mix = make_mix(cfg)
    tx = optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), optax.adam(cfg.lr))
    width = agent.cfg.width

    def init(key, sample_obs):
        k_agent, k_mixer = jax.random.split(key)
        lead = sample_obs.shape[:-1]
        params = {"agent": agent.init(k_agent, jnp.zeros(lead + (width,)), sample_obs)}
        if mixer is not None:
            params["mixer"] = mixer.init(k_mixer, jnp.zeros(lead), jnp.zeros(lead + (width,)), jnp.ones(lead, bool))
        return ValueState(params, jax.tree.map(jnp.array, params), tx.init(params), jnp.zeros((), jnp.int32))

    def forward(params, batch):
        q, h = unroll(agent, params["agent"], batch.obs, batch.resets, hiddens=True)  # (B,T,N,A), (B,T,N,W)
        return q, h

    def td_target(params, target_params, batch, q_online=None):
        """(B, T-1) TD targets of steps 0..T-2 from the target network (and the online arg-max with double_q)."""
        qt, ht = forward(target_params, batch)
        q_pick = (forward(params, batch)[0] if q_online is None else q_online) if cfg.double_q else qt
        return td_targets(cfg, mix, target_params, q_pick, qt, ht, batch.legals, batch)

    def loss(params, target_params, batch, key, axis_name=None):
        del key
        q, h = forward(params, batch)
        y = td_target(params, target_params, batch, jax.lax.stop_gradient(q))
        td_loss, cql_loss, metrics = value_losses(cfg, mix, params, q, h, batch.actions, batch.legals, y, batch,
                                                  axis_name)
        return td_loss + cfg.cql_weight * cql_loss, metrics

    def act_epsilon(params, carry, obs, action_mask, reset, key, epsilon):
        h = jnp.where(reset, 0.0, carry)
        h, q = agent.apply(params["agent"], h, obs)
        return epsilon_greedy(q, action_mask, key, epsilon), None, h

    def act(params, carry, obs, action_mask, active, reset, key, greedy=False):
        del active
        return act_epsilon(params, carry, obs, action_mask, reset, key, jnp.where(jnp.asarray(greedy), 0.0, cfg.epsilon))

    spec = {"name": cfg.name, "n_actions": env.num_actions, "env": env.to_json(),
            "algo": dataclasses.asdict(cfg), "network": dataclasses.asdict(agent.cfg)}
    return ValueAlgorithm(name=cfg.name, cfg=cfg, sampler=cfg.sampler(), init=init,
                          stages=(Stage("train", value_update(cfg, loss, tx)),), act=act,
                          init_carry=lambda num_agents=None: jnp.zeros((num_agents or env.num_agents, width)), spec=spec,
                          loss=loss, td_target=td_target, act_epsilon=act_epsilon)


@register("updet_m", MixerAlgoConfig, network=EntityConfig)
def make_m(cfg: MixerAlgoConfig, network: dict, env: EnvSpec) -> ValueAlgorithm:
    return build(cfg, network, env)


@register("updet_l", Config, network=EntityConfig)
def make_l(cfg: Config, network: dict, env: EnvSpec) -> ValueAlgorithm:
    return build(cfg, network, env)
