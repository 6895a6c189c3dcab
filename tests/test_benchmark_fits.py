"""Numbers the benchmarks report: the train-step scaling fit, the per-algorithm FLOP count."""

import importlib.util
from pathlib import Path

import pytest

# benchmarks/ is a folder of scripts, not a package: load its cost models by path.
_SPEC = importlib.util.spec_from_file_location("benchmark_costs", Path(__file__).parents[1] / "benchmarks" / "costs.py")
costs = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(costs)
jaxpr_flops, scaling_fits = costs.jaxpr_flops, costs.scaling_fits


def test_scaling_fit_recovers_the_exponent():
    fit = scaling_fits
    # seconds per update = 0.01 * N^1.5 * T^0.8: agents at T=20, context at N=8, bf16 at embed 128
    grid = [(n, 20) for n in (2, 4, 8, 12)] + [(8, t) for t in (40, 80)]
    rows = [dict(agents=n, seq_len=t, embed=128, matmul_dtype="bfloat16",
                 updates_per_s=1 / (0.01 * n ** 1.5 * t ** 0.8)) for n, t in grid]
    got = {f["axis"]: f["exponent"] for f in fit(rows)}
    assert got["agents"] == pytest.approx(1.5, abs=1e-6)
    assert got["context"] == pytest.approx(0.8, abs=1e-6)
    assert 0.8 < got["agents x context"] < 1.5  # one exponent for both: between the two


def test_jaxpr_flops_counts_loops_as_often_as_they_run():
    """The per-algorithm benchmark counts matmul FLOPs itself because XLA's cost analysis counts a scan body
    once: a recurrent matmul scanned 5 times costs 5 forward matmuls and 10 backward ones (both operands'
    gradients), and a cond its costlier branch."""
    import jax
    import jax.numpy as jnp

    flops = jaxpr_flops
    w, x0 = jnp.full((16, 16), 0.01), jnp.ones((8, 16))
    one = 2 * 8 * 16 * 16

    def unrolled(w, x):
        return jnp.sum(jax.lax.scan(lambda c, _: (jnp.tanh(c @ w), None), x, None, length=5)[0])

    assert flops(jax.make_jaxpr(unrolled)(w, x0).jaxpr) == 5 * one
    assert flops(jax.make_jaxpr(jax.grad(unrolled))(w, x0).jaxpr) == 15 * one
    branch = lambda p, w, x: jax.lax.cond(p, lambda: x @ w @ w, lambda: x @ w)  # noqa: E731
    assert flops(jax.make_jaxpr(branch)(True, w, x0).jaxpr) == 2 * one


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_anchor_windows_and_our_side_composes_at_the_anchor_settings(tmp_path):
    """The anchor table's windows are the means of the points logged inside each, and our side's command composes
    to 64 envs in total at the recipe the anchor names (a wrong key would fail only after a long run)."""
    import numpy as np
    from hydra import compose, initialize_config_dir

    from mtmarl.configs import CONFIG_DIR

    anchors = _script("anchors")
    steps, values = np.array([10.0, 20, 30, 40, 50]), np.array([1.0, 2, 3, 4, 6])
    assert anchors.windows(steps, values, 60, 2) == [2.0, 5.0]
    assert np.isnan(anchors.windows(steps, values, 200, 2)[1])
    for anchor, devices in (("rware", 2), ("smax", 1)):
        cmd = anchors.ours_command(anchor, 4096, 3, devices, tmp_path)
        with initialize_config_dir(str(CONFIG_DIR), version_base=None):
            cfg = compose("collect", [o.replace("task=", "task='", 1) + "'" if o.startswith("task=") else o
                                      for o in cmd[3:]])
        envs = cfg.online.num_envs if anchor == "rware" else cfg.online_env.smax.num_envs
        assert envs * devices == 64 and cfg.seed == 3 and not cfg.collect.record
        if anchor == "rware":
            assert (cfg.online.rollout_len, cfg.online.epochs, cfg.online.minibatches) == (32, 4, 2)
            assert list(cfg.online.hidden) == [64, 64] and cfg.online.activation == "tanh"
        else:
            assert cfg.online_env.smax.recurrent and cfg.collect.env_budget.smax == 4096
