"""LBF levels stacked into one traced env (``LbfEnv.stack``) must play each level exactly as Jumanji does."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from helpers import assert_stack_plays_alone, replay_on_stack

from mtmarl.envs import PaddedEnv
from mtmarl.envs.lbf import LbfEnv
from mtmarl.evaluation.policies import uniform_legal

# different grids, agent and food counts, level caps and forced cooperation
LEVELS = [dict(grid=6, agents=2, food=2), dict(grid=8, agents=4, food=3, level=3),
          dict(grid=7, agents=3, food=1, coop=True)]


def _replay(env, stack, task, key, steps=120):
    """Uniform legal actions on ``env``; the stack replays them for ``task`` from the same reset key."""
    act = lambda state, ts, k: uniform_legal(k, ts.observation.action_mask)  # noqa: E731
    return replay_on_stack(env, stack, task, key, act, steps)


def test_stacked_levels_play_each_level_exactly():
    """Every time step of every level equals Jumanji's for the same keys and actions: the start (food and
    agent cells, levels), grid views at the level's edges, action masks, rewards and ends; the stack's extra
    agents are inactive and may only take the no-op."""
    envs = [LbfEnv(**level, fov=2, horizon=60) for level in LEVELS]
    stack = LbfEnv.stack(envs)
    assert stack.num_agents == 4 and stack.obs_dim == envs[0].obs_dim
    eaten = ended = 0
    for task, env in enumerate(envs):
        keys = jnp.stack([jax.random.PRNGKey(10 * task + seed) for seed in range(3)])  # three episodes, one program
        play = jax.vmap(lambda k, t: _replay(env, stack, t, k), in_axes=(0, None))  # noqa: B023 (called here)
        wants, gots = jax.device_get(jax.jit(play)(keys, task))  # the task index traced, as the evaluator has it
        for seed in range(3):
            want, got = (jax.tree.map(lambda x: x[seed], tree) for tree in (wants, gots))
            assert_stack_plays_alone(want, got, env.num_agents)
            eaten += (want.reward > 0).sum()
            ended += want.terminal.any()
    assert eaten >= 3 and ended >= 1, "random play should eat food and clear a level"


def test_stack_is_refused_for_other_horizons_or_fields_of_view():
    a = LbfEnv(6, 2, 2)
    assert LbfEnv.stack([a, LbfEnv(6, 2, 2, horizon=50)]) is None
    assert LbfEnv.stack([a, LbfEnv(6, 2, 2, fov=3)]) is None
    padded = [PaddedEnv(e, num_agents=4) for e in (a, LbfEnv(8, 3, 2))]
    assert type(padded[0]).stack(padded).num_agents == 4


def test_set_evaluator_plays_the_same_episodes_stacked_or_each_level_traced():
    """The set evaluator stacks an agent group's levels by default; per-task episode statistics must equal those
    of every level's own traced env for the same keys."""
    from mtmarl.evaluation.policies import RANDOM
    from mtmarl.evaluation.rollout import make_task_set_evaluator

    envs = [PaddedEnv(LbfEnv(**level, fov=2, horizon=40), num_agents=4) for level in LEVELS]
    keys = jax.random.split(jax.random.PRNGKey(3), len(envs))
    stacked, each = (jax.device_get(make_task_set_evaluator(envs, RANDOM, 12, num_devices=1, batch=4,
                                                            stack=st)(None, keys)) for st in (True, False))
    for field in ("returns", "lengths", "successes", "timeouts"):
        np.testing.assert_array_equal(getattr(stacked, field), getattr(each, field), err_msg=field)
    assert (each.returns > 0).any() and each.timeouts.any()
