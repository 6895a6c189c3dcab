"""Collection to a plateau, recorded at fixed intervals, and safe to rerun: the stopping rule, the snapshots it
keeps, and which tasks a rerun counts as done (finished with the same options), refuses (other options) or
collects again (interrupted, or ``collect.redo=true``)."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from omegaconf import OmegaConf

from helpers import stopping_system
from mtmarl import collect
from mtmarl.configs import CONFIG_DIR
from mtmarl.errors import UserInputError
from mtmarl.online.plateau import PlateauRule, plateaued, rule_for, stalled
from mtmarl.online.quality import IntervalSnapshots

TASK = "connector:grid=5,agents=2"
MAPPO = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "online" / "mappo.yaml"))
TINY = {**MAPPO, "num_envs": 4, "rollout_len": 8, "updates_per_chunk": 2, "record_envs": 4, "record_len": 24}


def _naive_plateau(rule, steps, returns):
    """The rule written out chunk by chunk: the windows by their end steps, the means over their chunks."""
    end = steps[-1]
    if end < rule.min_steps:
        return False
    w = rule.window * end
    last = [r for s, r in zip(steps, returns) if r is not None and s > end - w]
    prev = [r for s, r in zip(steps, returns) if r is not None and end - 2 * w < s <= end - w]
    start = [r for r in returns if r is not None][:1]  # the first chunk with a return
    if not last or not prev:
        return False
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    learned = mean(last) - start[0] >= rule.min_gain * max(abs(start[0]), 1e-6)
    return learned and mean(last) - mean(prev) < rule.min_gain * max(abs(mean(prev)), 1e-6)


def test_the_plateau_rule_matches_its_definition_on_hand_made_and_random_curves():
    rule = PlateauRule(min_steps=100, window=0.2, min_gain=0.02)
    steps = list(range(10, 210, 10))  # 20 chunks of 10 steps
    rising = [float(s) for s in steps]
    flat = [0.5] * 4 + [1.0] * 16  # learned in the first window (0, 40], flat since
    # at 200 steps: the last window (160, 200] holds 170..200 (mean 185), the one before (120, 160] 130..160 (145)
    assert not plateaued(rule, steps, rising) and plateaued(rule, steps, flat)
    assert not plateaued(rule, steps[:9], flat[:9])  # 90 < min_steps: never before it
    assert plateaued(rule, steps[:10], flat[:10])  # at 100: the first chunk at 0.5, the last two windows at 1.0
    # solved within the first fifth: the first chunk 3% below the rest, the first window's mean within 1% of it;
    # learned all the same, so it plateaus at min_steps instead of training on to the cap
    solved = [0.97] + [1.0] * 19
    assert [n for n in range(1, 21) if plateaued(rule, steps[:n], solved[:n])] == list(range(10, 21))
    # never above its start (a sparse reward not found yet, or stuck at zero): no plateau, the cap ends it
    assert not plateaued(rule, steps, [1.0] * 20) and not plateaued(rule, steps, [0.0] * 20)
    assert not plateaued(rule, steps, [0.02] * 4 + [0.0] * 16)  # learned nothing, then got worse
    # 1.5% better than the window before: below 2%, a plateau; 2.5%: still learning
    assert plateaued(rule, steps, flat[:16] + [1.015] * 4) and not plateaued(rule, steps, flat[:16] + [1.025] * 4)
    # negative returns: the gains are relative to |m_prev| and |r_0|
    start = [-4.0] * 4 + [-2.0] * 12
    assert not plateaued(rule, steps, start + [-1.9] * 4) and plateaued(rule, steps, start + [-1.99] * 4)
    # chunks without a finished episode (None) are left out; a window with none of them does not decide
    assert not plateaued(rule, steps, flat[:16] + [None] * 4)
    assert not plateaued(rule, steps, [None] * 4 + flat[4:])
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 40))
        s = np.cumsum(rng.integers(1, 50, n)).tolist()
        r = [None if rng.random() < 0.1 else float(x) for x in rng.normal(1.0, 0.3, n).cumsum()]
        rule = PlateauRule(int(rng.integers(0, 300)), float(rng.uniform(0.05, 0.5)), float(rng.uniform(0, 0.1)))
        assert plateaued(rule, s, r) == _naive_plateau(rule, s, r), (rule, s, r)


def test_a_run_that_has_not_learned_by_the_stall_limit_gives_up_and_says_so():
    from mtmarl.online.collectors import ended

    rule = PlateauRule(min_steps=100, window=0.2, min_gain=0.02, stall_steps=150)
    steps = list(range(10, 210, 10))
    zeros, rising = [0.0] * 20, [float(s) for s in steps]
    assert [n for n in range(1, 21) if stalled(rule, steps[:n], zeros[:n])] == list(range(15, 21))  # from 150 on
    assert not any(stalled(rule, steps[:n], rising[:n]) for n in range(1, 21))
    assert not stalled(PlateauRule(100, 0.2, 0.02), steps, zeros)  # no limit: the cap ends it
    assert not stalled(rule, steps, [None] * 20)  # no finished episode in a window: not decided
    # learned, then fell back to its start: not learning any more, so it gives up too
    assert stalled(rule, steps, [0.0] * 4 + [1.0] * 10 + [0.0] * 6)
    assert ended(False, None, True, 150) == "no learning by 150 steps"
    assert ended(False, None, False, 150) == "plateau at 150 steps" and ended(True, None, True, 200) == "budget"
    assert ended(False, "time limit", False, 120) is None
    # a limit, not a compared option: runs recorded before it existed stay finished
    assert rule.to_json() == {"min_steps": 100, "window": 0.2, "min_gain": 0.02}
    assert "by 150 env steps stops there" in rule.describe()


def test_a_bad_plateau_rule_is_one_line_naming_the_key():
    def cfg(**plateau):
        return OmegaConf.create({"collect": {"plateau": {"min_steps": {"lbf": 10}, "window": 0.2, "min_gain": 0.02,
                                                         **plateau}}})

    assert rule_for(cfg(), "lbf") == PlateauRule(10, 0.2, 0.02)
    assert rule_for(cfg(stall_steps={"rware": 50}), "lbf") == PlateauRule(10, 0.2, 0.02)  # no limit for lbf
    assert rule_for(cfg(stall_steps={"lbf": 50}), "lbf") == PlateauRule(10, 0.2, 0.02, 50)
    assert rule_for(OmegaConf.create({"collect": {"plateau": None}}), "lbf") is None
    for over, key in (({"min_steps": {"lbf": -1}}, "collect.plateau.min_steps.lbf=-1"),
                      ({"min_steps": {"lbf": 1.5}}, "collect.plateau.min_steps.lbf=1.5"),
                      ({"min_steps": {"rware": 5}}, "collect.plateau.min_steps.lbf=None"),
                      ({"window": 0.0}, "collect.plateau.window=0.0"), ({"window": 0.6}, "collect.plateau.window=0.6"),
                      ({"min_gain": -0.1}, "collect.plateau.min_gain=-0.1"), ({"min_gain": "x"}, "collect.plateau.min_gain='x'"),
                      ({"windw": 0.2}, "collect.plateau.windw is not a key"),
                      ({"stall_steps": {"lbf": -5}}, "collect.plateau.stall_steps.lbf=-5")):
        with pytest.raises(UserInputError, match="^" + key.replace(".", r"\.").replace("(", r"\(")) as err:
            rule_for(cfg(**over), "lbf")
        assert "\n" not in str(err.value)


def test_interval_snapshots_stay_evenly_strided_and_pick_the_nearest_to_even_points():
    snaps = IntervalSnapshots(cap=8)
    for chunk in range(0, 101):
        snaps.add(chunk, 10 * chunk, {"w": np.float32(chunk)})
    chunks = [c for c, _, _ in snaps.kept]
    assert len(chunks) <= 8 and chunks[0] == 0 and len(set(np.diff(chunks))) == 1  # untrained kept, one stride
    assert chunks == list(range(0, 101, snaps.stride))
    picked = snaps.pick(4, 103, 1030, {"w": np.float32(103)})  # the final policy, off the stride
    kept_steps = [s for _, s, _ in snaps.kept] + [1030]
    want = [min(kept_steps, key=lambda s: abs(s - t)) for t in np.linspace(0, 1030, 4)]
    assert [s for s, _ in picked] == want and picked[0][0] == 0 and picked[-1] == (1030, {"w": np.float32(103)})
    assert [float(p["w"]) for _, p in picked] == [s / 10 for s in want]


def _cfg(tmp_path, **collect_over):
    return OmegaConf.create({
        "task": TASK, "split": "train", "seed": 0, "online": TINY, "online_env": {},
        "collect": {"budget": 48 * 64, "root": str(tmp_path / "vaults"), "uid": "default", "references": None,
                    "log_dir": None, "record": True, "progress": False, "initial_eval": False, "quality": "intervals",
                    "quality_records": 3, "quality_episodes": 8, "quality_levels": [0.0, 1.0],
                    "quality_min_episodes": None, **collect_over},
        "eval": {"episodes": 8, "devices": None, "greedy": False}})


def test_a_plateaued_run_ends_early_is_recorded_at_intervals_and_a_rerun_checks_its_options(tmp_path, capsys,
                                                                                            monkeypatch):
    from mtmarl.data.vault import read_vault, vault_path
    from mtmarl.online import collectors
    from mtmarl.tasks import TaskSpec

    # the rule's verdict (tested above) made known in advance: plateaued at the first chunk with a return once
    # min_steps are reached, so where the run ends is known
    monkeypatch.setattr(collectors, "plateaued", lambda rule, steps, returns: steps[-1] >= rule.min_steps
                        and returns[-1] is not None)
    plateau = {"min_steps": {"connector": 8 * 64}, "window": 0.25, "min_gain": 1e9}
    (res,) = collect.run(_cfg(tmp_path, plateau=plateau))
    refs = json.loads((tmp_path / "vaults" / "references.json").read_text())
    ref = refs[TASK]
    log = [json.loads(x) for x in next((tmp_path / "vaults" / "logs").rglob("*.jsonl")).read_text().splitlines()]
    first = next(r["env_steps"] for r in log if r["env_steps"] >= 8 * 64 and r["return"] is not None)
    assert res["env_steps"] == ref["env_steps"] == log[-1]["env_steps"] == first < 48 * 64
    assert ref["ended"] == f"plateau at {first:,} steps" and ref["stop_rule"].startswith("at least 512 env steps")
    assert ref["options"]["plateau"] == {"min_steps": 512, "window": 0.25, "min_gain": 1e9}
    spec = TaskSpec.parse(TASK)
    meta = json.loads((vault_path(tmp_path / "vaults", spec) / "mtmarl.json").read_text())
    collector = meta["datasets"]["default"]["collector"]
    assert collector["interval_steps"][0] == 0 and collector["interval_steps"][-1] == first
    assert len(collector["interval_steps"]) == 3 and read_vault(vault_path(tmp_path / "vaults", spec), spec)

    # the same command: done; other options: one line naming each of them, nothing run or written
    assert collect.run(_cfg(tmp_path, plateau=plateau))[0]["skipped"]
    capsys.readouterr()
    before = (tmp_path / "vaults" / "references.json").read_text()
    changed = _cfg(tmp_path, plateau=plateau, quality_records=5)
    changed.seed, changed.online.num_envs = 7, 8
    with pytest.raises(SystemExit) as exit_:
        collect.run(changed)
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and "\n" not in err and "collected with other options" in err
    for said in ("online.num_envs: 4 -> 8", "quality_records: 3 -> 5", "seed: 0 -> 7", "collect.redo=true"):
        assert said in err, err
    assert (tmp_path / "vaults" / "references.json").read_text() == before

    # collect.redo=keep: kept as it was collected, the differences named; anything else is one line
    changed.collect.redo = "keep"
    (kept,) = collect.run(changed)
    assert kept["skipped"] and "kept as collected" in capsys.readouterr().err
    assert (tmp_path / "vaults" / "references.json").read_text() == before
    changed.collect.redo = "yes"
    with pytest.raises(SystemExit):
        collect.run(changed)
    assert "collect.redo='yes'; allowed: false" in capsys.readouterr().err
    # collect.redo=true: collected again with the new options
    changed.collect.redo = True
    (again,) = collect.run(changed)
    assert not again.get("skipped")
    assert json.loads((tmp_path / "vaults" / "references.json").read_text())[TASK]["options"]["seed"] == 7


def test_an_entry_without_its_options_is_refused_not_taken_as_done(tmp_path, capsys):
    from mtmarl.tasks import TaskSpec

    root = tmp_path / "vaults"
    root.mkdir()
    (root / "references.json").write_text(json.dumps({TaskSpec.parse(TASK).adhoc: {"return": 1.0}}))
    cfg = _cfg(tmp_path, record=False)
    with pytest.raises(SystemExit) as exit_:
        collect.run(cfg)
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and "\n" not in err and "without the options it was collected with" in err


def _finetune_cfg(tmp_path, seed=0, out=None):
    return OmegaConf.create({
        "task": TASK, "split": "train", "seed": seed, "online": TINY, "online_env": {},
        "finetune": {"budget": 3 * 64, "out": str(out or tmp_path / "ft"), "initial_eval": False,
                     "time_limit_min": None, "progress": False},
        "eval": {"episodes": 4, "devices": None, "greedy": False}})


def test_finetune_reruns_an_interrupted_task_refuses_changed_options_and_the_bundled_data(tmp_path, monkeypatch,
                                                                                          capsys):
    import os
    import signal

    from mtmarl import finetune
    from mtmarl.collect import BUNDLED

    stopping_system(monkeypatch, 1, lambda: os.kill(os.getpid(), signal.SIGINT))
    with pytest.raises(SystemExit) as exit_:
        finetune.run(_finetune_cfg(tmp_path))
    refs = tmp_path / "ft" / "references.json"
    assert exit_.value.code == 130 and json.loads(refs.read_text())[TASK]["stopped"].startswith("signal SIGINT")
    (again,) = finetune.run(_finetune_cfg(tmp_path))  # interrupted: not done, so it runs again, to its budget
    assert not again.get("skipped") and "stopped" not in json.loads(refs.read_text())[TASK]
    assert finetune.run(_finetune_cfg(tmp_path))[0]["skipped"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        finetune.run(_finetune_cfg(tmp_path, seed=3))
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and "\n" not in err and "seed: 0 -> 3" in err

    before = sorted(p.name for p in BUNDLED.iterdir())
    with pytest.raises(SystemExit) as exit_:
        finetune.run(_finetune_cfg(tmp_path, out=BUNDLED))
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and "\n" not in err and "finetune.out=" in err and "inside the bundled data" in err
    assert sorted(p.name for p in BUNDLED.iterdir()) == before


def test_an_interrupted_task_continues_from_its_partial_run_to_the_same_result(tmp_path, monkeypatch):
    """SIGINT after the second chunk, then the same command: the task continues from the saved run (no chunk
    trained twice) and ends with the reference, curve and vault of a run that was never interrupted."""
    import os
    import signal

    from mtmarl.data.vault import read_vault, vault_path
    from mtmarl.tasks import TaskSpec

    def refs(root):
        entry = json.loads((root / "references.json").read_text())[TASK]
        return {k: entry[k] for k in ("return", "std", "env_steps", "initial_return")}

    whole = _cfg(tmp_path / "whole", initial_eval=True)
    collect.run(whole)
    calls = stopping_system(monkeypatch, 2, lambda: os.kill(os.getpid(), signal.SIGINT))
    cut = _cfg(tmp_path / "cut", initial_eval=True)
    with pytest.raises(SystemExit):
        collect.run(cut)
    root = tmp_path / "cut" / "vaults"
    assert (root / ".partial" / "connector" / "grid=5,agents=2.pkl").is_file()
    collect.run(cut)
    log = lambda r: [json.loads(x) for x in next((r / "logs").rglob("*.jsonl")).read_text().splitlines()]  # noqa: E731
    whole_root = tmp_path / "whole" / "vaults"
    assert len(calls) == len(log(root)) and refs(root) == refs(whole_root)
    assert [r["return"] for r in log(root)] == [r["return"] for r in log(whole_root)]
    spec = TaskSpec.parse(TASK)
    a, b = read_vault(vault_path(root, spec), spec), read_vault(vault_path(whole_root, spec), spec)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)
    assert not (root / ".partial" / "connector" / "grid=5,agents=2.pkl").exists()  # finished: removed


def test_a_task_another_collector_holds_is_skipped_and_the_rest_go_on(tmp_path, capsys):
    from mtmarl.online.partial import path as partial_path
    from mtmarl.tasks import TaskSpec
    from mtmarl.training.rundir import RunDirLock

    cfg = _cfg(tmp_path, record=False)
    with RunDirLock(partial_path(tmp_path / "vaults", TaskSpec.parse(TASK)).with_suffix("")):
        (res,) = collect.run(cfg)
    assert res["skipped"] and res["busy"] and "another collector has it" in capsys.readouterr().err
    assert not (tmp_path / "vaults" / "references.json").exists()


def test_a_shard_without_tasks_and_an_unwritable_output_are_refused_before_any_training(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    for over, want in (({"shard": [3, 5]}, "selects none of the 1 tasks"),
                       ({"references": str(blocker / "refs.json")}, "collect.references: ")):
        with pytest.raises(SystemExit) as exit_:
            collect.run(_cfg(tmp_path, **over))
        err = capsys.readouterr().err.strip()
        assert exit_.value.code == 2 and "\n" not in err and want in err, err
    assert not (tmp_path / "vaults" / "logs").exists()


def test_a_partial_run_saved_before_an_option_existed_continues_and_one_with_other_options_starts_over(tmp_path,
                                                                                                     capsys):
    import jax.numpy as jnp

    from mtmarl.online import partial

    file = tmp_path / "run.pkl"
    state = {"w": jnp.arange(3.0)}
    old = {"seed": 0, "online": {"lr": 0.001}}  # saved before online.clip_per_network existed
    partial.save(file, old, {"state": state, "steps": 7})
    now = {"seed": 0, "online": {"lr": 0.001, "clip_per_network": False}}
    resumed = partial.load(file, now, {"w": jnp.zeros(3)})
    assert resumed is not None and resumed["steps"] == 7 and resumed["state"]["w"].tolist() == [0.0, 1.0, 2.0]
    assert partial.load(file, {"seed": 0, "online": {"lr": 0.002, "clip_per_network": False}}, state) is None
    assert "other options (online.lr: 0.001 -> 0.002)" in capsys.readouterr().err
