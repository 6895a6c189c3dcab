"""Task-balanced batching: counts, round-robin rotation, contiguity, shuffling, padding, ablations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtmarl.data.batching import (SamplerConfig, make_buffers, make_sampler, return_range, shard_assignment,
                                   shard_tasks, task_assignment, value_table, with_slots)
from mtmarl.errors import UserInputError

A = 5
# (steps, agents, obs features, episode length): lengths differ so the stacked arrays need time padding
SPECS = [(40, 2, 3, 7), (23, 3, 5, 5), (57, 4, 4, 11)]


def _task(m, L, n, o, ep):
    rng = np.random.default_rng(m)
    t = np.arange(L)[:, None, None]
    obs = (1000 * (m + 1) + t + 0.1 * np.arange(n)[None, :, None] + 0.01 * np.arange(o)[None, None, :])
    legals = rng.random((L, n, A)) < 0.6
    legals[..., 0] = True
    actions = np.argmax(legals * rng.random((L, n, A)), -1)
    end = (np.arange(L) % ep) == ep - 1
    return dict(obs=obs.astype(np.float32), actions=actions, legals=legals,
                rewards=np.broadcast_to((m + 1) * 100.0 + np.arange(L)[:, None], (L, n)),  # per-agent copies
                terminals=end & (np.arange(L) % 2 == 0), truncations=end & (np.arange(L) % 2 == 1))




TASKS = [_task(m, *s) for m, s in enumerate(SPECS)]
T = 6


@pytest.fixture(scope="module")
def buffers():
    return make_buffers(TASKS, seq_len=T)


def test_buffers_padding(buffers):
    M, L, N, O = buffers.obs.shape
    assert (M, L, N, O) == (3, 57, 4, 5)
    np.testing.assert_array_equal(buffers.lengths, [40, 23, 57])
    act = np.asarray(buffers.active)
    np.testing.assert_array_equal(act, [[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]])
    obs, leg = np.asarray(buffers.obs), np.asarray(buffers.legals)
    assert (obs[0, :, 2:] == 0).all() and (obs[0, :, :, 3:] == 0).all() and (obs[2, :, :, 4:] == 0).all()
    assert (obs[0, 40:] == 0).all() and (obs[1, :, 3:] == 0).all() and (obs[1, :23, :3, 4] != 0).all()
    assert leg[0, :, 2:, 0].all() and not leg[0, :, 2:, 1:].any()
    np.testing.assert_array_equal(np.asarray(buffers.rewards)[1, :23], 200.0 + np.arange(23))
    first = np.asarray(buffers.first)[0, :40]
    assert first[0] and first[7] and first[14] and not first[6] and first.sum() == 6
    with pytest.raises(UserInputError):
        make_buffers(TASKS, seq_len=24)  # task 1 has 23 steps
    lo, hi = return_range(TASKS[:1], 0.0)
    assert (lo, hi) == (100.0, 139.0)


@pytest.mark.parametrize("B,M", [(7, 3), (8, 3), (3, 5), (6, 3)])
def test_task_counts_round_robin(B, M):
    q, r = divmod(B, M)
    assign = jax.jit(task_assignment, static_argnums=(1, 2))
    totals = np.zeros(M, int)
    for step in range(3 * M):
        counts = np.bincount(np.asarray(assign(step, B, M)), minlength=M)
        extra = {(step * r + j) % M for j in range(r)}
        np.testing.assert_array_equal(counts, [q + (m in extra) for m in range(M)])
        totals += counts
        if step % M == M - 1:  # every window of M consecutive updates is fair
            assert (totals == totals[0]).all(), totals
    assert totals.sum() == 3 * M * B


def _check_batch(batch, buffers, tasks=TASKS):
    """Every sequence is a contiguous slice of its own task's data, agents permuted by batch.perm."""
    b = jax.tree.map(np.asarray, batch)
    lengths = np.asarray(buffers.lengths)
    for i in range(b.obs.shape[0]):
        m, s, perm = b.task_ids[i], b.starts[i], b.perm[i]
        src, (_, n, o) = tasks[m], tasks[m]["obs"].shape
        assert 0 <= s <= lengths[m] - T
        inv = np.argsort(perm)
        assert sorted(perm) == list(range(4))
        obs = b.obs[i][:, inv]  # undo the permutation: dataset agent order
        np.testing.assert_array_equal(obs[:, :n, :o], src["obs"][s:s + T])
        assert (obs[:, n:] == 0).all() and (obs[:, :, o:] == 0).all()
        np.testing.assert_array_equal(b.actions[i][:, inv][:, :n], src["actions"][s:s + T])
        assert (b.actions[i][:, inv][:, n:] == 0).all()
        legals = b.legals[i][:, inv]
        np.testing.assert_array_equal(legals[:, :n], src["legals"][s:s + T])
        assert legals[:, n:, 0].all() and not legals[:, n:, 1:].any()
        np.testing.assert_array_equal(b.real[i][:, inv], np.broadcast_to(np.arange(4) < n, (T, 4)))
        np.testing.assert_array_equal(b.rewards[i], src["rewards"][s:s + T, 0])
        np.testing.assert_array_equal(b.terminals[i], src["terminals"][s:s + T])
        np.testing.assert_array_equal(b.truncations[i], src["truncations"][s:s + T])
        ends = src["terminals"] | src["truncations"]
        first = np.concatenate([[True], ends[:-1]])
        np.testing.assert_array_equal(b.resets[i], first[s:s + T])
        np.testing.assert_array_equal(b.discounts[i], 1.0 - src["terminals"][s:s + T])


