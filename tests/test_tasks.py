"""Task sets, splits, nested subsets, ad-hoc tasks and ``python -m mtmarl.tasks``.

Building a task compiles parts of Jumanji's generator (about a second each) and
every task needs its own reset+step program (about two more seconds of compile),
so each task is built once per session (``TaskSpec.build`` is cached). The fast
suite traces every task's padded reset+step and runs the extreme tasks of each
set (most/fewest agents, largest/smallest property, boolean options); running
all 52 tasks is ``-m slow``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtmarl import tasks
from mtmarl.envs import NOOP, ObsLayout
from mtmarl.errors import UserInputError
from mtmarl.tasks import TaskSet, TaskSpec

# set -> (train, test) counts
SETS = {"rware_15": (15, 8), "lbf_5": (5, 6), "connector_10": (10, 8)}  # the Jumanji sets
ALL_SETS = {**SETS, "smax_marine_hard": (3, 9), "smax_stalker_zealot": (3, 10),
            "smax_m3_easy": (4, 1)}  # SMAX: tests/test_smax.py
ENVS = {"rware", "lbf", "connector"}
MAX_AGENTS = 12
# Each reset+step program runs once on one key, so compile time is all that matters.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
if jax.default_backend() == "cpu":
    FAST_COMPILE["xla_cpu_use_fusion_emitters"] = False  # halves CPU compile time here


@functools.cache
def task_set(name: str) -> TaskSet:
    return tasks.load(name)


@pytest.fixture(scope="session")
def described() -> dict[str, dict]:
    """``describe()`` of every set; builds each of the 52 tasks exactly once."""
    return {name: task_set(name).describe() for name in SETS}


def _reset_step(env):
    def reset_step(key):
        state, first = env.reset(key)
        _, second = env.step(state, jnp.full((env.num_agents,), NOOP, jnp.int32))
        return first, second
    return reset_step


@functools.cache
def _run(name: str, task: str):
    """(reset TimeStep, TimeStep after one NOOP step) of one task of ``name``, padded."""
    env = task_set(name).padded(_spec(name, task))
    fn = jax.jit(_reset_step(env), compiler_options=FAST_COMPILE)
    return jax.device_get(fn(jax.random.PRNGKey(0)))


def _extremes(desc: dict) -> list[str]:
    """Tasks most likely to break: the ends of both figure axes and boolean options."""
    rows = desc["train"] + desc["test"]
    picks = [max(rows, key=lambda r: r["agents"]), min(rows, key=lambda r: r["agents"]),
             max(rows, key=lambda r: r["property"]), min(rows, key=lambda r: r["property"]),
             max(rows, key=lambda r: (r["agents"], r["property"]))]
    picks += [r for r in rows if any(isinstance(v, bool) and v for v in r["params"].values())]
    return list(dict.fromkeys(r["name"] for r in picks))


def _tasks(desc: dict) -> list[dict]:
    return desc["train"] + desc["test"]


# -- sizes and splits -------------------------------------------------------------------

def test_available_sets():
    assert tasks.available_sets() == sorted(ALL_SETS)


@pytest.mark.parametrize("name", SETS)
def test_counts(name):
    ts = task_set(name)
    assert (len(ts.train), len(ts.test)) == SETS[name]
    assert ts.name == name and ts.env in ENVS


def test_total_counts():
    assert sum(len(task_set(n).train) for n in SETS) == 30
    assert sum(len(task_set(n).test) for n in SETS) == 22


@pytest.mark.parametrize("name", SETS)
def test_train_test_disjoint_and_names_unique(name):
    ts = task_set(name)
    names = [t.name for t in ts.train + ts.test]
    adhoc = [t.adhoc for t in ts.train + ts.test]
    assert len(set(names)) == len(names), "task names repeat"
    assert len(set(adhoc)) == len(adhoc), "the same task is listed twice"
    assert not {t.name for t in ts.train} & {t.name for t in ts.test}
    assert not {t.adhoc for t in ts.train} & {t.adhoc for t in ts.test}
    assert all(t.label for t in ts.train + ts.test), "every configured task has a name"


def test_taskset_rejects_overlapping_splits():
    a = TaskSpec.create("rware", dict(rows=1, cols=3, height=8, agents=2), "a")
    b = TaskSpec.create("rware", dict(rows=1, cols=3, height=8, agents=2), "b")  # same task, new name
    with pytest.raises(UserInputError, match="share"):
        TaskSet("x", "rware", (a,), (b,))
    with pytest.raises(UserInputError, match="no training tasks"):
        TaskSet("x", "rware", (), (a,))


@pytest.mark.parametrize("name", SETS)
def test_every_task_builds_as_configured(name, described):
    ts, desc = task_set(name), described[name]
    assert [t["name"] for t in desc["train"]] == [t.name for t in ts.train]
    assert [t["name"] for t in desc["test"]] == [t.name for t in ts.test]
    for spec, row in zip(ts.train + ts.test, _tasks(desc)):
        params = dict(spec.params)
        assert row["agents"] == params["agents"] == spec.build().num_agents
        assert row["agents"] <= MAX_AGENTS
        assert row["task"] == spec.adhoc and row["env"] == ts.env
        assert row["obs_dim"] > 0 and row["actions"] > 1 and row["horizon"] > 0


@pytest.mark.parametrize("name", SETS)
def test_padding_covers_train_and_test(name, described):
    ts, rows = task_set(name), _tasks(described[name])
    assert ts.padding == described[name]["padding"] == {
        "num_agents": max(dict(t.params)["agents"] for t in ts.train + ts.test),
        "obs_dim": max(r["obs_dim"] for r in rows),
        "state_dim": max(r["state_dim"] for r in rows)}
    assert ts.padding["num_agents"] <= MAX_AGENTS


def _spec(name: str, task: str) -> TaskSpec:
    ts = task_set(name)
    return next(t for t in ts.train + ts.test if t.name == task)


def _check_steps(name: str, task: str, first, second) -> None:
    pad, n = task_set(name).padding, _spec(name, task).build().num_agents
    for t, ts_ in enumerate((first, second)):
        obs, where = ts_.observation, f"{task} after {t} steps"
        assert obs.agents_view.shape == (pad["num_agents"], pad["obs_dim"]), where
        assert ts_.state.shape == (pad["state_dim"],), where
        assert np.isfinite(obs.agents_view).all() and np.isfinite(ts_.reward), where
        assert (obs.active == (np.arange(pad["num_agents"]) < n)).all(), where
        assert obs.action_mask[:, NOOP].all(), where
        assert not obs.agents_view[n:].any(), where
        assert int(obs.step_count) == t, where
        assert not ts_.done, where


@pytest.mark.parametrize("name", SETS)
def test_every_task_traces_padded(name):
    """Every task's padded reset + NOOP step has the set's shapes (traced, not compiled)."""
    ts = task_set(name)
    pad = ts.padding
    for spec in ts.train + ts.test:
        env = ts.padded(spec)
        first, second = jax.eval_shape(_reset_step(env), jax.random.PRNGKey(0))
        for ts_ in (first, second):
            assert ts_.observation.agents_view.shape == (pad["num_agents"], pad["obs_dim"]), spec.name
            assert ts_.observation.action_mask.shape == (pad["num_agents"], env.num_actions), spec.name
            assert ts_.observation.active.shape == (pad["num_agents"],), spec.name
            assert ts_.state.shape == (pad["state_dim"],), spec.name
            assert ts_.reward.shape == ts_.terminal.shape == ts_.truncated.shape == (), spec.name


@pytest.mark.parametrize("name", SETS)
def test_extreme_tasks_reset_and_step(name, described):
    picked = _extremes(described[name])
    assert len(picked) >= 2
    for task in picked:
        _check_steps(name, task, *_run(name, task))


@pytest.mark.slow
@pytest.mark.parametrize("name", SETS)
def test_every_task_resets_and_steps(name, described):
    ts = task_set(name)
    for spec in ts.train + ts.test:
        _check_steps(name, spec.name, *_run(name, spec.name))


def _ranges(rows: list[dict]) -> tuple[range, range]:
    agents, prop = [r["agents"] for r in rows], [r["property"] for r in rows]
    return range(min(agents), max(agents) + 1), range(min(prop), max(prop) + 1)


@pytest.mark.parametrize("name", SETS)
def test_test_tasks_extrapolate_and_interpolate(name, described):
    """The multi-task Oryx paper's Fig. 3: held-out tasks both inside and beyond the training range."""
    train, test = described[name]["train"], described[name]["test"]
    agents, prop = _ranges(train)
    more_agents = [t["name"] for t in test if t["agents"] > agents[-1]]
    beyond = [t["name"] for t in test if t["property"] > prop[-1]]  # shelves / level / grid
    inside = [t["name"] for t in test if t["agents"] in agents and t["property"] in prop]
    assert more_agents, "no test task has more agents than every train task"
    assert beyond, "no test task lies beyond the training range of the figure property"
    assert inside, "no interpolation test task"


