"""Shared test utilities."""

import importlib
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parents[1]

# How every process of the suite compiles and runs (conftest.py, and each process a test starts):
# - XLA:CPU's older (non-MLIR) fusion emitters compile the suite's unoptimised programs faster: tests/test_training.py
#   + tests/test_evaluation.py take about a quarter less time with them (alternated, one process).
#   Tests only: optimised training and RWARE evaluation ran slower with them (benchmarks/README.md).
# - One LLVM codegen part per program and single-threaded Eigen: the suite runs one process per core already,
#   so parallel codegen threads and intra-op threads only contend: together they cut the cold suite's time (2 workers,
#   idle 2-core machine) by about 15%.
SUITE_XLA_FLAGS = ("--xla_cpu_use_fusion_emitters=false --xla_cpu_parallel_codegen_split_count=1 "
                   "--xla_cpu_multi_thread_eigen=false")


def xla_flags(devices: int = 2) -> str:
    """``XLA_FLAGS`` for a process a test starts: ``devices`` forced CPU devices, compiled as the suite compiles."""
    return f"--xla_force_host_platform_device_count={devices} {SUITE_XLA_FLAGS}"


def experiment_module(name: str):
    """The ``mtmarl.experiments.<name>`` module behind ``experiment_scripts/<name>.py``."""
    return importlib.import_module(f"mtmarl.experiments.{name}")


def random_task(rng, L: int, n: int, o: int, A: int) -> dict:
    """``make_buffers`` input of one task: L steps, n agents, o obs features, A actions (0 always legal),
    normal observations, uniform rewards, a terminal every 7th step and a truncation every 11th."""
    legals = rng.random((L, n, A)) < 0.7
    legals[..., 0] = True
    return dict(obs=rng.normal(size=(L, n, o)).astype(np.float32), legals=legals,
                actions=np.argmax(legals * rng.random((L, n, A)), -1), rewards=rng.random(L),
                terminals=np.arange(L) % 7 == 6, truncations=np.arange(L) % 11 == 10)


def random_params(init_fn, key, sample_obs, scale_spread: float = 0.1):
    """Random parameters of the real shapes from one normal draw.

    The properties tested hold for any parameters, and compiling the real
    initialiser (or one draw per leaf) costs more CPU than the tests themselves.
    Matrices are scaled by 1/sqrt(fan-in); vectors (norm scales) sit near 1.
    """
    leaves, tree = jax.tree.flatten(jax.eval_shape(init_fn, key, sample_obs))
    flat = jax.random.normal(key, (sum(x.size for x in leaves),))
    out, i = [], 0
    for x in leaves:
        z = flat[i:i + x.size].reshape(x.shape)
        out.append(z / np.sqrt(x.shape[0]) if x.ndim > 1 else 1.0 + scale_spread * z)
        i += x.size
    return jax.tree.unflatten(tree, out)


def tiny_collect(tmp_path, task: str, online: dict, budget: int | None = None):
    """One tiny online collection of ``task`` into ``tmp_path/vaults``; returns (result, vault experience, spec).

    Checks what every collector must satisfy: env steps = devices x envs x rollout x updates per chunk
    (``budget``, default one chunk, is one chunk), the vault holds the reported transitions of the task's
    shape, finite return.
    """
    from omegaconf import OmegaConf

    from mtmarl import collect
    from mtmarl.data.vault import read_vault, vault_path
    from mtmarl.tasks import TaskSpec

    chunk = jax.local_device_count() * online["num_envs"] * online["rollout_len"] * online["updates_per_chunk"]
    cfg = OmegaConf.create({
        "task": task, "split": "train", "seed": 0, "online": online, "online_env": {},
        "collect": {"budget": budget or chunk, "root": str(tmp_path / "vaults"), "uid": "default", "references": None,
                    "log_dir": None, "record": True, "progress": False, "initial_eval": False},
        "eval": {"episodes": 8, "devices": None, "greedy": False}})
    (res,) = collect.run(cfg)
    spec = TaskSpec.parse(task)
    exp = read_vault(vault_path(tmp_path / "vaults", spec), spec)
    env, length = spec.build(), exp["actions"].shape[1]
    assert res["env_steps"] == chunk
    assert length == res["transitions"] > 0 and np.isfinite(res["return"])
    assert exp["observations"].shape == (1, length, env.num_agents, env.obs_dim)
    return res, exp, spec


