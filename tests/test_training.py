"""Training engine: learning, 1 vs 2 devices, exact resume, train-only model selection, the train CLI."""

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers import xla_flags

from mtmarl.algos.registry import build as make_algo
from mtmarl.configs import CONFIG_DIR
from mtmarl.data.vault import write_vault
from mtmarl.errors import UserInputError
from mtmarl.networks import load_preset
from mtmarl.tasks import TaskSet, TaskSpec
from mtmarl.training.checkpoint import Checkpointer, is_better, train_score
from mtmarl.training.data import build_buffers, check_vaults, load_task_data
from mtmarl.training.engine import Learner, tree_max_abs_diff

ROOT = Path(__file__).resolve().parents[1]
TRAIN = {"g5-2a": "connector:grid=5,agents=2,horizon=8", "g5-3a": "connector:grid=5,agents=3,horizon=8"}
TEST = {"g6-2a": "connector:grid=6,agents=2,horizon=8"}
K = 4  # updates per engine call
OVERRIDES = {"batch_size": 8, "seq_len": 8, "lr": 3e-3}


@pytest.fixture(scope="module", autouse=True)
def _fast_compiles():
    """Compiles dominate on a shared 2-core CPU; skip heavy XLA passes (semantics unchanged) here."""
    old = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", old)


def _spec(label, adhoc):
    base = TaskSpec.parse(adhoc)
    return TaskSpec.create(base.env, dict(base.params), label)


def synthetic_experience(spec: TaskSpec, episodes: int, seed: int) -> dict:
    """Random-policy-like data in og-marl layout: uniform legal actions, sparse team reward, horizon-long
    episodes (generated with numpy, not the env, to keep the test free of env compiles)."""
    env = spec.build()
    rng = np.random.default_rng(seed)
    T, n, o, A = episodes * env.horizon, env.num_agents, env.obs_dim, env.num_actions
    legals = rng.random((T, n, A)) < 0.6
    legals[..., 0] = True
    actions = np.argmax(legals * rng.random((T, n, A)), -1)
    # reward correlates with action 1 of agent 0, so there is something to learn
    reward = ((actions[:, 0] == 1) & (rng.random(T) < 0.8)).astype(np.float32)
    trunc = (np.arange(T) % env.horizon) == env.horizon - 1
    per_agent = lambda x: np.repeat(x[:, None], n, 1).astype(np.float32)  # noqa: E731
    exp = {"observations": rng.integers(0, 2, (T, n, o)).astype(np.float32), "actions": actions,
           "rewards": per_agent(reward), "terminals": per_agent(np.zeros(T)), "truncations": per_agent(trunc),
           "infos": {"legals": legals}}
    if env.state_dim:
        exp["infos"]["state"] = np.zeros((T, env.state_dim), np.float32)
    return exp


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """A vault root with both training tasks, and a Hydra search path holding task set 'mini'."""
    base = tmp_path_factory.mktemp("training")
    root = base / "vault_data"
    for i, (label, adhoc) in enumerate(TRAIN.items()):
        write_vault(root, _spec(label, adhoc), synthetic_experience(_spec(label, adhoc), 12, i),
                    {"policy": "random", "seed": i})
    # The root's own references (the default for training on this root), for the test task only.
    (root / "references.json").write_text(json.dumps({TEST["g6-2a"]: {"return": -2.0}}))
    conf = base / "conf" / "tasks"
    conf.mkdir(parents=True)
    item = lambda label, adhoc: {"name": label, **dict(TaskSpec.parse(adhoc).params)}  # noqa: E731
    (conf / "mini.yaml").write_text("# @package tasks\n" + json.dumps({
        "name": "mini", "env": "connector", "num_train": None, "single": None,
        "train": [item(k, v) for k, v in TRAIN.items()], "test": [item(k, v) for k, v in TEST.items()]}))
    return root


@pytest.fixture(scope="module")
def task_set():
    return TaskSet("mini", "connector", tuple(_spec(k, v) for k, v in TRAIN.items()),
                   tuple(_spec(k, v) for k, v in TEST.items()))


@pytest.fixture(scope="module")
def setup(data_root, task_set):
    data = load_task_data(task_set, data_root)
    buffers = build_buffers(task_set, data, OVERRIDES["seq_len"])
    algo = make_algo("mt_bc_sable", OVERRIDES, load_preset("tiny", embed_dim=16, chunk_size=4),
                     buffers.num_actions)
    return algo, buffers


@pytest.fixture(scope="module")
def learner1(setup):
    algo, buffers = setup
    return Learner(algo, buffers, K, num_devices=1)


def _run(learner, carry, calls):
    losses = []
    for _ in range(calls):
        carry, m = learner.run(carry)
        losses.append(m["loss"])
    return carry, losses


