"""SMAX on the environment protocol: map names, the two task sets, the adapter against raw JaxMARL,
padding of entities and attack actions across maps, and the win signal."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtmarl import tasks
from mtmarl.envs.smax import STOP, SmaxEnv, parse_map
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
    ("smax_m3_easy", ["2m_vs_1z", "2s_vs_1h", "3m", "3s_vs_3z"], ["3s_vs_4z"], 3, 2 * 13 + 4 * 13 + 10, 5 + 4),
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


def test_a_checkpoint_of_a_set_plays_its_tasks_and_adhoc_maps_that_fit_its_layout():
    """A network trained on smax_marine_hard reads and writes the set's padded layout (``load_run``'s
    ``info["layout"]``, the set's ``env_spec``): every task of the set and an ad-hoc map whose allies and
    enemies fit are played in that layout (enemy k's attack keeps its index, attacks on missing enemies are
    illegal); a map with more allies or enemies than the layout is refused, naming both sizes."""
    from mtmarl.evaluation.trained import check_trained_fits

    ts = tasks.load("smax_marine_hard")
    layout = ts.env_spec
    check_trained_fits(ts.train + ts.test, layout, "run")
    for spec in ts.train + ts.test:  # as the run's own final evaluation played them
        assert ts.evaluation_env(spec, layout).spec == ts.evaluation_env(spec).spec
    fits = TaskSpec.parse("smax:map=6m_vs_7m")
    check_trained_fits([fits], layout, "run")
    env = tasks.load(fits.adhoc).evaluation_env(fits, layout)
    assert (env.spec.obs, env.spec.actions, env.num_agents) == (layout.obs, layout.actions, 6)
    src, legal = env.inner.spec.actions.action_map(env.spec.actions)  # what the padded env steps and masks
    assert legal.tolist() == [True] * 5 + [k < 7 for k in range(15)]
    assert src[:5 + 7].tolist() == list(range(5 + 7)) and set(src[5 + 7:].tolist()) == {STOP}
    for name, what in (("14m_vs_15m", "has 13 allies x 13 features but the trained model .run. reads at most 12 x 13"),
                       ("12m_vs_16m", "has 16 enemies x 13 features but the trained model .run. reads at most 15 x 13")):
        with pytest.raises(UserInputError, match=f"task smax:map={name} {what}"):
            check_trained_fits([TaskSpec.parse(f"smax:map={name}")], layout, "run")


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
    np.testing.assert_array_equal(stats.successes, stats.returns > SmaxEnv.WIN_RETURN)  # the declared rule
    assert 0 < stats.successes.sum(), "focus fire should beat the heuristic enemy on 3m sometimes"
    padded = _episodes(True)  # 3m inside marine-hard's 13 agents x (12, 15) entities x 20 actions
    for a, b in zip(stats, padded):
        np.testing.assert_allclose(a, b, rtol=1e-6)


@pytest.mark.parametrize("name", ["smax_marine_hard", "smax_stalker_zealot", "smax_m3_easy"])
def test_every_task_of_both_sets_resets_and_steps_padded(name):
    """Traced (not compiled): each map's padded reset and a step with every agent stopping."""
    ts = tasks.load(name)
    spec = ts.env_spec
    for task in ts.train + ts.test:
        env = ts.padded(task)

        def reset_step(key, env=env):
            state, first = env.reset(key)
            return first, env.step(state, jnp.full((spec.num_agents,), STOP, jnp.int32))[1]

        for t in jax.eval_shape(reset_step, jax.random.PRNGKey(0)):
            assert t.observation.agents_view.shape == (spec.num_agents, spec.obs_dim), task.name
            assert t.observation.action_mask.shape == (spec.num_agents, spec.num_actions), task.name
            assert t.state.shape == (spec.state_dim,) and t.success.shape == (), task.name


