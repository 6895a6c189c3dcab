"""What an environment adapter declares about its shapes, as data.

Why this exists: the tasks of one set differ in agent counts and, for
SMAC-like envs, in how many allies and enemies each agent sees and can attack.
One padding rule per *declared* layout (instead of one per env) lets every
task of a set share one network, lets the data, the evaluator and the online
learners pad the same way, and lets an entity network split a flat
observation row into its entities without knowing which env produced it.

* :class:`ObsLayout`: an agent's observation row is the concatenation of named
  entity groups, each ``count`` entities x ``features`` features (row-major).
  A plain vector is one group of one entity (:meth:`ObsLayout.flat`).
* :class:`ActionLayout`: ``basic`` actions that target nothing (indices
  ``0..basic-1``), then one action per entity of each targeted group in order
  (e.g. "attack enemy k"), and the index of the no-op.
* :class:`EnvSpec`: both layouts plus the agent count, the global-state size
  and whether the env reports success (a win) beside the return.

Padding (``pad`` / ``action_map``) puts every entity and targeted action of a
smaller layout at the same index it has in the bigger one and zero-fills the
rest, so entity k stays entity k and "attack k" stays "attack k"; a flat layout
padded to a longer flat layout appends zero features, as before layouts existed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from mtmarl.errors import UserInputError


@dataclasses.dataclass(frozen=True)
class EntityGroup:
    name: str
    count: int
    features: int

    @property
    def size(self) -> int:
        return self.count * self.features


def _xp(x):
    """numpy for host arrays (vault data), jax.numpy otherwise (traced env steps)."""
    if isinstance(x, np.ndarray):
        return np
    import jax.numpy as jnp
    return jnp


def _same_names(kind: str, layouts, names) -> None:
    first = names(layouts[0])
    for other in layouts[1:]:
        if names(other) != first:
            raise UserInputError(f"{kind} layouts of one task set must have the same groups in the same order: "
                                 f"{list(first)} vs {list(names(other))}")


@dataclasses.dataclass(frozen=True)
class ObsLayout:
    groups: tuple[EntityGroup, ...]

    @classmethod
    def flat(cls, size: int) -> "ObsLayout":
        return cls((EntityGroup("obs", 1, int(size)),))

    @property
    def size(self) -> int:
        return sum(g.size for g in self.groups)

    @property
    def is_flat(self) -> bool:
        return len(self.groups) == 1 and self.groups[0].count == 1

    def group(self, name: str) -> EntityGroup:
        for g in self.groups:
            if g.name == name:
                return g
        raise UserInputError(f"no entity group {name!r}; groups: {[g.name for g in self.groups]}")

    def split(self, obs) -> dict[str, Any]:
        """(..., size) -> {group: (..., count, features)}, for entity networks."""
        out, start = {}, 0
        for g in self.groups:
            out[g.name] = obs[..., start:start + g.size].reshape(*obs.shape[:-1], g.count, g.features)
            start += g.size
        return out

    def check_fits(self, target: "ObsLayout") -> None:
        _same_names("observation", [self, target], lambda lay: tuple(g.name for g in lay.groups))
        for g, t in zip(self.groups, target.groups):
            if g.count > t.count or g.features > t.features:
                raise UserInputError(f"entity group {g.name!r} has {g.count} x {g.features} but the target layout "
                                     f"allows {t.count} x {t.features}")

    def pad(self, obs, target: "ObsLayout"):
        """(..., self.size) -> (..., target.size): each group's entities and features zero-padded in place."""
        self.check_fits(target)
        if self == target:
            return obs
        xp, lead, parts = _xp(obs), obs.shape[:-1], []
        for (name, x), t in zip(self.split(obs).items(), target.groups):
            widths = [(0, 0)] * len(lead) + [(0, t.count - x.shape[-2]), (0, t.features - x.shape[-1])]
            parts.append(xp.pad(x, widths).reshape(*lead, t.size))
        return xp.concatenate(parts, axis=-1)

    def entity_mask(self, target: "ObsLayout") -> dict[str, np.ndarray]:
        """{group: (target count,) bool}: True for the entities this layout really has."""
        self.check_fits(target)
        return {g.name: np.arange(t.count) < g.count for g, t in zip(self.groups, target.groups)}

    @staticmethod
    def join(layouts) -> "ObsLayout":
        """The smallest layout every one of ``layouts`` pads into (largest count and features per group)."""
        layouts = list(layouts)
        _same_names("observation", layouts, lambda lay: tuple(g.name for g in lay.groups))
        return ObsLayout(tuple(EntityGroup(gs[0].name, max(g.count for g in gs), max(g.features for g in gs))
                               for gs in zip(*(lay.groups for lay in layouts))))

    def to_json(self) -> list:
        return [[g.name, g.count, g.features] for g in self.groups]

    @classmethod
    def from_json(cls, data) -> "ObsLayout":
        return cls(tuple(EntityGroup(str(n), int(c), int(f)) for n, c, f in data))


