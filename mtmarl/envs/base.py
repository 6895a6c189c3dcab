"""The environment protocol: one multi-agent interface for every env mtmarl steps.

Every environment (and the padded view of it) is a pair of pure functions,
``reset(key)`` and ``step(state, actions)``, returning a :class:`TimeStep` whose
arrays have static shapes, so whole rollouts compile into one ``jit``. Beside
them an env declares its shapes as data (:class:`mtmarl.envs.layout.EnvSpec`:
observation entity groups, targeted actions, no-op, global state, whether it
reports success), which is all padding, buffers and networks read.

:class:`MultiAgentEnv` is the protocol; :class:`JumanjiEnv` adapts a Jumanji
environment to it (RWARE, LBF, Connector), converting its observation into a
flat per-agent row and its rewards into one team reward.
"""

from __future__ import annotations

import abc
from typing import Any, Callable, ClassVar, Mapping

import chex
import jax
import jax.numpy as jnp
from flax import struct

from mtmarl.envs.layout import ActionLayout, EnvSpec, ObsLayout
from mtmarl.errors import UserInputError

# Index of the "do nothing" action of RWARE, LBF and Connector (JumanjiEnv's declared no-op).
NOOP = 0


@struct.dataclass
class Observation:
    """What a policy sees at one step (per agent rows, padded agents included)."""

    agents_view: chex.Array  # (N, O) float32, standardised
    action_mask: chex.Array  # (N, A) bool, legal actions
    active: chex.Array  # (N,) bool, False for padded agents
    step_count: chex.Array  # () int32, steps taken in this episode


@struct.dataclass
class TimeStep:
    observation: Observation
    reward: chex.Array  # () float32, shared team reward of the last transition
    terminal: chex.Array  # () bool, the episode ended by the task's own rules
    truncated: chex.Array  # () bool, the episode hit the time limit
    state: chex.Array  # (S,) float32 global state; S == 0 when the env has none
    success: chex.Array  # () bool, the episode was won (envs with EnvSpec.has_success; else False)

    @property
    def done(self) -> chex.Array:
        return self.terminal | self.truncated


@struct.dataclass
class TaskState:
    """A stacked env's state (``MultiAgentEnv.stack``): the env's own state at the stack's sizes, and which
    of its tasks this episode plays."""

    inner: Any
    task: chex.Array  # () int32


class MultiAgentEnv(abc.ABC):
    """The protocol: pure ``reset``/``step`` plus the shapes declared in ``spec``.

    A subclass sets ``name``, ``horizon`` (the time limit) and ``spec`` and
    implements ``reset``/``step``; everything else derives from ``spec``.
    """

    name: str = "base"
    horizon: int
    spec: EnvSpec
    # Its task parameters (the constructor's arguments) -> ``parse(key, value)``, the typed value or a
    # UserInputError naming key, value and what is allowed (mtmarl.task_params). None: typed from the
    # constructor's annotations (int and bool checked, anything else kept as given).
    TASK_PARAMS: ClassVar[Mapping[str, Callable[[str, Any], Any]] | None] = None
    # Where the reward makes a win readable from an episode's return: the return above which it was won (so a
    # dataset's win count can be recounted from its arrays, e.g. for a cut of it). None: not readable.
    WIN_RETURN: ClassVar[float | None] = None

    @classmethod
    def check_layout(cls, params: Mapping[str, Any]) -> None:
        """Raise :class:`UserInputError` for typed task parameters that give no valid level (called before
        the env is built; a key may be missing, which :func:`mtmarl.envs.make` reports). The default accepts
        every layout."""

    @abc.abstractmethod
    def reset(self, key: chex.PRNGKey) -> tuple[Any, TimeStep]:
        """A new episode: (env state, first time step)."""

    @abc.abstractmethod
    def step(self, state: Any, actions: chex.Array) -> tuple[Any, TimeStep]:
        """``actions``: (num_agents,) int32 indices into the action layout."""

    @classmethod
    def stack(cls, envs: list["MultiAgentEnv"]) -> "MultiAgentEnv | None":
        """One env that plays any of ``envs`` (tasks of this class) in one trace, or None if it cannot.

        The stacked env's ``reset(key, task)`` takes the task's index in ``envs`` (traced) and its state
        remembers it; ``step`` is as usual; its spec is one every task pads into. An evaluation program
        then traces one env step for all its tasks instead of one per task (XLA compile time grows with
        each traced step). The default is None: the tasks are then traced one by one. RWARE, LBF, Connector
        and SMAX stack (``mtmarl/envs/*_stack.py``).
        """
        return None

    @property
    def num_agents(self) -> int:
        return self.spec.num_agents

    @property
    def obs_dim(self) -> int:
        return self.spec.obs_dim

    @property
    def num_actions(self) -> int:
        return self.spec.num_actions

    @property
    def state_dim(self) -> int:
        return self.spec.state_dim

    @property
    def noop(self) -> int:
        return self.spec.actions.noop

    def animate(self, states: list, save_path: str) -> None:
        raise UserInputError(f"{self.name} episodes cannot be rendered (render=true works for the Jumanji envs)")

    def describe_layout(self) -> str:
        """One line on the task's level (shown by ``python -m mtmarl.tasks``)."""
        return ""

    def size_property(self) -> int:
        """The task property the multi-task Oryx paper's Fig. 3 plots against agent count (shelves, level, grid size)."""
        return 0

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(agents={self.num_agents}, obs={self.obs_dim}, "
            f"actions={self.num_actions}, state={self.state_dim}, horizon={self.horizon})"
        )


