"""Experiment machinery: configs compose for every script and preset, aggregation numerics, the runner's
resumption and crash isolation, and a driver end to end (stand-in trainer fast; real trainer `slow`)."""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from mtmarl import tasks
from mtmarl.errors import UserInputError
from mtmarl.experiments import runner
from mtmarl.experiments.analysis import aggregate, score_matrix
from mtmarl.experiments.config import EXPERIMENTS, PRESETS, compose_experiment, compose_train
from mtmarl.experiments.driver import check_runs, main
from mtmarl.experiments.runner import Run, is_finished, run_matrix, train_command
from mtmarl.experiments.stats import iqm, mean_stderr, percent_change, stratified_bootstrap, summarise_matrix
from mtmarl.training.data import take_fraction

from helpers import experiment_module

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ configs

@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_script_config_composes_for_every_preset(name, preset):
    if (preset == "cpu" and name != "learning") or (preset == "default" and name not in
                                                     ("learning", "table1", "task_diversity", "tuning")):
        pytest.skip(f"no '{preset}' preset (make-train learner) for {name}")
    cfg = compose_experiment(name, [f"budget={preset}"])
    assert cfg.name == name and cfg.budget.name == preset
    runs = experiment_module(name).EXPERIMENT.build(cfg)
    assert runs and {r.seed for r in runs} == set(cfg.budget.seeds)
    assert len({(r.overrides, r.seed) for r in runs}) == len(runs)  # no run twice
    check_runs(cfg, runs[:1] + runs[-1:])  # mtmarl.train composes these runs' configs
    train = compose_train(runs[0].overrides)
    assert train.eval.episodes == {"quick": 32, "default": 64, "cpu": 64, "paper": 320, "gpu": 64}[preset]
    if preset == "gpu":  # each run 3 seeds side by side, at og-marl's update count, each seed's best update
        assert train.training.population == 3 and train.training.eval_every == 5000
        assert list(train.training.eval_splits) == ["train"]
        assert train.training.updates == 100000 and list(cfg.budget.seeds) == [0]
    if preset == "cpu":  # 4x the default learner's updates, each run a learning curve
        assert train.training.updates == 6000 and train.training.eval_every == 500
        assert train.training.batch_size == compose_train(["+algo=mt_oryx", "+tasks=lbf_5"]).training.batch_size


def test_learning_experiment_runs_chosen_variants_on_every_set():
    cfg = compose_experiment("learning", ["task_sets=[lbf_5,rware_15]", "only=[oryx,bc]"])
    runs = experiment_module("learning").EXPERIMENT.build(cfg)
    assert [(r.key["task_set"], r.key["variant"]) for r in runs] == [
        ("lbf_5", "oryx"), ("lbf_5", "bc"), ("rware_15", "oryx"), ("rware_15", "bc")]
    train = compose_train(runs[0].overrides)
    assert train.training.updates == 1500 and train.training.eval_every == 0 and train.algo.name == "mt_oryx"
    lam = compose_train(experiment_module("learning").EXPERIMENT.build(
        compose_experiment("learning", ["only=[oryx_lambda]"]))[0].overrides)
    assert lam.algo.td_lambda == 0.8
    with pytest.raises(Exception, match="names no variant"):
        experiment_module("learning").EXPERIMENT.build(compose_experiment("learning", ["only=[nope]"]))


def test_presets_differ_as_documented():
    quick, paper = (compose_experiment("task_diversity", [f"budget={p}"]) for p in ("quick", "paper"))
    assert list(paper.budget.seeds) == [0, 1, 2] and list(quick.budget.seeds) == [0]
    assert list(paper.k.rware_15) == list(range(1, 16)) and list(quick.k.rware_15) == [1, 15]
    assert compose_train(experiment_module("task_diversity").build(paper)[0].overrides).training.updates == 200000
    sizes = experiment_module("model_size").build(compose_experiment("model_size", ["quick"]))
    cfg = compose_train(sizes[-1].overrides)
    assert cfg.network.embed_dim == 256 and cfg.network.n_heads == 4 and cfg.training.updates == 1000
    assert cfg.network.n_blocks == 1 and cfg.training.batch_size == 16  # 'base' net, quick learner batch
    paper_sizes = experiment_module("model_size").build(compose_experiment("model_size", ["paper"]))
    distinct = {r.overrides: r for r in paper_sizes}.values()  # seeds share their config: compose each once
    assert {compose_train(r.overrides).network.embed_dim for r in distinct} == {64, 128, 256, 512, 768}


def test_one_preset_vocabulary_each_name_meaning_one_learner():
    """``budget=<p>`` (experiments) trains the learner of ``training=<p>`` wherever both exist; the collection
    recipes are their own group (``+recipe=``), share no name with the other two, and ``mtmarl.collect`` refuses
    ``+budget=<recipe>`` as an unknown key (*budget* names only the experiments' group)."""
    from omegaconf import OmegaConf

    from mtmarl.config_check import check_keys
    from mtmarl.errors import UserInputError
    from mtmarl.experiments.config import _compose
    from mtmarl.runtime import CONFIG_DIR

    def names(group):
        return {p.stem for p in (CONFIG_DIR / group).glob("*.yaml")}

    training, recipes = names("training"), names("recipe")
    assert names("experiments/budget") == set(PRESETS) and not (CONFIG_DIR / "budget").exists()
    assert not recipes & (training | set(PRESETS))
    for preset in sorted(training & set(PRESETS)):
        cfg = compose_experiment("learning", [f"budget={preset}"])
        ran = compose_train([*cfg.budget.train, "+algo=mt_oryx", "+tasks=lbf_5"])
        alone = compose_train([f"training={preset}", "+algo=mt_oryx", "+tasks=lbf_5"])
        assert ran.network == alone.network, preset
        for key in ("batch_size", "seq_len", "updates_per_call"):
            assert ran.training[key] == alone.training[key], (preset, key)
    for recipe in sorted(recipes):  # each recipe composes with mtmarl.collect's config and sets its env steps
        assert _compose(CONFIG_DIR, "collect", [f"+recipe={recipe}", "+tasks=lbf_5"]).collect.env_budget
    # Hydra adds +budget=demo as a plain key; mtmarl.collect's first check (config_check.check_keys) refuses it
    old = OmegaConf.to_container(_compose(CONFIG_DIR, "collect", ["+budget=demo", "+tasks=lbf_5"]), resolve=True)
    with pytest.raises(UserInputError, match="unknown config key 'budget'"):
        check_keys(old, "collect")