def test_figure_property_is_the_one_each_env_varies(described):
    rows = {t["name"]: t for d in described.values() for t in _tasks(d)}
    # RWARE shelves grow with the layout; LBF reports the max level; Connector the grid.
    assert rows["large-8ag"]["property"] > rows["medium-8ag"]["property"] > rows["small-4ag"]["property"]
    assert rows["tall-4ag"]["property"] > rows["tiny-4ag"]["property"]
    assert rows["12x12-4p-3f-l4"]["property"] == 4 and rows["8x8-2p-2f"]["property"] == 2
    assert rows["15x15-10a"]["property"] == 15


# -- subsets -----------------------------------------------------------------------------

def test_nested_subsets():
    full = task_set("rware_15")
    for k in range(1, 16):
        sub = tasks.load("rware_15", num_train=k)
        assert sub.train == full.train[:k]
        assert [t.name for t in sub.train] == [t.name for t in full.train[:k]]
        assert sub.test == full.test
        assert sub.name == ("rware_15" if k == 15 else f"rware_15[{k}]")


@pytest.mark.parametrize("k", [0, 16, -1])
def test_num_train_out_of_range(k):
    with pytest.raises(UserInputError, match=f"num_train={k}"):
        tasks.load("rware_15", num_train=k)


@pytest.mark.parametrize("single", ["tiny-2ag", "rware:rows=1,cols=3,height=8,agents=2"])
def test_single_task(single):
    full = task_set("rware_15")
    one = full.subset(single=single)
    assert [t.name for t in one.train] == ["tiny-2ag"]
    assert one.test == full.test and [t.name for t in one.test] == [t.name for t in full.test]


