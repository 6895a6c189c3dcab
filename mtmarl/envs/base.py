"""One multi-agent interface over the Jumanji environments mtmarl uses.

Every environment (and the padded view of it) is a pair of pure functions,
``reset(key)`` and ``step(state, actions)``, returning a :class:`TimeStep` whose
arrays have static shapes, so whole rollouts compile into one ``jit``.
"""

from __future__ import annotations

import abc
from typing import Any

import chex
import jax
import jax.numpy as jnp
from flax import struct

# Index of the "do nothing" action; it is 0 in RWARE, LBF and Connector alike,
# which is why padded agents can share one convention.
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

    @property
    def done(self) -> chex.Array:
        return self.terminal | self.truncated


class MultiAgentEnv(abc.ABC):
    """A Jumanji environment seen through mtmarl's interface.

    Subclasses convert Jumanji's observation into a flat per-agent vector and a
    team reward; the env state is Jumanji's own state (so Jumanji's viewers can
    animate it). ``ended_by_rules`` says whether the task's own rules ended the
    episode; any other end (the time limit) is reported as a truncation.
    """

    name: str = "base"

    def __init__(self, jumanji_env: Any, horizon: int):
        self.jumanji_env = jumanji_env
        self.horizon = int(horizon)
        self.num_agents = int(jumanji_env.num_agents)
        self.num_actions = int(jumanji_env.action_spec.num_values[0])
        state, ts = jax.eval_shape(jumanji_env.reset, jax.random.PRNGKey(0))
        view = jax.eval_shape(self.agents_view, state, ts.observation)
        gstate = jax.eval_shape(self.global_state, state)
        self.obs_dim = int(view.shape[-1])
        self.state_dim = int(gstate.shape[-1])

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
        )

    def reset(self, key: chex.PRNGKey) -> tuple[Any, TimeStep]:
        state, ts = self.jumanji_env.reset(key)
        return state, self._convert(state, ts)

    def step(self, state: Any, actions: chex.Array) -> tuple[Any, TimeStep]:
        state, ts = self.jumanji_env.step(state, actions.astype(jnp.int32))
        return state, self._convert(state, ts)

    def animate(self, states: list, save_path: str) -> None:
        self.jumanji_env.animate(states, interval=150, save_path=save_path)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(agents={self.num_agents}, obs={self.obs_dim}, "
            f"actions={self.num_actions}, state={self.state_dim}, horizon={self.horizon})"
        )
