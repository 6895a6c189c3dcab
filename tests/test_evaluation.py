"""Compiled evaluator vs a plain Python rollout; device-count invariance; results files."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtmarl import envs
from mtmarl.errors import UserInputError
from mtmarl.evaluation.policies import RANDOM, Policy, uniform_legal
from mtmarl.evaluation.references import DEFAULT_PATH, default_path, load_references, reference_for
from mtmarl.evaluation.results import summarise, to_marl_eval
from mtmarl.evaluation import rollout
from mtmarl.evaluation.rollout import EpisodeStats, episode_keys, make_evaluator, make_task_set_evaluator, \
    run_task_episodes
from mtmarl.tasks import TaskSpec

# Connector keeps paying its step penalty after an episode has ended, so a
# return that ran past the first end would be visibly wrong.
SPEC = TaskSpec.parse("connector:grid=5,agents=3,horizon=12")


def _counting_act(params, obs, carry, key):
    """Recurrent policy: on odd steps of its own clock, the highest legal action; else random."""
    num_actions = obs.action_mask.shape[-1]
    highest = num_actions - 1 - jnp.argmax(obs.action_mask[:, ::-1], axis=-1)
    actions = jnp.where(carry % 2 == 1, highest, uniform_legal(key, obs.action_mask))
    return actions, carry + params


COUNTING = Policy(init_carry=lambda params, n: jnp.int32(0), act=_counting_act)


def python_rollout(env, policy, params, key, num_episodes):
    """Reference: one episode at a time, a Python loop of single steps."""
    reset, step = jax.jit(env.reset), jax.jit(env.step)
    act = jax.jit(policy.act)
    returns, lengths, timeouts = [], [], []
    for ep_key in episode_keys(key, num_episodes):
        reset_key, act_key = jax.random.split(ep_key)
        state, ts = reset(reset_key)
        carry = policy.init_carry(params, env.num_agents)
        ret, length, timeout = 0.0, 0, True  # still running at the horizon: a time-out
        for t in range(env.horizon):
            actions, carry = act(params, ts.observation, carry, jax.random.fold_in(act_key, t))
            state, ts = step(state, actions)
            ret += float(ts.reward)
            length += 1
            if bool(ts.done):
                timeout = not bool(ts.terminal)
                break
        returns.append(ret)
        lengths.append(length)
        timeouts.append(timeout)
    return np.array(returns), np.array(lengths), np.array(timeouts)


@pytest.fixture(scope="module")
def env():
    return envs.PaddedEnv(SPEC.build(), num_agents=5)


@pytest.mark.parametrize("policy,params", [(RANDOM, ()), (COUNTING, jnp.int32(1))])
def test_matches_python_loop(env, policy, params):
    key = jax.random.PRNGKey(3)
    stats = make_evaluator(env, policy, 6, num_devices=1)(params, key)
    ref_returns, ref_lengths, ref_timeouts = python_rollout(env, policy, params, key, 6)
    np.testing.assert_allclose(stats.returns, ref_returns, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(stats.lengths, ref_lengths)
    np.testing.assert_array_equal(stats.timeouts, ref_timeouts)
    assert (ref_lengths < env.horizon).any(), "some episode should end early for this check to bite"


def test_evaluation_compiles_at_level_1_unless_the_process_asks_for_unoptimised_compiles():
    """Training runs compile evaluation at XLA level 1; a process with ``jax_disable_most_optimizations`` (the
    suite sets it) gets no options, so the setting's level 0 is not overridden."""
    assert jax.config.read("jax_disable_most_optimizations")  # tests/conftest.py
    assert rollout.compiler_options() == {}
    jax.config.update("jax_disable_most_optimizations", False)
    try:
        assert rollout.compiler_options() == rollout.COMPILER_OPTIONS == {"xla_backend_optimization_level": 1}
    finally:
        jax.config.update("jax_disable_most_optimizations", True)


def test_blank_states_have_the_shapes_of_the_reset_under_two_vmaps():
    """``_batched_shapes`` (one unbatched trace) gives what ``eval_shape`` of the doubly vmapped reset gives,
    leaf for leaf (shapes and dtypes), for a stacked, padded env taking (key, task)."""
    from mtmarl.envs.connector import ConnectorEnv

    padded = [envs.PaddedEnv(e, num_agents=4, state_dim=3 * 64) for e in (ConnectorEnv(5, 2), ConnectorEnv(6, 3),
                                                                          ConnectorEnv(5, 4))]
    stacked = type(padded[0]).stack(padded)
    keys = jax.random.split(jax.random.PRNGKey(0), 6).reshape(3, 2, -1)
    tasks = jnp.broadcast_to(jnp.arange(3, dtype=jnp.int32)[:, None], (3, 2))
    want = jax.eval_shape(jax.vmap(jax.vmap(stacked.reset)), keys, tasks)
    got = rollout._batched_shapes(stacked.reset, (3, 2), keys[0, 0], jnp.int32(0))
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert (g.shape, g.dtype) == (w.shape, w.dtype)