def test_sampled_sequences_are_contiguous_task_slices(buffers):
    cfg = SamplerConfig(batch_size=8, seq_len=T)
    sample = make_sampler(cfg)
    seen_resets = False
    for step in range(3):
        batch = sample(buffers, jax.random.key(step), step)
        assert batch.obs.shape == (8, T, 4, 5) and batch.legals.shape == (8, T, 4, A)
        _check_batch(batch, buffers)
        np.testing.assert_array_equal(batch.active, batch.real)
        seen_resets |= bool(np.asarray(batch.resets)[:, 1:].any())
    assert seen_resets, "sequences should cross episode boundaries"
    assert sample._cache_size() == 1  # one compile for all steps: static shapes, traced step


def test_permutation_same_over_time_differs_across_samples(buffers):
    batch = make_sampler(SamplerConfig(batch_size=16, seq_len=T))(buffers, jax.random.key(7), 0)
    perms = np.asarray(batch.perm)
    assert len({tuple(p) for p in perms}) > 4, "per-sample permutations should differ"
    assert (perms != np.arange(4)).any(axis=1).sum() > 8
    # Same permutation at every step: agent identity (obs 0.1 * agent index) constant over T.
    obs = np.asarray(batch.obs)
    agent_code = np.round((obs[..., 0] % 1.0) * 10).astype(int)  # (B, T, N) dataset agent index (real agents)
    real = np.asarray(batch.real)
    for i in range(16):
        for j in range(4):
            if real[i, 0, j]:
                assert (agent_code[i, :, j] == perms[i, j]).all()
    _check_batch(batch, buffers)
    fixed = make_sampler(SamplerConfig(batch_size=4, seq_len=T, shuffle=False))(buffers, jax.random.key(7), 0)
    np.testing.assert_array_equal(fixed.perm, np.tile(np.arange(4), (4, 1)))
    _check_batch(fixed, buffers)


def test_padded_agents_and_mask_switch(buffers):
    batch = make_sampler(SamplerConfig(batch_size=9, seq_len=T))(buffers, jax.random.key(3), 1)
    pad = ~np.asarray(batch.active)
    assert pad.any()
    assert (np.asarray(batch.obs)[pad] == 0).all()
    leg = np.asarray(batch.legals)[pad]
    assert leg[:, 0].all() and not leg[:, 1:].any()
    assert (np.asarray(batch.actions)[pad] == 0).all()
    # Padded agents appear at varied positions after shuffling.
    assert len({tuple(np.flatnonzero(p[0])) for p in pad if p[0].any()}) > 1
    unmasked = make_sampler(SamplerConfig(batch_size=9, seq_len=T, mask=False))(buffers, jax.random.key(3), 1)
    assert np.asarray(unmasked.active).all()
    np.testing.assert_array_equal(unmasked.real, batch.real)
    np.testing.assert_array_equal(unmasked.obs, batch.obs)


