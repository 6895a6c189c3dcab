"""Anakin-style learner: K updates per call, scanned inside one jit, pmapped over devices.

The engine runs any :class:`~mtmarl.algos.protocol.Algorithm` and knows nothing
else of it: it samples what ``algo.sampler`` (or the stage's own sampler) asks for, calls the current
stage's ``update`` and carries the train state, the PRNG key and the update
count. Every call of :meth:`Learner.run` performs ``K`` updates of one stage as
one ``lax.scan`` compiled into one program that ``pmap`` runs on every device
(each stage compiles its own program on first use). Sampling happens inside
that program, from the task buffers already on the devices, so the host only
dispatches one call per ``K`` updates.

Data parallelism: the global batch ``B`` is split over the ``D`` devices. All
devices carry the same PRNG key, so each draws the *same* global batch
(a cheap gather) and keeps its slice ``[d*B/D, (d+1)*B/D)``; the union of the
slices is exactly the single-device batch.

The update is exact, not the usual data-parallel approximation: a stage update
is called with the pmap axis name and reduces over it. For the Sable algorithms
(``mtmarl.algos.common.gradient_stage``, ``mtmarl.algos.reductions``) every reduction over the batch axis
(per-task means and their normalisers, ICQ's batch-softmax weights and counts,
metric means and maxima) is taken over the global batch with collectives, the
loss each device returns is its share of the global loss, so the global
gradient is the ``lax.psum`` of the devices' gradients, and metrics come back
already global. Every device then applies the same clipped Adam step,
parameters stay identical, and 1 and 2 devices give the same update up to
float rounding (tests/test_training.py checks all three algorithms).

Several processes (``mtmarl.distributed``): the devices are then the global
device list, process 0's first, and the same ``pmap`` spans all of them, its
collectives crossing processes. Nothing else changes, so a device's work does
not depend on where it lives: every process holds every training vault (the
buffers are replicated on each device, as within one process), every device
carries the same key and takes slice ``d`` of the same global batch by its
*global* axis index ``d``. The global batch is therefore not duplicated across
processes (no per-process key is needed, and none is folded in: it would make
the batch depend on the process layout), and 2 processes of 1 device train the
same parameters as 1 process of 2 devices (tests/test_distributed.py).

Seeds side by side (``population`` S > 1, ``training.population``): the carry gets a
leading seed axis and the program ``vmap``s the update over it, every seed drawing its
own batches (its own key) from the same buffers. A small-batch learner on a GPU is
bound by kernel launches, not arithmetic, so S seeds in one program cost about what
one does there; on a CPU they cost about S times one, as separate runs would. Seed
``i`` of a population started at ``seed`` trains exactly what a run of ``seed + i``
alone trains (tests/test_training.py).

Task shards (``training.shard_data=true``): the learner is given one
:class:`~mtmarl.data.batching.Buffers` per local device instead, each holding only that
device's tasks (``mtmarl.data.batching.shard_tasks``), so a process stores and reads
only its share of the vaults. Each device then draws its own ``B / D`` sequences from
its tasks with the common key folded with its *global* axis index, so again the
process layout does not change what is trained (tests/test_distributed.py).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mtmarl.algos.protocol import Algorithm, Stage, StageSpan, plan_stages, stage_at
from mtmarl.data.batching import Buffers, SamplerConfig, sample
from mtmarl.errors import UserInputError

AXIS = "devices"


class Carry(NamedTuple):
    """What a run carries between calls (replicated over devices inside the engine)."""

    # Leaves are device arrays inside the engine, numpy on the host, ShapeDtypeStructs as restore templates.
    state: Any  # the algorithm's train state (any pytree)
    key: Any    # raw uint32 PRNG key (jax.random.PRNGKey), checkpointable as an array
    step: Any   # int32 updates done (the sampler's task rotation and the stage follow it)


def shard_batch(batch, index, num_devices: int):
    """Slice ``index`` of ``num_devices`` equal slices along the batch axis of every leaf."""
    def cut(x):
        per = x.shape[0] // num_devices
        return jax.lax.dynamic_slice_in_dim(x, index * per, per, axis=0)
    return jax.tree.map(cut, batch)


def make_update_step(stage: Stage, sampler: SamplerConfig, num_devices: int, axis_name: str | None = AXIS,
                     sharded: bool = False):
    """``step(carry, buffers) -> (carry, metrics)``: sample, shard, the stage's update (traceable).

    ``sharded``: ``buffers`` are this device's task shard; it samples its own slice of the batch.
    """
    local = dataclasses.replace(sampler, batch_size=sampler.batch_size // num_devices)

    def step(carry: Carry, buffers: Buffers):
        key, k_sample, k_update = jax.random.split(carry.key, 3)
        if sharded:
            index = jax.lax.axis_index(axis_name) if num_devices > 1 else 0
            batch = sample(buffers, jax.random.fold_in(k_sample, index), carry.step, local)
        else:
            batch = sample(buffers, k_sample, carry.step, sampler)
        if num_devices > 1 and not sharded:
            batch = shard_batch(batch, jax.lax.axis_index(axis_name), num_devices)
        state, metrics = stage.update(carry.state, batch, k_update, axis_name=axis_name)
        return Carry(state, key, carry.step + 1), metrics

    return step


def learner_devices(num_devices: int | None) -> list:
    """The first ``num_devices`` local devices; with several processes, every process's devices (global order)."""
    if jax.process_count() == 1:
        return jax.local_devices()[: num_devices or jax.local_device_count()]
    if num_devices is not None:
        raise UserInputError(f"training.devices={num_devices} with {jax.process_count()} processes: the learner "
                             f"uses every device of every process; leave training.devices unset")
    return jax.devices()


