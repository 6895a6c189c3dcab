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
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from mtmarl.configs import CONFIG_DIR
from mtmarl.errors import UserInputError



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


def reference_tree(config_name: str, top_keys) -> dict[str, Any]:
    """The keys ``mtmarl/configs/<config_name>.yaml`` may hold: its own, plus every option of each group used."""
    tree = _yaml(CONFIG_DIR / f"{config_name}.yaml")
    tree.pop("hydra", None)
    for key in top_keys:
        group = CONFIG_DIR / key
        if key in tree or not group.is_dir():
            continue
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


def boolean(v: Any) -> str | None:
    return None if isinstance(v, bool) else "true or false"


def boolean_or_null(v: Any) -> str | None:
    return None if v is None or isinstance(v, bool) else "true, false or null"


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


TRAIN_RULES: dict[str, Callable[[Any], str | None]] = {
    "seed": int_at_least(0),
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
    "training.batch_size": int_at_least(1, optional=True),
    "training.seq_len": int_at_least(1, optional=True),
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


def population_seeds(cfg: Mapping[str, Any]) -> list[int] | None:
    """The seeds a train config trains side by side (``training.population`` > 1: ``seed .. seed+S-1``), else None."""
    size = int((cfg.get("training") or {}).get("population") or 1)
    first = int(cfg.get("seed", 0))
    return list(range(first, first + size)) if size > 1 else None


def check_train_config(cfg: Mapping[str, Any]) -> None:
    """All checks of a ``python -m mtmarl.train`` config (plain containers, resolved) that need no data."""
    check_keys(cfg, "train", delegated=("algo",))  # mtmarl.algos.registry.check: unknown algo.* keys
    check_values(cfg, TRAIN_RULES)
    training = cfg["training"]
    if training["updates"] % training["updates_per_call"]:
        raise UserInputError(f"training.updates={training['updates']} must be a multiple of "
                             f"training.updates_per_call={training['updates_per_call']}")
    if cfg.get("resume") and cfg.get("overwrite"):
        raise UserInputError("resume=true and overwrite=true contradict each other; pass one of them")
