"""``online.system`` -> the online learner's config class and builder (MAPPO or Sable).

Both builders return an object with the same fields (``init``, ``train_chunk``,
``record``, ``policy``, ``greedy_policy``, ``env_steps_per_update``,
``actor_params``, ...), so the collector does not care which one runs.
"""

from __future__ import annotations

from typing import Any

from mtmarl.errors import UserInputError

SYSTEMS = ("mappo", "sable")
LABELS = {"mappo": "MAPPO", "sable": "Sable"}


def online_config(online: dict[str, Any]):
    """A frozen, hashable config from the ``online`` mapping; its ``system`` key picks the class."""
    name = online.get("system", "mappo")
    if name == "mappo":
        from mtmarl.online.system import MappoConfig
        return MappoConfig.from_mapping(online)
    if name == "sable":
        from mtmarl.online.sable_system import SableOnlineConfig
        return SableOnlineConfig.from_mapping(online)
    raise UserInputError(f"unknown online.system {name!r}; known: {', '.join(SYSTEMS)}")


def system_name(cfg) -> str:
    return getattr(cfg, "system", "mappo")


def make_online_system(env, cfg, num_devices: int | None = None):
    if system_name(cfg) == "sable":
        from mtmarl.online.sable_system import make_sable_system
        return make_sable_system(env, cfg, num_devices)
    from mtmarl.online.system import make_system
    return make_system(env, cfg, num_devices)
