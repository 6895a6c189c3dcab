"""mtmarl.envs must be an exact, documented transform of the Jumanji envs it wraps.

Each env is rolled out once, in one jit: the raw Jumanji env, the wrapper and two
padded copies (whose padded agents get different junk actions) all take the same
random legal actions from the same key. The tests below check that trajectory.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jumanji.environments.routing.robot_warehouse.constants import _AGENTS

from mtmarl.envs import NOOP, PaddedEnv, make
from mtmarl.envs import connector as conn
from mtmarl.envs.connector import ConnectorEnv
from mtmarl.envs.lbf import CHANNEL_SCALE, LbfEnv
from mtmarl.envs.rware import COORD_SCALE, HostLayoutGenerator, RwareEnv
from mtmarl.errors import UserInputError

T = 30  # steps per rollout; every horizon below is shorter, so every episode ends
EXTRA_AGENTS, EXTRA_OBS, EXTRA_STATE = 3, 4, 2
# Each program runs once on tiny inputs, so compile time is all that matters.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}

# name -> (task, episodes). Tasks are chosen so both endings occur: RWARE has 4
# agents and many episodes so some collide before and some exactly *at* the time
# limit; LBF has one food item on a small grid so some episodes eat it.
TASKS = {
    "rware": (lambda: RwareEnv(rows=1, cols=3, height=8, agents=4, horizon=5), 256),
    "lbf": (lambda: LbfEnv(grid=6, agents=3, food=1, level=2, horizon=15), 32),
    "connector": (lambda: ConnectorEnv(grid=6, agents=3, horizon=10), 32),
}
NAMES = list(TASKS)


@functools.cache
def get_env(name):
    return TASKS[name][0]()


def _stack(first, rest):
    """Prepend the reset record to the scanned step records (time axis 0)."""
    return jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), first, rest)


@functools.cache
def rollout(name):
    """(episodes, T+1, ...) numpy records of the raw env, wrapper and padded env."""
    env, episodes = get_env(name), TASKS[name][1]
    raw = env.jumanji_env
    padded = PaddedEnv(env, num_agents=env.num_agents + EXTRA_AGENTS, obs_dim=env.obs_dim + EXTRA_OBS,
                       state_dim=env.state_dim + EXTRA_STATE)

    def record(raw_s, raw_ts, s, ts, ps, pts):
        return dict(raw_state=raw_s, raw_obs=raw_ts.observation, raw_reward=raw_ts.reward,
                    raw_last=raw_ts.last(), state=s, ts=ts, padded_state=ps, padded=pts)

    def episode(key):
        reset_key, act_key = jax.random.split(key)
        raw_s, raw_ts = raw.reset(reset_key)
        s, ts = env.reset(reset_key)
        ps, pts = jax.vmap(lambda _: padded.reset(reset_key))(jnp.arange(2))

        def body(carry, key):
            raw_s, mask, s, ps = carry
            k_act, k_junk = jax.random.split(key)
            actions = jax.random.categorical(k_act, jnp.where(mask, 0.0, -jnp.inf), axis=-1)
            junk = jax.random.randint(k_junk, (2, EXTRA_AGENTS), -10, 10)  # any values at all
            raw_s, raw_ts = raw.step(raw_s, actions)
            s, ts = env.step(s, actions)
            ps, pts = jax.vmap(lambda st, j: padded.step(st, jnp.concatenate([actions, j])))(ps, junk)
            carry = (raw_s, raw_ts.observation.action_mask, s, ps)
            return carry, record(raw_s, raw_ts, s, ts, ps, pts)

        carry = (raw_s, raw_ts.observation.action_mask, s, ps)
        _, steps = jax.lax.scan(body, carry, jax.random.split(act_key, T))
        return _stack(record(raw_s, raw_ts, s, ts, ps, pts), steps)

    keys = jax.random.split(jax.random.PRNGKey(0), episodes)
    out = jax.jit(jax.vmap(episode), compiler_options=FAST_COMPILE)(keys)
    return jax.tree.map(np.asarray, out)


def assert_trees_equal(a, b):
    jax.tree.map(np.testing.assert_array_equal, a, b)


# -- independent reference implementations ----------------------------------------

def naive_connector_view(grid, position, target):
    """Connector per-agent view, computed cell by cell from the documented rules."""
    g, n, r = grid.shape[0], position.shape[0], conn.RADIUS
    k = 2 * r + 1
    win = np.zeros((n, 5, k, k), np.float32)
    for i in range(n):
        for a in range(k):
            for b in range(k):
                row, col = position[i, 0] + a - r, position[i, 1] + b - r
                if not (0 <= row < g and 0 <= col < g):
                    win[i, 4, a, b] = 1.0  # off-grid flag, nothing else
                    continue
                v = int(grid[row, col])
                other = v > 0 and v not in (3 * i + 1, 3 * i + 2, 3 * i + 3)
                is_target = v > 0 and v % 3 == 0
                win[i, :4, a, b] = [v == 3 * i + 1, v == 3 * i + 3,
                                    other and not is_target, other and is_target]
    offset = (target - position).astype(np.float32) / conn.OFFSET_SCALE
    connected = np.all(position == target, -1, keepdims=True).astype(np.float32)
    return np.concatenate([win.reshape(n, -1), offset, connected], -1)


def naive_connector_state(grid):
    """Global state: for path/head/target, the owner id (1-based) / MAX_AGENT_ID."""
    out = np.zeros((3,) + grid.shape, np.float32)
    for (row, col), v in np.ndenumerate(grid):
        if v > 0:
            out[(v - 1) % 3, row, col] = ((v - 1) // 3 + 1) / conn.MAX_AGENT_ID
    return out.reshape(-1)


def raw_team_reward(name, reward):
    """RWARE's Jumanji reward is already a team scalar; LBF/Connector are per agent."""
    return reward if name == "rware" else reward.sum(-1)


