"""PPO pieces as pure functions: GAE, clipped surrogate, clipped value loss, masked entropy.

Arrays are time-major where time matters (``gae``); the losses take any shape
and average over all entries (optionally weighted by a 0/1 ``weight`` array,
e.g. to drop padded agents).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

NEG_INF = -1e9


@dataclasses.dataclass(frozen=True)
class PPOSettings:
    """What every online PPO system shares: rollouts, optimisation and recording.

    Frozen (hashable), so a compiled system can be cached per config. Subclasses add
    their network's fields and set ``system`` (the ``online.system`` switch).
    """

    system: str = ""
    num_envs: int = 16  # envs per device
    rollout_len: int = 32
    epochs: int = 4
    minibatches: int = 2
    lr: float = 5e-4
    lr_decay_updates: int | None = None  # the lr falls linearly to 0 over this many updates (None: constant)
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_eps: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    clip_per_network: bool = False  # clip each top-level entry of the params (MAPPO: actor, critic) on its own norm
    resets_per_env: int = 4  # reset pool entries per env per update; an env whose episodes end more often than
                             # this replays its row's start states (the curve's replayed_starts share)
    updates_per_chunk: int = 10  # K: one compiled call; a recording follows each chunk
    record_envs: int = 8  # R (total over devices)
    record_len: int = 128  # T steps per recorded env
    record_resets: int | None = None  # pool entries per recorded env; None = record_len // 5 + 1
    tt_threshold: float | None = None  # time to threshold: env steps until the logged return first reaches it

    SYSTEM = ""  # the subclass's online.system name
    FOREIGN = ()  # other systems' keys: a typo hint that the preset is wrong

    def __post_init__(self):
        from mtmarl.errors import UserInputError
        if self.system != self.SYSTEM:
            raise UserInputError(f"{type(self).__name__} is for online.system={self.SYSTEM}, got {self.system!r}")
        if not isinstance(self.clip_per_network, bool):
            raise UserInputError(f"online.clip_per_network must be true or false, got {self.clip_per_network!r}")
        decay = self.lr_decay_updates
        if decay is not None and (isinstance(decay, bool) or not isinstance(decay, int) or decay < 1):
            raise UserInputError(f"online.lr_decay_updates={decay!r}; allowed: null (a constant lr) or an integer "
                                 ">= 1 (updates over which the lr falls linearly to 0)")

    @classmethod
    def from_mapping(cls, cfg):
        """From a config mapping; unknown keys are a user error listing the valid ones."""
        from mtmarl.errors import UserInputError
        fields = {f.name for f in dataclasses.fields(cls)}
        kw = {"system": cls.SYSTEM, **dict(cfg)}
        unknown = sorted(set(kw) - fields)
        if unknown:
            hint = (f" (settings of another system: select its preset, e.g. online={kw['system']})"
                    if set(cls.FOREIGN) & set(unknown) else "")
            raise UserInputError(f"unknown online setting(s) {', '.join(unknown)} for {cls.SYSTEM}{hint}; "
                                 f"valid: {', '.join(sorted(fields))}")
        return cls(**cls.coerce(kw))

    @staticmethod
    def coerce(kw: dict) -> dict:
        return kw

    def optimiser(self) -> optax.GradientTransformation:
        """Adam behind a global-norm clip. With ``lr_decay_updates`` the step size falls linearly to 0 over
        that many updates (each of ``epochs x minibatches`` steps), as JaxMARL's SMAX MAPPO anneals it.

        The clip scales a gradient g to ``g * min(1, max_grad_norm / |g|)``. One norm over actor and critic
        lets a large value-loss gradient shrink the policy's step; ``clip_per_network`` takes the norm of
        each top-level entry of the params apart (JaxMARL's SMAX MAPPO: one optimiser per network). Adam is
        per coordinate, so only the clip differs."""
        lr: float | optax.Schedule = self.lr
        if self.lr_decay_updates is not None:
            lr = optax.linear_schedule(self.lr, 0.0, self.lr_decay_updates * self.epochs * self.minibatches)
        clip = clip_each_entry(self.max_grad_norm) if self.clip_per_network else \
            optax.clip_by_global_norm(self.max_grad_norm)
        return optax.chain(clip, optax.adam(lr, eps=1e-5))


def clip_each_entry(max_norm: float) -> optax.GradientTransformation:
    """``optax.clip_by_global_norm`` applied to each top-level entry of a dict of gradients on its own."""
    whole = optax.clip_by_global_norm(max_norm)

    def update(updates, state, params=None):
        return {key: whole.update(sub, whole.init(sub))[0] for key, sub in updates.items()}, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def gae(rewards: jax.Array, values: jax.Array, next_values: jax.Array, terminals: jax.Array,
        dones: jax.Array, gamma: float, lam: float) -> tuple[jax.Array, jax.Array]:
    """Generalised advantage estimation over a (T, ...) trajectory.

    ``values[t]`` is V(s_t); ``next_values[t]`` is V of the observation that really
    followed step t (before any auto-reset), so a time-limit truncation still
    bootstraps. ``terminals[t]`` cuts the bootstrap (the task ended by its rules);
    ``dones[t]`` (terminal or truncated) cuts the advantage recursion, since the
    next row belongs to a new episode. Returns (advantages, value targets).
    """
    not_term = 1.0 - terminals.astype(values.dtype)
    not_done = 1.0 - dones.astype(values.dtype)
    deltas = rewards + gamma * not_term * next_values - values

    def back(carry, x):
        delta, nd = x
        adv = delta + gamma * lam * nd * carry
        return adv, adv

    _, adv = jax.lax.scan(back, jnp.zeros_like(values[0]), (deltas, not_done), reverse=True)
    return adv, adv + values


def masked_log_softmax(logits: jax.Array, action_mask: jax.Array) -> jax.Array:
    """Log-probabilities with illegal actions at (finite) -1e9, so 0 * logp stays 0."""
    return jax.nn.log_softmax(jnp.where(action_mask, logits, NEG_INF), axis=-1)


def log_prob(logits: jax.Array, action_mask: jax.Array, actions: jax.Array) -> jax.Array:
    logp = masked_log_softmax(logits, action_mask)
    return jnp.take_along_axis(logp, actions[..., None].astype(jnp.int32), axis=-1)[..., 0]


def entropy(logits: jax.Array, action_mask: jax.Array) -> jax.Array:
    """Entropy of the masked categorical (illegal actions carry no mass)."""
    logp = masked_log_softmax(logits, action_mask)
    return -jnp.sum(jnp.where(action_mask, jnp.exp(logp) * logp, 0.0), axis=-1)


def _mean(x: jax.Array, weight: jax.Array | None) -> jax.Array:
    if weight is None:
        return jnp.mean(x)
    weight = jnp.broadcast_to(weight, x.shape).astype(x.dtype)
    return jnp.sum(x * weight) / jnp.maximum(jnp.sum(weight), 1.0)


def clipped_surrogate(logp: jax.Array, old_logp: jax.Array, advantages: jax.Array, clip_eps: float,
                      weight: jax.Array | None = None) -> jax.Array:
    """PPO policy loss ``-E[min(r A, clip(r, 1-eps, 1+eps) A)]`` with ``r = exp(logp - old_logp)``."""
    ratio = jnp.exp(logp - old_logp)
    unclipped = ratio * advantages
    clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantages
    return -_mean(jnp.minimum(unclipped, clipped), weight)


def clipped_value_loss(values: jax.Array, old_values: jax.Array, targets: jax.Array, clip_eps: float,
                       weight: jax.Array | None = None) -> jax.Array:
    """``0.5 E[max((v - G)^2, (v_old + clip(v - v_old, -eps, eps) - G)^2)]``."""
    clipped = old_values + jnp.clip(values - old_values, -clip_eps, clip_eps)
    return 0.5 * _mean(jnp.maximum((values - targets) ** 2, (clipped - targets) ** 2), weight)


class LossInfo(NamedTuple):
    total: jax.Array
    policy: jax.Array
    value: jax.Array
    entropy: jax.Array
    approx_kl: jax.Array
    clip_frac: jax.Array
    extra: dict = {}  # a learner's own scalar diagnostics (e.g. fine-tuning's KL to the pretrained policy)


def per_agent(advantages: jax.Array, like: jax.Array) -> jax.Array:
    """A team advantage (...) or per-agent advantages (..., N) as the (..., N) array of every agent."""
    return jnp.broadcast_to(advantages.reshape(advantages.shape + (1,) * (like.ndim - advantages.ndim)), like.shape)


def ppo_loss(logits: jax.Array, action_mask: jax.Array, actions: jax.Array, old_logp: jax.Array,
             advantages: jax.Array, values: jax.Array, old_values: jax.Array, targets: jax.Array,
             clip_eps: float, vf_coef: float, ent_coef: float,
             weight: jax.Array | None = None, value_weight: jax.Array | None = None) -> LossInfo:
    """Total PPO loss = policy + vf_coef * value - ent_coef * entropy, with diagnostics.

    Policy terms are per agent (``logits`` (..., N, A); ``advantages`` a team advantage (...) or per-agent
    ones (..., N), see :func:`per_agent`); the value terms have the critic's own shape.
    """
    logp = log_prob(logits, action_mask, actions)
    adv = per_agent(advantages, logp)
    pol = clipped_surrogate(logp, old_logp, adv, clip_eps, weight)
    val = clipped_value_loss(values, old_values, targets, clip_eps, value_weight)
    ent = _mean(entropy(logits, action_mask), weight)
    log_ratio = logp - old_logp
    kl = _mean(jnp.exp(log_ratio) - 1.0 - log_ratio, weight)
    clip_frac = _mean((jnp.abs(jnp.exp(log_ratio) - 1.0) > clip_eps).astype(jnp.float32), weight)
    total = pol + vf_coef * val - ent_coef * ent
    return LossInfo(total, pol, val, ent, kl, clip_frac)


def optimise(loss_fn, tx, params, opt_state, data, key: jax.Array, epochs: int, minibatches: int,
             axis_name: str):
    """``epochs`` passes of shuffled minibatch steps over ``data`` (a tuple, leading axis = samples).

    ``loss_fn(params, *minibatch) -> (loss, info)``; gradients are averaged over ``axis_name``
    (the pmap axis). Returns ``((params, opt_state), infos)`` with infos stacked (epochs, minibatches).
    """
    n = jax.tree.leaves(data)[0].shape[0]

    def epoch(carry, ekey):
        perm = jax.random.permutation(ekey, n)
        mbs = jax.tree.map(lambda x: x[perm].reshape((minibatches, n // minibatches) + x.shape[1:]), data)

        def minibatch(carry, mb):
            params, opt_state = carry
            grads, info = jax.grad(loss_fn, has_aux=True)(params, *mb)
            grads = jax.lax.pmean(grads, axis_name)
            upd, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, upd), opt_state), info

        return jax.lax.scan(minibatch, carry, mbs)

    return jax.lax.scan(epoch, (params, opt_state), jax.random.split(key, epochs))
