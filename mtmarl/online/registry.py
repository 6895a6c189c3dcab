"""``online.system`` -> the online learner module, looked up by name; the Anakin builder does the rest.

A learner module (one per online learner) provides ``CONFIG`` (a
:class:`~mtmarl.online.ppo.PPOSettings` subclass whose ``SYSTEM`` is its name),
``LABEL`` (for logs and plots) and ``make_learner(env, cfg) ->``
:class:`~mtmarl.online.anakin.PPOLearner`, and optionally ``task_env(env, cfg) -> env``, the task's
env as the learner must see it (fine-tuning pads it to the pretrained network's layout; see
:func:`task_env`). Adding a learner is one entry in :data:`LEARNERS`; the builder and the collectors
never ask which one runs. A module whose loop is not PPO's (HyGen's replay-based Q-learning) provides
``make_system(env, cfg, num_devices) ->`` :class:`~mtmarl.online.anakin.System` instead of
``make_learner``, and may provide ``final_report(cfg, system, state, seed=, episodes=, greedy=) -> dict``,
merged into the task's reference entry after the final evaluation. Modules are imported on first use,
so picking MAPPO does not import the Sable network.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from mtmarl.errors import UserInputError

LEARNERS = {"mappo": "mtmarl.online.system", "sable": "mtmarl.online.sable_system",
            "finetune": "mtmarl.online.finetune", "hygen": "mtmarl.online.hygen", "qmix": "mtmarl.online.qmix"}
SYSTEMS = tuple(LEARNERS)


def learner_module(name: str) -> ModuleType:
    if name not in LEARNERS:
        raise UserInputError(f"unknown online.system {name!r}; known: {', '.join(SYSTEMS)}")
    return importlib.import_module(LEARNERS[name])


def online_config(online: dict[str, Any]):
    """A frozen, hashable config from the ``online`` mapping; its ``system`` key picks the class."""
    return learner_module(online.get("system", "mappo")).CONFIG.from_mapping(online)


def label(cfg) -> str:
    """The learner's display name (``MAPPO``, ``Sable``)."""
    return learner_module(cfg.system).LABEL


def task_env(env, cfg):
    """``env`` as ``cfg``'s learner sees it (its module's ``task_env``; unchanged for most learners).
    Collectors step and evaluate this env, so a learner never sees two shapes of one task."""
    adapt = getattr(learner_module(cfg.system), "task_env", None)
    return env if adapt is None else adapt(env, cfg)


def final_report(cfg, system, state, *, seed: int, episodes: int, greedy: bool) -> dict[str, Any]:
    """What the learner adds to the task's reference entry after its final evaluation (its module's
    ``final_report``; nothing for most learners: HyGen's evaluates the whole task set)."""
    report = getattr(learner_module(cfg.system), "final_report", None)
    return {} if report is None else report(cfg, system, state, seed=seed, episodes=episodes, greedy=greedy)


def make_online_system(env, cfg, num_devices: int | None = None):
    """The compiled :class:`~mtmarl.online.anakin.System` of ``cfg``'s learner on ``env`` (after :func:`task_env`)."""
    from mtmarl.online.anakin import build

    env = task_env(env, cfg)
    module = learner_module(cfg.system)
    if hasattr(module, "make_system"):  # a learner with its own compiled loop (HyGen's replay-based stage)
        return module.make_system(env, cfg, num_devices)
    return build(env, cfg, module.make_learner(env, cfg), num_devices)
