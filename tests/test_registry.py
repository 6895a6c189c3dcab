"""One way to register each concept: algorithms and online stages by their decorator in the module that
defines them (found by importing every module of their package), envs by ``envs.register`` on a class that
owns its task-parameter schema. A module that defines one but does not register it, or a name registered
by two different definitions, fails here."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest
import yaml

from mtmarl import envs
from mtmarl.algos import registry
from mtmarl.configs import CONFIG_DIR
from mtmarl.envs import MultiAgentEnv
from mtmarl.errors import UserInputError
from mtmarl.task_params import check_task, integer, schema
from mtmarl.tasks import TaskSpec

from test_imports import import_graph


def package_modules(package: str) -> list[str]:
    return [f"{package}.{m.name}" for m in pkgutil.iter_modules(importlib.import_module(package).__path__)]


def origin_module(reg: registry.Registry, name: str) -> str:
    return reg.origin(name).rsplit(".", 1)[0]


# ------------------------------------------------------------------------------------------- algorithms
def test_every_algorithm_module_registers_and_every_algo_yaml_is_a_registered_name():
    modules = package_modules("mtmarl.algos")
    # the package's own registrations (a test module run earlier in this process may have added a toy one)
    builtin = [n for n in registry.names() if origin_module(registry.ALGORITHMS, n).startswith("mtmarl.")]
    registering = {origin_module(registry.ALGORITHMS, n) for n in builtin}
    assert registering <= set(modules)
    # a module registering nothing is a helper other algorithm modules import (protocol, common, ...);
    # one nothing imports is an algorithm that lost its decorator
    graph = import_graph()
    imported = {dep for m in modules for dep in graph[m] if dep != m}
    orphans = sorted(m for m in modules if m not in registering and m not in imported)
    assert not orphans, f"modules of mtmarl.algos that register nothing and that no other module uses: {orphans}"
    # Hydra's +algo=<name> picks mtmarl/configs/algo/<name>.yaml: each names a registered algorithm owning it
    yamls = {p.stem: p for p in (CONFIG_DIR / "algo").glob("*.yaml")}
    assert set(yamls) == set(builtin)
    assert all(registry.get(n).config_file == yamls[n] for n in yamls)


def test_an_algorithm_name_registered_by_a_second_builder_is_refused():
    entry = registry.get("mt_oryx")

    def make(cfg, network, env):
        raise AssertionError("never built")

    with pytest.raises(ValueError, match="'mt_oryx' is registered twice: by mtmarl.algos.mt_oryx.make and by "):
        registry.register("mt_oryx", entry.config, entry.network, online=entry.online)(make)
    assert registry.get("mt_oryx") is entry
    # the same builder again (its module imported anew) replaces the entry with its equal
    registry.register("mt_oryx", entry.config, entry.network, online=entry.online)(entry.make)
    assert registry.get("mt_oryx") == entry


def test_an_unknown_algorithm_lists_the_registered_ones():
    with pytest.raises(UserInputError, match=r"unknown algorithm algo.name='mt_orix'; registered: \[.*'mt_oryx'"):
        registry.get("mt_orix")


def test_an_algorithm_description_without_its_env_spec_is_refused():
    """Every checkpoint's ``Algorithm.spec`` holds the EnvSpec it was built for; an action count alone is not one."""
    with pytest.raises(UserInputError, match=r"algorithm description lacks \['env'\]; got keys \['algo', 'n_actions'"):
        registry.from_spec({"name": "mt_oryx", "algo": {}, "n_actions": 5})


# ------------------------------------------------------------------------------------------- online stages
def test_every_online_stage_module_registers_its_system_and_every_preset_names_a_stage():
    stages = set(registry.ONLINE)
    for module in package_modules("mtmarl.online"):
        make_system = getattr(importlib.import_module(module), "make_system", None)
        if make_system is not None and make_system.__module__ == module:
            assert any(registry.ONLINE[s].make_system is make_system for s in stages), f"{module} is not registered"
    assert {origin_module(registry.ONLINE, s) for s in stages} <= set(package_modules("mtmarl.online"))
    # online=<preset> composes mtmarl/configs/online/<preset>.yaml, whose `system` picks the stage
    presets = {p.stem: yaml.safe_load(p.read_text())["system"] for p in (CONFIG_DIR / "online").glob("*.yaml")}
    assert set(presets.values()) == stages
    assert all(registry.online_stage(s).config.SYSTEM == s for s in stages)
    # an algorithm continued online names a stage that continues an offline run
    continuing = {registry.continuing_stage(n) for n in registry.names()} - {None}
    assert continuing and all(registry.online_stage(s).pretrained for s in continuing)


def test_an_online_stage_registered_twice_or_under_another_name_is_refused():
    stage = registry.online_stage("mappo")

    def make_system(env, cfg, num_devices=None):
        raise AssertionError("never built")

    with pytest.raises(ValueError, match="'mappo' is registered twice: by mtmarl.online.system.make_system and by "):
        registry.register_online("mappo", stage.config, "another MAPPO")(make_system)
    with pytest.raises(ValueError, match=r"MappoConfig.SYSTEM must be 'mappo2'"):
        registry.register_online("mappo2", stage.config, "MAPPO 2")
    assert registry.online_stage("mappo") is stage and "mappo2" not in registry.ONLINE
    with pytest.raises(UserInputError, match="unknown online.system='mapo'; known: finetune, hygen, mappo"):
        registry.online_config({"system": "mapo"})


