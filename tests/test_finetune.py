"""Online fine-tuning of a pretrained policy (the M3 paper's online stage, ``online.system=finetune``): M3, and
MT BC-Sable (whose random agent order per step replay must draw again from act's keys).

Before any update the learner replays its own rollout's behaviour log-probabilities and sits at KL 0
from the pretrained policy; the initial policy acts like the offline ``algo.act``; the KL / AWAC term
against hand computations; one training chunk on the toy entity env moves the actor and critic but not
the frozen copy; JP / TT from a hand-made curve and through the collector; one-line errors for a bad
``online.init_from``. Each pretrained policy is trained once per module from a toy vault (5 updates).
"""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from omegaconf import OmegaConf
from test_entity import duel_vaults, toy_env  # noqa: F401  (toy_env is a fixture)

from mtmarl.configs import CONFIG_DIR
from mtmarl.errors import UserInputError
from mtmarl.online import ppo
from mtmarl.online import pretrained_ppo
from mtmarl.online.anakin import chunk_summary
from mtmarl.online.collectors import jump_and_threshold
from mtmarl.algos.registry import make_online_system, online_config, online_task_env
from mtmarl.online.rollout import make_reset_pool, start_from_pool
from mtmarl.tasks import TaskSpec

TASK = "toy_duel:agents=2,enemies=2,hp=3,horizon=4"  # padded to the duel set's 3 agents, 4 enemies
PRESET = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "online" / "finetune.yaml"))
B, T = 4, 6


ALGOS = {  # the pretrained algorithm and its tiny settings
    "m3": ["network.width=16", "algo.num_codes=4", "algo.code_dim=4", "algo.agent_dim=2", "algo.head_width=8"],
    # Sable: agents decoded in a fresh random order each step, which replay draws again from act's keys
    # (slow here: test_sable_replay_gives_the_logits_act_sampled_from keeps that in the fast suite)
    "mt_bc_sable": ["network=tiny", "network.embed_dim=16", "network.chunk_size=4"],
}


def test_sable_replay_gives_the_logits_act_sampled_from():
    """MT BC-Sable's ``replay`` of B=3 streams of T=7 random steps (episodes restarting mid-stream, random
    legal masks, 4 agents of which the last is padded) equals the masked logits ``act`` returned at every
    step, given the keys ``act`` was given: the agent order drawn from them changes the logits, so a replay
    with other keys (other orders) differs (checked)."""
    from mtmarl.algos.registry import build
    from mtmarl.networks import load_preset

    algo = build("mt_bc_sable", {"batch_size": 2, "seq_len": 4}, load_preset("tiny", embed_dim=16, chunk_size=4), 5)
    Tn, Bn, N, O, A = 7, 3, 4, 6, 5
    rng = np.random.default_rng(0)
    obs = jnp.asarray(rng.normal(size=(Tn, Bn, N, O)), jnp.float32)
    legals = rng.random((Tn, Bn, N, A)) < 0.6
    legals[..., 0] = True
    legals = jnp.asarray(legals)
    active = jnp.broadcast_to(jnp.arange(N) < 3, (Tn, Bn, N))
    resets = jnp.asarray(np.isin(np.arange(Tn), [0, 4])[:, None] & np.ones(Bn, bool))
    keys = jax.random.split(jax.random.PRNGKey(3), Tn * Bn).reshape(Tn, Bn, -1)
    state = algo.init(jax.random.PRNGKey(0), obs[:1, :1].swapaxes(0, 1))
    params = algo.acting_params(state)
    carry0 = jax.tree.map(lambda x: jnp.broadcast_to(x, (Bn, *x.shape)), algo.init_carry())

    @jax.jit
    def acting(carry0):
        def step(carry, xs):
            o, m, a, r, k = xs
            carry = jax.tree.map(lambda c: jnp.where(r.reshape((-1,) + (1,) * (c.ndim - 1)), 0.0, c), carry)
            actions, logits, carry = jax.vmap(algo.act, in_axes=(None, 0, 0, 0, 0, 0, 0))(params, carry, o, m, a, r, k)
            return carry, (actions, logits)
        return jax.lax.scan(step, carry0, (obs, legals, active, resets, keys))[1]

    actions, logits = acting(carry0)
    replayed, _ = jax.jit(algo.replay)(params, carry0, obs, actions, legals, active, resets, keys)
    real = np.asarray(active)[..., None] & np.asarray(legals)
    np.testing.assert_allclose(np.asarray(replayed)[real], np.asarray(logits)[real], atol=1e-5)
    same_key = jnp.broadcast_to(keys[:1, :1], keys.shape)  # another key: another agent order
    other, _ = jax.jit(algo.replay)(params, carry0, obs, actions, legals, active, resets, same_key)
    assert np.abs(np.asarray(other)[real] - np.asarray(logits)[real]).max() > 1e-3