def synthetic_vault(root, task: str, episodes: int = 12, seed: int = 0):
    """A vault of random-policy data for ad-hoc ``task`` under ``root`` (numpy only, no env compile); its spec."""
    from test_training import synthetic_experience

    from mtmarl.data.vault import write_vault
    from mtmarl.tasks import TaskSpec

    spec = TaskSpec.parse(task)
    write_vault(root, spec, synthetic_experience(spec, episodes, seed), {"policy": "random", "seed": seed})
    return spec


def one_update_on_one_and_two_devices(algo, buffers, stages: int = 1, opt_states=lambda s: [s.opt_state]):
    """The data-parallel contract (``mtmarl.algos.reductions``): one update of ``algo`` with the batch on one
    device and split over two. Checks the gradient through Adam's first moment (about 0.1 x the clipped
    gradient after one step) equal to float rounding relative to its scale, and the metrics equal (global
    means / maxima / sums, not averages of per-shard values); returns ``((one, m1), (two, m2))``.
    ``stages``: one update of each of the algorithm's first ``stages`` stages; ``opt_states(train state)``: the
    optimiser states whose first moments are compared (a multi-stage algorithm may keep one per stage)."""
    import optax

    from mtmarl.training.engine import Learner, tree_max_abs_diff

    assert jax.local_device_count() >= 2
    runs = []
    for devices in (1, 2):
        learner = Learner(algo, buffers, 1, num_devices=devices)
        carry = learner.init(0)
        for _ in range(stages):
            carry, metrics = learner.run(carry)
        runs.append((carry, metrics))
    (one, m1), (two, m2) = runs
    mu1, mu2 = ([optax.tree.get(o, "mu") for o in opt_states(run.state)] for run in (one, two))
    scale = max(float(np.max(np.abs(x))) for x in jax.tree.leaves(mu1))
    assert tree_max_abs_diff(mu2, mu1) < 1e-5 * scale, (tree_max_abs_diff(mu2, mu1), scale)
    assert m1.keys() == m2.keys() and "loss" in m1
    for k in m1:
        np.testing.assert_allclose(m2[k], m1[k], rtol=1e-5, atol=1e-6, err_msg=k)
    return runs


TINY_ENTITY_NET = {"width": 16, "heads": 1, "depth": 1, "ff_mult": 2}


def smax_layout_update_and_act(name: str, algo_cfg: dict, batch_size: int = 2) -> list[dict]:
    """Build ``name`` for the padded SMAX marine-hard layout (13 agents, 12 ally and 15 enemy slots, 20
    actions), run one update of every stage on a random batch of two tasks with fewer agents than the
    padding, then one acting step. Checks finite metrics and legal actions; returns each stage's metrics."""
    import jax.numpy as jnp

    from mtmarl import tasks
    from mtmarl.algos import registry
    from mtmarl.data.batching import SamplerConfig, make_buffers, sample

    env = tasks.load("smax_marine_hard").env_spec
    rng = np.random.default_rng(0)
    data = []
    for n in (3, 5):
        legals = rng.random((12, n, env.num_actions)) < 0.5
        legals[..., env.actions.noop] = True
        data.append(dict(obs=rng.normal(size=(12, n, env.obs_dim)).astype(np.float32), legals=legals,
                         actions=np.argmax(legals * rng.random(legals.shape), -1), rewards=rng.random(12),
                         terminals=np.arange(12) % 5 == 4, truncations=np.zeros(12, bool)))
    buffers = make_buffers(data, 3, num_agents=env.num_agents, obs_dim=env.obs_dim)
    algo = registry.build(name, {"batch_size": batch_size, "seq_len": 3, **algo_cfg}, TINY_ENTITY_NET, env)
    batch = sample(buffers, jax.random.PRNGKey(0), 0, SamplerConfig(batch_size, 3))
    state = jax.jit(algo.init)(jax.random.PRNGKey(0), batch.obs[:1])
    out = []
    for stage in algo.stages:
        state, metrics = jax.jit(stage.update)(state, batch, jax.random.PRNGKey(1))
        assert all(np.isfinite(float(v)) for v in metrics.values()), (stage.name, metrics)
        out.append(metrics)
    mask = batch.legals[0, 0]
    actions, _, _ = jax.jit(algo.act)(algo.acting_params(state), algo.init_carry(), batch.obs[0, 0], mask,
                                      batch.active[0, 0], jnp.bool_(True), jax.random.PRNGKey(2))
    assert actions.shape == (env.num_agents,) and bool(np.asarray(mask)[np.arange(env.num_agents), actions].all())
    # The evaluator plays a task at its own agent count, below the set's (TaskSet.evaluation_env): so must act.
    n = env.num_agents - 1
    few, _, _ = jax.jit(algo.act)(algo.acting_params(state), algo.init_carry(n), batch.obs[0, 0, :n], mask[:n],
                                  batch.active[0, 0, :n], jnp.bool_(True), jax.random.PRNGKey(2))
    assert few.shape == (n,) and bool(np.asarray(mask)[np.arange(n), few].all())
    return out


