"""Several LBF levels in one traced env: grid size, agents, food and levels become data.

Why: as for RWARE (:mod:`mtmarl.envs.rware_stack`), an evaluation program traced each level's Jumanji step
on its own, and compile time grows with every traced step. Here every level of an evaluation group is
played through one step traced once.

How it stays Jumanji's LBF, draw for draw:

* The state is Jumanji's own ``State`` with the stack's largest agent and food counts: extra agents stand far
  off the grid at level 0 (never adjacent, never in the way, only the no-op legal); extra food is eaten and at
  level 0 (no reward, never in the way, and "all food eaten" still ends the episode).
* Jumanji's own movement, collision, loading, eating and reward code runs on these arrays with the level's
  grid size as data. The grid observation is redone on a grid padded for the largest level, with every cell
  past the level's edge inaccessible, as Jumanji marks the cells past its own edge.
* Reset replays Jumanji's generator: its draws (food cells one by one, agents without replacement weighted by
  a mask, levels) are made for the stack's largest sizes, where JAX's threefry bits (partitionable, JAX's
  default) give the level's own draws as a prefix, with cells numbered in the level's own row length.

So a level of the stack gets exactly the episodes Jumanji's env gives it for the same keys and actions
(tests/test_lbf_stack.py checks every time step).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jumanji.environments.routing.lbf import utils
from jumanji.environments.routing.lbf.types import Agent, Food, State

from mtmarl.envs.base import MultiAgentEnv, NOOP, Observation, TaskState, TimeStep
from mtmarl.envs.layout import EnvSpec

FAR = -1000  # extra agents and food stand at (FAR - i, FAR): off every grid, never adjacent to anything


class LbfStack(MultiAgentEnv):
    """``reset(key, task)`` plays level ``envs[task]`` (``LbfEnv`` objects with one horizon and field of view);
    ``view`` turns Jumanji's (n, 3, k, k) grid view into the env's observation rows (``lbf.scaled_view``)."""

    name = "lbf"

    def __init__(self, envs, view):
        self.envs = list(envs)
        self._view = view
        raw = [e.jumanji_env for e in self.envs]
        gens = [r._generator for r in raw]
        self.horizon = self.envs[0].horizon
        self.fov = raw[0].fov
        self._reward_of = raw[0].get_reward  # reads normalize_reward and penalty only: equal across the stack
        N, F, G = max(r.num_agents for r in raw), max(r.num_food for r in raw), max(r.grid_size for r in raw)
        self.spec = EnvSpec(N, self.envs[0].spec.obs, self.envs[0].spec.actions, state_dim=self.envs[0].state_dim)
        self._F, self._G = F, G
        self._grid = jnp.asarray([r.grid_size for r in raw], jnp.int32)
        self._agents = jnp.asarray([r.num_agents for r in raw], jnp.int32)
        self._food = jnp.asarray([r.num_food for r in raw], jnp.int32)
        self._max_level = jnp.asarray([g.max_agent_level for g in gens], jnp.int32)
        self._coop = jnp.asarray([bool(g.force_coop) for g in gens])

    # -- reset: Jumanji's generator, its draws for the largest sizes --------------------------------------------
    def _food_cells(self, key, G, F):
        """``RandomGenerator.sample_food``: F cells one by one off the edges, none next to another."""
        cells = jnp.arange(self._G * self._G)
        x, y = cells // G, cells % G
        mask = (cells < G * G) & (x > 0) & (x < G - 1) & (y > 0) & (y < G - 1)

        def take(mask, key_i):
            key, i = key_i
            cell = jax.random.choice(key, cells.shape[0], p=mask)
            near = jnp.array([cell, cell + 1, cell - 1, cell + G, cell - G])
            return jnp.where(i < F, mask.at[near].set(False, unique_indices=True), mask), cell

        _, picked = jax.lax.scan(take, mask, (jax.random.split(key, self._F), jnp.arange(self._F)))
        return picked

    def reset(self, key, task) -> tuple[TaskState, TimeStep]:
        task = jnp.asarray(task, jnp.int32)
        N, F = self.num_agents, self._F
        G, n, f = self._grid[task], self._agents[task], self._food[task]
        key_food, key_agents, key_food_level, key_agent_level, key = jax.random.split(key, 5)
        food_cells = self._food_cells(key_food, G, f)
        real_food = jnp.arange(F) < f
        fx, fy = food_cells // G, food_cells % G
        # Jumanji masks agent cells with ``mask.at[food_positions]``: an (F, 2) index array selects whole rows,
        # so no agent starts in a row numbered like any food's x or y coordinate.
        cells = jnp.arange(self._G * self._G)
        banned = jnp.where(real_food[:, None], jnp.stack([fx, fy], 1), -1).reshape(-1)
        free = (cells < G * G) & ~jnp.isin(cells // G, banned)
        agent_cells = jax.random.choice(key_agents, cells.shape[0], shape=(N,), replace=False, p=free)
        active = jnp.arange(N) < n
        levels = jax.random.randint(key_agent_level, (N,), 1, self._max_level[task] + 1)
        lowest = jnp.sort(jnp.where(active, levels, jnp.iinfo(jnp.int32).max))
        max_food_level = jnp.sum(jnp.where(jnp.arange(N) < jnp.minimum(3, n), lowest, 0))
        food_levels = jnp.where(self._coop[task], max_food_level,
                                jax.random.randint(key_food_level, (F,), 1, max_food_level + 1))
        far = lambda count: jnp.stack([FAR - jnp.arange(count), jnp.full((count,), FAR)], 1)  # noqa: E731
        agents = Agent(id=jnp.arange(N),
                       position=jnp.where(active[:, None], jnp.stack([agent_cells // G, agent_cells % G], 1), far(N)),
                       level=jnp.where(active, levels, 0), loading=jnp.zeros((N,), bool))
        food = Food(id=jnp.arange(F), position=jnp.where(real_food[:, None], jnp.stack([fx, fy], 1), far(F)),
                    level=jnp.where(real_food, food_levels, 0), eaten=~real_food)
        st = State(key=key, step_count=jnp.zeros((), jnp.int32), agents=agents, food_items=food)
        zero = jnp.zeros((), bool)
        return TaskState(st, task), self._timestep(st, task, jnp.zeros((), jnp.float32), zero, zero)

    # -- step: Jumanji's step with the level's grid size as data ------------------------------------------------
    def step(self, state: TaskState, actions) -> tuple[TaskState, TimeStep]:
        st, task = state.inner, state.task
        active = jnp.arange(self.num_agents) < self._agents[task]
        actions = jnp.where(active, actions.astype(jnp.int32), NOOP)
        moved = utils.update_agent_positions(st.agents, actions, st.food_items, self._grid[task])
        food, eaten_now, adjacent_levels = jax.vmap(utils.eat_food, (None, 0))(moved, st.food_items)
        reward = jnp.sum(jnp.where(active, self._reward_of(food, adjacent_levels, eaten_now), 0.0)).astype(jnp.float32)
        st = State(agents=moved, food_items=food, step_count=st.step_count + 1, key=st.key)
        terminal = jnp.all(food.eaten)
        return TaskState(st, task), self._timestep(st, task, reward, terminal,
                                                       ~terminal & (st.step_count >= self.horizon))

    def _observe(self, st: State, task):
        """Jumanji's ``GridObserver`` on a grid sized for the largest level: agent levels, uneaten food levels
        and accessibility in each agent's (2 fov + 1)^2 window, cells past the level's edge inaccessible."""
        v, P = self.fov, self._G + 2 * self.fov
        G = self._grid[task]
        active = jnp.arange(self.num_agents) < self._agents[task]
        x, y = st.agents.position[:, 0] + v, st.agents.position[:, 1] + v
        agent_grid = jnp.zeros((P, P), jnp.int32).at[jnp.where(active, x, P), y].add(st.agents.level, mode="drop")
        food = st.food_items
        food_grid = jnp.zeros((P, P), jnp.int32).at[jnp.where(food.eaten, P, food.position[:, 0] + v),
                                                     food.position[:, 1] + v].add(food.level, mode="drop")
        inside = (jnp.arange(P) >= v) & (jnp.arange(P) < v + G)
        access = ((agent_grid + food_grid) == 0) & inside[:, None] & inside[None, :]
        window = lambda grid: jax.vmap(jax.lax.dynamic_slice, (None, 0, None))(  # noqa: E731
            grid, st.agents.position, (2 * v + 1, 2 * v + 1))
        view = jnp.stack([window(agent_grid), window(food_grid), window(access.astype(jnp.int32))], axis=1)
        return jnp.where(active[:, None, None, None], view, 0)

    def _timestep(self, st: State, task, reward, terminal, truncated) -> TimeStep:
        active = jnp.arange(self.num_agents) < self._agents[task]
        mask = jax.vmap(utils.compute_action_mask, (0, None, None))(st.agents, st, self._grid[task])
        mask = jnp.where(active[:, None], mask, jnp.arange(mask.shape[1]) == NOOP)
        return TimeStep(
            observation=Observation(agents_view=self._view(self._observe(st, task)),
                                    action_mask=mask, active=active, step_count=st.step_count.astype(jnp.int32)),
            reward=reward,
            terminal=terminal,
            truncated=truncated,
            state=jnp.zeros((self.state_dim,), jnp.float32),
            success=jnp.zeros((), bool),
        )

    def __repr__(self) -> str:
        return f"LbfStack({len(self.envs)} levels, agents<={self.num_agents}, food<={self._F}, grid<={self._G})"