def test_slurm_launcher_composes():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the optional extra mtmarl[slurm]")
    run = Run.make({}, ["training=quick", "+algo=mt_oryx", "+tasks=rware_15"], 1)
    cmd = train_command(run, Path("/tmp/sweep/seed_1"), "slurm", ["hydra.launcher.timeout_min=30"])
    assert cmd[1:4] == ["-m", "mtmarl.train", "--multirun"]
    cfg = compose_train(cmd[4:], hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher") and cfg.hydra.launcher.timeout_min == 30
    assert cfg.hydra.sweep.dir == "/tmp/sweep/seed_1" and cfg.seed == 1
    experiment = compose_experiment("model_size", ["launcher=slurm", 'slurm=["hydra.launcher.partition=gpu"]'])
    check_runs(experiment, experiment_module("model_size").build(experiment)[:1])


def test_shared_runs_land_in_one_directory():
    """Table 1's runs are task_diversity's k = M runs; equal overrides give equal directories."""
    td = experiment_module("task_diversity").build(compose_experiment("task_diversity", ["quick"]))
    t1 = experiment_module("table1").build(compose_experiment("table1", ["quick"]))
    full = {r.directory("res") for r in td if r.key["k"] > 1}
    assert {r.directory("res") for r in t1} == full and len(full) == 9
    # at the default budget they are also the learning experiment's oryx / cql / bc variants
    t1 = experiment_module("table1").build(compose_experiment("table1", ["default"]))
    learning = experiment_module("learning").build(compose_experiment(
        "learning", ["task_sets=[rware_15,lbf_5,connector_10]", "only=[oryx,cql,bc]"]))
    assert {r.directory("res") for r in t1} == {r.directory("res") for r in learning} and len(t1) == 9
    assert Run.make({}, ["a=1", "b=2"], 0).config_id != Run.make({}, ["b=2", "a=1"], 0).config_id


# ------------------------------------------------------------------ statistics

def test_iqm_and_mean_stderr_against_hand_computed_values():
    assert iqm(np.arange(8)) == 3.5                      # cut 2 from each end: mean(2, 3, 4, 5)
    assert iqm([100.0, 1, 2, 3, 4]) == 3.0               # cut 1 from each end: mean(2, 3, 4)
    assert iqm(np.arange(12).reshape(3, 4)) == 5.5       # over all cells
    scipy_stats = pytest.importorskip("scipy.stats")
    x = np.random.default_rng(0).normal(size=37)
    assert math.isclose(iqm(x), scipy_stats.trim_mean(x, 0.25), rel_tol=1e-12)
    mean, se = mean_stderr([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and math.isclose(se, math.sqrt(5 / 3) / 2, rel_tol=1e-12)
    assert math.isnan(mean_stderr([3.0])[1])
    assert percent_change(3.0, 2.0) == 50.0 and percent_change(1.0, -2.0) == 150.0
    assert math.isnan(percent_change(1.0, 0.0))


def test_summary_of_a_score_matrix():
    m = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0]])     # 2 seeds x 3 tasks
    s = summarise_matrix(m, reps=500)
    assert s["mean"] == 3.0 and s["stderr_over"] == "seeds" and (s["runs"], s["tasks"]) == (2, 3)
    assert math.isclose(s["stderr"], np.std([2.0, 4.0], ddof=1) / math.sqrt(2))
    one = summarise_matrix(m[:1], reps=500)               # one seed: se and CI over tasks
    assert one["stderr_over"] == "tasks" and math.isclose(one["stderr"], 1 / math.sqrt(3))
    assert one["iqm"] == 2.0 and one["mean_lo"] < 2.0 < one["mean_hi"]
    # the mean of 3 resampled tasks out of {1, 2, 3} lies in [1, 3] and reaches both ends
    assert 1.0 <= one["mean_lo"] <= 1.5 and 2.5 <= one["mean_hi"] <= 3.0
    same = summarise_matrix(np.full((1, 4), 0.7), reps=50)  # identical tasks: no width
    assert same["iqm_lo"] == same["iqm_hi"] == 0.7


def test_stratified_bootstrap_contains_the_estimate_and_shrinks_with_more_runs():
    rng = np.random.default_rng(1)
    offsets = np.array([0.0, 1.0, 5.0, 10.0])             # very different tasks
    few = offsets + rng.normal(size=(3, 4))
    many = offsets + rng.normal(size=(60, 4))
    widths = []
    for m in (few, many):
        for stat, point in (("iqm", iqm(m)), ("mean", m.mean())):
            lo, hi = stratified_bootstrap(m, stat, reps=2000)
            assert lo <= point <= hi
        lo, hi = stratified_bootstrap(m, "mean", reps=2000)
        widths.append(hi - lo)
    assert widths[1] < 0.5 * widths[0]
    # resampling is within each task: task-to-task differences alone give no width
    lo, hi = stratified_bootstrap(np.tile(offsets, (5, 1)), "iqm", reps=200)
    assert lo == hi == iqm(offsets)
    assert stratified_bootstrap(few, "iqm", seed=3) == stratified_bootstrap(few, "iqm", seed=3)


def test_aggregate_groups_and_drops_incomplete_seeds():
    rec = lambda seed, task, split, value, algo="a": {  # noqa: E731
        "algo": algo, "seed": seed, "env": "rware", "task": task, "split": split, "return": value,
        "normalised": value / 10}
    records = [rec(0, "t1", "test", 1.0), rec(0, "t2", "test", 3.0), rec(1, "t1", "test", 2.0),
               rec(1, "t2", "test", 4.0), rec(2, "t1", "test", 9.0),  # seed 2 lacks t2: dropped
               rec(0, "t1", "test", 5.0, "b")]
    m, seeds, tasks = score_matrix([r for r in records if r["algo"] == "a"], "return")
    assert seeds == [0, 1] and tasks == ["rware/t1", "rware/t2"] and m.tolist() == [[1, 3], [2, 4]]
    rows = aggregate(records, ["algo"], reps=100)
    assert [(r["algo"], r["split"], r["metric"]) for r in rows] == [("a", "test", "normalised"),
                                                                   ("b", "test", "normalised")]
    assert math.isclose(rows[0]["mean"], 0.25) and rows[0]["seeds"] == [0, 1]
    records[0]["normalised"] = None                       # one task without reference: raw returns
    assert aggregate(records, ["algo"], reps=10)[0]["metric"] == "return"


def test_data_fraction_keeps_whole_episodes_spread_over_the_vault():
    """A fraction keeps whole episodes evenly spread (vaults are ordered by quality, so a prefix would be the
    worst data): 10 episodes of 2-3 steps, whose first step holds the episode's index."""
    lengths = [2, 3] * 5
    ends = np.cumsum(lengths)
    T = int(ends[-1])
    episode = np.repeat(np.arange(10), lengths)
    trunc = np.zeros((T, 2))
    trunc[ends - 1] = 1
    task = {"obs": episode.astype(float)[:, None, None] * np.ones((T, 2, 3)), "terminals": np.zeros((T, 2)),
            "truncations": trunc}

    def kept(f):
        out = take_fraction(task, f)
        return sorted(set(out["obs"][:, 0, 0].astype(int).tolist())), out

    assert kept(0.2)[0] == [4, 9] and kept(0.5)[0] == [1, 3, 5, 7, 9]  # every stretch gives its share
    assert kept(0.01)[0] == [0]                                         # at least one episode
    eps, out = kept(0.3)
    assert eps == [3, 6, 9]
    # whole episodes, in vault order, each still ending where it ended
    expected = np.concatenate([np.flatnonzero(episode == e) for e in eps])
    np.testing.assert_array_equal(out["obs"], task["obs"][expected])
    np.testing.assert_array_equal(np.flatnonzero(out["truncations"][:, 0]) + 1, np.cumsum([lengths[e] for e in eps]))
    assert take_fraction(task, 1.0) is task
    from mtmarl.errors import UserInputError
    with pytest.raises(UserInputError, match="data.fraction must be in"):
        take_fraction(task, 0.0)


# ------------------------------------------------------------------ runner and driver (stand-in trainer)

