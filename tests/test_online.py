"""Online MAPPO collector: GAE, PPO loss pieces, auto-reset rollouts, learning, collection."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct
from omegaconf import OmegaConf

from mtmarl import collect
from mtmarl.configs import CONFIG_DIR
from mtmarl.data.vault import episode_returns, read_vault, vault_path
from mtmarl.envs import Observation, TimeStep
from mtmarl.evaluation.references import merge_entry
from mtmarl.online import ppo
from mtmarl.online.rollout import make_reset_pool, rollout, start_from_pool, step_with_pool
from mtmarl.online.anakin import chunk_summary, to_experience
from mtmarl.online.collectors import get_system
from mtmarl.online.system import MappoConfig
from mtmarl.tasks import TaskSpec


TASK = "connector:grid=5,agents=2"
CONFIG = OmegaConf.load(CONFIG_DIR / "online" / "mappo.yaml")


# --------------------------------------------------------------------------- PPO pieces
def naive_gae(r, v, nv, term, done, gamma, lam):
    T = len(r)
    adv = np.zeros(T)
    nxt = 0.0
    for t in reversed(range(T)):
        delta = r[t] + gamma * (0.0 if term[t] else nv[t]) - v[t]
        nxt = delta + gamma * lam * (0.0 if done[t] else nxt)
        adv[t] = nxt
    return adv, adv + v


def test_gae_matches_naive_loop():
    rng = np.random.default_rng(0)
    T, B = 23, 3
    r, v, nv = rng.normal(size=(3, T, B))
    term = rng.random((T, B)) < 0.15
    trunc = (rng.random((T, B)) < 0.1) & ~term
    adv, tgt = ppo.gae(jnp.asarray(r), jnp.asarray(v), jnp.asarray(nv), jnp.asarray(term),
                       jnp.asarray(term | trunc), 0.97, 0.9)
    for b in range(B):
        want_adv, want_tgt = naive_gae(r[:, b], v[:, b], nv[:, b], term[:, b], (term | trunc)[:, b], 0.97, 0.9)
        np.testing.assert_allclose(adv[:, b], want_adv, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(tgt[:, b], want_tgt, rtol=1e-5, atol=1e-5)


def test_ppo_loss_pieces_by_hand():
    # Surrogate: ratios e^0.5 (A>0, clipped at 1.2) and e^-0.5 (A<0, clipped at 0.8); min of the two terms.
    logp, old = jnp.array([0.5, -0.5]), jnp.zeros(2)
    adv = jnp.array([2.0, -1.0])
    r = np.exp([0.5, -0.5])
    want = -np.mean([min(r[0] * 2, 1.2 * 2), min(r[1] * -1, 0.8 * -1)])
    assert float(ppo.clipped_surrogate(logp, old, adv, 0.2)) == pytest.approx(want, rel=1e-6)
    # Value loss: v moved 1.0 from old 0 towards target 2 -> clipped to 0.2; max of squared errors.
    v, v_old, g = jnp.array([1.0, -0.1]), jnp.array([0.0, 0.0]), jnp.array([2.0, 0.0])
    want_v = 0.5 * np.mean([max(1.0, (0.2 - 2) ** 2), max(0.01, 0.01)])
    assert float(ppo.clipped_value_loss(v, v_old, g, 0.2)) == pytest.approx(want_v, rel=1e-6)
    # Masked entropy and log-prob: the illegal action gets no mass.
    logits = jnp.array([[0.0, np.log(3.0), 5.0]])
    mask = jnp.array([[True, True, False]])
    assert float(ppo.entropy(logits, mask)[0]) == pytest.approx(-(0.25 * np.log(0.25) + 0.75 * np.log(0.75)), rel=1e-5)
    assert float(ppo.log_prob(logits, mask, jnp.array([1]))[0]) == pytest.approx(np.log(0.75), rel=1e-5)
    # Weights drop entries (padded agents) from the means.
    w = jnp.array([1.0, 0.0])
    assert float(ppo.clipped_surrogate(logp, old, adv, 0.2, w)) == pytest.approx(-min(r[0] * 2, 2.4), rel=1e-6)
    info = ppo.ppo_loss(jnp.zeros((2, 3)), jnp.ones((2, 3), bool), jnp.array([0, 1]), jnp.log(jnp.full(2, 1 / 3)),
                        jnp.array([1.0, 1.0]), v, v_old, g, 0.2, 0.5, 0.01)
    assert float(info.policy) == pytest.approx(-1.0, rel=1e-5) and float(info.approx_kl) == pytest.approx(0, abs=1e-6)
    assert float(info.total) == pytest.approx(-1.0 + 0.5 * want_v - 0.01 * np.log(3), rel=1e-5)
    # Per-agent advantages (..., N) stay per agent; a team advantage (...) applies to every agent.
    np.testing.assert_array_equal(ppo.per_agent(jnp.array([1.0, 2.0]), jnp.zeros((2, 3))), [[1.0] * 3, [2.0] * 3])
    each = ppo.ppo_loss(jnp.zeros((2, 3)), jnp.ones((2, 3), bool), jnp.array([0, 1]), jnp.log(jnp.full(2, 1 / 3)),
                        jnp.array([2.0, -1.0]), v, v_old, g, 0.2, 0.5, 0.01)
    assert float(each.policy) == pytest.approx(-np.mean([2.0, -1.0]), rel=1e-5)  # ratio 1: -mean of A_i


# --------------------------------------------------------------------------- auto-reset
@struct.dataclass
class ToyState:
    ident: jax.Array  # episode id drawn at reset
    length: jax.Array  # episode length (2..4) drawn at reset
    t: jax.Array


class ToyEnv:
    """Episodes of 2-4 steps; every observation carries (episode id, step)."""

    num_agents, obs_dim, num_actions, state_dim, horizon = 2, 2, 3, 0, 4

    def _ts(self, s: ToyState, reward, done):
        view = jnp.stack([s.ident, s.t.astype(jnp.float32)])[None].repeat(2, 0)
        obs = Observation(view, jnp.ones((2, 3), bool), jnp.ones((2,), bool), s.t)
        return TimeStep(obs, reward, done & (s.length == 3), done & (s.length != 3), jnp.zeros((0,)),
                        jnp.zeros((), bool))

    def reset(self, key):
        k1, k2 = jax.random.split(key)
        s = ToyState(jax.random.uniform(k1), jax.random.randint(k2, (), 2, 5), jnp.int32(0))
        return s, self._ts(s, jnp.float32(0), jnp.bool_(False))

    def step(self, s, actions):
        s = s.replace(t=s.t + 1)
        return s, self._ts(s, actions.sum().astype(jnp.float32), s.t >= s.length)


def test_lr_decay_updates_lowers_each_adam_step_linearly_to_zero_over_that_many_updates():
    """online.lr_decay_updates: U updates of epochs x minibatches optimiser steps each; the step of Adam on a
    constant gradient is the learning rate itself, so it reads off the schedule directly."""
    from mtmarl.errors import UserInputError

    cfg = MappoConfig.from_mapping({"lr": 0.002, "lr_decay_updates": 3, "epochs": 2, "minibatches": 2,
                                    "max_grad_norm": 100.0})
    tx, params = cfg.optimiser(), {"w": jnp.zeros(())}
    state, steps = tx.init(params), []
    for _ in range(14):
        update, state = tx.update({"w": jnp.ones(())}, state, params)
        steps.append(-float(update["w"]))
    expected = [0.002 * max(0.0, 1 - i / 12) for i in range(14)]  # 3 updates x 2 epochs x 2 minibatches = 12
    np.testing.assert_allclose(steps, expected, rtol=1e-4, atol=1e-9)
    constant = MappoConfig.from_mapping({"lr": 0.002}).optimiser()
    update, _ = constant.update({"w": jnp.ones(())}, constant.init(params), params)
    assert float(update["w"]) == pytest.approx(-0.002, rel=1e-4)
    for bad in (0, -3, 2.5, True, "all"):
        with pytest.raises(UserInputError, match=rf"online.lr_decay_updates={bad!r}; allowed: null"):
            MappoConfig.from_mapping({"lr_decay_updates": bad})


def test_clip_per_network_clips_actor_and_critic_on_their_own_norms():
    grads = {"actor": {"w": jnp.array([0.3, 0.4])}, "critic": {"v": jnp.array([3.0, 4.0])}}  # norms 0.5 and 5
    each = ppo.clip_each_entry(1.0)
    clipped, _ = each.update(grads, each.init(grads))
    np.testing.assert_allclose(clipped["actor"]["w"], [0.3, 0.4], rtol=1e-6)  # under the limit: unchanged
    np.testing.assert_allclose(clipped["critic"]["v"], [0.6, 0.8], rtol=1e-6)  # scaled to norm 1

    def actor_steps(clip_per_network: bool) -> list[float]:
        """Two Adam steps; the actor's gradient is the same both times, the critic's norm jumps 100x."""
        tx = MappoConfig.from_mapping({"lr": 0.01, "max_grad_norm": 1.0, "clip_per_network": clip_per_network}
                                      ).optimiser()
        params = {"actor": {"w": jnp.zeros(())}, "critic": {"v": jnp.zeros(())}}
        state, steps = tx.init(params), []
        for critic_grad in (0.1, 10.0):
            upd, state = tx.update({"actor": {"w": jnp.ones(()) * 0.5}, "critic": {"v": jnp.ones(()) * critic_grad}},
                                   state, params)
            steps.append(-float(upd["actor"]["w"]))
        return steps

    # apart: a constant actor gradient, so each Adam step is the learning rate; one norm: the critic's jump shrinks
    # the actor's second gradient (0.5 -> 0.5 / |(0.5, 10)|) and with it the step
    np.testing.assert_allclose(actor_steps(True), [0.01, 0.01], rtol=1e-3)
    joint = actor_steps(False)
    assert joint[0] == pytest.approx(0.01, rel=1e-3) and joint[1] < 0.8 * 0.01
    from mtmarl.errors import UserInputError
    with pytest.raises(UserInputError, match="online.clip_per_network must be true or false"):
        MappoConfig.from_mapping({"clip_per_network": "yes"})


def test_options_added_later_match_entries_recorded_before_them():
    from mtmarl.online.options import ADDED_OPTIONS, option_changes

    recorded = {"seed": 0, "online": {"lr": 0.001}}  # written before online.clip_per_network existed
    assert ADDED_OPTIONS["online.clip_per_network"] is False
    assert option_changes(recorded, {"seed": 0, "online": {"lr": 0.001, "clip_per_network": False}}) == []
    assert option_changes(recorded, {"seed": 0, "online": {"lr": 0.001, "clip_per_network": True}}) == \
        ["online.clip_per_network: False -> True"]
    assert option_changes({"seed": 0, "dagger": {}}, {"seed": 0, "dagger": {}}) == []  # no online section: none added
    assert option_changes(recorded, {"seed": 0, "online": {"lr": 0.001}}) == []  # a stage without the option


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_actor_and_critic_layers_use_the_chosen_activation(activation):
    """online.activation: the actor's logits and the critic's value equal a hand-written forward pass."""
    from mtmarl.errors import UserInputError
    from mtmarl.online.system import Actor, Critic

    fn = {"tanh": np.tanh, "relu": lambda z: np.maximum(z, 0.0)}[activation]
    x = np.asarray(jax.random.normal(jax.random.key(0), (5, 6)))
    actor, critic = Actor((7, 4), 3, activation), Critic((7,), activation)
    for module, args in ((actor, ((), x)), (critic, (x,))):
        params = module.init(jax.random.key(1), *args)["params"]
        h = x
        for i in range(len(module.hidden)):
            h = fn(h @ np.asarray(params[f"Dense_{i}"]["kernel"]) + np.asarray(params[f"Dense_{i}"]["bias"]))
        last = params[f"Dense_{len(module.hidden)}"]
        want = h @ np.asarray(last["kernel"]) + np.asarray(last["bias"])
        got = module.apply({"params": params}, *args)
        got = got[1] if module is actor else got[..., None]
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(UserInputError, match="online.activation='gelu'; allowed: tanh, relu"):
        MappoConfig.from_mapping({"activation": "gelu"})


def test_state_agent_critic_values_each_agent_from_the_state_and_its_id():
    """online.critic_input=state_agent: input (..., N, state + N) = the state beside agent i's one-hot id, one value
    per agent; a chunk trains with per-agent values (GAE per agent, each from the team reward)."""
    from mtmarl.errors import UserInputError
    from mtmarl.online.system import make_critic

    spec = TaskSpec.parse(TASK)
    env = spec.build()
    mcfg = MappoConfig.from_mapping({**CONFIG, "critic_input": "state_agent", "num_envs": 4, "rollout_len": 8,
                                     "updates_per_chunk": 2})
    critic, dim, critic_in, value_fn = make_critic(env, mcfg)
    n, s = env.num_agents, env.state_dim
    assert dim == s + n and s > 0
    state = np.asarray(jax.random.normal(jax.random.key(0), (3, s)))
    x = np.asarray(critic_in(None, jnp.asarray(state)))
    assert x.shape == (3, n, s + n)
    for i in range(n):
        np.testing.assert_array_equal(x[:, i, :s], state)
        np.testing.assert_array_equal(x[:, i, s:], np.broadcast_to(np.eye(n)[i], (3, n)))
    params = critic.init(jax.random.key(1), jnp.zeros((1, dim)))
    assert critic.apply(params, x).shape == (3, n)
    system = get_system(spec, env, mcfg)
    s0 = system.init(jax.random.PRNGKey(0))
    s1, metrics = system.train_chunk(s0)
    changed = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(s0.params["critic"]),
                                                        jax.tree.leaves(s1.params["critic"]))]
    assert all(changed) and np.isfinite(np.asarray(metrics.loss.total)).all()
    with pytest.raises(UserInputError, match="online.critic_input='agents'; allowed: obs, state, state_agent"):
        MappoConfig.from_mapping({"critic_input": "agents"})


def test_recurrent_actor_head_is_mlp_layers_between_the_gru_and_the_logits():
    """online.gru_head: the logits equal torso -> GRU cell -> head layers -> logits written out by hand; without a
    head the parameters are the plain recurrent actor's (same names, so earlier runs load unchanged)."""
    import flax.linen as nn

    from mtmarl.online.system import RecurrentNet

    x = np.asarray(jax.random.normal(jax.random.key(0), (6, 7)))
    h0 = np.asarray(jax.random.normal(jax.random.key(1), (6, 5)))
    actor = RecurrentNet((8,), 5, 3, "relu", head=(4,))
    params = actor.init(jax.random.key(2), h0, x)["params"]
    assert set(params) == {"Dense_0", "GRUCell_0", "Dense_1", "Dense_2"} and params["Dense_1"]["kernel"].shape == (5, 4)
    dense = lambda z, p: z @ np.asarray(p["kernel"]) + np.asarray(p["bias"])  # noqa: E731
    z = np.maximum(dense(x, params["Dense_0"]), 0.0)
    h1, y = nn.GRUCell(5).apply({"params": params["GRUCell_0"]}, jnp.asarray(h0), jnp.asarray(z))
    want = dense(np.maximum(dense(np.asarray(y), params["Dense_1"]), 0.0), params["Dense_2"])
    got_h, got = actor.apply({"params": params}, h0, x)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(got_h), np.asarray(h1), rtol=1e-6)
    plain = RecurrentNet((8,), 5, 3, "relu").init(jax.random.key(2), h0, x)["params"]
    assert set(plain) == {"Dense_0", "GRUCell_0", "Dense_1"} and plain["Dense_1"]["kernel"].shape == (5, 3)
    assert MappoConfig.from_mapping({"gru_head": [128]}).gru_head == (128,)