def ended_by_task_rules(name, rec):
    """(episodes, T+1) bool: the task's own end condition, read from the raw state."""
    s, obs = rec["raw_state"], rec["raw_obs"]
    if name == "rware":  # some agent's cell does not hold its own id: a collision
        x, y = s.agents.position.x, s.agents.position.y
        b, t = np.indices(x.shape[:2])
        occupant = s.grid[b[..., None], t[..., None], _AGENTS, x, y]
        return np.any(occupant != np.arange(1, x.shape[-1] + 1), -1)
    if name == "lbf":  # all food eaten
        return s.food_items.eaten.all(-1)
    connected = np.all(s.agents.position == s.agents.target, -1)  # all connected or stuck
    return np.all(connected | ~obs.action_mask[..., 1:].any(-1), -1)


# -- wrapper vs raw Jumanji ----------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_wrapper_matches_raw_env(name):
    """Same key + actions: identical states, team reward, done, mask, counts."""
    env, rec = get_env(name), rollout(name)
    ts, raw_obs = rec["ts"], rec["raw_obs"]
    assert_trees_equal(rec["state"], rec["raw_state"])
    np.testing.assert_allclose(ts.reward, raw_team_reward(name, rec["raw_reward"]), rtol=1e-6)
    np.testing.assert_array_equal(ts.done, rec["raw_last"])
    np.testing.assert_array_equal(ts.observation.action_mask, raw_obs.action_mask.astype(bool))
    np.testing.assert_array_equal(ts.observation.step_count, raw_obs.step_count)
    assert ts.observation.active.all()
    assert ts.observation.agents_view.dtype == np.float32
    assert ts.observation.agents_view.shape[-2:] == (env.num_agents, env.obs_dim)
    assert ts.state.shape[-1] == env.state_dim
    assert ts.reward.shape == ts.terminal.shape == rec["raw_last"].shape  # scalars per step
    if name != "rware":  # random RWARE agents never deliver a shelf in 30 steps
        assert rec["raw_reward"].any(), "no reward in any episode: the reward check is vacuous"


