"""collect.quality=expert_medium: two datasets per vault, the medium policy picked by the half-expert rule."""

from __future__ import annotations

import json

import numpy as np
import pytest
from omegaconf import OmegaConf

from helpers import stopping_system
from mtmarl.configs import CONFIG_DIR
from mtmarl.errors import UserInputError
from mtmarl.evaluation.rollout import EpisodeStats
from mtmarl.online.collectors import env_quality
from mtmarl.online.quality import pick_levels, pick_medium, quality_score

TASK = "connector:grid=5,agents=2"
MAPPO = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "online" / "mappo.yaml"))
TINY = {**MAPPO, "num_envs": 4, "rollout_len": 8, "updates_per_chunk": 2, "record_envs": 4, "record_len": 24}


def test_scores_are_win_rates_where_there_are_wins_and_medium_is_nearest_half():
    wins = EpisodeStats(np.array([2.0, 0.3, 2.0, 0.1]), np.ones(4), np.array([True, False, True, False]),
                        np.zeros(4, bool))
    assert quality_score(wins, has_success=True) == 0.5
    assert quality_score(wins, has_success=False) == pytest.approx(1.1)  # an env without wins: the return
    assert quality_score(wins._replace(successes=np.zeros(4, bool)), has_success=True) == 0.0  # no win: 0, not 1.1
    assert pick_medium([0.0, 0.2, 0.45, 0.55, 0.9], expert=1.0) == 2   # |0.45 - 0.5| < |0.55 - 0.5|
    assert pick_medium([0.3, 0.3, 0.8], expert=0.6) == 0                # ties: the earliest snapshot


def test_a_dataset_records_on_until_it_holds_the_minimum_episodes(monkeypatch):
    """``collect.quality_min_episodes``: recordings beyond ``quality_records`` until the episodes reach it,
    each with the next key; a recording that completes no episode stops the loop with a warning."""
    from mtmarl.online import quality

    episodes = {0: 3, 1: 3, 2: 3, 3: 3, 4: 3}  # recording key -> completed episodes (wins: 1 each)
    monkeypatch.setattr(quality, "_recordings", lambda system, state, params, greedy, keys: list(keys))
    monkeypatch.setattr(quality, "recorded_wins", lambda k: (episodes.get(k, 0), 1 if episodes.get(k, 0) else 0))

    def cfg(target):
        return OmegaConf.create({"collect": {"quality_records": 2, "quality_min_episodes": target}})

    assert quality.record_dataset(None, None, None, cfg(None), False, lambda i: i) == ([0, 1], 6, 2)
    assert quality.record_dataset(None, None, None, cfg(6), False, lambda i: i) == ([0, 1], 6, 2)
    assert quality.record_dataset(None, None, None, cfg(10), False, lambda i: i) == ([0, 1, 2, 3], 12, 4)
    with pytest.warns(UserWarning, match="completed no episode; the dataset stops at 15 of"):
        assert quality.record_dataset(None, None, None, cfg(100), False, lambda i: i)[1:] == (15, 5)
    for bad in (0, -5, "many", True, 2.5):
        with pytest.raises(UserInputError, match=rf"collect.quality_min_episodes={bad!r}; allowed: null or"):
            quality.min_episodes(cfg(bad))


def test_levels_pick_the_snapshot_nearest_each_fraction_of_the_way_from_untrained_to_final():
    scores = [-2.0, -1.2, 0.1, 0.9, 1.8, 2.0, 1.9]   # untrained -2, final 1.9: targets -2, -0.525, 0.95, 1.9
    assert pick_levels(scores, scores[0], scores[-1], [0.0, 0.375, 0.75, 1.0]) == [0, 2, 3, 6]
    assert pick_levels([0.0, 1.0, 1.0, 1.0], 0.0, 1.0, [1.0]) == [1]  # a plateau: its first snapshot
    assert pick_medium([0.0, 0.2, 0.45], expert=1.0) == pick_levels([0.0, 0.2, 0.45], 0.0, 1.0, [0.5])[0]


def _cfg(tmp_path, quality: str, levels=(0.0, 0.5, 1.0), min_episodes=None):
    return OmegaConf.create({
        "task": TASK, "split": "train", "seed": 0, "online": TINY, "online_env": {},
        "collect": {"budget": 3 * 4 * 8 * 2 * 2, "root": str(tmp_path / "vaults"), "uid": "default", "references": None,
                    "log_dir": None, "record": True, "progress": False, "initial_eval": False, "quality": quality,
                    "quality_records": 2, "quality_episodes": 8, "quality_levels": list(levels),
                    "quality_min_episodes": min_episodes},
        "eval": {"episodes": 8, "devices": None, "greedy": False}})


