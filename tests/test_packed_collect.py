"""Collection in runs that end by a deadline (``experiment_scripts/packed_collect.py``): a run skips what earlier
runs finished (``collect.done_in``), packs what it finished into parts with a manifest, and ``merge`` verifies
parts and vaults before it changes anything, keeps every finished task and drops the one a signal cut short."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from helpers import experiment_module, synthetic_vault
from mtmarl import collect
from mtmarl.configs import CONFIG_DIR
from mtmarl.errors import UserInputError
from mtmarl.online.collectors import task_options
from mtmarl.tasks import TaskSpec

packed = experiment_module("packed_collect")
TASK = "lbf:grid=6,agents=2,food=1"


def _compose(args: list[str]):
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        return compose("collect", [f"task='{TASK}'", *args])


def test_done_in_skips_the_tasks_it_lists_before_building_anything(tmp_path, capsys):
    done = tmp_path / "earlier.json"
    cfg = _compose([f"collect.root={tmp_path / 'root'}", f"collect.done_in={done}"])
    spec = TaskSpec.parse(TASK)
    done.write_text(json.dumps({spec.adhoc: {"return": 1.0, "options": task_options(cfg, spec, "train")}}))
    out = collect.run(cfg)
    assert out == [{"name": TaskSpec.parse(TASK).name, "split": "train", "skipped": True}]
    assert f"listed in {done}" in "".join(capsys.readouterr().err.split("\n"))  # (rich wraps long lines)
    assert not (tmp_path / "root" / "references.json").exists()  # nothing collected, nothing merged


def test_a_shard_takes_every_nth_task_of_the_set_and_a_bad_one_is_refused(tmp_path, capsys):
    from mtmarl.tasks import load

    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        cfg = compose("collect", ["+tasks=lbf_5", f"collect.root={tmp_path}", f"collect.done_in={tmp_path / 'd.json'}",
                                  "collect.shard=[1,3]"])
    every = [(s, spec) for s in ("train", "test") for spec in load("lbf_5").split(s)]
    (tmp_path / "d.json").write_text(json.dumps({spec.adhoc: {"return": 0.0, "options": task_options(cfg, spec, s)}
                                                 for s, spec in every}))
    assert [r["name"] for r in collect.run(cfg)] == [spec.name for _, spec in every[1::3]]  # all listed: skipped
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


SET = "my_lbf"  # a set outside mtmarl/configs/tasks: merge keeps every task of the collection
A, B, C = "lbf:grid=6,agents=2,food=1", "lbf:grid=8,agents=2,food=2", "lbf:grid=9,agents=3,food=3"


def _entry(key: str, ret: float, **extra) -> dict:
    return {"name": TaskSpec.parse(key).name, "split": "train", "return": ret, "options": {"record": True}, **extra}


def _collection(root: Path, tasks: dict[str, dict], vaults=None) -> None:
    """A collection root as ``mtmarl.collect`` leaves it: references, a real vault per task in ``vaults`` (default:
    every task), learning curves."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "references.json").write_text(json.dumps(tasks))
    for i, key in enumerate(tasks if vaults is None else vaults):
        synthetic_vault(root, key, episodes=3, seed=i)
    for key in tasks:
        env, _, params = key.partition(":")
        (root / "logs" / env).mkdir(parents=True, exist_ok=True)
        (root / "logs" / env / f"{params}.jsonl").write_text(json.dumps({"return": tasks[key]["return"]}) + "\n")


def _pack(root: Path, out: Path, part_bytes: int = 1 << 20, parts=None) -> list[str]:
    return packed.pack(root, out, SET, part_bytes, parts, {"task_set": SET})


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()} if root.exists() else {}