def test_rollout_auto_resets_from_the_pool():
    env, B, K, T = ToyEnv(), 3, 6, 14
    pool = make_reset_pool(env, jax.random.PRNGKey(1), B, K)
    batch = start_from_pool(pool)
    ids, lengths = np.asarray(pool.state.ident), np.asarray(pool.state.length)
    step = jax.jit(lambda b, a: step_with_pool(env, b, a, pool))
    cursor, t = np.ones(B, int), np.zeros(B, int)
    entry = np.zeros(B, int)
    for _ in range(T):
        batch, real = step(batch, jnp.ones((B, 2), jnp.int32))
        t += 1
        done = t >= lengths[np.arange(B), entry]
        np.testing.assert_array_equal(np.asarray(real.done), done)
        # the real timestep is the stepped one (same episode, step t)
        np.testing.assert_allclose(np.asarray(real.observation.agents_view[:, 0, 0]), ids[np.arange(B), entry])
        entry = np.where(done, cursor % K, entry)
        cursor = cursor + done
        t = np.where(done, 0, t)
        view = np.asarray(batch.timestep.observation.agents_view[:, 0])
        np.testing.assert_allclose(view[:, 0], ids[np.arange(B), entry])  # a pool reset after done
        np.testing.assert_array_equal(view[:, 1], t)
        assert not np.asarray(batch.timestep.done).any()

    # ``rollout`` scans the same step and reports finished episodes' returns (2 per step).
    def act(params, ts, key):
        return jnp.ones((ts.reward.shape[0], 2), jnp.int32), jnp.zeros((ts.reward.shape[0], 2)), jnp.zeros(ts.reward.shape)

    value = lambda params, ts: jnp.zeros(ts.reward.shape)
    _, tr = rollout(env, act, value, None, start_from_pool(pool), pool, jax.random.PRNGKey(0), T)
    done = np.asarray(tr.done)
    np.testing.assert_allclose(np.asarray(tr.episode_return)[done], 2.0 * np.asarray(tr.episode_length)[done])
    assert set(np.asarray(tr.episode_length)[done]) <= {2, 3, 4} and done.sum() >= B * (T // 4)


def test_replayed_starts_is_the_share_of_episodes_that_wrapped_the_pool():
    """Episodes of at most 2 steps in 8-step rollouts: every env ends at least 4 per update. With 2 pool entries per
    env, all its resets after the second replay one, so the share is (E - 2B) / E for E ended episodes and B envs."""
    spec = TaskSpec.parse("connector:grid=5,agents=2,horizon=2")
    mcfg = MappoConfig.from_mapping({**CONFIG, "num_envs": 4, "rollout_len": 8, "updates_per_chunk": 3,
                                     "resets_per_env": 2})
    system = get_system(spec, spec.build(), mcfg)
    _, metrics = system.train_chunk(system.init(jax.random.PRNGKey(0)))
    ended = np.asarray(metrics.episodes)[0]  # (K,) per update, summed over devices
    envs = 4 * system.num_devices
    assert (ended >= 4 * envs).all()
    expected = np.mean((ended - 2 * envs) / ended)
    assert expected >= 0.5 and chunk_summary(metrics)["replayed_starts"] == pytest.approx(expected, rel=1e-6)


# --------------------------------------------------------------------------- learning + collection
def mean_recorded_return(system, state, key) -> tuple[float, int]:
    rets = episode_returns(to_experience(system.record(state, key)))
    return float(rets.mean()), rets.size


def test_system_improves_return_on_small_connector():
    spec = TaskSpec.parse(TASK)
    mcfg = MappoConfig.from_mapping(CONFIG)
    system = get_system(spec, spec.build(), mcfg)
    state = system.init(jax.random.PRNGKey(0))
    before, n_before = mean_recorded_return(system, state, jax.random.PRNGKey(1))
    curve = []
    for _ in range(5):  # 5 chunks x 10 updates x 1024 steps (2 devices) = 51k env steps
        state, metrics = system.train_chunk(state)
        curve.append(chunk_summary(metrics)["return"])
    after, n_after = mean_recorded_return(system, state, jax.random.PRNGKey(1))
    assert n_before >= 50 and n_after >= 50
    # a random policy connects rarely (~0.06); 50k steps of MAPPO reach ~1.2
    assert after > before + 0.6, (before, after, curve)
    assert curve[-1] > curve[0] + 0.4, curve


def collect_cfg(tmp_path, **collect_over):
    cfg = OmegaConf.create({
        "task": None, "split": "all", "seed": 0, "online": CONFIG,
        # The test task spells out the default horizon: a different task key (so it is a separate
        # task with its own reference) but the same program, so it reuses the compilation cache.
        "tasks": {"name": "tiny", "env": "connector", "train": [{"grid": 5, "agents": 2}],
                  "test": [{"name": "5x5-2a-test", "grid": 5, "agents": 2, "horizon": 50}]},
        "collect": {"budget": 10240, "root": str(tmp_path / "vaults"), "uid": "default", "references": None,
                    "log_dir": None, "record": True, "progress": False, **collect_over},
        "eval": {"episodes": 32, "devices": None, "greedy": False}})
    return cfg


def test_collect_writes_vault_references_and_skips_finished(tmp_path):
    cfg = collect_cfg(tmp_path)
    root = tmp_path / "vaults"
    (root).mkdir()
    (root / "references.json").write_text(json.dumps({"other:task": {"return": 3.0}}))
    results = collect.run(cfg)
    assert [r["split"] for r in results] == ["train", "test"] and not any(r.get("skipped") for r in results)

    train_spec = TaskSpec.parse(TASK)
    exp = read_vault(vault_path(root, train_spec), train_spec)
    L = exp["actions"].shape[1]
    assert L == results[0]["transitions"] > 0
    assert exp["observations"].shape == (1, L, 2, 128) and exp["infos"]["legals"].shape == (1, L, 2, 5)
    assert exp["rewards"].shape == exp["terminals"].shape == exp["truncations"].shape == (1, L, 2)
    assert exp["infos"]["state"].shape == (1, L, 75)
    ends = (exp["terminals"][0, :, 0] + exp["truncations"][0, :, 0]) > 0
    assert ends[-1]  # completed episodes only

    refs = json.loads((root / "references.json").read_text())
    assert refs["other:task"] == {"return": 3.0}  # merged, not replaced
    entry = refs[TASK]
    assert entry["name"] == TASK and entry["episodes"] == 32 and np.isfinite(entry["return"])
    test_key = "connector:grid=5,agents=2,horizon=50"
    assert refs[test_key]["name"] == "5x5-2a-test"
    assert not (root / "connector" / "5x5-2a-test.vlt").exists()  # test tasks: reference only
    log = [json.loads(line) for line in (root / "logs" / "connector" / "grid=5,agents=2.jsonl").read_text().splitlines()]
    assert [r["env_steps"] for r in log] == [10240] and (root / "logs" / "connector" / "grid=5,agents=2.png").is_file()

    # A rerun skips both tasks; dropping the test task's reference reruns only that one.
    assert all(r.get("skipped") for r in collect.run(cfg))
    del refs[test_key]
    (root / "references.json").write_text(json.dumps(refs))
    again = collect.run(cfg)
    assert [bool(r.get("skipped")) for r in again] == [True, False]


def _merge_many(path: str, prefix: str, n: int) -> None:
    for i in range(n):
        merge_entry(path, f"{prefix}{i}", {"return": float(i)})


def test_concurrent_reference_merges_lose_no_entry(tmp_path):
    # Two collectors (make -j2 data) finishing tasks into one references.json: every
    # read-modify-write must see the other's entries (an unlocked merge drops some).
    import multiprocessing as mp

    path = tmp_path / "references.json"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_merge_many, args=(str(path), p, 150)) for p in ("a:", "b:")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    refs = json.loads(path.read_text())
    assert sorted(refs) == sorted(f"{p}{i}" for p in ("a:", "b:") for i in range(150))