def test_expert_medium_collection_writes_both_datasets(tmp_path):
    from mtmarl import collect
    from mtmarl.data.vault import list_uids, read_vault, vault_path
    from mtmarl.tasks import TaskSpec

    (res,) = collect.run(_cfg(tmp_path, "expert_medium", min_episodes=30))
    spec = TaskSpec.parse(TASK)
    vlt = vault_path(tmp_path / "vaults", spec)
    assert sorted(list_uids(vlt)) == ["expert", "medium"]
    meta = json.loads((vlt / "mtmarl.json").read_text())["datasets"]["medium"]["collector"]
    scores = meta["snapshot_scores"]
    assert len(scores) == 3  # one snapshot per chunk: budget = 3 chunks
    assert meta["medium_snapshot"] == pick_medium(scores, meta["expert_score"])
    expert, medium = (read_vault(vlt, spec, uid=u) for u in ("expert", "medium"))
    assert expert["actions"].shape[1] > 0 and medium["actions"].shape[1] > 0
    assert res["transitions"] == expert["actions"].shape[1] + medium["actions"].shape[1]
    from mtmarl.data.card import dataset_rows, markdown, task_rows
    rows = dataset_rows(TASK, tmp_path / "vaults")  # the data card's dataset table: one row per dataset, from metadata
    assert [r["uid"] for r in rows] == ["expert", "medium"]
    for r, exp in zip(rows, (expert, medium)):
        ends = exp["terminals"][0, :, 0] + exp["truncations"][0, :, 0]
        assert r["episodes"] == int(ends.sum()) >= 30 and r["transitions"] == exp["actions"].shape[1]
        assert r["data_win"] is None and r["paper_win"] is None  # Connector reports no wins; not a SMAC map
    tables = markdown(task_rows(TASK, tmp_path / "vaults"), rows).split("\n\n")  # tasks, totals, datasets
    assert len(tables) == 3 and tables[2].count("\n") == 3  # header, rule, expert, medium
    assert "win %" not in tables[2] and "HyGen" not in tables[2]  # columns no dataset fills are left out
    with pytest.raises(UserInputError, match="collect.quality='best'; allowed: mixed, expert_medium, levels"):
        collect.run.__wrapped__(_cfg(tmp_path / "bad", "best"))
    assert not (tmp_path / "bad").exists()  # refused before anything is trained or written


def test_a_sampled_medium_beside_a_greedy_expert_is_scored_and_recorded_sampled(tmp_path, monkeypatch):
    """``collect.quality_medium_greedy=false`` with ``eval.greedy=true``: the expert is scored and recorded greedily,
    every snapshot is scored and the medium recorded with sampled actions (a greedy policy that wins all or nothing
    has no snapshot near half the expert)."""
    from mtmarl import collect
    from mtmarl.data.vault import vault_path
    from mtmarl.online import collectors, quality
    from mtmarl.online.collectors import task_options
    from mtmarl.tasks import TaskSpec

    built, judged, recorded = {}, [], []
    original_get, original_judge, original_rec = collectors.get_evaluator, quality._judge, quality._recordings

    def get_spy(spec, env, system, greedy, episodes, devices):
        ev = original_get(spec, env, system, greedy, episodes, devices)
        built[id(ev)] = greedy
        return ev

    def judge_spy(system, state, snapshots, cfg, evaluate, rec_key, has_success):
        judged.append(built[id(evaluate)])
        return original_judge(system, state, snapshots, cfg, evaluate, rec_key, has_success)

    def rec_spy(system, state, params, greedy, keys):
        import jax
        recorded.extend((greedy, np.asarray(jax.tree.leaves(params)[0]).copy()) for _ in keys)
        return original_rec(system, state, params, greedy, keys)

    monkeypatch.setattr(collectors, "get_evaluator", get_spy)
    monkeypatch.setattr(quality, "_judge", judge_spy)
    monkeypatch.setattr(quality, "_recordings", rec_spy)
    cfg = _cfg(tmp_path, "expert_medium")
    cfg.eval.greedy = True
    cfg.collect.quality_medium_greedy = False
    collect.run(cfg)
    spec = TaskSpec.parse(TASK)
    assert judged == [False]  # the snapshots: scored by the sampled evaluator
    assert [g for g, _ in recorded] == [True, True, False, False]  # 2 expert recordings greedy, 2 medium sampled
    meta = json.loads((vault_path(tmp_path / "vaults", spec) / "mtmarl.json").read_text())
    collector = meta["datasets"]["medium"]["collector"]
    assert collector["medium_greedy"] is False
    entry = json.loads((tmp_path / "vaults" / "references.json").read_text())[spec.adhoc]
    assert entry["options"]["quality_medium_greedy"] is False and entry["options"]["eval_greedy"] is True
    # where it changes nothing (the medium acts as eval.greedy says anyway, a test task), it is not an option
    cfg.collect.quality_medium_greedy = True
    assert "quality_medium_greedy" not in task_options(cfg, spec, "train")
    cfg.collect.quality_medium_greedy = False
    assert "quality_medium_greedy" not in task_options(cfg, spec, "test")
    cfg.collect.quality_medium_greedy = "sampled"
    with pytest.raises(UserInputError, match="collect.quality_medium_greedy='sampled'; allowed: null"):
        task_options(cfg, spec, "train")