def test_unbalanced_draws_one_task_per_batch(buffers):
    sample = make_sampler(SamplerConfig(batch_size=8, seq_len=T, balanced=False))
    tasks = set()
    for step in range(12):
        batch = sample(buffers, jax.random.key(100 + step), step)
        ids = np.unique(np.asarray(batch.task_ids))
        assert len(ids) == 1
        tasks.add(int(ids[0]))
        _check_batch(batch, buffers)
    assert tasks == {0, 1, 2}


@pytest.mark.parametrize("B,M,k", [(8, 5, 2), (7, 5, 3), (3, 5, 4), (6, 3, 1)])
def test_tasks_per_batch_draws_k_distinct_tasks_balanced_over_them(B, M, k):
    """``data.tasks_per_batch=k``: every update holds min(k, B) distinct tasks with counts at most one apart,
    the drawn tasks change between updates, and over many updates every task is drawn about equally often."""
    assign = jax.jit(task_assignment, static_argnums=(1, 2, 3, 5))
    totals = np.zeros(M, int)
    draws = set()
    steps = 600
    for step in range(steps):
        ids = np.asarray(assign(step, B, M, True, jax.random.key(step), k))
        counts = np.bincount(ids, minlength=M)
        present = counts[counts > 0]
        assert len(present) == min(k, B) and present.max() - present.min() <= 1, counts
        draws.add(tuple(np.flatnonzero(counts)))
        totals += counts > 0
    assert len(draws) > 1
    # each task is among the drawn ones in a share k/M of updates (binomial, 5 standard deviations)
    p = min(k, B) / M
    assert np.abs(totals / steps - p).max() < 5 * np.sqrt(p * (1 - p) / steps), totals
    # k >= M is the round-robin balanced batch
    np.testing.assert_array_equal(assign(3, B, M, True, jax.random.key(0), M), assign(3, B, M, True, None, None))


def test_tasks_per_batch_in_the_sampler_and_on_task_shards(buffers):
    """The sampler's batch holds the drawn tasks' own data; a shard with fewer tasks than k uses all of its own
    (never its empty slot)."""
    sample = make_sampler(SamplerConfig(batch_size=6, seq_len=T, tasks_per_batch=2))
    seen = set()
    for step in range(8):
        batch = sample(buffers, jax.random.key(step), step)
        ids = np.asarray(batch.task_ids)
        assert len(set(ids)) == 2 and np.bincount(ids, minlength=3).max() == 3
        seen |= set(ids.tolist())
        _check_batch(batch, buffers)
    assert seen == {0, 1, 2}
    for step in range(4):  # 1 task in 2 slots: all 5 sequences from slot 0, also with k=2
        slots = np.asarray(shard_assignment(step, 5, jnp.int32(1), True, jax.random.key(step), 2, 2))
        np.testing.assert_array_equal(slots, 0)
        slots = np.asarray(shard_assignment(step, 5, jnp.int32(3), True, jax.random.key(step), 2, 4))
        assert len(set(slots)) == 2 and slots.max() < 3


@pytest.mark.parametrize("kwargs,match", [
    ({"tasks_per_batch": 0}, r"data.tasks_per_batch=0 is not allowed: want an integer >= 1 or null"),
    ({"tasks_per_batch": True}, r"data.tasks_per_batch=True is not allowed"),
    ({"tasks_per_batch": 2, "balanced": False}, r"data.tasks_per_batch=2 needs data.balanced=true"),
])
def test_tasks_per_batch_bad_values_name_the_key(kwargs, match):
    with pytest.raises(UserInputError, match=match):
        SamplerConfig(batch_size=4, seq_len=2, **kwargs)


def test_sampler_inside_scan(buffers):
    """The sampler composes with lax.scan over update steps (as a training loop would use it)."""
    cfg = SamplerConfig(batch_size=5, seq_len=T)

    @jax.jit
    def run(key):
        def body(c, step):
            from mtmarl.data.batching import sample
            b = sample(buffers, jax.random.fold_in(key, step), step, cfg)
            return c, jnp.bincount(b.task_ids, length=3)
        return jax.lax.scan(body, 0, jnp.arange(6))[1]

    counts = np.asarray(run(jax.random.key(0)))
    np.testing.assert_array_equal(counts.sum(0), [10, 10, 10])
    np.testing.assert_array_equal(counts[:3], [[2, 2, 1], [2, 1, 2], [1, 2, 2]])