@pytest.fixture(scope="module", params=["m3", pytest.param("mt_bc_sable", marks=pytest.mark.slow)])
def run_dir(toy_env, tmp_path_factory, request):  # noqa: F811
    from mtmarl import train
    from mtmarl.experiments.config import compose_train

    root = duel_vaults(tmp_path_factory.mktemp("ft"), 4)
    cfg = compose_train([f"+algo={request.param}", "+tasks=duel", f"hydra.searchpath=[file://{root / 'conf'}]",
                         f"data.root={root / 'vaults'}", "training=quick",
                         "training.updates=5", "training.updates_per_call=5", "training.log_every=5",
                         "training.checkpoint_every=5", "training.eval_every=0", "training.batch_size=4",
                         "training.seq_len=4", "algo.lr=3e-2", "eval.episodes=2", "logger.neptune=false",
                         "logger.progress=false", *ALGOS[request.param]])
    train.run(cfg, run_dir=root / "run")
    return root / "run"


def tiny(run_dir, **kw):
    return online_config({**PRESET, "init_from": str(run_dir), "num_envs": B, "rollout_len": T, "minibatches": 2,
                          "epochs": 1, "updates_per_chunk": 1, "hidden": [8], "record_envs": 2, "record_len": 4,
                          "lr": 3e-3, **kw})


@pytest.fixture(scope="module")
def pieces(run_dir):
    cfg = tiny(run_dir)
    env = online_task_env(TaskSpec.parse(TASK).build(), cfg)
    learner = pretrained_ppo.make_learner(env, cfg)
    algo, pre = pretrained_ppo.pretrained(cfg)
    params = learner.init(jax.random.PRNGKey(0))
    return cfg, env, learner, algo, pre, params


def test_env_is_padded_to_the_pretrained_layout(pieces):
    cfg, env, _, algo, _, _ = pieces
    assert env.num_agents == 3 and env.spec.to_json() == algo.spec["env"]
    assert online_task_env(env, cfg) is env  # already padded: unchanged


def test_before_any_update_replay_equals_behaviour_logp_and_kl_is_zero(pieces):
    """Two consecutive rollout segments (the second starts mid-episode from a carried state; episodes of
    at most 4 steps end inside each 6-step segment): replay under the current params gives the behaviour
    log-probs, and the loss's KL to the pretrained policy (its own carry) is 0."""
    cfg, env, learner, algo, _, params = pieces

    @jax.jit
    def segments(key):
        pool = make_reset_pool(env, key, B, 8)
        envs, carry, out = start_from_pool(pool), learner.init_carry(B), []
        for i in range(2):
            carry0 = carry
            envs = envs._replace(cursor=jnp.zeros_like(envs.cursor))
            envs, carry, traj = learner.rollout(params, envs, carry, pool, jax.random.fold_in(key, i), T)
            out.append((carry0, traj))
        return out

    for carry0, traj in segments(jax.random.PRNGKey(1)):
        obs = traj.obs
        logits, _ = algo.replay(params["actor"], carry0[0], obs.agents_view, traj.actions, obs.action_mask,
                                obs.active, obs.step_count == 0, traj.extras)
        np.testing.assert_allclose(np.asarray(ppo.log_prob(logits, obs.action_mask, traj.actions)),
                                   np.asarray(traj.logp), atol=1e-5)
        assert bool(np.asarray(traj.done).any())
        bm = lambda x: jnp.swapaxes(x, 0, 1)  # noqa: E731
        adv = jnp.asarray(np.random.default_rng(0).normal(size=(B, T)), jnp.float32)
        _, info = learner.loss(params, jax.tree.map(bm, traj), adv, bm(traj.value), carry0)
        assert abs(float(info.extra["kl_pretrained"])) < 1e-6 and float(info.approx_kl) < 1e-8
        assert float(info.clip_frac) == 0.0


