"""Config checks that run before a run directory is created or touched.

Why: Hydra refuses ``training.updatez=5`` but accepts ``+training.updatez=5``
(a new key, then silently ignored), and OmegaConf keeps ``training.updates=abc``
as a string that only fails deep inside training. The allowed keys are read
from the YAML files themselves (``mtmarl/configs/<name>.yaml`` and every option of
its groups), so this module owns no default and no key list of its own; the
value rules below only say what each setting may be.
"""

from __future__ import annotations

import difflib
import fnmatch
import math
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from mtmarl.configs import CONFIG_DIR
from mtmarl.errors import UserInputError

# Config groups a command takes on top of its defaults list (``+tasks=<set>``, train's ``+algo=<name>``); any
# other group's options mean nothing to it and are refused, with the reason where one helps.
ADDED_GROUPS = {"train": ("algo", "tasks"), "evaluate": ("tasks",), "collect": ("tasks",)}
GROUP_REASONS = {
    ("evaluate", "algo"): "a checkpoint is evaluated with the algorithm and network it was trained with "
                          "(its config.yaml), and policy=random needs none",
}


def _yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text()) or {}
    data.pop("defaults", None)
    return data


def _merge(into: dict[str, Any], more: Mapping[str, Any]) -> None:
    for key, value in more.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict) and into[key]:
            _merge(into[key], value)
        else:
            into.setdefault(key, value)


def command_groups(config_name: str) -> set[str]:
    """The config groups ``python -m mtmarl.<config_name>`` takes: its defaults list's, plus :data:`ADDED_GROUPS`."""
    defaults = yaml.safe_load((CONFIG_DIR / f"{config_name}.yaml").read_text()).get("defaults") or []
    named = {str(k).split("@")[0] for entry in defaults if isinstance(entry, dict) for k in entry
             if not str(k).startswith("override ") and "/" not in str(k)}
    return named | set(ADDED_GROUPS.get(config_name, ()))


def reference_tree(config_name: str, top_keys) -> dict[str, Any]:
    """The keys ``mtmarl/configs/<config_name>.yaml`` may hold: its own, plus every option of each group used."""
    tree = _yaml(CONFIG_DIR / f"{config_name}.yaml")
    tree.pop("hydra", None)
    groups = command_groups(config_name) if config_name in ADDED_GROUPS else None
    for key in top_keys:
        group = CONFIG_DIR / key
        if key in tree or not group.is_dir():
            continue
        if groups is not None and key not in groups:
            reason = GROUP_REASONS.get((config_name, key))
            raise UserInputError(f"+{key}=... does not apply to python -m mtmarl.{config_name}"
                                 + (f": {reason}" if reason else f" (it takes {', '.join(sorted(groups))})"))
        merged: dict[str, Any] = {}
        for path in sorted(group.glob("*.yaml")):
            if "@package _global_" not in path.read_text().split("\n", 1)[0]:
                _merge(merged, _yaml(path))
        tree[key] = merged
    return tree


def check_keys(cfg: Mapping[str, Any], config_name: str, delegated: tuple[str, ...] = ()) -> None:
    """Refuse keys no config file defines (``+training.updatez=5``), suggesting the closest valid key.

    ``delegated`` top-level groups are checked by their owner instead (``algo``: the
    registered algorithm's config class, which may live outside the package).
    """
    _check_level({k: v for k, v in cfg.items() if k not in delegated}, reference_tree(config_name, list(cfg)), "")


def _check_level(cfg: Mapping[str, Any], ref: Mapping[str, Any], where: str) -> None:
    for key, value in cfg.items():
        path = f"{where}{key}"
        if key not in ref:
            close = difflib.get_close_matches(str(key), [str(k) for k in ref], n=1)
            hint = f"; did you mean {where}{close[0]}?" if close else f"; valid keys here: {', '.join(map(str, ref))}"
            raise UserInputError(f"unknown config key {path!r}{hint}")
        # An empty mapping in the file ({}) is free-form (per-env settings); lists are checked by their users.
        if isinstance(value, Mapping) and isinstance(ref[key], dict) and ref[key]:
            _check_level(value, ref[key], f"{path}.")


