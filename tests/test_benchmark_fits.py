"""The train-step benchmark's scaling fit recovers a known exponent (issue 20 reports it)."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _train_step():
    spec = importlib.util.spec_from_file_location("train_step_bench", ROOT / "benchmarks" / "train_step.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_scaling_fit_recovers_the_exponent():
    fit = _train_step().scaling_fits
    # seconds per update = 0.01 * N^1.5 * T^0.8: agents at T=20, context at N=8, bf16 at embed 128
    grid = [(n, 20) for n in (2, 4, 8, 12)] + [(8, t) for t in (40, 80)]
    rows = [dict(agents=n, seq_len=t, embed=128, matmul_dtype="bfloat16",
                 updates_per_s=1 / (0.01 * n ** 1.5 * t ** 0.8)) for n, t in grid]
    got = {f["axis"]: f["exponent"] for f in fit(rows)}
    assert got["agents"] == pytest.approx(1.5, abs=1e-6)
    assert got["context"] == pytest.approx(0.8, abs=1e-6)
    assert 0.8 < got["agents x context"] < 1.5  # one exponent for both: between the two
