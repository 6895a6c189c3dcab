"""Several RWARE layouts in one traced env: grid size, shelves, goals and agent count become data.

Why: an evaluation program traced each task's Jumanji step on its own (a step: scans over agents and sensor
cells full of conds), so rware_15's 23 tasks compiled for about three minutes and then played their episodes
in seconds. Here every task of an evaluation group is played through one step traced once.

How it stays Jumanji's RWARE, draw for draw:

* The state is Jumanji's own ``State`` with every array at the stack's largest size: the grid at the largest
  rows and columns (a task's warehouse in its top-left corner; nothing ever enters the rest, so every
  agent's sensor window sees the zeros Jumanji pads with), shelves and request queue at their largest
  counts (extra shelves never on the grid, extra queue slots -1, which matches no shelf), agents at the
  largest count (extra agents not on the grid, inactive, only the no-op legal, so they never move).
* Jumanji's own helpers (turns, load toggling, carrying a shelf, the observation, the collision check) run
  on these arrays unchanged. What reads the grid's static shape is redone with the task's size: the forward
  move's clipping at the walls and the action mask built from it.
* Jumanji's random draws are permutations of a static number of items (the grid's cells at reset, the
  shelves not queued at each delivery): JAX gives item i the i-th of n random words and sorts by them, so
  the same words drawn for the stack's largest n, those past the task's n left out, give the same order.
  Only the first few items are ever used, so they are picked by argmin instead of a sort (a sort of every
  slot's shelves at every step would make the stacked step slower than Jumanji's own).

So a task of the stack gets exactly the episodes Jumanji's env gives it for the same keys and actions
(tests/test_rware_stack.py checks every time step, deliveries and collisions included).
"""

from __future__ import annotations

import functools
import jax
import jax.numpy as jnp
import numpy as np
from jumanji.environments.routing.robot_warehouse import utils, utils_agent
from jumanji.environments.routing.robot_warehouse.constants import _AGENTS, _SHELVES
from jumanji.environments.routing.robot_warehouse.types import Action, Agent, Position, Shelf, State
from jumanji.environments.routing.robot_warehouse.utils_shelf import set_new_shelf_position_if_carrying, update_shelf
from jumanji.tree_utils import tree_slice

from mtmarl.envs.base import MultiAgentEnv, NOOP, Observation, TaskState, TimeStep
from mtmarl.envs.layout import EnvSpec


def permutes_in_one_round(size: int) -> bool:
    """Whether ``jax.random.permutation`` of ``size`` items sorts by random bits once (its rule: rounds =
    ceil(3 ln size / ln(2^32 - 1)), one up to 1625 items). The draws below replay that one round."""
    return int(np.ceil(3 * np.log(max(1, size)) / np.log(np.iinfo(np.uint32).max))) <= 1


def _first_in_bits_order(bits, valid):
    """The index a stable sort by (not ``valid``, ``bits``) puts first: the lowest-index valid item with the
    smallest word. O(n), where a sort of every slot's items at every step was most of a step's time."""
    smallest = jnp.min(jnp.where(valid, bits, jnp.uint32(np.iinfo(np.uint32).max)))
    return jnp.argmax(valid & (bits == smallest))


def first_of_permutation(key, size, padded: int, count: int):
    """``jax.random.permutation(key, size)[:count]`` for a traced ``size`` <= ``padded`` (static).

    JAX's permutation gives item i the i-th of ``size`` random 32-bit words and sorts stably by them; with
    threefry's partitionable bits (JAX's default) the first ``size`` of ``padded`` words are those same
    words, so picking the ``count`` first of that order among the first ``size`` items replays it."""
    _, subkey = jax.random.split(key)
    bits = jax.random.bits(subkey, (padded,), jnp.uint32)

    def pick(left, _):
        i = _first_in_bits_order(bits, left)
        return left.at[i].set(False), i

    _, picked = jax.lax.scan(pick, jnp.arange(padded) < size, None, length=count)
    return picked


def first_free(key, free):
    """``jax.random.choice(key, ids, replace=False)`` where ``ids`` are the indices where ``free`` is set, in
    order (Jumanji's ``setdiff1d``): a permutation of them, its first item; the k-th free index gets the
    k-th random word."""
    _, subkey = jax.random.split(key)
    bits = jax.random.bits(subkey, free.shape, jnp.uint32)[jnp.maximum(jnp.cumsum(free) - 1, 0)]
    return _first_in_bits_order(bits, free)