def test_early_updates_run_one_per_chunk_and_each_leaves_a_snapshot_on_train_tasks_only(tmp_path):
    """A map won within its first chunk needs snapshots inside it to have a medium: collect.quality_early_updates."""
    from mtmarl import collect
    from mtmarl.data.vault import vault_path
    from mtmarl.online.collectors import task_log, task_options
    from mtmarl.tasks import TaskSpec

    cfg = _cfg(tmp_path, "expert_medium")
    cfg.collect.quality_early_updates = 3
    collect.run(cfg)
    spec = TaskSpec.parse(TASK)
    per_update = 4 * 8 * 2  # envs x rollout x the 2 forced devices
    log = task_log(tmp_path / "vaults" / "logs", spec)
    steps = [json.loads(line)["env_steps"] for line in log.read_text().splitlines()]
    assert steps == [per_update * u for u in (1, 2, 3, 5, 6)]  # 3 single updates, then chunks of 2 (the last cut short)
    meta = json.loads((vault_path(tmp_path / "vaults", spec) / "mtmarl.json").read_text())
    scores = meta["datasets"]["medium"]["collector"]["snapshot_scores"]
    assert len(scores) == len(steps)  # a snapshot after every chunk
    entry = json.loads((tmp_path / "vaults" / "references.json").read_text())[spec.adhoc]
    assert entry["options"]["quality_early_updates"] == 3
    # where it changes nothing (a test task, a run that records nothing), it is not an option: such runs keep theirs
    assert "quality_early_updates" not in task_options(cfg, spec, "test")
    cfg.collect.record = False
    assert "quality_early_updates" not in task_options(cfg, spec, "train")
    cfg.collect.quality_early_updates = -1
    with pytest.raises(UserInputError, match="collect.quality_early_updates=-1; allowed: an integer >= 0"):
        task_options(cfg, spec, "test")


def test_levels_collection_records_equal_parts_of_the_chosen_snapshots_into_one_dataset(tmp_path, monkeypatch):
    from mtmarl import collect
    from mtmarl.data.vault import list_uids, read_vault, vault_path
    from mtmarl.online import quality
    from mtmarl.tasks import TaskSpec

    recorded = []  # (snapshot's first leaf, key) of every recording: which snapshot each level recorded
    original = quality._recordings

    def spy(system, state, params, greedy, keys):
        import jax
        recorded.extend((np.asarray(jax.tree.leaves(params)[0]).copy(), np.asarray(jax.random.key_data(k)))
                        for k in keys)
        return original(system, state, params, greedy, keys)

    monkeypatch.setattr(quality, "_recordings", spy)
    (res,) = collect.run(_cfg(tmp_path, "levels"))
    spec = TaskSpec.parse(TASK)
    vlt = vault_path(tmp_path / "vaults", spec)
    assert list_uids(vlt) == ["default"]
    meta = json.loads((vlt / "mtmarl.json").read_text())["datasets"]["default"]["collector"]
    scores = meta["snapshot_scores"]
    assert len(scores) == 4  # the untrained policy, then one snapshot per chunk (3 chunks)
    assert meta["level_snapshots"] == pick_levels(scores, scores[0], scores[-1], [0.0, 0.5, 1.0])
    assert meta["level_snapshots"][0] == 0 and meta["level_snapshots"][-1] == 3
    assert meta["level_scores"] == [scores[i] for i in meta["level_snapshots"]]
    assert len(recorded) == 3 * 2  # quality_records recordings per level, each with its own key
    assert len({k.tobytes() for _, k in recorded}) == 6
    first, last = recorded[0][0], recorded[-1][0]
    assert not np.array_equal(first, last)  # level 0 recorded the untrained parameters, level 1 the final ones
    assert res["transitions"] == read_vault(vlt, spec)["actions"].shape[1] > 0
    with pytest.raises(UserInputError, match=r"collect.quality_levels=\[1.5\]; allowed: a non-empty list"):
        collect.run.__wrapped__(_cfg(tmp_path / "bad", "levels", levels=[1.5]))
    per_env = _cfg(tmp_path / "bad", "mixed")
    per_env.collect.env_quality = {"connector": "levels"}
    assert env_quality(per_env, "connector") == "levels" and env_quality(per_env, "lbf") == "mixed"
    per_env.collect.env_quality = {"connector": "best"}
    with pytest.raises(UserInputError, match="collect.env_quality.connector='best'; allowed: mixed, expert_medium"):
        collect.run.__wrapped__(per_env)
    assert not (tmp_path / "bad").exists()


