"""Several Connector grids in one traced env: grid size and agent count become data.

Why: as for RWARE and LBF (:mod:`mtmarl.envs.rware_stack`), an evaluation program traced each grid's
Jumanji step (and its random-walk generator) on its own, and compile time grows with every traced copy.

How it stays Jumanji's Connector, draw for draw:

* The state is Jumanji's own ``State`` on a grid of the stack's largest size, the task's grid in its top-left
  corner and every other cell holding ``WALL`` (the path value of an agent that does not exist). Jumanji's
  rules read any non-empty cell that is not an agent's own target as blocked, which is what its grid edge
  does; its "surrounded cell" count sees a walled neighbour exactly as a missing one. Observations and the
  global state treat walled cells as off the grid.
* Extra agents stand connected (position = target) far off the grid: no moves, no reward, never in the way.
* Jumanji's random draws over cells (start cells, first moves) are weighted choices over the task's cells in
  the task's own row-major order, made over the largest grid with the extra cells weighted 0: the cumulative
  weights, and so the draw, are the task's own. Per-agent keys come from splits whose first keys are the
  task's (threefry's partitionable bits, JAX's default).

So a grid of the stack gets exactly the episodes Jumanji's env gives it for the same keys and actions
(tests/test_connector_stack.py checks every time step).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jumanji.environments.routing.connector import utils
from jumanji.environments.routing.connector.constants import PATH, POSITION, TARGET
from jumanji.environments.routing.connector.generator import RandomWalkGenerator
from jumanji.environments.routing.connector.types import Agent, State

from mtmarl.envs.base import MultiAgentEnv, Observation, TaskState, TimeStep
from mtmarl.envs.layout import EnvSpec

OFF = 10_000  # extra agents stand at (OFF + i, OFF): off every grid


class ConnectorStack(MultiAgentEnv):
    """``reset(key, task)`` plays grid ``envs[task]`` (``ConnectorEnv`` objects, random-walk generated), seen
    through the env's own conversions: ``view(grid, agents, off_grid)`` (``connector.agents_view``) and
    ``planes(grid)`` (``connector.owner_planes``)."""

    name = "connector"

    @staticmethod
    def can_stack(envs) -> bool:
        first = envs[0].jumanji_env
        return all(type(e.jumanji_env._generator) is RandomWalkGenerator and e.horizon == envs[0].horizon
                   and e.spec.obs == envs[0].spec.obs and type(e.jumanji_env._rewarder) is type(first._rewarder)
                   and vars(e.jumanji_env._rewarder) == vars(first._rewarder)
                   and e.jumanji_env._generator.temperature == first._generator.temperature for e in envs)

    def __init__(self, envs, view, planes):
        self.envs = list(envs)
        self._view, self._planes = view, planes
        raw = [e.jumanji_env for e in self.envs]
        gens = [r._generator for r in raw]
        self.horizon = self.envs[0].horizon
        self._rewarder = raw[0]._rewarder
        self._walker = gens[0]  # its action choice reads only the temperature, equal across the stack
        N, G = max(r.num_agents for r in raw), max(r.grid_size for r in raw)
        self._G = G
        self.wall = PATH + 3 * N  # the path value of agent N: an agent no task has
        self.spec = EnvSpec(N, self.envs[0].spec.obs, self.envs[0].spec.actions, state_dim=3 * G * G)
        self._grid = jnp.asarray([r.grid_size for r in raw], jnp.int32)
        self._agents = jnp.asarray([r.num_agents for r in raw], jnp.int32)
        self._max_steps = jnp.asarray([g.max_steps for g in gens], jnp.int32)

    # -- helpers at the task's size -------------------------------------------------------------------------------
    def _inside(self, G):
        rows = jnp.arange(self._G) < G
        return rows[:, None] & rows[None, :]

    def _cell_choice(self, key, mask, G):
        """Jumanji's ``choice(key, G * G, p=mask.flatten())`` over the task's cells: the task's cell i (its
        row-major order) is padded cell (i // G, i % G); cells past the task's count weigh 0."""
        i = jnp.arange(self._G * self._G)
        r, c = i // G, i % G
        p = (i < G * G) & mask[jnp.minimum(r, self._G - 1), c]
        pick = jax.random.choice(key, i.shape[0], p=p)
        return pick // G, pick % G

    def _far(self, count):
        return jnp.stack([OFF + jnp.arange(count), jnp.full((count,), OFF)], 1).astype(jnp.int32)

    # -- reset: Jumanji's random-walk generator -------------------------------------------------------------------
    def _start_and_first_move(self, G, n, carry, agent_id):
        """``RandomWalkGenerator._initialize_starts_and_first_move`` for agent ``agent_id`` (no-op past ``n``)."""
        key, grid = carry
        start_key, first_key, next_key = jax.random.split(key, 3)
        real = agent_id < n
        free = (grid == 0) & ~utils.get_surrounded_mask(grid)
        start = self._cell_choice(start_key, free, G)
        grid = jnp.where(real, grid.at[start].set(utils.get_path(agent_id)), grid)
        rows, cols = jnp.arange(self._G)[:, None], jnp.arange(self._G)[None, :]
        adjacent = (jnp.abs(rows - start[0]) + jnp.abs(cols - start[1]) == 1) & (rows < G) & (cols < G)
        first = self._cell_choice(first_key, adjacent & (grid == 0), G)
        grid = jnp.where(real, grid.at[first].set(utils.get_position(agent_id)), grid)
        return (next_key, grid), (jnp.stack(start), jnp.stack(first))

    def _walk(self, key, agents, action_mask, grid):
        """One step of the generator's random walk (``RandomWalkGenerator._step_agents``)."""
        keys = jax.random.split(key, self.num_agents)
        actions = jax.vmap(self._walker._select_action)(keys, action_mask, agents.start, agents.position)
        new = jax.vmap(utils.move_position)(agents.position, actions)
        new = jnp.where(utils.is_repeated_later(new)[:, None], agents.position, new)
        noop = jnp.all(new == agents.position, axis=-1)
        grid = (grid.at[tuple(agents.position.T)].add((PATH - POSITION) * ~noop, unique_indices=True, mode="drop")
                .at[tuple(new.T)].add(utils.get_position(agents.id) * ~noop, mode="drop"))
        return agents.replace(position=new), grid

    def reset(self, key, task) -> tuple[TaskState, TimeStep]:
        task = jnp.asarray(task, jnp.int32)
        N, G = self.num_agents, self._grid[task]
        n = self._agents[task]
        inside = self._inside(G)
        walls = jnp.where(inside, 0, self.wall).astype(jnp.int32)
        key, board_key = jax.random.split(key)
        init_key, step_key = jax.random.split(board_key)
        (_, grid), (starts, firsts) = jax.lax.scan(lambda c, i: self._start_and_first_move(G, n, c, i),
                                                   (init_key, walls), jnp.arange(N))
        real = (jnp.arange(N) < n)[:, None]
        starts, firsts = jnp.where(real, starts, self._far(N)), jnp.where(real, firsts, self._far(N))
        agents = jax.vmap(Agent)(id=jnp.arange(N), start=starts, target=jnp.full((N, 2), -1), position=firsts)
        agents = agents.replace(target=jnp.where(real, agents.target, firsts))  # extra agents: connected

        def walking(s):
            _, _, _, mask, count = s
            return mask[:, 1:].any() & (count < self._max_steps[task])

        def walk(s):
            k, grid, agents, mask, count = s
            k, next_k = jax.random.split(k)
            agents, grid = self._walk(k, agents, mask, grid)
            return next_k, grid, agents, utils.get_action_masks(agents, grid), count + 1

        _, grid, agents, _, _ = jax.lax.while_loop(
            walking, walk, (step_key, grid, agents, utils.get_action_masks(agents, grid), 1))
        ends = jnp.where(real, agents.position, self._far(N))
        agents = agents.replace(target=ends, position=agents.start)
        ids = jnp.arange(N)
        grid = (walls.at[tuple(agents.start.T)].set(utils.get_position(ids), mode="drop")
                .at[tuple(agents.target.T)].set(utils.get_target(ids), mode="drop"))
        st = State(grid=grid, step_count=jnp.zeros((), jnp.int32), agents=agents, key=key,
                   action_mask=utils.get_action_masks(agents, grid))
        zero = jnp.zeros((), bool)
        return TaskState(st, task), self._timestep(st, task, jnp.zeros((), jnp.float32), zero, zero)

    # -- step: Jumanji's step on the walled grid ----------------------------------------------------------------
    def step(self, state: TaskState, actions) -> tuple[TaskState, TimeStep]:
        st, task = state.inner, state.task
        active = jnp.arange(self.num_agents) < self._agents[task]
        actions = jnp.where(active, actions.astype(jnp.int32), 0)
        legal = st.action_mask[jnp.arange(self.num_agents), actions, None]
        new = jnp.where(legal, jax.vmap(utils.move_position)(st.agents.position, actions), st.agents.position)
        collided = utils.is_repeated_later(new)
        connecting = jax.vmap(utils.is_target)(st.grid[tuple(jnp.clip(new, 0, self._G - 1).T)])
        noop = jnp.all(new == st.agents.position, axis=-1)
        old_values = (PATH - POSITION) * ~noop
        new_values = (utils.get_position(st.agents.id) * ~connecting + (POSITION - TARGET) * connecting) * ~noop
        grid = (st.grid.at[tuple(st.agents.position.T)].add(old_values * ~collided, unique_indices=True, mode="drop")
                .at[tuple(new.T)].add(new_values * ~collided, mode="drop"))
        new = jnp.where(collided[:, None], st.agents.position, new)
        agents = st.agents.replace(position=new)
        mask = utils.get_action_masks(agents, grid)
        nxt = State(grid=grid, step_count=st.step_count + 1, agents=agents, key=st.key, action_mask=mask)
        reward = jnp.sum(jnp.where(active, self._rewarder(st, actions, nxt), 0.0)).astype(jnp.float32)
        done = jnp.all(jax.vmap(utils.connected_or_blocked)(agents, mask))
        return TaskState(nxt, task), self._timestep(nxt, task, reward, done,
                                                              ~done & (nxt.step_count >= self.horizon))

    def _timestep(self, st: State, task, reward, terminal, truncated) -> TimeStep:
        G = self._grid[task]
        inside = self._inside(G)
        active = jnp.arange(self.num_agents) < self._agents[task]
        view = jnp.where(active[:, None], self._view(st.grid, st.agents, ~inside), 0.0)
        planes = self._planes(jnp.where(inside, st.grid, 0))  # (3, Gmax, Gmax) -> the task's own (3, G, G) order
        k = jnp.arange(3 * self._G * self._G)
        plane, cell = k // (G * G), k % (G * G)
        r, c = cell // G, cell % G
        state = jnp.where(k < 3 * G * G, planes[jnp.minimum(plane, 2), jnp.minimum(r, self._G - 1), c], 0.0)
        mask = jnp.where(active[:, None], st.action_mask, jnp.arange(5) == 0)
        return TimeStep(
            observation=Observation(agents_view=view, action_mask=mask, active=active,
                                    step_count=st.step_count.astype(jnp.int32)),
            reward=reward,
            terminal=terminal,
            truncated=truncated,
            state=state,
            success=jnp.zeros((), bool),
        )

    def __repr__(self) -> str:
        return f"ConnectorStack({len(self.envs)} grids, agents<={self.num_agents}, grid<={self._G})"