STAND_IN = """
import json, sys
from pathlib import Path
args = dict(a.split("=", 1) for a in sys.argv[1:])
if args.get("crash") == "yes":
    sys.exit("simulated crash")
if args.get("crash") == "kill":  # what the out-of-memory killer does
    import os, signal
    os.kill(os.getpid(), signal.SIGKILL)
run = Path(args["hydra.run.dir"]); run.mkdir(parents=True, exist_ok=True)
dim, seed = int(args.get("network.embed_dim", 1)), int(args["seed"])
smax = args.get("+tasks", "").startswith("smax")  # an env with wins: rows carry a win rate
lr = float(args.get("algo.lr", 0.0))  # shifts the return, so a tuning grid over algo.lr has a best point
rows = [{"name": f"t{i}", "env": "smax" if smax else "rware", "split": split, "mean_return": dim / 64 + i + seed + lr,
         "normalised_return": None, "win_rate": (i + seed) / 4 if smax else None}
        for split in ("train", "test") for i in range(3)]
(run / "summary.json").write_text(json.dumps(rows))
(run / "results.json").write_text("{}")
(run / "run.json").write_text("{}")
with open(run.parent.parent / "calls.txt", "a") as f:
    f.write(run.parent.name + "\\n")
"""


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    """Replace `python -m mtmarl.train` by a script that writes summary files from its overrides."""
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    real = runner.train_command

    def command(run, run_dir, launcher="local", slurm=(), python=None):
        return [sys.executable, str(script), *real(run, run_dir, launcher, slurm, python)[3:]]
    monkeypatch.setattr(runner, "train_command", command)
    return tmp_path


def test_a_run_killed_by_sigkill_is_reported_as_a_likely_out_of_memory_kill(stand_in):
    out = run_matrix([Run.make({"x": 1}, ["crash=kill"], 0), Run.make({"x": 2}, ["crash=no"], 0)],
                     stand_in / "res", progress=False)
    assert [o.status for o in out] == ["failed", "finished"]
    assert "exit code -9 (killed by SIGKILL" in out[0].error and "out-of-memory" in out[0].error


def test_runner_skips_finished_runs_and_survives_a_crash(stand_in):
    res = stand_in / "res"
    runs = [Run.make({"x": 1}, ["crash=no"], 0), Run.make({"x": 2}, ["crash=yes"], 0),
            Run.make({"x": 3}, ["crash=no", "network.embed_dim=64"], 1)]
    out = run_matrix(runs, res, manifest=res / "m.json", progress=False)
    assert [o.status for o in out] == ["finished", "failed", "finished"]
    assert "simulated crash" in out[1].error and "exit code 1" in out[1].error
    manifest = json.loads((res / "m.json").read_text())
    assert [m["status"] for m in manifest] == ["finished", "failed", "finished"]
    again = run_matrix(runs, res, progress=False, jobs=2)
    assert [o.status for o in again] == ["skipped", "failed", "skipped"]
    calls = (res / "runs" / "calls.txt").read_text().split()
    assert len(calls) == 2 and is_finished(runs[2].directory(res))


def test_a_finished_run_trained_with_another_config_is_trained_again(stand_in):
    """The cache is keyed by overrides; a changed default (here algo.lr in the stored config) must not
    let an old result stand for the new config: the run is moved aside and trained again."""
    import yaml

    from mtmarl.experiments.config import compose_train, plain

    res = stand_in / "res"
    run = Run.make({"x": 1}, ["+algo=mt_bc_sable", "+tasks=lbf_5"], 0)
    assert [o.status for o in run_matrix([run], res, progress=False)] == ["finished"]
    run_dir = run.directory(res)
    cfg = plain(compose_train([*run.overrides, "seed=0"]))
    (run_dir / "config.yaml").write_text(yaml.safe_dump({**cfg, "resume": True, "logger": {"x": 1}}))
    assert runner.stale_keys(run, run_dir) == []  # logging / resume settings do not define a run
    assert [o.status for o in run_matrix([run], res, progress=False)] == ["skipped"]
    cfg["algo"]["lr"] = cfg["algo"]["lr"] * 3
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert runner.stale_keys(run, run_dir) == ["algo.lr"]
    assert [o.status for o in run_matrix([run], res, progress=False)] == ["finished"]
    aside = run_dir.with_name("seed_0.stale-1")
    assert yaml.safe_load((aside / "config.yaml").read_text())["algo"]["lr"] == cfg["algo"]["lr"]
    assert is_finished(run_dir) and not (run_dir / "config.yaml").exists()  # the stand-in wrote a fresh run


def test_a_finished_run_trained_on_other_data_is_trained_again(stand_in, tmp_path):
    """Re-recorded vaults (or new references) leave every config unchanged: the fingerprint in run.json
    tells the runner the old result does not stand for today's data."""
    import shutil

    from mtmarl.data.vault import vault_path
    from mtmarl.evaluation.references import load_references
    from mtmarl.experiments.config import plain
    from mtmarl.training.data import data_fingerprint

    root = tmp_path / "data"  # metadata and references are all the fingerprint reads
    lbf = tasks.load("lbf_5")
    for spec in lbf.train:
        dst = vault_path(root, spec)
        dst.mkdir(parents=True)
        shutil.copy(vault_path(REPO / "vault_data", spec) / "mtmarl.json", dst / "mtmarl.json")
    shutil.copy(REPO / "vault_data" / "references.json", root / "references.json")
    refs = load_references(root / "references.json")
    before = data_fingerprint(lbf, root, None, refs)
    assert before == data_fingerprint(lbf, root, None, dict(refs))
    assert before != data_fingerprint(lbf, root, "expert", refs)
    assert before != data_fingerprint(lbf, root, None, {**refs, lbf.test[0].adhoc: 9.0})  # a test task's reference

    res = stand_in / "res"
    run = Run.make({"x": 1}, ["+algo=mt_bc_sable", "+tasks=lbf_5", f"data.root={root}"], 0)
    assert [o.status for o in run_matrix([run], res, progress=False)] == ["finished"]
    run_dir = run.directory(res)
    (run_dir / "config.yaml").write_text(yaml_dump(plain(compose_train([*run.overrides, "seed=0"]))))
    (run_dir / "run.json").write_text(json.dumps({"data": before}))
    assert runner.stale_keys(run, run_dir) == []
    meta = vault_path(root, lbf.train[2]) / "mtmarl.json"
    meta.write_text(meta.read_text().replace('"sha256"', '"sha256" ', 1))  # as if re-recorded
    assert data_fingerprint(lbf, root, None, refs) != before
    assert runner.stale_keys(run, run_dir) == ["data (vaults or references)"]
    assert [o.status for o in run_matrix([run], res, progress=False)] == ["finished"]
    assert json.loads((run_dir.with_name("seed_0.stale-1") / "run.json").read_text()) == {"data": before}


