"""BC-r: the return-to-go in sampled batches against a naive reversed loop, acting that counts the
return-to-go down by the rewards the evaluator reports, and the evaluator's ``observe`` call itself."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from helpers import random_task
from test_updet import NET, SPEC, tiny_batch

from mtmarl.algos import registry
from mtmarl.data.batching import SamplerConfig, make_buffers, sample
from mtmarl.evaluation.policies import Policy
from mtmarl.evaluation.rollout import make_evaluator, make_task_set_evaluator
from mtmarl.training.policy import make_policy


def _naive_rtg(rewards, terminals, truncations):
    out, g = np.zeros(len(rewards)), 0.0
    for t in reversed(range(len(rewards))):
        if terminals[t] or truncations[t]:
            g = 0.0  # step t is its episode's last: nothing after it counts
        g += rewards[t]
        out[t] = g
    return out


def test_batch_returns_to_go_match_a_naive_reversed_loop():
    rng = np.random.default_rng(0)
    tasks = [random_task(rng, 40, 2, 3, 4), random_task(rng, 33, 3, 3, 4)]
    buf = make_buffers(tasks, seq_len=12)
    batch = sample(buf, jax.random.PRNGKey(0), 0, SamplerConfig(batch_size=8, seq_len=12))
    crossed = 0
    for b in range(8):
        task = tasks[int(batch.task_ids[b])]
        want = _naive_rtg(task["rewards"], task["terminals"], task["truncations"])
        s = int(batch.starts[b])
        np.testing.assert_allclose(np.asarray(batch.returns[b]), want[s:s + 12], rtol=1e-5)
        crossed += bool(np.asarray(batch.resets[b, 1:]).any())
    assert crossed >= 4  # episode boundaries inside sequences were checked


def test_acting_counts_the_return_to_go_down_and_reads_it():
    algo = registry.build("bc_r", {"target_return": 3.0, "return_scale": 3.0}, NET, SPEC)
    batch = tiny_batch()
    state = algo.init(jax.random.PRNGKey(0), batch.obs[:1])
    policy = make_policy(algo, greedy=True)
    obs = batch.obs[0, 0]
    h0, rtg0 = policy.init_carry(state.params, 3)
    assert float(rtg0) == 3.0
    act = jax.jit(algo.act)
    _, _, (h, rtg) = act(state.params, (h0, jnp.float32(-7.0)), obs, batch.legals[0, 0], None, True, jax.random.PRNGKey(0))
    assert float(rtg) == 3.0  # an episode start asks for the target again
    h, rtg = policy.observe(state.params, (h, rtg), jnp.float32(0.5))
    assert float(rtg) == 2.5
    _, _, (_, rtg) = act(state.params, (h, rtg), obs, batch.legals[0, 0], None, False, jax.random.PRNGKey(1))
    assert float(rtg) == 2.5  # acting alone changes nothing
    # the return-to-go reaches the network: the policy reads it
    hidden = [act(state.params, (h0, jnp.float32(r)), obs, batch.legals[0, 0], None, False,
                  jax.random.PRNGKey(0))[2][0] for r in (0.0, 3.0)]
    assert not np.allclose(hidden[0], hidden[1])


def test_the_evaluator_reports_each_reward_to_the_policy():
    """One agent attacks enemy 0 until the rewards it was told about reach 1: every episode then returns
    exactly 1; without the ``observe`` calls it would keep hitting (enemies start with 1-3 hit points)."""
    from test_env_protocol import ToyDuel

    env = ToyDuel(agents=2, enemies=1, hp=3, horizon=4)

    def act(params, obs, told, key):
        hit = jnp.where(told < 1.0, 2, 0)
        return jnp.array([hit, 0], jnp.int32), told

    counting = Policy(lambda p, n: jnp.float32(0.0), act, lambda p, told, reward: told + reward)
    stats = make_evaluator(env, counting, 8, num_devices=1)(None, jax.random.PRNGKey(0))
    np.testing.assert_allclose(np.asarray(stats.returns), 1.0)
    deaf = make_evaluator(env, counting._replace(observe=lambda p, c, r: c), 8, num_devices=1)
    assert np.asarray(deaf(None, jax.random.PRNGKey(0)).returns).max() > 1.0
    # the task-set evaluator (as training evaluates) reports them too
    both = make_task_set_evaluator([env, ToyDuel(agents=2, enemies=1, hp=2, horizon=3)], counting, 8, num_devices=1)
    np.testing.assert_allclose(np.asarray(both(None, jax.random.split(jax.random.PRNGKey(1), 2)).returns), 1.0)