# ------------------------------------------------------------------------------------------ value rules

def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def int_at_least(minimum: int, optional: bool = False) -> Callable[[Any], str | None]:
    def rule(v):
        if v is None and optional:
            return None
        if _is_int(v) and v >= minimum:
            return None
        return f"an integer >= {minimum}" + (" or null" if optional else "")
    return rule


def int_in(minimum: int, maximum: int, optional: bool = False) -> Callable[[Any], str | None]:
    def rule(v):
        if (v is None and optional) or (_is_int(v) and minimum <= v <= maximum):
            return None
        return f"an integer in [{minimum}, {maximum}]" + (" or null" if optional else "")
    return rule


def positive_number(v: Any) -> str | None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
    return None if ok else "a finite number > 0"


def boolean_or_null(v: Any) -> str | None:
    return None if v is None or isinstance(v, bool) else "true, false or null"


def boolean(v: Any) -> str | None:
    return None if isinstance(v, bool) else "true or false"


def one_of(*choices: str) -> Callable[[Any], str | None]:
    return lambda v: None if v in choices else "one of " + ", ".join(choices)


def fraction(v: Any) -> str | None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1
    return None if ok else "a number in (0, 1]"


def existing_file(optional: bool = True) -> Callable[[Any], str | None]:
    def rule(v):
        if v is None and optional:
            return None
        if isinstance(v, str) and Path(v).is_file():
            return None
        return "the path of an existing file" + (" or null" if optional else "")
    return rule


def text(optional: bool = False) -> Callable[[Any], str | None]:
    def rule(v):
        if (v is None and optional) or (isinstance(v, str) and v):
            return None
        return "a non-empty string" + (" or null" if optional else "")
    return rule


def splits(v: Any) -> str | None:
    ok = isinstance(v, (list, tuple)) and len(v) > 0 and all(s in ("train", "test") for s in v)
    return None if ok else "a non-empty list of train and/or test"


# Seeds seed NumPy and JAX keys, which take unsigned 32-bit integers.
SEED_MAX = 2**32 - 1
# Far beyond any setting that trains here (the presets take 16-64 sequences of 10-20 steps); a larger value is
# a typo, which would otherwise end in an out-of-memory error or a compile of many minutes after the run started.
MAX_BATCH_SIZE = 2**16
MAX_SEQ_LEN = 2**12
# A sequence longer than this and than every training episode is warned about: the training program unrolls
# every step of it, so its compile time grows with it (the presets unroll 10-20 steps).
LONG_SEQ_LEN = 64

TRAIN_RULES: dict[str, Callable[[Any], str | None]] = {
    "seed": int_in(0, SEED_MAX),
    "task": text(optional=True),
    "resume": boolean,
    "overwrite": boolean,
    "references": existing_file(),
    "data.root": text(),
    "data.quality": text(optional=True),
    "data.verify": boolean,
    "data.balanced": boolean,
    "data.fraction": fraction,
    "data.hub": text(optional=True),
    "data.hub_manifest": existing_file(),
    "agents.shuffle": boolean,
    "agents.mask": boolean,
    "eval.episodes": int_at_least(1),
    "eval.devices": int_at_least(1, optional=True),
    "eval.greedy": boolean,
    "training.updates": int_at_least(1),
    "training.updates_per_call": int_at_least(1),
    "training.batch_size": int_in(1, MAX_BATCH_SIZE, optional=True),
    "training.seq_len": int_in(1, MAX_SEQ_LEN, optional=True),
    "training.devices": int_at_least(1, optional=True),
    "training.log_every": int_at_least(1),
    "training.eval_every": int_at_least(0),
    "training.eval_episodes": int_at_least(1),
    "training.eval_splits": splits,
    "training.checkpoint_every": int_at_least(0),
    "training.keep_checkpoints": int_at_least(1),
    "training.population": int_at_least(1),
    "training.value_range": one_of("data", "config"),
    "logger.neptune": boolean_or_null,
    "logger.progress": boolean,
}

