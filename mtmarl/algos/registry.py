"""Algorithm names -> builders: the one place that maps ``algo.name`` to code.

An algorithm module registers its builder with :func:`register`::

    @register("mt_oryx", Config, network=SableConfig)
    def make(cfg: Config, network: dict, env: EnvSpec) -> Algorithm: ...

and ships ``mtmarl/configs/algo/<name>.yaml``, which owns every default of its config
(the config dataclass declares the fields and checks values, without defaults
of its own). A module outside the package (a test, a user's plug-in) registers
the same way once imported, and passes its whole config as overrides (or
through a Hydra search path holding its yaml).

The built-in modules are imported on first lookup, so importing the registry
costs nothing and the engine never imports an algorithm by name.

Online stages (``online=<name>``: a learner trained in the env, from scratch or continuing an offline
run) are registered here too, in :data:`ONLINE`, by module path; they are launched by
``python -m mtmarl.finetune`` (and the from-scratch ones collect data through ``python -m mtmarl.collect``).
An online stage's module provides ``CONFIG`` (a :class:`~mtmarl.online.ppo.PPOSettings` subclass whose
``SYSTEM`` is its name), ``LABEL`` (for logs and plots) and ``make_system(env, cfg, num_devices) ->``
:class:`~mtmarl.online.anakin.System`; optionally ``task_env(env, cfg) -> env``, the task's env as the
stage must see it (a continuing stage pads it to the offline run's layout), and ``final_report(cfg, system,
state, seed=, episodes=, greedy=) -> dict``, merged into the task's reference entry after the final
evaluation. An algorithm names the stage that continues its runs online (``register(..., online=)``).
Nothing here, in the online builder or in the launchers asks which stage runs; stage modules are imported
on first use, so picking MAPPO does not import the Sable network.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple

from mtmarl.configs import CONFIG_DIR as PACKAGE_CONFIGS
from mtmarl.envs.layout import ActionLayout, EnvSpec, ObsLayout
from mtmarl.errors import UserInputError

BUILTIN = ("mt_oryx", "mt_cql_sable", "mt_bc_sable", "bc_t", "updet", "bc_r", "odis", "hissd",
           "m3", "hygen")  # modules mtmarl.algos.<name>
# (updet registers updet_m and updet_l)
CONFIG_DIR = PACKAGE_CONFIGS / "algo"


class OnlineStage(NamedTuple):
    module: str          # the stage's module path
    pretrained: bool     # continues an offline run (``online.init_from``): not a data collector


ONLINE = {"mappo": OnlineStage("mtmarl.online.system", False),
          "sable": OnlineStage("mtmarl.online.sable_system", False),
          "qmix": OnlineStage("mtmarl.online.qmix", False),
          "finetune": OnlineStage("mtmarl.online.finetune", True),
          "hygen": OnlineStage("mtmarl.online.hygen", True)}


class Entry(NamedTuple):
    name: str
    config: Any                       # its config dataclass (``from_dict`` names unknown keys)
    make: Callable[[Any, dict, EnvSpec], Any]
    network: Any = None               # network config dataclass (``from_dict``), checked before a run
    config_file: Path | None = None   # the yaml holding its defaults (None: every key given explicitly)
    online: str | None = None         # the online stage (:data:`ONLINE`) that continues its runs, if any


_REGISTRY: dict[str, Entry] = {}


def register(name: str, config: Any, network: Any = None, config_file: str | Path | None = None,
             online: str | None = None):
    """Decorator registering ``make(cfg, network_dict, env_spec) -> Algorithm`` under ``name``.

    ``config_file`` defaults to ``mtmarl/configs/algo/<name>.yaml`` when that exists; ``online``: the
    online stage that continues its runs. Registering a name twice replaces the entry (re-imported test modules).
    """
    def deco(make):
        path = Path(config_file) if config_file is not None else CONFIG_DIR / f"{name}.yaml"
        _REGISTRY[name] = Entry(name, config, make, network, path if path.is_file() else None, online)
        return make
    return deco


def names() -> list[str]:
    """Every registered algorithm name (the built-in ones always included)."""
    _import_builtins()
    return sorted(_REGISTRY)


def get(name: str) -> Entry:
    if name not in _REGISTRY:
        _import_builtins()
    if name not in _REGISTRY:
        raise UserInputError(f"unknown algorithm algo.name={name!r}; registered: {names()} "
                             f"(a module of your own registers with mtmarl.algos.registry.register)")
    return _REGISTRY[name]


def _import_builtins() -> None:
    for module in BUILTIN:
        importlib.import_module(f"mtmarl.algos.{module}")


def load_config(name: str, **overrides):
    """Algorithm ``name``'s config: its yaml (if any) with ``overrides`` on top, checked by its dataclass."""
    entry = get(name)
    base: dict[str, Any] = {}
    if entry.config_file is not None:
        from omegaconf import OmegaConf

        loaded = OmegaConf.to_container(OmegaConf.load(entry.config_file))
        if not isinstance(loaded, dict):
            raise UserInputError(f"{entry.config_file} must hold a mapping of algo keys, got {type(loaded).__name__}")
        base = {str(k): v for k, v in loaded.items() if k != "defaults"}  # Hydra's (e.g. its network preset)
    merged = {**base, **overrides, "name": name}
    return entry.config.from_dict(merged)


