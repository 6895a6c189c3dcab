"""Collection in windows (``experiment_scripts/gpu_collect.py``): a window skips what earlier windows finished
(``collect.done_in``), packs what it collected into a bounded number of parts, and ``merge`` keeps every
finished task while dropping the one the window's deadline cut short."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from helpers import experiment_module
from mtmarl import collect
from mtmarl.configs import CONFIG_DIR
from mtmarl.errors import UserInputError
from mtmarl.online.collectors import task_options
from mtmarl.tasks import TaskSpec

gpu_collect = experiment_module("gpu_collect")
TASK = "lbf:grid=6,agents=2,food=1"


def _compose(args: list[str]):
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        return compose("collect", [f"task='{TASK}'", *args])


def test_done_in_skips_the_tasks_it_lists_before_building_anything(tmp_path, capsys):
    done = tmp_path / "earlier.json"
    cfg = _compose([f"collect.root={tmp_path / 'root'}", f"collect.done_in={done}"])
    spec = TaskSpec.parse(TASK)
    done.write_text(json.dumps({spec.adhoc: {"return": 1.0, "options": task_options(cfg, spec)}}))
    out = collect.run(cfg)
    assert out == [{"name": TaskSpec.parse(TASK).name, "split": "train", "skipped": True}]
    assert f"listed in {done}" in "".join(capsys.readouterr().err.split("\n"))  # (rich wraps long lines)
    assert not (tmp_path / "root" / "references.json").exists()  # nothing collected, nothing merged


def test_a_shard_takes_every_nth_task_of_the_set_and_a_bad_one_is_refused(tmp_path, capsys):
    from mtmarl.tasks import load

    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        cfg = compose("collect", ["+tasks=lbf_5", f"collect.root={tmp_path}", f"collect.done_in={tmp_path / 'd.json'}",
                                  "collect.shard=[1,3]"])
    every = [spec for s in ("train", "test") for spec in load("lbf_5").split(s)]
    (tmp_path / "d.json").write_text(json.dumps({spec.adhoc: {"return": 0.0, "options": task_options(cfg, spec)}
                                                 for spec in every}))
    assert [r["name"] for r in collect.run(cfg)] == [spec.name for spec in every[1::3]]  # all listed: skipped
    capsys.readouterr()
    for bad in ("[3,3]", "[-1,2]", "[0]", "5"):
        with pytest.raises(SystemExit) as exit_:
            collect.run(_compose([f"collect.root={tmp_path}", f"collect.shard={bad}"]))
        err = capsys.readouterr().err.strip()
        assert exit_.value.code == 2 and "\n" not in err and "collect.shard=" in err and "0 <= i < n" in err


def test_a_missing_done_in_file_is_one_line_naming_the_key(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        collect.run(_compose([f"collect.root={tmp_path / 'root'}", f"collect.done_in={tmp_path / 'nope.json'}"]))
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and "\n" not in err and "collect.done_in=" in err and "no such file" in err


def _window_root(root: Path, tasks: dict[str, dict], vaults: dict[str, str]) -> None:
    """A collection root as ``mtmarl.collect`` leaves it: references, a vault per train task, learning curves."""
    (root / "references.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "references.json").write_text(json.dumps(tasks))
    for key, name in vaults.items():
        env = key.partition(":")[0]
        vlt = root / env / f"{name}.vlt"
        (vlt / "default").mkdir(parents=True)
        (vlt / "default" / "chunk").write_bytes(bytes(range(256)) * 8)
        (vlt / "mtmarl.json").write_text(json.dumps({"task": {"adhoc": key, "name": name, "env": env}}))
    for key, entry in tasks.items():
        env = key.partition(":")[0]
        (root / "logs" / env).mkdir(parents=True, exist_ok=True)
        (root / "logs" / env / f"{entry['name']}.jsonl").write_text(json.dumps({"return": entry["return"]}) + "\n")


def test_merge_keeps_finished_tasks_and_drops_the_one_the_deadline_cut(tmp_path):
    a, b, c = "lbf:grid=6,agents=2,food=1", "lbf:grid=8,agents=2,food=2", "lbf:grid=9,agents=3,food=3"
    first = {a: {"name": "a", "return": 0.5},
             b: {"name": "b", "return": 0.2, "stopped": "signal SIGTERM at 4,096 of 30,000,000 steps"},
             c: {"name": "c", "return": 0.3, "stopped": "time limit at 8,192 of 30,000,000 steps"}}
    _window_root(tmp_path / "w1", first, {a: "a", b: "b"})
    into = tmp_path / "acc"
    parts = gpu_collect.pack(tmp_path / "w1", tmp_path / "out1", "lbf_5", part_bytes=1000, parts=7)
    assert len(parts) > 1 and all(p.stat().st_size <= 1000 for p in parts)
    got = gpu_collect.merge("lbf_5", tmp_path / "out1", into)
    assert got["merged"] == [a, c] and got["dropped (cut by the window's deadline)"] == [b]
    refs = json.loads((into / "references.json").read_text())
    assert refs == {a: first[a], c: first[c]}  # a per-task time limit is a finished task; a signal is not
    assert (into / "lbf" / "a.vlt" / "default" / "chunk").read_bytes() == bytes(range(256)) * 8
    assert not (into / "lbf" / "b.vlt").exists()
    assert sorted(p.name for p in (into / "logs" / "lbf").iterdir()) == ["a.jsonl", "c.jsonl"]
    # the next window collected b (the only task not in its done_in) and adds it beside the others
    _window_root(tmp_path / "w2", {b: {"name": "b", "return": 0.9}}, {b: "b"})
    (tmp_path / "out2").mkdir()
    (tmp_path / "out2" / "lbf_5.tar.gz.001").write_bytes(b"an earlier window's part")
    assert len(gpu_collect.pack(tmp_path / "w2", tmp_path / "out2", "lbf_5", part_bytes=1 << 20, parts=7)) == 1
    gpu_collect.merge("lbf_5", tmp_path / "out2", into)  # (the stale part is gone, or the tar would not read)
    refs = json.loads((into / "references.json").read_text())
    assert sorted(refs) == sorted([a, b, c]) and refs[b]["return"] == 0.9 and (into / "lbf" / "b.vlt").is_dir()


def test_pack_refuses_a_collection_larger_than_its_parts_and_merge_wants_parts(tmp_path):
    _window_root(tmp_path / "w", {TASK: {"name": "t", "return": 0.1}}, {TASK: "t"})
    with pytest.raises(UserInputError, match="more than 2 parts"):
        gpu_collect.pack(tmp_path / "w", tmp_path / "out", "lbf_5", part_bytes=200, parts=2)
    with pytest.raises(UserInputError, match="no lbf_5.tar.gz"):
        gpu_collect.merge("lbf_5", tmp_path / "empty", tmp_path / "acc")


@pytest.mark.slow  # two collector processes (one compiles and trains)
def test_a_window_collects_and_the_next_skips_what_was_merged(tmp_path):
    conf = tmp_path / "conf" / "tasks"
    conf.mkdir(parents=True)
    (conf / "tiny_lbf.yaml").write_text(
        "# @package tasks\nname: tiny_lbf\nenv: lbf\nnum_train: null\nsingle: null\n"
        "train:\n  - {name: t6, grid: 6, agents: 2, food: 1, level: 2, fov: 3}\n"
        "test:\n  - {name: t7, grid: 7, agents: 2, food: 1, level: 2, fov: 3}\n")
    overrides = [f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "collect.budget=2048", "online.num_envs=8",
                 "eval.episodes=4", "collect.initial_eval=false", f"hydra.run.dir={tmp_path / 'hydra'}"]
    into = tmp_path / "acc"
    first = gpu_collect.window("tiny_lbf", 8, tmp_path / "out1", overrides, into, procs=2)  # a task each
    log = (tmp_path / "out1" / "window.log").read_text()
    assert first["returncodes"] == [0, 0] and not first["cut_at_deadline"], log
    assert "collect.shard=[0,2]" in log and "collect.shard=[1,2]" in log
    assert len(first["tasks"]) == 2 and all(t["env_steps"] >= 2048 for t in first["tasks"].values())
    gpu_collect.merge("tiny_lbf", tmp_path / "out1", into)
    assert (into / "lbf" / "t6.vlt" / "mtmarl.json").is_file() and (into / "logs" / "lbf" / "t7.jsonl").is_file()
    second = gpu_collect.window("tiny_lbf", 8, tmp_path / "out2", overrides, into)
    assert second["returncodes"] == [0] and second["tasks"] == {}  # skipped: listed in the merged references
    assert "listed in" in (tmp_path / "out2" / "window.log").read_text()


def test_the_command_line_passes_what_follows_the_double_dash_to_the_collector(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(gpu_collect, "window", lambda *a: calls.append(a) or {})
    gpu_collect.main(["window", "lbf_5", "--minutes", "8", "--out", str(tmp_path), "--", "online.num_envs=512"])
    gpu_collect.main(["window", "lbf_5", "--minutes", "8", "--out", str(tmp_path)])
    assert [c[:4] for c in calls] == [("lbf_5", 8.0, tmp_path, ["online.num_envs=512"]), ("lbf_5", 8.0, tmp_path, [])]
