"""A scripted RobotWarehouse policy, for datasets where online MARL cannot learn on our budget.

Jumanji's RWARE rewards only deliveries and ends the episode at the first
collision; on this CPU the MAPPO collector stays at random-policy returns
(about 0.01) after 100k steps. Offline RL needs some good behaviour in the data,
so RWARE datasets can come from this planner instead, mixed with uniform
actions at a decreasing rate epsilon (recorded level by level, like an online
learner recorded at fixed intervals: mixed quality).

The planner reads Jumanji's state (never the agents' observations):
  * not carrying -> walk to the nearest requested shelf that nobody carries, load it;
  * carrying a requested shelf -> walk to a goal cell (delivery is automatic);
  * carrying a delivered shelf -> walk to the nearest free shelf slot, unload.
Distances are breadth-first fields over the grid (a loaded agent cannot enter
a cell holding a shelf). An agent turns towards the neighbouring cell with the
smallest distance and steps forward only into a cell no agent holds or has
claimed earlier this step (agents move in index order, so this never collides).
Random actions are collision-checked as well, except in ``careless`` mode (a plain
random policy, which collides within a few dozen steps on the larger layouts).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jumanji.environments.routing.robot_warehouse.constants import _AGENTS, _SHELVES

from mtmarl.envs.rware import RwareEnv
from mtmarl.evaluation.policies import uniform_legal
from mtmarl.online.rollout import ResetPool, Transition, start_from_pool, step_with_pool, transition

INF = 1 << 20
NOOP, FORWARD, LEFT, RIGHT, TOGGLE = 0, 1, 2, 3, 4
# (dx, dy) for Jumanji's directions UP, RIGHT, DOWN, LEFT (x is the row).
DX = jnp.array([-1, 0, 1, 0])
DY = jnp.array([0, 1, 0, -1])


def distance_field(targets: jax.Array, passable: jax.Array) -> jax.Array:
    """Steps from every cell to the nearest target moving through passable cells (INF if none)."""

    def relax(d):
        pad = jnp.pad(d, 1, constant_values=INF)
        nb = jnp.minimum(jnp.minimum(pad[:-2, 1:-1], pad[2:, 1:-1]), jnp.minimum(pad[1:-1, :-2], pad[1:-1, 2:]))
        return jnp.where(targets, 0, jnp.where(passable, jnp.minimum(d, nb + 1), INF))

    def cond(c):
        return c[1]

    def body(c):
        d, _ = c
        new = relax(d)
        return new, jnp.any(new != d)

    d0 = jnp.where(targets, 0, INF)
    return jax.lax.while_loop(cond, body, (d0, jnp.array(True)))[0]


def planner_actions(env: RwareEnv, state, key: jax.Array) -> jax.Array:
    """(N,) planner actions for one env state (no randomness except tie-breaking when stuck)."""
    jenv = env.jumanji_env
    grid, agents, shelves = state.grid, state.agents, state.shelves
    h, w = grid.shape[1:]
    highways = jnp.asarray(jenv.highways, bool)
    goals = jnp.zeros((h, w), bool).at[jenv.goals[:, 1], jenv.goals[:, 0]].set(True)  # goals are (y, x)
    ax, ay = agents.position.x, agents.position.y
    carrying = agents.is_carrying.astype(bool)
    carried = jnp.zeros((h, w), bool).at[ax, ay].max(carrying)
    shelf_here = grid[_SHELVES] > 0
    requested = jnp.zeros((h, w), bool).at[shelves.position.x, shelves.position.y].max(
        shelves.is_requested.astype(bool)) & ~carried
    free_road = ~shelf_here | carried  # carried shelves move away; treat their cells as open
    fields = jnp.stack([
        distance_field(requested, jnp.ones((h, w), bool)),  # 0: fetch
        distance_field(goals, free_road),  # 1: deliver
        distance_field(~highways & ~shelf_here, free_road),  # 2: return the shelf
    ])
    shelf_id = grid[_SHELVES, ax, ay] - 1
    holds_request = carrying & shelves.is_requested[jnp.clip(shelf_id, 0)].astype(bool)
    mode = jnp.where(~carrying, 0, jnp.where(holds_request, 1, 2))
    toggle = ((mode == 0) & requested[ax, ay]) | ((mode == 2) & ~highways[ax, ay])

    nx, ny = ax[:, None] + DX, ay[:, None] + DY  # (N, 4)
    inside = (nx >= 0) & (nx < h) & (ny >= 0) & (ny < w)
    dist = jnp.where(inside, fields[mode[:, None], jnp.clip(nx, 0, h - 1), jnp.clip(ny, 0, w - 1)], INF)
    best = dist.min(-1)
    facing = jax.nn.one_hot(agents.direction, 4, dtype=bool)
    # Among the best directions prefer the one faced (no turn needed), else a random one.
    score = jnp.where(dist == best[:, None], 2.0 + facing + jax.random.uniform(key, dist.shape), 0.0)
    want = jnp.argmax(score, -1)
    turn = (want - agents.direction) % 4
    move = jnp.where(turn == 0, FORWARD, jnp.where(turn == 3, LEFT, RIGHT))
    act = jnp.where(toggle, TOGGLE, jnp.where(best >= INF, NOOP, move))
    return act.astype(jnp.int32)


def make_safe(state, actions: jax.Array, safe: jax.Array, key: jax.Array) -> jax.Array:
    """Where ``safe``, a FORWARD into a cell held or claimed by another agent becomes a random
    NOOP/LEFT/RIGHT (waiting alone would leave two agents facing each other stuck for ever)."""
    grid, agents = state.grid, state.agents
    h, w = grid.shape[1:]
    ahead_x = jnp.clip(agents.position.x + DX[agents.direction], 0, h - 1)
    ahead_y = jnp.clip(agents.position.y + DY[agents.direction], 0, w - 1)
    stays = (ahead_x == agents.position.x) & (ahead_y == agents.position.y)  # walking into a wall

    dodge = jax.random.choice(key, jnp.array([NOOP, LEFT, RIGHT]), actions.shape)

    def one(claimed, i):
        cell = (ahead_x[i], ahead_y[i])
        go = (actions[i] == FORWARD) & ~stays[i]
        blocked = go & safe[i] & claimed[cell]
        claimed = claimed.at[cell].set(claimed[cell] | (go & ~blocked))
        return claimed, jnp.where(blocked, dodge[i], actions[i])

    _, out = jax.lax.scan(one, grid[_AGENTS] > 0, jnp.arange(actions.shape[0]))
    return out


def act(env: RwareEnv, state, action_mask: jax.Array, key: jax.Array, epsilon, careless=False) -> jax.Array:
    """Epsilon-mixed planner actions for one env: each agent acts uniformly at random w.p. epsilon.

    Random moves are collision-checked too unless ``careless`` (a plain random policy).
    """
    plan_key, coin_key, rand_key, dodge_key = jax.random.split(key, 4)
    planned = planner_actions(env, state, plan_key)
    random = uniform_legal(rand_key, action_mask)
    explore = jax.random.uniform(coin_key, planned.shape) < epsilon
    return make_safe(state, jnp.where(explore, random, planned), ~(explore & careless), dodge_key)


def rollout(env: RwareEnv, pool: ResetPool, key: jax.Array, length: int, epsilon, careless) -> Transition:
    """``length`` steps of every env of ``pool`` (B, K) from its first entry; (T, B, ...) transitions.

    Ended episodes continue from the env's next pool entry, as in the MAPPO recorder,
    so :func:`mtmarl.online.anakin.to_experience` turns the result into a vault.
    """
    batch = start_from_pool(pool)

    def body(batch, step_key):
        ts = batch.timestep
        keys = jax.random.split(step_key, ts.reward.shape[0])
        actions = jax.vmap(lambda s, m, k: act(env, s, m, k, epsilon, careless))(
            batch.state, ts.observation.action_mask, keys)
        new, real = step_with_pool(env, batch, actions, pool)
        zero = jnp.zeros_like(real.reward)  # no value function, no behaviour log-probabilities
        return new, transition(batch, real, actions, jnp.zeros(actions.shape), zero, zero)

    return jax.lax.scan(body, batch, jax.random.split(key, length))[1]


def episode_returns(env: RwareEnv, keys: jax.Array, epsilon, careless) -> jax.Array:
    """Return of one episode per key (the horizon bounds an episode, so a fixed-length scan suffices)."""

    def one(key):
        reset_key, run_key = jax.random.split(key)
        state, ts = env.reset(reset_key)

        def body(carry, step_key):
            state, ts, ret, alive = carry
            actions = act(env, state, ts.observation.action_mask, step_key, epsilon, careless)
            state, ts = env.step(state, actions)
            return (state, ts, ret + alive * ts.reward, alive & ~ts.done), None

        init = (state, ts, jnp.float32(0.0), jnp.array(True))
        return jax.lax.scan(body, init, jax.random.split(run_key, env.horizon))[0][2]

    return jax.vmap(one)(keys)
