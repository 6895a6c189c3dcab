"""HyGen: the hybrid ratio schedule (Eq. 3) by hand, mixed batches by source, the stage-2 loss against naive
loops, one compiled online chunk on the toy duel (what moves, what stays frozen, what the ring holds), the
offline algorithm on the padded SMAX layout, the collector's JP/TT, and one-line config errors.

The offline ``algo=hygen`` run is trained once per module on toy duel vaults (4 updates: 2 + 2)."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import smax_layout_update_and_act
from omegaconf import OmegaConf
from test_entity import duel_vaults, toy_env  # noqa: F401  (toy_env is a fixture)
from test_updet import SPEC, tiny_batch

from mtmarl.algos import registry
from mtmarl.configs import CONFIG_DIR
from mtmarl.errors import UserInputError
from mtmarl.networks.entity import unroll
from mtmarl.online import hygen, replay
from mtmarl.algos.registry import make_online_system, online_config, online_task_env
from mtmarl.tasks import TaskSpec

TASK = "toy_duel:agents=2,enemies=2,hp=3,horizon=4"  # padded to the duel set's 3 agents, 4 enemies
PRESET = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "online" / "hygen.yaml"))
SEQ, ENVS, CHUNK, BATCH = 4, 2, 2, 4
NET = {"width": 8, "heads": 2, "depth": 1, "ff_mult": 2}


@pytest.fixture(scope="module")
def run_dir(toy_env, tmp_path_factory):  # noqa: F811
    from mtmarl import train
    from mtmarl.experiments.config import compose_train

    root = duel_vaults(tmp_path_factory.mktemp("hygen"), 4)
    cfg = compose_train(
        [
            "+algo=hygen",
            "+tasks=duel",
            f"hydra.searchpath=[file://{root / 'conf'}]",
            f"data.root={root / 'vaults'}",
            "network.width=16",
            "network.heads=2",
            "training=quick",
            "training.updates=4",
            "training.updates_per_call=2",
            "training.log_every=2",
            "training.checkpoint_every=2",
            "training.eval_every=0",
            "training.devices=1",  # one device: fewer programs to compile
            "eval.devices=1",
            f"training.batch_size={BATCH}",
            f"training.seq_len={SEQ}",
            "algo.skill_updates=2",
            "algo.mixer_width=8",
            "algo.mixer_mix_width=8",
            "eval.episodes=2",
            "logger.neptune=false",
            "logger.progress=false",
        ]
    )
    train.run(cfg, run_dir=root / "run")
    return root / "run"


def tiny_online(run_dir, **kw) -> dict:
    """The online section of a tiny hybrid stage (a plain dict, as Hydra gives it)."""
    return {**PRESET, "init_from": str(run_dir), "num_envs": ENVS, "updates_per_chunk": CHUNK, "buffer_size": 3,
            "r_decay_steps": 16, "record_envs": 2, "record_len": 4, **kw}


def tiny(run_dir, **kw):
    return online_config(tiny_online(run_dir, **kw))


# --------------------------------------------------------------------------- schedule and batches
def test_hybrid_ratio_and_epsilon_follow_the_linear_decay_by_hand():
    cfg = hygen.HyGenOnlineConfig(
        init_from="x", r_start=0.9, r_end=0.2, r_decay_steps=1000, eps_start=0.8, eps_end=0.1, eps_decay_steps=400
    )
    # Eq. 3 read as max(R_end, R_start - (R_start - R_end) t / N): t = 0, N/2, N, 2N
    for t, want in ((0, 0.9), (500, 0.9 - 0.7 * 0.5), (1000, 0.2), (2000, 0.2)):
        assert float(hygen.hybrid_ratio(cfg, t)) == pytest.approx(want, abs=1e-6), t
    for t, want in ((0, 0.8), (200, 0.45), (400, 0.1), (4000, 0.1)):  # the replay loop's epsilon schedule
        assert float(replay.linear(cfg.eps_start, cfg.eps_end, cfg.eps_decay_steps, t)) == pytest.approx(want, abs=1e-6), t


def test_mixed_batch_holds_round_rh_b_offline_rows_first_and_the_rest_online():
    off, on = tiny_batch(0), tiny_batch(1)
    B = off.task_ids.shape[0]
    off = off._replace(obs=jnp.ones_like(off.obs), task_ids=jnp.full((B,), 7, jnp.int32))  # marked by source
    on = on._replace(obs=-jnp.ones_like(on.obs), task_ids=jnp.full((B,), -1, jnp.int32))
    mix = jax.jit(replay.mix_batches)
    for r_h in (0.0, 0.1, 0.3, 0.5, 0.62, 1.0):
        n = int(replay.offline_rows(jnp.float32(r_h), B))
        assert n == round(r_h * B)
        batch, from_offline = mix(off, on, n)
        source = np.asarray(batch.obs).reshape(B, -1)
        assert (source[:n] == 1).all() and (source[n:] == -1).all()
        assert (np.asarray(batch.task_ids) == np.where(np.arange(B) < n, 7, -1)).all()
        assert list(np.asarray(from_offline)) == [i < n for i in range(B)]
        np.testing.assert_array_equal(np.asarray(batch.actions[n:]), np.asarray(on.actions[n:]))


# --------------------------------------------------------------------------- the stage-2 loss
def _algo(**cfg):
    base = {
        "skill_dim": 0,
        "cql_weight": 0.0,
        "dist_weight": 0.0,
        "mixer_width": 8,
        "mixer_heads": 1,
        "mixer_mix_width": 8,
        "gamma": 0.9,
    }
    return registry.build("hygen", {**base, **cfg}, NET, SPEC)


def test_td_loss_consistency_and_rh_scaled_cql_match_naive_loops():
    batch = tiny_batch(0)
    alpha, eta = 2.0, 3.0
    algo = _algo(dist_weight=alpha, cql_weight=eta)
    assert algo.num_skills == NET["heads"]  # skill_dim 0: one skill per attention head
    state = algo.init(jax.random.PRNGKey(0), batch.obs[:1])
    noise = lambda p, k: jax.tree.map(lambda x: x + 0.3 * jax.random.normal(k, x.shape), p)  # noqa: E731
    params = noise(state.values.params, jax.random.PRNGKey(1))
    target = noise(state.values.params, jax.random.PRNGKey(2))
    skills = state.skills.params
    loss = jax.jit(algo.hybrid_loss)  # one program for every R_h (a traced input)
    total = {r: loss(params, target, skills, batch, r) for r in (0.0, 0.5, 1.0)}
    metrics = total[1.0][1]

    # naive: labels from the frozen encoder, double-Q next skills chosen in loops, the mixer (tested in
    # test_mixer.py) applied to the chosen per-agent Qs of every step, targets and the masked mean in loops
    enc = np.asarray(jax.jit(algo.skill_logits)(skills, batch.obs, batch.actions, batch.active))
    labels = enc.argmax(-1)
    fwd = jax.jit(lambda p: unroll(algo.nets["agent"], p["agent"], batch.obs, batch.resets, hiddens=True))
    (q, h), (qt, ht) = (jax.tree.map(np.asarray, fwd(p)) for p in (params, target))
    act, rew, term, resets = (np.asarray(x) for x in (batch.active, batch.rewards, batch.terminals, batch.resets))
    B, T, N = labels.shape
    q_data, q_next = np.zeros((B, T, N), np.float32), np.zeros((B, T, N), np.float32)
    for b in range(B):
        for t in range(T):
            for i in range(N):
                q_data[b, t, i] = q[b, t, i, labels[b, t, i]]
                q_next[b, t, i] = qt[b, t, i, int(np.argmax(q[b, t, i]))]  # online arg-max, target value
    mix = jax.jit(algo.nets["mixer"].apply)
    q_tot, v_next = np.asarray(mix(params["mixer"], q_data, h, act)), np.asarray(mix(target["mixer"], q_next, ht, act))
    errs = []
    for b in range(B):
        for t in range(T - 1):
            if not (term[b, t] or not resets[b, t + 1]) or not act[b, t].any():
                continue
            y = rew[b, t] + 0.9 * (1.0 - term[b, t]) * v_next[b, t + 1]
            errs.append(0.5 * (q_tot[b, t] - y) ** 2)
    naive_td = float(np.mean(errs))
    assert float(metrics["td_loss"]) == pytest.approx(naive_td, rel=1e-4)

    # consistency (Eq. 5): KL(local head || encoder) per active agent and step, masked mean
    local = np.asarray(algo.nets["local_head"].apply(params["local_head"], h), np.float64)
    lp = local - np.log(np.exp(local).sum(-1, keepdims=True))
    lq = enc - np.log(np.exp(enc.astype(np.float64)).sum(-1, keepdims=True))
    naive_kl = float((np.exp(lp) * (lp - lq)).sum(-1)[act].mean())
    assert float(metrics["consistency_loss"]) == pytest.approx(naive_kl, rel=1e-3)

    # Eq. 6: TD + alpha * consistency + eta * R_h * CQL (nothing of the CQL term at R_h = 0, linear in R_h)
    cql = float(metrics["cql_loss"])
    assert abs(cql) > 1e-3
    for r, (value, _) in total.items():
        assert float(value) == pytest.approx(naive_td + alpha * naive_kl + eta * r * cql, rel=1e-4), r
    # the HyGen paper's Table 2's fixed CQL: eta at every R_h (the same loss as dynamic at R_h = 1)
    fixed = jax.jit(_algo(dist_weight=alpha, cql_weight=eta, cql_schedule="fixed").hybrid_loss)
    for r in (0.0, 0.5):
        value, _ = fixed(params, target, skills, batch, r)
        assert float(value) == pytest.approx(naive_td + alpha * naive_kl + eta * cql, rel=1e-4), r
    with pytest.raises(UserInputError, match="algo.cql_schedule='scaled'"):
        _algo(cql_schedule="scaled")


@pytest.mark.slow  # the module fixture trains and acts with algo=hygen in the fast suite (toy entity layout)
def test_offline_hygen_builds_updates_and_acts_on_the_smax_layout():
    skills, policy = smax_layout_update_and_act("hygen", {"skill_dim": 3, "skill_updates": 1})
    assert {"recon_loss", "kl_loss"} <= set(skills)
    assert float(policy["hybrid_ratio"]) == 1.0 and {"consistency_loss", "decoder_loss", "td_loss"} <= set(policy)


# --------------------------------------------------------------------------- the online stage
@pytest.fixture(scope="module")
def chunk_run(run_dir):
    from mtmarl.online.collectors import get_system

    cfg = tiny(run_dir, tt_threshold=-1.0)  # the collector test's config: it reuses this compiled system
    spec = TaskSpec.parse(TASK)
    system = get_system(spec, online_task_env(spec.build(), cfg), cfg)
    s0 = system.init(jax.random.PRNGKey(0))
    s1, metrics = system.train_chunk(s0)
    return cfg, system, jax.device_get(s0), jax.device_get(s1), jax.device_get(metrics)


def test_one_chunk_trains_q_keeps_frozen_parts_and_fills_the_ring(chunk_run):
    cfg, system, s0, s1, m = chunk_run
    p0, p1 = s0.params, s1.params
    changed = lambda a, b: any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))  # noqa: E731
    same = lambda a, b: all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))  # noqa: E731
    for net in ("agent", "mixer", "local_head"):
        assert changed(p0.values.params[net], p1.values.params[net]), net
    assert changed(p0.skills.params["decoder"], p1.skills.params["decoder"])  # refined on the mixed batches
    for net in ("state_encoder", "skill_head"):  # frozen after stage 1
        assert same(p0.skills.params[net], p1.skills.params[net]), net
    assert same(p0.skills.opt_state, p1.skills.opt_state)
    assert same(p0.values.target_params, p1.values.target_params)  # hard copy only every 50 updates
    assert int(p1.values.steps[0]) == CHUNK * cfg.updates_per_rollout
    # the ring: ENVS sequences of SEQ steps per iteration, capacity 3 (wrapped once), env steps counted
    assert int(s1.ring.count[0]) == ENVS * CHUNK and int(s1.env_steps[0]) == ENVS * CHUNK * SEQ
    assert system.env_steps_per_update == ENVS * SEQ
    assert int(s0.ring.count[0]) == 0 and s1.ring.obs.shape[1:3] == (3, SEQ)
    resets, obs = s1.ring.resets[0], s1.ring.obs[0]
    assert resets.any() and np.abs(obs).sum() > 0
    # per iteration: R_h from the env steps before it, round(R_h * B) offline rows
    r = m.loss.extra["hybrid_ratio"][0]
    want = [max(cfg.r_end, cfg.r_start - (cfg.r_start - cfg.r_end) * (i * ENVS * SEQ) / cfg.r_decay_steps) for i in range(CHUNK)]
    np.testing.assert_allclose(r, want, rtol=1e-6)
    np.testing.assert_array_equal(m.loss.extra["offline_rows"][0], np.round(np.array(want) * BATCH))
    assert np.isfinite(m.loss.total).all()


def finetune_config(online: dict, out, seed: int, initial_eval: bool, episodes: int):
    """``python -m mtmarl.finetune``'s config for one chunk of the stage ``online`` on the toy task."""
    return OmegaConf.create({
        "task": TASK, "split": "train", "seed": seed, "online": online, "online_env": {},
        "finetune": {"budget": ENVS * SEQ * CHUNK, "out": str(out), "initial_eval": initial_eval,
                     "time_limit_min": None, "progress": False},
        "eval": {"episodes": episodes, "devices": None, "greedy": True}})