def test_device_count_and_batching_do_not_change_returns(env):
    """Same episodes whether played at once on 1 device, or on 2 devices in several fixed-size calls with the
    last episodes dropped. (The set evaluator's test covers 2 devices in one call; each program costs a
    compile, so the two changes are checked together here.)"""
    assert jax.local_device_count() == 2
    key = jax.random.PRNGKey(7)
    one = make_evaluator(env, RANDOM, 9, num_devices=1)((), key)
    calls = make_evaluator(env, RANDOM, 9, num_devices=2, batch=2)   # 3 calls of 2 per device, 3 dropped
    assert calls.calls == 3
    other = calls((), key)
    assert one.returns.shape == other.returns.shape == (9,)
    np.testing.assert_allclose(one.returns, other.returns, rtol=1e-6)
    np.testing.assert_array_equal(one.lengths, other.lengths)
    assert len(set(np.round(np.asarray(one.returns), 5))) > 1 or len(set(np.asarray(one.lengths))) > 1


def test_padding_does_not_change_returns(env):
    key = jax.random.PRNGKey(11)
    # Random draws differ in shape between the two, so use a deterministic policy.
    noop = Policy(lambda p, n: (), lambda p, obs, c, k: (jnp.zeros(obs.active.shape, jnp.int32), c))
    a = make_evaluator(env, noop, 4, 1)((), key)
    b = make_evaluator(env.inner, noop, 4, 1)((), key)
    np.testing.assert_allclose(a.returns, b.returns)
    np.testing.assert_array_equal(a.lengths, b.lengths)


# Tasks of one set that differ in grid, agent count and horizon (some episodes hit the time limit, others end
# early), padded to one shape as a training run pads them.
SET_SPECS = [TaskSpec.parse(t) for t in ("connector:grid=5,agents=3,horizon=12", "connector:grid=6,agents=2,horizon=7",
                                         "connector:grid=7,agents=4,horizon=10")]


@pytest.fixture(scope="module")
def set_envs():
    built = [s.build() for s in SET_SPECS]
    pad = {"num_agents": max(e.num_agents for e in built), "obs_dim": max(e.obs_dim for e in built),
           "state_dim": max(e.state_dim for e in built)}
    return [envs.PaddedEnv(e, **pad) for e in built]


@pytest.fixture(scope="module")
def own_agent_envs(set_envs):
    """The set's layout with each task's own agents (as evaluation plays them), plus task 0 padded to 4 agents:
    groups of one and of two tasks (task 0 at 4 agents shares its group with the 4-agent task)."""
    built = [s.build() for s in SET_SPECS]
    sizes = {"obs_dim": set_envs[0].obs_dim, "state_dim": set_envs[0].state_dim}
    return [envs.PaddedEnv(e, num_agents=e.num_agents, **sizes) for e in built] + [set_envs[0]]