@pytest.mark.slow  # 30 s: MAPPO on SMAX compiles
def test_a_tiny_online_collection_writes_a_vault_with_the_entity_layout(tmp_path):
    from helpers import tiny_collect
    from omegaconf import OmegaConf

    from mtmarl.configs import CONFIG_DIR
    from mtmarl.data.vault import vault_path
    from mtmarl.envs import EnvSpec

    mappo = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "online" / "mappo.yaml"))
    tiny = {**mappo, "num_envs": 4, "rollout_len": 8, "updates_per_chunk": 2, "record_envs": 4, "record_len": 40}
    res, exp, spec = tiny_collect(tmp_path, "smax:map=2s_vs_3z", tiny)
    meta = json.loads((vault_path(tmp_path / "vaults", spec) / "mtmarl.json").read_text())
    layout = EnvSpec.from_json(meta["env"]["spec"])
    assert [(g.name, g.count) for g in layout.obs.groups] == [("allies", 1), ("enemies", 3), ("own", 1)]
    assert layout.actions.target_offset("enemies") == 5 and exp["infos"]["legals"].shape[-1] == 8
    assert "win_rate" in res and 0.0 <= res["win_rate"] <= 1.0


@pytest.mark.slow
def test_mappo_learns_to_win_3m_within_a_short_budget(tmp_path):
    """Measured: 400k steps took 30 s on 2 busy cores, win rate 0.48 (initial return 0.17 -> 1.39)."""
    from omegaconf import OmegaConf

    from mtmarl import collect
    from mtmarl.configs import CONFIG_DIR

    cfg = OmegaConf.create({
        "task": "smax:map=3m", "split": "train", "seed": 0, "online_env": {},
        "online": OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "online" / "mappo.yaml")),
        "collect": {"budget": 300_000, "root": str(tmp_path / "vaults"), "uid": "default", "references": None,
                    "log_dir": None, "record": False, "progress": False, "initial_eval": True},
        "eval": {"episodes": 64, "devices": None, "greedy": False}})
    (res,) = collect.run(cfg)
    assert res["return"] > res["initial_return"] + 0.5 and res["win_rate"] > 0.2, res


def test_attack_k_hits_enemy_token_k_and_permuting_enemies_permutes_tokens_and_attacks():
    """The declared layout (attack 5+k targets token k of the ``enemies`` group) is what JaxMARL does, in
    any enemy order: once ally 0 has two enemies in range (no ally has attacked yet), attacking k lowers the health of
    token k alone; with the enemies' rows of the simulator state permuted, the enemy tokens and the attack
    columns of the mask permute the same way, and attacking the permuted slot of the same unit deals it the
    same damage for the same reward. (JaxMARL's ``last_targeted`` feature is a unit index and its weapon
    cooldowns are drawn per unit slot, so those two features are not compared.)"""
    env = TaskSpec.parse("smax:map=3m").build()  # the adapter test's map: its compiled step is cached
    A, E = env.num_allies, env.num_enemies
    perm = np.array([2, 0, 1])  # permuted slot j holds enemy perm[j]
    inv = np.argsort(perm)         # enemy k sits in permuted slot inv[k]
    order = np.concatenate([np.arange(A), A + perm])
    groups = env.spec.obs
    step = jax.jit(env.step)

    def permuted(s):
        st, pol = s.inner.state, s.inner.enemy_policy_state
        units = {f: getattr(st, f)[order] for f in ("unit_positions", "unit_alive", "unit_teams", "unit_health",
                                                     "unit_types", "unit_weapon_cooldowns", "prev_movement_actions",
                                                     "prev_attack_actions")}
        pol = pol.replace(default_target=pol.default_target[perm], last_attacked_enemy=pol.last_attacked_enemy[perm])
        return s.replace(inner=s.inner.replace(state=st.replace(**units), enemy_policy_state=pol))

    s, ts = env.reset(jax.random.PRNGKey(0))
    while np.sum(ts.observation.action_mask[0, 5:]) < 2:  # walk east (action 1) until ally 0 can attack 2
        assert int(ts.observation.step_count) < 20, "the enemies never came in range"
        s, ts = step(s, jnp.full((A,), 1))
    enemies = lambda t: np.asarray(groups.split(t.observation.agents_view)["enemies"])  # noqa: E731
    health = lambda t: enemies(t)[0, :, 0]  # noqa: E731  (ally 0's view; feature 0 is health)
    stop = jnp.full((A,), STOP)
    p = permuted(s)
    _, pts = step(p, stop)
    _, ts_stop = step(s, stop)
    same = [i for i in range(enemies(pts).shape[-1]) if i not in (5, 6)]  # last_targeted; cooldown (jittered per slot)
    np.testing.assert_allclose(enemies(ts_stop)[:, perm][..., same], enemies(pts)[..., same], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(ts_stop.observation.action_mask)[:, 5:][:, perm],
                                  np.asarray(pts.observation.action_mask)[:, 5:])
    legal = np.flatnonzero(ts.observation.action_mask[0, 5:])
    for k in legal:
        _, hit = step(s, stop.at[0].set(5 + k))
        drop = health(ts_stop) - health(hit)
        assert drop[k] > 0 and np.all(drop[np.arange(E) != k] == 0), (k, drop)
        _, phit = step(p, stop.at[0].set(5 + inv[k]))
        np.testing.assert_allclose(health(phit), health(hit)[perm], rtol=1e-6)
        assert float(phit.reward) == pytest.approx(float(hit.reward)) and float(hit.reward) > 0
    assert len(legal) >= 2  # two targets at least, so "token k alone" can fail