def test_collector_reports_curve_hybrid_ratio_jp_and_tt(run_dir, tmp_path):
    from mtmarl import finetune as launcher

    online = tiny_online(run_dir, tt_threshold=-1.0)
    cfg = finetune_config(online, tmp_path, seed=0, initial_eval=True, episodes=2)
    (res,) = launcher.run(cfg)
    assert res["system"] == "hygen" and res["env_steps"] == ENVS * SEQ * CHUNK
    assert res["jp"] == res["initial_return"] and np.isfinite(res["jp"]) and res["tt"] == 0
    assert "win_rate" in res
    (log,) = (tmp_path / "logs").rglob("*.jsonl")
    (row,) = [json.loads(x) for x in log.read_text().splitlines()]
    assert row["hybrid_ratio"] == pytest.approx(np.mean([1.0, 1.0 - 0.9 * ENVS * SEQ / 16]), abs=1e-4)
    assert row["policy_loss"] is None  # PPO columns are null for this system
    assert 0.0 <= row["win_rate"] <= 1.0 and row["episodes"] > 0 and row["offline_rows"] > 0
    entry = json.loads((tmp_path / "references.json").read_text())[TASK]
    assert entry["jp"] == res["jp"] and entry["tt"] == 0
    assert launcher.run(cfg) == [{"name": TASK, "split": "train", "skipped": True}]  # its entry exists: resumes


