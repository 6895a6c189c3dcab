"""Connector grids stacked into one traced env (``ConnectorEnv.stack``) must play each grid exactly as Jumanji does."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import assert_stack_plays_alone, replay_on_stack

from mtmarl.envs import PaddedEnv
from mtmarl.envs.connector import ConnectorEnv
from mtmarl.evaluation.policies import uniform_legal

# different grid sizes and agent counts
GRIDS = [dict(grid=5, agents=2), dict(grid=8, agents=4), dict(grid=6, agents=3)]


def _replay(env, stack, task, key, steps=120):
    """Uniform legal actions on ``env``; the stack replays them for ``task`` from the same reset key."""
    act = lambda state, ts, k: uniform_legal(k, ts.observation.action_mask)  # noqa: E731
    return replay_on_stack(env, stack, task, key, act, steps)


def test_stacked_grids_play_each_grid_exactly():
    """Every time step of every grid equals Jumanji's for the same keys and actions: the random-walk start
    (starts, targets), windows and the global state at the grid's edges, action masks, rewards and ends; the
    stack's extra agents are inactive and may only take the no-op."""
    envs = [ConnectorEnv(**grid, horizon=40) for grid in GRIDS]
    stack = ConnectorEnv.stack(envs)
    assert stack.num_agents == 4 and stack.obs_dim == envs[0].obs_dim
    connected = ended = 0
    for task, env in enumerate(envs):
        alone = PaddedEnv(env, state_dim=stack.state_dim)
        keys = jnp.stack([jax.random.PRNGKey(10 * task + seed) for seed in range(3)])  # three episodes, one program
        play = jax.vmap(lambda k, t: _replay(alone, stack, t, k), in_axes=(0, None))  # noqa: B023 (called here)
        wants, gots = jax.device_get(jax.jit(play)(keys, task))  # the task index traced, as the evaluator has it
        for seed in range(3):
            want, got = (jax.tree.map(lambda x: x[seed], tree) for tree in (wants, gots))
            assert_stack_plays_alone(want, got, env.num_agents, reward_rtol=1e-6)
            np.testing.assert_array_equal(got.state, want.state)
            connected += (want.reward > 0).sum()
            ended += want.terminal.any()
    assert connected >= 3 and ended >= 1, "random play should connect agents and end episodes"


def test_stack_is_refused_for_other_horizons():
    a = ConnectorEnv(5, 2)
    assert ConnectorEnv.stack([a, ConnectorEnv(5, 2, horizon=20)]) is None
    padded = [PaddedEnv(e, num_agents=4, state_dim=3 * 64) for e in (a, ConnectorEnv(8, 3))]
    assert type(padded[0]).stack(padded).num_agents == 4


# slow: the fast suite checks the set evaluator's stacked path with LBF (tests/test_lbf_stack.py) and SMAX,
# and this env's stack with a traced task index above
@pytest.mark.slow
def test_set_evaluator_plays_the_same_episodes_stacked_or_each_grid_traced():
    """The set evaluator stacks an agent group's grids by default; per-task episode statistics must equal those
    of every grid's own traced env for the same keys."""
    from mtmarl.evaluation.policies import RANDOM
    from mtmarl.evaluation.rollout import make_task_set_evaluator

    envs = [PaddedEnv(ConnectorEnv(**grid, horizon=30), num_agents=4, state_dim=3 * 64) for grid in GRIDS]
    keys = jax.random.split(jax.random.PRNGKey(3), len(envs))
    stacked, each = (jax.device_get(make_task_set_evaluator(envs, RANDOM, 12, num_devices=1, batch=4,
                                                            stack=st)(None, keys)) for st in (True, False))
    for field in ("lengths", "successes", "timeouts"):
        np.testing.assert_array_equal(getattr(stacked, field), getattr(each, field), err_msg=field)
    np.testing.assert_allclose(stacked.returns, each.returns, rtol=1e-6, atol=1e-6)
    assert (each.returns > 0).any() and (~each.timeouts).any()