def test_merge_keeps_finished_tasks_and_drops_the_one_a_signal_cut(tmp_path):
    first = {A: _entry(A, 0.5), B: _entry(B, 0.2, stopped="signal SIGTERM at 4,096 of 30,000,000 steps"),
             C: _entry(C, 0.3, stopped="time limit at 8,192 of 30,000,000 steps")}
    _collection(tmp_path / "w1", first)
    into = tmp_path / "acc"
    parts = _pack(tmp_path / "w1", tmp_path / "out1", part_bytes=4000)
    assert len(parts) > 1 and all((tmp_path / "out1" / p).stat().st_size <= 4000 for p in parts)
    got = packed.merge(SET, tmp_path / "out1", into)
    assert got["merged"] == [A, C] and got["dropped (cut by a signal)"] == [B]
    refs = json.loads((into / "references.json").read_text())
    assert refs == {A: first[A], C: first[C]}  # a per-task time limit is a finished task; a signal is not
    assert _tree(into / "lbf" / "grid=6,agents=2,food=1.vlt") == _tree(tmp_path / "w1" / "lbf" / "grid=6,agents=2,food=1.vlt")
    assert not (into / "lbf" / "grid=8,agents=2,food=2.vlt").exists()
    assert sorted(p.name for p in (into / "logs" / "lbf").iterdir()) == ["grid=6,agents=2,food=1.jsonl",
                                                                       "grid=9,agents=3,food=3.jsonl"]
    # the next run collected B (the only task not in its done_in); its parts replace the first run's in out1
    _collection(tmp_path / "w2", {B: _entry(B, 0.9)})
    _pack(tmp_path / "w2", tmp_path / "out1")
    packed.merge(SET, tmp_path / "out1", into)
    refs = json.loads((into / "references.json").read_text())
    assert sorted(refs) == sorted([A, B, C]) and refs[B]["return"] == 0.9
    assert not [p for p in into.rglob(".*") if p.name != ".references.json.lock"]  # no staging left behind