def test_single_task_from_config_and_unknown_single():
    import yaml

    cfg = yaml.safe_load((tasks.TASKS_DIR / "rware_15.yaml").read_text()) | {"single": "tiny-2ag"}
    assert [t.name for t in tasks.from_config(cfg).train] == ["tiny-2ag"]
    with pytest.raises(UserInputError, match="no training task 'tiny-9ag'.*tiny-2ag"):
        task_set("rware_15").subset(single="tiny-9ag")
    with pytest.raises(UserInputError, match="no training task 'small-3ag'"):  # a test task
        task_set("rware_15").subset(single="small-3ag")


# -- ad-hoc tasks ------------------------------------------------------------------------

@pytest.mark.parametrize("name", SETS)
def test_adhoc_round_trip(name, described):
    ts = task_set(name)
    for spec in ts.train + ts.test:
        parsed = TaskSpec.parse(spec.adhoc)
        assert parsed == spec and parsed.adhoc == spec.adhoc
        for (k, v), (k2, v2) in zip(parsed.params, spec.params):
            assert k == k2 and type(v) is type(v2), f"{spec.name}: {k}={v2!r} parsed as {v!r}"


def test_adhoc_bool_and_string():
    coop = next(t for t in task_set("lbf_5").test if t.name == "8x8-2p-2f-coop")
    assert "coop=true" in coop.adhoc
    assert dict(TaskSpec.parse(coop.adhoc).params)["coop"] is True
    text = "rware:rows=2,cols=5,height=8,agents=6"
    assert TaskSpec.parse(text).adhoc == text
    assert TaskSpec.parse(text).name == text  # unnamed: its own string
    one = tasks.load(text)
    assert one.env == "rware" and one.train == (TaskSpec.parse(text),) and one.test == ()


@pytest.mark.parametrize("text, wants", [
    ("rware:rows=2,colz=5,height=8,agents=6", ["'colz'", "cols"]),
    ("rware:rows=2,cols5,height=8,agents=6", ["'cols5'"]),
    ("rware:rows=2,cols=,height=8,agents=6", ["'cols='"]),
    ("rware:rows=2,cols=5,rows=3,height=8,agents=6", ["'rows' given twice"]),
    ("foo:x=1", ["'foo'", "connector", "lbf", "rware"]),
    ("rware", ["env:key=value"]),
    ("rware:", ["env:key=value"]),
    ("rware:rows=2,cols=5,height=8", ["agents"]),
    ("rware:rows=1,cols=4,height=8,agents=2", ["cols=4", "odd"]),
    ("lbf:grid=100000,agents=2,food=1", ["grid='100000'", "<= 1,024"]),
    ("connector:grid=5,agents=2,horizon=10000000000", ["horizon='10000000000'", "<= 2,147,483,647"]),
])
def test_adhoc_errors_name_the_problem(text, wants):
    with pytest.raises(UserInputError) as err:
        TaskSpec.parse(text)
    for want in wants:
        assert want in str(err.value), f"{want!r} not in {err.value}"


