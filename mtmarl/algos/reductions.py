"""Reductions over a batch for losses and metrics: masked and task-balanced means, ICQ softmaxes.

Loss reduction (the multi-task Oryx paper's eq. 1): with ``task_mean=True`` each task's elements
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

import jax
import jax.numpy as jnp


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


def batch_noise(draw, key, shape, axis_name: str | None = None):
    """Random numbers for this shard's rows of the batch: ``draw(key, shape)`` (e.g. ``jax.random.gumbel``)
    made for the global batch (``shape[0]`` rows per shard, shards in device order) and this shard's rows
    taken, so one device and several draw the same numbers for the same sample."""
    if axis_name is None:
        return draw(key, shape)
    shards, index = jax.lax.psum(1, axis_name), jax.lax.axis_index(axis_name)
    return jax.lax.dynamic_slice_in_dim(draw(key, (shape[0] * shards, *shape[1:])), index * shape[0], shape[0], 0)


def masked_mean(x, weight, axis_name: str | None = None):
    """sum(x * w) / sum(w) over the global batch (0 if all weights are 0), for metrics.

    Entries with w == 0 never reach the result. Returns the same global value on
    every shard (no gradient through the shard sum: use ``task_mean`` for losses).
    """
    w = weight.astype(jnp.float32)
    x = jnp.where(w > 0, x, 0.0)
    return global_sum(jnp.sum(x * w), axis_name) / jnp.maximum(global_sum(jnp.sum(w), axis_name), 1e-8)


def task_mean(x, weight, task_ids, enabled: bool = True, axis_name: str | None = None):
    """The multi-task Oryx paper's eq. 1 over a batch: mean over tasks present of each task's masked mean.

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
    values once the critic has learned. Every task present at
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
    every task and at every stage of critic learning (a return of ~7
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
