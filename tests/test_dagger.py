"""DAgger student of the RWARE planner: buffer bookkeeping, imitation, improvement, collection."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from omegaconf import OmegaConf

from mtmarl import collect
from mtmarl.data.vault import read_vault, vault_path
from mtmarl.errors import UserInputError
from mtmarl.evaluation.rollout import make_evaluator
from mtmarl.online import scripted_rware as planner
from mtmarl.online.dagger import DaggerConfig, cross_entropy, make_dagger
from mtmarl.tasks import TaskSpec

SMALLEST = "rware:rows=1,cols=3,height=8,agents=2"  # tiny-2ag, the smallest rware_15 train task
SMALL = DaggerConfig(hidden=(64,), num_envs=4, steps=16, iterations=3, sgd_steps=40, minibatch=64, buffer=300,
                     lr=3e-3)


@pytest.mark.parametrize("bad", [{"num_envs": 0}, {"beta_decay": 1.5}, {"lr": 0.0}, {"sgd_steps": -1}])
def test_config_rejects_bad_values_naming_the_key(bad):
    key = next(iter(bad))
    with pytest.raises(UserInputError, match=f"collect.dagger.{key}"):
        DaggerConfig(**bad)


def test_config_rejects_unknown_keys():
    with pytest.raises(UserInputError, match="iteratons"):
        DaggerConfig.from_mapping({"iteratons": 3})


@pytest.fixture(scope="module")
def small_run():
    env = TaskSpec.parse(SMALLEST).build()
    dagger = make_dagger(env, SMALL)
    states = [dagger.init(jax.random.PRNGKey(0))]
    metrics = []
    for i in range(SMALL.iterations):
        state, m = dagger.iterate(states[-1], jax.random.PRNGKey(10 + i))
        states.append(jax.device_get(state))
        metrics.append(jax.device_get(m))
    return env, dagger, states, metrics


def test_buffer_is_a_fifo_of_planner_labels(small_run):
    env, dagger, states, metrics = small_run
    per_iter = SMALL.num_envs * SMALL.steps * env.num_agents  # 128 agent-steps
    assert [int(m.filled) for m in metrics] == [128, 256, 300]
    assert [int(s.cursor) for s in states[1:]] == [128, 256, (3 * per_iter) % 300]
    assert [float(m.beta) for m in metrics] == [1.0, 0.5, 0.25]
    last = states[-1]
    # the third iteration wrapped around: rows 256..299 and 0..83 are its samples, 84..255 the second's
    third = np.concatenate([np.arange(256, 300), np.arange(0, 84)])
    second = np.arange(84, 256)
    for rows in (third, second):
        assert np.all(last.mask[rows].any(-1))  # every written row has a legal action
        assert np.all(last.mask[rows][np.arange(rows.size), last.label[rows]])  # and the label is legal


def test_labels_are_the_planners_collision_checked_actions(small_run):
    """Iteration 0 has beta 1: the planner acts everywhere, and the first rows of the buffer are the
    initial states' views with the planner's labels."""
    env, dagger, states, metrics = small_run
    b, n = SMALL.num_envs, env.num_agents
    init, after = states[0], states[1]
    np.testing.assert_allclose(after.obs[: b * n].reshape(b, n, -1),
                               np.asarray(init.batch.timestep.observation.agents_view))
    labels = after.label[: b * n].reshape(b, n)
    mask = np.asarray(init.batch.timestep.observation.action_mask)
    assert np.all(mask[np.arange(b)[:, None], np.arange(n)[None], labels])
    # a planned load/unload is never changed by the collision check
    plans = np.asarray(jax.vmap(lambda s: planner.planner_actions(env, s, jax.random.PRNGKey(0)))(init.batch.state))
    np.testing.assert_array_equal(labels[plans == planner.TOGGLE], planner.TOGGLE)
    # agents blocked by nobody follow the plan's moves (ties aside, the plan is deterministic)
    assert (labels == plans).mean() > 0.7


def test_student_learns_the_labels(small_run):
    """On the buffer it was trained on, the student after an iteration's SGD steps fits the planner's
    labels better than before them (the untrained student is near uniform)."""
    _, dagger, states, _ = small_run
    data = states[1]
    rows = slice(0, int(data.filled))
    fit = lambda params: cross_entropy(dagger.actor, params, data.obs[rows], data.mask[rows], data.label[rows])  # noqa: E731
    (loss0, acc0), (loss1, acc1) = fit(states[0].params), fit(states[1].params)
    assert float(loss1) < float(loss0) - 0.2 and float(acc1) > float(acc0) + 0.2, (loss0, acc0, loss1, acc1)


@pytest.mark.slow
def test_student_improves_its_return_on_the_smallest_train_task():
    """The online RWARE learner: a few DAgger iterations lift the pure student's return
    well above the untrained (near-uniform) student on tiny-2ag."""
    env = TaskSpec.parse(SMALLEST).build()
    cfg = DaggerConfig(hidden=(128, 128), num_envs=16, steps=128, iterations=5, sgd_steps=150, minibatch=1024)
    dagger = make_dagger(env, cfg)
    evaluate = make_evaluator(env, dagger.policy, 32)
    state = dagger.init(jax.random.PRNGKey(0))
    before = float(np.mean(evaluate(state.params, jax.random.PRNGKey(9)).returns))
    for i in range(cfg.iterations):
        state, _ = dagger.iterate(state, jax.random.PRNGKey(i))
    after = float(np.mean(evaluate(state.params, jax.random.PRNGKey(9)).returns))
    assert before < 0.5 and after > 1.5, (before, after)


@pytest.mark.slow
def test_dagger_collection_writes_mixed_vault_and_reference(tmp_path):
    spec = TaskSpec.parse(SMALLEST)
    dag = {"envs": ["rware"], "iterations": 2, "beta_decay": 0.5, "num_envs": 8, "steps": 64, "sgd_steps": 50,
           "minibatch": 512, "buffer": 8192, "hidden": [64], "lr": 0.003, "record_every": 1, "record_envs": 2}
    cfg = OmegaConf.create({
        "task": spec.adhoc, "split": "train", "seed": 0, "online": {}, "online_env": {},
        "collect": {"budget": 1, "root": str(tmp_path), "uid": "default", "references": None, "log_dir": None,
                    "record": True, "progress": False, "scripted": {"envs": []}, "dagger": dag},
        "eval": {"episodes": 8, "devices": None, "greedy": False}})
    (res,) = collect.run(cfg)
    exp = read_vault(vault_path(tmp_path, spec), spec)
    assert exp["actions"].shape[1] == res["transitions"] > 0
    log = [json.loads(x) for x in (tmp_path / "logs" / "rware" / f"{SMALLEST[6:]}.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in log] == [0, 1, 2] and all("return" in r for r in log)
    assert log[-1]["recorded"] == res["transitions"] and "loss" in log[0] and "loss" not in log[-1]
    ref = json.loads((tmp_path / "references.json").read_text())[spec.adhoc]
    assert ref["behaviour"].startswith("DAgger student") and ref["env_steps"] == 2 * 8 * 64
    assert collect.run(cfg)[0].get("skipped")  # resumable like the other collectors


def test_an_env_in_both_collector_lists_is_an_error():
    cfg = OmegaConf.create({"collect": {"dagger": {"envs": ["rware"]}, "scripted": {"envs": ["rware"]}}})
    with pytest.raises(UserInputError, match="both collect.dagger.envs and collect.scripted.envs"):
        collect.collector(cfg, "rware")
    assert collect.collector(cfg, "lbf") is collect.collect_task


def test_buffer_must_hold_one_iteration():
    env = TaskSpec.parse(SMALLEST).build()
    with pytest.raises(UserInputError, match="collect.dagger.buffer=100 is smaller than one iteration's 128"):
        make_dagger(env, DaggerConfig(num_envs=4, steps=16, buffer=100))