def test_initial_policy_acts_like_the_offline_algorithm(pieces):
    """Greedy rollout of the fine-tuning learner == the offline ``algo.act`` stepped by hand, carry included."""
    _, env, learner, algo, pre, params = pieces
    pool = make_reset_pool(env, jax.random.PRNGKey(2), B, 8)
    _, _, traj = jax.jit(learner.rollout, static_argnums=(5, 6))(
        params, start_from_pool(pool), learner.init_carry(B), pool, jax.random.PRNGKey(3), T, True)
    act = jax.jit(algo.act, static_argnames="greedy")
    traj = jax.device_get(traj)
    for b in range(B):
        carry = algo.init_carry()
        for t in range(T):
            o = jax.tree.map(lambda x: x[t, b], traj.obs)
            actions, _, carry = act(pre, carry, o.agents_view, o.action_mask, o.active, o.step_count == 0,
                                    traj.extras[t, b], greedy=True)  # the key the rollout acted with
            np.testing.assert_array_equal(np.asarray(actions), traj.actions[t, b])


def test_kl_term_value_and_gradient_against_hand_computation():
    logits = jnp.array([[1.0, 0.0, -1.0], [0.5, 2.0, 0.3]])
    pre = jnp.array([[0.0, 0.0, 0.0], [1.0, -1.0, 9.0]])
    mask = jnp.array([[True, True, True], [True, True, False]])  # row 1: action 2 illegal (pre's 9.0 ignored)

    def naive(z, q, m):
        out = []
        for zr, qr, mr in zip(np.asarray(z), np.asarray(q), np.asarray(m)):
            p = np.exp(zr[mr]) / np.exp(zr[mr]).sum()
            r = np.exp(qr[mr]) / np.exp(qr[mr]).sum()
            out.append(float((p * np.log(p / r)).sum()))
        return np.array(out)

    kl = pretrained_ppo.pretrained_kl(logits, pre, mask)
    want = naive(logits, pre, mask)
    np.testing.assert_allclose(np.asarray(kl), want, rtol=1e-5)
    # gradient of sum KL w.r.t. the logits: p_i (log p_i - log q_i - KL) on legal actions, 0 on illegal
    grad = np.asarray(jax.grad(lambda z: pretrained_ppo.pretrained_kl(z, pre, mask).sum())(logits))
    for i in range(2):
        m = np.asarray(mask[i])
        z, q = np.asarray(logits[i])[m], np.asarray(pre[i])[m]
        p, r = np.exp(z) / np.exp(z).sum(), np.exp(q) / np.exp(q).sum()
        np.testing.assert_allclose(grad[i][m], p * (np.log(p) - np.log(r) - want[i]), rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(grad[i][~m], 0.0, atol=1e-12)
    # the uniform term is the (weighted) mean; a zero weight drops a row
    cfg = dataclasses.replace(pretrained_ppo.FinetuneConfig(init_from="x"), kl_weighting="uniform")
    term, mean = pretrained_ppo.regulariser(cfg, logits, pre, mask, jnp.array([0, 1]), jnp.zeros(2), jnp.zeros(2),
                                      jnp.array([1.0, 0.0]))
    assert float(term) == pytest.approx(want[0], rel=1e-5) and float(mean) == pytest.approx(want[0], rel=1e-5)
    # AWAC weights: exp(A / lambda) * pi_0(a) / pi_old(a), clipped
    w = pretrained_ppo.awac_weights(jnp.array([0.0, 1.0, 10.0]), jnp.log(jnp.array([0.5, 0.2, 0.5])),
                              jnp.log(jnp.array([0.25, 0.2, 0.5])), 0.5, 20.0)
    np.testing.assert_allclose(np.asarray(w), [2.0, np.exp(2.0), 20.0], rtol=1e-5)
    awac = dataclasses.replace(cfg, kl_weighting="awac", awac_temperature=1.0)
    actions, old = jnp.array([0, 1]), jnp.log(jnp.array([0.5, 0.5]))
    adv = jnp.array([0.0, 1.0])
    term, _ = pretrained_ppo.regulariser(awac, logits, pre, mask, actions, old, adv, None)
    logp = np.asarray(ppo.log_prob(logits, mask, actions))
    pre_p = np.exp(np.asarray(ppo.log_prob(pre, mask, actions)))
    hand = -np.mean(np.minimum(np.exp(np.asarray(adv)) * pre_p / 0.5, 20.0) * logp)
    assert float(term) == pytest.approx(hand, rel=1e-5)


@pytest.mark.parametrize("weighting", ["uniform", pytest.param("awac", marks=pytest.mark.slow)])
def test_one_chunk_trains_the_actor_and_critic_not_the_frozen_copy(run_dir, weighting):
    cfg = tiny(run_dir, kl_weighting=weighting, kl_coef=1.0)
    system = make_online_system(TaskSpec.parse(TASK).build(), cfg)
    state = system.init(jax.random.PRNGKey(0))
    new, metrics = system.train_chunk(state)
    summary = chunk_summary(metrics)
    assert all(np.isfinite(summary[k]) for k in ("policy_loss", "value_loss", "entropy", "kl_pretrained",
                                                  "regulariser")), summary
    changed = lambda a, b: any(not np.allclose(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))  # noqa: E731
    p0, p1 = jax.device_get(state.params), jax.device_get(new.params)
    assert changed(p0["actor"], p1["actor"]) and changed(p0["critic"], p1["critic"])
    for x, y in zip(jax.tree.leaves(p0["pretrained"]), jax.tree.leaves(p1["pretrained"])):
        np.testing.assert_array_equal(x, y)
    assert summary["kl_pretrained"] >= 0.0


def test_jump_point_and_time_to_threshold_from_a_hand_made_curve():
    curve = [(0, 3.0), (100, 5.0), (200, None), (300, 18.5), (400, 17.0), (500, 19.0)]
    assert jump_and_threshold(curve, 18.0) == {"jp": 3.0, "tt": 300, "tt_threshold": 18.0}
    assert jump_and_threshold(curve, 2.0)["tt"] == 0  # the initial policy already reaches it
    assert jump_and_threshold(curve, 25.0)["tt"] is None  # never reached
    assert jump_and_threshold(curve, None) == {"jp": 3.0, "tt": None, "tt_threshold": None}
    assert jump_and_threshold(curve[1:], 18.0)["jp"] is None  # no evaluation before the first update
    assert jump_and_threshold([], 1.0) == {"jp": None, "tt": None, "tt_threshold": 1.0}


@pytest.mark.slow  # the JP/TT arithmetic is tested on a hand-made curve in the fast suite
def test_collector_reports_jp_and_tt(run_dir, tmp_path):
    """Through ``python -m mtmarl.finetune``'s run: JP is the initial evaluation, TT against the chunk returns."""
    from mtmarl import finetune as launcher

    online = {**PRESET, "init_from": str(run_dir), "num_envs": B, "rollout_len": T, "minibatches": 2, "epochs": 1,
              "updates_per_chunk": 1, "hidden": [8], "record_envs": 2, "record_len": 4, "tt_threshold": -1.0}
    cfg = OmegaConf.create({
        "task": TASK, "split": "train", "seed": 0, "online": online, "online_env": {},
        "finetune": {"budget": 1, "out": str(tmp_path / "vaults"), "initial_eval": True, "time_limit_min": None,
                     "progress": False},
        "eval": {"episodes": 4, "devices": None, "greedy": False}})
    (res,) = launcher.run(cfg)
    assert res["jp"] == res["initial_return"] and np.isfinite(res["jp"])
    assert res["tt"] == 0 and res["tt_threshold"] == -1.0  # returns are >= 0 > -1: reached before any update
    entry = json.loads((tmp_path / "vaults" / "references.json").read_text())[TASK]
    assert entry["jp"] == res["jp"] and entry["tt"] == 0


def test_collect_refuses_a_stage_that_continues_an_offline_run(capsys):
    from mtmarl import collect

    cfg = OmegaConf.create({"task": TASK, "split": "train", "seed": 0, "online": {**PRESET, "init_from": "run"},
                            "collect": {"budget": 1}, "eval": {"episodes": 1}})
    with pytest.raises(SystemExit) as exit_:
        collect.run(cfg)
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and "\n" not in err
    assert "online=finetune continues an offline run" in err and "python -m mtmarl.finetune online=finetune" in err


def test_bad_init_from_is_a_one_line_error_naming_key_and_value(run_dir, tmp_path, monkeypatch):
    env = TaskSpec.parse(TASK).build()
    with pytest.raises(UserInputError, match="online.init_from is not set"):
        online_config({**PRESET, "init_from": ""})
    for bad in (str(tmp_path / "nowhere"), str(tmp_path)):  # missing; a directory but not a training run
        with pytest.raises(UserInputError) as err:
            online_task_env(env, online_config({**PRESET, "init_from": bad}))
        msg = str(err.value)
        assert "\n" not in msg and f"online.init_from={bad!r}" in msg, msg

    from mtmarl.training import restore

    real = restore.load_run

    def without_replay(path, which=None, seed=None):
        algo, params, cfg, info = real(path, which, seed)
        return dataclasses.replace(algo, replay=None), params, cfg, info

    monkeypatch.setattr(restore, "load_run", without_replay)
    pretrained_ppo._restore.cache_clear()
    try:
        name = json.loads((run_dir / "algo.json").read_text())["name"]
        with pytest.raises(UserInputError, match=rf"holds a '{name}' run, which cannot be fine-tuned.*replay") as err:
            online_task_env(env, online_config({**PRESET, "init_from": str(run_dir) + "/"}))
        assert "online.init_from=" in str(err.value) and "\n" not in str(err.value)
    finally:
        pretrained_ppo._restore.cache_clear()


def test_a_population_run_fine_tunes_from_the_seed_named_by_init_seed(toy_env, tmp_path):  # noqa: F811
    """A run of ``training.population=2`` holds both seeds in one checkpoint: ``online.init_seed`` picks the
    one to start from (its params, not the other seed's), and leaving it unset is a one-line error naming
    the key and the seeds there are."""
    from mtmarl import train
    from mtmarl.experiments.config import compose_train
    from mtmarl.training.restore import load_run

    root = duel_vaults(tmp_path, 4)
    cfg = compose_train(["+algo=m3", "+tasks=duel", f"hydra.searchpath=[file://{root / 'conf'}]",
                         f"data.root={root / 'vaults'}", "training=quick", "training.updates=2",
                         "training.updates_per_call=2", "training.log_every=2", "training.checkpoint_every=2",
                         "training.eval_every=0", "training.batch_size=4", "training.seq_len=4", "eval.episodes=2",
                         "training.population=2", "seed=3", "logger.neptune=false", "logger.progress=false",
                         *ALGOS["m3"]])
    run = root / "run"
    train.run(cfg, run_dir=run)
    pretrained_ppo._restore.cache_clear()
    try:
        _, own = pretrained_ppo.pretrained(tiny(run, init_seed=4))
        _, want, _, _ = load_run(run, seed=4)
        _, other, _, _ = load_run(run, seed=3)
        for a, b in zip(jax.tree.leaves(own), jax.tree.leaves(want), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert any(not np.array_equal(np.asarray(a), np.asarray(b))
                   for a, b in zip(jax.tree.leaves(own), jax.tree.leaves(other), strict=True))
        for seed in (None, 7):
            with pytest.raises(UserInputError) as err:
                pretrained_ppo.pretrained(tiny(run, init_seed=seed))
            msg = str(err.value)
            assert "\n" not in msg and "online.init_seed=S" in msg and "[3, 4]" in msg and f"got {seed}" in msg
    finally:
        pretrained_ppo._restore.cache_clear()


def test_a_task_larger_than_the_pretrained_network_is_one_line_naming_the_run_not_padding():
    """Fine-tuning pads a task to the network's layout; a task too large for it is refused in words about the
    network and the run it came from (no advice to pad, which cannot help)."""
    from mtmarl import tasks
    from mtmarl.envs import pad_to_network

    small = tasks.load("connector:grid=5,agents=2").train[0].build()
    large = tasks.load("connector:grid=5,agents=3").train[0].build()
    assert pad_to_network(small, small.spec, "online.init_from=run") is small
    padded = pad_to_network(small, large.spec, "online.init_from=run")
    assert padded.num_agents == 3
    with pytest.raises(UserInputError) as err:
        pad_to_network(large, small.spec, "online.init_from=run")
    text = str(err.value)
    assert "does not fit the network of online.init_from=run" in text, text
    assert "has 3 agents but the target layout allows at most 2" in text, text
    assert "at most 2 agents" in text and "padding" not in text and "\n" not in text, text
