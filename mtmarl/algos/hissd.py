"""HiSSD (Liu et al. 2025): common skills from a planner, task-specific skills from a controller.

Why this shape: HiSSD transfers across maps by splitting what every task shares
(a *common* skill that must carry the team's temporal knowledge: it has to
predict what happens next) from what tells tasks apart (a *task-specific*
skill, learned by contrasting tasks). Every part is an entity transformer of
:mod:`mtmarl.networks.entity` (own tokens, attention blocks), per agent with
shared parameters, so it reads any map of a set.

* planner: (history token, obs) -> common skill ``c``; the forward predictor
  maps ``c`` to the agent's next observation (the global state of the paper;
  our batches carry observations only), trained with weight
  ``min(exp(td_weight * TD), weight_cap)`` per sample, TD = y - V_tot(s_t)
  (paper); ``code_faithful`` averages TD over the batch first, as the
  official code does. ``forward_prediction: false`` drops the term (ablation).
* task encoder: obs -> task-specific skill ``z``; MoCo-style InfoNCE with a
  bilinear similarity: anchor = online ``z`` of one agent at a random step of
  each sequence, positive = the target (momentum) encoder's key of an agent of
  the same sequence within ``ssl_window`` steps, negatives = the other
  sequences' keys from other tasks (a ``negatives_fraction`` of them:
  0.5 is the HiSSD paper's half-negatives ablation). Weight ``contrastive_coef``.
* controller: (history token, obs, c, z) -> action logits; cross-entropy of the
  dataset action (trains the controller, the planner and the encoder).
* values: per-agent V mixed into V_tot by the multi-task attention mixer (the code's
  ``mt_qattn``; :mod:`mtmarl.networks.mixer`, reading the value net's history tokens) or
  summed (``mixer: vdn``), with the IQL expectile loss
  ``|tau - 1(u < 0)| u^2``, ``u = r + gamma V_tot'(s_{t+1}) - V_tot(s_t)``;
  ``code_faithful``: the code's batch-averaged weight ``mean|tau - 1(V < y)|``
  times the mean squared error (which leaves the MSE minimiser unchanged).

One joint AdamW step per update (the code takes three: decoder, value,
planner), value parameters at ``critic_lr`` and clipped apart; targets by Polyak averaging.
Acting: planner, encoder and controller each step, the two history tokens carried.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from mtmarl.algos import common
from mtmarl.algos.protocol import Algorithm, Stage
from mtmarl.algos.reductions import batch_noise
from mtmarl.algos.registry import register
from mtmarl.envs.layout import EnvSpec
from mtmarl.errors import UserInputError
from mtmarl.networks.entity import NEG, EntityConfig, Tokens, action_logits
from mtmarl.networks.mixer import AttentionMixer, MixerConfig, vdn


@dataclasses.dataclass(frozen=True)
class Config(common.BatchConfig):
    lr: float
    critic_lr: float
    weight_decay: float
    max_grad_norm: float
    gamma: float
    tau: float
    task_mean: bool
    skill_dim: int
    expectile: float
    td_weight: float
    weight_cap: float
    prediction_coef: float
    forward_prediction: bool
    contrastive_coef: float
    ssl_window: int
    negatives_fraction: float
    code_faithful: bool
    mixer: str               # attention | vdn
    mixer_width: int
    mixer_heads: int
    mixer_mix_width: int
    mixer_init_scale: float  # variance scale of the mixer's hypernetwork weights at init (1.0: flax's default)

    def __post_init__(self):
        if self.mixer not in ("attention", "vdn"):
            raise UserInputError(f"algo.mixer must be attention or vdn, got {self.mixer!r}")
        if not self.mixer_init_scale > 0:
            raise UserInputError(f"algo.mixer_init_scale must be > 0, got {self.mixer_init_scale!r}")
        self.mixer_config()  # checks the sizes
        if not 0.0 < self.expectile < 1.0:
            raise UserInputError(f"algo.expectile must be in (0, 1), got {self.expectile}")
        if not 0.0 < self.negatives_fraction <= 1.0:
            raise UserInputError(f"algo.negatives_fraction must be in (0, 1], got {self.negatives_fraction}")
        if self.ssl_window < 1 or self.skill_dim < 1:
            raise UserInputError("algo.ssl_window and algo.skill_dim must be >= 1")
        if not 0.0 <= self.tau <= 1.0 or not 0.0 <= self.gamma <= 1.0:
            raise UserInputError(f"algo.tau and algo.gamma must be in [0, 1], got {self.tau}, {self.gamma}")

    def mixer_config(self) -> MixerConfig:
        return MixerConfig(self.mixer_width, self.mixer_heads, self.mixer_mix_width, self.mixer_init_scale)


# ---------------------------------------------------------------- networks

class Planner(nn.Module):
    """(history, obs) -> (history, common skill c)."""

    env: EnvSpec
    cfg: EntityConfig
    skill_dim: int

    @nn.compact
    def __call__(self, h, obs):
        x, _ = Tokens(self.env, self.cfg)(h[..., None, :], obs)
        return x[..., 0, :], nn.Dense(self.skill_dim)(x[..., 0, :])


class TaskEncoder(nn.Module):
    """obs -> task-specific skill z (no history: a skill of the current observation, as in the code)."""

    env: EnvSpec
    cfg: EntityConfig
    skill_dim: int

    @nn.compact
    def __call__(self, obs):
        cls = self.param("cls", nn.initializers.normal(1.0), (self.cfg.width,))
        x, _ = Tokens(self.env, self.cfg)(jnp.broadcast_to(cls, obs.shape[:-1] + (1, self.cfg.width)), obs)
        return nn.Dense(self.skill_dim)(x[..., 0, :])


class Controller(nn.Module):
    """(history, obs, c, z) -> (history, logits): basic actions from the history token, targets from entities."""

    env: EnvSpec
    cfg: EntityConfig

    @nn.compact
    def __call__(self, h, obs, c, z):
        skills = [nn.Dense(self.cfg.width, name="common")(c), nn.Dense(self.cfg.width, name="specific")(z)]
        x, keep = Tokens(self.env, self.cfg)(jnp.stack([h] + skills, axis=-2), obs)
        logits = action_logits(self.env, x, keep, first=3)
        return x[..., 0, :], logits


class Value(nn.Module):
    """(history, obs) -> (history, V_i)."""

    env: EnvSpec
    cfg: EntityConfig

    @nn.compact
    def __call__(self, h, obs):
        x, _ = Tokens(self.env, self.cfg)(h[..., None, :], obs)
        return x[..., 0, :], nn.Dense(1)(nn.relu(nn.Dense(self.cfg.width)(x[..., 0, :])))[..., 0]


class Predictor(nn.Module):
    """Common skill c -> the agent's next observation."""

    obs_dim: int

    @nn.compact
    def __call__(self, c):
        return nn.Dense(self.obs_dim)(nn.relu(nn.Dense(128)(c)))