def test_task_set_evaluator_matches_per_task_evaluators(own_agent_envs, monkeypatch):
    """The set evaluator (one program per agent count, 2 devices) gives each task exactly its own 1-device
    evaluator's episodes (same keys), in several calls (the final evaluation's resized program) and with slots
    that play several episodes in a row (a finished episode's slot starts the next: reset env, carry and step),
    grouped by agent count (groups of one task and of two, one of them padded: the one-group case is inside
    it). COUNTING is recurrent, reads its params and draws random legal actions on even steps. The three
    programs compile two at a time (``COMPILE_THREADS``)."""
    from mtmarl.evaluation import rollout

    monkeypatch.setattr(rollout, "COMPILE_THREADS", 2)
    set_envs = own_agent_envs
    assert len({e.num_agents for e in set_envs}) == 3
    policy, params = COUNTING, jnp.int32(1)
    keys = jax.random.split(jax.random.PRNGKey(5), len(set_envs))
    per_task = [make_evaluator(env, policy, 7, num_devices=1)(params, k) for env, k in zip(set_envs, keys)]
    # One slot per task and device plays up to 3 episodes in a row per call: 2 episodes (a periodic
    # evaluation: one call playing 1 per device), and 7 with the same program (4 per device: a call
    # of 3, then one of the last), 1 dropped.
    refill = make_task_set_evaluator(set_envs, policy, 2, num_devices=2, batch=1, capacity=3)
    assert [idx.tolist() for idx in refill.groups] == [[0], [1], [2, 3]]  # a program per agent count: 3, 2, 4
    calls = refill.resized(7)
    assert (refill.batch, refill.calls, calls.calls) == (1, 1, 2)
    # compiles started in the background as training does, then stopped (a run that ends early): close()
    # waits for the program in progress, and the programs left uncompiled compile on the first call
    refill.compile(params, keys, background=True).close()
    assert refill._compiling[0].done()
    few = refill(params, keys)
    assert all(part._compiled[0] is not None for part in refill.parts)
    assert few.returns.shape == (len(set_envs), 2)
    for t, ref in enumerate(per_task):
        np.testing.assert_array_equal(few.returns[t], ref.returns[:2])
        np.testing.assert_array_equal(few.lengths[t], ref.lengths[:2])
    one = calls(params, keys)
    assert one.returns.shape == one.lengths.shape == (len(set_envs), 7)
    for t, ref in enumerate(per_task):
        np.testing.assert_array_equal(one.returns[t], ref.returns)
        np.testing.assert_array_equal(one.lengths[t], ref.lengths)
    # a slot for every episode of a call (what a training run's evaluator uses on an accelerator): a periodic
    # evaluation plays 1 episode per device in 4 slots, the final one all 4 at once: the same episodes again
    # (the 4-agent group alone, one of its two tasks padded: one more program to compile)
    wide = make_task_set_evaluator(set_envs[2:], policy, 2, num_devices=2, batch=4, capacity=4)
    assert (wide.batch, wide.calls, wide.resized(7).calls) == (4, 1, 1)
    for stats, n in ((wide(params, keys[2:]), 2), (wide.resized(7)(params, keys[2:]), 7)):
        for t, ref in enumerate(per_task[2:]):
            np.testing.assert_array_equal(stats.returns[t], ref.returns[:n])
            np.testing.assert_array_equal(stats.lengths[t], ref.lengths[:n])
    lengths = np.asarray(one.lengths)
    horizons = [e.horizon for e in set_envs]
    assert (lengths <= np.array(horizons)[:, None]).all()
    assert (lengths == np.array(horizons)[:, None]).any() and (lengths < np.array(horizons)[:, None]).any(), \
        "need both timeouts and early ends"


@pytest.mark.slow  # the fast suite keeps the same check with the feed-forward policy
def test_task_set_evaluator_matches_per_task_with_a_sable_policy(set_envs):
    """The policy network batched over all tasks' episodes acts as it does per task (bit-identical returns)."""
    from mtmarl.algos.registry import build as make_algo
    from mtmarl.networks.sable import SableConfig
    from mtmarl.training.policy import make_policy

    from helpers import random_params

    net = SableConfig(embed_dim=16, n_blocks=1, n_heads=2, chunk_size=4, q_bins=0, matmul_dtype="bfloat16")
    algo = make_algo("mt_bc_sable", None, net, set_envs[0].num_actions)
    obs = jnp.zeros((1, 1, set_envs[0].num_agents, set_envs[0].obs_dim))
    params = random_params(algo.net.init, jax.random.PRNGKey(0), obs, scale_spread=0.5)
    policy = make_policy(algo)
    two_tasks = set_envs[:2]
    keys = jax.random.split(jax.random.PRNGKey(9), len(two_tasks))
    both = make_task_set_evaluator(two_tasks, policy, 4, num_devices=1)(params, keys)
    for t, (env, key) in enumerate(zip(two_tasks, keys)):
        ref = make_evaluator(env, policy, 4, num_devices=1)(params, key)
        np.testing.assert_array_equal(both.returns[t], ref.returns)
        np.testing.assert_array_equal(both.lengths[t], ref.lengths)


def test_task_set_evaluator_refuses_tasks_of_different_shapes(own_agent_envs):
    a, b = (s.build() for s in SET_SPECS[:2])
    with pytest.raises(UserInputError, match="state_dim 108 vs 75"):  # agent counts may differ, layouts not
        make_task_set_evaluator([envs.PaddedEnv(a), envs.PaddedEnv(b)], RANDOM, 2)
    with pytest.raises(ValueError, match=r"one agent count, got \[2, 3\]"):  # a program plays one group
        run_task_episodes(own_agent_envs[:2], RANDOM, None, jnp.zeros((2, 1, 2), jnp.uint32))
    with pytest.raises(UserInputError, match="no tasks"):
        make_task_set_evaluator([], RANDOM, 2)
    with pytest.raises(UserInputError, match="episodes must be >= 1"):
        make_task_set_evaluator([envs.PaddedEnv(a)], RANDOM, 0)


def test_uniform_legal_only_picks_legal_and_covers_them():
    mask = jnp.array([[True, False, True, False, True], [False, False, False, True, False]])
    draws = jax.vmap(lambda k: uniform_legal(k, mask))(jax.random.split(jax.random.PRNGKey(0), 3000))
    counts = np.stack([np.bincount(draws[:, i], minlength=5) for i in range(2)])
    assert (counts[~np.asarray(mask)] == 0).all()
    np.testing.assert_allclose(counts[0, [0, 2, 4]] / 3000, 1 / 3, atol=0.04)
    assert (counts[1, 3] == 3000)