def test_learning_curves_average_periodic_evaluations_over_seeds(tmp_path):
    from mtmarl.experiments.analysis import learning_curves, updates_to_fraction

    curves = {0: [(500, 0.2, 0.1), (1000, 0.6, 0.5)], 1: [(500, 0.4, 0.3), (1000, 0.8, 0.9)]}
    runs = []
    for seed, points in curves.items():
        run = Run.make({"variant": "oryx"}, ["+algo=mt_oryx"], seed)
        d = run.directory(tmp_path)
        d.mkdir(parents=True)
        for name in runner.FINISHED_FILES:
            (d / name).write_text("{}")
        (d / "config.yaml").write_text(yaml_dump({"training": {"batch_size": 32, "seq_len": None},
                                                   "algo": {"batch_size": 64, "seq_len": 20}}))
        lines = [{"step": 25, "train/loss": 1.0}]  # training records carry no evaluation
        lines += [{"step": u, "eval/train_normalised": tr, "eval/test_normalised": te} for u, tr, te in points]
        (d / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
        runs.append(run)
    runs.append(Run.make({"variant": "bc"}, ["+algo=mt_bc_sable"], 0))  # not finished: no curve
    rows = learning_curves(runs, tmp_path)
    test = sorted((r for r in rows if r["split"] == "test"), key=lambda r: r["updates"])
    assert [(r["updates"], r["samples"], r["seeds"]) for r in test] == [(500, 500 * 32 * 20, 2), (1000, 1000 * 32 * 20, 2)]
    assert test[0]["mean"] == pytest.approx(0.2) and test[1]["mean"] == pytest.approx(0.7)
    assert test[1]["stderr"] == pytest.approx(np.std([0.5, 0.9], ddof=1) / math.sqrt(2))
    assert {r["variant"] for r in rows} == {"oryx"} and len(rows) == 4
    assert updates_to_fraction(test) == 1000 and updates_to_fraction(test, 0.25) == 500
    assert updates_to_fraction([]) is None


def yaml_dump(tree) -> str:
    import yaml
    return yaml.safe_dump(tree)


def mini_task_set(base: Path) -> Path:
    """Hydra search path with task set 'mini' (the synthetic connector tasks of test_training)."""
    from test_training import TEST, TRAIN

    from mtmarl.tasks import TaskSpec

    conf = base / "conf" / "tasks"
    conf.mkdir(parents=True, exist_ok=True)
    item = lambda label, adhoc: {"name": label, **dict(TaskSpec.parse(adhoc).params)}  # noqa: E731
    (conf / "mini.yaml").write_text("# @package tasks\n" + json.dumps({
        "name": "mini", "env": "connector", "num_train": None, "single": None,
        "train": [item(k, v) for k, v in TRAIN.items()], "test": [item(k, v) for k, v in TEST.items()]}))
    return base / "conf"


def test_driver_end_to_end_with_stand_in_trainer(stand_in, capsys):
    res = stand_in / "results"
    search = f'"hydra.searchpath=[file://{mini_task_set(stand_in)}]"'
    argv = ["quick", f"results={res}", "tasks=mini", "embed_dims=[64,128]", "bootstrap.reps=200",
            "progress=false", f"extra=[{search}]"]
    first = main(experiment_module("model_size").EXPERIMENT, argv)
    assert [r["status"] for r in first["runs"]] == ["finished", "finished"]
    out = res / "model_size"
    for name in ("fig5b_model_size.png", "fig5b_model_size.json", "fig5b_model_size.csv", "model_size.json",
                 "model_size.csv", "model_size.md", "records.json", "runs.json", "experiment.json"):
        assert (out / name).is_file(), name
    rows = json.loads((out / "model_size.json").read_text())["rows"]
    test64 = next(r for r in rows if r["embed_dim"] == 64 and r["split"] == "test")
    assert test64["metric"] == "return" and math.isclose(test64["mean"], 2.0)   # 1 + mean(0, 1, 2)
    test128 = next(r for r in rows if r["embed_dim"] == 128 and r["split"] == "test")
    assert 0 < test64["parameters"] < test128["parameters"]  # (rware_15 at 64: 116420; the multi-task Oryx paper: ~116k)
    plotted = json.loads((out / "fig5b_model_size.json").read_text())["rows"]
    assert len(plotted) == 4 and {r["split"] for r in plotted} == {"train", "test"}
    assert "model_size" in capsys.readouterr().out
    second = main(experiment_module("model_size").EXPERIMENT, argv)
    assert [r["status"] for r in second["runs"]] == ["skipped", "skipped"]
    assert len((res / "runs" / "calls.txt").read_text().split()) == 2


@pytest.mark.parametrize("name", ["task_diversity", "smax", *(pytest.param(n, marks=pytest.mark.slow)
                                                      for n in ("ablations", "table1", "dataset_size"))])
def test_other_drivers_end_to_end_with_stand_in_trainer(stand_in, name):
    res = stand_in / "results"
    argv = ["quick", f"results={res}", "bootstrap.reps=50", "progress=false"]
    out = name
    if name == "task_diversity":  # also: `output` redirects the figures and tables, runs stay shared
        out = "td_lbf"
        argv += ["task_sets=[lbf_5]", "k.lbf_5=[1,3,5]", f"output={out}"]
    main(experiment_module(name).EXPERIMENT, argv)
    assert out == name or not (res / name).exists()
    if name == "smax":  # win rates: the stand-in's (i + seed) / 4 over tasks i = 0, 1, 2 at seed 0
        rows = json.loads((res / "smax" / "smax_long.json").read_text())["rows"]
        algos = {r["algo"] for r in rows}  # every algorithm of experiments/smax.yaml
        assert {"mt_bc_sable", "mt_oryx", "odis"} <= algos
        assert len(rows) == len(algos) * 2 * 2 * 2 and {r["metric"] for r in rows} == {"win_rate"}
        assert all(math.isclose(r["mean"], 0.25) for r in rows)
        assert "| mt_oryx |" in (res / "smax" / "smax.md").read_text()
        assert (res / "smax" / "smax_tasks.md").read_text().count("| smax_marine_hard | medium | test |") == 3
    manifest = json.loads((res / out / "experiment.json").read_text())
    if (Path(__file__).parents[1] / ".git").exists():  # a git checkout: its HEAD and whether it was changed
        assert len(manifest["commit"]) == 40 and isinstance(manifest["dirty"], bool)
    assert manifest["machine"]["cores"] >= 1 and manifest["machine"]["cpu"]
    files = manifest["files"]
    assert all(Path(f).parent == res / out for f in files)
    assert any(f.endswith(".png") for f in files) and all(Path(f).is_file() for f in files)
    for f in files:
        if f.endswith(".png"):
            assert Path(f).with_suffix(".json").is_file() and Path(f).with_suffix(".csv").is_file()


def test_tuning_grids_must_be_the_same_size_and_override_algo_keys():
    build = experiment_module("tuning").build
    runs = build(compose_experiment("tuning", ["task_sets=[lbf_5]"]))
    sizes = {a: sum(r.key["algo"] == a for r in runs) for a in ("mt_oryx", "mt_cql_sable", "mt_bc_sable")}
    assert sizes == {"mt_oryx": 4, "mt_cql_sable": 4, "mt_bc_sable": 4} and len(runs) == 12
    decay = compose_train(next(r for r in runs if r.key["config"] == "lr=0.001,lr_decay_updates=${training.updates}")
                          .overrides)
    assert decay.algo.lr == 0.001 and decay.algo.lr_decay_updates == decay.training.updates == 1500
    unequal = compose_experiment("tuning", ["~grids", "+grids={mt_oryx: {tau: [0.005, 0.05]}, mt_bc_sable: {lr: [0.001]}}"])
    with pytest.raises(UserInputError, match=r"same number of configurations.*'mt_oryx': 2, 'mt_bc_sable': 1"):
        build(unequal)


def test_tuning_driver_chooses_on_training_tasks_and_keeps_no_test_record(stand_in):
    res = stand_in / "results"
    grids = "+grids={mt_oryx: {lr: [0.001, 0.003]}, mt_bc_sable: {lr: [0.003, 0.001]}}"
    main(experiment_module("tuning").EXPERIMENT, ["quick", f"results={res}", "task_sets=[lbf_5]", "bootstrap.reps=50",
                                                  "progress=false", "~grids", grids])
    out = res / "tuning"
    records = json.loads((out / "records.json").read_text())["rows"]
    assert len(records) == 4 * 3 and {r["split"] for r in records} == {"train"}
    rows = json.loads((out / "tuning.json").read_text())["rows"]
    assert {r["split"] for r in rows} == {"train"} and len(rows) == 4
    # the stand-in's train returns at seed 0: mean over tasks 0, 1, 2, plus 1 / 64 (no embed_dim), plus algo.lr
    assert math.isclose(next(r for r in rows if r["algo"] == "mt_oryx" and r["config"] == "lr=0.001")["mean"],
                        1 + 1 / 64 + 0.001)
    chosen = json.loads((out / "choice.json").read_text())["chosen"]
    assert {(c["algo"], c["config"]) for c in chosen} == {("mt_oryx", "lr=0.003"), ("mt_bc_sable", "lr=0.003")}
    assert all(c["overrides"] == ["algo.lr=0.003"] and math.isclose(c["train_mean"], 1 + 1 / 64 + 0.003) for c in chosen)
    assert "| lbf_5 | mt_bc_sable | lr=0.003 |" in (out / "choice.md").read_text()


def test_table1_trains_each_pair_with_its_tuning_choice(tmp_path):
    choice = tmp_path / "choice.json"
    choice.write_text(json.dumps({"chosen": [
        {"task_set": "lbf_5", "algo": "mt_oryx", "overrides": ["algo.tau=0.005"]},
        {"task_set": "lbf_5", "algo": "mt_bc_sable", "overrides": ["algo.lr=0.001"]}]}))
    build = experiment_module("table1").build
    runs = build(compose_experiment("table1", ["quick", "task_sets=[lbf_5]", "algos=[mt_oryx,mt_bc_sable]",
                                               f"choices=[{choice}]"]))
    cfgs = {r.key["algo"]: compose_train(r.overrides) for r in runs}
    assert cfgs["mt_oryx"].algo.tau == 0.005 and cfgs["mt_bc_sable"].algo.lr == 0.001
    plain_runs = build(compose_experiment("table1", ["quick", "task_sets=[lbf_5]", "algos=[mt_oryx]"]))
    assert compose_train(plain_runs[0].overrides).algo.tau != 0.005  # no choices: the yaml's defaults
    assert plain_runs[0].directory("res") != next(r for r in runs if r.key["algo"] == "mt_oryx").directory("res")
    td = experiment_module("task_diversity").build(compose_experiment(
        "task_diversity", ["quick", "task_sets=[lbf_5]", "algos=[mt_oryx,mt_bc_sable]", f"choices=[{choice}]"]))
    assert {r.directory("res") for r in runs} == {r.directory("res") for r in td if r.key["k"] == 5}
    # the findings' drivers: the choice applied, and the runs they share with Table 1 / task_diversity shared
    on_lbf = ["cpu", "tasks=lbf_5", "algos=[mt_oryx]", f"choices=[{choice}]"]
    abl = experiment_module("ablations").build(compose_experiment("ablations", on_lbf))
    assert all(compose_train(r.overrides).algo.tau == 0.005 for r in abl)
    t1_cpu = build(compose_experiment("table1", ["cpu", "task_sets=[lbf_5]", "algos=[mt_oryx]", f"choices=[{choice}]"]))
    assert {r.directory("res") for r in abl if r.key["variant"] == "full"} == {r.directory("res") for r in t1_cpu}
    ds = experiment_module("dataset_size").build(compose_experiment("dataset_size", [*on_lbf, "num_train=3"]))
    td_cpu = experiment_module("task_diversity").build(compose_experiment(
        "task_diversity", ["cpu", "task_sets=[lbf_5]", "algos=[mt_oryx]", "k.lbf_5=[3]", f"choices=[{choice}]"]))
    assert {r.directory("res") for r in ds if r.key["fraction"] == 1.0} == {r.directory("res") for r in td_cpu}
    assert all(compose_train(r.overrides).algo.tau == 0.005 for r in ds)
    ms = experiment_module("model_size").build(compose_experiment("model_size", on_lbf))
    assert {(compose_train(r.overrides).algo.tau, compose_train(r.overrides).network.embed_dim) for r in ms} == {
        (0.005, d) for d in (64, 128, 256, 512)}
    with pytest.raises(UserInputError, match=r"no tuning choice for task set 'lbf_5' and algorithm 'mt_cql_sable'"):
        build(compose_experiment("table1", ["quick", "task_sets=[lbf_5]", f"choices=[{choice}]"]))
    with pytest.raises(UserInputError, match=r"choices: .*missing.json does not exist"):
        build(compose_experiment("table1", ["quick", f"choices=[{tmp_path / 'missing.json'}]"]))


def test_table1_task_table_gives_raw_and_normalised_returns_and_counts_those_above_the_bar(tmp_path):
    t1 = experiment_module("table1")
    base = dict(algo="mt_oryx", task_set="lbf_5", split="test", env="lbf")
    records = [{**base, "task": "a", "seed": 0, "return": 1.0, "normalised": 1.0},
               {**base, "task": "a", "seed": 1, "return": 3.0, "normalised": 1.2},
               {**base, "task": "b", "seed": 0, "return": 5.0, "normalised": 1.15},
               {**base, "task": "b", "seed": 1, "return": 5.0, "normalised": 0.5},
               {**base, "task": "c", "seed": 0, "split": "train", "return": 9.0, "normalised": 9.0}]
    rows = {r["task"]: r for r in t1.task_rows(records)}
    assert set(rows) == {"a", "b"}  # test tasks only
    assert rows["a"]["return"] == 2.0 and math.isclose(rows["a"]["return_stderr"], 1.0)  # std 1.414 / sqrt 2
    assert math.isclose(rows["a"]["normalised"], 1.1) and rows["a"]["above"] == 1 and rows["b"]["above"] == 1
    text = t1.task_table(list(rows.values()), tmp_path).read_text()
    assert "| lbf_5 | a | mt_oryx | 2.000 ± 1.000 | 1.100 ± 0.100 |" in text
    assert "| mt_oryx | lbf_5 | 2 of 4 |" in text


def test_single_task_point_trains_each_fixed_task_alone_and_averages_them():
    td = experiment_module("task_diversity")
    cfg = compose_experiment("task_diversity", ["quick", "task_sets=[lbf_5]", "algos=[mt_oryx]",
                                                "single_tasks={lbf_5: [8x8-2p-2f, 12x12-4p-2f]}"])
    runs = td.build(cfg)
    singles = [r for r in runs if r.key["k"] == 1]
    assert [r.key["single"] for r in singles] == ["8x8-2p-2f", "12x12-4p-2f"]
    for r in singles:
        composed = compose_train(r.overrides)
        assert composed.tasks.single == r.key["single"] and composed.tasks.num_train is None
    assert len({r.directory("res") for r in runs}) == 3  # two single-task runs and the full set
    rec = dict(task_set="lbf_5", algo="mt_oryx", k=1, seed=0, split="test", env="lbf", task="t")
    pooled = td.mean_over_single_tasks([{**rec, "single": "a", "return": 1.0, "normalised": 0.5},
                                        {**rec, "single": "b", "return": 3.0, "normalised": 1.5},
                                        {**rec, "seed": 1, "single": "a", "return": 5.0, "normalised": 2.0},
                                        {**rec, "k": 5, "return": 7.0, "normalised": 3.0}])
    by_seed = {(r["seed"], r["k"]): r for r in pooled}
    assert len(pooled) == 3 and "single" not in by_seed[(0, 1)]
    assert by_seed[(0, 1)]["return"] == 2.0 and by_seed[(0, 1)]["normalised"] == 1.0
    assert by_seed[(0, 1)]["singles_averaged"] == 2 and by_seed[(1, 1)]["return"] == 5.0
    assert by_seed[(0, 5)]["return"] == 7.0


# ------------------------------------------------------------------ driver with the real trainer

@pytest.mark.slow
def test_model_size_driver_with_real_training(tmp_path, monkeypatch):
    """1 update, 2 evaluation episodes, tiny net, synthetic vaults: the driver's JSON and PNG appear,
    and a rerun trains nothing."""
    from test_training import TRAIN, _spec, synthetic_experience  # shared synthetic data

    from mtmarl.data.vault import write_vault

    root = tmp_path / "vault_data"
    for i, (label, adhoc) in enumerate(TRAIN.items()):
        write_vault(root, _spec(label, adhoc), synthetic_experience(_spec(label, adhoc), 4, i), {"seed": i})
    conf = mini_task_set(tmp_path)
    monkeypatch.setenv("JAX_DISABLE_MOST_OPTIMIZATIONS", "true")
    train = ["training=quick", "training.updates=1", "training.updates_per_call=1", "training.batch_size=4",
             "training.seq_len=4", "eval.episodes=2", "logger.neptune=false"]
    extra = [f"hydra.searchpath=[file://{conf}]", f"data.root={root}"]
    argv = ["quick", f"results={tmp_path / 'results'}", "tasks=mini", "network=tiny", "embed_dims=[16]",
            "algos=[mt_bc_sable]", "bootstrap.reps=50", "progress=false",
            "budget.train=[" + ",".join(f'"{o}"' for o in train) + "]",
            "extra=[" + ",".join(f'"{o}"' for o in extra) + "]"]
    experiment = experiment_module("model_size").EXPERIMENT
    first = main(experiment, argv)
    assert [r["status"] for r in first["runs"]] == ["finished"], first["runs"]
    out = tmp_path / "results" / "model_size"
    assert (out / "fig5b_model_size.png").stat().st_size > 0
    rows = json.loads((out / "model_size.json").read_text())["rows"]
    assert {r["split"] for r in rows} == {"train", "test"} and all(r["runs"] == 1 for r in rows)
    assert rows[0]["parameters"] > 0
    second = main(experiment, argv)
    assert [r["status"] for r in second["runs"]] == ["skipped"]


def test_bad_override_is_one_line_error(capsys):
    """A malformed override (unquoted list of overrides) exits 2 with one line, not a Hydra traceback."""
    mod = experiment_module("task_diversity")
    with pytest.raises(SystemExit) as exit_info:
        mod.main(mod.EXPERIMENT, ["quick", "extra=[training=default]"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: task_diversity:") and "\n" not in err and "Traceback" not in err


def test_out_of_split_layouts_are_in_no_set_and_the_table_divides_by_random():
    oos = experiment_module("out_of_split")
    task_set = oos.outside_every_split("lbf", oos.LAYOUTS["lbf"])
    named = {s.adhoc for name in ("lbf_5",) for s in tasks.load(name).split("all")}
    assert task_set.train and not {s.adhoc for s in task_set.train} & named
    with pytest.raises(ValueError, match="lbf_5/test"):
        oos.outside_every_split("lbf", [tasks.load("lbf_5").test[0].adhoc])
    two = oos.outside_every_split("lbf", oos.LAYOUTS["lbf"][:2])
    results = {"mt": [{"mean_return": 0.6, "stderr": 0.1}, {"mean_return": 0.2, "stderr": 0.0}],
               "random": [{"mean_return": 0.2, "stderr": 0.05}, {"mean_return": 0.2, "stderr": 0.0}]}
    lines = oos.table(results, two)
    assert lines[2].endswith("| 0.600 ± 0.100 | 0.200 ± 0.050 | 3.00 |") and lines[3].endswith("| 1.00 |")
    assert lines[-1] == "| **mean** | **0.400** | **0.200** | 2.00 |"
    # seeds of a population run pool into one row: per-seed means 0.4 and 0.8 -> 0.6 ± 0.2 over seeds
    pooled = oos.seed_table({"mt/s0": results["mt"], "mt/s1": [{"mean_return": 1.0}, {"mean_return": 0.6}],
                             "random": results["random"]})
    assert pooled[2] == "| mt | 2 | 0.400 / 0.800 | 0.600 ± 0.200 | 3.00 |"
    assert pooled[3] == "| random | 1 | 0.200 | 0.200 | - |"


def _records(path: Path, config: str, seeds_scores: dict[int, list[float]]) -> None:
    import csv

    path.mkdir(parents=True)
    with (path / "records.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["algo", "config_id", "seed", "env", "task", "split", "return", "normalised",
                                          "win_rate"])
        w.writeheader()
        for seed, scores in seeds_scores.items():
            for t, s in enumerate(scores):
                w.writerow({"algo": "mt_oryx", "config_id": config, "seed": seed, "env": "rware", "task": f"t{t}",
                            "split": "test", "return": 10 * s, "normalised": s, "win_rate": ""})


def test_pooled_seeds_of_two_outputs_aggregate_like_one_output_and_a_run_counts_once(tmp_path):
    from helpers import experiment_module

    from mtmarl.errors import UserInputError

    pool = experiment_module("pool_seeds")
    scores = {0: [0.2, 0.4], 1: [0.5, 0.7], 3: [0.9, 0.1], 4: [0.6, 0.6]}
    _records(tmp_path / "a", "c1", {s: scores[s] for s in (0, 1)})
    _records(tmp_path / "b", "c1", {s: scores[s] for s in (3, 4)})
    (row,) = pool.main([str(tmp_path / "a"), str(tmp_path / "b"), "--by", "algo", "--out", str(tmp_path / "p")])
    per_seed = np.array([np.mean(v) for v in scores.values()])
    assert row["runs"] == 4 and row["tasks"] == 2
    assert row["mean"] == pytest.approx(per_seed.mean())
    assert row["stderr"] == pytest.approx(per_seed.std(ddof=1) / 2)
    assert (tmp_path / "p" / "pooled.md").is_file()
    assert len((tmp_path / "p" / "records.csv").read_text().splitlines()) == 9  # header + 4 seeds x 2 tasks
    _records(tmp_path / "c", "c1", {1: [0.0, 0.0]})  # seed 1 of c1 again: the same run twice
    with pytest.raises(UserInputError, match="seed 1 is in both"):
        pool.main([str(tmp_path / "a"), str(tmp_path / "c"), "--out", str(tmp_path / "q")])


def test_pooled_outputs_render_as_the_smax_driver_with_the_hygen_column_beside(tmp_path):
    # two SMAX panels run as separate outputs become one smax.md: each panel's mean ± se over its seeds, and
    # the HyGen paper's column of the algorithm beside it
    import csv

    from helpers import experiment_module

    from mtmarl.errors import UserInputError
    from mtmarl.experiments.smax import paper_table

    pool = experiment_module("pool_seeds")
    wins = {("smax_marine_hard", 0): [0.2, 0.4], ("smax_marine_hard", 1): [0.6, 0.8],
            ("smax_stalker_zealot", 0): [0.1, 0.1], ("smax_stalker_zealot", 1): [0.3, 0.5]}
    for name in ("smax_marine_hard", "smax_stalker_zealot"):
        (tmp_path / name).mkdir()
        with (tmp_path / name / "records.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["task_set", "quality", "algo", "config_id", "seed", "env", "task", "split",
                                              "return", "normalised", "win_rate"])
            w.writeheader()
            for seed in (0, 1):
                for t, win in enumerate(wins[(name, seed)]):
                    w.writerow({"task_set": name, "quality": "medium", "algo": "bc_t", "config_id": f"bc_t-{name}",
                                "seed": seed, "env": "smax", "task": f"m{t}", "split": "test", "return": 2 * win,
                                "normalised": win, "win_rate": win})
    out = tmp_path / "pooled"
    pool.main([str(tmp_path / "smax_marine_hard"), str(tmp_path / "smax_stalker_zealot"), "--by", "task_set", "quality",
               "algo", "--experiment", "smax", "--set", "task_sets=[smax_marine_hard,smax_stalker_zealot]",
               "qualities=[medium]", "algos=[bc_t]", "--out", str(out)])
    ours, paper = [line for line in (out / "smax.md").read_text().splitlines() if line.startswith("| bc_t |")]
    cells = [c.strip() for c in ours.strip("|").split("|")]
    for name, test_cell in (("smax_marine_hard", cells[2]), ("smax_stalker_zealot", cells[4])):
        per_seed = np.array([np.mean(wins[(name, s)]) for s in (0, 1)])
        assert test_cell == f"{per_seed.mean():.3f} ± {per_seed.std(ddof=1) / np.sqrt(2):.3f}"
    assert cells[1] == "n/a"  # no train records
    paper_cells = [c.strip() for c in paper.strip("|").split("|")]
    assert paper_cells[2] == f"{paper_table().split_mean('smax_marine_hard', 'medium', 'BC-best', 'test'):.3f}"
    with pytest.raises(UserInputError, match="not one of"):
        pool.main([str(tmp_path / "smax_marine_hard"), "--experiment", "smaxx", "--out", str(tmp_path / "x")])


def test_a_population_run_is_finished_with_all_its_seeds_and_gives_one_record_set_per_seed(tmp_path):
    """A run of ``training.population=3`` (the gpu budget) is one Run whose seeds 0-2 finish in its seed_<s>/;
    it counts as finished only when all three have, is up to date against its own config, and aggregates as 3
    seeds. Two populations of one configuration claiming the same seed are refused."""
    import yaml

    from mtmarl.experiments.analysis import collect
    from mtmarl.experiments.config import plain
    from mtmarl.errors import UserInputError

    res = tmp_path / "res"
    overrides = ["+algo=mt_bc_sable", "+tasks=lbf_5", "training.population=3", "training.eval_every=0"]
    run = Run.make({"algo": "bc"}, overrides, 0)
    run_dir = run.directory(res)
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(plain(compose_train([*overrides, "seed=0"]))))
    assert runner.population_seeds(run_dir) == [0, 1, 2]

    def finish(seed):
        d = run_dir / f"seed_{seed}"
        d.mkdir()
        rows = [{"name": f"t{i}", "env": "lbf", "split": "test", "mean_return": seed + i / 10,
                 "normalised_return": seed + i / 10} for i in range(2)]
        (d / "summary.json").write_text(json.dumps(rows))
        (d / "results.json").write_text("{}")
        (d / "run.json").write_text("{}")

    finish(0), finish(1)
    assert not is_finished(run_dir) and collect([run], res) == []
    finish(2)
    assert is_finished(run_dir) and runner.stale_keys(run, run_dir) == []
    assert [o.status for o in run_matrix([run], res, progress=False)] == ["skipped"]
    records = collect([run], res)
    assert sorted({r["seed"] for r in records}) == [0, 1, 2] and len(records) == 6
    assert {r["normalised"] for r in records if r["seed"] == 2} == {2.0, 2.1}
    row = aggregate(records, ["algo"], splits=("test",))[0]
    assert row["seeds"] == [0, 1, 2] and row["mean"] == pytest.approx(np.mean([0.05, 1.05, 2.05]))
    # a second population of the same config from seed 1 would claim seeds 1 and 2 again
    other = Run.make({"algo": "bc"}, overrides, 1)
    other.directory(res).mkdir(parents=True)
    (other.directory(res) / "config.yaml").write_text(yaml.safe_dump(plain(compose_train([*overrides, "seed=1"]))))
    for s in (1, 2, 3):
        d = other.directory(res) / f"seed_{s}"
        d.mkdir()
        for name in ("summary.json", "results.json", "run.json"):
            (d / name).write_text((run_dir / "seed_0" / name).read_text())
    with pytest.raises(UserInputError, match="seed 1 of .* comes from two runs"):
        collect([run, other], res)


