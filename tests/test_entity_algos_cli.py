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
    """Built for the padded SMAX set (13 agents, 12 ally and 15 enemy slots, 20 actions): one update on a
    random batch with padded agents, and one acting step, give finite numbers and legal actions."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from mtmarl import tasks
    from mtmarl.algos import registry
    from mtmarl.data.batching import SamplerConfig, make_buffers, sample

    env = tasks.load("smax_marine_hard").env_spec
    rng = np.random.default_rng(0)
    data = []
    for n in (3, 5):  # two tasks with fewer agents than the padding
        legals = rng.random((12, n, env.num_actions)) < 0.5
        legals[..., env.actions.noop] = True
        data.append(dict(obs=rng.normal(size=(12, n, env.obs_dim)).astype(np.float32), legals=legals,
                         actions=np.argmax(legals * rng.random(legals.shape), -1), rewards=rng.random(12),
                         terminals=np.arange(12) % 5 == 4, truncations=np.zeros(12, bool)))
    buffers = make_buffers(data, 3, num_agents=env.num_agents, obs_dim=env.obs_dim)
    algo = registry.build(name, {"batch_size": 2, "seq_len": 3}, {"width": 16, "heads": 1, "depth": 1, "ff_mult": 2},
                          env)
    batch = sample(buffers, jax.random.PRNGKey(0), 0, SamplerConfig(2, 3))
    state = algo.init(jax.random.PRNGKey(0), batch.obs[:1])
    for stage in algo.stages:  # one update of every stage (ODIS: skill discovery, then the policy)
        state, metrics = jax.jit(stage.update)(state, batch, jax.random.PRNGKey(1))
        assert all(np.isfinite(float(v)) for v in metrics.values()), (stage.name, metrics)
    mask = batch.legals[0, 0]
    actions, _, _ = jax.jit(algo.act)(algo.acting_params(state), algo.init_carry(), batch.obs[0, 0], mask,
                                      batch.active[0, 0], jnp.bool_(True), jax.random.PRNGKey(2))
    assert actions.shape == (env.num_agents,) and bool(np.asarray(mask)[np.arange(env.num_agents), actions].all())