def _refused(fn, *args, match: str):
    with pytest.raises(UserInputError, match=match) as err:
        fn(*args)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("case,want", [
    ("missing part", "part my_lbf.tar.gz.001 of 3 is missing"),
    ("altered part", "does not match its sha256"),
    ("stray part", "does not list"),
    ("another set", "a packed run of connector_10, not my_lbf"),
    ("no vault", f"train task {B} .* is finished but its vault is missing"),
    ("vault of another task", "records task .* which has no reference entry"),
    ("misplaced vault", "whose vault belongs elsewhere"),
    ("truncated data file", "is corrupt"),
    ("NaN reference", "return nan is not a finite number"),
    ("true reference", "return True is not a finite number"),
])
def test_merge_verifies_everything_before_it_changes_anything(tmp_path, case, want):
    into = tmp_path / "acc"
    _collection(tmp_path / "w0", {C: _entry(C, 0.3)})
    _pack(tmp_path / "w0", tmp_path / "out0")
    packed.merge(SET, tmp_path / "out0", into)
    before = _tree(into)
    tasks, vaults = {A: _entry(A, 0.5), B: _entry(B, 0.2), C: _entry(C, 0.7)}, None
    if case == "no vault":
        vaults = [A, C]
    if case in ("NaN reference", "true reference"):
        tasks[B]["return"] = float("nan") if case == "NaN reference" else True
    root = tmp_path / "w"
    _collection(root, tasks, vaults)
    if case == "vault of another task":
        shutil.rmtree(root / "lbf" / "grid=8,agents=2,food=2.vlt")
        synthetic_vault(root, "lbf:grid=7,agents=2,food=1", episodes=3)
    if case == "misplaced vault":
        os.replace(root / "lbf" / "grid=8,agents=2,food=2.vlt", root / "lbf" / "elsewhere.vlt")
    if case == "truncated data file":
        data = max((p for p in (root / "lbf" / "grid=8,agents=2,food=2.vlt").rglob("*") if p.is_file()
                    and p.name != "mtmarl.json"), key=lambda p: p.stat().st_size)
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    out = tmp_path / "out"
    _pack(root, out, part_bytes=max(1, sum(len(b) for b in _tree(root).values()) // 6))
    n = len(list(out.glob("my_lbf.tar.gz.*")))
    if case == "missing part":
        for p in sorted(out.glob("my_lbf.tar.gz.*"))[3:]:
            p.unlink()
        manifest = json.loads((out / "manifest.json").read_text())
        manifest["parts"] = manifest["parts"][:3]
        (out / "manifest.json").write_text(json.dumps(manifest))
        (out / "my_lbf.tar.gz.001").unlink()
    if case == "altered part":
        (out / "my_lbf.tar.gz.000").write_bytes((out / "my_lbf.tar.gz.000").read_bytes()[:-1] + b"x")
    if case == "stray part":
        (out / f"my_lbf.tar.gz.{n + 1:03d}").write_bytes(b"another run's part")
    if case == "another set":
        manifest = json.loads((out / "manifest.json").read_text())
        (out / "manifest.json").write_text(json.dumps({**manifest, "task_set": "connector_10"}))
    _refused(packed.merge, SET, out, into, match=want)
    assert _tree(into) == before


def test_a_failed_copy_leaves_the_accumulated_collection_as_it_was(tmp_path, monkeypatch):
    into = tmp_path / "acc"
    _collection(tmp_path / "w0", {A: _entry(A, 0.5), C: _entry(C, 0.3)})
    _pack(tmp_path / "w0", tmp_path / "out0")
    packed.merge(SET, tmp_path / "out0", into)
    before = _tree(into)
    _collection(tmp_path / "w1", {A: _entry(A, 0.9), C: _entry(C, 0.8)})  # re-collected: both replace the old
    _pack(tmp_path / "w1", tmp_path / "out1")
    real, calls = shutil.copytree, []

    def full_disk(src, dst, *a, **k):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(src, dst, *a, **k)

    monkeypatch.setattr(packed.shutil, "copytree", full_disk)
    _refused(packed.merge, SET, tmp_path / "out1", into, match="No space left on device")
    assert _tree(into) == before and len(calls) == 2


def test_a_collection_too_large_for_its_parts_is_kept_and_merge_takes_it_as_it_is(tmp_path):
    _collection(tmp_path / "w", {A: _entry(A, 0.1)})
    _refused(_pack, tmp_path / "w", tmp_path / "out", 200, 2, match=f"more than 2 parts .* kept in {tmp_path / 'w'}")
    assert not list((tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else True
    assert packed.merge(SET, tmp_path / "w", tmp_path / "acc")["merged"] == [A]
    _refused(packed.merge, SET, tmp_path / "empty", tmp_path / "acc", match="holds no manifest.json")


def test_a_run_refuses_overrides_it_owns_and_a_deadline_inside_its_grace(tmp_path):
    for over in ("collect.root=/x", "+collect.references=r.json", "collect.log_dir=l", "collect.shard=[0,2]",
                 "hydra.run.dir=h", "collect.done_in=d.json"):
        _refused(packed.run, "lbf_5", 5, tmp_path, [over], match="a packed run chooses where its collectors write")
    _refused(packed.run, "lbf_5", 1, tmp_path, [], match="--minutes=1 leaves no time to collect")
    assert not list(tmp_path.iterdir())


def _lbf_set(tmp_path: Path, name: str, train: list[int], test: list[int]) -> None:
    """A task set ``name`` in ``<tmp_path>/conf/tasks`` (hydra.searchpath): one small LBF task ``t<grid>`` per grid."""
    conf = tmp_path / "conf" / "tasks"
    conf.mkdir(parents=True)
    tasks = {s: "".join(f"\n  - {{name: t{g}, grid: {g}, agents: 2, food: 1, level: 2, fov: 3}}" for g in grids)
             or " []" for s, grids in (("train", train), ("test", test))}
    (conf / f"{name}.yaml").write_text(f"# @package tasks\nname: {name}\nenv: lbf\nnum_train: null\nsingle: null\n"
                                       f"train:{tasks['train']}\ntest:{tasks['test']}\n")


@pytest.mark.slow  # two collector processes (one compiles and trains)
def test_a_run_collects_and_the_next_skips_what_was_merged(tmp_path):
    _lbf_set(tmp_path, "tiny_lbf", train=[6], test=[7])
    overrides = [f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "collect.budget=2048", "online.num_envs=8",
                 "eval.episodes=4", "collect.initial_eval=false"]
    into = tmp_path / "acc"
    first = packed.run("tiny_lbf", 8, tmp_path / "out1", overrides, into, procs=2)  # a task each
    log = (tmp_path / "out1" / "run.log").read_text()
    assert first["returncodes"] == [0, 0] and not first["cut_at_deadline"], log
    assert "collect.shard=[0,2]" in log and "collect.shard=[1,2]" in log
    assert len(first["tasks"]) == 2 and all(t["env_steps"] >= 2048 for t in first["tasks"].values())
    packed.merge("tiny_lbf", tmp_path / "out1", into)
    assert (into / "lbf" / "t6.vlt" / "mtmarl.json").is_file() and (into / "logs" / "lbf" / "t7.jsonl").is_file()
    second = packed.run("tiny_lbf", 8, tmp_path / "out2", overrides, into)
    assert second["returncodes"] == [0] and second["tasks"] == {}  # skipped: listed in the merged references
    assert "listed in" in (tmp_path / "out2" / "run.log").read_text()


_SIGNALLED_RUN = """
import sys
from mtmarl.experiments import packed_collect
packed_collect.run_cli()
"""


@pytest.mark.slow  # a collector process compiles and trains before the signal
def test_a_signal_to_a_run_ends_its_collector_and_packs_what_finished(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    _lbf_set(tmp_path, "two_lbf", train=[6, 8], test=[])
    cmd = [sys.executable, "-c", _SIGNALLED_RUN, "run", "two_lbf", "--minutes", "20", "--out", str(tmp_path / "out"),
           "--into", str(tmp_path / "acc"), "--", f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
           "online.num_envs=8", "eval.episodes=4", "collect.initial_eval=false", "collect.budget=50000000",
           "collect.time_limit_min=0.05"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and \
            not list(Path(tempfile_dir()).glob("packed_collect_two_lbf_*/lbf/t6.vlt/mtmarl.json")):
        time.sleep(1)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err[-2000:]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["signal"] == "SIGTERM" and "lbf:grid=6,agents=2,food=1,level=2,fov=3" in manifest["tasks"]
    got = packed.merge("two_lbf", tmp_path / "out", tmp_path / "acc")
    assert "lbf:grid=6,agents=2,food=1,level=2,fov=3" in got["merged"]
    assert not (tmp_path / "outputs").exists()  # the collectors' Hydra folders are the run's, not the cwd's


def tempfile_dir() -> str:
    import tempfile

    return tempfile.gettempdir()


def test_the_command_line_passes_what_follows_the_double_dash_to_the_collector(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(packed, "run", lambda *a: calls.append(a) or {})
    packed.main(["run", "lbf_5", "--minutes", "8", "--out", str(tmp_path), "--", "online.num_envs=512"])
    packed.main(["run", "lbf_5", "--minutes", "8", "--out", str(tmp_path)])
    assert [c[:4] for c in calls] == [("lbf_5", 8.0, tmp_path, ["online.num_envs=512"]), ("lbf_5", 8.0, tmp_path, [])]


def test_merge_takes_only_the_sets_tasks_and_whole_set_wants_all_of_them(tmp_path):
    from mtmarl import tasks
    from mtmarl.data.stats import DEFAULT_ROOT as BUNDLED

    lbf = [spec.adhoc for s in ("train", "test") for spec in tasks.load("lbf_5").split(s)]
    other = "connector:grid=5,agents=2"
    root = tmp_path / "w"
    _collection(root, {lbf[0]: _entry(lbf[0], 0.5), other: _entry(other, 1.0)})
    got = packed.merge("lbf_5", root, tmp_path / "acc")
    assert got["merged"] == [lbf[0]] and got["left out (not in the set)"] == [other]
    assert list(json.loads((tmp_path / "acc" / "references.json").read_text())) == [lbf[0]]
    _refused(packed.merge, "lbf_5", root, tmp_path / "acc2", True, match=f"{len(lbf) - 1} of the {len(lbf)} tasks")
    assert not (tmp_path / "acc2" / "references.json").exists()
    before = _tree(BUNDLED / "lbf")
    _refused(packed.merge, "lbf_5", root, BUNDLED, match="add --write-bundled")
    assert _tree(BUNDLED / "lbf") == before


def test_a_task_its_run_did_not_learn_keeps_the_data_already_held(tmp_path):
    into = tmp_path / "acc"
    _collection(tmp_path / "w1", {A: _entry(A, 0.5, initial_return=0.1), B: _entry(B, 0.4, initial_return=0.1)})
    packed.merge(SET, tmp_path / "w1", into)
    held = _tree(into)
    # A's new run ended at its untrained return, B's below it, C's (no data held) likewise: A and B keep theirs
    _collection(tmp_path / "w2", {A: _entry(A, 0.0, initial_return=0.0), B: _entry(B, 0.05, initial_return=0.1),
                                  C: _entry(C, 0.0, initial_return=0.0)})
    got = packed.merge(SET, tmp_path / "w2", into)
    assert got["kept (the new run did not learn)"] == [A, B] and got["merged"] == [C]
    after = _tree(into)
    assert {k: v for k, v in after.items() if "grid=9" not in k and k != "references.json"} == \
        {k: v for k, v in held.items() if k != "references.json"}
    refs = json.loads((into / "references.json").read_text())
    assert refs[A]["return"] == 0.5 and refs[B]["return"] == 0.4 and refs[C]["return"] == 0.0
    # a run that gave up for not learning keeps what is held, whatever its final return
    _collection(tmp_path / "w4", {B: _entry(B, 0.2, initial_return=0.1, ended="no learning by 300 steps")})
    assert packed.merge(SET, tmp_path / "w4", into)["kept (the new run did not learn)"] == [B]
    # a run that learned replaces what is held
    _collection(tmp_path / "w3", {A: _entry(A, 0.7, initial_return=0.0)})
    assert packed.merge(SET, tmp_path / "w3", into)["merged"] == [A]
    assert json.loads((into / "references.json").read_text())[A]["return"] == 0.7



def test_merge_can_bundle_a_cut_of_each_vault(tmp_path):
    """``--max-episodes``: the merged vaults hold each dataset's first episodes (a prefix of the collected arrays),
    marked as a cut; references and curves merge as without it."""
    from mtmarl.data import vault as V

    _collection(tmp_path / "w", {A: _entry(A, 0.5)})
    into = tmp_path / "acc"
    got = packed.main(["merge", SET, str(tmp_path / "w"), "--into", str(into), "--max-episodes", "2"])
    assert got["merged"] == [A]
    src, dst = (root / "lbf" / "grid=6,agents=2,food=1.vlt" for root in (tmp_path / "w", into))
    full, cut = V.read_vault(src), V.read_vault(dst)
    assert len(V.episode_returns(full)) == 3 and len(V.episode_returns(cut)) == 2
    np.testing.assert_array_equal(cut["observations"], full["observations"][:, :cut["observations"].shape[1]])
    assert V.read_metadata(dst)["datasets"]["default"]["collector"]["cut"]["of_episodes"] == 3
    assert json.loads((into / "references.json").read_text()) == {A: _entry(A, 0.5)}
