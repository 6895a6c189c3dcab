"""Names -> code: algorithms (``algo.name``) and online stages (``online.system``), each registered by one
decorator in the module that defines it.

An algorithm module registers its builder with :func:`register`::

    @register("mt_oryx", Config, network=SableConfig)
    def make(cfg: Config, network: dict, env: EnvSpec) -> Algorithm: ...

and ships ``mtmarl/configs/algo/<name>.yaml``, which owns every default of its config
(the config dataclass declares the fields and checks values, without defaults
of its own). A module outside the package (a test, a user's plug-in) registers
the same way once imported, and passes its whole config as overrides (or
through a Hydra search path holding its yaml).

An online stage (``online=<name>``: a learner trained in the env, from scratch or continuing an offline
run) registers its ``make_system(env, cfg, num_devices) ->`` :class:`~mtmarl.online.anakin.System` with
:func:`register_online`, naming its config (a :class:`~mtmarl.online.ppo.PPOSettings` subclass whose
``SYSTEM`` is the stage's name), its label (logs and plots) and optionally ``task_env(env, cfg) -> env``,
the task's env as the stage must see it (a continuing stage pads it to the offline run's layout), and
``final_report(cfg, system, state, seed=, episodes=, greedy=) -> dict``, merged into the task's reference
entry after the final evaluation. Stages are launched by ``python -m mtmarl.finetune`` (and the from-scratch
ones collect data through ``python -m mtmarl.collect``); an algorithm names the stage that continues its
runs online (``register(..., online=)``). Nothing here, in the online builder or in the launchers asks which
stage runs.

Every module of ``mtmarl.algos`` (``mtmarl.online``) is imported on the first lookup of an algorithm (an
online stage), so a new module is found without a list to edit, importing this registry costs nothing, and
the engine never imports an algorithm by name.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from pathlib import Path
from typing import Any, Callable, Generic, Iterator, Mapping, NamedTuple, TypeVar

from mtmarl.configs import CONFIG_DIR as PACKAGE_CONFIGS
from mtmarl.envs.layout import ActionLayout, EnvSpec, ObsLayout
from mtmarl.errors import UserInputError

CONFIG_DIR = PACKAGE_CONFIGS / "algo"
E = TypeVar("E")


class Registry(Mapping[str, E], Generic[E]):
    """Names -> entries of one kind, filled by the registering decorator of the modules of ``package``."""

    def __init__(self, kind: str, package: str):
        self.kind, self.package = kind, package
        self._entries: dict[str, E] = {}
        self._origins: dict[str, str] = {}
        self._loaded = False

    def add(self, name: str, entry: E, origin: Callable) -> None:
        """Register ``entry`` as ``name``. ``origin`` is the decorated function: the same function registering
        again (its module imported anew, as tests do) replaces the entry, another one is an error."""
        where = f"{origin.__module__}.{origin.__qualname__}"
        if self._origins.get(name, where) != where:
            raise ValueError(f"{self.kind} {name!r} is registered twice: by {self._origins[name]} and by {where}")
        self._entries[name], self._origins[name] = entry, where

    def origin(self, name: str) -> str:
        """``module.function`` that registered ``name``."""
        self.load()
        return self._origins[name]

    def load(self) -> None:
        """Import every module of the package once (their decorators register them)."""
        if self._loaded:
            return
        self._loaded = True  # a module that looks an entry up while being imported sees those registered so far
        try:
            for module in pkgutil.iter_modules(importlib.import_module(self.package).__path__):
                importlib.import_module(f"{self.package}.{module.name}")
        except BaseException:
            self._loaded = False
            raise

    def __getitem__(self, name: str) -> E:
        self.load()
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        self.load()
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        self.load()
        return len(self._entries)


class Entry(NamedTuple):
    name: str
    config: Any                       # its config dataclass (``from_dict`` names unknown keys)
    make: Callable[[Any, dict, EnvSpec], Any]
    network: Any = None               # network config dataclass (``from_dict``), checked before a run
    config_file: Path | None = None   # the yaml holding its defaults (None: every key given explicitly)
    online: str | None = None         # the online stage (:data:`ONLINE`) that continues its runs, if any


ALGORITHMS: Registry[Entry] = Registry("algorithm", "mtmarl.algos")


def register(name: str, config: Any, network: Any = None, config_file: str | Path | None = None,
             online: str | None = None):
    """Decorator registering ``make(cfg, network_dict, env_spec) -> Algorithm`` under ``name``.

    ``config_file`` defaults to ``mtmarl/configs/algo/<name>.yaml`` when that exists; ``online``: the
    online stage that continues its runs.
    """
    def deco(make):
        path = Path(config_file) if config_file is not None else CONFIG_DIR / f"{name}.yaml"
        ALGORITHMS.add(name, Entry(name, config, make, network, path if path.is_file() else None, online), make)
        return make
    return deco


def names() -> list[str]:
    """Every registered algorithm name."""
    return sorted(ALGORITHMS)


def get(name: str) -> Entry:
    if name not in ALGORITHMS:
        raise UserInputError(f"unknown algorithm algo.name={name!r}; registered: {names()} "
                             f"(a module of your own registers with mtmarl.algos.registry.register)")
    return ALGORITHMS[name]


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
    """An ``EnvSpec``, or just an action count: a flat-observation env of unknown size (:func:`check`'s
    stage plan, tests)."""
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
    missing = {"name", "algo", "n_actions", "env"} - set(spec)
    if missing:
        raise UserInputError(f"algorithm description lacks {sorted(missing)}; got keys {sorted(spec)}")
    return build(spec["name"], dict(spec["algo"]), spec.get("network"), EnvSpec.from_json(spec["env"]))


# --------------------------------------------------------------------------- online stages
class OnlineStage(NamedTuple):
    name: str
    config: Any                       # PPOSettings subclass (``from_mapping``) whose ``SYSTEM`` is ``name``
    label: str                        # its display name (``MAPPO``, ``Sable``, ...)
    make_system: Callable             # (env, cfg, num_devices) -> System
    pretrained: bool = False          # continues an offline run (``online.init_from``): not a data collector
    task_env: Callable | None = None  # (env, cfg) -> the task's env as the stage sees it (None: unchanged)
    final_report: Callable | None = None  # (cfg, system, state, seed=, episodes=, greedy=) -> reference entry keys


ONLINE: Registry[OnlineStage] = Registry("online stage", "mtmarl.online")


def register_online(name: str, config: Any, label: str, pretrained: bool = False,
                    task_env: Callable | None = None, final_report: Callable | None = None):
    """Decorator registering an online stage's ``make_system(env, cfg, num_devices) -> System`` under ``name``
    (the fields of :class:`OnlineStage`)."""
    if getattr(config, "SYSTEM", None) != name:
        raise ValueError(f"online stage {name!r}: its config {config.__name__}.SYSTEM must be {name!r}")

    def deco(make_system):
        ONLINE.add(name, OnlineStage(name, config, label, make_system, pretrained, task_env, final_report),
                   make_system)
        return make_system
    return deco


def online_stage(name: str) -> OnlineStage:
    if name not in ONLINE:
        raise UserInputError(f"unknown online.system={name!r}; known: {', '.join(ONLINE)}")
    return ONLINE[name]


def online_config(online: Mapping[str, Any]):
    """A frozen, hashable config from the ``online`` mapping; its ``system`` key picks the stage."""
    return online_stage(online.get("system", "mappo")).config.from_mapping(online)


def online_label(cfg) -> str:
    """The stage's display name (``MAPPO``, ``Sable``, ...)."""
    return online_stage(cfg.system).label


def online_task_env(env, cfg):
    """``env`` as ``cfg``'s stage sees it (its ``task_env``; unchanged for most stages).
    Launchers step and evaluate this env, so a stage never sees two shapes of one task."""
    adapt = online_stage(cfg.system).task_env
    return env if adapt is None else adapt(env, cfg)


def online_final_report(cfg, system, state, *, seed: int, episodes: int, greedy: bool) -> dict[str, Any]:
    """What the stage adds to the task's reference entry after its final evaluation (its ``final_report``;
    nothing for most stages)."""
    report = online_stage(cfg.system).final_report
    return {} if report is None else report(cfg, system, state, seed=seed, episodes=episodes, greedy=greedy)


def make_online_system(env, cfg, num_devices: int | None = None):
    """The compiled :class:`~mtmarl.online.anakin.System` of ``cfg``'s stage on ``env`` (after :func:`online_task_env`)."""
    return online_stage(cfg.system).make_system(online_task_env(env, cfg), cfg, num_devices)


def continuing_stage(algo_name: str) -> str | None:
    """The online stage registered to continue runs of algorithm ``algo_name`` (None: none)."""
    return get(algo_name).online
