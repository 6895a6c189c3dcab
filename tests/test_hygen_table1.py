"""The HyGen paper's Table 1 (SMAC win rates) as transcribed in mtmarl/configs/experiments/smax_hygen_table1.yaml."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from helpers import experiment_module
from mtmarl import tasks
from mtmarl.experiments.smax import paper_table

PAPER_TABLE = paper_table()
TABLE1, split_mean = PAPER_TABLE.cells, PAPER_TABLE.split_mean

PAPER = Path(__file__).parents[2] / "shared/seeds/002_cf0be8ec217c2e80.txt"
SETS = ("smax_marine_hard", "smax_stalker_zealot")


def cell_text(key, std_digits: int = 0) -> str:
    """The cell as the paper prints it (stds mostly rounded to integers, some of HiSSD's to one decimal)."""
    mean, std = TABLE1[key]
    return f"{mean:.1f} ± {std:.{std_digits}f}"


def block_in(text: str, keys) -> bool:
    """The cells, one a line, occur in the text with the stds printed with 0 or 1 decimal."""
    return any("\n".join(cell_text(k, d) for k in keys) in text for d in (0, 1))


def paper_text() -> str:
    if not PAPER.is_file():
        pytest.skip(f"paper text not found: {PAPER}")
    return PAPER.read_text()


@pytest.mark.parametrize("set_name", SETS)
def test_every_panel_has_every_method_and_task_of_our_task_sets(set_name):
    ts = tasks.load(set_name)
    train, test = [s.name for s in ts.train], [s.name for s in ts.test]
    assert PAPER_TABLE.split_tasks(set_name, "train") == tuple(train)
    assert PAPER_TABLE.split_tasks(set_name, "test") == tuple(test)
    for quality in ("expert", "medium"):
        keys = {k for k in TABLE1 if k[:2] == (set_name, quality)}
        assert keys == {(set_name, quality, m, t) for m in PAPER_TABLE.methods for t in train + test}
        assert len(keys) == 5 * (3 + len(test))
    assert len(TABLE1) == 5 * 2 * (12 + 13)


def test_values_are_percentages_with_nonnegative_std():
    for key, (mean, std) in TABLE1.items():
        assert mean is not None and std is not None, key  # every cell was recovered
        assert 0.0 <= mean <= 100.0 and std >= 0.0, key


def test_split_mean_by_hand():
    # marine-hard expert HyGen, source: 3m 99.1, 5m_vs_6m 61.2, 9m_vs_10m 96.4
    assert math.isclose(split_mean("smax_marine_hard", "expert", "HyGen", "train"), 256.7 / 300)
    # marine-hard medium ODIS, unseen: 61.7 85.9 61.3 35.9 28.1 4.7 29.7 1.6 1.6 (sum 310.5)
    assert math.isclose(split_mean("smax_marine_hard", "medium", "ODIS", "test"), 0.345)
    # stalker-zealot medium BC-best, unseen: 21.9 6.2 3.1 14.4 45.6 40.0 28.8 20.0 14.4 3.8 (sum 198.2)
    assert math.isclose(split_mean("smax_stalker_zealot", "medium", "BC-best", "test"), 0.1982)
    # stalker-zealot expert HiSSD, source: 95.2 79.8 92.8
    assert math.isclose(split_mean("smax_stalker_zealot", "expert", "HiSSD", "train"), 267.8 / 300)


def test_our_algorithms_map_to_paper_columns():
    assert PAPER_TABLE.method_of("bc_r") == "BC-best" and PAPER_TABLE.method_of("updet_m") == "UPDeT-best"
    assert PAPER_TABLE.method_of("odis") == "ODIS" and PAPER_TABLE.method_of("hissd") == "HiSSD"
    assert PAPER_TABLE.method_of("mt_oryx") is None and PAPER_TABLE.method_of("mt_bc_sable") is None
    assert set(PAPER_TABLE.our_algos) == set(PAPER_TABLE.methods)


def test_spot_cells_occur_in_the_paper():
    text = paper_text()
    for key, expected in [(("smax_marine_hard", "expert", "BC-best", "3m"), "96.9 ± 4"),
                          (("smax_marine_hard", "medium", "HyGen", "4m"), "91.4 ± 8"),
                          (("smax_stalker_zealot", "medium", "HiSSD", "2s3z"), "32.3 ± 11.7"),
                          (("smax_stalker_zealot", "expert", "ODIS", "3s4z"), "96.9 ± 2")]:
        assert expected in (cell_text(key), cell_text(key, 1)) and expected in text


def test_transcription_matches_the_flattened_layout():
    """Columns of the flattened text: every source block, and every unseen block except marine-hard's
    UPDeT-best / ODIS / HiSSD, which the flattening wrote as one (UPDeT-best, ODIS, HiSSD) line triplet per task."""
    text = paper_text()
    for (set_name, quality) in PAPER_TABLE.panels:
        train, test = (PAPER_TABLE.split_tasks(set_name, s) for s in ("train", "test"))
        for method in PAPER_TABLE.methods:
            assert block_in(text, [(set_name, quality, method, t) for t in train]), (set_name, quality, method)
            if set_name == "smax_stalker_zealot" or method in ("BC-best", "HyGen"):
                assert block_in(text, [(set_name, quality, method, t) for t in test]), (set_name, quality, method)
        if set_name == "smax_marine_hard":
            triplets = [(set_name, quality, m, t) for t in test for m in ("UPDeT-best", "ODIS", "HiSSD")]
            assert block_in(text, triplets), (set_name, quality, "triplets")


def test_smax_analyse_writes_the_paper_table(tmp_path):
    script = experiment_module("smax")
    algos = ["mt_oryx", "bc_t", "updet_l", "odis", "hissd"]
    cfg = OmegaConf.create({"budget": {"name": "quick"}, "task_sets": list(SETS), "qualities": ["medium", "expert"],
                            "algos": algos, "bootstrap": {"reps": 20, "confidence": 0.95, "seed": 0}})
    records = [{"task_set": s, "quality": q, "algo": a, "config_id": "c", "seed": 0, "env": "smax",
                "task": f"t{i}", "split": split, "return": 1.0, "normalised": None, "win_rate": i / 4}
               for s in SETS for q in cfg.qualities for a in algos for split in ("train", "test") for i in range(3)]
    script.analyse(cfg, records, tmp_path)
    md = (tmp_path / "smax.md").read_text()
    assert "the HyGen paper's Table 1 (SMAC, 5 seeds)" in md
    paper = md.split("the HyGen paper's Table 1 (SMAC, 5 seeds)")[1]
    assert "| mt_oryx | " + " | ".join(["n/a"] * 8) + " |" in paper
    odis = [f"{split_mean(s, q, 'ODIS', sp):.3f}" for s in SETS for q in ("medium", "expert") for sp in ("train", "test")]
    assert "| odis | " + " | ".join(odis) + " |" in paper
    bc = next(line for line in paper.splitlines() if line.startswith("| bc_t |"))
    assert f"{split_mean('smax_marine_hard', 'medium', 'BC-best', 'test'):.3f}" in bc
    per_task = (tmp_path / "smax_tasks.md").read_text()
    assert "| smax_marine_hard medium | test | 13m_vs_15m | 0.6 ± 1 | 0.0 ± 0 | 1.6 ± 1 | 1.4 ± 2 | 9.3 ± 6 |" in per_task
    assert per_task.count("| smax_stalker_zealot expert |") == 13
    assert per_task.count("| smax_marine_hard | medium | test |") == 3  # our rows are unchanged
