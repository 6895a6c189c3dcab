"""Whether two runs of a task were made with the same options (:func:`mtmarl.online.collectors.task_options`).

A finished task's reference entry and a partial run both keep the options they were made with; a run with
other options must not take their place, so both are compared with :func:`option_changes`.
"""

from __future__ import annotations

import json
from typing import Any

# Options that appeared after data were recorded, with the value that reproduces what those runs did: options
# recorded without the key were made with that value.
ADDED_OPTIONS: dict[str, Any] = {"online.clip_per_network": False, "online.gru_head": [],
                                 "online.critic_recurrent": False, "online.agent_minibatches": False}


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        return {k: v for key, sub in value.items() for k, v in _flat(sub, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): value}


def option_changes(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """``key: old -> new`` for every option that differs (JSON values, so a tuple equals its list)."""
    old, new = _flat(json.loads(json.dumps(before))), _flat(json.loads(json.dumps(now)))
    old = {**{k: v for k, v in ADDED_OPTIONS.items() if k in new}, **old}  # only where the run now has the option
    return [f"{k}: {old.get(k, '(unset)')} -> {new.get(k, '(unset)')}" for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)]