def test_greedy_recording_takes_the_argmax_of_the_recorded_observation():
    """``eval.greedy=true`` records what the greedy evaluator scored: every recorded action is the actor's
    argmax over the legal actions at the recorded observation (a sampled recording is not)."""
    import jax
    import jax.numpy as jnp

    from mtmarl.online.collectors import get_system
    from mtmarl.algos.registry import online_config
    from mtmarl.online.system import Actor
    from mtmarl.tasks import TaskSpec

    spec = TaskSpec.parse(TASK)
    env = spec.build()
    cfg = online_config(TINY)
    system = get_system(spec, env, cfg)
    state = system.init(jax.random.PRNGKey(0))
    state, _ = system.train_chunk(state)
    actor = Actor(cfg.hidden, env.num_actions)
    params = system.actor_params(state)  # device 0's copy

    def argmax_share(traj):  # raw (D, T, B, ...) transitions: every step, finished episode or not
        _, logits = actor.apply(params, (), traj.obs.agents_view[0])
        best = jnp.argmax(jnp.where(traj.obs.action_mask[0], logits, -1e9), -1)
        return float(np.mean(np.asarray(best) == np.asarray(traj.actions[0])))

    greedy = system.record(state, jax.random.PRNGKey(1), greedy=True)
    sampled = system.record(state, jax.random.PRNGKey(1))
    assert argmax_share(greedy) == 1.0
    assert argmax_share(sampled) < 1.0  # a near-uniform early policy rarely samples its argmax every time


def test_recorded_wins_count_the_won_episodes_a_dataset_keeps():
    """The data card's win rate: on the toy duel a win is exactly a terminal step (a loss is the time
    limit), so the vault-layout experience of the same recording gives the reference count."""
    import jax

    from mtmarl.online import anakin
    from mtmarl.online.system import MappoConfig, make_learner
    from test_env_protocol import ToyDuel

    env = ToyDuel(agents=2, enemies=2, hp=2, horizon=5)
    cfg = MappoConfig(num_envs=4, rollout_len=8, updates_per_chunk=1, record_envs=4, record_len=23)
    system = anakin.build(env, cfg, make_learner(env, cfg))
    state = system.init(jax.random.PRNGKey(0))
    traj = system.record(state, jax.random.PRNGKey(3))
    exp = anakin.to_experience(traj)
    term, trunc = exp["terminals"][0, :, 0], exp["truncations"][0, :, 0]
    episodes, wins = anakin.recorded_wins(traj)
    assert episodes == int(term.sum() + trunc.sum()) > 0
    assert wins == int(term.sum()) and 0 < wins < episodes  # a random policy wins some 2-hp duels, not all


def _read_run(tmp_path):
    from mtmarl.data.vault import list_uids, vault_path
    from mtmarl.tasks import TaskSpec

    vlt = vault_path(tmp_path / "vaults", TaskSpec.parse(TASK))
    refs = json.loads((tmp_path / "vaults" / "references.json").read_text())
    meta = json.loads((vlt / "mtmarl.json").read_text())["datasets"]["expert"]["collector"]
    log = [json.loads(line) for line in (tmp_path / "vaults" / "logs" / "connector").glob("*.jsonl").__next__()
           .read_text().splitlines()]
    return sorted(list_uids(vlt)), refs[TASK], meta, log