@pytest.fixture(scope="module")
def reference_run(learner1):
    """4 calls x K updates on one device from seed 0 (shared by several tests)."""
    return _run(learner1, learner1.init(0), 4)


def test_data_padded_to_whole_set(setup, task_set):
    _, buffers = setup
    assert buffers.num_tasks == 2 and buffers.num_agents == task_set.padding["num_agents"] == 3
    assert np.asarray(buffers.active).sum(1).tolist() == [2, 3]


def test_batches_pad_agents_to_the_training_tasks_and_the_update_is_unchanged(data_root, task_set):
    """A test task with more agents than any training task widens evaluation only: training batches keep
    the training tasks' agent slots, and (agent order fixed) one update equals the update on batches padded
    to the whole set, as masking makes padded agents inert."""
    wide = TaskSet("mini4", "connector", task_set.train, (_spec("g6-4a", "connector:grid=6,agents=4,horizon=8"),))
    data = load_task_data(wide, data_root)
    slim, full = build_buffers(wide, data, OVERRIDES["seq_len"]), build_buffers(wide, data, OVERRIDES["seq_len"], "set")
    assert slim.num_agents == 3 and full.num_agents == wide.padding["num_agents"] == 4
    assert slim.obs.shape[:2] + slim.obs.shape[3:] == full.obs.shape[:2] + full.obs.shape[3:]
    assert wide.train_spec.obs == wide.env_spec.obs and wide.train_spec.actions == wide.env_spec.actions
    algo = make_algo("mt_oryx", {**OVERRIDES, "shuffle": False, "num_bins": 11},
                     load_preset("tiny", embed_dim=16, chunk_size=4), wide.env_spec)
    (a, ma), (b, mb) = (Learner(algo, buf, 1, num_devices=1).run(Learner(algo, buf, 1, num_devices=1).init(0))
                        for buf in (slim, full))
    for k in ma:  # every metric (loss, Q, weights, ...) as on the set-padded batch
        np.testing.assert_allclose(np.asarray(ma[k]), np.asarray(mb[k]), rtol=1e-5, atol=1e-6, err_msg=k)
    # the gradient, through Adam's first moment, equal to float rounding relative to its scale (as in the
    # data-parallel contract); the parameters themselves move by lr x g / (|g| + eps), which magnifies the
    # rounding of near-zero entries
    import optax
    mu_a, mu_b = (optax.tree.get(c.state.opt_state, "mu") for c in (a, b))
    scale = max(float(np.max(np.abs(x))) for x in jax.tree.leaves(mu_a))
    print(f"max |d mu| = {tree_max_abs_diff(mu_a, mu_b):.1e} of {scale:.1e}; "
          f"max |d params| = {tree_max_abs_diff(a.state.params, b.state.params):.1e}")
    assert tree_max_abs_diff(mu_a, mu_b) < 1e-5 * scale
    assert tree_max_abs_diff(a.state.params, b.state.params) < 1e-4
    with pytest.raises(ValueError, match="agents must be 'train' or 'set'"):
        build_buffers(wide, data, 8, "test")


def test_engine_learns(reference_run):
    carry, losses = reference_run
    assert int(carry.step) == 4 * K
    assert all(np.isfinite(losses)), losses
    assert losses[-1] < losses[0], losses