def _rollout(env, key, *task, steps=100):
    """Time steps of ``steps`` uniform legal actions (reset included), stepping on past the episode's end."""
    k_reset, k_act = jax.random.split(key)
    state, first = env.reset(k_reset, *task)

    def body(carry, k):
        state, ts = carry
        state, ts = env.step(state, uniform_legal(k, ts.observation.action_mask))
        return (state, ts), ts

    _, rest = jax.lax.scan(body, (state, first), jax.random.split(k_act, steps))
    return jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), first, rest)


def test_stacked_maps_play_as_each_map_alone():
    """One traced env for several maps (``SmaxEnv.stack``): a map with the stack's ally count plays exactly as
    alone (rewards rescaled to its own enemy count, last-attack features and world state mapped back), through
    wins, losses and unit types; a map with fewer allies starts exactly as alone."""
    from mtmarl.envs import PaddedEnv

    maps = [SmaxEnv(m) for m in ("3s5z_vs_3s6z", "3s5z", "1s3z")]
    stack = SmaxEnv.stack(maps)
    assert (stack.num_allies, stack.num_enemies) == (8, 9)
    play_stack = jax.jit(lambda k, t: _rollout(stack, k, t))
    for t, env in [(1, maps[1])]:  # 3s5z: every ally, one enemy padded
        alone = PaddedEnv(env, stack.spec)
        for seed in (0, 1):
            key = jax.random.PRNGKey(seed)
            want, got = jax.device_get(jax.jit(lambda k: _rollout(alone, k))(key)), jax.device_get(play_stack(key, t))
            # floats to rounding (XLA fuses the same arithmetic differently in the two programs; positions drift)
            np.testing.assert_allclose(got.observation.agents_view, want.observation.agents_view, atol=1e-5)
            np.testing.assert_array_equal(got.observation.action_mask, want.observation.action_mask)
            np.testing.assert_array_equal(got.observation.active, want.observation.active)
            np.testing.assert_allclose(got.state, want.state, atol=1e-4)
            np.testing.assert_allclose(got.reward, want.reward, rtol=1e-6)
            for flag in ("terminal", "truncated", "success"):
                np.testing.assert_array_equal(getattr(got, flag), getattr(want, flag))
            assert want.done.any() and want.reward.sum() > 0, "the episode should end and deal damage"
    # fewer allies than the stack: the same first time step as the map alone, its padded allies inactive
    alone = PaddedEnv(maps[2], stack.spec)
    want, got = alone.reset(jax.random.PRNGKey(3))[1], stack.reset(jax.random.PRNGKey(3), 2)[1]
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(got.observation.active, np.arange(8) < 4)


def test_maps_of_other_horizons_do_not_stack():
    from mtmarl.envs.smax import SmaxEnv

    assert SmaxEnv.stack([SmaxEnv("3m"), SmaxEnv("4m", horizon=50)]) is None


