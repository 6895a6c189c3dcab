"""Environments: one protocol (``base.MultiAgentEnv`` + ``layout.EnvSpec``), Jumanji RWARE, LBF and
Connector adapters and JaxMARL's SMAX on it, and padding to a task set's shape. ``register`` adds an env by name."""

from __future__ import annotations

import inspect

from mtmarl.envs.base import NOOP, JumanjiEnv, MultiAgentEnv, Observation, TimeStep
from mtmarl.envs.connector import ConnectorEnv
from mtmarl.envs.layout import ActionLayout, EntityGroup, EnvSpec, ObsLayout
from mtmarl.envs.lbf import LbfEnv
from mtmarl.envs.mixture import TaskMixture
from mtmarl.envs.padding import PaddedEnv
from mtmarl.envs.rware import RwareEnv
from mtmarl.envs.smax import SmaxEnv
from mtmarl.errors import UserInputError

ENVS: dict[str, type[MultiAgentEnv]] = {"rware": RwareEnv, "lbf": LbfEnv, "connector": ConnectorEnv,
                                        "smax": SmaxEnv}


def register(name: str, env_class: type[MultiAgentEnv]) -> type[MultiAgentEnv]:
    """Make ``env_class`` the env ``name`` of task strings (``name:key=value,...``); its constructor's
    arguments are the task parameters."""
    if not (isinstance(env_class, type) and issubclass(env_class, MultiAgentEnv)):
        raise TypeError(f"env {name!r}: {env_class!r} is not a MultiAgentEnv subclass")
    ENVS[name] = env_class
    return env_class


def env_params(env: str) -> dict[str, inspect.Parameter]:
    """The parameters a task of ``env`` is described by (constructor arguments)."""
    if env not in ENVS:
        raise UserInputError(f"unknown env {env!r}; valid envs: {', '.join(sorted(ENVS))}")
    params = inspect.signature(ENVS[env].__init__).parameters
    return {k: p for k, p in params.items() if k != "self"}


def make(env: str, **params) -> MultiAgentEnv:
    """Build one task of ``env``; bad names or values raise :class:`UserInputError`."""
    allowed = env_params(env)
    for key in params:
        if key not in allowed:
            raise UserInputError(f"{env}: unknown parameter {key!r}; valid: {', '.join(allowed)}")
    missing = [k for k, p in allowed.items() if p.default is inspect.Parameter.empty and k not in params]
    if missing:
        raise UserInputError(f"{env}: missing parameter(s) {', '.join(missing)}")
    try:
        return ENVS[env](**params)
    except (AssertionError, ValueError, TypeError) as err:
        raise UserInputError(f"{env} task {params} is not valid: {err or type(err).__name__}") from None


__all__ = ["ENVS", "NOOP", "ActionLayout", "EntityGroup", "EnvSpec", "JumanjiEnv", "MultiAgentEnv",
           "ObsLayout", "Observation", "PaddedEnv", "TaskMixture", "TimeStep", "UserInputError", "env_params", "make",
           "register"]
