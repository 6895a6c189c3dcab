"""Golden values of the online stages that continue or accompany an offline algorithm: HyGen's hybrid stage,
fine-tuning of a pretrained M3 policy, and online QMIX (HyGen's baseline, on the same replay loop).

HyGen and M3 are first trained offline through ``mtmarl.train`` on toy duel vaults (4 updates); each online
stage then runs 2 compiled chunks on a toy duel task and records once. The whole online state before and the
change the chunks made to it (parameters, optimiser states, ring buffer, envs, keys, counters), the chunks'
metrics and the recording are compared with ``tests/golden/online_stages.json`` as fingerprints
(``helpers.fingerprint``: integers, keys and actions exactly, floats as projections) within ``RTOL``.
They pin the numbers through refactors of the online loops, the registries and the launchers.

Regenerate only on purpose, with 2 devices:
``XLA_FLAGS=--xla_force_host_platform_device_count=2 python tests/test_golden_online_stages.py --write``.
"""

import json
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers import assert_fingerprints_close, compact, fingerprint
from omegaconf import OmegaConf
from test_entity import duel_vaults, toy_env  # noqa: F401  (toy_env is a fixture)

from mtmarl.configs import CONFIG_DIR

GOLDEN = Path(__file__).resolve().parent / "golden" / "online_stages.json"
NAMES = ("qmix", "hygen", "finetune")
RTOL = 1e-2
TASK = "toy_duel:agents=2,enemies=2,hp=3,horizon=4"
SEQ, BATCH = 4, 4
SMALL = {"num_envs": 4, "updates_per_chunk": 2, "record_envs": 2, "record_len": 4}
OFFLINE = {  # the offline run each online stage starts from
    "hygen": ["+algo=hygen", "network.width=16", "network.heads=2", "algo.skill_updates=2", "algo.mixer_width=8",
              "algo.mixer_mix_width=8"],
    "finetune": ["+algo=m3", "network.width=16", "algo.num_codes=4", "algo.code_dim=4", "algo.agent_dim=2",
                 "algo.head_width=8"],
}
ONLINE = {
    "qmix": {"algo": {"seq_len": SEQ, "batch_size": BATCH, "mixer_width": 8, "mixer_mix_width": 8,
                      "target_update_interval": 2},
             "network": {"width": 8, "heads": 2, "ff_mult": 2}, "buffer_size": 5, "eps_decay_steps": 16},
    "hygen": {"buffer_size": 3, "r_decay_steps": 16},
    "finetune": {"rollout_len": 6, "minibatches": 2, "epochs": 1, "hidden": [8], "lr": 3e-3},
}


def offline_run(name, root: Path) -> Path:
    from mtmarl import train
    from mtmarl.experiments.config import compose_train

    duel_vaults(root, 4)
    cfg = compose_train([*OFFLINE[name], "+tasks=duel", f"hydra.searchpath=[file://{root / 'conf'}]",
                         f"data.root={root / 'vaults'}", "training=quick", "training.updates=4",
                         "training.updates_per_call=2", "training.log_every=2", "training.checkpoint_every=2",
                         "training.eval_every=0", "training.devices=1", "eval.devices=1",
                         f"training.batch_size={BATCH}", f"training.seq_len={SEQ}", "eval.episodes=2",
                         "logger.neptune=false", "logger.progress=false"])
    train.run(cfg, run_dir=root / "run")
    return root / "run"


def build_system(name, root: Path):
    """The compiled online system of ``name`` on the toy duel task (HyGen and fine-tuning after their offline run)."""
    from mtmarl.algos.registry import make_online_system, online_config, online_task_env
    from mtmarl.tasks import TaskSpec

    online = {**OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "online" / f"{name}.yaml")), **SMALL,
              **ONLINE[name]}
    if name in OFFLINE:
        online["init_from"] = str(offline_run(name, root))
    cfg = online_config(online)
    env = online_task_env(TaskSpec.parse(TASK).build(), cfg)
    return make_online_system(env, cfg)


def record(name, root: Path) -> dict:
    assert jax.local_device_count() == 2, "the golden values are for 2 devices"
    system = build_system(name, root)
    state = system.init(jax.random.PRNGKey(0))
    initial = jax.tree.map(np.asarray, state)
    metrics = []
    for _ in range(2):
        state, m = system.train_chunk(state)
        metrics.append(jax.tree.map(lambda x: np.nan_to_num(np.asarray(x)), m))  # replay loops log NaN PPO columns
    traj = system.record(state, jax.random.PRNGKey(1))
    return {"initial": fingerprint(initial), "change": fingerprint(state, initial), "metrics": fingerprint(metrics),
            "actor_params": fingerprint(system.actor_params(state)), "record": fingerprint(traj),
            "recorded_actions": np.asarray(traj.actions).ravel().tolist()}


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_two_chunks_and_a_recording_match_the_golden_values(name, toy_env, tmp_path):  # noqa: F811
    golden = json.loads(GOLDEN.read_text())[name]
    got = record(name, tmp_path)
    assert sorted(got) == sorted(golden)
    assert got["recorded_actions"] == golden["recorded_actions"]
    for key in ("initial", "change", "metrics", "actor_params", "record"):
        assert_fingerprints_close(got[key], golden[key], RTOL, key)


if __name__ == "__main__" and "--write" in sys.argv:
    import tempfile

    from mtmarl import envs
    from test_entity import ToyDuel

    jax.config.update("jax_disable_most_optimizations", False)
    envs.register("toy_duel", ToyDuel)
    out = {}
    for n in NAMES:
        with tempfile.TemporaryDirectory() as tmp:
            out[n] = record(n, Path(tmp))
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(compact(out))
    print(GOLDEN.read_text()[:2000])