def test_learning_diagnoses_each_seed_of_a_population_run_once(tmp_path, monkeypatch):
    """learning.py's diagnostics table: a population run is diagnosed per seed (``--seed``, into seed_<s>/), and a
    seed already diagnosed is read back, not diagnosed again."""
    import mtmarl.diagnose

    calls = []

    def fake(argv):
        calls.append(argv)
        seed = argv[argv.index("--seed") + 1] if "--seed" in argv else None
        out = Path(argv[0]) / (f"seed_{seed}" if seed is not None else "")
        out.mkdir(parents=True, exist_ok=True)
        (out / "diagnostics.json").write_text(json.dumps({"summary": {"spearman": float(seed or -1)}}))

    monkeypatch.setattr(mtmarl.diagnose, "main", fake)
    learning = experiment_module("learning")
    run_dir = tmp_path / "run"
    assert learning.diagnostics(run_dir, 3, seed=1) == {"spearman": 1.0}
    assert learning.diagnostics(run_dir, 3, seed=1) == {"spearman": 1.0}
    assert learning.diagnostics(run_dir, 3) == {"spearman": -1.0}
    assert calls == [[str(run_dir), "--batches", "3", "--seed", "1"], [str(run_dir), "--batches", "3"]]


def test_finetune_driver_reads_jp_and_tt_per_threshold_off_each_curve(tmp_path, capsys):
    """finetune_sweep.py over finished runs (their reference entries and logs written by hand, so nothing is run
    again): JP, final return and win rate as mean ± se over seeds; TT per threshold as the median env steps
    of the seeds whose curve (JP at step 0, then each chunk's return) reaches it; MAPPO's training return at
    the fine-tuning budget is its last chunk at or before it."""
    ft = experiment_module("finetune_sweep")
    curves = {  # (learner, seed): (JP, [(env steps, chunk return), ...], final, win rate)
        ("m3", 0): (1.0, [(100, 1.3), (200, 1.6)], 1.5, 0.5),
        ("m3", 1): (1.4, [(100, 1.2), (200, 1.1)], 1.2, 0.3),
        ("mappo", 0): (0.1, [(100, 0.5), (200, 0.9), (300, 1.4)], 1.3, 0.4),
        ("mappo", 1): (0.3, [(100, 0.7), (200, None), (300, 1.0)], 0.9, 0.2),
    }
    for (learner, seed), (jp, points, final, win) in curves.items():
        path = ft.run_dir(tmp_path / "out", learner, seed, "3m")
        (path / "logs" / "smax").mkdir(parents=True)
        (path / "logs" / "smax" / "map=3m.jsonl").write_text(
            "".join(json.dumps({"env_steps": s, "return": r}) + "\n" for s, r in points))
        (path / "references.json").write_text(json.dumps({"smax:map=3m": {
            "env_steps": points[-1][0], "jp": jp, "return": final, "win_rate": win}}))
    (tmp_path / "m3_run").mkdir()
    assert ft.main(["--runs", f"m3={tmp_path / 'm3_run'}", "--maps", "3m", "--seeds", "0", "1", "--budget", "200",
                    "--scratch", "mappo=300", "--thresholds", "1.3", "1.5", "--out", str(tmp_path / "out")]) == 0
    out = json.loads((tmp_path / "out" / "finetune.json").read_text())
    assert out["command"].startswith("python experiment_scripts/finetune_sweep.py --runs m3=")
    assert "--budget 200" in out["command"]
    assert len(out["commit"]) == 40 and isinstance(out["dirty"], bool) and out["machine"]["cores"] >= 1
    rows = {r["learner"]: r for r in out["rows"]}
    m3, mappo = rows["m3"], rows["mappo"]
    assert m3["jp"] == pytest.approx([1.2, 0.2]) and m3["final"] == pytest.approx([1.35, 0.15])
    assert m3["win_rate"][0] == pytest.approx(0.4)
    # m3 seed 0 reaches 1.3 at 100 and 1.5 at 200; seed 1 starts at 1.4 (TT 0 for 1.3) and never reaches 1.5
    assert m3["tt"]["1.3"] == {"reached": 2, "median": 50.0} and m3["tt"]["1.5"] == {"reached": 1, "median": 200.0}
    assert mappo["tt"]["1.3"] == {"reached": 1, "median": 300.0} and mappo["tt"]["1.5"]["reached"] == 0
    # at the 200-step budget: m3's chunks at 200 (1.6, 1.1); MAPPO's at 200 (0.9) and, where 200 logged none, 100 (0.7)
    assert m3["train_at_budget"][0] == pytest.approx(1.35) and mappo["train_at_budget"][0] == pytest.approx(0.8)
    table = (tmp_path / "out" / "finetune.md").read_text()
    assert "| 3m | m3 | 2 | 200 | 1.200 ± 0.200 |" in table and "not reached (0/2)" in table
    assert (tmp_path / "out" / "curves.png").stat().st_size > 0
    with pytest.raises(SystemExit):  # a learner named like an online system, or a run directory that is not there
        ft.main(["--runs", f"mappo={tmp_path / 'm3_run'}", "--out", str(tmp_path / "o2")])
    with pytest.raises(SystemExit):
        ft.main(["--runs", f"m3={tmp_path / 'm3_run'}", "--scratch", "qmixx=10", "--out", str(tmp_path / "o2")])
    with pytest.raises(SystemExit):
        ft.main(["--runs", f"m3={tmp_path / 'nowhere'}", "--out", str(tmp_path / "o2")])
    assert "want LEARNER=RUN_DIR" in capsys.readouterr().err


