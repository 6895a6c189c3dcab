"""SMAX on the environment protocol: map names, the two task sets, the adapter against raw JaxMARL,
padding of entities and attack actions across maps, and the win signal."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtmarl import tasks
from mtmarl.envs.smax import STOP, parse_map
from mtmarl.errors import UserInputError
from mtmarl.evaluation.policies import Policy, uniform_legal
from mtmarl.evaluation.rollout import make_evaluator
from mtmarl.tasks import TaskSpec

MARINE, STALKER, ZEALOT = 0, 2, 3


def test_map_names_give_unit_types_and_bad_ones_name_the_letters():
    assert parse_map("5m_vs_6m") == ([MARINE] * 5, [MARINE] * 6)
    assert parse_map("2s3z") == ([STALKER] * 2 + [ZEALOT] * 3,) * 2
    assert parse_map("1s_vs_2zg")[1] == [4, 4]  # zerglings
    for bad in ("5x", "m5", "3m_vs_", "0m", "3m_vs_4m_vs_5m", ""):
        with pytest.raises(UserInputError, match="map="):
            parse_map(bad)
    with pytest.raises(UserInputError, match=r"task bad: map='5x'.*allowed letters: m=marine"):
        TaskSpec.create("smax", {"map": "5x"}, "bad")
    spec = TaskSpec.parse("smax:map=7m_vs_8m")  # ad-hoc tasks outside the sets
    assert spec.build().num_agents == 7 and spec.build().num_actions == 5 + 8


@pytest.mark.parametrize("name, train, test, agents, obs, actions", [
    ("smax_marine_hard", ["3m", "5m_vs_6m", "9m_vs_10m"],
     ["4m", "5m", "10m", "12m", "7m_vs_8m", "8m_vs_9m", "10m_vs_11m", "10m_vs_12m", "13m_vs_15m"],
     13, 12 * 13 + 15 * 13 + 10, 5 + 15),
    ("smax_stalker_zealot", ["2s3z", "2s4z", "3s5z"],
     ["1s3z", "1s4z", "1s5z", "2s5z", "3s3z", "3s4z", "4s3z", "4s4z", "4s5z", "4s6z"],
     10, 9 * 13 + 10 * 13 + 10, 5 + 10),
])
def test_task_sets_and_their_padded_layout(name, train, test, agents, obs, actions):
    ts = tasks.load(name)
    assert [t.name for t in ts.train] == train and [t.name for t in ts.test] == test
    spec = ts.env_spec
    assert (spec.num_agents, spec.obs_dim, spec.num_actions) == (agents, obs, actions)
    assert [g.name for g in spec.obs.groups] == ["allies", "enemies", "own"] and spec.has_success
    assert spec.actions.noop == STOP and spec.actions.target_offset("enemies") == 5
    desc = ts.describe()
    assert all(t["success"] for t in desc["train"] + desc["test"])


def _key_seq(key, n):
    """The adapter's keys: reset uses split(key)[0], each step split(previous carry)[0]."""
    k_reset, carry = jax.random.split(key)
    steps = []
    for _ in range(n):
        k, carry = jax.random.split(carry)
        steps.append(k)
    return k_reset, steps


def test_adapter_matches_raw_jaxmarl():
    env = TaskSpec.parse("smax:map=3m").build()
    raw = env.smax
    key = jax.random.PRNGKey(4)
    k_reset, k_steps = _key_seq(key, 12)
    obs, rs = raw.reset(k_reset)
    s, ts = env.reset(key)
    step, raw_step = jax.jit(env.step), jax.jit(raw.step_env)
    for i, k in enumerate(k_steps):
        np.testing.assert_array_equal(ts.observation.agents_view, np.stack([obs[a] for a in raw.agents]))
        avail = raw.get_avail_actions(rs)
        np.testing.assert_array_equal(ts.observation.action_mask, np.stack([avail[a] for a in raw.agents]) > 0)
        np.testing.assert_array_equal(ts.state, obs["world_state"])
        a = uniform_legal(jax.random.PRNGKey(100 + i), ts.observation.action_mask)
        obs, rs, rew, dones, _ = raw_step(k, rs, {ag: a[j] for j, ag in enumerate(raw.agents)})
        s, ts = step(s, a)
        assert float(ts.reward) == float(rew["ally_0"]) == float(rew["ally_2"])
        assert bool(ts.done) == bool(dones["__all__"])
        if bool(ts.done):
            break


def _focus_fire(params, obs, carry, key):
    """Attack the first enemy in range, else walk east (towards the enemy), dead units stop."""
    attacks = obs.action_mask[:, 5:]
    target = 5 + jnp.argmax(attacks, axis=-1)
    walk = jnp.where(obs.action_mask[:, 1], 1, STOP)
    return jnp.where(attacks.any(-1), target, walk), carry


FOCUS = Policy(init_carry=lambda params, n: (), act=_focus_fire)


@functools.cache
def _episodes(padded: bool):
    ts = tasks.load("smax_marine_hard")
    env = ts.padded(ts.train[0]) if padded else ts.train[0].build()
    return jax.device_get(make_evaluator(env, FOCUS, 12, num_devices=1)(None, jax.random.PRNGKey(7)))


def test_win_signal_agrees_with_the_win_bonus_and_padding_changes_no_episode():
    stats = _episodes(False)
    # a won episode took every enemy's health (1.0 in total) plus the win bonus 1.0; a lost one gets no bonus
    np.testing.assert_array_equal(stats.successes, stats.returns > 1.99)
    assert 0 < stats.successes.sum(), "focus fire should beat the heuristic enemy on 3m sometimes"
    padded = _episodes(True)  # 3m inside marine-hard's 13 agents x (12, 15) entities x 20 actions
    for a, b in zip(stats, padded):
        np.testing.assert_allclose(a, b, rtol=1e-6)
