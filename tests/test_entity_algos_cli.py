"""BC-r, UPDeT-m, UPDeT-l and ODIS train from a tiny vault of the toy entity env through ``mtmarl.train``
(the path ``python -m mtmarl.train +algo=<name>`` takes), their loss falls, and they evaluate."""

from __future__ import annotations

import json
import math

import pytest
from test_entity import duel_vaults, toy_env  # noqa: F401  (toy_env is a fixture)

# per algorithm: the loss it logs and its own overrides (BC-r asks for the toy's best return: 2 enemies x 3 hp)
CASES = {"bc_r": ("train/bc_loss", ["algo.target_return=6.0", "algo.return_scale=6.0"]),
         "updet_m": ("train/loss", ["algo.target_update_interval=5", "algo.mixer_width=16", "algo.mixer_mix_width=8"]),
         "updet_l": ("train/loss", ["algo.target_update_interval=5"])}


@pytest.fixture(scope="module")
def vaults(toy_env, tmp_path_factory):  # noqa: F811
    return duel_vaults(tmp_path_factory.mktemp("entity_algos"), 12)


# Slow: the entity CLI path runs in the fast suite with bc_t (tests/test_entity.py, test_env_protocol.py), a
# two-stage skill method trains through mtmarl.train in tests/test_hygen.py; these algorithms are unit-tested
# in their own files
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_trains_through_the_cli_and_its_loss_falls(vaults, tmp_path, name):
    from mtmarl import train
    from mtmarl.experiments.config import compose_train

    metric, extra = CASES[name]
    cfg = compose_train([f"+algo={name}", "+tasks=duel", f"hydra.searchpath=[file://{vaults / 'conf'}]",
                         f"data.root={vaults / 'vaults'}", "network.width=16", "training=quick",
                         "training.updates=30", "training.updates_per_call=5", "training.log_every=5",
                         "training.eval_every=0", "training.batch_size=8", "training.seq_len=4", "algo.lr=3e-3",
                         "eval.episodes=4", "logger.neptune=false", "logger.progress=false", *extra])
    rows = train.run(cfg, run_dir=tmp_path / "run")
    logs = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    loss = [r[metric] for r in logs if metric in r]
    assert len(loss) >= 3 and loss[-1] < 0.7 * loss[0], loss
    assert [r["name"] for r in rows] == ["2v2", "3v1", "2v4"] and all("win_rate" in r for r in rows)
    assert json.loads((tmp_path / "run" / "algo.json").read_text())["name"] == name


@pytest.mark.slow  # ODIS's stages, losses and freezing are unit-tested in test_odis.py
def test_odis_trains_both_stages_through_the_cli_and_evaluates(vaults, tmp_path):
    """Skill discovery for 15 updates, then the skill-conditioned policy for 15: each stage logs its own
    losses, finite, and the ones it fits fall (reconstruction in stage 1, distillation in stage 2)."""
    from mtmarl import train
    from mtmarl.experiments.config import compose_train

    cfg = compose_train(["+algo=odis", "+tasks=duel", f"hydra.searchpath=[file://{vaults / 'conf'}]",
                         f"data.root={vaults / 'vaults'}", "network.width=16", "training=quick",
                         "training.updates=30", "training.updates_per_call=5", "training.log_every=5",
                         "training.eval_every=0", "training.batch_size=8", "training.seq_len=4", "algo.lr=3e-3",
                         "algo.skill_updates=0.5", "algo.target_update_interval=5", "algo.mixer_width=16",
                         "algo.mixer_mix_width=8", "eval.episodes=4", "logger.neptune=false",
                         "logger.progress=false"])
    rows = train.run(cfg, run_dir=tmp_path / "run")
    logs = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    recon = [r["train/recon_loss"] for r in logs if "train/recon_loss" in r]
    dist = [r["train/dist_loss"] for r in logs if "train/dist_loss" in r]
    td = [r["train/td_loss"] for r in logs if "train/td_loss" in r]
    assert len(recon) == 3 and len(dist) == 3 and len(td) == 3, logs
    assert all(math.isfinite(x) for x in recon + dist + td)
    assert recon[-1] < 0.9 * recon[0], recon
    assert dist[-1] < 0.9 * dist[0], dist
    assert [r["name"] for r in rows] == ["2v2", "3v1", "2v4"] and all("win_rate" in r for r in rows)
    assert json.loads((tmp_path / "run" / "algo.json").read_text())["name"] == "odis"


@pytest.mark.slow
@pytest.mark.parametrize("name", [*sorted(CASES), "odis"])
def test_one_update_and_one_act_on_the_smax_marine_hard_layout(name):
    """Every stage (ODIS: skill discovery, then the policy) updates once on the padded SMAX layout and acts legally."""
    from helpers import smax_layout_update_and_act

    assert len(smax_layout_update_and_act(name, {})) == (2 if name == "odis" else 1)