@pytest.mark.parametrize("name", NAMES)
def test_terminal_truncated_split(name):
    """terminal <=> the task's own rule ended it (even at the time limit); else truncated."""
    env, rec = get_env(name), rollout(name)
    ts = rec["ts"]
    assert not (ts.terminal & ts.truncated).any()
    ended = ended_by_task_rules(name, rec)
    time_up = rec["raw_obs"].step_count >= env.horizon
    assert (ended | time_up).any(1).all(), "every episode should end within T steps"
    in_episode = np.cumsum(np.cumsum(ended | time_up, 1), 1) <= 1  # up to the first end
    np.testing.assert_array_equal(ts.terminal[in_episode], ended[in_episode])
    np.testing.assert_array_equal(ts.truncated[in_episode], (time_up & ~ended)[in_episode])
    # Make sure the rollouts exercised both endings (and, for RWARE, the tie).
    assert (ts.terminal & in_episode).any() and (ts.truncated & in_episode).any()
    if name == "rware":
        assert (ended & time_up & in_episode).any(), "no collision at the time limit"


def test_rware_horizon_is_truncation():
    """Jumanji RWARE reports its time limit as a termination; we must not."""
    rec = rollout("rware")
    at_limit = rec["raw_obs"].step_count == get_env("rware").horizon
    quiet = at_limit & ~ended_by_task_rules("rware", rec)
    assert quiet.any() and rec["raw_last"][quiet].all()
    assert rec["ts"].truncated[quiet].all() and not rec["ts"].terminal[quiet].any()


def test_rware_observation():
    """First two features (x, y) divided by COORD_SCALE, the rest unchanged."""
    raw = rollout("rware")["raw_obs"].agents_view.astype(np.float32)
    view = rollout("rware")["ts"].observation.agents_view
    np.testing.assert_array_equal(view[..., :2], raw[..., :2] / np.float32(COORD_SCALE))
    np.testing.assert_array_equal(view[..., 2:], raw[..., 2:])


@pytest.mark.parametrize("rows,cols,height,agents,queue", [(1, 3, 8, 4, 4), (2, 5, 4, 2, 3), (3, 3, 2, 12, 8),
                                                           (1, 1, 1, 1, 1)])
def test_rware_layout_from_numpy_equals_jumanjis(rows, cols, height, agents, queue):
    """HostLayoutGenerator's NumPy layout is Jumanji's, array for array (values, dtypes, shapes); the last
    layout has no shelf cell at all."""
    from jumanji.environments.routing.robot_warehouse.generator import RandomGenerator

    args = dict(shelf_rows=rows, shelf_columns=cols, column_height=height, num_agents=agents, sensor_range=1,
                request_queue_size=queue)
    ours, theirs = HostLayoutGenerator(**args), RandomGenerator(**args)
    for name in ("_goals", "_highways", "_shelf_positions", "_shelf_ids", "_not_in_queue_size"):
        a, b = getattr(ours, name), getattr(theirs, name)
        assert isinstance(a, jax.Array) and a.dtype == b.dtype and a.shape == b.shape, name
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_lbf_observation():
    """Raw (agent, food, access) grids divided by CHANNEL_SCALE per channel, flattened."""
    raw = rollout("lbf")["raw_obs"].agents_view.astype(np.float32)  # (..., n, 3, k, k)
    expected = raw / np.asarray(CHANNEL_SCALE, np.float32)[:, None, None]
    view = rollout("lbf")["ts"].observation.agents_view
    np.testing.assert_allclose(view, expected.reshape(view.shape), rtol=1e-6)
    assert (raw[..., 1, :, :] > 0).any(), "no food in view: the food channel is untested"