# ------------------------------------------------------------------------------------------- envs
TASK_VALUE_TYPES = {"int", "bool", "str", "float", "int | None", "str | None", "float | None"}


def annotation(param: inspect.Parameter) -> str:
    """``int``, ``int | None``, ...: the annotation as written (a string under postponed evaluation)."""
    ann = param.annotation
    return ann if isinstance(ann, str) else getattr(ann, "__name__", str(ann))


def test_every_task_env_class_of_the_package_is_registered_with_its_own_schema():
    """A MultiAgentEnv built from plain values (a task's parameters, not other envs or specs) is a task env."""
    registered = set(envs.ENVS.values())
    for module in package_modules("mtmarl.envs"):
        for cls in vars(importlib.import_module(module)).values():
            if not (inspect.isclass(cls) and issubclass(cls, MultiAgentEnv) and cls.__module__ == module):
                continue
            params = [p for n, p in inspect.signature(cls.__init__).parameters.items() if n != "self"]
            if params and all(annotation(p) in TASK_VALUE_TYPES for p in params):
                assert cls in registered, f"{module}.{cls.__name__} takes task parameters but is not registered"
    for name, cls in envs.ENVS.items():
        if not cls.__module__.startswith("mtmarl."):  # a toy env a test module registered in this process
            continue
        assert cls.__module__ in package_modules("mtmarl.envs"), name
        assert cls.TASK_PARAMS is not None and set(cls.TASK_PARAMS) == set(envs.env_params(name)), name
        assert schema(cls) == dict(cls.TASK_PARAMS)


class Grid(MultiAgentEnv):
    """Never built: its schema and layout rule are all these tests read."""

    name = "toy_grid"
    TASK_PARAMS = {"size": integer(3, 9), "agents": integer(1, 4)}

    @classmethod
    def check_layout(cls, params):
        if {"size", "agents"} <= params.keys() and params["agents"] > params["size"]:
            raise UserInputError(f"agents={params['agents']} must be <= size={params['size']}")

    def __init__(self, size: int, agents: int = 1):
        raise AssertionError("never built")

    def reset(self, key):
        raise AssertionError("never built")

    def step(self, state, actions):
        raise AssertionError("never built")


@pytest.fixture
def toy_grid():
    envs.register("toy_grid", Grid)
    yield Grid
    del envs.ENVS["toy_grid"]


def test_task_params_are_typed_and_checked_by_the_registered_envs_own_schema(toy_grid, monkeypatch):
    assert TaskSpec.create("toy_grid", {"size": "5", "agents": "2"}).params == (("size", 5), ("agents", 2))
    with pytest.raises(UserInputError, match=r"task big: size='12' must be an integer <= 9"):
        TaskSpec.create("toy_grid", {"size": "12"}, "big")
    with pytest.raises(UserInputError, match=r"task toy_grid: agents=4 must be <= size=3"):
        TaskSpec.create("toy_grid", {"size": 3, "agents": 4})
    # the bounds are the class's: changing its schema changes what a task may say
    monkeypatch.setitem(Grid.TASK_PARAMS, "size", integer(3, 20))
    assert dict(TaskSpec.create("toy_grid", {"size": "12"}).params) == {"size": 12}
    # a built-in env likewise: LBF's own grid bound
    monkeypatch.setitem(envs.ENVS["lbf"].TASK_PARAMS, "grid", integer(9))
    with pytest.raises(UserInputError, match=r"grid='8' must be an integer >= 9"):
        check_task(envs.env_class("lbf"), {"grid": "8", "agents": "2", "food": "2"}, "lbf")


def test_an_env_without_a_schema_is_typed_from_its_constructor():
    class Plain(Grid):
        TASK_PARAMS = None

        def __init__(self, size: int, wrap: bool = False, label: str = ""):
            raise AssertionError("never built")

        @classmethod
        def check_layout(cls, params):
            pass

    assert check_task(Plain, {"size": "3", "wrap": "yes", "label": "x"}, "plain") == {"size": 3, "wrap": True,
                                                                                   "label": "x"}
    with pytest.raises(UserInputError, match=r"task plain: wrap='maybe' is not a boolean"):
        check_task(Plain, {"wrap": "maybe"}, "plain")


def test_env_registration_refuses_a_second_class_a_schema_off_its_constructor_and_a_non_env(toy_grid):
    envs.register("toy_grid", Grid)  # the same class again: unchanged

    class Other(Grid):
        pass

    with pytest.raises(ValueError, match="'toy_grid' is registered twice: by test_registry.Grid and by "):
        envs.register("toy_grid", Other)

    class Misnamed(Grid):
        TASK_PARAMS = {"size": integer(3), "agent": integer(1)}

    with pytest.raises(TypeError, match=r"TASK_PARAMS names \['agent', 'size'\], its constructor takes "
                                        r"\['agents', 'size'\]"):
        envs.register("toy_misnamed", Misnamed)
    with pytest.raises(TypeError, match="is not a MultiAgentEnv subclass"):
        envs.register("toy_path", Path)
    assert envs.ENVS["toy_grid"] is Grid and "toy_misnamed" not in envs.ENVS
    with pytest.raises(UserInputError, match="unknown env 'toy_gird'; valid envs: connector, lbf, rware, smax, .*toy_grid"):
        envs.env_class("toy_gird")
