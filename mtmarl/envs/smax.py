"""SMAX (JaxMARL's JAX SMAC) against its heuristic enemy, on the environment protocol.

Why an adapter of its own: SMAX is the benchmark of the skill-based seed
systems (HiSSD, ODIS, HyGen, M3), and its tasks differ in how many allies and
enemies an agent sees and can attack. Its observation is already a list of
units (the other allies, then the enemies, 13 features each, then the agent's
own 10), so it is declared as three entity groups, and "attack enemy k"
(actions 5 + k) as actions targeting the enemy group; padding a task set then
keeps enemy k and its attack action aligned across maps. Stop (action 4) is
the no-op: it is always legal, also for dead units.

A task is a SMAC map name: ``<allies>[_vs_<enemies>]`` where each side is
counts and unit letters (``m`` marine, ``M`` marauder, ``s`` stalker, ``z``
zealot, ``zg`` zergling, ``h`` hydralisk), e.g. ``3m``, ``5m_vs_6m``, ``2s3z``.
Any such name works, not only JaxMARL's predefined maps.

Reward is JaxMARL's shared ally reward (damage dealt as a fraction of the
enemies' health, plus 1 for a win); SMAX has no win flag, so ``success`` is
"every enemy dead and an ally alive" at the step the episode ends, and a timeout
(``horizon`` steps, JaxMARL's ``max_steps``) is a truncation. JaxMARL's step is
stochastic, so the env state carries its own key.
"""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from mtmarl.envs.base import MultiAgentEnv, Observation, TimeStep
from mtmarl.envs.layout import ActionLayout, EntityGroup, EnvSpec, ObsLayout
from mtmarl.envs.registry import register
from mtmarl.envs.smax_import import jaxmarl_smax
from mtmarl.errors import UserInputError
from mtmarl.task_params import MAX_STEPS, integer

# Unit letters of SMAC map names -> JaxMARL unit type ids.
UNIT_TYPES = {"m": 0, "M": 1, "s": 2, "z": 3, "zg": 4, "h": 5}
UNIT_NAMES = ("marine", "marauder", "stalker", "zealot", "zergling", "hydralisk")
STOP = 4  # JaxMARL: 0-3 move, 4 stop, 5 + k attack enemy k
_SIDE = re.compile(r"(\d+)(zg|[mMszh])")


def parse_side(text: str, map_name: str) -> list[int]:
    """``"2s3z"`` -> [2, 2, 3, 3, 3] (unit type per unit, in order)."""
    parts = _SIDE.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text or any(int(n) < 1 for n, _ in parts):
        raise UserInputError(f"map={map_name!r}: cannot read {text!r} as counts and unit letters "
                             f"(allowed letters: {', '.join(f'{k}={v}' for k, v in zip(UNIT_TYPES, UNIT_NAMES))}; "
                             f"e.g. 3m, 5m_vs_6m, 2s3z)")
    return [UNIT_TYPES[u] for n, u in parts for _ in range(int(n))]


def parse_map(name: str) -> tuple[list[int], list[int]]:
    """(ally unit types, enemy unit types) of a SMAC map name; without ``_vs_`` both sides are equal."""
    name = str(name).strip()
    sides = name.split("_vs_")
    if len(sides) > 2 or not name:
        raise UserInputError(f"map={name!r}: want <allies> or <allies>_vs_<enemies>, e.g. 3m, 5m_vs_6m, 2s3z")
    allies = parse_side(sides[0], name)
    return allies, parse_side(sides[-1], name)


def scenario(name: str):
    """JaxMARL's ``Scenario`` of a SMAC map name: its units in order, fixed start positions (no SMACv2
    generation), as JaxMARL builds the maps it lists."""
    allies, enemies = parse_map(name)
    return jaxmarl_smax().Scenario(jnp.asarray(allies + enemies, jnp.uint8), len(allies), len(enemies), False, False)


@struct.dataclass
class SmaxState:
    inner: Any       # JaxMARL's HeuristicEnemySMAX state
    key: jax.Array   # for the next (stochastic) step