# ---------------------------------------------------------------- golden values across CPUs
# Float results differ in their last bits between CPUs (measured: the same commit on an AVX2 machine and on the
# one that recorded tests/golden/*.json disagree by up to 5e-4 relative in a gradient norm), so golden values
# keep integers, keys and booleans exactly and floats as a random projection of the *change* a run made
# (final - initial), compared at a relative tolerance: what is checked is the update, not the initialisation.
PROJECTION_DIM = 16


def _project(x: np.ndarray) -> list[float]:
    """``x`` (flattened, float64) through a fixed Gaussian matrix of its size: distances are kept on average."""
    x = np.asarray(x, np.float64).ravel()
    p = np.random.default_rng(x.size).normal(size=(PROJECTION_DIM, x.size)) / np.sqrt(PROJECTION_DIM)
    return [float(f"{v:.9g}") for v in p @ x]  # 9 digits: far below any tolerance used


def fingerprint(tree, base=None) -> list:
    """One entry per leaf of ``tree``: ``["exact", dtype, shape, values]`` for integer, boolean and PRNG-key
    leaves, ``["float", dtype, shape, projection]`` for float leaves, minus ``base``'s leaf when given."""
    leaves = jax.tree.leaves(tree)
    bases = jax.tree.leaves(base) if base is not None else [None] * len(leaves)
    assert len(bases) == len(leaves), "base must have the tree's structure"
    out = []
    for x, b in zip(leaves, bases):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        x = np.asarray(x)
        if x.dtype.kind == "f" or x.dtype.name == "bfloat16":
            delta = x.astype(np.float64) - (0.0 if b is None else np.asarray(b).astype(np.float64))
            out.append(["float", str(x.dtype), list(x.shape), _project(delta)])
        else:
            out.append(["exact", str(x.dtype), list(x.shape), x.ravel().tolist()])
    return out


def assert_fingerprints_close(got: list, want: list, rtol: float, what: str) -> None:
    """Exact leaves equal; the float leaves' projected changes, taken together, within ``rtol`` of the golden
    ones' norm. Together, since a leaf whose gradient is ~0 gets an Adam step of pure rounding noise
    (measured: one MT CQL-Sable leaf moved 22% differently under another compile setting) that carries no
    weight in the whole update, while a real change (another batch, key or loss term) moves every leaf."""
    assert len(got) == len(want), f"{what}: {len(got)} leaves, golden {len(want)}"
    err2 = scale2 = 0.0
    worst = (0.0, -1)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g[:3] == w[:3], f"{what} leaf {i}: kind/dtype/shape {g[:3]} != golden {w[:3]}"
        if g[0] == "exact":
            assert g[3] == w[3], f"{what} leaf {i}: values differ from the golden ones"
            continue
        e = float(np.sum((np.asarray(g[3]) - np.asarray(w[3])) ** 2))
        err2, scale2, worst = err2 + e, scale2 + float(np.sum(np.asarray(w[3]) ** 2)), max(worst, (e, i))
    assert err2 <= (rtol ** 2) * scale2 + 1e-24, (f"{what}: change off by {np.sqrt(err2):.3g} of norm {np.sqrt(scale2):.3g} "
                                                  f"(most in leaf {worst[1]} {got[worst[1]][1:3]})")


