"""The algorithm protocol: a two-stage algorithm defined and registered in this file trains through
``mtmarl.train`` (both stages for their update counts, resume across the stage boundary, a checkpoint
that restores without the run's config), plus the registry's and stage plan's errors."""

import dataclasses
import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import synthetic_vault

from mtmarl.algos import registry
from mtmarl.algos.common import BatchConfig
from mtmarl.algos.protocol import Algorithm, Stage, plan_stages, stage_at
from mtmarl.configs import CONFIG_DIR
from mtmarl.envs.layout import EnvSpec
from mtmarl.errors import UserInputError

ROOT = Path(__file__).resolve().parents[1]
TASK = "connector:grid=5,agents=2,horizon=8"
PRETRAIN, TRAIN, K = 8, 8, 4


# ---------------------------------------------------------------- the toy algorithm

@dataclasses.dataclass(frozen=True)
class ToyConfig(BatchConfig):
    lr: float
    pretrain_updates: int


@registry.register("toy_two_stage", ToyConfig)
def make_toy(cfg: ToyConfig, network: dict, env: EnvSpec) -> Algorithm:
    """Stage 1 tracks the observation mean (a stand-in for pretraining an encoder); stage 2 fits a
    linear policy on the centred observations by cross-entropy. Each stage counts its own updates."""
    del network
    n_actions = env.num_actions

    def init(key, obs):
        o = obs.shape[-1]
        return {"mu": jnp.zeros((o,)), "w": 0.01 * jax.random.normal(key, (o, n_actions)),
                "pretrained": jnp.zeros((), jnp.int32), "trained": jnp.zeros((), jnp.int32)}

    def logits(params, obs, legals):
        return jnp.where(legals, (obs - params["mu"]) @ params["w"], -1e9)

    def mean(x, axis_name):  # equal shards: the mean of the shards' means is the global mean
        return x if axis_name is None else jax.lax.pmean(x, axis_name)

    def pretrain(state, batch, key, axis_name=None):
        del key
        target = mean(batch.obs.mean(axis=(0, 1, 2)), axis_name)
        mu = state["mu"] + cfg.lr * (target - state["mu"])
        state = {**state, "mu": mu, "pretrained": state["pretrained"] + 1}
        return state, {"pretrain_gap": jnp.abs(target - mu).mean(), "pretrain_count": state["pretrained"],
                       "pretrain_seq_len": jnp.float32(batch.obs.shape[1])}

    def train(state, batch, key, axis_name=None):
        del key

        def loss(w):
            logp = jax.nn.log_softmax(logits({**state, "w": w}, batch.obs, batch.legals))
            nll = -jnp.take_along_axis(logp, batch.actions[..., None], -1)[..., 0]
            return jnp.sum(nll * batch.active) / jnp.maximum(batch.active.sum(), 1)

        value, grad = jax.value_and_grad(loss)(state["w"])
        grad = mean(grad, axis_name)
        state = {**state, "w": state["w"] - cfg.lr * grad, "trained": state["trained"] + 1}
        return state, {"bc_loss": mean(value, axis_name), "train_count": state["trained"]}

    def act(params, carry, obs, action_mask, active, reset, key, greedy=False):
        del active, reset
        z = logits(params, obs, action_mask)
        actions = jnp.where(greedy, z.argmax(-1), jax.random.categorical(key, z))
        return actions.astype(jnp.int32), None, carry + 1

    return Algorithm(name=cfg.name, cfg=cfg, sampler=cfg.sampler(), init=init,
                     # stage 1 samples its own batches: shorter sequences than the policy stage
                     stages=(Stage("pretrain", pretrain, cfg.pretrain_updates,
                                   dataclasses.replace(cfg.sampler(), seq_len=2)), Stage("train", train)),
                     act=act, init_carry=lambda num_agents=None: jnp.zeros((), jnp.int32),
                     acting_params=lambda s: {"mu": s["mu"], "w": s["w"]},
                     spec={"name": cfg.name, "n_actions": n_actions, "env": env.to_json(),
                           "algo": dataclasses.asdict(cfg)})


# ---------------------------------------------------------------- through the CLI

@pytest.fixture(scope="module")
def conf(tmp_path_factory):
    """(data root with one synthetic vault, Hydra search path holding the toy's yaml)."""
    base = tmp_path_factory.mktemp("toy")
    synthetic_vault(base / "vaults", TASK, episodes=6)
    algo_dir = base / "conf" / "algo"
    algo_dir.mkdir(parents=True)
    (algo_dir / "toy_two_stage.yaml").write_text(
        "name: toy_two_stage\nlr: 0.5\npretrain_updates: 8\n"
        "batch_size: 4\nseq_len: 4\nbalanced: true\ntasks_per_batch: null\nshuffle: true\nmask: true\n")
    return base / "vaults", base / "conf"