def test_connector_observation_and_state():
    """agents_view and global state equal a naive per-cell numpy implementation."""
    env, rec = get_env("connector"), rollout("connector")
    grids, agents = rec["raw_obs"].grid, rec["raw_state"].agents
    view, state = rec["ts"].observation.agents_view, rec["ts"].state
    g = grids.shape[-1]
    assert env.state_dim == state.shape[-1] == 3 * g * g
    for idx in np.ndindex(grids.shape[:2]):
        expected = naive_connector_view(grids[idx], agents.position[idx], agents.target[idx])
        np.testing.assert_allclose(view[idx], expected, rtol=1e-6, err_msg=str(idx))
        np.testing.assert_allclose(state[idx], naive_connector_state(grids[idx]), rtol=1e-6)
    assert view[..., -1].any(), "no agent ever connected: the connected flag is untested"


# -- padding ------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_padding(name):
    """Real rows equal the unpadded env; padded rows are inert; junk actions are ignored."""
    env, rec = get_env(name), rollout(name)
    n, o, s = env.num_agents, env.obs_dim, env.state_dim
    ts, variants = rec["ts"], rec["padded"]
    assert_trees_equal(jax.tree.map(lambda x: x[:, :, 0], variants),
                       jax.tree.map(lambda x: x[:, :, 1], variants))  # junk changed nothing
    assert_trees_equal(jax.tree.map(lambda x: x[:, :, 0], rec["padded_state"]), rec["state"])
    p = jax.tree.map(lambda x: x[:, :, 0], variants)
    obs = p.observation
    assert obs.agents_view.shape[-2:] == (n + EXTRA_AGENTS, o + EXTRA_OBS)
    np.testing.assert_array_equal(obs.agents_view[..., :n, :o], ts.observation.agents_view)
    assert not obs.agents_view[..., :n, o:].any() and not obs.agents_view[..., n:, :].any()
    np.testing.assert_array_equal(obs.action_mask[..., :n, :], ts.observation.action_mask)
    noop_only = np.eye(env.num_actions, dtype=bool)[NOOP]
    assert (obs.action_mask[..., n:, :] == noop_only).all()
    assert (obs.active == (np.arange(n + EXTRA_AGENTS) < n)).all()
    for field in ("reward", "terminal", "truncated"):
        np.testing.assert_array_equal(getattr(p, field), getattr(ts, field))
    np.testing.assert_array_equal(obs.step_count, ts.observation.step_count)
    assert p.state.shape[-1] == s + EXTRA_STATE
    np.testing.assert_array_equal(p.state[..., :s], ts.state)
    assert not p.state[..., s:].any()


@pytest.mark.parametrize("field, kwargs", [
    ("agents", lambda e: dict(num_agents=e.num_agents - 1)),
    ("observation size", lambda e: dict(obs_dim=e.obs_dim - 1)),
])
def test_padding_too_small_raises(field, kwargs):
    env = get_env("lbf")
    with pytest.raises(UserInputError, match=f"has \\d+ {field} but the target layout allows at most"):
        PaddedEnv(env, **kwargs(env))


# -- make -----------------------------------------------------------------------------

def test_make_builds_env():
    env = make("connector", grid=6, agents=3, horizon=7)
    assert isinstance(env, ConnectorEnv) and env.num_agents == 3 and env.horizon == 7


@pytest.mark.parametrize("env, params, match", [
    ("warehouse", {}, r"unknown env 'warehouse'; valid envs: connector, lbf, rware"),
    ("rware", dict(rows=1, cols=3, height=8, agents=2, colour=1), r"unknown parameter 'colour'"),
    ("connector", dict(grid=6), r"missing parameter\(s\) agents"),
    ("rware", dict(rows=1, cols=4, height=8, agents=2), r"not valid: .*odd"),
    ("lbf", dict(grid=3, agents=2, food=1), r"not valid: Grid size"),
])
def test_make_rejects_bad_input(env, params, match):
    with pytest.raises(UserInputError, match=match):
        make(env, **params)