# ---------------------------------------------------------------- loss pieces (tested against naive references)

def expectile_loss(u, valid, tau: float, task_ids, code_faithful: bool = False, per_task: bool = True,
                   axis_name: str | None = None):
    """IQL value loss on the residuals ``u = y - V`` (B, ...): ``|tau - 1(u < 0)| u^2`` reduced per task.

    ``code_faithful``: the official code's ``mean_valid|tau - 1(V - y < 0)|`` (one scalar over the
    batch; note its opposite sign) times the reduced ``u^2``.
    """
    if code_faithful:
        w = common.masked_mean(jnp.abs(tau - (u > 0).astype(u.dtype)), valid, axis_name)
        return w * common.task_mean(u * u, valid, task_ids, per_task, axis_name)
    w = jnp.abs(tau - (u < 0).astype(u.dtype))
    return common.task_mean(w * u * u, valid, task_ids, per_task, axis_name)


def planner_weights(td, valid, td_weight: float, cap: float, code_faithful: bool = False,
                    axis_name: str | None = None):
    """``min(exp(td_weight * TD), cap)`` per entry (paper), or of the batch-mean TD (``code_faithful``). No gradient."""
    td = jax.lax.stop_gradient(td)
    if code_faithful:
        td = jnp.broadcast_to(common.masked_mean(td, valid, axis_name), td.shape)
    return jnp.minimum(jnp.exp(jnp.minimum(td_weight * td, math.log(cap) + 1.0)), cap)


