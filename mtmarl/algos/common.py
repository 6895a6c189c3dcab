"""Shared pieces of the Sable-based offline algorithms: config, train state, optimiser,
Polyak targets, the gradient stage, masked/task-balanced reductions and ICQ batch softmax.

MT Oryx, MT CQL-Sable and MT BC-Sable differ only in their loss (and CQL in how
it acts), so :func:`assemble` turns a loss into a full
:class:`~mtmarl.algos.protocol.Algorithm`: the Sable net, clipped Adam, a target
network when the algorithm learns values, one stage ``train`` whose update is
:func:`gradient_stage`, and ``act``, one recurrent step with agents decoded in
a fresh random order every call (the order is random in training too; a fixed
order at evaluation is a known fault of og-marl's Oryx). Algorithms are built by
name through ``mtmarl.algos.registry``.

A loss is ``loss(params, target_params, batch, key, axis_name=None) -> (scalar, metrics)``.

Loss reduction (seed 004 eq. 1): with ``task_mean=True`` each task's elements
are averaged (masked mean over its active agents and valid steps) and the
per-task means are averaged over the tasks present in the batch; with
``task_mean=False`` it is one masked mean over the batch (equal to eq. 1 in
expectation for a balanced batch only when tasks have equal agent counts).

Data parallelism: every reduction over the batch axis takes an optional
``axis_name``. ``None`` means the whole batch is here (one device). With the
name of a ``pmap`` axis over which the batch is sharded, counts, maxima and
sums over the batch are taken over all shards (``lax.psum``/``pmax``/
``all_gather`` of quantities that carry no gradient), so every shard sees the
global normalisers and ICQ weights. A loss term is then returned as this
shard's *share*: the shares of all shards sum to the single-device value, so
the global gradient is the ``psum`` (not the mean) of the shards' gradients.
Metrics (``masked_mean``, ``global_max``) come back as the global value on
every shard. ``loss(..., axis_name)`` of every algorithm follows this contract.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Callable, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mtmarl.algos.protocol import Algorithm, Stage
from mtmarl.errors import UserInputError
from mtmarl.networks.sable import NEG, SableConfig, SableNet, make_sable


@dataclasses.dataclass(frozen=True)
class BatchConfig:
    """What an algorithm asks of the sampler (``mtmarl.data.batching.SamplerConfig``)."""

    name: str
    batch_size: int
    seq_len: int
    balanced: bool
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
                                 f"missing keys {missing}: its yaml (configs/algo/<name>.yaml) owns every default")
        return cls(**d)

    def sampler(self):
        from mtmarl.data.batching import SamplerConfig

        return SamplerConfig(self.batch_size, self.seq_len, self.balanced, self.shuffle, self.mask)


@dataclasses.dataclass(frozen=True)
class AlgoConfig(BatchConfig):
    """Fields shared by the Sable algorithms; their defaults live in configs/algo/<name>.yaml only."""

    learns_values: ClassVar[bool] = True  # has a trained Q head (False: imitation only, e.g. BC)
    lr: float
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


def make_optimizer(cfg: AlgoConfig) -> optax.GradientTransformation:
    return optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), optax.adam(cfg.lr))


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


def make_act(net: SableNet, step: Callable | None = None):
    """Recurrent acting with a fresh random agent order each step (see module docstring).

    ``step`` has ``net.act``'s signature (the default: sample or arg-max the policy head).
    """
    step = net.act if step is None else step

    def act(params, carry, obs, action_mask, active, reset, key, greedy=False):
        k_order, k_act = jax.random.split(key)
        order = jax.random.permutation(k_order, obs.shape[0])
        return step(params, carry, obs, action_mask, active, reset, k_act, order=order, greedy=greedy)

    return act


def assemble(cfg: AlgoConfig, network: dict, n_actions: int, loss_fn: Callable,
             act_step: Callable[[SableNet], Callable] | None = None) -> SableAlgorithm:
    """An algorithm from its config and ``loss_fn(params, target, batch, key, cfg, net, axis_name)``.

    The shared pieces: the Sable net (Q head per ``cfg``), clipped Adam, a target
    network exactly when the algorithm learns values, one stage ``train`` taking
    all of ``training.updates``, and the random-order ``act`` (``act_step(net)``
    replaces the policy-head step, e.g. acting on Q).
    """
    net = network_for(cfg, SableConfig.from_dict(dict(network)), n_actions)
    tx = make_optimizer(cfg)
    bound = lambda p, tp, b, k, axis_name=None: loss_fn(p, tp, b, k, cfg, net, axis_name)  # noqa: E731
    spec = {"name": cfg.name, "n_actions": n_actions, "algo": dataclasses.asdict(cfg),
            "network": dataclasses.asdict(net.cfg)}
    return SableAlgorithm(
        name=cfg.name, cfg=cfg, sampler=cfg.sampler(), init=make_init(net, tx, with_target=cfg.learns_values),
        stages=(Stage("train", gradient_stage(bound, tx, cfg.tau)),),
        act=make_act(net, None if act_step is None else act_step(net)), init_carry=net.init_carry, spec=spec,
        value_range_discount=cfg.gamma if cfg.learns_values and cfg.hl_gauss else None, net=net, loss=bound, tx=tx)


# ---------------------------------------------------------------- reductions

def global_sum(x, axis_name: str | None = None):
    """``x`` summed over the data-parallel shards (``x`` itself on one device). Never differentiated."""
    x = jax.lax.stop_gradient(x)
    return x if axis_name is None else jax.lax.psum(x, axis_name)


def global_max(x, axis_name: str | None = None):
    """``x`` maximised over the data-parallel shards (``x`` itself on one device). Never differentiated."""
    x = jax.lax.stop_gradient(x)
    return x if axis_name is None else jax.lax.pmax(x, axis_name)


def gather_batch(x, axis_name: str | None = None):
    """The global batch of ``x``: shards concatenated along axis 0 in device order. Never differentiated."""
    x = jax.lax.stop_gradient(x)
    return x if axis_name is None else jax.lax.all_gather(x, axis_name, tiled=True)


def masked_mean(x, weight, axis_name: str | None = None):
    """sum(x * w) / sum(w) over the global batch (0 if all weights are 0), for metrics.

    Entries with w == 0 never reach the result. Returns the same global value on
    every shard (no gradient through the shard sum: use ``task_mean`` for losses).
    """
    w = weight.astype(jnp.float32)
    x = jnp.where(w > 0, x, 0.0)
    return global_sum(jnp.sum(x * w), axis_name) / jnp.maximum(global_sum(jnp.sum(w), axis_name), 1e-8)


def task_mean(x, weight, task_ids, enabled: bool = True, axis_name: str | None = None):
    """Seed 004 eq. 1 over a batch: mean over tasks present of each task's masked mean.

    ``x``/``weight`` are (B, ...) with per-sample ``task_ids`` (B,). Tasks are
    grouped by comparing ids (no static task count needed); a task whose
    weights are all zero does not count as present. ``enabled=False`` gives
    the plain masked mean. Entries with weight 0 never reach the result or grads.

    The result is linear in ``x``: sum_i c_i * x_i with coefficients from the
    weights and task ids of the *global* batch (see the module docstring). With
    ``axis_name`` it is this shard's share; the shares sum to the global value.
    """
    w = weight.astype(jnp.float32)
    x = jnp.where(w > 0, x, 0.0)
    if not enabled:
        return jnp.sum(x * w) / jnp.maximum(global_sum(jnp.sum(w), axis_name), 1e-8)
    axes = tuple(range(1, x.ndim))
    num, den = jnp.sum(x * w, axis=axes), jnp.sum(w, axis=axes)           # (B,) this shard
    all_ids, all_den = gather_batch(task_ids, axis_name), gather_batch(den, axis_name)  # (B_global,)
    same_all = (all_ids[:, None] == all_ids[None, :]).astype(jnp.float32)
    all_t_den = same_all @ all_den                                       # each sample's task total weight
    n_tasks = jnp.sum(jnp.where(all_t_den > 0, 1.0 / same_all.sum(-1), 0.0))  # tasks present, globally
    t_den = (task_ids[:, None] == all_ids[None, :]).astype(jnp.float32) @ all_den  # (B,) this shard
    per_sample = jnp.where(t_den > 0, num / jnp.maximum(t_den, 1e-8), 0.0)  # its part of its task's mean
    return jnp.sum(per_sample) / jnp.maximum(n_tasks, 1e-8)


def batch_softmax(x, mask, temperature: float, axis: int = 0, axis_name: str | None = None):
    """Softmax of ``x / temperature`` along the batch ``axis`` over entries with ``mask`` (ICQ weights).

    Masked-out entries get weight 0 and do not change the others; a slice with
    no valid entry is all zeros. Weights of each slice sum to 1 over the global
    batch (``axis_name``: the shards' batch axis; ``axis`` must then be 0).
    No gradient flows through the weights.
    """
    if axis_name is not None and axis != 0:
        raise ValueError("a softmax across data-parallel shards must be over the batch axis 0")
    x = jax.lax.stop_gradient(x)
    z = jnp.where(mask, x / temperature, -jnp.inf)
    zmax = global_max(jnp.max(z, axis=axis, keepdims=True), axis_name)
    zmax = jnp.where(jnp.isfinite(zmax), zmax, 0.0)
    e = jnp.where(mask, jnp.exp(z - zmax), 0.0)
    return e / jnp.maximum(global_sum(jnp.sum(e, axis=axis, keepdims=True), axis_name), 1e-30)


def _same_task(task_ids, axis_name: str | None):
    """(B, B_global) float: 1 where this shard's sample and a global sample share a task."""
    all_ids = gather_batch(task_ids, axis_name)
    return (task_ids[:, None] == all_ids[None, :]).astype(jnp.float32)


def _task_total(x, same, axis_name: str | None):
    """For each sample of this shard, ``x`` (B, ...) summed over the global samples of its task."""
    return jnp.einsum("bg,g...->b...", same, gather_batch(x, axis_name))


def task_softmax(x, mask, temperature: float, task_ids, axis_name: str | None = None):
    """ICQ weights normalised within each task: ``(w, n)`` with ``n * w`` averaging 1 per task.

    Like :func:`batch_softmax` along the batch axis 0 (per position of the other
    axes), but each sample's softmax runs only over the samples of its own task,
    and ``n`` is that task's count of valid entries at the position. Without it a
    batch-wide softmax hands nearly all the weight to the task with the largest
    values once the critic has learned (issue 14, cause 2). Every task present at
    a position gets weights summing to 1 there. No gradient flows through them.
    """
    x = jax.lax.stop_gradient(x)
    same = _same_task(task_ids, axis_name)                               # (B, Bg)
    z = jnp.where(mask, x / temperature, -jnp.inf)
    z_all = gather_batch(z, axis_name)                                   # (Bg, ...)
    sel = same.reshape(same.shape + (1,) * (x.ndim - 1)) > 0
    zmax = jnp.max(jnp.where(sel, z_all[None], -jnp.inf), axis=1)        # (B, ...) its task's max
    zmax = jnp.where(jnp.isfinite(zmax), zmax, 0.0)
    e = jnp.where(mask, jnp.exp(z - zmax), 0.0)
    w = e / jnp.maximum(_task_total(e, same, axis_name), 1e-30)
    return w, _task_total(mask.astype(jnp.float32), same, axis_name)


def task_scale(x, mask, task_ids, axis_name: str | None = None, floor: float = 1e-3):
    """(B, 1, ...) standard deviation of ``x`` over each sample's task (masked, global batch), at least ``floor``.

    Dividing advantages by it makes a policy temperature mean the same thing on
    every task and at every stage of critic learning (issue 14: a return of ~7
    with action effects of a few hundredths gives flat weights at temperature 0.1).
    """
    x = jax.lax.stop_gradient(x)
    w = mask.astype(jnp.float32)
    axes = tuple(range(1, x.ndim))
    x = jnp.where(mask, x, 0.0)
    same = _same_task(task_ids, axis_name)
    s0, s1, s2 = (_task_total(jnp.sum(v, axis=axes), same, axis_name) for v in (w, x * w, x * x * w))
    mean = s1 / jnp.maximum(s0, 1.0)
    var = jnp.maximum(s2 / jnp.maximum(s0, 1.0) - mean * mean, 0.0)
    return jnp.maximum(jnp.sqrt(var), floor).reshape((-1,) + (1,) * (x.ndim - 1))


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
    instead of one, which is what a short training budget lacks (issue 14).
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
