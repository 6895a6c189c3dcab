"""What an offline algorithm is, as far as the engine is concerned.

The training engine (batching, ``lax.scan`` + ``pmap``, checkpoints, logging,
evaluation) sees an algorithm only through :class:`Algorithm`; it never looks
at its name, network or losses. The shape follows optax's ``init``/``update``
pair, with the update split into stages:

* ``init(key, sample_obs) -> state``: the whole train state, any pytree (several
  parameter sets and optimiser states are fine; the engine only carries it).
  ``sample_obs`` is a (1, T, N, O) observation batch for shape inference.
* ``stages``: the phases of training in order, each a :class:`Stage` with its own
  ``update(state, batch, key, axis_name) -> (state, metrics)`` and update count
  (e.g. pretrain a skill encoder 1000 updates, then train the policy on the rest).
  Every stage update is traced into one ``lax.scan``; with ``axis_name`` (the
  pmap axis) the batch is this device's shard and the update must reduce over
  the axis itself (see ``mtmarl.algos.reductions``), so devices stay in step.
* ``sampler``: what it needs from a batch (batch size, sequence length, task
  balancing, agent shuffling and masking; ``mtmarl.data.batching.SamplerConfig``).
* ``act(params, carry, obs, action_mask, active, reset, key, greedy=False)
  -> (actions, aux, carry)`` for one environment step of all agents of one
  episode, ``init_carry(num_agents=None)`` its recurrent state at an episode's start (for an
  episode of ``num_agents`` agents; None: the spec's agent count; the evaluator plays each task
  at its own agent count, see ``mtmarl.evaluation.rollout``), and
  ``acting_params(state)``: the part of the train state that ``act`` reads.
  ``observe(params, carry, reward) -> carry`` folds the team reward received
  after each step into the carry (return-conditioned policies count their
  return-to-go down with it); by default the carry passes through unchanged.
* ``replay`` (optional, None where an algorithm lacks it): ``replay(params, carry0, obs, actions,
  legals, active, resets, keys) -> (logits, carry)``, the differentiable sequence form of ``act`` that
  online fine-tuning (``online.system=finetune``) trains through. Inputs are time-major over a batch of
  episodes: ``obs`` (T, B, N, O), ``actions`` (T, B, N) (the actions taken, folded into the carry after
  each step as ``act`` does), ``legals`` (T, B, N, A), ``active`` (T, B, N), ``resets`` (T, B) (True where
  a step starts an episode, ``act``'s ``reset``), ``keys`` (T, B, ...) the PRNG key ``act`` was given at
  each step (an algorithm whose acting draws randomness besides the action sample, such as the Sable
  algorithms' agent order, draws it again from them; others ignore them); ``carry0`` is ``act``'s carry
  before step 0 for each of the B episodes (leading axis B). Returns the masked logits ``act`` samples
  from at every step (T, B, N, A) and the carry after the last step. An algorithm with ``replay`` returns
  the masked logits it sampled from as ``act``'s ``aux``, so acting needs no second pass to score its action.
* ``spec``: plain JSON describing how to rebuild it (name, configs, action
  count and the padded EnvSpec), stored in every checkpoint so a run restores without its config.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

from mtmarl.errors import UserInputError
from mtmarl.evaluation.policies import ignore_reward


class Stage(NamedTuple):
    """One training phase: ``updates`` calls of ``update`` (None: whatever ``training.updates`` leaves).

    ``sampler``: this stage's batches when they differ from the algorithm's (e.g. skill discovery on
    shorter or larger batches than the policy stage); None uses ``Algorithm.sampler``. A stage needs
    no declaration of the batch fields it reads: fields it ignores are dead code XLA removes.
    """

    name: str
    update: Callable  # (state, batch, key, axis_name=None) -> (state, metrics dict of scalars)
    updates: int | float | None = None  # a float in (0, 1): that share of training.updates (plan_stages)
    sampler: Any = None  # mtmarl.data.batching.SamplerConfig | None


def _state_params(state):
    return state.params


@dataclasses.dataclass(frozen=True, kw_only=True)
class Algorithm:
    """An algorithm as the engine runs it (see the module docstring for each field's contract)."""

    name: str
    cfg: Any                    # its config dataclass (hyperparameters; tools may read it, the engine does not)
    sampler: Any                # mtmarl.data.batching.SamplerConfig
    init: Callable
    stages: tuple[Stage, ...]
    act: Callable
    init_carry: Callable
    spec: dict
    acting_params: Callable = _state_params
    observe: Callable = ignore_reward  # (params, carry, reward) -> carry, after every env step
    # Not None: its value support (config keys v_min, v_max) is set from the data's range of returns
    # discounted by this factor, unless training.value_range is 'config' (HL-Gauss heads).
    value_range_discount: float | None = None
    # (params, carry0, obs, actions, legals, active, resets, keys) -> (logits (T, B, N, A), carry); module docstring
    replay: Callable | None = None


class StageSpan(NamedTuple):
    """A stage with its update interval ``[start, end)`` (``end`` None: no fixed end)."""

    number: int  # position in ``Algorithm.stages`` (0 = first)
    stage: Stage
    start: int
    end: int | None


def plan_stages(stages: tuple[Stage, ...], total: int | None, chunk: int = 1) -> tuple[StageSpan, ...]:
    """The update interval of every stage for a run of ``total`` updates in calls of ``chunk``.

    At most one stage may leave its count open (``updates=None``); it takes what
    the others leave of ``total``. A count given as a float in (0, 1) is that share of
    ``total``, rounded to the nearest multiple of ``chunk``. With ``total=None`` (open-ended use, tests) only
    the last stage may be open. Every boundary must fall on a call boundary, since
    one compiled call runs one stage.
    """
    if not stages:
        raise UserInputError("an algorithm needs at least one stage")
    stages = tuple(s._replace(updates=_resolve_share(s, total, chunk)) for s in stages)
    counts = {s.name: s.updates for s in stages}
    open_ = [s.name for s in stages if s.updates is None]
    fixed = sum(int(s.updates) for s in stages if s.updates is not None)
    if len(open_) > 1:
        raise UserInputError(f"stages {open_} all leave their update count open; at most one may")
    if any(n is not None and n < 0 for n in counts.values()):
        raise UserInputError(f"stage update counts must be >= 0, got {counts}")
    if total is None:
        if open_ and open_[0] != stages[-1].name:
            raise UserInputError(f"without a total update count only the last stage may be open, got {counts}")
    elif (open_ and fixed > total) or (not open_ and fixed != total):
        raise UserInputError(f"training.updates={total} does not fit the stages' update counts {counts}"
                             + (" (the open stage takes the rest)" if open_ else " (they must sum to it)"))
    spans, start = [], 0
    for i, s in enumerate(stages):
        n = int(s.updates) if s.updates is not None else (None if total is None else total - fixed)  # shares resolved above
        end = None if n is None else start + n
        for edge in (start, end):
            if edge is not None and edge % chunk:
                raise UserInputError(f"stage {s.name!r} starts or ends at update {edge}, not a multiple of "
                                     f"training.updates_per_call={chunk} (stage counts: {counts})")
        spans.append(StageSpan(i, s, start, end))
        start = end if end is not None else start
    return tuple(spans)


def _resolve_share(stage: Stage, total: int | None, chunk: int):
    """A stage's update count, with a share of ``total`` (a float in (0, 1)) turned into a count."""
    n = stage.updates
    if n is None or isinstance(n, bool) or not isinstance(n, float) or n.is_integer():
        return None if n is None else int(n)
    if not 0.0 < n < 1.0:
        raise UserInputError(f"stage {stage.name!r}: a fractional update count is a share of training.updates "
                             f"in (0, 1), got {n}")
    if total is None:
        raise UserInputError(f"stage {stage.name!r} asks for a share {n} of the updates, but no total is set")
    return int(round(n * total / chunk)) * chunk


def stage_at(spans: tuple[StageSpan, ...], step: int) -> StageSpan:
    """The stage that runs update ``step + 1`` (``step`` updates done); the last one past the end."""
    for span in spans:
        if span.end is None or step < span.end:
            return span
    return spans[-1]