def negative_mask(task_ids, all_ids, scores, fraction: float = 1.0):
    """(B, B_global) bool: each anchor's negatives, the ``ceil(fraction * n)`` lowest-``scores`` of its ``n``
    other-task samples (``scores`` (B, B_global) uniform: a random subset)."""
    cand = task_ids[:, None] != all_ids[None, :]
    score = jnp.where(cand, scores, jnp.inf)
    col = jnp.arange(score.shape[1])
    lower = (score[:, None, :] < score[:, :, None]) | ((score[:, None, :] == score[:, :, None])
                                                       & (col[None, :] < col[:, None]))
    rank = jnp.sum(lower, axis=-1)  # candidates ranked before this one (ties by column)
    keep = jnp.ceil(fraction * cand.sum(-1, keepdims=True) - 1e-6)
    return cand & (rank < keep)


def info_nce(anchor, positive, keys, neg_mask, w):
    """Per-anchor InfoNCE with bilinear logits ``a^T W k``: ``-log e^{l+} / (e^{l+} + sum_negatives e^{l-})``."""
    l_pos = jnp.einsum("bs,st,bt->b", anchor, w, positive)
    l_neg = jnp.where(neg_mask, jnp.einsum("bs,st,gt->bg", anchor, w, keys), -jnp.inf)
    return jax.nn.logsumexp(jnp.concatenate([l_pos[:, None], l_neg], axis=1), axis=1) - l_pos


def _pick_agent(u, active):
    """(B,) the ``floor(u * count)``-th active agent of each row of ``active`` (B, N): uniform for uniform u."""
    idx = jnp.floor(u * active.sum(-1)).astype(jnp.int32)
    return jnp.argmax(active & (jnp.cumsum(active, -1) - 1 == idx[:, None]), -1)


def _apply(nets: dict, name: str, params, *args):
    return nets[name].apply(params[name], *args)


def _unroll(nets: dict, params, target, obs, resets, z):
    """Planner, controller and both values over (B, T, N, O); histories zeroed at episode starts."""
    ecfg = nets["planner"].cfg
    h0 = jnp.zeros(obs.shape[:1] + obs.shape[2:-1] + (ecfg.width,))

    def step(hs, xs):
        o, r, zt = xs
        hp, hc, hv, ht = (jnp.where(r[:, None, None], 0.0, h) for h in hs)
        hp, c = _apply(nets, "planner", params, hp, o)
        hc, logits = _apply(nets, "controller", params, hc, o, c, zt)
        hv, v = _apply(nets, "value", params, hv, o)
        ht, vt = _apply(nets, "value", target, ht, o)
        return (hp, hc, hv, ht), (c, logits, v, vt, hv, ht)

    xs = tuple(jnp.moveaxis(x, 1, 0) for x in (obs, resets, z))
    _, out = jax.lax.scan(step, (h0,) * 4, xs, unroll=ecfg.unroll_time)
    return tuple(jnp.moveaxis(x, 0, 1) for x in out)


def _mix(cfg: Config, nets: dict, params, v, hidden, active):
    if cfg.mixer == "vdn":
        return vdn(v, active)
    return nets["mixer"].apply(params["mixer"], v, jax.lax.stop_gradient(hidden), active)