EVALUATE_RULES: dict[str, Callable[[Any], str | None]] = {
    "seed": int_in(0, SEED_MAX),
    "policy": text(optional=True),
    "checkpoint": text(optional=True),
    "checkpoint_kind": lambda v: None if v is None else one_of("best", "latest")(v),
    "checkpoint_seed": int_in(0, SEED_MAX, optional=True),
    "greedy": boolean_or_null,
    "task": text(optional=True),
    "split": one_of("train", "test", "all"),
    "references": existing_file(),
    "render": boolean,
    "render_max_steps": int_at_least(1),
    "eval.episodes": int_at_least(1),
    "eval.devices": int_at_least(1, optional=True),
}

# Rules by the name of an algorithm's field, for every algorithm (plug-ins included): a learning rate or a
# gradient-clipping norm <= 0 trains backwards or zeroes every update without an error.
ALGO_FIELD_RULES: dict[str, Callable[[Any], str | None]] = {
    "lr": positive_number,
    "*_lr": positive_number,
    "max_grad_norm": positive_number,
}


def _get(cfg: Mapping[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def check_values(cfg: Mapping[str, Any], rules: Mapping[str, Callable[[Any], str | None]]) -> None:
    """Every present key obeys its rule; the first violation names the key, the value and what is allowed."""
    for key, rule in rules.items():
        present, value = _get(cfg, key)
        if present:
            want = rule(value)
            if want is not None:
                raise UserInputError(f"{key}={value!r} is not allowed: want {want}")


def check_finite(tree: Any, where: str = "") -> None:
    """No float anywhere is NaN or infinite (``algo.lr=nan`` would otherwise fail after minutes of training)."""
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            check_finite(value, f"{where}{key}.")
    elif isinstance(tree, (list, tuple)):
        for i, value in enumerate(tree):
            check_finite(value, f"{where[:-1]}[{i}].")
    elif isinstance(tree, float) and not math.isfinite(tree):
        raise UserInputError(f"{where[:-1]}={tree!r} is not allowed: want a finite number")


def check_named_fields(values: Mapping[str, Any], prefix: str = "algo.") -> None:
    """:data:`ALGO_FIELD_RULES` on every field whose name matches a pattern, and finite floats everywhere."""
    check_finite(values, prefix)
    for key, value in values.items():
        for pattern, rule in ALGO_FIELD_RULES.items():
            want = rule(value) if fnmatch.fnmatchcase(str(key), pattern) else None
            if want is not None:
                raise UserInputError(f"{prefix}{key}={value!r} is not allowed: want {want}")


def check_typed_fields(values: Mapping[str, Any], types: Mapping[str, Any], prefix: str = "algo.") -> None:
    """Each value has its field's declared type (``int``, ``float``, ``bool``, ``str``, or one of them ``| None``):
    ``algo.num_bins=abc`` or ``algo.hl_gauss=maybe`` is refused here instead of failing inside a trace."""
    def fits(value: Any, kind: Any) -> bool:
        options = getattr(kind, "__args__", None)
        if options is not None and type(None) in options:
            return value is None or any(fits(value, k) for k in options if k is not type(None))
        if kind is bool:
            return isinstance(value, bool)
        if kind is int:
            return _is_int(value)
        if kind is float:
            return isinstance(value, (int, float)) and not isinstance(value, bool)
        if kind is str:
            return isinstance(value, str)
        return True  # containers and other types: their users check them

    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    for key, value in values.items():
        kind = types.get(key)
        if kind is not None and not fits(value, kind):
            options = getattr(kind, "__args__", (kind,))
            want = " or ".join(names.get(k, "null" if k is type(None) else str(k)) for k in options)
            raise UserInputError(f"{prefix}{key}={value!r} is not allowed: want {want}")
    check_named_fields(values, prefix)


def check_one_task_source(cfg: Mapping[str, Any]) -> None:
    if cfg.get("task") and cfg.get("tasks") is not None:
        raise UserInputError(f"task={cfg['task']} and +tasks=... were both given; pass one of them "
                             "(task= is one ad-hoc task, +tasks= a set)")


def check_batch(algo: Mapping[str, Any], training: Mapping[str, Any], available: int) -> None:
    """The algorithm's batch (``training.*`` over ``algo.*``) is of a sane size and splits evenly over the learner
    devices, which exist (``training.devices``; ``available``: the devices this run can use)."""
    def key(name: str) -> str:
        return f"training.{name}" if training.get(name) is not None else f"algo.{name}"

    for name, limit in (("batch_size", MAX_BATCH_SIZE), ("seq_len", MAX_SEQ_LEN)):
        want = int_in(1, limit)(algo.get(name))
        if want is not None:
            raise UserInputError(f"{key(name)}={algo.get(name)!r} is not allowed: want {want}")
    devices = training.get("devices") or available
    if devices > available:
        raise UserInputError(f"training.devices={devices} is not allowed: only {available} devices are available")
    batch = algo["batch_size"]
    if batch % devices:
        raise UserInputError(f"{key('batch_size')}={batch} is not allowed: want a multiple of the {devices} learner "
                             f"devices (each takes batch_size / devices sequences); set {key('batch_size')} "
                             f"or training.devices")


def check_seq_len(seq_len: int, horizon: int, key: str = "training.seq_len") -> str | None:
    """A warning when one training sequence is long (:data:`LONG_SEQ_LEN`) and longer than the tasks' longest
    episode (``horizon`` steps)."""
    if seq_len <= max(horizon, LONG_SEQ_LEN):
        return None
    return (f"warning: {key}={seq_len} is longer than the training tasks' longest episode ({horizon} steps): "
            f"each sequence spans several episodes, and every update unrolls all {seq_len} steps, which makes "
            f"the training program slow to compile (minutes)")


def population_seeds(cfg: Mapping[str, Any]) -> list[int] | None:
    """The seeds a train config trains side by side (``training.population`` > 1: ``seed .. seed+S-1``), else None."""
    size = int((cfg.get("training") or {}).get("population") or 1)
    first = int(cfg.get("seed", 0))
    return list(range(first, first + size)) if size > 1 else None


def check_train_config(cfg: Mapping[str, Any]) -> None:
    """All checks of a ``python -m mtmarl.train`` config (plain containers, resolved) that need no data."""
    check_keys(cfg, "train", delegated=("algo",))  # mtmarl.algos.registry.check: unknown algo.* keys
    check_values(cfg, TRAIN_RULES)
    check_finite(cfg)
    check_named_fields(cfg.get("algo") or {})
    check_one_task_source(cfg)
    training = cfg["training"]
    if training["updates"] % training["updates_per_call"]:
        raise UserInputError(f"training.updates={training['updates']} must be a multiple of "
                             f"training.updates_per_call={training['updates_per_call']}")
    if cfg.get("resume") and cfg.get("overwrite"):
        raise UserInputError("resume=true and overwrite=true contradict each other; pass one of them")


def check_evaluate_config(cfg: Mapping[str, Any]) -> None:
    """All checks of a ``python -m mtmarl.evaluate`` config (plain containers, resolved) that need no checkpoint."""
    check_keys(cfg, "evaluate")
    check_values(cfg, EVALUATE_RULES)
    check_finite(cfg)
    check_one_task_source(cfg)
    if cfg.get("checkpoint") is None:
        for key in ("checkpoint_kind", "checkpoint_seed", "greedy"):
            if cfg.get(key) is not None:
                raise UserInputError(f"{key}={cfg[key]} applies only to a trained policy: add checkpoint=<run dir>")