class RwareStack(MultiAgentEnv):
    """``reset(key, task)`` plays layout ``envs[task]`` (``RwareEnv`` objects with one horizon and sensor range);
    ``view`` turns Jumanji's (n, O) integer view into the env's observation rows (``rware.scaled_view``)."""

    name = "rware"

    def __init__(self, envs, view):
        self.envs = list(envs)
        self._view = view
        raw = [e.jumanji_env for e in self.envs]
        self.horizon = self.envs[0].horizon
        self.sensor_range = raw[0].sensor_range
        self.num_obs_features = int(raw[0].num_obs_features)
        N = max(e.num_agents for e in self.envs)
        self.spec = EnvSpec(N, self.envs[0].spec.obs, self.envs[0].spec.actions,
                            state_dim=self.envs[0].state_dim, has_success=False)
        R, C = (max(r.grid_size[i] for r in raw) for i in (0, 1))
        self._S = max(int(r.shelf_ids.shape[0]) for r in raw)
        self._Q = max(int(r.request_queue_size) for r in raw)
        highways = np.zeros((len(raw), R, C), np.int32)
        for t, r in enumerate(raw):
            rows, cols = r.grid_size
            highways[t, :rows, :cols] = np.asarray(r.highways)
        self._highways = jnp.asarray(highways)
        self._dims = jnp.asarray([r.grid_size for r in raw], jnp.int32)         # (T, 2) rows, cols
        self._goals = jnp.asarray(np.stack([np.asarray(r.goals) for r in raw]))  # (T, 2 goals, 2)
        self._agents = jnp.asarray([e.num_agents for e in self.envs], jnp.int32)
        self._grid = (R, C)
        if not permutes_in_one_round(R * C):
            raise ValueError(f"RWARE layouts of up to {R}x{C} cells cannot be stacked (random draws replayed for "
                             "at most 1625 cells)")
        shelf_positions = np.zeros((len(raw), self._S, 2), np.int32)
        for t, r in enumerate(raw):
            shelf_positions[t, : r.shelf_ids.shape[0]] = np.asarray(r._generator._shelf_positions)
        self._shelf_positions = jnp.asarray(shelf_positions)
        self._shelves = jnp.asarray([r.shelf_ids.shape[0] for r in raw], jnp.int32)
        self._queued = jnp.asarray([r.request_queue_size for r in raw], jnp.int32)

    # -- reset: Jumanji's spawn, its draws at the task's sizes ---------------------------------------------------
    def reset(self, key, task) -> tuple[TaskState, TimeStep]:
        """Jumanji's ``spawn_random_entities`` with the same keys: agents on distinct random cells facing random
        directions, a random request queue; the entities placed on the padded grid by one scatter each."""
        task = jnp.asarray(task, jnp.int32)
        N, (rows, cols) = self.num_agents, (self._dims[task, 0], self._dims[task, 1])
        key, position_key = jax.random.split(key)
        cells = first_of_permutation(position_key, rows * cols, self._grid[0] * self._grid[1], N)
        x, y = cells // cols, cells % cols
        key, direction_key = jax.random.split(key)
        direction = jax.random.randint(direction_key, (N,), 0, 4)  # Jumanji's choice of n: a prefix of these
        key, queue_key = jax.random.split(key)
        queue = first_of_permutation(queue_key, self._shelves[task], self._S, self._Q)
        active = jnp.arange(N) < self._agents[task]
        queued = jnp.arange(self._Q) < self._queued[task]
        queue = jnp.where(queued, queue, -1)
        agents = Agent(position=Position(x=jnp.where(active, x, 0), y=jnp.where(active, y, 0)),
                       direction=jnp.where(active, direction, 0), is_carrying=jnp.zeros((N,), jnp.int32))
        real_shelf = jnp.arange(self._S) < self._shelves[task]
        positions = self._shelf_positions[task]
        requested = jnp.zeros((self._S,), jnp.float32).at[jnp.where(queued, queue, self._S)].set(1.0, mode="drop")
        shelves = Shelf(position=Position(x=positions[:, 0], y=positions[:, 1]), is_requested=requested)
        R, C = self._grid
        grid = jnp.zeros((2, R, C), jnp.int32)
        grid = grid.at[_AGENTS, jnp.where(active, x, R), y].set(jnp.arange(1, N + 1), mode="drop")
        grid = grid.at[_SHELVES, jnp.where(real_shelf, positions[:, 0], R), positions[:, 1]].set(
            jnp.arange(1, self._S + 1), mode="drop")
        st = State(grid=grid, agents=agents, shelves=shelves, request_queue=queue, step_count=jnp.zeros((), jnp.int32),
                   action_mask=self._action_mask(grid, agents, self._dims[task], active), key=key)
        zero = jnp.zeros((), bool)
        return TaskState(st, task), self._timestep(st, task, jnp.zeros((), jnp.float32), zero, zero)

    # -- step: Jumanji's step on the padded arrays, the walls at the task's size -------------------------------
    @staticmethod
    def _forward(position: Position, direction, dims) -> Position:
        """The cell ahead, clipped at the task's walls (Jumanji clips at the grid's static shape)."""
        x, y = position.x, position.y
        x = jnp.where(direction == 0, jnp.maximum(x - 1, 0), jnp.where(direction == 2, jnp.minimum(x + 1, dims[0] - 1), x))
        y = jnp.where(direction == 1, jnp.minimum(y + 1, dims[1] - 1), jnp.where(direction == 3, jnp.maximum(y - 1, 0), y))
        return Position(x=x, y=y)

    def _move_forward(self, dims, grid, agents, shelves, action, agent_id, is_highway):
        agent = tree_slice(agents, agent_id)
        new = self._forward(agent.position, agent.direction, dims)
        agents = utils_agent.update_agent(agents, agent_id, "position", new)
        grid = grid.at[_AGENTS, agent.position.x, agent.position.y].set(0)
        grid = grid.at[_AGENTS, new.x, new.y].set(agent_id + 1)
        grid, shelves = jax.lax.cond(agent.is_carrying, set_new_shelf_position_if_carrying,
                                     lambda g, s, p, q: (g, s), grid, shelves, agent.position, new)
        return grid, agents, shelves

    def _action_mask(self, grid, agents: Agent, dims, active):
        """Jumanji's mask (no moving a carried shelf into another), walls at the task's size; padded agents
        may only take the no-op."""
        target = jax.vmap(self._forward, in_axes=(0, 0, None))(agents.position, agents.direction, dims)
        moves = (target.x != agents.position.x) | (target.y != agents.position.y)
        blocked = (agents.is_carrying > 0) & moves & (grid[_SHELVES, target.x, target.y] > 0)
        mask = jnp.ones((self.num_agents, 5), bool).at[:, Action.FORWARD.value].set(~blocked)
        return jnp.where(active[:, None], mask, jnp.arange(5) == NOOP)

    def _deliver(self, task, carry, goal):
        """Jumanji's reward and request update at one goal, its new request drawn at the task's sizes."""
        key, reward, queue, grid, shelves = carry
        y, x = goal
        shelf_id = grid[_SHELVES, x, y]

        def delivered(key, reward, queue, shelves):
            key, request_key = jax.random.split(key)
            free = (jnp.arange(self._S) < self._shelves[task]) & ~jnp.isin(jnp.arange(self._S), queue)
            new = first_free(request_key, free)
            replace_index = jnp.argwhere(jnp.equal(queue, shelf_id - 1), size=1)
            queue = queue.at[replace_index].set(new)
            shelves = update_shelf(shelves, shelf_id - 1, "is_requested", 0)
            shelves = update_shelf(shelves, new, "is_requested", 1)
            return key, reward + 1.0, queue, shelves

        at_goal = (shelf_id != 0) & jnp.isin(shelf_id, queue + 1)
        key, reward, queue, shelves = jax.lax.cond(at_goal, delivered, lambda *a: a, key, reward, queue, shelves)
        return (key, reward, queue, grid, shelves), None

    def step(self, state: TaskState, actions) -> tuple[TaskState, TimeStep]:
        st, task = state.inner, state.task
        dims, highways = self._dims[task], self._highways[task]
        active = jnp.arange(self.num_agents) < self._agents[task]
        actions = utils.get_valid_actions(jnp.where(active, actions.astype(jnp.int32), NOOP), st.action_mask)
        forward = functools.partial(self._move_forward, dims)

        def act(carry, xs):
            grid, agents, shelves = carry
            action, agent_id = xs
            agent = tree_slice(agents, agent_id)
            is_highway = highways[agent.position.x, agent.position.y]
            grid, agents, shelves = jax.lax.cond(
                action == Action.FORWARD.value, forward, utils_agent.set_new_direction_after_turn,
                grid, agents, shelves, action, agent_id, is_highway)
            return (grid, agents, shelves), None

        ids = jnp.arange(self.num_agents)
        (grid, agents, shelves), _ = jax.lax.scan(act, (st.grid, st.agents, st.shelves), (actions, ids))
        collision = jnp.any(jax.vmap(functools.partial(utils.is_collision, grid))(agents, ids) & active)
        carry = (st.key, jnp.zeros((), jnp.float32), st.request_queue, grid, shelves)
        (key, reward, queue, grid, shelves), _ = jax.lax.scan(functools.partial(self._deliver, task), carry,
                                                              self._goals[task])
        steps = st.step_count + 1
        last = collision | (steps >= self.horizon)
        st = State(grid=grid, agents=agents, shelves=shelves, request_queue=queue, step_count=steps,
                   action_mask=self._action_mask(grid, agents, dims, active), key=key)
        return TaskState(st, task), self._timestep(st, task, reward, last & collision, last & ~collision)

    def _timestep(self, st: State, task, reward, terminal, truncated) -> TimeStep:
        active = jnp.arange(self.num_agents) < self._agents[task]
        observe = functools.partial(utils.make_agent_observation, st.grid, st.agents, st.shelves, self.sensor_range,
                                    self.num_obs_features, self._highways[task])
        view = jnp.where(active[:, None], jax.vmap(observe)(jnp.arange(self.num_agents)), 0)
        return TimeStep(
            observation=Observation(agents_view=self._view(view), action_mask=st.action_mask, active=active,
                                    step_count=st.step_count.astype(jnp.int32)),
            reward=reward.astype(jnp.float32),
            terminal=terminal,
            truncated=truncated,
            state=jnp.zeros((self.state_dim,), jnp.float32),
            success=jnp.zeros((), bool),
        )

    def __repr__(self) -> str:
        return f"RwareStack({len(self.envs)} layouts, agents<={self.num_agents}, grid {self._grid})"