@pytest.mark.slow  # two hybrid stages and a set evaluation; the launcher and its report run fast in the collector test
def test_sources_play_the_sets_training_tasks_and_eval_set_reports_every_task(run_dir, tmp_path, monkeypatch):
    """online.sources=train: the collector's task only names the run, the envs play a mixture of the offline
    run's training tasks (each drawn per episode); online.eval_set: the final policy on every task of the set,
    evaluated as mtmarl.evaluate does, into the reference entry; a name outside the set is a one-line error
    listing the allowed ones."""
    from test_env_protocol import stacking_duels

    from mtmarl import finetune as launcher
    from mtmarl.envs import TaskMixture
    from mtmarl.evaluation.sets import evaluate_set
    from mtmarl.evaluation.references import load_references
    from mtmarl.online.collectors import get_system
    from mtmarl.training.policy import make_policy

    stacking_duels(monkeypatch)
    online = tiny_online(run_dir, sources=["train"], eval_set=True)
    mcfg = online_config(online)
    assert mcfg.sources == ("train",) and mcfg.eval_set
    env = online_task_env(TaskSpec.parse(TASK).build(), mcfg)
    inner = env.inner if not isinstance(env, TaskMixture) else env
    assert isinstance(inner, TaskMixture) and inner.names == ["2v2", "3v1"]
    assert env.spec == hygen.task_env(TaskSpec.parse(TASK).build(), tiny(run_dir)).spec  # the run's layout
    cfg = finetune_config(online, tmp_path, seed=3, initial_eval=False, episodes=4)
    (res,) = launcher.run(cfg)
    rows = res["set_eval"]
    assert [(r["name"], r["split"]) for r in rows] == [("2v2", "train"), ("3v1", "train"), ("2v4", "test")]
    entry = json.loads((tmp_path / "references.json").read_text())[TASK]
    assert [r["mean_return"] for r in entry["set_eval"]] == [r["mean_return"] for r in rows]
    # the report evaluates the learner's current Q agent and skills: the rows of evaluate_set
    # on the algorithm's acting params of the trained learner state
    system = get_system(TaskSpec.parse(TASK), env, mcfg)
    algo, _, _ = hygen.pretrained(mcfg)
    task_set, refs = hygen.offline_task_set(mcfg)
    state, _ = system.train_chunk(system.init(jax.random.PRNGKey(5)))
    report = hygen.final_report(mcfg, system, state, seed=3, episodes=4, greedy=True)["set_eval"]
    learner = jax.device_get(jax.tree.map(lambda x: x[0], state.params))
    again = evaluate_set(task_set, ["train", "test"], make_policy(algo, True), algo.acting_params(learner), 4, 3,
                         load_references(refs), devices=1, progress=False)
    assert [r["mean_return"] for r in report] == [r["mean_return"] for r in again]
    assert all(np.isfinite(r["mean_return"]) for r in again)
    with pytest.raises(UserInputError) as e:
        online_task_env(TaskSpec.parse(TASK).build(), tiny(run_dir, sources=["2v2", "9v9"]))
    msg = str(e.value)
    assert "\n" not in msg and "online.sources=['2v2', '9v9']" in msg and "'9v9'" in msg
    assert "allowed: train, or names among 2v2, 3v1, 2v4" in msg