def _train(conf, run_dir, *extra, stop_after=None):
    from hydra import compose, initialize_config_dir

    from mtmarl import train

    root, search = conf
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        cfg = compose("train", ["+algo=toy_two_stage", f"task='{TASK}'", f"hydra.searchpath=[file://{search}]",
                                f"data.root={root}", "training=quick", f"training.updates={PRETRAIN + TRAIN}",
                                f"training.updates_per_call={K}", f"training.checkpoint_every={K}",
                                f"training.log_every={K}", "training.eval_every=0", "training.eval_episodes=4",
                                "training.batch_size=4", "training.seq_len=4", "eval.episodes=4",
                                "logger.neptune=false", "logger.progress=false", *extra])
    return train.run(cfg, run_dir=run_dir, stop_after=stop_after)


def _final_state(run_dir):
    """(carry, meta) of the run's latest checkpoint, rebuilt from the checkpoint's own description."""
    from mtmarl.training.checkpoint import Checkpointer
    from mtmarl.training.engine import Carry
    from mtmarl.training.restore import run_task_set

    ckpt = Checkpointer(run_dir / "checkpoints")
    try:
        meta = ckpt.meta("latest")
        algo, obs_dim = registry.from_spec(meta["algorithm"]), run_task_set(meta["config"]).env_spec.obs_dim
        state = jax.eval_shape(algo.init, jax.ShapeDtypeStruct((2,), jnp.uint32),
                               jax.ShapeDtypeStruct((1, 1, 1, obs_dim), jnp.float32))
        template = Carry(state, jax.ShapeDtypeStruct((2,), jnp.uint32), jax.ShapeDtypeStruct((), jnp.int32))
        return ckpt.restore(template, "latest")
    finally:
        ckpt.close()


def test_toy_two_stage_algorithm_trains_and_resumes_across_the_stage_boundary(conf, tmp_path):
    from mtmarl.training.checkpoint import write_checksums

    straight = tmp_path / "straight"
    rows = _train(conf, straight)
    assert len(rows) == 1 and rows[0]["split"] == "train" and np.isfinite(rows[0]["mean_return"])
    records = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "train/stage" in r]
    assert [r["step"] for r in train] == [4, 8, 12, 16] and [r["train/stage"] for r in train] == [0, 0, 1, 1]
    # each call ran its own stage's update only: counts after the K updates of each call, averaged
    assert [r.get("train/pretrain_count") for r in train] == [2.5, 6.5, None, None]
    assert [r.get("train/train_count") for r in train] == [None, None, 2.5, 6.5]
    assert [r.get("train/pretrain_seq_len") for r in train] == [2.0, 2.0, None, None]  # the stage's own sampler
    # beside metrics.jsonl: TensorBoard events holding the same scalars, and the learning-curve picture
    from PIL import Image

    from test_logs import jsonl_scalars, read_scalars, same_scalars

    same_scalars(read_scalars(straight), jsonl_scalars(straight / "metrics.jsonl"))
    with Image.open(straight / "curves.png") as image:
        assert image.format == "PNG"
    carry, meta = _final_state(straight)
    assert int(carry.state["pretrained"]) == PRETRAIN and int(carry.state["trained"]) == TRAIN
    assert int(carry.step) == PRETRAIN + TRAIN and meta["stage"] == "done"
    assert meta["algorithm"]["name"] == "toy_two_stage" and meta["config"]["task"] == TASK
    assert "api_token" not in meta["config"]["logger"]  # no secrets in checkpoints

    # stopped exactly at the stage boundary (a crash after the checkpoint of update 8), then resumed
    broken = tmp_path / "broken"
    assert _train(conf, broken, stop_after=PRETRAIN) == []
    carry8, meta8 = _final_state(broken)
    assert int(carry8.step) == PRETRAIN and meta8["stage"] == "train" and int(carry8.state["trained"]) == 0
    # a resumed run's training time counts every part of it: the part before the stop comes from its checkpoint,
    # here made far longer than this toy run can take, so counting only the time since the resume falls short
    assert meta8["train_seconds"] > 0
    (meta_file,) = (broken / "checkpoints" / "latest").glob(f"{PRETRAIN}/meta/metadata")
    meta_file.write_text(json.dumps({**json.loads(meta_file.read_text()), "train_seconds": 1000.0}))
    write_checksums(meta_file.parent.parent)  # as if saved so: the edit is not a corruption
    _train(conf, broken, "resume=true")
    resumed, resumed_meta = _final_state(broken)
    assert 1000.0 < resumed_meta["train_seconds"] < 1000.0 + 600
    assert json.loads((broken / "run.json").read_text())["train_seconds"] == pytest.approx(
        resumed_meta["train_seconds"], abs=5.0)
    for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(carry)):
        np.testing.assert_array_equal(a, b)

    # the checkpoint describes itself: evaluation needs neither config.yaml nor algo.json
    from mtmarl.training.restore import load_trained

    bare = tmp_path / "bare"
    shutil.copytree(straight / "checkpoints", bare / "checkpoints")
    policy, params, name, info = load_trained(bare, "latest")
    assert name == "toy_two_stage" and info["task"] == TASK and info["checkpoint"]["stage"] == "done"
    np.testing.assert_array_equal(params["w"], carry.state["w"])
    assert set(params) == {"mu", "w"}  # acting_params: only what act reads


