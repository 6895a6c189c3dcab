"""Recurrent MAPPO (``online.recurrent=true``): the training pass replays acting, resets after done, it collects."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import tiny_collect
from omegaconf import OmegaConf
from test_online import ToyEnv  # episodes of 2-4 steps

from mtmarl.configs import CONFIG_DIR
from mtmarl.data.vault import episode_returns
from mtmarl.errors import UserInputError
from mtmarl.online import ppo
from mtmarl.online.anakin import chunk_summary, to_experience
from mtmarl.online.collectors import get_system
from mtmarl.algos.registry import make_online_system, online_config
from mtmarl.online.rollout import carried_rollout, make_reset_pool, reset_where, start_from_pool
from mtmarl.online.system import Critic, MappoConfig, RecurrentNet, act_batch, actor_policy, replay_actor


TASK = "connector:grid=5,agents=2"
MAPPO = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "online" / "mappo.yaml"))
TINY = {**MAPPO, "recurrent": True, "gru_hidden": 8, "hidden": [16], "num_envs": 4, "rollout_len": 8,
        "updates_per_chunk": 2, "record_envs": 4, "record_len": 24}
B, T, G = 4, 8, 8


def test_config_defaults_and_validation():
    assert MappoConfig.from_mapping(MAPPO).recurrent is False  # the preset stays feed-forward
    cfg = online_config(TINY)
    assert cfg.recurrent and cfg.gru_hidden == 8
    with pytest.raises(UserInputError, match="split the envs"):
        online_config({**TINY, "num_envs": 5})
    with pytest.raises(UserInputError, match="true or false"):
        online_config({**TINY, "recurrent": "yes"})


def test_reset_where_zeroes_only_ended_envs():
    h = jnp.arange(1.0, 1.0 + 3 * 2 * 4).reshape(3, 2, 4)
    out = np.asarray(reset_where(jnp.array([False, True, False]), h))
    np.testing.assert_array_equal(out[1], 0)
    np.testing.assert_array_equal(out[[0, 2]], np.asarray(h)[[0, 2]])


def toy_pieces():
    env = ToyEnv()
    actor, critic = RecurrentNet((16,), G, env.num_actions), Critic((16,))
    k1, k2 = jax.random.split(jax.random.PRNGKey(3))
    params = {"actor": actor.init(k1, jnp.zeros((1, G)), jnp.zeros((1, env.obs_dim))),
              "critic": critic.init(k2, jnp.zeros((1, env.num_agents * env.obs_dim)))}
    # The initial logits head is near zero (orthogonal 0.01); scale it so the hidden state visibly matters.
    params["actor"]["params"]["Dense_1"]["kernel"] *= 300.0

    return env, actor, params, lambda p, ts, *carry: critic_values(p, ts.observation)


def critic_values(params, obs):
    view = obs.agents_view
    return Critic((16,)).apply(params["critic"], view.reshape(view.shape[:-2] + (-1,)))


def test_training_pass_reproduces_behaviour_logp_and_values_with_resets():
    """Before any update, the GRU re-run over each stored rollout from its stored initial state == acting.

    Two consecutive segments of every env: the second starts mid-episode (non-zero stored state), and
    episodes of 2-4 steps end inside every 7-step segment, so the resets after done are exercised.
    """
    env, actor, params, value_fn = toy_pieces()

    @jax.jit
    def two_segments(key):
        pool = make_reset_pool(env, key, B, 8)
        batch, h0 = start_from_pool(pool), jnp.zeros((B, env.num_agents, G))
        segs = []
        for i in range(2):
            batch = batch._replace(cursor=jnp.zeros_like(batch.cursor))
            batch, h1, traj = carried_rollout(env, lambda *a: act_batch(actor, value_fn, *a), value_fn, params,
                                              batch, h0, pool, jax.random.fold_in(key, i), 7)
            segs.append((jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), traj), h0, h1))
            h0 = h1
        return segs

    segs = two_segments(jax.random.PRNGKey(0))
    for tr, h0, h1 in segs:
        done = np.asarray(tr.done)
        assert done[:, :-1].any(), "the segment must contain an episode end followed by a step"
        logits = replay_actor(actor, params["actor"], h0, tr)
        logp = ppo.log_prob(logits, tr.obs.action_mask, tr.actions)
        np.testing.assert_allclose(np.asarray(logp), np.asarray(tr.logp), atol=1e-5)
        values = critic_values(params, tr.obs)
        np.testing.assert_allclose(np.asarray(values), np.asarray(tr.value), atol=1e-5)

        # Without the reset the replay does not reproduce acting: this check is not vacuous.
        no_reset = replay_actor(actor, params["actor"], h0, tr._replace(terminal=jnp.zeros_like(tr.terminal),
                                                                        truncated=jnp.zeros_like(tr.truncated)))
        bad = np.abs(np.asarray(ppo.log_prob(no_reset, tr.obs.action_mask, tr.actions) - tr.logp))
        assert bad.max() > 1e-2, bad.max()

    _, h_mid, _ = segs[1]
    starts_mid = np.asarray(segs[1][0].obs.step_count[:, 0]) > 0
    assert starts_mid.any() and (np.abs(np.asarray(h_mid)[starts_mid]).max(axis=(1, 2)) > 0).all()


def test_hidden_state_is_reset_after_done():
    """Acting: the step after an episode end starts from a zero hidden state; the carry out is zero after done."""
    env, actor, params, value_fn = toy_pieces()
    pool = make_reset_pool(env, jax.random.PRNGKey(5), B, 8)
    h0 = jax.random.normal(jax.random.PRNGKey(6), (B, env.num_agents, G))  # a non-zero start
    act = lambda *a: act_batch(actor, value_fn, *a)  # noqa: E731
    _, h_end, traj = jax.jit(lambda h: carried_rollout(env, act, value_fn, params, start_from_pool(pool), h, pool,
                                                       jax.random.PRNGKey(7), T))(h0)
    done = np.asarray(traj.done)  # (T, B)
    t, b = np.nonzero(done[:-1])
    assert t.size > 0
    # logits after done == the actor from zeros on that (reset) observation
    _, fresh = actor.apply(params["actor"], jnp.zeros((t.size, env.num_agents, G)),
                           traj.obs.agents_view[t + 1, b])
    want = ppo.log_prob(fresh, traj.obs.action_mask[t + 1, b], traj.actions[t + 1, b])
    np.testing.assert_allclose(np.asarray(traj.logp[t + 1, b]), np.asarray(want), atol=1e-5)
    assert (np.asarray(traj.obs.step_count[t + 1, b]) == 0).all()  # they are episode starts
    # the carried state after the last step is zero exactly where that step ended an episode
    zero = (np.abs(np.asarray(h_end)).max(axis=(1, 2)) == 0)
    np.testing.assert_array_equal(zero, done[-1])


def test_policy_carries_hidden_state():
    env, actor, params, _ = toy_pieces()
    policy = actor_policy(actor)
    carry = policy.init_carry(params["actor"], env.num_agents)
    assert carry.shape == (env.num_agents, G) and not np.asarray(carry).any()
    _, ts = env.reset(jax.random.PRNGKey(0))
    actions, carry = policy.act(params["actor"], ts.observation, carry, jax.random.PRNGKey(1))
    assert actions.shape == (env.num_agents,) and np.abs(np.asarray(carry)).max() > 0


def test_system_update_starts_at_the_behaviour_policy():
    """One epoch, one minibatch: the loss sees the rollout's own params, so the ratio is 1 (kl ~ 0) every update."""
    env = ToyEnv()
    cfg = online_config({**TINY, "epochs": 1, "minibatches": 1, "updates_per_chunk": 3})
    system = make_online_system(env, cfg)
    state = system.init(jax.random.PRNGKey(0))
    assert state.carry.shape == (system.num_devices, B, env.num_agents, G)
    state, metrics = system.train_chunk(state)
    kl = np.asarray(metrics.loss.approx_kl)
    assert kl.shape == (system.num_devices, 3) and np.abs(kl).max() < 1e-9, kl
    assert float(np.asarray(metrics.loss.clip_frac).max()) == 0.0
    assert np.abs(np.asarray(state.carry)).max() > 0  # carried into the next update


