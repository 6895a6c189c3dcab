"""Anakin-style learner: K updates per call, scanned inside one jit, pmapped over devices.

Every call of :meth:`Learner.run` performs ``K`` gradient updates as one
``lax.scan`` compiled into one program that ``pmap`` runs on every device.
Sampling happens inside that program, from the task buffers already on the
devices, so the host only dispatches one call per ``K`` updates.

Data parallelism: the global batch ``B`` is split over the ``D`` devices. All
devices carry the same PRNG key, so each draws the *same* global batch
(a cheap gather) and keeps its slice ``[d*B/D, (d+1)*B/D)``; the union of the
slices is exactly the single-device batch.

The update is exact, not the usual data-parallel approximation: each
algorithm's loss is called with the pmap axis name, and every reduction over
the batch axis (per-task means and their normalisers, ICQ's batch-softmax
weights and counts, metric means and maxima) is taken over the global batch
with collectives (``mtmarl.algos.common``). The loss each device returns is its
share of the global loss (the shares sum to it), so the global gradient is the
``lax.psum`` of the devices' gradients; metrics come back already global.
Every device then applies the same clipped Adam step, parameters stay
identical, and 1 and 2 devices give the same update up to float rounding
(tests/test_training.py checks all three algorithms).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mtmarl.algos.common import Algo, TrainState, global_sum, polyak
from mtmarl.data.batching import Buffers, SamplerConfig, sample
from mtmarl.errors import UserInputError

AXIS = "devices"


class Carry(NamedTuple):
    """What a run carries between calls (replicated over devices inside the engine)."""

    state: TrainState
    key: jax.Array  # raw uint32 PRNG key (jax.random.PRNGKey), checkpointable as an array


def shard_batch(batch, index, num_devices: int):
    """Slice ``index`` of ``num_devices`` equal slices along the batch axis of every leaf."""
    def cut(x):
        per = x.shape[0] // num_devices
        return jax.lax.dynamic_slice_in_dim(x, index * per, per, axis=0)
    return jax.tree.map(cut, batch)


def make_update_step(algo: Algo, sampler: SamplerConfig, num_devices: int, axis_name: str | None = AXIS):
    """``step(carry, buffers) -> (carry, metrics)``: sample, grad, psum, Adam, Polyak (traceable)."""
    tx, tau = algo.tx, algo.cfg.tau

    def step(carry: Carry, buffers: Buffers):
        state = carry.state
        key, k_sample, k_loss = jax.random.split(carry.key, 3)
        batch = sample(buffers, k_sample, state.step, sampler)
        if num_devices > 1:
            batch = shard_batch(batch, jax.lax.axis_index(axis_name), num_devices)
        (loss, metrics), grads = jax.value_and_grad(algo.loss, has_aux=True)(
            state.params, state.target_params, batch, k_loss, axis_name=axis_name)
        # loss and grads are this device's shares of the global ones; metrics are already global
        metrics = dict(metrics, loss=global_sum(loss, axis_name))
        if axis_name is not None:
            grads = jax.lax.psum(grads, axis_name)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        target = None if state.target_params is None else polyak(params, state.target_params, tau)
        metrics["grad_norm"] = optax.tree.norm(grads)
        return Carry(TrainState(params, target, opt_state, state.step + 1), key), metrics

    return step


@dataclasses.dataclass
class Learner:
    """Compiled training loop for one algorithm and one set of buffers.

    ``init(seed)`` -> host :class:`Carry`; ``run(carry)`` -> (carry, metrics) after
    ``updates_per_call`` more updates (metrics averaged over them, as numpy).
    Carries passed in and out are host-side (unreplicated) pytrees, so they
    checkpoint and compare directly; device copies are kept between calls.
    """

    algo: Algo
    buffers: Buffers
    sampler: SamplerConfig
    updates_per_call: int = 10
    num_devices: int | None = None

    def __post_init__(self):
        self.devices = jax.local_devices()[: self.num_devices or jax.local_device_count()]
        self.num_devices = n = len(self.devices)
        if self.sampler.batch_size % n:
            raise UserInputError(f"batch_size {self.sampler.batch_size} must be divisible by the "
                                 f"{n} devices (set training.devices or the batch size)")
        if self.updates_per_call < 1:
            raise UserInputError(f"updates_per_call must be >= 1, got {self.updates_per_call}")
        step = make_update_step(self.algo, self.sampler, n)
        K = self.updates_per_call

        def chunk(carry, buffers):
            carry, metrics = jax.lax.scan(lambda c, _: step(c, buffers), carry, None, length=K)
            return carry, jax.tree.map(jnp.mean, metrics)

        self._chunk = jax.pmap(chunk, axis_name=AXIS, devices=self.devices, donate_argnums=(0,))
        self._buffers = self.replicate(self.buffers)
        self._device_carry = None
        self._host_carry_id = None

    # ------------------------------------------------------------ replication
    def replicate(self, tree):
        """A (D, ...) stacked copy of ``tree`` laid out one slice per device."""
        n = self.num_devices

        sharding = jax.sharding.NamedSharding(jax.sharding.Mesh(np.asarray(self.devices), (AXIS,)),
                                              jax.sharding.PartitionSpec(AXIS))

        def rep(x):
            x = np.asarray(x)
            return jax.device_put(np.broadcast_to(x, (n,) + x.shape), sharding)
        return jax.tree.map(rep, tree)

    @staticmethod
    def unreplicate(tree):
        return jax.tree.map(lambda x: np.asarray(x[0]), jax.device_get(tree))

    # ------------------------------------------------------------ API
    def init(self, seed: int) -> Carry:
        """Fresh parameters and optimiser state (the same for any device count)."""
        key = jax.random.PRNGKey(seed)
        key, k_init, k_sample = jax.random.split(key, 3)
        sample_obs = self.buffers.decode_obs(self.buffers.obs[:1, : self.sampler.seq_len])  # (1, T, N, O)
        state = jax.jit(self.algo.init)(k_init, _ObsOnly(sample_obs))
        return jax.device_get(Carry(state, key))

    def run(self, carry: Carry) -> tuple[Carry, dict[str, float]]:
        """``updates_per_call`` updates from ``carry`` (host pytree); returns host carry + metrics."""
        dev = self.replicate(carry)
        dev, metrics = self._chunk(dev, self._buffers)
        return self.unreplicate(dev), {k: float(v) for k, v in self.unreplicate(metrics).items()}


class _ObsOnly(NamedTuple):
    """``algo.init`` only reads ``sample_batch.obs``."""

    obs: jax.Array


def tree_max_abs_diff(a, b) -> float:
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
