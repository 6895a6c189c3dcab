"""UPDeT-m / UPDeT-l: the conservative term and the TD target against naive loops, the target network
and its updates, and training through the CLI on the toy entity env."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtmarl.algos import registry
from mtmarl.data.batching import Batch
from mtmarl.envs import ActionLayout, EntityGroup, EnvSpec, ObsLayout
from mtmarl.errors import UserInputError
from mtmarl.networks.entity import EntityAgent, EntityConfig, unroll

NET = {"width": 8, "heads": 1, "depth": 1, "ff_mult": 2}
SPEC = EnvSpec(3, ObsLayout((EntityGroup("own", 1, 2), EntityGroup("allies", 2, 2), EntityGroup("enemies", 2, 3))),
               ActionLayout(2, (("enemies", 2),), noop=0))
B, T, N, A = 4, 5, 3, 4


def tiny_batch(seed: int = 0) -> Batch:
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(B, T, N, SPEC.obs_dim)).astype(np.float32)
    legals = rng.random((B, T, N, A)) < 0.6
    legals[..., 0] = True
    actions = np.argmax(legals * rng.random((B, T, N, A)), -1)
    active = np.ones((B, T, N), bool)
    active[1, :, 2] = active[3, :, 1:] = False       # padded agents in two samples
    obs[~active] = 0.0
    terminals = np.zeros((B, T), bool)
    terminals[0, 2] = True                            # an episode ends inside sample 0...
    resets = np.zeros((B, T), bool)
    resets[:, 0] = resets[0, 3] = True                # ...and the next starts
    truncations = np.zeros((B, T), bool)
    truncations[2, 1], resets[2, 2] = True, True      # a cut episode: no target at step 1
    return Batch(obs=jnp.asarray(obs), actions=jnp.asarray(actions, jnp.int32),
                 rewards=jnp.asarray(rng.random((B, T)), jnp.float32), terminals=jnp.asarray(terminals),
                 truncations=jnp.asarray(truncations), discounts=jnp.asarray(1.0 - terminals, jnp.float32),
                 legals=jnp.asarray(legals), active=jnp.asarray(active), real=jnp.asarray(active),
                 resets=jnp.asarray(resets), returns=jnp.zeros((B, T)), task_ids=jnp.array([0, 1, 0, 1], jnp.int32),
                 starts=jnp.zeros(B, jnp.int32), perm=jnp.broadcast_to(jnp.arange(N), (B, N)))


def _algo(name, **cfg):
    return registry.build(name, dict(cfg), NET, SPEC)


def _agent():
    return EntityAgent(SPEC, EntityConfig(**NET))


@jax.jit
def _q(agent_params, batch):
    """Per-agent Q values of a batch, as a naive reference reads them."""
    return unroll(_agent(), agent_params, batch.obs, batch.resets)


def _perturb(tree, seed, scale=0.5):
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return jax.tree.unflatten(treedef, [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


@pytest.fixture(scope="module")
def batch():
    return tiny_batch()


def test_conservative_term_matches_a_naive_loop(batch):
    algo = _algo("updet_l", cql_weight=5.0)
    state = algo.init(jax.random.PRNGKey(0), batch.obs[:1])
    _, metrics = jax.jit(algo.loss)(state.params, state.target_params, batch, jax.random.PRNGKey(1))
    q = np.asarray(_q(state.params["agent"], batch), np.float64)
    legals, actions, active = (np.asarray(x) for x in (batch.legals, batch.actions, batch.active))
    per_task: dict[int, list[float]] = {}
    for b in range(B):
        for t in range(T):
            for n in range(N):
                if active[b, t, n]:
                    z = q[b, t, n][legals[b, t, n]]
                    lse = np.log(np.sum(np.exp(z - z.max()))) + z.max()
                    per_task.setdefault(int(batch.task_ids[b]), []).append(lse - q[b, t, n, actions[b, t, n]])
    want = np.mean([np.mean(v) for v in per_task.values()])
    assert want > 0.1  # the term is not trivially zero
    np.testing.assert_allclose(float(metrics["cql_loss"]), want, rtol=1e-5)


def test_greedy_mixed_conservative_term_matches_a_naive_loop(batch):
    """ODIS's form with VDN: the summed Q of each agent's greedy legal action minus that of the data actions."""
    algo = _algo("updet_l", conservative="greedy_mixed")
    state = algo.init(jax.random.PRNGKey(0), batch.obs[:1])
    _, metrics = jax.jit(algo.loss)(state.params, state.target_params, batch, jax.random.PRNGKey(1))
    q = np.asarray(_q(state.params["agent"], batch), np.float64)
    legals, actions, active = (np.asarray(x) for x in (batch.legals, batch.actions, batch.active))
    per_task: dict[int, list[float]] = {}
    for b in range(B):
        for t in range(T):
            gap = sum(np.max(q[b, t, n][legals[b, t, n]]) - q[b, t, n, actions[b, t, n]] for n in range(N)
                      if active[b, t, n])
            per_task.setdefault(int(batch.task_ids[b]), []).append(gap)
    want = np.mean([np.mean(v) for v in per_task.values()])
    assert want > 0.1
    np.testing.assert_allclose(float(metrics["cql_loss"]), want, rtol=1e-5)


def test_td_target_is_read_from_the_target_network(batch):
    """Double Q with VDN against a naive loop; without double Q the online parameters do not reach it."""
    gamma = 0.9
    algo = _algo("updet_l", gamma=gamma, double_q=True, td_lambda=0.0)
    state = algo.init(jax.random.PRNGKey(0), batch.obs[:1])
    online, target = state.params, _perturb(state.params, 1)
    got = np.asarray(jax.jit(algo.td_target)(online, target, batch))
    q_on, q_tg = np.asarray(_q(online["agent"], batch)), np.asarray(_q(target["agent"], batch))
    legals, active, r, d = (np.asarray(x) for x in (batch.legals, batch.active, batch.rewards, batch.discounts))
    valid = np.asarray(batch.terminals[:, :-1] | ~batch.resets[:, 1:])
    checked = 0
    for b in range(B):
        for t in range(T - 1):
            if not valid[b, t]:
                continue
            nxt = sum(q_tg[b, t + 1, n][np.argmax(np.where(legals[b, t + 1, n], q_on[b, t + 1, n], -np.inf))]
                      for n in range(N) if active[b, t + 1, n])
            np.testing.assert_allclose(got[b, t], r[b, t] + gamma * d[b, t] * nxt, rtol=1e-5, atol=1e-5)
            checked += 1
    assert checked == B * (T - 1) - 1  # only the truncated step has no target

    plain = _algo("updet_m", double_q=False)
    s = plain.init(jax.random.PRNGKey(0), batch.obs[:1])
    td_target = jax.jit(plain.td_target)
    y = td_target(s.params, s.target_params, batch)
    np.testing.assert_array_equal(td_target(_perturb(s.params, 2), s.target_params, batch), y)
    assert not np.allclose(td_target(s.params, _perturb(s.target_params, 3), batch), y)
    # and the mixer's target copy matters too (not only the agent's)
    moved = dict(s.target_params, mixer=_perturb(s.target_params["mixer"], 4))
    assert not np.allclose(td_target(s.params, moved, batch), y)


@pytest.mark.parametrize("mode", ["hard", "polyak"])
def test_target_network_updates(batch, mode):
    algo = _algo("updet_m", target_update=mode, target_update_interval=2, tau=0.25, lr=1e-2)
    update = jax.jit(algo.stages[0].update)
    s0 = algo.init(jax.random.PRNGKey(0), batch.obs[:1])
    s1, m1 = update(s0, batch, jax.random.PRNGKey(1))
    s2, _ = update(s1, batch, jax.random.PRNGKey(2))
    assert np.isfinite(float(m1["loss"])) and int(s2.steps) == 2
    leaf = lambda tree: np.asarray(jax.tree.leaves(tree)[0])  # noqa: E731
    if mode == "hard":
        np.testing.assert_array_equal(leaf(s1.target_params), leaf(s0.target_params))  # not yet
        np.testing.assert_array_equal(leaf(s2.target_params), leaf(s2.params))         # copied at update 2
    else:
        np.testing.assert_allclose(leaf(s1.target_params), 0.25 * leaf(s1.params) + 0.75 * leaf(s0.target_params),
                                   rtol=1e-6)
    assert not np.allclose(leaf(s2.params), leaf(s0.params))


def test_acting_is_greedy_over_legal_actions_and_bad_config_is_refused(batch):
    algo = _algo("updet_m")
    s = algo.init(jax.random.PRNGKey(0), batch.obs[:1])
    obs, mask = batch.obs[0, 0], batch.legals[0, 0]
    acts, _, h = jax.jit(algo.act)(s.params, algo.init_carry(), obs, mask, batch.active[0, 0], True, jax.random.PRNGKey(0))
    _, q = _agent().apply(s.params["agent"], jnp.zeros((N, NET["width"])), obs)
    np.testing.assert_array_equal(acts, np.argmax(np.where(mask, q, -np.inf), -1))
    eps = _algo("updet_l", epsilon=1.0)
    act = jax.jit(eps.act)
    drawn = [act(s.params, eps.init_carry(), obs, mask, None, True, jax.random.PRNGKey(k))[0] for k in range(8)]
    assert all(bool(np.asarray(mask)[np.arange(N), a].all()) for a in drawn)  # random, but legal
    assert len({tuple(np.asarray(a)) for a in drawn}) > 1
    with pytest.raises(UserInputError, match="target_update='soft'.*'hard', 'polyak'"):
        _algo("updet_m", target_update="soft")
    with pytest.raises(UserInputError, match="conservative='cql'.*'logsumexp', 'greedy_mixed'"):
        _algo("updet_l", conservative="cql")
    with pytest.raises(UserInputError, match="algo.mixer_width=6 of 'updet_m' must be divisible by algo.mixer_heads=4"):
        _algo("updet_m", mixer_width=6, mixer_heads=4)
    with pytest.raises(UserInputError, match="algo.epsilon=2"):
        _algo("updet_l", epsilon=2.0)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["updet_m", "bc_r", "odis"])
def test_one_and_two_devices_give_the_same_update(name):
    """The data-parallel contract (``mtmarl.algos.reductions``): a batch split over two devices gives
    the single-device update, metrics included (ODIS: one update of each stage, Gumbel noise included)."""
    from helpers import one_update_on_one_and_two_devices, random_task

    from mtmarl.data.batching import make_buffers

    rng = np.random.default_rng(1)
    buffers = make_buffers([random_task(rng, 30, 3, SPEC.obs_dim, A), random_task(rng, 25, 2, SPEC.obs_dim, A)],
                           seq_len=4)
    extra = {"skill_updates": 1} if name == "odis" else {}
    algo = registry.build(name, {"batch_size": 6, "seq_len": 4, "lr": 3e-3, **extra}, NET, SPEC)
    opts = (lambda s: [s.skills.opt_state, s.values.opt_state]) if name == "odis" else (lambda s: [s.opt_state])
    one_update_on_one_and_two_devices(algo, buffers, stages=len(algo.stages), opt_states=opts)