@pytest.mark.slow  # 13 s: three programs; the fast suite keeps the stacked env's own equality with each map (above) and
# the set evaluator's stacked-vs-each equality on LBF levels (test_lbf_stack.py)
def test_set_evaluator_with_stacked_maps_gives_each_maps_own_episodes():
    """The evaluator plays a group of maps through one stacked env by default; maps with the group's ally count
    (here 4m and 4m_vs_3m, one enemy padded) give the same episodes as their own traced envs."""
    from mtmarl.evaluation.rollout import make_task_set_evaluator, task_key

    ts = tasks.load("smax_marine_hard")
    specs = [TaskSpec.parse(f"smax:map={m}") for m in ("4m", "4m_vs_3m")]
    envs = [ts.evaluation_env(s) for s in specs]
    keys = jnp.stack([task_key(0, s) for s in specs])
    stacked, each = (jax.device_get(make_task_set_evaluator(envs, FOCUS, 24, num_devices=1, batch=8,
                                                            stack=st)(None, keys)) for st in (True, False))
    for field in ("returns", "lengths", "successes", "timeouts"):
        np.testing.assert_allclose(getattr(stacked, field), getattr(each, field), rtol=1e-5)
    assert each.successes.any() and not each.successes.all(), "episodes should end in wins and in losses"