@pytest.mark.slow  # the fast suite keeps the feed-forward collect test and the recurrent replay tests
def test_collect_with_recurrent_mappo_writes_a_readable_vault(tmp_path):
    res, exp, spec = tiny_collect(tmp_path, TASK, TINY)
    assert res["system"] == "mappo"
    system = get_system(spec, spec.build(), online_config(TINY))
    state, metrics = system.train_chunk(system.init(jax.random.PRNGKey(0)))
    s = chunk_summary(metrics)
    assert all(np.isfinite(s[k]) for k in ("return", "policy_loss", "value_loss", "entropy", "approx_kl")), s
    assert episode_returns(to_experience(system.record(state, jax.random.PRNGKey(1)))).size > 0


def test_recurrent_critic_bootstraps_with_its_carry_and_replays_its_values():
    """online.critic_recurrent: the carry is (actor's, critic's); a step's bootstrap value is the value the critic
    gives the next step from the same state (where no episode ended), and the loss re-runs the critic over the
    rollout to the values acting recorded (value loss 0 against those values as targets)."""
    from mtmarl.tasks import TaskSpec
    from mtmarl.online.system import make_learner

    env = TaskSpec.parse(TASK).build()
    n = env.num_agents
    cfg = online_config({**TINY, "critic_input": "state_agent", "critic_recurrent": True})
    assert cfg.carries_state and online_config({**TINY, "recurrent": False, "critic_recurrent": True}).carries_state
    team = make_learner(env, online_config({**TINY, "critic_input": "state", "critic_recurrent": True}))
    assert team.init_carry(B)[1].shape == (B, G)  # a team value: one critic state per env
    learner = make_learner(env, cfg)
    params = learner.init(jax.random.PRNGKey(0))
    ha, hc = learner.init_carry(B)
    assert ha.shape == (B, n, G) and hc.shape == (B, n, G)  # per-agent values: one per (env, agent)
    hc = jax.random.normal(jax.random.PRNGKey(1), hc.shape)  # a non-zero start the replay must use
    pool = make_reset_pool(env, jax.random.PRNGKey(2), B, 8)
    _, (_, hc_end), traj = jax.jit(lambda h: learner.rollout(params, start_from_pool(pool), h, pool,
                                                             jax.random.PRNGKey(3), 3 * T))((ha, hc))
    done = np.asarray(traj.done)
    assert done.any() and (~done[:-1]).any()
    value, next_value = np.asarray(traj.value), np.asarray(traj.next_value)
    t, b = np.nonzero(~done[:-1])
    np.testing.assert_allclose(next_value[t, b], value[t + 1, b], atol=1e-5)
    assert np.abs(np.asarray(hc_end)).max() > 0
    batch_major = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), traj)
    adv = jnp.zeros(batch_major.value.shape)
    _, info = learner.loss(params, batch_major, adv, batch_major.value, (ha, hc))
    assert float(info.value) < 1e-10
    _, wrong = learner.loss(params, batch_major, adv, batch_major.value, (ha, jnp.zeros_like(hc)))
    assert float(wrong.value) > 1e-6  # the critic's start state matters, so the check above can fail


