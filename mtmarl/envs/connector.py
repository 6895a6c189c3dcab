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
from mtmarl.envs.connector_stack import ConnectorStack
from mtmarl.envs.registry import register
from mtmarl.errors import UserInputError
from mtmarl.task_params import MAX_AGENTS, MAX_SIZE, MAX_STEPS, integer

RADIUS = 2  # window is (2*RADIUS+1)^2 cells around the agent's head
OFFSET_SCALE = 10.0  # target offsets are divided by this fixed constant
MAX_AGENT_ID = 12  # ids in the global state are divided by this (tasks have <= 12 agents)
NUM_CHANNELS = 5  # own path, own target, others' path/head, others' targets, off-grid


def _window_channels(grid: jax.Array, agent: jax.Array, off_grid: jax.Array) -> jax.Array:
    """Global grid (G, G) -> (5, G, G) binary channels from agent ``agent``'s side; ``off_grid`` (G, G) marks
    cells that are not part of the task's grid (none for a task alone; its padding in a stack)."""
    grid = jnp.where(off_grid, 0, grid)
    owner, kind = (grid - 1) // 3, (grid - 1) % 3  # kind: 0 path, 1 head, 2 target
    other = (grid > 0) & (owner != agent)
    return jnp.stack([
        grid == 3 * agent + 1,
        grid == 3 * agent + 3,
        other & (kind != 2),
        other & (kind == 2),
        off_grid,
    ]).astype(jnp.float32)


def _crop(channels: jax.Array, pos: jax.Array) -> jax.Array:
    """Window of size 2R+1 around pos; cells off the grid have only the off-grid flag."""
    r = RADIUS
    padded = jnp.pad(channels, ((0, 0), (r, r), (r, r)))
    padded = padded.at[-1].set(jnp.pad(channels[-1], r, constant_values=1.0))
    return jax.lax.dynamic_slice(padded, (0, pos[0], pos[1]), (NUM_CHANNELS, 2 * r + 1, 2 * r + 1))


def agents_view(grid: jax.Array, agents, off_grid: jax.Array) -> jax.Array:
    """(n, O): each agent's window, the offset to its own target and whether it is connected."""
    crop = lambda i, p: _crop(_window_channels(grid, i, off_grid), p)  # noqa: E731
    windows = jax.vmap(crop)(agents.id, agents.position)
    offset = (agents.target - agents.position).astype(jnp.float32) / OFFSET_SCALE
    connected = jnp.all(agents.position == agents.target, axis=-1, keepdims=True)
    return jnp.concatenate([windows.reshape(windows.shape[0], -1), offset, connected.astype(jnp.float32)], axis=-1)


def owner_planes(grid: jax.Array) -> jax.Array:
    """(3, G, G): the owner id of every path, head and target cell, in [0, 1]."""
    owner = jnp.where(grid > 0, (grid - 1) // 3 + 1, 0).astype(jnp.float32) / MAX_AGENT_ID
    kind = jnp.where(grid > 0, (grid - 1) % 3, -1)
    return jnp.stack([owner * (kind == k) for k in range(3)])


@register("connector")
class ConnectorEnv(JumanjiEnv):
    name = "connector"
    TASK_PARAMS = {"grid": integer(2, MAX_SIZE), "agents": integer(1, MAX_AGENTS), "horizon": integer(1, MAX_STEPS)}

    @classmethod
    def check_layout(cls, p):
        if not {"grid", "agents"} <= p.keys():
            return
        # Every agent needs its own start and target cell.
        if p["grid"] ** 2 < 2 * p["agents"]:
            raise UserInputError(f"grid={p['grid']} has {p['grid'] ** 2} cells, too few for agents={p['agents']} "
                                 f"(each needs a start and a target: grid^2 >= 2 * agents)")

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
        return agents_view(raw_obs.grid, state.agents, jnp.zeros(raw_obs.grid.shape, bool))

    def global_state(self, state):
        """Owner id of every path, head and target cell: (3 * G * G,) in [0, 1]."""
        return owner_planes(state.grid).reshape(-1)

    @classmethod
    def stack(cls, envs):
        """All grids in one traced env (:class:`mtmarl.envs.connector_stack.ConnectorStack`); they must share the
        horizon, observation layout, reward and generator kind."""
        return ConnectorStack(envs, agents_view, owner_planes) if ConnectorStack.can_stack(envs) else None