def test_grid_observations_stored_as_codes_give_identical_batches():
    # Few distinct values (negative, non-float16-exact ones too) -> uint8 codes + table; >256 -> float32.
    rng = np.random.default_rng(0)
    grid = []
    for m, (L, n, o, ep) in enumerate(SPECS):
        task = dict(TASKS[m])
        task["obs"] = (rng.integers(-3, 8, (L, n, o)) * 0.1).astype(np.float32)
        grid.append(task)
    compact, plain = make_buffers(grid, seq_len=T), make_buffers(grid, seq_len=T, compact=False)
    assert compact.obs.dtype == jnp.uint8 and plain.obs.dtype == jnp.float32
    assert compact.obs_values.shape == (11,) and plain.obs_values is None
    np.testing.assert_array_equal(compact.decode_obs(compact.obs), plain.obs)  # padding decodes to 0 too
    cfg = SamplerConfig(batch_size=8, seq_len=T)
    for step in range(2):
        a, b = (make_sampler(cfg)(buf, jax.random.key(step), step) for buf in (compact, plain))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            assert x.dtype == y.dtype
            np.testing.assert_array_equal(x, y)
    assert make_buffers(TASKS, seq_len=T).obs.dtype == jnp.float32  # thousands of distinct values


def test_value_table_over_chunks_matches_unique():
    rng = np.random.default_rng(1)
    arrays = [rng.choice([-0.5, 0.1, 0.25, 1.0], size=(13, 3)).astype(np.float32),
              rng.choice([0.1, 7.0], size=(5, 2)).astype(np.float32)]
    expected = np.unique(np.concatenate([a.ravel() for a in arrays] + [np.zeros(1, np.float32)]))
    np.testing.assert_array_equal(value_table(arrays, chunk=7), expected)
    assert value_table(arrays, limit=5, chunk=7) is None
    assert value_table([np.array([0.5, np.nan], np.float32)]) is None


@pytest.mark.parametrize("compact", [False, True])
def test_task_shards_sample_only_their_own_tasks_balanced(buffers, compact):
    """``training.shard_data``: 3 tasks on 2 devices (tasks 0, 2 | task 1 + an empty slot). Each shard's
    sequences are contiguous slices of its own tasks under their global ids (checked against the data),
    the empty slot is never drawn, and over M_d updates each of its tasks gets the same count."""
    owners = shard_tasks(3, 2)
    assert owners == [[0, 2], [1]]
    length = max(s[0] for s in SPECS)
    tasks = [dict(t, obs=np.floor(t["obs"]) % 7) for t in TASKS] if compact else TASKS  # 7 values: codes
    shards = []
    for mine in owners:
        part = make_buffers([tasks[m] for m in mine], seq_len=T, num_agents=4, obs_dim=5, compact=compact,
                            length=length, table_size=256 if compact else None, host=True)
        shards.append(with_slots(part, mine, slots=2))
    assert all(s.obs.shape == (2, length, 4, 5) for s in shards) and shards[1].task_ids.tolist() == [1, -1]
    assert (shards[0].obs_values is None) == (not compact) and (not compact or shards[0].obs_values.shape == (256,))
    sample = make_sampler(SamplerConfig(batch_size=5, seq_len=T))
    for mine, shard in zip(owners, shards):
        totals = np.zeros(3, int)
        for step in range(2 * len(mine)):
            batch = sample(jax.tree.map(jnp.asarray, shard), jax.random.key(step), step)
            _check_batch(batch, buffers, tasks)
            ids = np.asarray(batch.task_ids)
            assert set(ids) <= set(mine)
            counts = np.bincount(ids, minlength=3)
            assert counts[mine].max() - counts[mine].min() <= 1
            totals += counts
        assert (totals[mine] == totals[mine][0]).all() and totals.sum() == 2 * len(mine) * 5
    with pytest.raises(UserInputError, match="shard_data=true needs at least one training task per device"):
        shard_tasks(2, 4)


@pytest.mark.parametrize("B,M", [(7, 3), (8, 3), (3, 5)])
def test_shard_assignment_gives_task_assignments_counts(B, M):
    """The shard rule (a traced task count) hands out the same per-task counts as the static one."""
    for step in range(2 * M):
        np.testing.assert_array_equal(np.bincount(np.asarray(shard_assignment(step, B, jnp.int32(M))), minlength=M),
                                      np.bincount(np.asarray(task_assignment(step, B, M)), minlength=M))