_DIE_WHILE_WRITING = """
import json, os, signal, sys
import jax
from omegaconf import OmegaConf
from mtmarl import collect
from mtmarl.data.vault import write as V  # the module whose write_vault calls _fbx_write

real, calls = V._fbx_write, []

def dying(vlt, uid, exp, meta):  # the 2nd vault: write half of it, then die like `kill -9`
    calls.append(uid)
    if len(calls) == 2:
        real(vlt, uid, jax.tree.map(lambda x: x[:, : x.shape[1] // 2], exp), meta)
        os.kill(os.getpid(), signal.SIGKILL)
    real(vlt, uid, exp, meta)

V._fbx_write = dying
collect.run(OmegaConf.create(json.loads(sys.argv[1])))
"""


@pytest.mark.slow  # 46 s; the fast suite keeps the collector's skip-and-resume test
def test_collector_killed_mid_vault_write_keeps_finished_data_and_resumes(tmp_path):
    import subprocess
    import sys

    cfg = collect_cfg(tmp_path)
    cfg.tasks.train.append({"name": "second", "grid": 5, "agents": 2, "horizon": 50})
    cfg.tasks.test = []
    root = tmp_path / "vaults"
    proc = subprocess.run([sys.executable, "-c", _DIE_WHILE_WRITING, json.dumps(OmegaConf.to_container(cfg))],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == -9, proc.stderr[-2000:]
    first, second = collect.resolve_task_set(cfg).train
    exp = read_vault(vault_path(root, first), first)  # finished before the kill: intact, checksums pass
    refs = json.loads((root / "references.json").read_text())
    assert list(refs) == [TASK] and exp["actions"].shape[1] > 0
    half_written = list(vault_path(root, second).glob(".default.tmp-*"))
    assert half_written and not (vault_path(root, second) / "default").exists()

    results = collect.run(cfg)  # the rerun skips the finished task and completes the killed one
    assert [bool(r.get("skipped")) for r in results] == [True, False]
    again = read_vault(vault_path(root, second), second)
    assert again["actions"].shape[1] == results[1]["transitions"]
    assert not list(vault_path(root, second).glob(".default.tmp-*"))  # the dead writer's files are gone
    assert set(json.loads((root / "references.json").read_text())) == {TASK, second.adhoc}
