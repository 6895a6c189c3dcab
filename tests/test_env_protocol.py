"""The environment protocol with a toy entity env defined here: layouts, per-group padding, targeted
actions, the success signal, task sets, evaluation and buffers, each against an unpadded reference."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

from mtmarl import envs
from mtmarl import tasks as task_registry
from mtmarl.data.batching import make_buffers
from mtmarl.envs import (ActionLayout, EntityGroup, EnvSpec, MultiAgentEnv, ObsLayout, Observation, PaddedEnv,
                         TaskMixture, TimeStep)
from mtmarl.envs.base import TaskState
from mtmarl.errors import UserInputError
from mtmarl.evaluation.policies import RANDOM, uniform_legal
from mtmarl.evaluation.results import summarise
from mtmarl.evaluation.rollout import episode_keys, make_task_set_evaluator


@struct.dataclass
class DuelState:
    hp: jax.Array  # (K,) int32 enemy hit points
    t: jax.Array   # () int32


class ToyDuel(MultiAgentEnv):
    """N agents shoot K enemies: action 0 no-op, 1 wait, 2+k attack enemy k (legal while it lives).
    Each hit takes one hit point; the team reward is the damage dealt; all enemies dead is a win. With
    ``lose``, a step where every agent waits ends the episode as a loss (terminal, no win)."""

    name = "toy_duel"

    def __init__(self, agents: int = 2, enemies: int = 2, hp: int = 3, horizon: int = 4, lose: bool = False):
        self.n, self.k, self.hp, self.horizon, self.lose = agents, enemies, hp, horizon, lose
        obs = ObsLayout((EntityGroup("own", 1, 2), EntityGroup("allies", agents - 1, 1),
                         EntityGroup("enemies", enemies, 2)))
        self.spec = EnvSpec(agents, obs, ActionLayout(2, (("enemies", enemies),), noop=0), enemies, True)

    def _ts(self, s: DuelState, reward, first: bool, lost=False) -> TimeStep:
        alive = s.hp > 0
        ids = jnp.arange(self.n)
        own = jnp.stack([ids / self.n, jnp.ones(self.n)], -1)
        allies = jnp.stack([jnp.delete(ids, i, assume_unique_indices=True) for i in range(self.n)]) / self.n
        enemies = jnp.stack([s.hp / self.hp, alive], -1).reshape(-1)
        view = jnp.concatenate([own, allies, jnp.broadcast_to(enemies, (self.n, 2 * self.k))], -1)
        mask = jnp.concatenate([jnp.ones((self.n, 2), bool), jnp.broadcast_to(alive, (self.n, self.k))], -1)
        won = ~jnp.any(alive) & (not first)
        ended = won | lost
        return TimeStep(Observation(view.astype(jnp.float32), mask, jnp.ones(self.n, bool), s.t),
                        jnp.float32(reward), ended, (s.t >= self.horizon) & ~ended,
                        (s.hp / self.hp).astype(jnp.float32), won)

    def reset(self, key):
        s = DuelState(jax.random.randint(key, (self.k,), 1, self.hp + 1), jnp.int32(0))
        return s, self._ts(s, 0.0, True)

    def step(self, s, actions):
        hits = jnp.sum(actions[:, None] == 2 + jnp.arange(self.k)[None], 0)
        hp = jnp.maximum(s.hp - hits, 0)
        damage = jnp.sum(s.hp - hp)
        s = DuelState(hp, s.t + 1)
        return s, self._ts(s, damage, False, self.lose & jnp.all(actions == 1) & jnp.any(hp > 0))


class DuelStack(MultiAgentEnv):
    """Toy duels of several sizes in one trace (the stack protocol of ``MultiAgentEnv.stack``, for tests that
    need one; ``ToyDuel`` itself does not stack, so the evaluator tests keep their per-task traces). Each
    task is its own env padded to the joint spec under a ``lax.switch`` on the task index; the state holds
    the enemy hit points padded to the largest enemy count."""

    name = "toy_duel"

    def __init__(self, duels):
        self.duels = list(duels)
        self.horizon = self.duels[0].horizon
        self.spec = EnvSpec.join(d.spec for d in self.duels)
        self.tasks = [PaddedEnv(d, self.spec) for d in self.duels]
        self.k = max(d.k for d in self.duels)

    def _wide(self, s: DuelState) -> DuelState:
        return DuelState(jnp.pad(s.hp, (0, self.k - s.hp.shape[0])), s.t)

    def reset(self, key, task):
        def branch(env):
            return lambda key: (lambda s, ts: (self._wide(s), ts))(*env.reset(key))

        inner, ts = jax.lax.switch(task, [branch(env) for env in self.tasks], key)
        return TaskState(inner, jnp.asarray(task, jnp.int32)), ts

    def step(self, state, actions):
        def branch(env, k):
            return lambda inner, a: (lambda s, ts: (self._wide(s), ts))(*env.step(DuelState(inner.hp[:k], inner.t), a))

        inner, ts = jax.lax.switch(state.task, [branch(e, d.k) for e, d in zip(self.tasks, self.duels)],
                                   state.inner, actions)
        return TaskState(inner, state.task), ts


def stacking_duels(monkeypatch):
    """Let ``ToyDuel`` tasks stack (as :class:`DuelStack`) for one test."""
    monkeypatch.setattr(ToyDuel, "stack", classmethod(lambda cls, envs: DuelStack(envs)))


@pytest.fixture(autouse=True, scope="module")
def registered():
    """The toy env is a task env while this module runs (other modules check the built-in envs only)."""
    envs.register("toy_duel", ToyDuel)
    yield
    del envs.ENVS["toy_duel"]

SET = {"name": "duel", "env": "toy_duel",
       "train": [{"name": "2v2", "agents": 2, "enemies": 2}, {"name": "3v1", "agents": 3, "enemies": 1}],
       "test": [{"name": "2v4", "agents": 2, "enemies": 4, "hp": 2}]}


def test_obs_layout_pads_each_group_in_place():
    small = ObsLayout((EntityGroup("own", 1, 2), EntityGroup("enemies", 2, 2)))
    big = ObsLayout((EntityGroup("own", 1, 3), EntityGroup("enemies", 3, 2)))
    row = np.array([1, 2, 10, 11, 20, 21], np.float32)
    want = np.array([1, 2, 0, 10, 11, 20, 21, 0, 0], np.float32)
    np.testing.assert_array_equal(small.pad(row[None], big)[0], want)
    np.testing.assert_array_equal(np.asarray(small.pad(jnp.asarray(row), big)), want)  # traced path too
    assert ObsLayout.join([small, big]) == big and big.size == 9
    np.testing.assert_array_equal(big.split(want[None])["enemies"][0], [[10, 11], [20, 21], [0, 0]])
    np.testing.assert_array_equal(small.entity_mask(big)["enemies"], [True, True, False])
    with pytest.raises(UserInputError, match="'enemies' has 3 x 2 but the target layout allows 2 x 2"):
        big.pad(want[None], ObsLayout((EntityGroup("own", 1, 3), EntityGroup("enemies", 2, 2))))
    with pytest.raises(UserInputError, match="same groups"):
        ObsLayout.join([small, ObsLayout.flat(6)])


def test_action_layout_maps_targets_to_their_padded_index():
    small, big = ActionLayout(2, (("enemies", 2),)), ActionLayout(2, (("enemies", 4),))
    src, valid = small.action_map(big)
    np.testing.assert_array_equal(src, [0, 1, 2, 3, 0, 0])  # padded attacks fall back to the no-op
    np.testing.assert_array_equal(valid, [True, True, True, True, False, False])
    np.testing.assert_array_equal(small.index_in(big), [0, 1, 2, 3])
    assert big.target_offset("enemies") == 2 and big.num_actions == 6
    spec = EnvSpec(2, ObsLayout.flat(3), big, 4, True)
    assert EnvSpec.from_json(spec.to_json()) == spec
    with pytest.raises(UserInputError, match="no-op action 3"):
        ActionLayout(2, noop=3)


def _set():
    return task_registry.from_config(SET)


def test_task_set_joins_layouts_and_describes_success():
    ts = _set()
    spec = ts.env_spec
    assert spec.num_agents == 3 and spec.actions.num_actions == 2 + 4 and spec.has_success
    assert [(g.name, g.count) for g in spec.obs.groups] == [("own", 1), ("allies", 2), ("enemies", 4)]
    assert ts.test[0].describe()["success"] is True
    with pytest.raises(UserInputError, match="task bad: enemies=.x. is not an integer"):  # typed from the signature
        task_registry.TaskSpec.create("toy_duel", {"enemies": "x"}, "bad")


def test_padded_env_matches_the_inner_env_step_by_step():
    ts = _set()
    inner = ts.train[0].build()   # 2 agents, 2 enemies
    padded = ts.padded(ts.train[0])  # 3 agents, 4 enemy slots, 6 actions
    key = jax.random.PRNGKey(3)
    s, t = inner.reset(key)
    ps, pt = padded.reset(key)
    src, valid = inner.spec.actions.action_map(padded.spec.actions)
    for i in range(inner.horizon):
        groups = padded.spec.obs.split(pt.observation.agents_view)
        np.testing.assert_array_equal(groups["enemies"][:2, :2], inner.spec.obs.split(t.observation.agents_view)["enemies"])
        assert not np.any(groups["enemies"][:, 2:]) and not np.any(pt.observation.agents_view[2:])
        np.testing.assert_array_equal(pt.observation.action_mask[:2], t.observation.action_mask[:, src] & valid)
        np.testing.assert_array_equal(pt.observation.action_mask[2], np.eye(6, dtype=bool)[0])  # padded agent
        actions = uniform_legal(jax.random.PRNGKey(i), pt.observation.action_mask)
        s, t = inner.step(s, jnp.asarray(src)[actions[:2]])
        ps, pt = padded.step(ps, actions)
        assert float(pt.reward) == float(t.reward) and bool(pt.success) == bool(t.success)
        np.testing.assert_array_equal(ps.hp, s.hp)


def _reference_episode(env: ToyDuel, key) -> tuple[float, int, str]:
    """One episode on the unpadded env, in Python, drawing actions like the evaluator does; how it ended:
    'win', 'loss' (ended by the env's rules without a win) or 'timeout' (time limit or horizon)."""
    reset_key, act_key = jax.random.split(key)
    s, t = env.reset(reset_key)
    ret, length = 0.0, 0
    for step in range(env.horizon):
        a = uniform_legal(jax.random.fold_in(act_key, step), t.observation.action_mask)
        s, t = env.step(s, a)
        ret, length = ret + float(t.reward), length + 1
        if bool(t.terminal | t.truncated):
            return ret, length, "win" if bool(t.success) else "loss" if bool(t.terminal) else "timeout"
    return ret, length, "timeout"


def test_set_evaluator_reports_wins_losses_and_timeouts_like_a_naive_loop():
    ts = task_registry.from_config({**SET, **{split: [{**t, "lose": True} for t in SET[split]]
                                              for split in ("train", "test")}})
    specs = ts.train + ts.test
    padded = [ts.padded(s) for s in specs]
    keys = jnp.stack([jax.random.PRNGKey(10 + i) for i in range(len(specs))])
    stats = make_task_set_evaluator(padded, RANDOM, 6, num_devices=1)(None, keys)
    ends = []
    for i, spec in enumerate(specs):
        ref = [_reference_episode(spec.build(), k) for k in episode_keys(keys[i], 6)]
        np.testing.assert_allclose(stats.returns[i], [r for r, _, _ in ref])
        np.testing.assert_array_equal(stats.lengths[i], [n for _, n, _ in ref])
        np.testing.assert_array_equal(stats.successes[i], [e == "win" for _, _, e in ref])
        np.testing.assert_array_equal(stats.timeouts[i], [e == "timeout" for _, _, e in ref])
        ends += [e for _, _, e in ref]
        row = summarise(spec.describe(), jax.tree.map(lambda x: x[i], stats), None)
        for kind, key in (("win", "win_rate"), ("loss", "loss_rate"), ("timeout", "timeout_rate")):
            assert row[key] == pytest.approx(np.mean([e == kind for _, _, e in ref])), key
        lo, hi = row["win_rate_ci"]
        assert lo <= row["win_rate"] <= hi
    # the random policy wins, loses and times out: each check above can fail
    assert {"win", "loss", "timeout"} <= set(ends), ends


def test_buffers_pad_recorded_data_like_the_padded_env():
    ts = _set()
    target = ts.env_spec
    tasks, padded_obs = [], []
    for spec in ts.train:
        env, penv = spec.build(), ts.padded(spec)
        key = jax.random.PRNGKey(0)
        s, t = env.reset(key)
        ps, pt = penv.reset(key)
        obs, acts, legals, pobs, pacts = [], [], [], [], []
        for i in range(env.horizon):
            a = uniform_legal(jax.random.PRNGKey(i), t.observation.action_mask)
            obs.append(t.observation.agents_view), acts.append(a), legals.append(t.observation.action_mask)
            pobs.append(pt.observation.agents_view)
            pacts.append(env.spec.actions.index_in(target.actions)[np.asarray(a)])
            s, t = env.step(s, a)
            ps, pt = penv.step(ps, jnp.concatenate([jnp.asarray(pacts[-1]), jnp.zeros(3 - env.n, jnp.int32)]))
        L = env.horizon
        tasks.append({"obs": np.stack(obs), "actions": np.stack(acts), "legals": np.stack(legals),
                      "rewards": np.zeros(L, np.float32), "terminals": np.zeros(L, bool),
                      "truncations": np.arange(L) == L - 1})
        padded_obs.append((np.stack(pobs), np.stack(pacts)))
    buf = make_buffers(tasks, 2, specs=[s.build().spec for s in ts.train], target=target, compact=False)
    assert buf.obs.shape[2:] == (3, target.obs_dim) and buf.legals.shape[-1] == 6
    for m, (pobs, pacts) in enumerate(padded_obs):
        n = ts.train[m].build().n
        np.testing.assert_array_equal(np.asarray(buf.obs[m, :len(pobs)]), pobs)
        np.testing.assert_array_equal(np.asarray(buf.actions[m, :len(pacts), :n]), pacts)
        legal = np.asarray(buf.legals[m, :len(pacts), :n])
        assert legal[np.arange(len(pacts))[:, None], np.arange(n)[None], pacts].all()  # recorded actions stay legal


def record_experience(env: ToyDuel, episodes: int, seed: int, act=None) -> dict:
    """og-marl layout data of whole episodes on the unpadded toy env (what a collector would write).

    ``act(state, timestep, rng) -> actions``; the default is the uniform random legal policy.
    """
    rng = np.random.default_rng(seed)
    if act is None:
        act = lambda s, t, rng: np.asarray(  # noqa: E731
            uniform_legal(jax.random.PRNGKey(rng.integers(2**31)), t.observation.action_mask))
    step, reset = jax.jit(env.step), jax.jit(env.reset)
    rows: dict[str, list] = {k: [] for k in ("obs", "act", "rew", "term", "trunc", "legal", "state")}
    for e in range(episodes):
        s, t = reset(jax.random.PRNGKey(seed * 1000 + e))
        done = False
        while not done:
            a = np.asarray(act(s, t, rng), np.int32)
            for name, x in (("obs", t.observation.agents_view), ("act", a), ("legal", t.observation.action_mask),
                            ("state", t.state)):
                rows[name].append(np.asarray(x))
            s, t = step(s, jnp.asarray(a))
            done = bool(t.terminal | t.truncated)
            rows["rew"].append(np.full(env.n, float(t.reward), np.float32))
            rows["term"].append(np.full(env.n, bool(t.terminal)))
            rows["trunc"].append(np.full(env.n, bool(t.truncated)))
    st = {k: np.stack(v) for k, v in rows.items()}
    return {"observations": st["obs"], "actions": st["act"], "rewards": st["rew"], "terminals": st["term"],
            "truncations": st["trunc"], "infos": {"legals": st["legal"], "state": st["state"]}}


def test_an_entity_env_trains_and_evaluates_through_the_cli(tmp_path):
    """Vaults of tasks with different entity counts -> per-group padded buffers -> MT BC-Sable ->
    the set evaluator with win rates, all through ``mtmarl.train`` on a registered toy env."""
    import json

    import yaml

    from mtmarl import train
    from mtmarl.data.vault import write_vault
    from mtmarl.experiments.config import compose_train

    ts = _set()
    for i, spec in enumerate(ts.train):
        write_vault(tmp_path / "vaults", spec, record_experience(spec.build(), 10, i), {"policy": "random"})
    (tmp_path / "conf" / "tasks").mkdir(parents=True)
    (tmp_path / "conf" / "tasks" / "duel.yaml").write_text(yaml.safe_dump(SET))
    cfg = compose_train(["+algo=mt_bc_sable", "+tasks=duel", f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
                         f"data.root={tmp_path / 'vaults'}", "network=tiny", "training=quick", "training.updates=4",
                         "training.updates_per_call=2", "training.eval_every=0", "training.batch_size=4",
                         "training.seq_len=2", "eval.episodes=4", "logger.neptune=false", "logger.progress=false"])
    rows = train.run(cfg, run_dir=tmp_path / "run")
    assert [r["name"] for r in rows] == ["2v2", "3v1", "2v4"]
    for row in rows:
        assert 0.0 <= row["win_rate"] <= 1.0 and row["episodes"] == 4
    spec = json.loads((tmp_path / "run" / "algo.json").read_text())
    assert EnvSpec.from_json(spec["env"]) == ts.env_spec  # the algorithm was built for the padded entity layout


def test_task_mixture_plays_the_drawn_task_as_that_task_alone(monkeypatch):
    """Each reset draws a task from its key; the episode is the task's own padded env reset with the other half
    of the key, step by step; every task is drawn; tasks that cannot stack are a one-line error."""
    ts = _set()
    specs = ts.train + ts.test
    with pytest.raises(UserInputError, match="cannot share one env: env 'toy_duel'.*ToyDuel.stack gives None"):
        TaskMixture([ts.padded(s) for s in specs], [s.name for s in specs])
    stacking_duels(monkeypatch)
    mix = TaskMixture([ts.padded(s) for s in specs], [s.name for s in specs])
    assert mix.spec == ts.env_spec and mix.num_tasks == 3 and mix.horizon == 4
    reset, step = jax.jit(mix.reset), jax.jit(mix.step)
    drawn = []
    for i in range(24):
        key = jax.random.PRNGKey(i)
        task, k_env = mix.draw(key)
        drawn.append(int(task))
        alone = ts.padded(specs[int(task)])
        s, t = reset(key)
        s_ref, t_ref = alone.reset(k_env)
        for n in range(3):
            for a, b in zip(jax.tree.leaves(t), jax.tree.leaves(t_ref)):
                np.testing.assert_array_equal(a, b)
            act = uniform_legal(jax.random.PRNGKey(100 * i + n), t.observation.action_mask)
            s, t = step(s, act)
            s_ref, t_ref = alone.step(s_ref, act)
    assert set(drawn) == {0, 1, 2}, drawn