def test_ctrl_c_stops_training_after_its_chunk_and_still_scores_and_records_the_policy(tmp_path, monkeypatch):
    """The first SIGINT during training: the chunk in flight finishes, the policy reached is judged,
    recorded and referenced with ``stopped``, and the CLI exits 130; the same command then continues the task
    from where it stopped (an interrupted task is not done) to its whole budget."""
    import os
    import signal

    from mtmarl import collect

    calls = stopping_system(monkeypatch, 2, lambda: os.kill(os.getpid(), signal.SIGINT))
    before = signal.getsignal(signal.SIGINT)  # the default handler, or SIG_IGN in a background job
    with pytest.raises(SystemExit) as exit_info:
        collect.run(_cfg(tmp_path, "expert_medium"))
    assert exit_info.value.code == 130 and len(calls) == 2  # chunk 2 finished, chunk 3 never started
    uids, ref, meta, log = _read_run(tmp_path)
    assert uids == ["expert", "medium"]
    steps = log[-1]["env_steps"]
    assert len(log) == 2 and len(meta["snapshot_scores"]) == 2
    assert ref["env_steps"] == meta["env_steps"] == steps and steps < meta["budget"]
    assert ref["stopped"] == meta["stopped"] == f"signal SIGINT at {steps:,} of {meta['budget']:,} steps"
    assert signal.getsignal(signal.SIGINT) == before  # the collector's handler is gone afterwards
    (again,) = collect.run(_cfg(tmp_path, "expert_medium"))
    uids, ref, meta, log = _read_run(tmp_path)
    assert not again.get("skipped") and again["env_steps"] == meta["budget"] == log[-1]["env_steps"]
    assert "stopped" not in ref and ref["ended"] == "budget" and len(calls) == len(log) == 3
    assert len(meta["snapshot_scores"]) == 3  # the first run's snapshots were kept
    (third,) = collect.run(_cfg(tmp_path, "expert_medium"))
    assert third["skipped"] and len(calls) == 3


def test_a_time_limit_stops_each_tasks_training_at_the_first_chunk_past_it(tmp_path, monkeypatch):
    from mtmarl import collect
    from mtmarl.online import collectors

    clock = iter(range(0, 10_000, 40))  # each reading of the clock: 40 s later than the one before
    monkeypatch.setattr(collectors.time, "perf_counter", lambda: float(next(clock)))
    cfg = _cfg(tmp_path, "expert_medium")
    cfg.collect.time_limit_min = 1.5   # 90 s: passed at the end of the second chunk (t = 40 s per reading)
    (res,) = collect.run(cfg)
    uids, ref, meta, log = _read_run(tmp_path)
    assert uids == ["expert", "medium"] and len(log) < 3 and len(meta["snapshot_scores"]) == len(log)
    assert ref["stopped"] == res["stopped"] == f"time limit at {log[-1]['env_steps']:,} of {meta['budget']:,} steps"
    for bad in (0, -1, "soon", True):
        cfg.collect.time_limit_min = bad
        with pytest.raises(UserInputError, match=rf"collect.time_limit_min={bad!r}; allowed: null or a number"):
            collect.run.__wrapped__(cfg)


def test_the_budget_is_the_env_steps_run_rounded_up_to_a_whole_update(tmp_path, capsys):
    """Not rounded up to a whole chunk: 5 updates of 2 per chunk run as chunks of 2, 2 and 1."""
    import jax

    from mtmarl import collect
    from mtmarl.online.collectors import run_updates

    per_update = jax.local_device_count() * TINY["num_envs"] * TINY["rollout_len"]
    assert run_updates(3 * per_update, per_update, "t") == 3 and capsys.readouterr().err == ""  # exact: no line
    cfg = _cfg(tmp_path, "mixed")
    cfg.collect.budget = 4 * per_update + 1
    (res,) = collect.run(cfg)
    assert res["env_steps"] == 5 * per_update
    log = [json.loads(line) for line in next((tmp_path / "vaults" / "logs").rglob("*.jsonl")).read_text().splitlines()]
    assert [r["updates"] for r in log] == [2, 4, 5] and [r["env_steps"] for r in log] == [2 * per_update,
                                                                                      4 * per_update, 5 * per_update]
    said = [line for line in capsys.readouterr().err.splitlines() if "not a whole number of updates" in line]
    assert len(said) == 1 and f"running 5 updates = {5 * per_update:,} env steps" in said[0], said
