"""HyGen's hybrid high-level policy learning (the HyGen paper, section 4.2): ``online.system=hygen``.

Why: skills and a skill Q-learner pretrained offline (``python -m mtmarl.train +algo=hygen``) are
limited by the data's quality; HyGen keeps training the high-level policy on batches that mix offline
sequences with sequences the policy itself collects in a source task, moving from mostly offline
(stable start) to mostly online (beyond the data's bottleneck). The learner and its losses are the
offline algorithm's own (:func:`mtmarl.algos.hygen.make`'s ``hybrid_update``: TD through the attention
mixer with double Q and a target network, consistency KL, conservative term weighted by ``R_h``, the
decoder refined), restored with every network from ``online.init_from`` (its best checkpoint, else its
latest); targets start as copies and the Adams fresh.

The hybrid ratio (Eq. 3). The paper's flattened text reads ``max(R_end, (R_start - R_end) * t / N)``,
which would *grow* with ``t``; its prose (a linear decay from ``R_start`` to the minimum ``R_end`` over
``N`` steps) fixes the reading used here::

    R_h(t) = max(R_end, R_start - (R_start - R_end) * t / N)

with ``t`` the env steps this stage has taken (before the current iteration) and ``N`` =
``online.r_decay_steps``. Each update's batch holds ``round(R_h * B)`` offline rows (rows ``0..``)
and ``B - round(R_h * B)`` online rows: both sources are sampled at full size ``B`` and rows picked by
index, so every shape is static and one compiled program serves the whole schedule.

The loop is the shared replay loop (:mod:`mtmarl.online.replay`, also online QMIX's): envs act
epsilon-greedily over skills (then the decoder's legal arg-max action), their sequences fill a ring buffer,
and each update mixes the two sources. Sequences are ``rollout_len`` = the offline run's ``algo.seq_len``
steps long, so online and offline rows share one shape.

Source tasks: by default the launched task (its env padded to the offline run's layout like
``finetune``). ``online.sources`` names several tasks of the offline run's set (``train``: all its training
tasks, the HyGen paper's G_source), played by one :class:`~mtmarl.envs.TaskMixture` whose every episode draws one of
them; the launched task then only names the run, and its JP, curve and final evaluation are over that
mixture. ``online.eval_set`` evaluates the final policy zero-shot on every train and test task of the set
(Table 1's HyGen column) into the reference entry's ``set_eval``. The offline rows come from all the offline
run's training tasks (the multi-task dataset D, with the engine's task-balanced sampler); online rows carry
task id -1. Single device.
Learning rates and loss weights are the offline run's ``algo`` config. Logged per chunk (means over
its iterations): ``hybrid_ratio``, ``offline_rows``, ``epsilon``, ``buffer_sequences``, ``win_rate`` (wins
over episodes ended in an iteration; 0 if none ended), the losses. PPO-only settings of the shared
base config (epochs, minibatches, clip_eps, ...) are unused; the logged PPO columns are null.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import jax

from mtmarl.algos.registry import register_online
from mtmarl.errors import UserInputError
from mtmarl.online import ppo, replay


@dataclasses.dataclass(frozen=True)
class HyGenOnlineConfig(ppo.PPOSettings):
    """The hybrid stage's settings; the base's num_envs, updates_per_chunk, record_*, tt_threshold apply."""

    system: str = "hygen"
    init_from: str = ""  # the offline algo=hygen run directory (python -m mtmarl.train)
    init_seed: int | None = None  # which seed of a population run (training.population > 1) to continue
    rollout_len: int | None = None  # None: the offline run's algo.seq_len (must equal it)
    r_start: float = 1.0  # R_h at t = 0 (Table 6)
    r_end: float = 0.1  # R_h from t = r_decay_steps on (Table 6)
    r_decay_steps: int = 5000  # N of Eq. 3, in env steps (Table 6: 5000 linear decay steps)
    eps_start: float = 1.0  # epsilon over skills (HyGen's code: 1 -> 0.05 over 20000 steps)
    eps_end: float = 0.05
    eps_decay_steps: int = 20000
    buffer_size: int = 2000  # online ring buffer capacity, in sequences (HyGen's code: 2000)
    updates_per_rollout: int = 1  # hybrid updates per iteration
    batch_size: int | None = None  # B; None: the offline run's algo.batch_size
    sources: tuple[str, ...] | None = None  # None: the launched task; ("train",): the set's training tasks
    eval_set: bool = False  # after the stage: every train and test task of the offline run's set, zero-shot

    SYSTEM = "hygen"
    FOREIGN = ("kl_coef", "hidden", "critic_input", "embed_dim")

    def __post_init__(self):
        super().__post_init__()
        if not str(self.init_from).strip():
            raise UserInputError(
                "online.init_from is not set: give the offline algo=hygen run directory "
                "(online.init_from=<dir written by python -m mtmarl.train +algo=hygen>)"
            )
        replay.check_schedule(self)
        for key in ("r_start", "r_end"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise UserInputError(f"online.{key}={getattr(self, key)!r} must be in [0, 1]")
        if not self.r_decay_steps >= 1:
            raise UserInputError(f"online.r_decay_steps={self.r_decay_steps!r} must be >= 1")
        if self.r_end > self.r_start:
            raise UserInputError(
                f"online.r_end={self.r_end!r} > online.r_start={self.r_start!r}: the hybrid "
                f"ratio decays, so r_end must be <= r_start"
            )

    @staticmethod
    def coerce(kw: dict) -> dict:
        if kw.get("init_from") is not None:
            kw["init_from"] = str(kw["init_from"])
        sources = kw.get("sources")
        if sources is not None:  # a name, "train", or a list of names (Hydra gives a ListConfig)
            kw["sources"] = (str(sources),) if isinstance(sources, str) else tuple(str(x) for x in sources)
            if not kw["sources"]:
                raise UserInputError("online.sources=[] names no task; give train, task names, or null")
        return kw


# --------------------------------------------------------------------------- schedules
def hybrid_ratio(cfg: HyGenOnlineConfig, t):
    """Eq. 3 as read in the module docstring: R_start at t = 0, linear to R_end at t = N, R_end after."""
    return replay.linear(cfg.r_start, cfg.r_end, cfg.r_decay_steps, t)


# --------------------------------------------------------------------------- the offline run
@functools.lru_cache(maxsize=2)
def _restore(run_dir: str, seed: int | None):
    from mtmarl.algos.hygen import HyGenAlgorithm
    from mtmarl.training.data import build_buffers, load_task_data
    from mtmarl.training.restore import load_run, run_task_set

    path = Path(run_dir).expanduser()
    if not path.is_dir():
        raise UserInputError(
            f"online.init_from={run_dir!r}: no such directory (give an offline run directory "
            f"written by python -m mtmarl.train +algo=hygen)"
        )
    try:
        algo, params, run_cfg, info = load_run(path, seed=seed)
    except UserInputError as e:
        raise UserInputError(f"online.init_from={run_dir!r}: {str(e).splitlines()[0]}") from None
    if not isinstance(algo, HyGenAlgorithm):
        raise UserInputError(
            f"online.init_from={run_dir!r} holds a {algo.name!r} run; online.system=hygen continues an algo=hygen run only"
        )
    data = run_cfg.get("data") or {}
    task_set = run_task_set(run_cfg)
    tasks = load_task_data(
        task_set,
        data.get("root", "vault_data"),
        data.get("quality"),
        bool(data.get("verify", True)),
        float(data.get("fraction", 1.0)),
    )
    buffers = build_buffers(task_set, tasks, algo.cfg.seq_len, agents="set")  # mixed with the set-padded env's steps
    return algo, jax.device_get(params), buffers, task_set, info["references"]


def pretrained(cfg: HyGenOnlineConfig):
    """(offline HyGen algorithm, all its trained params, the offline run's training buffers)."""
    return _restore(str(cfg.init_from), cfg.init_seed)[:3]


def offline_task_set(cfg: HyGenOnlineConfig):
    """The offline run's task set and the references it normalised by."""
    return _restore(str(cfg.init_from), cfg.init_seed)[3:]


def source_tasks(task_set, sources: tuple[str, ...]) -> list:
    """The set's task specs that ``online.sources`` names (``train``: its training split)."""
    if sources == ("train",):
        return list(task_set.train)
    by_name = {spec.name: spec for spec in [*task_set.train, *task_set.test]}
    unknown = [name for name in sources if name not in by_name]
    if unknown:
        raise UserInputError(
            f"online.sources={list(sources)!r}: {', '.join(map(repr, unknown))} not in the offline run's set "
            f"{task_set.name!r}; allowed: train, or names among {', '.join(by_name)}"
        )
    return [by_name[name] for name in dict.fromkeys(sources)]


def task_env(env, cfg: HyGenOnlineConfig):
    """``env`` (or, with ``online.sources``, the mixture of those tasks) seen with the offline run's padded
    EnvSpec (what its networks read)."""
    from mtmarl.envs import EnvSpec, TaskMixture, pad_to_network

    algo, _, _ = pretrained(cfg)
    target = EnvSpec.from_json(algo.spec["env"])
    if cfg.sources is not None:
        task_set, _ = offline_task_set(cfg)
        specs = source_tasks(task_set, cfg.sources)
        env = TaskMixture([task_set.padded(spec) for spec in specs], [spec.name for spec in specs])
    return pad_to_network(env, target, f"online.init_from={cfg.init_from}")


def final_report(cfg: HyGenOnlineConfig, system, state, seed: int, episodes: int, greedy: bool) -> dict:
    """With ``online.eval_set``: the final policy on every train and test task of the offline run's set (one
    row per task, as ``python -m mtmarl.evaluate`` writes them), as the reference entry's ``set_eval``."""
    if not cfg.eval_set:
        return {}
    from mtmarl.evaluation.sets import evaluate_set
    from mtmarl.evaluation.references import load_references
    from mtmarl.training.policy import make_policy

    algo, _, _ = pretrained(cfg)
    task_set, references = offline_task_set(cfg)
    rows = evaluate_set(task_set, ["train", "test"], make_policy(algo, greedy), system.actor_params(state),
                        episodes, seed, load_references(references), devices=1, progress=False)
    return {"set_eval": rows}


# --------------------------------------------------------------------------- the compiled system
@register_online("hygen", HyGenOnlineConfig, "HyGen (hybrid skill Q-learning)", pretrained=True, task_env=task_env,
                 final_report=final_report)
def make_system(env, cfg: HyGenOnlineConfig, num_devices: int | None = None):
    """The compiled hybrid stage on ``env`` (already :func:`task_env`-padded): the replay loop
    (:func:`mtmarl.online.replay.make_replay_system`) with HyGen's learner, acting epsilon-greedy over
    skills (then the decoder's legal arg-max) and mixing offline rows by R_h."""
    del num_devices  # one device (see the module docstring)
    algo, params0, buffers = pretrained(cfg)
    T, B = replay.sizes(cfg, algo.cfg.seq_len, algo.cfg.batch_size)
    learner = replay.ReplayLearner(
        algo=algo, state0=lambda key: algo.state_from_params(params0), act=algo.act_skills, update=algo.hybrid_update,
        acting_params=algo.acting_params, seq_len=T, batch_size=B,
        metrics=("td_loss", "cql_loss", "consistency_loss", "q_tot", "label_agreement", "decoder_loss"),
        ratio=functools.partial(hybrid_ratio, cfg), offline=buffers,
        sampler=dataclasses.replace(algo.sampler, batch_size=B))
    return replay.make_replay_system(env, cfg, learner)
