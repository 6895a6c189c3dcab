"""Agent/observation padding so every task of a set shares one shape.

Padded agents sit after the real ones, see zeros, may only take the no-op,
and are flagged ``active=False`` so losses and metrics can drop them. Their
actions are cut off before the real environment steps, so they cannot change
what the real agents see or receive.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from mtmarl.envs.base import NOOP, MultiAgentEnv, Observation, TimeStep
from mtmarl.errors import UserInputError


class PaddedEnv:
    """``env`` seen with ``num_agents`` agents, ``obs_dim`` features, ``state_dim`` state."""

    def __init__(self, env: MultiAgentEnv, num_agents: int | None = None,
                 obs_dim: int | None = None, state_dim: int | None = None):
        self.inner = env
        self.num_agents = env.num_agents if num_agents is None else int(num_agents)
        self.obs_dim = env.obs_dim if obs_dim is None else int(obs_dim)
        self.state_dim = env.state_dim if state_dim is None else int(state_dim)
        for what, have, cap in (("agents", env.num_agents, self.num_agents),
                                ("observation size", env.obs_dim, self.obs_dim),
                                ("state size", env.state_dim, self.state_dim)):
            if have > cap:
                raise UserInputError(
                    f"{env!r} has {have} {what} but the padding allows at most {cap}; "
                    f"pad to at least {have} (e.g. evaluate the task on its own).")
        self.num_actions = env.num_actions
        self.horizon = env.horizon
        self.jumanji_env = env.jumanji_env

    def _pad(self, ts: TimeStep) -> TimeStep:
        n, pad_n = self.inner.num_agents, self.num_agents - self.inner.num_agents
        obs = ts.observation
        noop_only = jnp.zeros((pad_n, self.num_actions), bool).at[:, NOOP].set(True)
        padded = Observation(
            agents_view=jnp.pad(obs.agents_view, ((0, pad_n), (0, self.obs_dim - obs.agents_view.shape[1]))),
            action_mask=jnp.concatenate([obs.action_mask, noop_only]),
            active=jnp.arange(self.num_agents) < n,
            step_count=obs.step_count,
        )
        state = jnp.pad(ts.state, (0, self.state_dim - ts.state.shape[0]))
        return ts.replace(observation=padded, state=state)

    def reset(self, key) -> tuple[Any, TimeStep]:
        state, ts = self.inner.reset(key)
        return state, self._pad(ts)

    def step(self, state: Any, actions) -> tuple[Any, TimeStep]:
        state, ts = self.inner.step(state, actions[: self.inner.num_agents])
        return state, self._pad(ts)

    def animate(self, states: list, save_path: str) -> None:
        self.inner.animate(states, save_path)

    def __repr__(self) -> str:
        return f"PaddedEnv({self.inner!r}, agents={self.num_agents}, obs={self.obs_dim})"