# --------------------------------------------------------------------------- config errors
def test_bad_configs_are_one_line_errors_naming_the_key(run_dir, tmp_path, monkeypatch):
    def err(fn):
        with pytest.raises(UserInputError) as e:
            fn()
        msg = str(e.value)
        assert "\n" not in msg, msg
        return msg

    assert "online.r_end=0.9 > online.r_start=0.5" in err(lambda: tiny(run_dir, r_start=0.5, r_end=0.9))
    assert "online.r_decay_steps=0" in err(lambda: tiny(run_dir, r_decay_steps=0))
    assert "online.eps_end=1.5" in err(lambda: tiny(run_dir, eps_end=1.5))
    assert "online.init_from is not set" in err(lambda: tiny(run_dir, init_from=""))
    env = TaskSpec.parse(TASK).build()
    msg = err(lambda: make_online_system(env, tiny(run_dir, rollout_len=SEQ + 1)))
    assert f"online.rollout_len={SEQ + 1}" in msg and f"algo.seq_len={SEQ}" in msg
    assert "algo.skill_dim=1" in err(lambda: _algo(skill_dim=1))
    assert "network.heads=1" in err(lambda: registry.build("hygen", {}, {**NET, "heads": 1}, SPEC))
    missing = str(tmp_path / "nowhere")
    assert f"online.init_from={missing!r}" in err(lambda: online_task_env(env, tiny(run_dir, init_from=missing)))

    from mtmarl.training import restore

    real = restore.load_run

    def as_odis(path, which=None, seed=None):
        algo, params, cfg, info = real(path, which, seed)
        return registry.build("odis", {}, NET, SPEC), params, cfg, info

    monkeypatch.setattr(restore, "load_run", as_odis)
    hygen._restore.cache_clear()
    try:
        msg = err(lambda: online_task_env(env, tiny(str(run_dir) + "/")))
        assert "online.init_from=" in msg and "holds a 'odis' run" in msg and "algo=hygen" in msg
    finally:
        hygen._restore.cache_clear()