@dataclasses.dataclass(frozen=True)
class ActionLayout:
    basic: int
    targets: tuple[tuple[str, int], ...] = ()  # (observation group, entity count): one action per entity
    noop: int = 0

    def __post_init__(self):
        if not 0 <= self.noop < self.basic:
            raise UserInputError(f"the no-op action {self.noop} must be one of the {self.basic} basic actions")

    @property
    def num_actions(self) -> int:
        return self.basic + sum(c for _, c in self.targets)

    def target_offset(self, group: str) -> int:
        """Index of the action that targets entity 0 of ``group``."""
        start = self.basic
        for name, count in self.targets:
            if name == group:
                return start
            start += count
        raise UserInputError(f"no action targets group {group!r}; targeted groups: {[n for n, _ in self.targets]}")

    def action_map(self, target: "ActionLayout") -> tuple[np.ndarray, np.ndarray]:
        """For every action of ``target``: this layout's index for it and whether this layout has it."""
        _same_names("action", [self, target], lambda lay: (lay.basic, lay.noop, tuple(n for n, _ in lay.targets)))
        src, valid = list(range(self.basic)), [True] * self.basic
        for (name, count), (_, cap) in zip(self.targets, target.targets):
            if count > cap:
                raise UserInputError(f"{count} actions target group {name!r} but the target layout allows {cap}")
            first = self.target_offset(name)
            src += [first + k if k < count else self.noop for k in range(cap)]
            valid += [k < count for k in range(cap)]
        return np.asarray(src, np.int32), np.asarray(valid, bool)

    def index_in(self, target: "ActionLayout") -> np.ndarray:
        """(num_actions,): where each of this layout's actions sits in ``target`` (data recorded unpadded)."""
        src, valid = self.action_map(target)
        out = np.empty(self.num_actions, np.int32)
        out[src[valid]] = np.flatnonzero(valid)
        return out

    @staticmethod
    def join(layouts) -> "ActionLayout":
        layouts = list(layouts)
        _same_names("action", layouts, lambda lay: (lay.basic, lay.noop, tuple(n for n, _ in lay.targets)))
        first = layouts[0]
        caps = tuple((name, max(dict(lay.targets)[name] for lay in layouts)) for name, _ in first.targets)
        return ActionLayout(first.basic, caps, first.noop)

    def to_json(self) -> dict:
        return {"basic": self.basic, "targets": [list(t) for t in self.targets], "noop": self.noop}

    @classmethod
    def from_json(cls, data) -> "ActionLayout":
        return cls(int(data["basic"]), tuple((str(n), int(c)) for n, c in data.get("targets", ())),
                   int(data.get("noop", 0)))


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    """Everything a network or a buffer needs to know about an env's shapes."""

    num_agents: int
    obs: ObsLayout
    actions: ActionLayout
    state_dim: int = 0
    has_success: bool = False

    @property
    def obs_dim(self) -> int:
        return self.obs.size

    @property
    def num_actions(self) -> int:
        return self.actions.num_actions

    @staticmethod
    def join(specs) -> "EnvSpec":
        """The padded spec all ``specs`` fit in (a task set's shape)."""
        specs = list(specs)
        return EnvSpec(max(s.num_agents for s in specs), ObsLayout.join(s.obs for s in specs),
                       ActionLayout.join(s.actions for s in specs), max(s.state_dim for s in specs),
                       any(s.has_success for s in specs))

    def to_json(self) -> dict:
        return {"num_agents": self.num_agents, "obs": self.obs.to_json(), "actions": self.actions.to_json(),
                "state_dim": self.state_dim, "has_success": self.has_success}

    @classmethod
    def from_json(cls, data) -> "EnvSpec":
        return cls(int(data["num_agents"]), ObsLayout.from_json(data["obs"]), ActionLayout.from_json(data["actions"]),
                   int(data.get("state_dim", 0)), bool(data.get("has_success", False)))