def test_unknown_set_lists_valid_sets():
    with pytest.raises(UserInputError) as err:
        tasks.load("rware_16")
    assert "'rware_16'" in str(err.value)
    for name in SETS:
        assert name in str(err.value)


# -- command line ------------------------------------------------------------------------

def test_cli_lists_sets(capsys):
    assert tasks.main([]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == sorted(ALL_SETS)
    for line in lines:
        name = line.split()[0]
        assert f"{ALL_SETS[name][0]} train" in " ".join(line.split())
        assert f"{ALL_SETS[name][1]} test" in " ".join(line.split())
    assert tasks.main(["--json"]) == 0
    assert json.loads(capsys.readouterr().out) == sorted(ALL_SETS)


def test_cli_json(capsys, described):
    assert tasks.main(["lbf_5", "--json"]) == 0
    desc = json.loads(capsys.readouterr().out)
    assert {"name", "train", "test"} <= set(desc) and desc["name"] == "lbf_5"
    assert (len(desc["train"]), len(desc["test"])) == SETS["lbf_5"]
    for split in ("train", "test"):
        for task in desc[split]:
            assert {"name", "agents", "layout", "obs_dim", "actions", "horizon", "split"} <= set(task)
            assert task["split"] == split
    assert desc == json.loads(json.dumps(described["lbf_5"]))

    assert tasks.main(["lbf_5", "--json", "--num-train", "2"]) == 0
    assert [t["name"] for t in json.loads(capsys.readouterr().out)["train"]] == \
        [t["name"] for t in desc["train"][:2]]


def test_cli_json_stdout_is_json_only_when_jaxmarl_prints_on_import():
    """A new process (JaxMARL prints on its first import, and resets ``sys.stdout`` to the process's own
    midway): what a script reads from stdout parses."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-m", "mtmarl.tasks", "smax_marine_hard", "--json"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    desc = json.loads(proc.stdout)
    assert desc["name"] == "smax_marine_hard" and [t["name"] for t in desc["train"]] == ["3m", "5m_vs_6m", "9m_vs_10m"]


def test_cli_unknown_set(capsys):
    assert tasks.main(["nope"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("error: ") and "'nope'" in err
    for name in SETS:
        assert name in err


# -- figure --------------------------------------------------------------------------------

def test_plot_task_splits(tmp_path, described):
    from mtmarl.experiments import plot_task_splits

    assert plot_task_splits.main(["--out", str(tmp_path)]) == 0
    png = tmp_path / "task_splits.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    data = json.loads((tmp_path / "task_splits.json").read_text())
    assert set(data) == set(SETS)
    rows = [t for d in data.values() for t in d["tasks"]]
    assert len(rows) == 52
    assert sum(t["split"] == "train" for t in rows) == 30
    assert sum(t["split"] == "test" for t in rows) == 22
    for name, d in data.items():
        expected = {(t["name"], t["split"], t["agents"], t["property"]) for t in _tasks(described[name])}
        assert {(t["name"], t["split"], t["agents"], t["property"]) for t in d["tasks"]} == expected


def test_evaluation_envs_keep_the_sets_layout_with_agents_rounded_up_to_a_power_of_two():
    """Evaluation plays a task with the set's observation/action/state layout but only as many agent slots as
    its agents rounded up to a power of two (capped at the set's count): rware_15's 2..12 agents give groups
    2, 4, 8, 12, and a 6-agent task is played with 8 slots, 2 of them padded and inactive."""
    task_set = tasks.load("rware_15")
    specs = task_set.train + task_set.test
    played = [task_set.evaluation_env(s) for s in specs]
    full = task_set.padded(specs[0])
    for env in played:
        n = env.inner.num_agents
        assert env.num_agents == min(next(p for p in (1, 2, 4, 8, 16) if p >= n), full.num_agents) >= n
        assert (env.obs_dim, env.state_dim, env.num_actions) == (full.obs_dim, full.state_dim, full.num_actions)
    assert sorted({e.num_agents for e in played}) == [2, 4, 8, 12]
    wider = dataclasses.replace(full.spec, obs=ObsLayout.flat(full.obs_dim + 3))  # a trained net's layout
    assert task_set.evaluation_env(specs[0], wider).obs_dim == full.obs_dim + 3
