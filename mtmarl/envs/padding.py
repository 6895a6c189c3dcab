"""Padding so every task of a set shares one shape: agents, entity groups, targeted actions.

Padded agents sit after the real ones, see zeros, may only take the env's
no-op, and are flagged ``active=False`` so losses and metrics can drop them.
Their actions are cut off before the real environment steps, so they cannot
change what the real agents see or receive. Within an observation row each
entity group is padded in place (``ObsLayout.pad``: entity k keeps its slot,
missing entities and features are zeros), and actions that target an entity
that does not exist in this task are illegal and map to the no-op.
"""

from __future__ import annotations

from typing import Any

import dataclasses

import jax.numpy as jnp

from mtmarl.envs.base import MultiAgentEnv, Observation, TimeStep
from mtmarl.envs.layout import EnvSpec, ObsLayout
from mtmarl.errors import UserInputError


class PaddedEnv(MultiAgentEnv):
    """``env`` seen with the shapes of ``spec`` (a task set's joined spec).

    ``num_agents`` / ``obs_dim`` / ``state_dim`` override single sizes (``obs_dim``
    only for flat observations: e.g. a trained network's input size).
    """

    def __init__(self, env: MultiAgentEnv, spec: EnvSpec | None = None, *, num_agents: int | None = None,
                 obs_dim: int | None = None, state_dim: int | None = None):
        self.inner = env
        spec = env.spec if spec is None else spec
        if obs_dim is not None:
            if not spec.obs.is_flat:
                raise UserInputError(f"{env!r} has entity-group observations; pad it with its set's layout, "
                                     f"not a flat obs_dim={obs_dim}")
            spec = dataclasses.replace(spec, obs=ObsLayout.flat(obs_dim))
        spec = dataclasses.replace(spec, num_agents=spec.num_agents if num_agents is None else int(num_agents),
                                   state_dim=spec.state_dim if state_dim is None else int(state_dim))
        for what, have, cap in (("agents", env.num_agents, spec.num_agents),
                                ("observation size", env.obs_dim, spec.obs_dim),
                                ("state size", env.state_dim, spec.state_dim)):
            if have > cap:
                raise UserInputError(
                    f"{env!r} has {have} {what} but the target layout allows at most {cap}; "
                    f"pad to at least {have} (e.g. evaluate the task on its own).")
        env.spec.obs.check_fits(spec.obs)
        self.spec = spec
        self._action_src, self._action_valid = env.spec.actions.action_map(spec.actions)
        self._same_actions = env.spec.actions == spec.actions  # Jumanji envs: no gather needed
        self.horizon = env.horizon
        self.name = env.name

    @property
    def jumanji_env(self):
        return self.inner.jumanji_env

    def _pad(self, ts: TimeStep) -> TimeStep:
        pad_n = self.num_agents - self.inner.num_agents
        obs = ts.observation
        mask = obs.action_mask if self._same_actions else obs.action_mask[:, self._action_src] & self._action_valid
        noop_only = jnp.zeros((pad_n, self.num_actions), bool).at[:, self.noop].set(True)
        view = self.inner.spec.obs.pad(obs.agents_view, self.spec.obs)
        padded = Observation(
            agents_view=jnp.pad(view, ((0, pad_n), (0, 0))),
            action_mask=jnp.concatenate([mask, noop_only]),
            active=jnp.concatenate([obs.active, jnp.zeros((pad_n,), bool)]),
            step_count=obs.step_count,
        )
        state = jnp.pad(ts.state, (0, self.state_dim - ts.state.shape[0]))
        return ts.replace(observation=padded, state=state)

    def reset(self, key, *task) -> tuple[Any, TimeStep]:
        """``task``: the task index when the inner env is a stacked one (``MultiAgentEnv.stack``)."""
        state, ts = self.inner.reset(key, *task)
        return state, self._pad(ts)

    @classmethod
    def stack(cls, envs) -> "PaddedEnv | None":
        """The inner envs stacked (if their class can), seen with the same padding as each of ``envs``."""
        envs = list(envs)
        first = envs[0]
        if any(type(e) is not cls or e.spec != first.spec or type(e.inner) is not type(first.inner) for e in envs):
            return None
        stacked = type(first.inner).stack([e.inner for e in envs])
        return None if stacked is None else cls(stacked, first.spec)

    def step(self, state: Any, actions) -> tuple[Any, TimeStep]:
        inner_actions = actions[: self.inner.num_agents]
        if not self._same_actions:
            inner_actions = jnp.asarray(self._action_src)[inner_actions]
        state, ts = self.inner.step(state, inner_actions)
        return state, self._pad(ts)

    def animate(self, states: list, save_path: str) -> None:
        self.inner.animate(states, save_path)

    def __repr__(self) -> str:
        return f"PaddedEnv({self.inner!r}, agents={self.num_agents}, obs={self.obs_dim})"


def pad_to_network(env: MultiAgentEnv, target: EnvSpec, network: str) -> MultiAgentEnv:
    """``env`` seen with ``target``, the layout a trained network reads (``network`` says whose, e.g.
    ``online.init_from=<run>``); a task larger than that layout is refused in one line naming both sizes,
    since no padding can shrink a task to fit a network."""
    if env.spec == target:
        return env
    try:
        return PaddedEnv(env, target)
    except UserInputError as err:
        reason = str(err).split("; ")[0]  # the misfit itself, without PaddedEnv's advice to pad further
        raise UserInputError(f"task {env.name} does not fit the network of {network} ({reason}); that network "
                             f"reads at most {target.num_agents} agents with observations of size {target.obs_dim}: "
                             f"fine-tune a task that fits, or pretrain on a task set that holds tasks this "
                             f"large") from None
