"""The Anakin online builder: any PPOLearner plugs in, by name only through the registry."""

from __future__ import annotations

import ast
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_online import ToyEnv  # episodes of 2-4 steps

from mtmarl.evaluation.policies import Policy
from mtmarl.algos import registry
from mtmarl.online import anakin, ppo
from mtmarl.online.rollout import carried_rollout
from mtmarl.online.system import MappoConfig

ONLINE = Path(anakin.__file__).resolve().parent


def counting_learner(env, sequences: bool) -> anakin.PPOLearner:
    """A toy learner: logits = obs @ w, team value = b; its carry counts the steps since the episode began.

    Its loss checks what the builder hands it: sequence samples keep (B', T) with the carry each env had
    at its rollout's start, step samples are flat with carry0 = ().
    """
    o, a = env.obs_dim, env.num_actions

    def act(params, ts, carry, key):
        logits = ts.observation.agents_view @ params["w"]
        actions = jax.random.categorical(key, logits)
        return actions, ppo.log_prob(logits, ts.observation.action_mask, actions), value(params, ts), carry + 1

    def value(params, ts, carry=()):
        return jnp.broadcast_to(params["b"], ts.reward.shape)

    def loss(params, traj, adv, targets, carry0):
        if sequences:
            assert traj.actions.ndim == 3 and carry0.shape == traj.actions.shape[:1]  # (B', T, N), (B',)
        else:
            assert traj.actions.ndim == 2 and carry0 == ()  # (B'*T, N)
        logits = traj.obs.agents_view @ params["w"]
        info = ppo.ppo_loss(logits, traj.obs.action_mask, traj.actions, traj.logp, adv[..., None],
                            jnp.broadcast_to(params["b"], adv.shape), traj.value, targets, 0.2, 0.5, 0.01)
        return info.total, info

    def policy_act(params, obs, carry, key):
        return jax.random.categorical(key, obs.agents_view @ params["w"]), carry

    policy = Policy(init_carry=lambda params, num_agents: (), act=policy_act)
    return anakin.PPOLearner(
        init=lambda key: {"w": 0.1 * jax.random.normal(key, (o, a)), "b": jnp.zeros(())},
        init_carry=lambda b: jnp.zeros((b,), jnp.int32),
        rollout=lambda params, envs, carry, pool, key, length, greedy=False: carried_rollout(
            env, act, value, params, envs, carry, pool, key, length),  # a toy: its greedy acts also sample
        loss=loss, sequences=sequences, actor_params=lambda params: params["w"], policy=policy, greedy_policy=policy)


@pytest.mark.parametrize("sequences", [False, True])
def test_a_new_learner_trains_and_records_on_the_builder(sequences):
    env = ToyEnv()
    cfg = MappoConfig(num_envs=4, rollout_len=6, epochs=1, minibatches=2, updates_per_chunk=3, record_envs=4,
                      record_len=10)
    system = anakin.build(env, cfg, counting_learner(env, sequences))
    d = system.num_devices
    state = system.init(jax.random.PRNGKey(0))
    assert np.asarray(state.carry).shape == (d, 4) and not np.asarray(state.carry).any()
    before = np.asarray(system.actor_params(state))
    state, metrics = system.train_chunk(state)
    assert np.asarray(state.update).tolist() == [3] * d
    # the carry crosses updates (it is reset only where an episode ended): 18 steps, episodes of <= 4
    assert np.asarray(state.carry).max() <= 4 and np.asarray(state.carry).any()
    assert np.abs(np.asarray(system.actor_params(state)) - before).max() > 0  # it learned something
    for leaf in jax.tree.leaves(state.params):  # pmean keeps the devices' params equal
        np.testing.assert_array_equal(np.asarray(leaf)[0], np.asarray(leaf)[-1])
    assert np.asarray(metrics.episodes).shape == (d, 3) and float(anakin.chunk_summary(metrics)["episodes"]) > 0
    traj = system.record(state, jax.random.PRNGKey(1))
    assert traj.actions.shape == (d, 10, 2, env.num_agents)
    assert system.env_steps_per_update == d * 4 * 6


def _strings_and_names(path: Path) -> set[str]:
    """Lower-cased names, attributes and string constants of a module's code (docstrings left out)."""
    tree = ast.parse(path.read_text())
    docs = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}
    return ({n.value.lower() for n in ast.walk(tree)
             if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs}
            | {n.id.lower() for n in ast.walk(tree) if isinstance(n, ast.Name)}
            | {n.attr.lower() for n in ast.walk(tree) if isinstance(n, ast.Attribute)})


def test_the_builder_collectors_and_launchers_never_branch_on_a_stage_name():
    stages = tuple(registry.ONLINE)
    for name in ("anakin.py", "collectors.py"):
        found = {w for w in _strings_and_names(ONLINE / name) for s in stages if s in w}
        assert not found, (name, found)
    # the registry and the launchers dispatch by the table, never by comparing names
    package = ONLINE.parent
    for path in (package / "algos" / "registry.py", package / "collect.py", package / "finetune.py"):
        tree = ast.parse(path.read_text())
        compares = [n for n in ast.walk(tree) if isinstance(n, ast.Compare)
                    and any(isinstance(c, ast.Constant) and c.value in stages for c in [n.left, *n.comparators])]
        assert not compares, path
    assert {registry.online_stage(s).config.SYSTEM for s in stages} == set(stages)
