"""Env names -> env classes: ``@register("rware")`` on the class, in the module that defines it.

A task string ``name:key=value,...`` builds ``ENVS[name](**params)``, so the class's constructor arguments
are the task parameters; its ``TASK_PARAMS`` types and bounds them and its ``check_layout`` refuses layouts
that cannot exist (:mod:`mtmarl.task_params`). Every module of ``mtmarl.envs`` is imported with the package,
so a new env module is registered without a list to edit; a plug-in registers with
``envs.register("duel", Duel)`` once imported.
"""

from __future__ import annotations

import inspect

from mtmarl.envs.base import MultiAgentEnv
from mtmarl.errors import UserInputError

ENVS: dict[str, type[MultiAgentEnv]] = {}


def register(name: str, env_class: type[MultiAgentEnv] | None = None):
    """Make ``env_class`` the env ``name`` of task strings; without ``env_class``, a class decorator doing so.

    Its ``TASK_PARAMS`` (when it has one) must name exactly its constructor's arguments. The same class
    registering again (its module imported anew, as tests do) replaces the entry; another class is an error."""
    if env_class is None:
        return lambda cls: register(name, cls)
    if not (isinstance(env_class, type) and issubclass(env_class, MultiAgentEnv)):
        raise TypeError(f"env {name!r}: {env_class!r} is not a MultiAgentEnv subclass")
    schema = env_class.TASK_PARAMS
    if schema is not None and set(schema) != set(_constructor(env_class)):
        raise TypeError(f"env {name!r}: {env_class.__name__}.TASK_PARAMS names {sorted(schema)}, its constructor "
                        f"takes {sorted(_constructor(env_class))}")
    old = ENVS.get(name)
    if old is not None and _origin(old) != _origin(env_class):
        raise ValueError(f"env {name!r} is registered twice: by {_origin(old)} and by {_origin(env_class)}")
    ENVS[name] = env_class
    return env_class


def _origin(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _constructor(env_class: type) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(env_class).parameters)


def env_class(env: str) -> type[MultiAgentEnv]:
    """The class registered as ``env``; an unknown name is a :class:`UserInputError` listing the valid ones."""
    if env not in ENVS:
        raise UserInputError(f"unknown env {env!r}; valid envs: {', '.join(sorted(ENVS))}")
    return ENVS[env]


def env_params(env: str) -> dict[str, inspect.Parameter]:
    """The parameters a task of ``env`` is described by (constructor arguments)."""
    return _constructor(env_class(env))


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