def test_finetune_driver_continues_a_hygen_run_in_its_hybrid_stage_and_fine_tunes_the_rest(tmp_path):
    """An algo=hygen run goes on through online=hygen (the HyGen paper's hybrid stage), any other run (M3, the Sable
    policies, a directory without config.yaml) through online=finetune; the run and its seed are passed on."""
    ft = experiment_module("finetune_sweep")
    for algo in ("hygen", "m3"):
        (tmp_path / algo).mkdir()
        (tmp_path / algo / "config.yaml").write_text(f"algo:\n  name: {algo}\n  lr: 0.001\n")
    (tmp_path / "bare").mkdir()
    cmds = {name: ft.command("x", str(tmp_path / name), 2, "3m", 100, tmp_path / "o", 8, ["a=b"])
            for name in ("hygen", "m3", "bare")}
    assert "online=hygen" in cmds["hygen"] and "online=finetune" not in cmds["hygen"]
    assert "online=finetune" in cmds["m3"] and "online=finetune" in cmds["bare"]
    for name, cmd in cmds.items():
        assert f"online.init_from={tmp_path / name}" in cmd and "online.init_seed=2" in cmd and cmd[-1] == "a=b"
    assert "online=qmix" in ft.command("qmix", None, 0, "3m", 100, tmp_path / "o", 8, [])
    assert all(cmd[1:3] == ["-m", "mtmarl.finetune"] for cmd in cmds.values())