def test_stage_counts_that_do_not_fit_training_updates_are_refused_before_the_run_dir_is_made(conf, tmp_path,
                                                                                             capsys):
    with pytest.raises(SystemExit) as exit_:
        _train(conf, tmp_path / "run", "training.updates=4")
    assert exit_.value.code == 2 and not (tmp_path / "run").exists()
    assert "training.updates=4 does not fit the stages' update counts {'pretrain': 8, 'train': None}" \
        in capsys.readouterr().err


def test_resume_with_another_algorithm_config_is_refused_naming_the_key(conf, tmp_path):
    from mtmarl.training.loop import check_same_algorithm

    algo = registry.build("toy_two_stage", {"lr": 0.5, "pretrain_updates": 8, "batch_size": 4, "seq_len": 4,
                                            "balanced": True, "tasks_per_batch": None, "shuffle": True,
                                            "mask": True}, None, 5)
    check_same_algorithm({"algorithm": algo.spec}, algo, tmp_path)  # the same: no error
    older = {**algo.spec, "algo": {k: v for k, v in algo.spec["algo"].items() if k != "tasks_per_batch"}}
    check_same_algorithm({"algorithm": older}, algo, tmp_path)  # a key added since, null now: the same run
    drawn = registry.build("toy_two_stage", {**algo.spec["algo"], "tasks_per_batch": 2}, None, 5)
    with pytest.raises(UserInputError, match=r"algo\.tasks_per_batch: checkpoint None vs now 2"):
        check_same_algorithm({"algorithm": older}, drawn, tmp_path)
    other = {**algo.spec, "algo": {**algo.spec["algo"], "lr": 0.1}}
    with pytest.raises(UserInputError, match=r"algo\.lr: checkpoint 0\.1 vs now 0\.5"):
        check_same_algorithm({"algorithm": other}, algo, tmp_path)


def test_checkpoint_of_another_train_state_is_refused(tmp_path):
    from mtmarl.training.checkpoint import Checkpointer
    from mtmarl.training.engine import Carry

    key, step = np.zeros(2, np.uint32), np.int32(4)
    ckpt = Checkpointer(tmp_path / "ckpt")
    ckpt.save_latest(4, Carry({"w": np.ones(3, np.float32)}, key, step),
                     {"updates": 4, "algorithm": {"name": "toy_two_stage"}})
    with pytest.raises(UserInputError, match="algorithm 'toy_two_stage' with structure"):
        ckpt.restore(Carry({"v": np.ones(3, np.float32)}, key, step))
    carry, meta = ckpt.restore(Carry({"w": np.zeros(3, np.float32)}, key, step))
    ckpt.close()
    assert meta["updates"] == 4 and carry.state["w"].tolist() == [1, 1, 1]


def test_a_checkpoint_that_does_not_describe_its_carry_is_refused_in_one_line(tmp_path):
    """A step whose meta records no carry structure (not written by mtmarl's Checkpointer) is refused, naming
    the step, instead of being restored into whatever template is at hand."""
    from mtmarl.training.checkpoint import Checkpointer
    from mtmarl.training.engine import Carry

    ckpt = Checkpointer(tmp_path / "ckpt")
    ocp = ckpt.ocp
    tree = {"params": {"w": np.ones(3, np.float32)}, "step": np.int32(8), "key": np.array([1, 2], np.uint32)}
    ckpt.latest.save(8, args=ocp.args.Composite(state=ocp.args.StandardSave(tree),
                                                meta=ocp.args.JsonSave({"updates": 8})), force=True)
    ckpt.latest.wait_until_finished()
    with pytest.raises(UserInputError, match=r"latest/8 .* records no carry structure") as err:
        ckpt.restore(Carry({"w": np.zeros(3, np.float32)}, np.zeros(2, np.uint32), np.int32(0)))
    ckpt.close()
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------- registry and stage plan

