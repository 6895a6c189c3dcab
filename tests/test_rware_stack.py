"""RWARE layouts stacked into one traced env (``RwareEnv.stack``) must play each layout exactly as Jumanji does."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from helpers import assert_stack_plays_alone, replay_on_stack

from mtmarl.envs import PaddedEnv
from mtmarl.envs.rware import RwareEnv
from mtmarl.online import scripted_rware

# different grids (rows x cols blocks, column heights), shelf counts, agent counts and request queues
LAYOUTS = [dict(rows=2, cols=3, height=4, agents=4), dict(rows=1, cols=3, height=8, agents=3),
           dict(rows=1, cols=5, height=4, agents=2, request=3)]


def _replay(env, stack, task, key, careless, steps=250):
    """``env`` driven by the scripted planner (deliveries, so new requests get drawn) or by careless random
    actions (collisions); the stack replays the same actions for ``task`` from the same reset key."""
    act = lambda state, ts, k: scripted_rware.act(env, state, ts.observation.action_mask, k, 0.2, careless)  # noqa: E731
    return replay_on_stack(env, stack, task, key, act, steps)


@pytest.fixture(scope="module")
def stack():
    envs = [RwareEnv(**layout, horizon=200) for layout in LAYOUTS]
    return envs, RwareEnv.stack(envs)


def test_stacked_layouts_play_each_layout_exactly(stack):
    """Every time step of every layout equals Jumanji's for the same keys and actions: observations (the
    sensor window at the layout's walls), action masks, rewards (requests drawn at the layout's sizes),
    collisions and time limits; the stack's extra agents are inactive and may only take the no-op. Each layout
    is driven twice by one compiled replay: by the planner and by careless random actions (a traced flag); the
    stack reads the task index as data, as the set evaluator gives it."""
    envs, stacked = stack
    assert stacked.num_agents == 4 and stacked.obs_dim == envs[0].obs_dim
    delivered = ended = 0
    for task, env in enumerate(envs):
        replay = jax.jit(lambda k, careless, t: _replay(env, stacked, t, k, careless))  # noqa: B023 (called here)
        for careless in (False, True):
            want, got = jax.device_get(replay(jax.random.PRNGKey(task), careless, task))  # task traced, as in evaluation
            assert_stack_plays_alone(want, got, env.num_agents)
            if careless:
                ended += want.terminal.any()
            else:
                delivered += want.reward.sum()
    assert ended >= 2, "careless random actions should collide"
    assert delivered >= 6, "the planner should deliver shelves (new requests drawn)"


def test_stack_is_refused_for_other_horizons_sensor_ranges_or_too_large_grids():
    a = RwareEnv(1, 3, 8, 2)
    assert RwareEnv.stack([a, RwareEnv(1, 3, 8, 2, horizon=100)]) is None
    assert RwareEnv.stack([a, RwareEnv(1, 3, 8, 2, sensor=2)]) is None
    big = RwareEnv(8, 9, 8, 2)  # 74 x 28 cells: more than one permutation round, its draws are not replayed
    assert big.jumanji_env.grid_size[0] * big.jumanji_env.grid_size[1] > 1625
    assert RwareEnv.stack([a, big]) is None
    padded = [PaddedEnv(e, num_agents=4) for e in (a, RwareEnv(2, 3, 8, 3))]
    assert type(padded[0]).stack(padded).num_agents == 4


# slow: the fast suite checks the set evaluator's stacked path with LBF (tests/test_lbf_stack.py) and SMAX,
# and this env's stack with a traced task index above
@pytest.mark.slow
def test_set_evaluator_plays_the_same_episodes_stacked_or_each_layout_traced():
    """The set evaluator stacks an agent group's layouts by default; its per-task episode statistics must equal
    those of every layout's own traced env for the same keys."""
    from mtmarl.evaluation.policies import RANDOM
    from mtmarl.evaluation.rollout import make_task_set_evaluator

    envs = [PaddedEnv(RwareEnv(**layout, horizon=60), num_agents=4) for layout in LAYOUTS]
    keys = jax.random.split(jax.random.PRNGKey(7), len(envs))
    stacked, each = (jax.device_get(make_task_set_evaluator(envs, RANDOM, 12, num_devices=1, batch=4,
                                                            stack=st)(None, keys)) for st in (True, False))
    for field in ("returns", "lengths", "successes", "timeouts"):
        np.testing.assert_array_equal(getattr(stacked, field), getattr(each, field), err_msg=field)
    assert each.timeouts.any() and not each.timeouts.all(), "episodes should end by collisions and by the time limit"