@dataclasses.dataclass
class Learner:
    """Compiled training loop for one algorithm and one set of buffers.

    ``init(seed)`` -> host :class:`Carry`; ``run(carry)`` -> (carry, metrics) after
    ``updates_per_call`` more updates of the stage due at ``carry.step`` (metrics
    averaged over them, as numpy). ``updates`` is the run's total, which fixes
    the stage plan (``mtmarl.algos.protocol.plan_stages``); None leaves the last
    stage open. Every stage compiles its own program, on its first call.
    Carries passed in and out are host-side (unreplicated) pytrees, so they
    checkpoint and compare directly.
    """

    algo: Algorithm
    buffers: Buffers | list[Buffers]  # a list: one task shard per local device, in learner device order
    updates_per_call: int = 10
    num_devices: int | None = None
    updates: int | None = None
    population: int = 1  # seeds trained side by side in one program (a leading seed axis on the carry)

    def __post_init__(self):
        self.devices = learner_devices(self.num_devices)
        self.num_devices = n = len(self.devices)
        self.sampler = self.algo.sampler
        for stage in self.algo.stages:
            if self.sampler_of(stage).batch_size % n:
                raise UserInputError(f"batch_size {self.sampler_of(stage).batch_size} (stage {stage.name!r}) must "
                                     f"be divisible by the {n} devices (set training.devices or the batch size)")
        if self.updates_per_call < 1:
            raise UserInputError(f"updates_per_call must be >= 1, got {self.updates_per_call}")
        if self.population < 1:
            raise UserInputError(f"training.population must be >= 1, got {self.population}")
        self.plan = plan_stages(self.algo.stages, self.updates, self.updates_per_call)
        self._chunks: dict[int, Any] = {}
        self.sharded = not isinstance(self.buffers, Buffers)  # (Buffers is itself a tuple)
        self._buffers = self.distribute(self.buffers) if self.sharded else self.replicate(self.buffers)

    def _chunk(self, span: StageSpan):
        """The pmapped program of ``K`` updates of one stage, compiled on first use."""
        if span.number not in self._chunks:
            step = make_update_step(span.stage, self.sampler_of(span.stage), len(self.devices), sharded=self.sharded)
            if self.population > 1:  # every seed's carry through the same update, the buffers shared
                step = jax.vmap(step, in_axes=(0, None))
            K = self.updates_per_call

            def chunk(carry, buffers):
                carry, metrics = jax.lax.scan(lambda c, _: step(c, buffers), carry, None, length=K)
                return carry, jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics)  # per seed with a population

            self._chunks[span.number] = jax.pmap(chunk, axis_name=AXIS, devices=self.devices, donate_argnums=(0,))
        return self._chunks[span.number]

    def sampler_of(self, stage: Stage) -> SamplerConfig:
        return self.sampler if stage.sampler is None else stage.sampler

    def stage(self, done: int) -> StageSpan:
        """The stage that runs after ``done`` updates."""
        return stage_at(self.plan, done)

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

    def distribute(self, shards):
        """One task shard per local device (``shards[i]`` for this process's ``i``-th learner device),
        as (D, ...) arrays whose slice ``d`` lives on device ``d``."""
        mine = [d for d in self.devices if d.process_index == jax.process_index()]
        if len(shards) != len(mine):
            raise UserInputError(f"{len(shards)} task shards for this process's {len(mine)} learner devices")
        sharding = jax.sharding.NamedSharding(jax.sharding.Mesh(np.asarray(self.devices), (AXIS,)),
                                              jax.sharding.PartitionSpec(AXIS))

        def place(*xs):
            xs = [np.asarray(x) for x in xs]
            return jax.make_array_from_single_device_arrays(
                (self.num_devices, *xs[0].shape), sharding, [jax.device_put(x[None], d) for x, d in zip(xs, mine)])
        return jax.tree.map(place, *shards)

    @staticmethod
    def unreplicate(tree):
        """Device 0's copy, as numpy; with several processes, this process's first device's copy (the same)."""
        if jax.process_count() == 1:
            return jax.tree.map(lambda x: np.asarray(x[0]), jax.device_get(tree))
        return jax.tree.map(lambda x: np.asarray(x.addressable_shards[0].data)[0], tree)

    # ------------------------------------------------------------ API
    def init(self, seed: int) -> Carry:
        """Fresh train state (the same for any device count); with a population, seeds ``seed .. seed+S-1``
        stacked on a leading axis, each as :meth:`init` of that seed alone would make it."""
        if self.population == 1:
            return self._init_one(seed)
        carries = [self._init_one(seed + i) for i in range(self.population)]
        return jax.tree.map(lambda *xs: np.stack(xs), *carries)

    def _init_one(self, seed: int) -> Carry:
        key = jax.random.PRNGKey(seed)
        key, k_init, k_sample = jax.random.split(key, 3)
        first = self.buffers if isinstance(self.buffers, Buffers) else self.buffers[0]
        sample_obs = first.decode_obs(jnp.asarray(first.obs[:1, : self.sampler.seq_len]))  # (1, T, N, O)
        state = jax.jit(self.algo.init)(k_init, sample_obs)
        return jax.device_get(Carry(state, key, np.zeros((), np.int32)))

    def run(self, carry: Carry) -> tuple[Carry, dict[str, Any]]:
        """``updates_per_call`` updates from ``carry`` (host pytree); returns host carry + metrics
        (floats; with a population, one numpy value per seed)."""
        done = updates_done(carry)
        span = self.stage(done)
        if span.end is not None and done >= span.end:
            raise UserInputError(f"all {span.end} updates of the stage plan are done; nothing left to run")
        dev = self.replicate(carry)
        dev, metrics = self._chunk(span)(dev, self._buffers)
        metrics = self.unreplicate(metrics)
        if self.population == 1:
            return self.unreplicate(dev), {k: float(v) for k, v in metrics.items()}
        return self.unreplicate(dev), {k: np.asarray(v, np.float64) for k, v in metrics.items()}


def updates_done(carry: Carry) -> int:
    """Updates a carry has done (every seed of a population has done the same)."""
    return int(np.asarray(carry.step).reshape(-1)[0])


def seed_slice(tree, i: int):
    """Seed ``i``'s part of a population's pytree (carry, state or metrics)."""
    return jax.tree.map(lambda x: x[i], tree)


def tree_max_abs_diff(a, b) -> float:
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
