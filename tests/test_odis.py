"""ODIS: the skill-discovery loss and the policy stage's conservative and distillation terms against naive
references, what each stage trains and freezes, the team-level state encoder, and acting (arg-max skill,
then the decoder's legal arg-max action). Training through the CLI: tests/test_entity_algos_cli.py."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_updet import NET, SPEC, B, N, T, tiny_batch

from mtmarl.algos import registry
from mtmarl.errors import UserInputError
from mtmarl.networks.entity import unroll

K = 3  # skills
W = NET["width"]


def _algo(**cfg):
    return registry.build("odis", dict(cfg), NET, SPEC)


@pytest.fixture(scope="module")
def batch():
    return tiny_batch()


def _np(x):
    return np.asarray(x, np.float64)


def _log_softmax(z):
    z = z - z.max()
    return z - np.log(np.sum(np.exp(z)))


def _task_mean(per_task: dict[int, list[float]]) -> float:
    return float(np.mean([np.mean(v) for v in per_task.values()]))


def test_skill_discovery_loss_matches_a_naive_computation(batch):
    """-log p_dec(a | o, z) with z the Gumbel-softmax skill and the decoder's history token reset at episode
    starts, plus beta * KL(softmax(skill logits) || uniform), per task then over tasks."""
    beta, temp = 0.3, 0.7
    algo = _algo(beta=beta, gumbel_temperature=temp)
    sp = algo.init(jax.random.PRNGKey(0), batch.obs[:1]).skills.params
    key = jax.random.PRNGKey(5)
    total, metrics = jax.jit(algo.skill_loss)(sp, None, batch, key)

    logits = _np(algo.skill_logits(sp, batch.obs, batch.actions, batch.active))  # the encoder: tested below
    noisy = (logits + _np(jax.random.gumbel(key, logits.shape))) / temp         # the noise is the loss's input
    z = np.exp(noisy - noisy.max(-1, keepdims=True))
    z /= z.sum(-1, keepdims=True)
    step = jax.jit(lambda h, o, c: algo.nets["decoder"].apply(sp["decoder"], h, o, c))
    obs, legals, actions, active, resets = (np.asarray(x) for x in (batch.obs, batch.legals, batch.actions,
                                                                     batch.active, batch.resets))
    recon: dict[int, list[float]] = {}
    kl: dict[int, list[float]] = {}
    for b in range(B):
        task = int(batch.task_ids[b])
        h = jnp.zeros((N, W))
        for t in range(T):
            if resets[b, t]:
                h = jnp.zeros((N, W))
            h, dec = step(h, obs[b, t], jnp.asarray(z[b, t], jnp.float32))
            dec = _np(dec)
            for n in range(N):
                if not active[b, t, n]:
                    continue
                legal = np.flatnonzero(legals[b, t, n])
                logp = _log_softmax(dec[n, legal])
                recon.setdefault(task, []).append(-logp[list(legal).index(actions[b, t, n])])
                p = np.exp(_log_softmax(logits[b, t, n]))
                kl.setdefault(task, []).append(np.sum(p * np.log(p * K)))
    assert _task_mean(kl) > 1e-3  # the regulariser is not trivially zero
    np.testing.assert_allclose(float(metrics["recon_loss"]), _task_mean(recon), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["kl_loss"]), _task_mean(kl), rtol=1e-5)
    np.testing.assert_allclose(float(total), _task_mean(recon) + beta * _task_mean(kl), rtol=1e-5)


def test_state_encoder_reads_the_whole_team_and_ignores_inactive_agents(batch):
    algo = _algo()
    sp = algo.init(jax.random.PRNGKey(0), batch.obs[:1]).skills.params
    obs, actions, active = batch.obs[0, 0], batch.actions[0, 0], batch.active[0, 0]
    logits = algo.skill_logits(sp, obs, actions, active)
    other = actions.at[1].set((actions[1] + 1) % SPEC.num_actions)          # a teammate acts otherwise
    assert not np.allclose(algo.skill_logits(sp, obs, other, active)[0], logits[0])
    off = active.at[2].set(False)                                           # agent 2 padded: its inputs vanish
    a = algo.skill_logits(sp, obs, actions, off)
    b = algo.skill_logits(sp, obs.at[2].set(7.0), actions.at[2].set(0), off)
    np.testing.assert_allclose(np.asarray(a)[:2], np.asarray(b)[:2], rtol=1e-5, atol=1e-6)


def test_policy_stage_conservative_and_distillation_terms_match_naive_loops(batch):
    """Skill labels = arg-max of the frozen encoder given the data actions; conservative term (greedy_mixed):
    Q_tot(greedy skills) - Q_tot(labels) through the mixer per step; distillation: cross-entropy of the labels
    under the frozen skill head on the Q agent's token, per active agent; each per task, then over tasks."""
    algo = _algo(conservative="greedy_mixed", cql_weight=2.0, dist_weight=3.0)
    s = algo.init(jax.random.PRNGKey(0), batch.obs[:1])
    sp, vp = s.skills.params, s.values.params
    total, m = jax.jit(algo.value_loss)(vp, s.values.target_params, sp, batch, jax.random.PRNGKey(2))
    labels = np.asarray(algo.skill_logits(sp, batch.obs, batch.actions, batch.active)).argmax(-1)
    assert len(np.unique(labels[np.asarray(batch.active)])) > 1  # the labels are not one constant skill
    q, h = unroll(algo.nets["agent"], vp["agent"], batch.obs, batch.resets, hiddens=True)
    q, h = _np(q), np.asarray(h)
    mixer = jax.jit(lambda qs, e, mask: algo.nets["mixer"].apply(vp["mixer"], qs, e, mask))
    head = sp["skill_head"]["params"]
    kernel, bias = _np(head["kernel"]), _np(head["bias"])
    active = np.asarray(batch.active)
    cons: dict[int, list[float]] = {}
    dist: dict[int, list[float]] = {}
    for b in range(B):
        task = int(batch.task_ids[b])
        for t in range(T):
            if not active[b, t].any():
                continue
            greedy = q[b, t].argmax(-1)
            q_greedy = jnp.asarray(q[b, t, np.arange(N), greedy], jnp.float32)
            q_label = jnp.asarray(q[b, t, np.arange(N), labels[b, t]], jnp.float32)
            cons.setdefault(task, []).append(float(mixer(q_greedy, h[b, t], active[b, t]))
                                             - float(mixer(q_label, h[b, t], active[b, t])))
            for n in range(N):
                if active[b, t, n]:
                    logp = _log_softmax(_np(h[b, t, n]) @ kernel + bias)
                    dist.setdefault(task, []).append(-logp[labels[b, t, n]])
    assert _task_mean(cons) > 1e-3 and _task_mean(dist) > 0.1
    np.testing.assert_allclose(float(m["cql_loss"]), _task_mean(cons), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(float(m["dist_loss"]), _task_mean(dist), rtol=1e-5)
    np.testing.assert_allclose(float(total), float(m["td_loss"]) + 2.0 * _task_mean(cons) + 3.0 * _task_mean(dist),
                               rtol=1e-4)


def _leaves_equal(a, b) -> list[bool]:
    return [bool(np.array_equal(x, y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))]


def test_skill_stage_trains_only_the_skill_modules(batch):
    """Stage 1 moves the state encoder, skill head and decoder; the Q agent, mixer and target are untouched."""
    algo = _algo(lr=1e-2)
    assert [st.name for st in algo.stages] == ["skills", "policy"]
    s0 = algo.init(jax.random.PRNGKey(0), batch.obs[:1])
    s1, metrics = jax.jit(algo.stages[0].update)(s0, batch, jax.random.PRNGKey(1))
    assert np.isfinite(float(metrics["loss"]))
    assert all(_leaves_equal(s1.values, s0.values))
    for module in ("state_encoder", "skill_head", "decoder"):
        assert not all(_leaves_equal(s1.skills.params[module], s0.skills.params[module])), module


def test_policy_stage_freezes_the_skill_modules(batch):
    """Stage 2 moves the Q agent and mixer only (and their target copy); the state encoder, skill head and
    decoder, and stage 1's optimiser state, are bit-identical after it."""
    algo = _algo(lr=1e-2, target_update="polyak", tau=0.5)
    s0 = algo.init(jax.random.PRNGKey(0), batch.obs[:1])
    s1, metrics = jax.jit(algo.stages[1].update)(s0, batch, jax.random.PRNGKey(2))
    assert np.isfinite(float(metrics["loss"])) and int(s1.values.steps) == 1
    assert all(_leaves_equal(s1.skills, s0.skills))
    for module in ("agent", "mixer"):
        assert not any(_leaves_equal(s1.values.params[module], s0.values.params[module])), module
    assert not all(_leaves_equal(s1.values.target_params, s0.values.target_params))


def test_policy_loss_sends_no_gradient_into_the_encoder_or_decoder(batch):
    """The labels are an arg-max without gradient and the decoder is not used; the skill head does get one
    from the distillation (the stage's optimiser never applies it: previous test)."""
    algo = _algo()
    s = algo.init(jax.random.PRNGKey(0), batch.obs[:1])
    grads = jax.jit(jax.grad(lambda sp: algo.value_loss(s.values.params, s.values.target_params, sp, batch,
                                                        jax.random.PRNGKey(3))[0]))(s.skills.params)
    for module in ("state_encoder", "decoder"):
        assert all(not np.any(g) for g in jax.tree.leaves(grads[module])), module
    assert any(np.any(g) for g in jax.tree.leaves(grads["skill_head"]))


def test_acting_picks_the_arg_max_skill_then_the_decoders_legal_arg_max_action(batch):
    algo = _algo()
    s = algo.init(jax.random.PRNGKey(0), batch.obs[:1])
    params = algo.acting_params(s)
    obs, mask = batch.obs[0, 0], batch.legals[0, 0]
    act = jax.jit(algo.act)
    decoder = algo.nets["decoder"]
    zeros = jnp.zeros((N, W))
    by_skill = []
    for k in range(K):  # make the Q agent prefer skill k for every agent
        bias = params["agent"]["params"]["basic_head"]["bias"]
        agent = jax.tree.map(lambda x: x, params["agent"])
        agent["params"]["basic_head"]["bias"] = bias.at[k].add(1e3)
        acts, _, (h_q, h_dec) = act({**params, "agent": agent}, algo.init_carry(), obs, mask, batch.active[0, 0],
                                    True, jax.random.PRNGKey(0))
        h_want, logits = decoder.apply(params["decoder"], zeros, obs, jax.nn.one_hot(jnp.full(N, k), K))
        want = np.argmax(np.where(mask, logits, -np.inf), -1)
        np.testing.assert_array_equal(acts, want)
        np.testing.assert_allclose(h_dec, h_want, rtol=1e-5, atol=1e-6)
        assert bool(np.asarray(mask)[np.arange(N), acts].all())
        by_skill.append(tuple(np.asarray(acts)))
    assert len(set(by_skill)) > 1  # the skill changes the decoded actions: the check above can tell them apart
    # unperturbed: the skill each agent gets is its own arg-max under the Q agent
    _, q = algo.nets["agent"].apply(params["agent"], zeros, obs)
    _, logits = decoder.apply(params["decoder"], zeros, obs, jax.nn.one_hot(np.argmax(q, -1), K))
    acts, _, _ = act(params, algo.init_carry(), obs, mask, None, True, jax.random.PRNGKey(0))
    np.testing.assert_array_equal(acts, np.argmax(np.where(mask, logits, -np.inf), -1))


def test_bad_config_is_refused():
    with pytest.raises(UserInputError, match="algo.skill_dim=1 of 'odis'"):
        _algo(skill_dim=1)
    with pytest.raises(UserInputError, match="algo.gumbel_temperature=0"):
        _algo(gumbel_temperature=0.0)
    with pytest.raises(UserInputError, match="unknown config key algo.skil_dim.*did you mean algo.skill_dim"):
        _algo(skil_dim=4)