def test_a_map_with_fewer_allies_reports_what_the_map_alone_reports_in_the_same_situation():
    """Padded allies shift every enemy's attack index and the action counts that normalise the observed
    last attacks; the stack's time step must equal the map's own for the same units (moved to the map's
    slots, the enemies' attack actions counted from the map's last ally), with shots fired on both sides."""
    from jaxmarl.environments.smax.heuristic_enemy_smax_env import State as EnemyState

    from mtmarl.envs import PaddedEnv
    from mtmarl.envs.smax import SmaxEnv

    alone = SmaxEnv("1s3z")
    stack = SmaxEnv.stack([SmaxEnv("3s5z_vs_3s6z"), alone])
    A, a_t, e_t = stack.num_allies, alone.num_allies, alone.num_enemies
    step = jax.jit(stack.step)
    state, ts = stack.reset(jax.random.PRNGKey(0), 1)
    for i in range(60):
        before = state
        state, ts = step(state, uniform_legal(jax.random.PRNGKey(i), ts.observation.action_mask))
        attacks = np.asarray(state.inner.state.prev_attack_actions)
        if (attacks[:a_t] > STOP).any() and (attacks[A:A + e_t] > STOP).any():
            break
    else:
        pytest.fail("no step where allies and enemies both attacked")
    slots = np.r_[np.arange(a_t), A + np.arange(e_t)]

    def as_alone(inner):
        acts = inner.prev_attack_actions[slots]
        acts = acts.at[a_t:].set(jnp.where(acts[a_t:] > STOP, acts[a_t:] - (A - a_t), acts[a_t:]))
        return inner.replace(**{f: getattr(inner, f)[slots] for f in (
            "unit_positions", "unit_alive", "unit_teams", "unit_health", "unit_types", "prev_movement_actions",
            "unit_weapon_cooldowns")}, prev_attack_actions=acts)

    inner, raw = as_alone(state.inner.state), alone.smax._env
    obs = raw.get_obs(inner) | {"world_state": raw.get_world_state(inner)}
    reward = raw.compute_reward(inner, before.inner.state.unit_health[slots], inner.unit_health)["ally_0"]
    want = PaddedEnv(alone, stack.spec)._pad(alone._timestep(EnemyState(inner, None), obs, reward, ts.done))
    np.testing.assert_allclose(ts.observation.agents_view, want.observation.agents_view, rtol=1e-6, atol=1e-7)
    for a, b in zip(jax.tree.leaves(ts), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def _evaluate_cli(args, monkeypatch, capsys):
    """``python -m mtmarl.evaluate ARGS`` as the command line runs it, in this process: (exit code, stdout, stderr)."""
    import sys

    from hydra.core.global_hydra import GlobalHydra

    from mtmarl import evaluate, runtime

    monkeypatch.setattr(sys, "argv", ["mtmarl.evaluate", *args, "hydra/job_logging=none", "hydra/hydra_logging=none"])
    code = 0
    try:
        runtime.hydra_cli("evaluate", evaluate.run)
    except SystemExit as exit_:
        code = exit_.code
    finally:
        GlobalHydra.instance().clear()
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.slow  # a tiny training run with its final evaluation, then three evaluations of its checkpoint
def test_a_trained_smax_checkpoint_evaluates_from_the_command_line(tmp_path, monkeypatch, capsys):
    """MT Oryx trained on a two-map set (3m on the bundled expert data; 4m_vs_5m held out) and evaluated through
    ``mtmarl.evaluate checkpoint=``: its own set plays exactly the episodes the run's final evaluation played
    (tasks padded to the layout trained on), an ad-hoc map inside that layout plays, and one with more allies
    is refused before any work, naming both sizes."""
    import yaml

    from mtmarl import train
    from mtmarl.experiments.config import compose_train

    root = Path(__file__).resolve().parents[1]
    (tmp_path / "conf" / "tasks").mkdir(parents=True)
    (tmp_path / "conf" / "tasks" / "smax_pair.yaml").write_text(yaml.safe_dump(
        {"name": "smax_pair", "env": "smax", "train": [{"name": "3m", "map": "3m"}],
         "test": [{"name": "4m_vs_5m", "map": "4m_vs_5m"}]}))
    run = tmp_path / "run"
    cfg = compose_train(["+algo=mt_oryx", "+tasks=smax_pair", f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
                         f"data.root={root / 'vault_data'}", "data.quality=expert", "training=quick",
                         "training.updates=2", "training.updates_per_call=1", "training.batch_size=4",
                         "training.seq_len=4", "eval.episodes=4", "logger.neptune=false", "logger.progress=false"])
    train.run(cfg, run_dir=run)

    def returns(run_dir, task):
        res = json.loads((run_dir / "results.json").read_text())["smax"][task]["mt_oryx"]["seed_0"]
        return res["absolute_metrics"]["return"]

    code, out, err = _evaluate_cli([f"checkpoint={run}", "eval.episodes=4", f"hydra.run.dir={tmp_path / 'own'}"],
                                   monkeypatch, capsys)
    assert code == 0, err
    # the test split, as the run played it (float rounding aside: another program sums the rewards)
    np.testing.assert_allclose(returns(tmp_path / "own", "4m_vs_5m"), returns(run, "4m_vs_5m"), rtol=1e-5)

    adhoc = "smax:map=2m_vs_4m"  # 1 other ally and 4 enemies: inside the layout's 3 and 5 (4m_vs_5m)
    code, out, err = _evaluate_cli([f"checkpoint={run}", f"task={adhoc}", "eval.episodes=4",
                                    f"hydra.run.dir={tmp_path / 'adhoc'}"], monkeypatch, capsys)
    assert code == 0, err
    assert len(returns(tmp_path / "adhoc", adhoc)) == 4

    code, out, err = _evaluate_cli([f"checkpoint={run}", "task=smax:map=5m", f"hydra.run.dir={tmp_path / 'big'}"],
                                   monkeypatch, capsys)
    assert code == 2 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == (f"error: task smax:map=5m has 4 allies x 13 features but the trained "
                                            f"model ({run}) reads at most 3 x 13 (its training set's padded layout)")
    assert not (tmp_path / "big" / "results.json").exists()


def test_scenario_of_a_map_jaxmarl_lists_is_jaxmarls_own():
    """Our maps are built from their SMAC names; where JaxMARL lists the map, the scenario is the same (units in
    order, counts, fixed positions), so a map JaxMARL does not list is built as JaxMARL would build it."""
    from jaxmarl.environments.smax.smax_env import MAP_NAME_TO_SCENARIO

    from mtmarl.envs.smax import scenario

    for name in ("3m", "5m_vs_6m", "2s3z", "3s5z", "10m_vs_11m", "3s_vs_5z"):
        ours, theirs = scenario(name), MAP_NAME_TO_SCENARIO[name]
        np.testing.assert_array_equal(np.asarray(ours.unit_types), np.asarray(theirs.unit_types), err_msg=name)
        assert (ours.num_allies, ours.num_enemies) == (theirs.num_allies, theirs.num_enemies), name
        assert not (ours.smacv2_position_generation or ours.smacv2_unit_type_generation), name