def assert_metrics_close(got: dict, want: dict, rtol: float, what: str = "metrics") -> None:
    """Scalar metrics (floats as given, or ``float.hex`` strings) within ``rtol`` of the golden ones."""
    assert sorted(got) == sorted(want), f"{what}: keys {sorted(got)} != golden {sorted(want)}"
    keys = sorted(got)

    def floats(d):
        return [float.fromhex(d[k]) if isinstance(d[k], str) else float(d[k]) for k in keys]

    np.testing.assert_allclose(floats(got), floats(want), rtol=rtol, err_msg=f"{what} ({keys})")


def replay_on_stack(env, stack, task: int, key, act, steps: int):
    """``env`` driven by ``act(state, time_step, key) -> actions`` for ``steps`` steps, and ``stack`` (an env from
    ``MultiAgentEnv.stack``) replaying the same actions for ``task`` from the same reset key: both histories of
    time steps, the reset's first (traceable; jit it)."""
    import jax
    import jax.numpy as jnp

    k_reset, k_act = jax.random.split(key)
    state, first = env.reset(k_reset)

    def body(carry, k):
        state, ts = carry
        actions = act(state, ts, k)
        state, ts = env.step(state, actions)
        return (state, ts), (ts, actions)

    _, (rest, actions) = jax.lax.scan(body, (state, first), jax.random.split(k_act, steps))
    pad = stack.num_agents - actions.shape[-1]
    s_state, s_first = stack.reset(k_reset, task)
    _, s_rest = jax.lax.scan(lambda s, a: stack.step(s, jnp.pad(a, (0, pad))), s_state, actions)
    join = lambda first, rest: jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), first, rest)  # noqa: E731
    return join(first, rest), join(s_first, s_rest)


def assert_stack_plays_alone(want, got, n: int, reward_rtol: float = 0.0):
    """A stacked task's time steps (``got``) equal the task's own (``want``) for its ``n`` agents, and the
    stack's extra agents are inactive, see zeros and may only take the no-op (action 0)."""
    import numpy as np

    obs, ref = got.observation, want.observation
    np.testing.assert_array_equal(obs.agents_view[:, :n], ref.agents_view[:, :n])
    np.testing.assert_array_equal(obs.action_mask[:, :n], ref.action_mask[:, :n])
    np.testing.assert_array_equal(obs.step_count, ref.step_count)
    assert (obs.agents_view[:, n:] == 0).all()
    assert (obs.action_mask[:, n:] == (np.arange(obs.action_mask.shape[-1]) == 0)).all()
    assert (obs.active == (np.arange(obs.active.shape[-1]) < n)).all()
    np.testing.assert_allclose(got.reward, want.reward, rtol=reward_rtol, atol=reward_rtol)
    for field in ("terminal", "truncated"):
        np.testing.assert_array_equal(getattr(got, field), getattr(want, field), err_msg=field)


def compact(golden: dict) -> str:
    """Golden values as JSON text, one compact line per entry (a regenerated entry shows as one changed line)."""
    import json

    return "{\n" + ",\n".join(f"{json.dumps(k)}: {json.dumps(v, separators=(',', ':'))}" for k, v in golden.items()) + "\n}\n"


def stopping_system(monkeypatch, on_call: int, action):
    """The collectors' ``get_system`` wrapped so that ``action()`` (e.g. a SIGINT to this process) runs when
    ``train_chunk`` is called for the ``on_call``-th time; returns the list that counts the calls."""
    from mtmarl.online import collectors

    original, calls = collectors.get_system, []

    class Wrapped:
        def __init__(self, inner):
            self._inner = inner

        def __getattr__(self, name):
            return getattr(self._inner, name)

        def train_chunk(self, state, updates=None):
            calls.append(1)
            if len(calls) == on_call:
                action()
            return self._inner.train_chunk(state, updates)

    monkeypatch.setattr(collectors, "get_system", lambda *a: Wrapped(original(*a)))
    return calls
