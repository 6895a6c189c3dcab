"""Typed task parameters: each env's keys, their types and the layouts that can exist.

Why: Jumanji checks few of these itself. An unchecked value either crashes
deep inside a JAX trace (``rware:rows=0``, ``horizon=0``), or is silently
wrong (``coop=no`` is a non-empty string, hence truthy; ``connector:grid=2,
agents=10`` has 4 cells for 20 heads and targets). Every task, ad-hoc or from a
set file, passes :func:`check_task` before an env is built, and a bad one is a
:class:`UserInputError` naming the key, the value and what is allowed.

Each env class owns its parameters' types and bounds (``TASK_PARAMS``, built from the parsers here) and
its layout rule (``check_layout``); this module reads them from the class registered for the task's env.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Callable, Mapping

from mtmarl.errors import UserInputError

if TYPE_CHECKING:  # the env modules import this one
    from mtmarl.envs.base import MultiAgentEnv

TRUE_WORDS = ("true", "yes", "1")
FALSE_WORDS = ("false", "no", "0")


def as_bool(key: str, value: Any) -> bool:
    """true/false/yes/no/1/0 (any case) or a real bool; anything else is an error."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    word = str(value).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise UserInputError(f"{key}={value!r} is not a boolean; allowed: true/false, yes/no, 1/0")


def as_int(key: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    """An integer (``"8"`` or 8, not 8.5, not a bool), at least ``minimum`` and at most ``maximum``."""
    if isinstance(value, bool):
        raise UserInputError(f"{key}={value!r} is not an integer")
    if isinstance(value, int):
        out = value
    else:
        try:
            out = int(str(value).strip())
        except ValueError:
            raise UserInputError(f"{key}={value!r} is not an integer") from None
    if minimum is not None and out < minimum:
        raise UserInputError(f"{key}={value!r} must be an integer >= {minimum}")
    if maximum is not None and out > maximum:
        raise UserInputError(f"{key}={value!r} must be an integer <= {maximum:,}")
    return out


# Sizes past these do not fit the envs' arrays: step counters are int32, and a grid's cells are allocated
# per env and per agent view (a 10,000-wide grid is 10^8 cells per env).
MAX_SIZE, MAX_AGENTS, MAX_STEPS = 1024, 1024, 2**31 - 1


def integer(minimum: int, maximum: int | None = None) -> Callable[[str, Any], int]:
    """The parser of an integer parameter in ``[minimum, maximum]`` (a ``TASK_PARAMS`` value)."""
    return lambda key, value: as_int(key, value, minimum, maximum)


def optional_integer(minimum: int) -> Callable[[str, Any], int | None]:
    """The parser of an integer parameter >= ``minimum`` that may be none/null (None)."""
    def parse(key, value):
        if value is None or str(value).strip().lower() in ("none", "null"):
            return None
        return as_int(key, value, minimum)
    return parse


def schema(env_class: type[MultiAgentEnv]) -> dict[str, Callable[[str, Any], Any]]:
    """The env's ``TASK_PARAMS``; without one (e.g. a test's toy env), types from its constructor's
    annotations: ``int`` and ``bool`` are checked like the built-in envs' keys, anything else is kept."""
    if env_class.TASK_PARAMS is not None:
        return dict(env_class.TASK_PARAMS)
    parse: dict[str, Callable[[str, Any], Any]] = {"int": integer(0), "bool": as_bool}
    keep = lambda key, value: value  # noqa: E731
    return {k: parse.get(getattr(p.annotation, "__name__", str(p.annotation)), keep)
            for k, p in inspect.signature(env_class).parameters.items()}


def check_task(env_class: type[MultiAgentEnv], params: Mapping[str, Any], label: str) -> dict[str, Any]:
    """``params`` of a task of the registered ``env_class`` with every value converted to its type (its
    :func:`schema`) and its layout checked (its ``check_layout``); raises naming the task, key and value.

    Keys must already be known (``TaskSpec.create`` checks them).
    """
    parsers = schema(env_class)
    try:
        typed = {key: parsers[key](key, value) for key, value in params.items()}
        env_class.check_layout(typed)
    except UserInputError as err:
        raise UserInputError(f"task {label}: {err}") from None
    return typed
