"""Shared pieces of the Sable-based offline algorithms: config, train state, optimiser,
Polyak targets, the gradient stage and the loss helpers (TD targets, critic passes).

MT Oryx, MT CQL-Sable and MT BC-Sable differ only in their loss (and CQL in how
it acts), so :func:`assemble` turns a loss into a full
:class:`~mtmarl.algos.protocol.Algorithm`: the Sable net, clipped Adam, a target
network when the algorithm learns values, one stage ``train`` whose update is
:func:`gradient_stage`, and ``act``, one recurrent step with agents decoded in
a fresh random order every call (the order is random in training too; a fixed
order at evaluation is a known fault of og-marl's Oryx). Algorithms are built by
name through ``mtmarl.algos.registry``.

A loss is ``loss(params, target_params, batch, key, axis_name=None) -> (scalar, metrics)``.

Reductions over the batch (per-task means, ICQ softmaxes, their data-parallel
contract) live in ``mtmarl.algos.reductions`` and are re-exported here.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Callable, ClassVar, NamedTuple, get_type_hints

import jax
import jax.numpy as jnp
import optax

from mtmarl.algos.protocol import Algorithm, Stage
from mtmarl.algos.reductions import (batch_softmax, gather_batch, global_max, global_sum, masked_mean, task_mean,
                                     task_scale, task_softmax)
from mtmarl.envs.layout import EnvSpec
from mtmarl.errors import UserInputError
from mtmarl.networks.sable import NEG, SableConfig, SableNet, make_sable


@dataclasses.dataclass(frozen=True)
class BatchConfig:
    """What an algorithm asks of the sampler (``mtmarl.data.batching.SamplerConfig``)."""

    name: str
    batch_size: int
    seq_len: int
    balanced: bool
    tasks_per_batch: int | None
    shuffle: bool
    mask: bool

    @classmethod
    def from_dict(cls, d: dict):
        """The config from exactly its keys: an unknown key (a typo) or a missing one is an error naming it."""
        names = sorted(f.name for f in dataclasses.fields(cls))
        unknown, missing = sorted(set(d) - set(names)), sorted(set(names) - set(d))
        if unknown:
            close = difflib.get_close_matches(unknown[0], names, n=1)
            hint = f"; did you mean algo.{close[0]}?" if close else ""
            raise UserInputError(f"unknown config key {', '.join('algo.' + k for k in unknown)} of algorithm "
                                 f"{d.get('name')!r}{hint} (its keys: {', '.join(names)})")
        if missing:
            raise UserInputError(f"algorithm {d.get('name')!r} config ({cls.__module__}.{cls.__name__}) has "
                                 f"missing keys {missing}: its yaml (mtmarl/configs/algo/<name>.yaml) owns every default")
        from mtmarl.config_check import check_typed_fields

        hints = get_type_hints(cls)
        check_typed_fields(d, {f.name: hints[f.name] for f in dataclasses.fields(cls)})
        return cls(**d)

    def sampler(self):
        from mtmarl.data.batching import SamplerConfig

        return SamplerConfig(self.batch_size, self.seq_len, self.balanced, self.shuffle, self.mask, self.tasks_per_batch)


@dataclasses.dataclass(frozen=True)
class AlgoConfig(BatchConfig):
    """Fields shared by the Sable algorithms; their defaults live in mtmarl/configs/algo/<name>.yaml only."""

    learns_values: ClassVar[bool] = True  # has a trained Q head (False: imitation only, e.g. BC)
    lr: float
    lr_decay_updates: int   # 0: constant lr; N > 0: cosine decay from lr to lr * lr_end over N updates
    lr_end: float           # the decayed learning rate as a fraction of lr (after lr_decay_updates it stays there)
    max_grad_norm: float
    gamma: float
    tau: float
    task_mean: bool
    # value learning (ignored by BC)
    hl_gauss: bool
    v_min: float
    v_max: float
    num_bins: int
    sigma_ratio: float

    def __post_init__(self):
        if isinstance(self.lr_decay_updates, bool) or not isinstance(self.lr_decay_updates, int) \
                or self.lr_decay_updates < 0:
            raise UserInputError(f"algo.lr_decay_updates must be an integer >= 0 (0: constant learning rate), "
                                 f"got {self.lr_decay_updates!r}")
        if not 0.0 <= self.lr_end <= 1.0:
            raise UserInputError(f"algo.lr_end must be in [0, 1] (a fraction of algo.lr), got {self.lr_end}")
        if not 0.0 <= self.tau <= 1.0:
            raise UserInputError(f"tau must be in [0, 1], got {self.tau}")
        if not 0.0 <= self.gamma <= 1.0:
            raise UserInputError(f"gamma must be in [0, 1], got {self.gamma}")
        if self.hl_gauss and (self.num_bins < 2 or not self.v_max > self.v_min):
            raise UserInputError("HL-Gauss needs num_bins >= 2 and v_max > v_min")


class TrainState(NamedTuple):
    params: Any
    target_params: Any      # None for algorithms without a target network (BC)
    opt_state: Any


@dataclasses.dataclass(frozen=True, kw_only=True)
class SableAlgorithm(Algorithm):
    """An :class:`Algorithm` on one Sable net; ``net``, ``loss`` and ``tx`` are for tools and tests."""

    net: SableNet
    loss: Callable
    tx: optax.GradientTransformation


# ---------------------------------------------------------------- building

def network_for(cfg: AlgoConfig, net_cfg: SableConfig, n_actions: int) -> SableNet:
    """The Sable net with its Q head set by the algorithm config (HL-Gauss bins or scalar)."""
    if cfg.learns_values and cfg.hl_gauss:
        net_cfg = dataclasses.replace(net_cfg, q_bins=cfg.num_bins, v_min=cfg.v_min, v_max=cfg.v_max,
                                      sigma_ratio=cfg.sigma_ratio)
    else:
        net_cfg = dataclasses.replace(net_cfg, q_bins=0)
    return make_sable(net_cfg, n_actions)


def learning_rate(cfg: AlgoConfig) -> float | optax.Schedule:
    """``cfg.lr``, or its cosine decay to ``lr * lr_end`` over ``lr_decay_updates`` updates.

    Why: at a constant rate a long run oscillates once it has peaked; a decaying rate keeps the early speed
    and settles the late updates. A short run ends before the peak, so it is off (0) by default
    (docs/decisions.md).
    The schedule reads Adam's own update count (part of the optimiser state), so it is checkpointed and
    resumes where it stopped. Decay over a whole run: ``algo.lr_decay_updates='${training.updates}'``.
    """
    if cfg.lr_decay_updates == 0:
        return cfg.lr
    return optax.cosine_decay_schedule(cfg.lr, cfg.lr_decay_updates, alpha=cfg.lr_end)


def make_optimizer(cfg: AlgoConfig) -> optax.GradientTransformation:
    return optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), optax.adam(learning_rate(cfg)))


def polyak(online, target, tau: float):
    """target <- tau * online + (1 - tau) * target, leaf by leaf."""
    return jax.tree.map(lambda o, t: tau * o + (1.0 - tau) * t, online, target)


def make_init(net: SableNet, tx: optax.GradientTransformation, with_target: bool):
    def init(key, sample_obs) -> TrainState:
        params = net.init(key, sample_obs)
        target = jax.tree.map(jnp.array, params) if with_target else None
        return TrainState(params, target, tx.init(params))
    return init


def gradient_stage(loss_fn: Callable, tx: optax.GradientTransformation, tau: float):
    """A stage update: one clipped-Adam step on ``loss_fn``, then a Polyak target update (if any).

    With ``axis_name`` the loss and gradients are this shard's shares (module
    docstring): the gradients are summed over the shards before the step, so
    every device applies the same update.
    """

    def update(state: TrainState, batch, key, axis_name: str | None = None):
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, state.target_params, batch, key, axis_name=axis_name)
        metrics = dict(metrics, loss=global_sum(loss, axis_name))  # metrics are already global
        if axis_name is not None:
            grads = jax.lax.psum(grads, axis_name)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        target = None if state.target_params is None else polyak(params, state.target_params, tau)
        metrics["grad_norm"] = optax.tree.norm(grads)
        return TrainState(params, target, opt_state), metrics

    return update


def agent_order(key, num_agents: int):
    """The agent order of one acting step and the key left for its action samples (``act`` and ``replay``)."""
    k_order, k_act = jax.random.split(key)
    return jax.random.permutation(k_order, num_agents), k_act


def make_act(net: SableNet, step: Callable | None = None):
    """Recurrent acting with a fresh random agent order each step (see module docstring).

    ``step`` has ``net.act``'s signature; the default samples or arg-maxes the policy head and
    returns the masked logits it sampled from as ``aux`` (what fine-tuning scores actions with).
    """
    policy_head = step is None
    step = net.act if step is None else step

    def act(params, carry, obs, action_mask, active, reset, key, greedy=False):
        order, k_act = agent_order(key, obs.shape[0])
        actions, out, carry = step(params, carry, obs, action_mask, active, reset, k_act, order=order, greedy=greedy)
        return actions, (out.logits if policy_head else out), carry

    return act


def make_replay(net: SableNet):
    """``act``'s sequence form (:class:`~mtmarl.algos.protocol.Algorithm` ``replay``) for the policy head.

    Each step is decoded as ``act`` decodes it: the agent order drawn again from the key ``act`` was
    given, each agent then conditioned on the actions taken by those before it (teacher forcing), so
    the logits equal those ``act`` sampled from. Recurrent over steps, which fine-tuning needs anyway.
    """

    def one_env(params, carry, obs, actions, legals, active, resets, keys):
        def step(c, xs):
            o, a, m, act_, r, k = xs
            order, k_act = agent_order(k, o.shape[0])
            _, out, c = net.act(params, c, o, m, act_, r, k_act, order=order, forced_actions=a)
            return c, out.logits

        carry, logits = jax.lax.scan(step, carry, (obs, actions, legals, active, resets, keys))
        return logits, carry

    def replay(params, carry0, obs, actions, legals, active, resets, keys):
        run = jax.vmap(one_env, in_axes=(None, 0, 1, 1, 1, 1, 1, 1), out_axes=(1, 0))
        return run(params, carry0, obs, actions, legals, active, resets, keys)

    return replay


def assemble(cfg: AlgoConfig, network: dict, env: EnvSpec, loss_fn: Callable,
             act_step: Callable[[SableNet], Callable] | None = None) -> SableAlgorithm:
    """An algorithm from its config and ``loss_fn(params, target, batch, key, cfg, net, axis_name)``.

    The shared pieces: the Sable net (Q head per ``cfg``), clipped Adam, a target
    network exactly when the algorithm learns values, one stage ``train`` taking
    all of ``training.updates``, and the random-order ``act`` (``act_step(net)``
    replaces the policy-head step, e.g. acting on Q) with its ``replay`` when it acts
    with the policy head (online fine-tuning needs it).
    """
    net = network_for(cfg, SableConfig.from_dict(dict(network)), env.num_actions)
    tx = make_optimizer(cfg)
    bound = lambda p, tp, b, k, axis_name=None: loss_fn(p, tp, b, k, cfg, net, axis_name)  # noqa: E731
    spec = {"name": cfg.name, "n_actions": env.num_actions, "env": env.to_json(), "algo": dataclasses.asdict(cfg),
            "network": dataclasses.asdict(net.cfg)}
    return SableAlgorithm(
        name=cfg.name, cfg=cfg, sampler=cfg.sampler(), init=make_init(net, tx, with_target=cfg.learns_values),
        stages=(Stage("train", gradient_stage(bound, tx, cfg.tau)),),
        act=make_act(net, None if act_step is None else act_step(net)),
        init_carry=lambda num_agents=None: net.init_carry(), spec=spec,  # retention states: any agent count
        value_range_discount=cfg.gamma if cfg.learns_values and cfg.hl_gauss else None, net=net, loss=bound, tx=tx,
        replay=make_replay(net) if act_step is None else None)


# ---------------------------------------------------------------- small helpers

def take_action(x, actions):
    """x (..., A, *rest) at the given actions (...) -> (..., *rest)."""
    idx = actions.reshape(actions.shape + (1,) * (x.ndim - actions.ndim))
    return jnp.take_along_axis(x, idx.astype(jnp.int32), axis=actions.ndim).squeeze(actions.ndim)


def td_valid(batch):
    """(B, T-1) bool: step t has a usable TD target from step t+1 of the same sequence.

    Steps that end an episode by truncation (not termination) are dropped: the
    next step belongs to a new episode, so there is nothing to bootstrap from.
    """
    return batch.terminals[:, :-1] | ~batch.resets[:, 1:]


def lambda_returns(rewards, discounts, next_v, valid, gamma: float, lam: float):
    """TD(lambda) targets over a sequence: (B, T-1, N) from one-step pieces of steps 0..T-2.

    ``G_t = r_t + gamma * d_t * ((1 - lam) * v_{t+1} + lam * G_{t+1})``, where
    ``v_{t+1}`` (``next_v``) is the bootstrap value of the next step and ``G_{t+1}``
    is replaced by ``v_{t+1}`` where step t+1 has no target of its own (``valid``
    false: the sequence ends, or its episode was cut there). ``lam=0`` is the
    one-step target; ``lam=1`` the discounted return up to the sequence's end.
    Returns propagate ``1 / (1 - gamma * lam)`` steps per target-network update
    instead of one, which is what a short training budget lacks.
    ``rewards`` / ``discounts`` are (B, T-1, 1) or (B, T-1, N).
    """
    shape = next_v.shape
    xs = [jnp.moveaxis(jnp.broadcast_to(x, shape), 1, 0) for x in (rewards, discounts, next_v)]
    ok_next = jnp.moveaxis(jnp.concatenate([valid[:, 1:], jnp.zeros_like(valid[:, :1])], axis=1), 1, 0)

    def back(g_next, x):
        r, d, v, ok = x
        g = r + gamma * d * ((1.0 - lam) * v + lam * jnp.where(ok, g_next, v))
        return g, g

    _, g = jax.lax.scan(back, jnp.zeros(shape[:1] + shape[2:], next_v.dtype), (*xs, ok_next), reverse=True)
    return jnp.moveaxis(g, 0, 1)


def legal_log_softmax(logits, legals):
    """log pi over legal actions (illegal logits are already NEG in Sable outputs)."""
    return jax.nn.log_softmax(jnp.where(legals, logits, NEG), axis=-1)


def critic_forward(params, target_params, batch, net: SableNet, target_at_data: bool = False):
    """Online and target passes; also their scalar Q with illegal actions pushed very low.

    ``target_at_data=True`` returns the target's scalar Q at the dataset actions only
    (..., no action axis): for HL-Gauss that converts one histogram per entry
    instead of one per action, the same numbers for a fraction of the work.
    """
    args = (batch.obs, batch.actions, batch.legals, batch.active, batch.resets)
    out, _ = net.apply_train(params, *args)
    tgt, _ = net.apply_train(target_params, *args)
    if target_at_data:
        q_tgt = take_action(tgt.q, batch.actions)  # dataset actions are legal: no mask needed
        hl = net.cfg.hl_gauss  # None exactly when q_bins == 0 (scalar Q)
        q_tgt = q_tgt if hl is None else hl.to_scalar(q_tgt)
    else:
        q_tgt = net.q_values(tgt.q, batch.legals)
    return out, tgt, net.q_values(out.q, batch.legals), q_tgt


def td_error_loss(net: SableNet, out, q, batch, target):
    """Per-entry TD loss on the taken action for steps 0..T-2: HL-Gauss cross-entropy, or 0.5 squared error."""
    hl = net.cfg.hl_gauss  # None exactly when q_bins == 0 (scalar Q)
    if hl is not None:
        return hl.loss(take_action(out.q[:, :-1], batch.actions[:, :-1]), target)
    return 0.5 * jnp.square(take_action(q[:, :-1], batch.actions[:, :-1]) - target)


__all__ = ["AlgoConfig", "BatchConfig", "SableAlgorithm", "TrainState", "assemble", "batch_softmax",
           "critic_forward", "gather_batch", "global_max", "global_sum", "gradient_stage", "lambda_returns",
           "learning_rate", "legal_log_softmax", "make_act", "make_init", "make_optimizer", "masked_mean", "network_for",
           "polyak",
           "take_action", "task_mean", "task_scale", "task_softmax", "td_error_loss", "td_valid"]
