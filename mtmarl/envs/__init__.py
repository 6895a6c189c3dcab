"""Environments: Jumanji RWARE, LBF and Connector behind one padded interface."""

from __future__ import annotations

import inspect

from mtmarl.envs.base import NOOP, MultiAgentEnv, Observation, TimeStep
from mtmarl.envs.connector import ConnectorEnv
from mtmarl.envs.lbf import LbfEnv
from mtmarl.envs.padding import PaddedEnv
from mtmarl.envs.rware import RwareEnv
from mtmarl.errors import UserInputError

ENVS: dict[str, type[MultiAgentEnv]] = {"rware": RwareEnv, "lbf": LbfEnv, "connector": ConnectorEnv}


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


__all__ = ["ENVS", "NOOP", "MultiAgentEnv", "Observation", "PaddedEnv", "TimeStep",
           "UserInputError", "env_params", "make"]
