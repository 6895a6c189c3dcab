"""Connector: a per-agent, grid-size-invariant view of Jumanji's global grid.

Jumanji gives one global grid (agent i's path/head/target coded 3i+1/3i+2/
3i+3), whose size changes with the task. We crop a fixed
window around the agent's head instead, so the view has the same length on
every grid, and add the offset to the agent's own target (which is often
outside the window).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jumanji.environments import Connector
from jumanji.environments.routing.connector.generator import RandomWalkGenerator

from mtmarl.envs.base import JumanjiEnv

RADIUS = 2  # window is (2*RADIUS+1)^2 cells around the agent's head
OFFSET_SCALE = 10.0  # target offsets are divided by this fixed constant
MAX_AGENT_ID = 12  # ids in the global state are divided by this (tasks have <= 12 agents)
NUM_CHANNELS = 5  # own path, own target, others' path/head, others' targets, off-grid


def _window_channels(grid: jax.Array, agent: jax.Array) -> jax.Array:
    """Global grid (G, G) -> (5, G, G) binary channels from agent ``agent``'s side."""
    owner, kind = (grid - 1) // 3, (grid - 1) % 3  # kind: 0 path, 1 head, 2 target
    other = (grid > 0) & (owner != agent)
    return jnp.stack([
        grid == 3 * agent + 1,
        grid == 3 * agent + 3,
        other & (kind != 2),
        other & (kind == 2),
        jnp.zeros_like(grid, bool),
    ]).astype(jnp.float32)


def _crop(channels: jax.Array, pos: jax.Array) -> jax.Array:
    """Window of size 2R+1 around pos; cells off the grid have only the off-grid flag."""
    r = RADIUS
    padded = jnp.pad(channels, ((0, 0), (r, r), (r, r)))
    padded = padded.at[-1].set(jnp.pad(jnp.zeros(channels.shape[1:]), r, constant_values=1.0))
    return jax.lax.dynamic_slice(padded, (0, pos[0], pos[1]), (NUM_CHANNELS, 2 * r + 1, 2 * r + 1))


class ConnectorEnv(JumanjiEnv):
    name = "connector"

    def __init__(self, grid: int, agents: int, horizon: int = 50):
        env = Connector(generator=RandomWalkGenerator(grid_size=grid, num_agents=agents),
                        time_limit=horizon)
        super().__init__(env, horizon)

    def size_property(self) -> int:
        return int(self.jumanji_env._generator.grid_size)

    def describe_layout(self) -> str:
        grid = self.size_property()
        return f"{grid}x{grid} grid"

    def agents_view(self, state, raw_obs):
        agents = state.agents
        crop = lambda i, p: _crop(_window_channels(raw_obs.grid, i), p)
        windows = jax.vmap(crop)(jnp.arange(self.num_agents), agents.position)
        offset = (agents.target - agents.position).astype(jnp.float32) / OFFSET_SCALE
        connected = jnp.all(agents.position == agents.target, axis=-1, keepdims=True)
        return jnp.concatenate(
            [windows.reshape(windows.shape[0], -1), offset, connected.astype(jnp.float32)], axis=-1)

    def global_state(self, state):
        """Owner id of every path, head and target cell: (3 * G * G,) in [0, 1]."""
        g = state.grid
        owner = jnp.where(g > 0, (g - 1) // 3 + 1, 0).astype(jnp.float32) / MAX_AGENT_ID
        kind = jnp.where(g > 0, (g - 1) % 3, -1)
        return jnp.stack([owner * (kind == k) for k in range(3)]).reshape(-1)