class JumanjiEnv(MultiAgentEnv):
    """A Jumanji environment seen through mtmarl's interface.

    Subclasses convert Jumanji's observation into a flat per-agent vector and a
    team reward; the env state is Jumanji's own state (so Jumanji's viewers can
    animate it). ``ended_by_rules`` says whether the task's own rules ended the
    episode; any other end (the time limit) is reported as a truncation.
    """

    def __init__(self, jumanji_env: Any, horizon: int):
        self.jumanji_env = jumanji_env
        self.horizon = int(horizon)
        actions = ActionLayout(basic=int(jumanji_env.action_spec.num_values[0]), noop=NOOP)
        # The agent count is known now; the sizes come from tracing the conversions, which may read it.
        self.spec = EnvSpec(int(jumanji_env.num_agents), ObsLayout.flat(0), actions)
        state, ts = jax.eval_shape(jumanji_env.reset, jax.random.PRNGKey(0))
        view = jax.eval_shape(self.agents_view, state, ts.observation)
        gstate = jax.eval_shape(self.global_state, state)
        self.spec = EnvSpec(self.spec.num_agents, ObsLayout.flat(int(view.shape[-1])), actions,
                            state_dim=int(gstate.shape[-1]))

    # -- per-env conversions -------------------------------------------------
    @abc.abstractmethod
    def agents_view(self, state: Any, raw_obs: Any) -> chex.Array:
        """(n, O) float32 standardised per-agent observation."""

    def action_mask(self, state: Any, raw_obs: Any) -> chex.Array:
        return raw_obs.action_mask

    def team_reward(self, raw_reward: chex.Array) -> chex.Array:
        """Shared scalar reward (per-agent rewards are summed)."""
        return jnp.sum(raw_reward).astype(jnp.float32)

    def ended_by_rules(self, state: Any, ts: Any) -> chex.Array:
        """Jumanji marks a termination with discount 0 (all agents)."""
        return jnp.all(ts.discount == 0)

    def global_state(self, state: Any) -> chex.Array:
        """(S,) global state; envs without one return a length-0 vector."""
        return jnp.zeros((0,), jnp.float32)

    # -- the interface ---------------------------------------------------------
    def _convert(self, state: Any, ts: Any) -> TimeStep:
        steps = ts.observation.step_count.astype(jnp.int32)
        last = ts.last()
        ended = last & self.ended_by_rules(state, ts)
        obs = Observation(
            agents_view=self.agents_view(state, ts.observation),
            action_mask=self.action_mask(state, ts.observation).astype(bool),
            active=jnp.ones((self.num_agents,), bool),
            step_count=steps,
        )
        return TimeStep(
            observation=obs,
            reward=self.team_reward(ts.reward),
            terminal=ended,
            truncated=last & ~ended,
            state=self.global_state(state),
            success=jnp.zeros((), bool),
        )

    def reset(self, key: chex.PRNGKey) -> tuple[Any, TimeStep]:
        state, ts = self.jumanji_env.reset(key)
        return state, self._convert(state, ts)

    def step(self, state: Any, actions: chex.Array) -> tuple[Any, TimeStep]:
        state, ts = self.jumanji_env.step(state, actions.astype(jnp.int32))
        return state, self._convert(state, ts)

    def animate(self, states: list, save_path: str) -> None:
        self.jumanji_env.animate(states, interval=150, save_path=save_path)