def test_finetune_driver_tabulates_the_set_evaluation_of_hybrid_runs(tmp_path):
    """Runs whose reference entry holds set_eval rows (HyGen with online.eval_set) get a zero-shot table: per task
    the mean ± se of the win rate over seeds, per split the mean over seeds of each seed's split mean."""
    ft = experiment_module("finetune_sweep")
    evals = {0: {("train", "3m"): 0.5, ("train", "5m"): 0.1, ("test", "4m"): 0.2},
             1: {("train", "3m"): 0.7, ("train", "5m"): 0.3, ("test", "4m"): 0.0}}
    for seed, rows in evals.items():
        path = ft.run_dir(tmp_path / "out", "hybrid", seed, "3m")
        (path / "logs" / "smax").mkdir(parents=True)
        (path / "logs" / "smax" / "map=3m.jsonl").write_text(json.dumps({"env_steps": 10, "return": 1.0}) + "\n")
        set_eval = [{"split": sp, "name": n, "win_rate": w} for (sp, n), w in rows.items()]
        (path / "references.json").write_text(json.dumps({"smax:map=3m": {
            "env_steps": 10, "jp": 0.5, "return": 1.0, "win_rate": 0.5, "set_eval": set_eval}}))
    (tmp_path / "hygen_run").mkdir()
    assert ft.main(["--runs", f"hybrid={tmp_path / 'hygen_run'}", "--maps", "3m", "--seeds", "0", "1", "--budget", "10",
                    "--scratch", "--out", str(tmp_path / "out")]) == 0
    table = (tmp_path / "out" / "finetune.md").read_text()
    assert "| hybrid | 3m | train | 3m | 2 | 0.600 ± 0.100 |" in table
    assert "| hybrid | 3m | test | 4m | 2 | 0.100 ± 0.100 |" in table
    # seed means over the train split: 0.3 and 0.5
    assert "| hybrid | 3m | train | **mean** | 2 | **0.400 ± 0.100** |" in table
    assert "| hybrid | 3m | test | **mean** | 2 | **0.100 ± 0.100** |" in table
    assert ft.set_table([{"learner": "m3", "map": "3m", "set_eval": None}]) == ""