# One update from the same parameters, batch and key (the requirement). Over several updates the
# comparison is not meaningful: this tiny net's gradient is ill-conditioned (on ONE device, moving one
# leaf by 2.4e-7 moved BC's grad norm by 0.3% at the next update), so last-bit differences grow.
# batch_size 6 over 2 tasks gives the shards of 2 devices tasks [0, 1, 0] and [1, 0, 1]: per-shard task
# means, counts or ICQ softmaxes differ from the global ones (MT Oryx moved 2e-2 when they were per shard).
DP_CASES = [
    pytest.param("mt_bc_sable", {}, id="bc", marks=pytest.mark.slow),
    pytest.param("mt_oryx", {}, id="oryx"),
    pytest.param("mt_cql_sable", {"task_mean": False}, id="cql-plain-mean", marks=pytest.mark.slow),
    pytest.param("mt_oryx", {"balanced": False}, id="oryx-one-task-batches", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("name,extra", DP_CASES)
def test_one_and_two_devices_give_the_same_update(setup, name, extra):
    from helpers import one_update_on_one_and_two_devices

    _, buffers = setup
    algo = make_algo(name, {**OVERRIDES, "batch_size": 6, "num_bins": 11, **extra},
                     load_preset("tiny", embed_dim=16, chunk_size=4), buffers.num_actions)
    # The gradient (Adam's first moment) equal to float rounding relative to its scale (measured <= 5e-7;
    # per-shard normalisers would miss this by far) and equal metrics: checked by the helper.
    (one, m1), (two, m2) = one_update_on_one_and_two_devices(algo, buffers)
    # Parameters and targets after the step (lr 3e-3): Adam's g / (|g| + eps) magnifies the rounding of
    # gradient entries near 0, so this is looser (measured <= 7.3e-6, CQL).
    diff = tree_max_abs_diff((two.state.params, two.state.target_params), (one.state.params, one.state.target_params))
    print(f"max |d params| = {diff:.1e}")
    assert diff < 1e-5, diff
    assert np.array_equal(two.key, one.key) and int(two.step) == int(one.step) == 1
    assert "grad_norm" in m1


def test_task_shards_train_the_update_of_their_batches_concatenated(data_root, task_set):
    """``training.shard_data``: each of 2 devices holds one task and draws its half of the batch with the
    key folded with its index; the update equals the one-device update on the two halves concatenated."""
    import dataclasses

    import jax.numpy as jnp

    from mtmarl.data.batching import sample, shard_tasks
    from mtmarl.training.data import build_shards

    data = load_task_data(task_set, data_root)
    owners = shard_tasks(2, 2)
    length = max(d["obs"].shape[0] for d in data)
    shards = build_shards(task_set, data, [0, 1], OVERRIDES["seq_len"], owners, [0, 1], length)
    assert [s.task_ids.tolist() for s in shards] == [[0], [1]] and shards[0].obs.shape == shards[1].obs.shape
    algo = make_algo("mt_bc_sable", {**OVERRIDES, "batch_size": 6}, load_preset("tiny", embed_dim=16, chunk_size=4),
                     shards[0].num_actions)
    learner = Learner(algo, shards, 1, num_devices=2)
    start = learner.init(0)
    two, _ = learner.run(start)
    _, k_sample, k_update = jax.random.split(start.key, 3)
    half = dataclasses.replace(algo.sampler, batch_size=3)
    halves = [sample(jax.tree.map(jnp.asarray, s), jax.random.fold_in(k_sample, d), 0, half) for d, s in enumerate(shards)]
    assert [set(np.asarray(h.task_ids).tolist()) for h in halves] == [{0}, {1}]
    batch = jax.tree.map(lambda *x: jnp.concatenate(x), *halves)
    state, _ = jax.jit(algo.stages[0].update)(start.state, batch, k_update)
    diff = tree_max_abs_diff(two.state.params, state.params)
    assert diff < 1e-5, diff
    assert tree_max_abs_diff(two.state.params, start.state.params) > 1e-4  # the update did move them


def test_resume_gives_the_same_params_as_an_uninterrupted_run(learner1, reference_run, tmp_path):
    carry, _ = _run(learner1, learner1.init(0), 2)
    ckpt = Checkpointer(tmp_path / "ckpt")
    ckpt.save_latest(2 * K, carry, {"updates": 2 * K, "best_score": None})
    ckpt.close()
    del carry  # "crash"
    template = learner1.init(123)  # any carry of the right structure
    ckpt = Checkpointer(tmp_path / "ckpt")
    restored, meta = ckpt.restore(template, "latest")
    ckpt.close()
    assert meta["updates"] == 2 * K and int(restored.step) == 2 * K
    resumed, _ = _run(learner1, restored, 2)
    ref, _ = reference_run
    for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(ref)):
        np.testing.assert_array_equal(a, b)


def test_best_checkpoint_is_selected_on_train_tasks_only():
    row = lambda split, ret, norm=None: {"split": split, "mean_return": ret, "normalised_return": norm}  # noqa
    early = [row("train", 1.0), row("train", 3.0), row("test", 100.0)]
    late = [row("train", 2.5), row("train", 2.5), row("test", -100.0)]
    assert train_score(early) == 2.0 and train_score(late) == 2.5  # test rows never count
    assert is_better(train_score(late), train_score(early))
    # normalised returns are used only when every train task has one
    assert train_score([row("train", 5.0, 0.5), row("train", 1.0, 0.3), row("test", 9.0, 9.0)]) == 0.4
    assert train_score([row("train", 5.0, 0.5), row("train", 1.0)]) == 3.0
    assert not is_better(float("nan"), None) and is_better(0.0, None) and not is_better(1.0, 1.0)
    with pytest.raises(ValueError):
        train_score([row("test", 1.0)])


def test_periodic_evaluation_logs_win_rates_where_every_task_has_one():
    from mtmarl.training.loop import eval_metrics

    def row(split, name, ret, win=None):
        return {"split": split, "name": name, "mean_return": ret, "normalised_return": None,
                **({} if win is None else {"win_rate": win})}

    got = eval_metrics([row("train", "a", 1.0, 0.25), row("train", "b", 3.0, 0.75), row("test", "c", 5.0, 0.1)])
    assert got["train_win_rate"] == 0.5 and got["test_win_rate"] == 0.1
    assert got["train_return"] == 2.0 and got["train/b"] == 3.0 and "train_normalised" not in got
    partial = eval_metrics([row("train", "a", 1.0, 0.25), row("train", "b", 3.0)])  # one task has no wins
    assert "train_win_rate" not in partial and "test_return" not in partial


def test_missing_vaults_name_the_files_and_how_to_get_data(tmp_path, task_set):
    with pytest.raises(UserInputError) as err:
        check_vaults(task_set, tmp_path)
    text = str(err.value)
    assert "g5-2a.vlt" in text and "g5-3a.vlt" in text and "mtmarl.hub download" in text


@pytest.mark.parametrize("neptune", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_run_logger_writes_strict_jsonl(tmp_path, neptune):
    from mtmarl.training.logging import RunLogger

    if neptune:
        pytest.importorskip("neptune", reason="the optional extra mtmarl[neptune]")
    log = RunLogger(tmp_path, 10, neptune=neptune, config={"seed": 0}, progress=True)
    log.log(5, {"loss": 1.5, "bad": float("nan")})
    log.advance(5)
    log.log(10, {"train_return": 2.0}, prefix="eval")
    log.close()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["train/loss"] == 1.5 and records[0]["train/bad"] is None
    assert records[1] == {"step": 10, "time": records[1]["time"], "eval/train_return": 2.0}
    if neptune:  # offline mode by default: files inside the run directory, nothing sent
        assert (tmp_path / ".neptune").is_dir()


def _cli_module(module, *args):
    env = {**os.environ, "XLA_FLAGS": xla_flags(2), "PYTHONWARNINGS": "ignore",
           "JAX_DISABLE_MOST_OPTIMIZATIONS": "true"}  # compile time dominates these tiny runs
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)


def _cli(*args):
    return _cli_module("mtmarl.train", *args)


def test_train_missing_vaults_is_one_clear_error(tmp_path, capsys):
    """The train entry point (composed in-process, as Hydra would) exits 2 with the missing vaults listed."""
    from hydra import compose, initialize_config_dir

    from mtmarl import train

    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        cfg = compose("train", ["+algo=mt_bc_sable", "task='connector:grid=5,agents=2,horizon=8'",
                                f"data.root={tmp_path}", "logger.neptune=false", "logger.progress=false"])
    with pytest.raises(SystemExit) as exit_:
        train.run(cfg, run_dir=tmp_path / "run")
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "grid=5,agents=2,horizon=8.vlt" in err and "mtmarl.hub download" in err


@pytest.mark.parametrize("devices", [1, 2])
def test_a_population_trains_each_seed_as_a_run_of_that_seed_alone(setup, devices):
    """Seeds side by side (one program, vmapped over a seed axis) give every seed the parameters, key and
    metrics of its own run, on 1 and on 2 devices (the data-parallel collectives inside the vmap)."""
    from mtmarl.training.engine import seed_slice, updates_done

    algo, buffers = setup
    seeds, calls = (3, 4), 2
    population = Learner(algo, buffers, K, num_devices=devices, population=2)
    carry = population.init(seeds[0])
    assert carry.step.shape == (2,) and carry.key.shape == (2, 2)
    alone = Learner(algo, buffers, K, num_devices=devices)
    metrics = []
    for _ in range(calls):
        carry, m = population.run(carry)
        metrics.append(m)
    assert updates_done(carry) == calls * K and m["loss"].shape == (2,)
    for i, seed in enumerate(seeds):
        mine, losses = _run(alone, alone.init(seed), calls)
        np.testing.assert_array_equal(seed_slice(carry, i).key, mine.key)
        diff = tree_max_abs_diff(seed_slice(carry, i).state, mine.state)
        # float rounding (the vmapped matmuls sum in another order), magnified by Adam's g / (|g| + eps) on
        # near-zero gradient entries over 8 updates: measured <= 2.8e-5 on parameters of size ~0.5 with
        # single-threaded Eigen; another seed's batch or key would move them by about lr (3e-3) per update
        assert diff < 1e-4, (seed, diff)
        np.testing.assert_allclose([m["loss"][i] for m in metrics], losses, rtol=1e-5)
    # the two seeds really differ (their own keys, batches and inits)
    assert tree_max_abs_diff(seed_slice(carry, 0).state, seed_slice(carry, 1).state) > 1e-3


@pytest.mark.slow
def test_train_cli_population_writes_one_directory_per_seed(data_root, tmp_path):
    out = tmp_path / "run"
    args = ("+algo=mt_oryx", "+tasks=mini", f"hydra.searchpath=[file://{data_root.parent / 'conf'}]",
            f"data.root={data_root}", f"hydra.run.dir={out}", "training=quick", "training.updates=8",
            "training.updates_per_call=4", "training.batch_size=8", "training.seq_len=8", "training.log_every=4",
            "training.checkpoint_every=4", "eval.episodes=4", "network.embed_dim=16", "algo.num_bins=11",
            "logger.progress=false", "seed=5", "training.population=2", "training.keep_checkpoints=2")
    # periodic evaluations of each seed after updates 4 and 8: each seed's best by its own training score
    proc = _cli(*args, "training.eval_every=4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    from mtmarl.training.restore import load_run
    for seed in (5, 6):
        results = json.loads((out / f"seed_{seed}" / "results.json").read_text())
        assert list(results["connector"][next(iter(TRAIN))]["mt_oryx"]) == [f"seed_{seed}"]
        run = json.loads((out / f"seed_{seed}" / "run.json").read_text())
        scores = {r["step"]: r[f"eval/seed_{seed}/train_score"] for r in records if f"eval/seed_{seed}/train_score" in r}
        assert sorted(scores) == [4, 8]
        best = 4 if scores[4] >= scores[8] else 8  # a later update must score strictly higher to be chosen
        assert run["updates"] == 8 and run["population"] == 2 and run["evaluated"] == f"best (update {best})"
        assert run["best_step"] == best and run["best_train_score"] == pytest.approx(scores[best])
        assert len(json.loads((out / f"seed_{seed}" / "summary.json").read_text())) == 3
        # the best checkpoint's slice of this seed is the parameters of its best update
        _, chosen, _, info = load_run(out, "best", seed=seed)
        _, last, _, _ = load_run(out, "latest", seed=seed)
        assert (tree_max_abs_diff(chosen, last) == 0) == (best == 8)
        assert info["checkpoint"]["step"] == best  # the seed's own update, not the composite's last save
    proc = _cli(*args, "training.eval_every=0", "overwrite=true")  # no periodic evaluations: final parameters
    assert proc.returncode == 0, proc.stderr[-3000:]
    for seed in (5, 6):
        assert json.loads((out / f"seed_{seed}" / "run.json").read_text())["evaluated"] == "final"
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in records if "train/seed_5/loss" in r]
    assert len(logged) == 2
    for r in logged:  # the usual name carries the mean over the seeds
        assert r["train/loss"] == pytest.approx((r["train/seed_5/loss"] + r["train/seed_6/loss"]) / 2)
    assert (out / "checkpoints" / "latest").is_dir()
    # one seed of the checkpoint, by name: the diagnostics land in its seed_<s>/
    from mtmarl import diagnose
    with pytest.raises(UserInputError, match=r"trained seeds \[5, 6\] side by side"):
        load_run(out)
    (_, p5, _, i5), (_, p6, _, i6) = (load_run(out, seed=s) for s in (5, 6))
    assert (i5["seed"], i6["seed"]) == (5, 6) and tree_max_abs_diff(p5, p6) > 1e-4
    result = diagnose.main([str(out), "--batches", "1", "--seed", "6"])
    assert result["seed"] == 6 and (out / "seed_6" / "diagnostics.md").exists()


@pytest.mark.slow
def test_train_cli_end_to_end(data_root, tmp_path):
    out = tmp_path / "run"
    proc = _cli("+algo=mt_oryx", "+tasks=mini", f"hydra.searchpath=[file://{data_root.parent / 'conf'}]",
                f"data.root={data_root}", f"hydra.run.dir={out}", "training=quick", "training.updates=8",
                "training.updates_per_call=4", "training.batch_size=8", "training.seq_len=8",
                "training.eval_every=4", "training.eval_episodes=4", "training.log_every=4", "training.checkpoint_every=4",
                "eval.episodes=4", "network.embed_dim=16", "algo.num_bins=11", "logger.progress=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    for name in list(TRAIN) + list(TEST):
        metrics = results["connector"][name]["mt_oryx"]["seed_0"]["absolute_metrics"]
        assert metrics["episode_count"] == [4]
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(r["split"] for r in summary) == ["test", "train", "train"]
    for row in summary:  # normalised by <data.root>/references.json, which covers the test task only
        expected = row["mean_return"] / -2.0 if row["split"] == "test" else None
        assert row["normalised_return"] == (None if expected is None else pytest.approx(expected))
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_losses = [r["train/loss"] for r in records if "train/loss" in r]
    assert len(train_losses) == 2 and all(np.isfinite(train_losses))
    assert any("eval/train_score" in r for r in records)
    run = json.loads((out / "run.json").read_text())
    assert run["updates"] == 8 and run["best_step"] in (4, 8)
    from mtmarl import tasks
    from mtmarl.evaluation.references import load_references
    from mtmarl.training.data import data_fingerprint
    mini = tasks.from_config(json.loads((data_root.parent / "conf" / "tasks" / "mini.yaml").read_text().split("\n", 1)[1]))
    assert run["data"] == data_fingerprint(mini, data_root, None, load_references(data_root / "references.json"))
    assert (out / "config.yaml").exists() and (out / "checkpoints" / "best").is_dir()
    assert "mean return" in proc.stdout
    # the best checkpoint comes back as an evaluator policy (what `mtmarl.evaluate checkpoint=` needs)
    from mtmarl.training.restore import load_trained
    policy, params, name, info = load_trained(out)
    assert name == "mt_oryx" and info["checkpoint"]["kind"] == "best" and info["tasks"]["name"] == "mini"
    assert Path(info["references"]) == data_root / "references.json"  # evaluate checkpoint= reuses them
    assert info["checkpoint"]["step"] == run["best_step"] and jax.tree.leaves(params)


# ---------------------------------------------------------------- NaN guard and evaluating a trained run

@pytest.fixture(scope="module")
def diverged_run(data_root, tmp_path_factory):
    """A tiny BC run on set 'mini' whose parameters turn to NaN before its 3rd engine call (updates 9..12).

    Returns (run dir, the exit code, stderr). Poisoning the parameters makes the real compiled loss
    produce NaN, as a divergence would. The run keeps its checkpoints of updates 4 and 8.
    """
    from hydra import compose, initialize_config_dir

    from mtmarl import train

    out = tmp_path_factory.mktemp("diverged") / "run"
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        cfg = compose("train", ["+algo=mt_bc_sable", "+tasks=mini", f"hydra.searchpath=[file://{data_root.parent / 'conf'}]",
                                f"data.root={data_root}", "training=quick", "training.updates=16",
                                "training.updates_per_call=4", "training.checkpoint_every=4", "training.devices=1",
                                "training.batch_size=8", "training.seq_len=8", "network.embed_dim=16",
                                "network.chunk_size=4", "logger.neptune=false", "logger.progress=false"])
    real_run, calls = Learner.run, []

    def poisoned(self, carry):
        calls.append(1)
        if len(calls) == 3:
            nan = jax.tree.map(lambda x: np.full_like(x, np.nan), carry.state.params)
            carry = carry._replace(state=carry.state._replace(params=nan))
        return real_run(self, carry)

    err = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, pytest.raises(SystemExit) as exit_, contextlib.redirect_stderr(err):
        mp.setattr(Learner, "run", poisoned)
        train.run(cfg, run_dir=out)
    return out, exit_.value.code, err.getvalue(), len(calls)


def test_check_finite_names_every_bad_metric(tmp_path):
    from mtmarl.algos.common import TrainState
    from mtmarl.training.engine import Carry
    from mtmarl.training.loop import check_finite

    carry = Carry(TrainState({"w": np.ones((2, 3), np.float32)}, None, ()), np.zeros(2, np.uint32), np.int32(0))
    check_finite({"loss": 1.0, "grad_norm": 0.5}, carry, 5, 8, tmp_path, 4)  # all finite: no error
    with pytest.raises(UserInputError) as err:
        check_finite({"loss": float("nan"), "critic_loss": float("inf"), "nll": 2.0}, carry, 5, 8, tmp_path, 4)
    text = str(err.value)
    assert "critic_loss=inf, loss=nan in updates 5..8" in text and "nll" not in text
    assert f"last good checkpoint is update 4 in {tmp_path / 'latest'}" in text
    # finite metrics but non-finite parameters (a last update that blew up) are caught too
    bad = carry._replace(state=carry.state._replace(
        params=jax.tree.map(lambda x: np.full_like(x, np.inf), carry.state.params)))
    with pytest.raises(UserInputError, match="non-finite parameters in update 3: .* no checkpoint was saved yet"):
        check_finite({"loss": 1.0}, bad, 3, 3, tmp_path, None)


@pytest.mark.slow
def test_nan_loss_stops_the_run_naming_the_metric_and_keeps_the_last_good_checkpoint(diverged_run):
    out, code, err, calls = diverged_run
    assert code != 0 and calls == 3  # stopped at once, not after all 4 calls
    line = err.strip()
    assert "\n" not in line and line.startswith("error: non-finite training metric")
    assert "bc_loss=nan" in line and "loss=nan" in line and "updates 9..12" in line
    assert "last good checkpoint is update 8" in line
    ckpt = Checkpointer(out / "checkpoints")
    try:
        assert ckpt.latest_step() == 8  # the NaN state (update 12) was not saved
    finally:
        ckpt.close()
    from mtmarl.training.restore import load_trained
    _, params, name, info = load_trained(out)
    assert name == "mt_bc_sable" and (info["checkpoint"]["kind"], info["checkpoint"]["step"]) == ("latest", 8)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 12 and records[-1]["train/loss"] is None  # NaN logged as null
    assert all(np.isfinite(r["train/loss"]) for r in records[:-1] if "train/loss" in r)


@pytest.mark.parametrize("args,message", [
    (["checkpoint={tmp}/nowhere"], "is not a training run directory"),
    (["checkpoint={tmp}", "policy=random"], "either policy=random or checkpoint="),
])
def test_evaluate_checkpoint_errors_are_one_line(tmp_path, capsys, args, message):
    """Composed in-process as Hydra would; the checks come before anything is compiled."""
    from hydra import compose, initialize_config_dir

    from mtmarl import evaluate

    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        cfg = compose("evaluate", [a.format(tmp=tmp_path) for a in args])
    with pytest.raises(SystemExit) as exit_:
        evaluate.run(cfg)
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and "\n" not in err and message in err, err


def test_trained_net_input_size_fits_smaller_observations_only():
    from mtmarl.envs import NOOP, ActionLayout, EnvSpec, ObsLayout
    from mtmarl.evaluation.trained import check_trained_fits
    from mtmarl.tasks import load

    def trained(obs_dim, actions):  # a run's padded layout of flat observations
        return EnvSpec(3, ObsLayout.flat(obs_dim), ActionLayout(basic=actions, noop=NOOP))

    rware, lbf = TaskSpec.parse("rware:rows=1,cols=3,height=8,agents=2"), TaskSpec.parse("lbf:grid=8,agents=2,food=2")
    check_trained_fits([rware], trained(128, 5), "run")  # 66 features <= 128: fine, zero-padded
    env = load(rware.adhoc).evaluation_env(rware, trained(128, 5))
    assert env.obs_dim == 128 and env.num_agents == 2
    with pytest.raises(UserInputError, match="has 66 observation features but the trained model .run. takes 32"):
        check_trained_fits([rware], trained(32, 5), "run")
    with pytest.raises(UserInputError, match="has 6 actions but the trained model .run. outputs 5"):
        check_trained_fits([lbf], trained(128, 5), "run")


@pytest.mark.slow
def test_evaluate_checkpoint_end_to_end(diverged_run, tmp_path):
    """The trained policy evaluated zero-shot: the run's own set by default, and an ad-hoc task with more
    agents (4) than any task of the training set (at most 3)."""
    out = diverged_run[0]
    ev = tmp_path / "own"
    proc = _cli_module("mtmarl.evaluate", f"checkpoint={out}", "eval.episodes=3", f"hydra.run.dir={ev}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((ev / "results.json").read_text())
    assert list(results["connector"]) == list(TEST)  # the run's set, default split: test
    metrics = results["connector"]["g6-2a"]["mt_bc_sable"]["seed_0"]["absolute_metrics"]
    assert metrics["episode_count"] == [3]
    assert "mt_bc_sable, latest checkpoint of update 8" in proc.stdout
    ev = tmp_path / "adhoc"
    task = "connector:grid=6,agents=4,horizon=8"
    proc = _cli_module("mtmarl.evaluate", f"checkpoint={out}", f"task={task}", "eval.episodes=3", "greedy=true",
                       f"hydra.run.dir={ev}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((ev / "summary.json").read_text())
    assert [(r["name"], r["agents"], r["split"]) for r in summary] == [(task, 4, "train")]
    results = json.loads((ev / "results.json").read_text())
    assert results["connector"][task]["mt_bc_sable"]["seed_0"]["absolute_metrics"]["episode_count"] == [3]


# ---------------------------------------------------------------- diagnostics of a trained run

def test_mc_returns_match_a_naive_loop():
    from mtmarl.diagnose import mc_returns

    rng = np.random.default_rng(0)
    rewards = rng.random((9, 2)).astype(np.float32)          # per-agent copies, as og-marl vaults store them
    rewards[:, 1] = rewards[:, 0]
    term = np.zeros((9, 2), bool)
    term[3] = True
    trunc = np.zeros((9, 2), bool)
    trunc[6] = True
    out = mc_returns([{"rewards": rewards, "terminals": term, "truncations": trunc}], 11, 0.5)
    r, expect = rewards[:, 0], np.zeros(11, np.float32)
    for start, end in ((0, 4), (4, 7), (7, 9)):               # episodes end at steps 3 (terminal) and 6 (cut)
        for t in range(start, end):
            expect[t] = sum(r[s] * 0.5 ** (s - t) for s in range(t, end))
    np.testing.assert_allclose(out[0], expect, rtol=1e-6)


def test_diagnose_rows_align_records_with_the_datas_returns(setup, monkeypatch):
    """``collect`` pairs every entry with the MC return of its own task and step: with gamma 0 that is the
    step's reward, so a probe that reports each entry's reward must match exactly."""
    import jax.numpy as jnp

    from mtmarl import diagnose

    algo, buffers = setup
    data = [{"rewards": np.asarray(buffers.rewards[m, :int(n)]), "terminals": np.asarray(buffers.terminals[m, :int(n)]),
             "truncations": np.asarray(buffers.truncations[m, :int(n)])} for m, n in enumerate(buffers.lengths)]
    mc = diagnose.mc_returns(data, buffers.obs.shape[1], 0.0)
    reward_probe = lambda algo: lambda params, b: {  # noqa: E731
        "nll": jnp.zeros(b.actions.shape), "uniform_nll": jnp.zeros(b.actions.shape),
        "q_data": jnp.broadcast_to(b.rewards[..., None], b.actions.shape) + 0.01 * b.task_ids[:, None, None]}
    monkeypatch.setattr(diagnose, "make_probe", reward_probe)
    recs, tasks, mcs = diagnose.collect(algo, None, buffers, mc, batches=3)
    np.testing.assert_allclose(recs["q_data"], mcs + 0.01 * tasks, rtol=1e-6)
    assert set(tasks) == {0, 1} and len(mcs) > 50 and mcs.max() > 0


def test_diagnose_probes_task_balanced_batches_of_a_run_trained_without_balance(setup, monkeypatch):
    """A run trained with one task per batch (data.balanced=false) is probed on balanced batches: one batch
    already holds every task (one-task batches left tasks without entries and the table crashed)."""
    import dataclasses
    import types

    import jax.numpy as jnp

    from mtmarl import diagnose

    algo, buffers = setup
    for change in ({"balanced": False}, {"tasks_per_batch": 1}):
        run = types.SimpleNamespace(cfg=dataclasses.replace(algo.cfg, **change))
        monkeypatch.setattr(diagnose, "make_probe", lambda algo: lambda params, b: {  # noqa: E731
            "nll": jnp.ones(b.actions.shape), "uniform_nll": jnp.ones(b.actions.shape)})
        recs, tasks, mcs = diagnose.collect(run, None, buffers, np.zeros(buffers.rewards.shape), batches=1)
        assert set(tasks) == {0, 1}, change
        rows = diagnose.task_stats(recs, tasks, mcs, ["a", "b"])
        assert [r["entries"] > 0 for r in rows] == [True, True]


@pytest.mark.slow  # the fast suite keeps test_diagnose_rows_align_records_with_the_datas_returns
def test_diagnose_cli_on_a_tiny_oryx_run(data_root, tmp_path, monkeypatch):
    """A 2-task MT Oryx run (stopped at its checkpoint of update 8, no evaluation) diagnosed end to end."""
    from hydra import compose, initialize_config_dir

    from mtmarl import diagnose, train

    out = tmp_path / "run"
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        cfg = compose("train", ["+algo=mt_oryx", "+tasks=mini", f"hydra.searchpath=[file://{data_root.parent / 'conf'}]",
                                f"data.root={data_root}", "training=quick", "training.updates=12",
                                "training.updates_per_call=4", "training.checkpoint_every=4", "training.devices=1",
                                "training.batch_size=8", "training.seq_len=8", "network.embed_dim=16",
                                "network.chunk_size=4", "algo.num_bins=11", "algo.adv_norm=true",
                                "algo.per_task_weights=true", "logger.neptune=false", "logger.progress=false"])
    train.run(cfg, run_dir=out, stop_after=8)
    result = diagnose.main([str(out), "--batches", "2"])
    rows = result["rows"]
    assert [r["task"] for r in rows] == list(TRAIN) and result["update"] == 8
    assert sum(r["weight_share"] for r in rows) == pytest.approx(1.0, rel=1e-5)
    assert sum(r["entry_share"] for r in rows) == pytest.approx(1.0, rel=1e-5)
    for r in rows:
        assert r["spearman"] is None or -1.0 <= r["spearman"] <= 1.0
        assert r["q_action_spread"] >= 0 and r["nll"] > 0 and 0 <= r["down_weighted"] <= 1
        # per-task weights average 1 in every task (within float rounding): share of mass = share of entries
        assert r["weight_share"] == pytest.approx(r["entry_share"], rel=1e-4)
    # the uniform baseline is log(#legal actions): the synthetic data has 5 actions, NOOP always legal
    assert all(0 < r["uniform_nll"] < np.log(5) for r in rows)
    md = (out / "diagnostics.md").read_text()
    assert "| g5-2a |" in md and "spearman" in md
    assert json.loads((out / "diagnostics.json").read_text())["rows"] == rows
    # --eval-episodes evaluates every task once (sampled and greedy), not once per row
    calls = []

    def fake_returns(algo, params, task_set, episodes, seed):
        calls.append(episodes)
        return {spec.name: (float(i), -float(i)) for i, spec in enumerate(task_set.train)}

    monkeypatch.setattr(diagnose, "eval_returns", fake_returns)
    rows = diagnose.diagnose(out, batches=1, eval_episodes=3)["rows"]
    assert calls == [3] and [(r["sampled_return"], r["greedy_return"]) for r in rows] == [(0.0, -0.0), (1.0, -1.0)]
