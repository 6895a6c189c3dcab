"""BC-r, UPDeT-m and UPDeT-l train from a tiny vault of the toy entity env through ``mtmarl.train``
(the path ``python -m mtmarl.train +algo=<name>`` takes), their loss falls, and they evaluate."""

from __future__ import annotations

import json

import pytest
import yaml
from test_entity import _weakest_first, toy_env  # noqa: F401  (toy_env is a fixture)
from test_env_protocol import SET, record_experience

# per algorithm: the loss it logs and its own overrides (BC-r asks for the toy's best return: 2 enemies x 3 hp)
CASES = {"bc_r": ("train/bc_loss", ["algo.target_return=6.0", "algo.return_scale=6.0"]),
         "updet_m": ("train/loss", ["algo.target_update_interval=5", "algo.mixer_width=16", "algo.mixer_mix_width=8"]),
         "updet_l": ("train/loss", ["algo.target_update_interval=5"])}


@pytest.fixture(scope="module")
def vaults(toy_env, tmp_path_factory):  # noqa: F811
    from mtmarl import tasks
    from mtmarl.data.vault import write_vault

    root = tmp_path_factory.mktemp("entity_algos")
    for i, spec in enumerate(tasks.from_config(SET).train):
        write_vault(root / "vaults", spec, record_experience(spec.build(), 12, i, _weakest_first), {"policy": "wf"})
    (root / "conf" / "tasks").mkdir(parents=True)
    (root / "conf" / "tasks" / "duel.yaml").write_text(yaml.safe_dump(SET))
    return root


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