def _plain_network(network) -> dict:
    if network is None:
        return {}
    if dataclasses.is_dataclass(network) and not isinstance(network, type):
        return dataclasses.asdict(network)
    return dict(network)


def check(name: str, algo: Mapping[str, Any], network: Mapping[str, Any] | None,
          updates: int | None = None, updates_per_call: int = 1) -> None:
    """Raise :class:`UserInputError` for a bad algorithm or network config, before a run writes anything.

    With ``updates`` the algorithm is also built (no parameters: cheap) and its
    stages planned over that many updates in calls of ``updates_per_call``.
    """
    from mtmarl.algos.protocol import plan_stages

    entry = get(name)
    cfg = load_config(name, **{k: v for k, v in algo.items() if k != "name"})
    if entry.network is not None:
        entry.network.from_dict(_plain_network(network))
    if updates is not None:
        plan_stages(build(name, cfg, network, 2).stages, updates, updates_per_call)


def as_env_spec(env: EnvSpec | int) -> EnvSpec:
    """An ``EnvSpec``, or just an action count: a flat-observation env of unknown size (tests, old checkpoints)."""
    if isinstance(env, EnvSpec):
        return env
    return EnvSpec(num_agents=0, obs=ObsLayout.flat(0), actions=ActionLayout(basic=max(int(env), 1)))


def build(name: str, cfg=None, network=None, env: EnvSpec | int = 1):
    """Algorithm ``name`` for the (padded) env shape ``env``.

    ``cfg``: its config dataclass, a dict of overrides of its yaml, or None;
    ``network``: the network config (dataclass or dict; ignored by algorithms without one);
    ``env``: the task set's ``EnvSpec`` (observation entity groups, actions, agents), or an action count.
    """
    entry = get(name)
    if not isinstance(cfg, entry.config):
        cfg = load_config(name, **{k: v for k, v in (cfg or {}).items() if k != "name"})
    return entry.make(cfg, _plain_network(network), as_env_spec(env))


def from_spec(spec: Mapping[str, Any]):
    """Rebuild the algorithm a checkpoint describes (``Algorithm.spec``)."""
    missing = {"name", "algo", "n_actions"} - set(spec)
    if missing:
        raise UserInputError(f"algorithm description lacks {sorted(missing)}; got keys {sorted(spec)}")
    # checkpoints from before env specs hold only the action count
    env = EnvSpec.from_json(spec["env"]) if "env" in spec else int(spec["n_actions"])
    return build(spec["name"], dict(spec["algo"]), spec.get("network"), env)


# --------------------------------------------------------------------------- online stages
def online_stage(name: str) -> OnlineStage:
    if name not in ONLINE:
        raise UserInputError(f"unknown online.system={name!r}; known: {', '.join(ONLINE)}")
    return ONLINE[name]


def online_module(name: str):
    """The module of online stage ``name`` (imported on first use)."""
    return importlib.import_module(online_stage(name).module)


def online_config(online: Mapping[str, Any]):
    """A frozen, hashable config from the ``online`` mapping; its ``system`` key picks the stage."""
    return online_module(online.get("system", "mappo")).CONFIG.from_mapping(online)


def online_label(cfg) -> str:
    """The stage's display name (``MAPPO``, ``Sable``, ...)."""
    return online_module(cfg.system).LABEL


def online_task_env(env, cfg):
    """``env`` as ``cfg``'s stage sees it (its module's ``task_env``; unchanged for most stages).
    Launchers step and evaluate this env, so a stage never sees two shapes of one task."""
    adapt = getattr(online_module(cfg.system), "task_env", None)
    return env if adapt is None else adapt(env, cfg)


def online_final_report(cfg, system, state, *, seed: int, episodes: int, greedy: bool) -> dict[str, Any]:
    """What the stage adds to the task's reference entry after its final evaluation (its module's
    ``final_report``; nothing for most stages)."""
    report = getattr(online_module(cfg.system), "final_report", None)
    return {} if report is None else report(cfg, system, state, seed=seed, episodes=episodes, greedy=greedy)


def make_online_system(env, cfg, num_devices: int | None = None):
    """The compiled :class:`~mtmarl.online.anakin.System` of ``cfg``'s stage on ``env`` (after :func:`online_task_env`)."""
    return online_module(cfg.system).make_system(online_task_env(env, cfg), cfg, num_devices)


def continuing_stage(algo_name: str) -> str | None:
    """The online stage registered to continue runs of algorithm ``algo_name`` (None: none)."""
    return get(algo_name).online