def contrastive(params, target, batch, z, key, cfg: Config, nets: dict, ax):
    """The task encoder's InfoNCE (module docstring), reduced per task over the anchors that have negatives."""
    B, T, _ = batch.active.shape
    u = batch_noise(jax.random.uniform, key, (B, 5), ax)  # one draw per global row: sharding changes no choice
    rows = jnp.arange(B)
    t = jnp.floor(u[:, 0] * T).astype(jnp.int32)
    tp = jnp.minimum(t + jnp.floor(u[:, 1] * cfg.ssl_window).astype(jnp.int32), T - 1)
    n = _pick_agent(u[:, 2], batch.active[rows, t])
    npos = _pick_agent(u[:, 3], batch.active[rows, tp])
    anchor = z[rows, t, n]
    pos = jax.lax.stop_gradient(_apply(nets, "encoder", target, batch.obs[rows, tp, npos]))
    all_ids, keys = common.gather_batch(batch.task_ids, ax), common.gather_batch(pos, ax)
    scores = batch_noise(jax.random.uniform, jax.random.fold_in(key, 1), (B, *all_ids.shape), ax)
    neg = negative_mask(batch.task_ids, all_ids, scores, cfg.negatives_fraction)
    per = info_nce(anchor, pos, keys, neg, params["contrast_w"])
    ok = neg.any(-1) & batch.active[rows, t, n]
    return common.task_mean(jnp.where(ok, per, 0.0), ok, batch.task_ids, cfg.task_mean, ax)


def loss(params, target_params, batch, key, cfg: Config, nets: dict, axis_name: str | None = None):
    """HiSSD's joint loss (module docstring): behaviour cloning of the controller, the IQL expectile value
    loss, the TD-weighted forward prediction of the planner and the encoder's contrastive term."""
    ax = axis_name
    z = _apply(nets, "encoder", params, batch.obs)                                 # (B, T, N, S)
    c, logits, v, vt, hv, ht = _unroll(nets, params, target_params, batch.obs, batch.resets, z)
    active = batch.active

    # controller: likelihood of the dataset actions
    nll = -common.take_action(common.legal_log_softmax(logits, batch.legals), batch.actions)
    bc = common.task_mean(nll, active, batch.task_ids, cfg.task_mean, ax)

    # values: IQL expectile on the team value (attention mixer or VDN sum over active agents)
    v_tot = _mix(cfg, nets, params, v, hv, active)                                # (B, T)
    vt_tot = jax.lax.stop_gradient(_mix(cfg, nets, target_params, vt, ht, active))
    valid = common.td_valid(batch)                                                # (B, T-1)
    y = batch.rewards[:, :-1] + cfg.gamma * batch.discounts[:, :-1] * vt_tot[:, 1:]
    u = y - v_tot[:, :-1]
    value = expectile_loss(u, valid, cfg.expectile, batch.task_ids, cfg.code_faithful, cfg.task_mean, ax)

    # planner: forward prediction of the next observation, weighted by exp(td_weight * TD)
    weight = planner_weights(u, valid, cfg.td_weight, cfg.weight_cap, cfg.code_faithful, ax)
    if cfg.forward_prediction:
        pred = _apply(nets, "predictor", params, c[:, :-1])
        err = jnp.mean(jnp.square(pred - batch.obs[:, 1:]), -1)                  # (B, T-1, N)
        ok = valid[..., None] & ~batch.resets[:, 1:, None] & active[:, :-1] & active[:, 1:]
        planner = common.task_mean(weight[..., None] * err, ok, batch.task_ids, cfg.task_mean, ax)
        pred_err = common.masked_mean(err, ok, ax)
    else:
        planner = pred_err = jnp.zeros(())

    ssl = contrastive(params, target_params, batch, z, key, cfg, nets, ax)
    total = bc + value + cfg.prediction_coef * planner + cfg.contrastive_coef * ssl
    hit = jnp.where(batch.legals, logits, NEG).argmax(-1) == batch.actions
    return total, {"bc_loss": common.global_sum(bc, ax), "value_loss": common.global_sum(value, ax),
                   "planner_loss": common.global_sum(planner, ax), "prediction_error": pred_err,
                   "contrastive_loss": common.global_sum(ssl, ax), "accuracy": common.masked_mean(hit, active, ax),
                   "v_tot": common.masked_mean(v_tot[:, :-1], valid, ax), "td": common.masked_mean(u, valid, ax),
                   "planner_weight": common.masked_mean(weight, valid, ax)}


