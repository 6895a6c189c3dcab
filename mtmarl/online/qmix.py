"""Online QMIX, the online baseline HyGen is compared with (the HyGen paper, Fig. 4): ``online.system=qmix``.

Why: HyGen's claim is that mixing offline data into online skill Q-learning learns faster than online
value learning alone. To test it with nothing else changed, the baseline here is the value learner of
UPDeT-m (:mod:`mtmarl.algos.updet`: the entity-transformer Q agent with the attention mixer, double-Q TD
targets through the target mixer, hard target copies), trained from fresh parameters on online rows only
(``hybrid_ratio`` 0), on the same replay loop as HyGen's hybrid stage (:mod:`mtmarl.online.replay`):
epsilon-greedy over actions on a linear schedule, a ring buffer of sequences, ``updates_per_rollout``
updates per rollout. ``learner: updet_l`` swaps the mixer for a VDN sum.

The learner's settings are its algorithm yaml (``mtmarl/configs/algo/<learner>.yaml``), then
:data:`AS_QMIX` (no conservative term, one masked mean over the batch: what turns the offline learner
into plain QMIX) and ``online.target_update_interval``, then ``online.algo``; the network is the entity
preset (``mtmarl/configs/network/entity.yaml``) with ``online.network`` on top. The task's env is used
as it is (no padding: the network is built for it).
"""

from __future__ import annotations

import dataclasses
import functools
import json

import jax.numpy as jnp
from omegaconf import OmegaConf

from mtmarl.algos.registry import register_online
from mtmarl.configs import CONFIG_DIR
from mtmarl.errors import UserInputError
from mtmarl.online import ppo, replay

LEARNERS = ("updet_m", "updet_l")
AS_QMIX = {"cql_weight": 0.0, "task_mean": False}  # online rows carry no task and need no conservative term


@dataclasses.dataclass(frozen=True)
class QmixConfig(ppo.PPOSettings):
    """The replay loop's settings and the learner to train; the base's num_envs, updates_per_chunk,
    record_*, tt_threshold apply, its PPO settings do not."""

    system: str = "qmix"
    learner: str = "updet_m"          # updet_m: attention mixer (QMIX-style); updet_l: VDN sum
    target_update_interval: int = 50  # updates between hard target copies (the learner's own setting)
    algo: str = "{}"                  # overrides of the learner's yaml, a JSON object (hashable)
    network: str = "{}"               # overrides of the entity network preset, a JSON object
    rollout_len: int | None = None    # None: the learner's algo.seq_len (must equal it)
    eps_start: float = 1.0
    eps_end: float = 0.05
    eps_decay_steps: int = 50000
    buffer_size: int = 2000           # ring capacity in sequences
    updates_per_rollout: int = 1
    batch_size: int | None = None     # None: the learner's algo.batch_size

    SYSTEM = "qmix"
    FOREIGN = ("init_from", "kl_coef", "hidden", "r_start")

    def __post_init__(self):
        super().__post_init__()
        if self.learner not in LEARNERS:
            raise UserInputError(f"online.learner={self.learner!r}; allowed: {', '.join(LEARNERS)}")
        replay.check_schedule(self)

    @staticmethod
    def coerce(kw: dict) -> dict:
        for key in ("algo", "network"):
            value = kw.get(key)
            if value is None or isinstance(value, str):
                continue
            value = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
            if not isinstance(value, dict):
                raise UserInputError(f"online.{key}={value!r} must be a mapping of overrides")
            kw[key] = json.dumps(value, sort_keys=True)
        return kw


@functools.lru_cache(maxsize=4)
def _algorithm(learner: str, target_update_interval: int, algo: str, network: str, env_json: str):
    from mtmarl.algos import registry
    from mtmarl.envs import EnvSpec

    net = {**OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "network" / "entity.yaml")), **json.loads(network)}
    try:
        settings = {**AS_QMIX, "target_update_interval": target_update_interval, **json.loads(algo)}
        return registry.build(learner, settings, net, EnvSpec.from_json(json.loads(env_json)))
    except (UserInputError, TypeError) as e:  # a key the learner or the network does not have
        raise UserInputError(f"online.algo={json.loads(algo)} / online.network={json.loads(network)} for "
                             f"online.learner={learner}: {str(e).splitlines()[0]}") from None


def algorithm(env, cfg: QmixConfig):
    """The value learner of ``cfg`` built for ``env``'s layout (cached per config and layout)."""
    env_json = json.dumps(env.spec.to_json(), sort_keys=True)
    return _algorithm(cfg.learner, cfg.target_update_interval, cfg.algo, cfg.network, env_json)


@register_online("qmix", QmixConfig, "QMIX (online, entity transformer)")
def make_system(env, cfg: QmixConfig, num_devices: int | None = None):
    """Online QMIX on ``env``: the replay loop with the learner's fresh state and online rows only."""
    del num_devices  # one device, as HyGen's hybrid stage
    algo = algorithm(env, cfg)
    T, B = replay.sizes(cfg, algo.cfg.seq_len, algo.cfg.batch_size)
    sample_obs = jnp.zeros((1, 1, env.spec.num_agents, env.spec.obs_dim), jnp.float32)
    update = algo.stages[0].update
    learner = replay.ReplayLearner(
        algo=algo, state0=lambda key: algo.init(key, sample_obs), act=algo.act_epsilon,
        update=lambda state, batch, share, key: update(state, batch, key),  # no offline share to weigh
        acting_params=algo.acting_params, seq_len=T, batch_size=B,
        metrics=("td_loss", "cql_loss", "q_tot", "td_target", "grad_norm"))
    return replay.make_replay_system(env, cfg, learner)
