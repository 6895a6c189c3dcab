"""Typed task parameters: each env's keys, their types and the layouts that can exist.

Why: Jumanji checks few of these itself. An unchecked value either crashes
deep inside a JAX trace (``rware:rows=0``, ``horizon=0``), or is silently
wrong (``coop=no`` is a non-empty string, hence truthy; ``connector:grid=2,
agents=10`` has 4 cells for 20 heads and targets). Every task, ad-hoc or from a
set file, passes :func:`check_task` before an env is built, and a bad one is a
:class:`UserInputError` naming the key, the value and what is allowed.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from mtmarl.errors import UserInputError

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


def _int(minimum: int, maximum: int | None = None) -> Callable[[str, Any], int]:
    return lambda key, value: as_int(key, value, minimum, maximum)


def _optional_int(minimum: int) -> Callable[[str, Any], int | None]:
    def parse(key, value):
        if value is None or str(value).strip().lower() in ("none", "null"):
            return None
        return as_int(key, value, minimum)
    return parse


# One entry per constructor argument of mtmarl.envs.<env> (tests check the keys agree).
SCHEMAS: dict[str, dict[str, Callable[[str, Any], Any]]] = {
    "rware": {"rows": _int(1, MAX_SIZE), "cols": _int(1, MAX_SIZE), "height": _int(1, MAX_SIZE),
              "agents": _int(1, MAX_AGENTS), "sensor": _int(1, MAX_SIZE), "request": _optional_int(1),
              "horizon": _int(1, MAX_STEPS)},
    "lbf": {"grid": _int(5, MAX_SIZE), "agents": _int(1, MAX_AGENTS), "food": _int(1, MAX_SIZE**2),
            "level": _int(2, MAX_SIZE), "fov": _int(1, MAX_SIZE), "coop": as_bool, "horizon": _int(1, MAX_STEPS)},
    "connector": {"grid": _int(2, MAX_SIZE), "agents": _int(1, MAX_AGENTS), "horizon": _int(1, MAX_STEPS)},
    "smax": {"map": lambda key, value: _smax_map(value), "horizon": _int(1, MAX_STEPS)},
}


def _rware_layout(p: Mapping[str, Any]) -> None:
    if p["cols"] % 2 == 0:
        raise UserInputError(f"cols={p['cols']} must be odd (RWARE puts an aisle between column pairs)")
    # Jumanji's layout: two shelf columns per cluster, minus the cluster in front of the goals.
    shelves = 2 * p["height"] * (p["rows"] * p["cols"] - 1)
    request = p.get("request")
    what = f"request={request}"
    if request is None and "agents" in p:
        request, what = p["agents"], f"request (default agents={p['agents']})"
    if request is not None and request > shelves:
        raise UserInputError(f"{what} exceeds the {shelves} shelves of rows={p['rows']}, cols={p['cols']}, "
                             f"height={p['height']}")


def _lbf_layout(p: Mapping[str, Any]) -> None:
    # Jumanji places food off the edges and apart: it needs (grid-2)^2 - agents > 5 * food cells.
    inner = (p["grid"] - 2) ** 2 - p["agents"]
    if inner <= 5 * p["food"]:
        raise UserInputError(f"grid={p['grid']} is too small for agents={p['agents']} and food={p['food']}: "
                             f"LBF needs (grid-2)^2 - agents > 5 * food")
    if "fov" in p and p["fov"] > p["grid"]:
        raise UserInputError(f"fov={p['fov']} must be <= grid={p['grid']}")


def _connector_layout(p: Mapping[str, Any]) -> None:
    # Every agent needs its own start and target cell.
    if p["grid"] ** 2 < 2 * p["agents"]:
        raise UserInputError(f"grid={p['grid']} has {p['grid'] ** 2} cells, too few for agents={p['agents']} "
                             f"(each needs a start and a target: grid^2 >= 2 * agents)")


LAYOUT_KEYS = {"rware": ("rows", "cols", "height"), "lbf": ("grid", "agents", "food"),
               "connector": ("grid", "agents")}
LAYOUTS: dict[str, Callable[[Mapping[str, Any]], None]] = {
    "rware": _rware_layout, "lbf": _lbf_layout, "connector": _connector_layout}


def _smax_map(value: Any) -> str:
    """A SMAC map name whose units can be read (``mtmarl.envs.smax.parse_map`` names what is allowed)."""
    from mtmarl.envs.smax import parse_map

    parse_map(str(value))
    return str(value).strip()


def _schema_from_signature(env: str) -> dict[str, Callable[[str, Any], Any]]:
    """Types of a registered env without a schema here (e.g. a test's toy env), from its constructor's
    annotations: ``int`` and ``bool`` are checked like the built-in envs' keys, anything else is kept."""
    from mtmarl import envs

    parse: dict[str, Callable[[str, Any], Any]] = {"int": _int(0), "bool": as_bool}
    keep = lambda key, value: value  # noqa: E731
    return {k: parse.get(getattr(p.annotation, "__name__", str(p.annotation)), keep)
            for k, p in envs.env_params(env).items()}


def check_task(env: str, params: Mapping[str, Any], label: str) -> dict[str, Any]:
    """``params`` with every value converted to its type; raises naming the task, key and value.

    Keys must already be known (``TaskSpec.create`` checks them); the layout is
    checked only when its keys are all given (a missing one is reported by ``envs.make``).
    """
    schema = SCHEMAS.get(env) or _schema_from_signature(env)
    try:
        typed = {key: schema[key](key, value) for key, value in params.items()}
        if env in LAYOUTS and all(k in typed for k in LAYOUT_KEYS[env]):
            LAYOUTS[env](typed)
    except UserInputError as err:
        raise UserInputError(f"task {label}: {err}") from None
    return typed