def test_unknown_algorithm_names_the_registered_ones():
    with pytest.raises(UserInputError) as err:
        registry.get("mt_nope")
    text = str(err.value)
    assert "'mt_nope'" in text
    for name in ("mt_oryx", "mt_cql_sable", "mt_bc_sable", "toy_two_stage"):
        assert name in text


def test_builtin_configs_have_one_owner_the_yaml():
    """Every key of a built-in algorithm comes from its yaml: the dataclasses hold no defaults."""
    for name in ("mt_oryx", "mt_cql_sable", "mt_bc_sable"):
        entry = registry.get(name)
        assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(entry.config)), name
        with pytest.raises(UserInputError, match="missing keys"):
            entry.config.from_dict({"name": name})
        assert registry.load_config(name).name == name


def _stage(name, updates=None):
    return Stage(name, lambda *a, **k: None, updates)


def test_stage_plan_places_the_open_stage_and_rejects_bad_counts():
    spans = plan_stages((_stage("pre", 8), _stage("main")), total=20, chunk=4)
    assert [(s.stage.name, s.start, s.end) for s in spans] == [("pre", 0, 8), ("main", 8, 20)]
    assert stage_at(spans, 0).stage.name == "pre" and stage_at(spans, 7).stage.name == "pre"
    assert stage_at(spans, 8).stage.name == "main" and stage_at(spans, 20).stage.name == "main"
    with pytest.raises(UserInputError, match="training.updates=4 does not fit"):
        plan_stages((_stage("pre", 8), _stage("main")), total=4)
    with pytest.raises(UserInputError, match="must sum to it"):
        plan_stages((_stage("pre", 8), _stage("main", 8)), total=20)
    with pytest.raises(UserInputError, match="not a multiple of training.updates_per_call=3"):
        plan_stages((_stage("pre", 8), _stage("main")), total=24, chunk=3)
    with pytest.raises(UserInputError, match="at most one may"):
        plan_stages((_stage("a"), _stage("b")), total=8)
    # a float count is a share of the total, rounded to the nearest multiple of the chunk (ODIS: 15k of 35k)
    spans = plan_stages((_stage("skills", 3 / 7), _stage("policy")), total=1500, chunk=25)
    assert [(s.start, s.end) for s in spans] == [(0, 650), (650, 1500)]
    assert plan_stages((_stage("pre", 8.0), _stage("main")), total=20, chunk=4)[0].end == 8
    with pytest.raises(UserInputError, match="share of training.updates in \\(0, 1\\), got 1.5"):
        plan_stages((_stage("pre", 1.5), _stage("main")), total=20)
    with pytest.raises(UserInputError, match="no total is set"):
        plan_stages((_stage("pre", 0.5), _stage("main")), total=None)


@pytest.mark.slow  # three population runs; resume = straight run is checked fast for one seed (test_training)
def test_a_resumed_population_keeps_each_seeds_best_as_a_straight_run_does(conf, tmp_path):
    """Per-seed model selection survives a crash: the resumed run restores the composite best checkpoint,
    so it ends with the best updates, scores and parameters of a run that was never interrupted."""
    from mtmarl.training.checkpoint import Checkpointer

    extra = ("training.population=2", "training.eval_every=4")
    _train(conf, tmp_path / "straight", *extra)
    assert _train(conf, tmp_path / "broken", *extra, stop_after=PRETRAIN + K) == []
    _train(conf, tmp_path / "broken", *extra, "resume=true")
    from test_logs import jsonl_scalars, read_scalars, same_scalars

    # two sessions' TensorBoard files read as one run, equal to the resumed metrics.jsonl
    assert len(list((tmp_path / "broken").glob("events.out.tfevents.*"))) == 2
    same_scalars(read_scalars(tmp_path / "broken"), jsonl_scalars(tmp_path / "broken" / "metrics.jsonl"))
    runs = {}
    for name in ("straight", "broken"):
        ckpt = Checkpointer(tmp_path / name / "checkpoints")
        meta = ckpt.meta("best")
        template = _final_state(tmp_path / name)[0]
        runs[name] = (meta["best_step"], meta["best_score"], ckpt.restore(template, "best")[0])
        ckpt.close()
        for i, seed in enumerate((0, 1)):
            run = json.loads((tmp_path / name / f"seed_{seed}" / "run.json").read_text())
            assert run["best_step"] == meta["best_step"][i] and run["evaluated"] == f"best (update {run['best_step']})"
    (steps, scores, best), (steps_r, scores_r, best_r) = runs["straight"], runs["broken"]
    assert steps == steps_r and scores == scores_r and len(steps) == 2
    for a, b in zip(jax.tree.leaves(best), jax.tree.leaves(best_r)):
        np.testing.assert_array_equal(a, b)
    for i in range(2):  # each seed's slice is its parameters at its own best update
        assert int(best.step[i]) == steps[i]