def _map_param(key: str, value: Any) -> str:
    """A SMAC map name whose units can be read (:func:`parse_map` names what is allowed)."""
    parse_map(str(value))
    return str(value).strip()


@register("smax")
class SmaxEnv(MultiAgentEnv):
    name = "smax"
    TASK_PARAMS = {"map": _map_param, "horizon": integer(1, MAX_STEPS)}
    # The shaped reward sums to the share of enemy health removed (at most 1) and a win adds 1, so a won episode
    # returns 2 and any other at most 1.
    WIN_RETURN = 1.5

    def __init__(self, map: str, horizon: int = 100):  # noqa: A002 (the SMAC term)
        smax = jaxmarl_smax()
        allies, enemies = parse_map(map)
        self.map_name, self.horizon = str(map), int(horizon)
        self.num_allies, self.num_enemies = len(allies), len(enemies)
        self.unit_types = (allies, enemies)
        self.smax = smax.HeuristicEnemySMAX(scenario=scenario(map), max_steps=self.horizon)
        unit, own = len(self.smax.unit_features), len(self.smax.own_features)
        obs = ObsLayout((EntityGroup("allies", len(allies) - 1, unit), EntityGroup("enemies", len(enemies), unit),
                         EntityGroup("own", 1, own)))
        actions = ActionLayout(basic=STOP + 1, targets=(("enemies", len(enemies)),), noop=STOP)
        self.spec = EnvSpec(len(allies), obs, actions, state_dim=int(self.smax.state_size), has_success=True)
        if self.smax.obs_size != obs.size:  # JaxMARL's own count, a guard against a changed observation
            raise RuntimeError(f"SMAX observation has {self.smax.obs_size} features, layout says {obs.size}")

    def _timestep(self, st, obs: dict, reward, done) -> TimeStep:
        alive = st.state.unit_alive
        won = ~jnp.any(alive[self.num_allies:]) & jnp.any(alive[: self.num_allies])
        lost = ~jnp.any(alive[: self.num_allies])
        avail = self.smax.get_avail_actions(st)
        agents = self.smax.agents
        terminal = done & (won | lost)
        return TimeStep(
            observation=Observation(
                agents_view=jnp.stack([obs[a] for a in agents]).astype(jnp.float32),
                action_mask=jnp.stack([avail[a] for a in agents]).astype(bool),
                active=jnp.ones((self.num_agents,), bool),
                step_count=st.state.step.astype(jnp.int32),
            ),
            reward=jnp.asarray(reward, jnp.float32),
            terminal=terminal,
            truncated=done & ~terminal,
            state=obs["world_state"].astype(jnp.float32),
            success=done & won,
        )

    def reset(self, key) -> tuple[SmaxState, TimeStep]:
        k_reset, k_next = jax.random.split(key)
        obs, st = self.smax.reset(k_reset)
        return SmaxState(st, k_next), self._timestep(st, obs, 0.0, jnp.zeros((), bool))

    def step(self, state: SmaxState, actions) -> tuple[SmaxState, TimeStep]:
        k_step, k_next = jax.random.split(state.key)
        acts = {a: actions[i].astype(jnp.int32) for i, a in enumerate(self.smax.agents)}
        obs, st, rewards, dones, _ = self.smax.step_env(k_step, state.inner, acts)
        # every ally gets the same team reward
        return SmaxState(st, k_next), self._timestep(st, obs, rewards[self.smax.agents[0]], dones["__all__"])

    @classmethod
    def stack(cls, envs) -> MultiAgentEnv | None:
        """All maps in one traced env (:class:`mtmarl.envs.smax_stack.SmaxStack`); they must share a horizon."""
        if len({env.horizon for env in envs}) != 1:
            return None
        from mtmarl.envs.smax_stack import SmaxStack
        return SmaxStack(envs)

    def size_property(self) -> int:
        return self.num_enemies

    def describe_layout(self) -> str:
        allies, enemies = parse_map(self.map_name)
        count = lambda units: ", ".join(f"{units.count(t)} {UNIT_NAMES[t]}" for t in sorted(set(units)))  # noqa: E731
        return f"{count(allies)} (mirror)" if allies == enemies else f"{count(allies)} vs {count(enemies)}"
