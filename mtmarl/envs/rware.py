"""RobotWarehouse: Jumanji's per-agent sensor vector, coordinates rescaled."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jumanji.environments import RobotWarehouse
from jumanji.environments.routing.robot_warehouse.generator import RandomGenerator
from jumanji.environments.routing.robot_warehouse.utils import is_collision

from mtmarl.envs.base import JumanjiEnv
from mtmarl.envs.registry import register
from mtmarl.envs.rware_stack import RwareStack, permutes_in_one_round
from mtmarl.errors import UserInputError
from mtmarl.task_params import MAX_AGENTS, MAX_SIZE, MAX_STEPS, integer, optional_integer

# Jumanji's view starts with the agent's absolute (x, y) cell; every other
# feature is a 0/1 flag. Dividing the coordinates by a fixed 16 keeps them near
# unit scale for every layout we use without fitting anything per task.
COORD_SCALE = 16.0


def scaled_view(view):
    """Jumanji's (n, O) integer view as floats with the coordinates rescaled (see ``COORD_SCALE``)."""
    return view.astype(jnp.float32).at[:, :2].divide(COORD_SCALE)


class HostLayoutGenerator(RandomGenerator):
    """Jumanji's random RWARE generator with the fixed warehouse layout computed in NumPy.

    Why: Jumanji derives the layout (highways, shelf cells, goals) with eager ``jnp`` ops when the env is
    built, and every op compiles a small XLA program for that grid's shape: about 0.4 s per task, 9 of the
    16 s it took to build rware_15's 23 tasks. The same arrays from NumPy cost nothing to compile; episodes
    are still drawn by Jumanji's own ``__call__``. tests/test_envs.py checks every array against Jumanji's.
    """

    def _make_warehouse(self) -> None:
        rows, cols = self._grid_size
        x, y = np.indices((rows, cols), dtype=np.int32)
        h = self.column_height
        highways = ((y % 3 == 0) | (x % (h + 1) == 0) | (x == rows - 1)
                    | ((x > rows - (h + 3)) & ((y == cols // 2 - 1) | (y == cols // 2))))
        shelves = np.argwhere(~highways).astype(np.int32)
        self._goals = jnp.asarray(np.array([(cols // 2 - 1, rows - 1), (cols // 2, rows - 1)], np.int32))
        self._highways = jnp.asarray(highways)
        self._shelf_positions = jnp.asarray(shelves)
        self._shelf_ids = jnp.asarray(np.arange(len(shelves), dtype=np.int32))
        self._not_in_queue_size = jnp.asarray(np.int32(len(shelves) - self.request_queue_size))


@register("rware")
class RwareEnv(JumanjiEnv):
    name = "rware"
    TASK_PARAMS = {"rows": integer(1, MAX_SIZE), "cols": integer(1, MAX_SIZE), "height": integer(1, MAX_SIZE),
                   "agents": integer(1, MAX_AGENTS), "sensor": integer(1, MAX_SIZE), "request": optional_integer(1),
                   "horizon": integer(1, MAX_STEPS)}

    @classmethod
    def check_layout(cls, p):
        if not {"rows", "cols", "height"} <= p.keys():
            return
        if p["cols"] % 2 == 0:
            raise UserInputError(f"cols={p['cols']} must be odd (RWARE puts an aisle between column pairs)")
        # Jumanji's layout: two shelf columns per cluster, minus the cluster in front of the goals.
        shelves = 2 * p["height"] * (p["rows"] * p["cols"] - 1)
        request = p.get("request")
        what = f"request={request}"
        if request is None and "agents" in p:
            request, what = p["agents"], f"request (default agents={p['agents']})"
        if request is not None and request > shelves:
            raise UserInputError(f"{what} exceeds the {shelves} shelves of rows={p['rows']}, cols={p['cols']}, "
                                 f"height={p['height']}")

    def __init__(self, rows: int, cols: int, height: int, agents: int,
                 sensor: int = 1, request: int | None = None, horizon: int = 500):
        gen = HostLayoutGenerator(
            shelf_rows=rows, shelf_columns=cols, column_height=height,
            num_agents=agents, sensor_range=sensor,
            request_queue_size=agents if request is None else request,
        )
        super().__init__(RobotWarehouse(generator=gen, time_limit=horizon), horizon)
        self._blocks = (rows, cols, height)

    def size_property(self) -> int:
        return int(self.jumanji_env.shelf_ids.shape[0])

    def describe_layout(self) -> str:
        rows, cols, height = self._blocks
        return f"{rows}x{cols} shelf blocks of {height} ({self.size_property()} shelves)"

    def agents_view(self, state, raw_obs):
        return scaled_view(raw_obs.agents_view)

    @classmethod
    def stack(cls, envs):
        """All layouts in one traced env (:class:`mtmarl.envs.rware_stack.RwareStack`); they must share the
        horizon, sensor range and observation layout, and fit a grid of at most 1625 cells."""
        first = envs[0]
        if any(e.horizon != first.horizon or e.spec.obs != first.spec.obs
               or e.jumanji_env.sensor_range != first.jumanji_env.sensor_range for e in envs):
            return None
        rows, cols = (max(e.jumanji_env.grid_size[i] for e in envs) for i in (0, 1))
        if not permutes_in_one_round(rows * cols):  # its draws could not be replayed: trace each layout
            return None
        return RwareStack(envs, scaled_view)

    def ended_by_rules(self, state, ts):
        """A collision. Jumanji gives discount 0 at the time limit too, so the
        discount cannot tell a collision on the last step from a plain timeout."""
        ids = jnp.arange(self.num_agents)
        return jnp.any(jax.vmap(functools.partial(is_collision, state.grid))(state.agents, ids))