# ---------------------------------------------------------------- the algorithm

@dataclasses.dataclass(frozen=True, kw_only=True)
class HissdAlgorithm(Algorithm):
    loss: Callable  # (params, target_params, batch, key, axis_name=None) -> (scalar, metrics), for tests


@register("hissd", Config, network=EntityConfig)
def make(cfg: Config, network: dict, env: EnvSpec) -> HissdAlgorithm:
    ecfg = EntityConfig.from_dict(dict(network))
    W, S = ecfg.width, cfg.skill_dim
    nets = {"planner": Planner(env, ecfg, S), "encoder": TaskEncoder(env, ecfg, S), "controller": Controller(env, ecfg),
            "value": Value(env, ecfg), "predictor": Predictor(env.obs_dim), "mixer": AttentionMixer(cfg.mixer_config())}
    mixer = nets["mixer"]
    critic = ("value", "mixer")
    # value and the rest clipped and stepped apart (the code steps them in separate optimiser calls)
    adamw = lambda lr: optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm),  # noqa: E731
                                   optax.adamw(lr, weight_decay=cfg.weight_decay))
    tx = optax.multi_transform({"value": adamw(cfg.critic_lr), "policy": adamw(cfg.lr)},
                               lambda p: {k: jax.tree.map(lambda _: "value" if k in critic else "policy", v)
                                          for k, v in p.items()})

    def init(key, sample_obs):
        ks = jax.random.split(key, 6)
        obs = sample_obs[:, 0]                                                     # (1, N, O)
        h, c = jnp.zeros(obs.shape[:-1] + (W,)), jnp.zeros(obs.shape[:-1] + (S,))
        params = {"planner": nets["planner"].init(ks[0], h, obs), "encoder": nets["encoder"].init(ks[1], obs),
                  "controller": nets["controller"].init(ks[2], h, obs, c, c), "value": nets["value"].init(ks[3], h, obs),
                  "predictor": nets["predictor"].init(ks[4], c), "contrast_w": jnp.eye(S)}
        if cfg.mixer == "attention":
            lead = obs.shape[:-1]
            params["mixer"] = mixer.init(ks[5], jnp.zeros(lead), jnp.zeros(lead + (W,)), jnp.ones(lead, bool))
        return common.TrainState(params, jax.tree.map(jnp.array, params), tx.init(params))

    bound = lambda p, tp, b, k, axis_name=None: loss(p, tp, b, k, cfg, nets, axis_name)  # noqa: E731

    def act(params, carry, obs, action_mask, active, reset, key, greedy=False):
        del active
        carry = jnp.where(reset, 0.0, carry)
        hp, c = _apply(nets, "planner", params, carry[:, 0], obs)
        hc, logits = _apply(nets, "controller", params, carry[:, 1], obs, c, _apply(nets, "encoder", params, obs))
        logits = jnp.where(action_mask, logits, NEG)
        actions = jnp.where(greedy, logits.argmax(-1), jax.random.categorical(key, logits))
        return actions.astype(jnp.int32), None, jnp.stack([hp, hc], axis=1)

    spec = {"name": cfg.name, "n_actions": env.num_actions, "env": env.to_json(),
            "algo": dataclasses.asdict(cfg), "network": dataclasses.asdict(ecfg)}
    return HissdAlgorithm(name=cfg.name, cfg=cfg, sampler=cfg.sampler(), init=init,
                          stages=(Stage("train", common.gradient_stage(bound, tx, cfg.tau)),), act=act,
                          init_carry=lambda num_agents=None: jnp.zeros((num_agents or env.num_agents, 2, W)),
                          spec=spec, loss=bound)
