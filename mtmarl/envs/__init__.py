"""Environments: one protocol (``base.MultiAgentEnv`` + ``layout.EnvSpec``), Jumanji RWARE, LBF and
Connector adapters and JaxMARL's SMAX on it, and padding to a task set's shape. Each adapter registers
itself by name (``registry.register``), and importing the package imports every module in it, so every
adapter is registered without a list to edit."""

from __future__ import annotations

import importlib as _importlib
import pkgutil as _pkgutil

from mtmarl.envs.base import NOOP, JumanjiEnv, MultiAgentEnv, Observation, TimeStep
from mtmarl.envs.layout import ActionLayout, EntityGroup, EnvSpec, ObsLayout
from mtmarl.envs.mixture import TaskMixture
from mtmarl.envs.padding import PaddedEnv, pad_to_network
from mtmarl.envs.registry import ENVS, env_class, env_params, make, register
from mtmarl.errors import UserInputError

for _module in _pkgutil.iter_modules(__path__):
    _importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["ENVS", "NOOP", "ActionLayout", "EntityGroup", "EnvSpec", "JumanjiEnv", "MultiAgentEnv",
           "ObsLayout", "Observation", "PaddedEnv", "TaskMixture", "TimeStep", "UserInputError", "env_class",
           "env_params", "make", "pad_to_network", "register"]