@pytest.mark.parametrize("variant", [
    {"recurrent": True, "critic_recurrent": True},  # sequences with both carries (the SMAX recipe's learner)
    pytest.param({"recurrent": False}, marks=pytest.mark.slow),  # feed-forward: single steps
])
def test_agent_minibatches_hold_single_agents_and_one_minibatch_gives_the_same_update(variant):
    """online.agent_minibatches: sample s*N+i is agent i of env (or step) s alone, with its critic input, start
    state and the env's flags; with one minibatch the update equals the whole-env update (same entries)."""
    from mtmarl.online.anakin import AXIS, advantages, samples
    from mtmarl.online.system import make_learner
    from mtmarl.tasks import TaskSpec

    env = TaskSpec.parse(TASK).build()
    n = env.num_agents
    base = {**TINY, **variant, "critic_input": "state_agent", "epochs": 2, "minibatches": 1}
    cfg, split_cfg = online_config(base), online_config({**base, "agent_minibatches": True})
    whole, split = make_learner(env, cfg), make_learner(env, split_cfg)
    assert whole.samples is None and split.samples is not None
    params = whole.init(jax.random.PRNGKey(0))
    carry0 = jax.tree.map(lambda h: jax.random.normal(jax.random.PRNGKey(1), h.shape), whole.init_carry(B))
    pool = make_reset_pool(env, jax.random.PRNGKey(2), B, 8)
    _, _, traj = jax.jit(lambda c: whole.rollout(params, start_from_pool(pool), c, pool, jax.random.PRNGKey(3),
                                                  3 * T))(carry0)
    assert np.asarray(traj.done).any()
    adv, targets = advantages(cfg, traj)
    ref = samples(cfg.carries_state, traj, adv, targets, carry0)
    mb_traj, mb_adv, _, mb_carry = split.samples(traj, adv, targets, carry0)
    seq = cfg.carries_state
    s = B if seq else B * 3 * T
    assert mb_traj.actions.shape[0] == s * n and mb_adv.shape == ((s * n, 3 * T, 1) if seq else (s * n, 1))
    ids = np.eye(n)
    for k in (0, n + 1, s * n - 1):
        row, i = divmod(k, n)
        at = (lambda x: x[row, :, i]) if seq else (lambda x: x[row, i])  # noqa: E731
        one = (lambda x: x[k, :, 0]) if seq else (lambda x: x[k, 0])  # noqa: E731
        for field in ("actions", "logp", "value"):
            np.testing.assert_array_equal(one(getattr(mb_traj, field)), at(getattr(ref[0], field)))
        np.testing.assert_array_equal(one(mb_traj.obs.agents_view), at(ref[0].obs.agents_view))
        np.testing.assert_array_equal(one(mb_adv), at(ref[1]))
        np.testing.assert_array_equal(mb_traj.reward[k], ref[0].reward[row])
        np.testing.assert_array_equal(mb_traj.done[k], ref[0].done[row])
        state = one(mb_traj.state)  # the critic's input: the env's state and agent i's one-hot id
        np.testing.assert_array_equal(state[..., :env.state_dim], ref[0].state[row])
        np.testing.assert_array_equal(state[..., env.state_dim:], np.broadcast_to(ids[i], state.shape[:-1] + (n,)))
        for h, h_ref in zip(jax.tree.leaves(mb_carry), jax.tree.leaves(ref[3])):
            np.testing.assert_array_equal(h[k, 0], h_ref[row, i])

    def update(learner, data):
        tx = cfg.optimiser()
        return ppo.optimise(learner.loss, tx, params, tx.init(params), data, jax.random.PRNGKey(4), cfg.epochs,
                            cfg.minibatches, AXIS)[0][0]

    one_device = lambda f, *a: jax.jit(jax.vmap(f, axis_name=AXIS))(*jax.tree.map(lambda x: x[None], a))  # noqa: E731
    p_whole = one_device(lambda d: update(whole, d), ref)
    p_split = one_device(lambda d: update(split, d), split.samples(traj, adv, targets, carry0))
    moved = [float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(p_whole), jax.tree.leaves(params))]
    assert max(moved) > 1e-4  # the update moves the params, so the equality below can fail
    for a, b in zip(jax.tree.leaves(p_whole), jax.tree.leaves(p_split)):
        np.testing.assert_allclose(a[0], b[0], rtol=1e-4, atol=1e-6)


def test_agent_minibatches_need_per_agent_values():
    with pytest.raises(UserInputError, match="online.agent_minibatches=true needs one value per agent"):
        online_config({**TINY, "critic_input": "state", "agent_minibatches": True})
    with pytest.raises(UserInputError, match="online.agent_minibatches must be true or false"):
        online_config({**TINY, "critic_input": "state_agent", "agent_minibatches": "yes"})