def test_summary_and_normalisation(tmp_path):
    stats = EpisodeStats(returns=np.array([1.0, 2.0, 3.0, 6.0]), lengths=np.array([5, 5, 6, 7]),
                         successes=np.zeros(4, bool), timeouts=np.zeros(4, bool))
    info = {"name": SPEC.name, "task": SPEC.adhoc, "env": "connector", "split": "test", "agents": 3}
    row = summarise(info, stats, reference=4.0)
    assert row["mean_return"] == pytest.approx(3.0)
    assert row["stderr"] == pytest.approx(np.std([1, 2, 3, 6], ddof=1) / 2)
    assert row["normalised_return"] == pytest.approx(0.75)
    raw = summarise(info, stats, reference=None)
    assert raw["normalised_return"] is None

    out = to_marl_eval([row, raw | {"name": "other"}], algorithm="random", seed=2)
    metrics = out["connector"][SPEC.name]["random"]["seed_2"]["absolute_metrics"]
    assert metrics["return"] == [1.0, 2.0, 3.0, 6.0]
    assert metrics["episode_count"] == [4]
    assert metrics["normalised_return"] == pytest.approx([0.25, 0.5, 0.75, 1.5])
    assert "normalised_return" not in out["connector"]["other"]["random"]["seed_2"]["absolute_metrics"]


def test_references_file(tmp_path):
    path = tmp_path / "references.json"
    path.write_text(json.dumps({SPEC.adhoc: {"return": 2.5}, "named-task": 4}))
    refs = load_references(path)
    assert reference_for(SPEC, refs) == 2.5
    assert reference_for(TaskSpec.parse("connector:grid=6,agents=2"), refs) is None
    assert load_references(tmp_path / "missing.json") == {}
    path.write_text("{not json")
    with pytest.raises(UserInputError, match="malformed"):
        load_references(path)


def test_references_default_to_the_data_roots_own(tmp_path):
    assert default_path(tmp_path) == DEFAULT_PATH  # a root without references: the bundled ones
    assert default_path(None) == DEFAULT_PATH
    (tmp_path / "references.json").write_text(json.dumps({SPEC.adhoc: {"return": 7.0}}))
    assert reference_for(SPEC, load_references(default_path(str(tmp_path)))) == 7.0


class _KeyedStack:
    """A toy stack: a reset writes (first word of its raw key, task) into the state, a step adds 1 to the counter."""

    spec, horizon = None, 10

    def reset(self, key, task):
        return {"word": key[0], "task": task, "steps": jnp.int32(0)}, jnp.float32(task)

    def step(self, state, actions):
        return {**state, "steps": state["steps"] + 1}, jnp.float32(state["task"])


@pytest.mark.parametrize("chunk", [1, 3, 100])
def test_stacked_resets_serve_every_due_slot_and_touch_no_other(monkeypatch, chunk):
    """Restarts run ``RESET_CHUNK`` slots at a time until all slots due one are served in that step: each gets
    its task's key of the episode it starts, every other slot keeps its state (against a naive loop)."""
    from mtmarl.evaluation import rollout

    monkeypatch.setattr(rollout, "RESET_CHUNK", chunk)
    T, S, C = 3, 4, 6
    keys = jax.random.split(jax.random.PRNGKey(3), T * C).reshape(T, C, 2)  # raw keys, as the evaluator has
    env = rollout._StackedEnv(_KeyedStack(), keys, S)
    states = {"word": jnp.full((T, S), 7, jnp.uint32), "task": jnp.full((T, S), -1, jnp.int32),
              "steps": jnp.arange(T * S, dtype=jnp.int32).reshape(T, S)}
    ts = jnp.zeros((T, S))
    rng = np.random.default_rng(0)
    start = jnp.asarray(rng.random((T, S)) < 0.6)
    first = jnp.asarray(rng.integers(0, C, (T, S)), jnp.int32)
    new, new_ts = jax.jit(env.reset)(states, ts, start, first)
    for t in range(T):
        for s in range(S):
            if start[t, s]:
                want = _KeyedStack().reset(keys[t, first[t, s]], t)
                assert (int(new["word"][t, s]), int(new["task"][t, s]), int(new["steps"][t, s])) == \
                    (int(want[0]["word"]), t, 0)
                assert float(new_ts[t, s]) == t
            else:
                assert (int(new["word"][t, s]), int(new["task"][t, s])) == (7, -1)
                assert int(new["steps"][t, s]) == t * S + s and float(new_ts[t, s]) == 0.0
