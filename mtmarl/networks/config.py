"""The base of network config dataclasses: built from a config mapping that must name only its fields.

Why: a network preset is a yaml group (``network=...``) that users override key by key; a typo must be an
error naming the key, not a silently ignored setting, whichever network an algorithm uses.
"""

from __future__ import annotations

import dataclasses

from mtmarl.errors import UserInputError


class NetworkConfig:
    @classmethod
    def from_dict(cls, d: dict):
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = set(d) - names
        if unknown:
            raise UserInputError(f"unknown network config keys {sorted(unknown)} for {cls.__name__}; "
                                 f"known: {sorted(names)} (pick the algorithm's preset with network=<name>)")
        return cls(**d)
