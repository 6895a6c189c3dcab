"""Several SMAX maps in one traced env: the map is data, not a static shape.

Why: an evaluation program traces each task's env on its own, and a SMAX step
traced once costs about 10 s of compile; a set of 12 maps compiled for two
minutes while playing its episodes took seconds. Here one JaxMARL env is built
at the largest ally and enemy counts of the maps, and a map with fewer units
starts with the missing units dead (no health, no collisions, no actions but
stop, zero features in every observation), which SMAX's rules already handle.
The map index is a traced argument of ``reset`` and is kept in the state.

What the wider env changes, and how it is undone so that every map plays as
:class:`mtmarl.envs.smax.SmaxEnv` plays it alone:

* JaxMARL divides the damage reward by its static enemy count: the reward is
  recomputed from the health change with the map's own count.
* Observed "last attack" features are divided by the static action counts, and
  an enemy's attack index counts allies from the static last one: they are
  re-derived for the map's counts (exactly: the raw action is a small integer).
* The world state lists units at their slots in the wide env: it is gathered
  back to the map's own order (allies, enemies, then the team and type rows).

Randomness: reset positions and the enemies' heuristic draws use the same keys
as the map alone (JAX's threefry keys are prefix-consistent), but the per-unit
keys of a world step are split over all units, so where allies are padded the
enemies' weapon cooldown jitter is drawn from other keys: episodes then differ
from the map alone draw by draw while following the same rules (tests compare
both ways).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from mtmarl.envs.base import MultiAgentEnv, Observation, TimeStep
from mtmarl.envs.layout import ActionLayout, EntityGroup, EnvSpec, ObsLayout
from mtmarl.envs.smax_import import jaxmarl_smax

STOP = 4  # JaxMARL: 0-3 move, 4 stop, 5 + k attack enemy k (mtmarl.envs.smax.STOP)


@struct.dataclass
class StackState:
    inner: Any       # JaxMARL's HeuristicEnemySMAX state at the stack's unit counts
    key: jax.Array   # for the next (stochastic) step
    task: jax.Array  # () int32, which map this episode plays


class SmaxStack(MultiAgentEnv):
    """``reset(key, task)`` plays map ``maps[task]`` (``SmaxEnv`` objects with one horizon)."""

    name = "smax"

    def __init__(self, maps):
        smax = jaxmarl_smax()
        self.maps = list(maps)
        self.horizon = self.maps[0].horizon
        A = self.num_allies = max(m.num_allies for m in self.maps)
        E = self.num_enemies = max(m.num_enemies for m in self.maps)
        N = A + E
        scenario = smax.Scenario(jnp.zeros((N,), jnp.uint8), A, E, False, False)
        self.smax = smax.HeuristicEnemySMAX(scenario=scenario, max_steps=self.horizon)
        unit, own = len(self.smax.unit_features), len(self.smax.own_features)
        obs = ObsLayout((EntityGroup("allies", A - 1, unit), EntityGroup("enemies", E, unit),
                         EntityGroup("own", 1, own)))
        actions = ActionLayout(basic=STOP + 1, targets=(("enemies", E),), noop=STOP)
        self.spec = EnvSpec(A, obs, actions, state_dim=int(self.smax.state_size), has_success=True)
        self._unit, self._own = unit, own

        # per map, as arrays with a leading map axis
        types = np.zeros((len(self.maps), N), np.uint8)
        real = np.zeros((len(self.maps), N), bool)
        gather = np.full((len(self.maps), self.state_dim), -1, np.int32)  # world-state slot -> wide slot
        for t, m in enumerate(self.maps):
            allies, enemies = m.unit_types
            slots = list(range(m.num_allies)) + [A + e for e in range(m.num_enemies)]
            types[t, slots] = allies + enemies
            real[t, slots] = True
            n = len(slots)
            for u, s in enumerate(slots):
                gather[t, u * own: (u + 1) * own] = s * own + np.arange(own)
                gather[t, n * own + u] = N * own + s        # team
                gather[t, n * (own + 1) + u] = N * (own + 1) + s  # unit type
        self._types, self._real, self._gather = jnp.asarray(types), jnp.asarray(real), jnp.asarray(gather)
        self._allies = jnp.asarray([m.num_allies for m in self.maps], jnp.int32)
        self._enemies = jnp.asarray([m.num_enemies for m in self.maps], jnp.int32)

    # -- reset: JaxMARL's HeuristicEnemySMAX.reset with the map's missing units dead from the start ------------
    def _first_state(self, key, task):
        from jaxmarl.environments.smax.heuristic_enemy_smax_env import State as EnemyState
        from jaxmarl.environments.smax.smax_env import State

        env = self.smax._env
        A, E = self.num_allies, self.num_enemies
        # the same key use as HeuristicEnemySMAX.reset -> SMAX.reset, so positions match the map alone
        _, reset_key = jax.random.split(key)
        _, k_allies, k_enemies = jax.random.split(reset_key, 3)
        w, h = env.map_width, env.map_height
        allies = jnp.array([w / 4, h / 2]) + jax.random.uniform(k_allies, (A, 2), minval=-2, maxval=2)
        enemies = jnp.array([w / 4 * 3, h / 2]) + jax.random.uniform(k_enemies, (E, 2), minval=-2, maxval=2)
        types, real = self._types[task], self._real[task]
        state = State(
            unit_positions=jnp.concatenate([allies, enemies]),
            unit_alive=real,
            unit_teams=jnp.zeros((A + E,)).at[A:].set(1),
            unit_health=jnp.where(real, env.unit_type_health[types], 0.0),
            unit_types=types,
            prev_movement_actions=jnp.zeros((A + E, 2)),
            prev_attack_actions=jnp.zeros((A + E,), jnp.int32),
            step=jnp.array(0),
            done=jnp.array(False),
            unit_weapon_cooldowns=jnp.zeros((A + E,)),
        )
        state = env._push_units_away(state)
        return EnemyState(state=state, enemy_policy_state=self.smax.get_enemy_policy_initial_state(key))

    def reset(self, key, task) -> tuple[StackState, TimeStep]:
        task = jnp.asarray(task, jnp.int32)
        k_reset, k_next = jax.random.split(key)
        st = self._first_state(k_reset, task)
        return StackState(st, k_next, task), self._timestep(st, task, None, jnp.zeros((), bool))

    def step(self, state: StackState, actions) -> tuple[StackState, TimeStep]:
        k_step, k_next = jax.random.split(state.key)
        acts = {a: actions[i].astype(jnp.int32) for i, a in enumerate(self.smax.agents)}
        _, st, _, dones, _ = self.smax.step_env(k_step, state.inner, acts)
        health = (state.inner.state.unit_health, st.state.unit_health)
        return StackState(st, k_next, state.task), self._timestep(st, state.task, health, dones["__all__"])

    # -- what the map alone would report -----------------------------------------------------------------------
    def _reward(self, st, task, health):
        """Damage dealt as a share of the map's enemies (JaxMARL's rule, with the map's enemy count), +1 on a win."""
        A = self.num_allies
        inner = st.state
        if health is None:
            return jnp.zeros((), jnp.float32)
        before, after = health
        share = (after - before) / self.smax.unit_type_health[inner.unit_types]
        damage = jnp.abs(jnp.sum(share[A:])) / self._enemies[task].astype(jnp.float32)
        won = ~jnp.any(inner.unit_alive[A:]) & jnp.any(inner.unit_alive[:A])
        return (damage + jnp.where(won, self.smax.won_battle_bonus, 0.0)).astype(jnp.float32)

    def _fix_attack_features(self, view, task):
        """Observed last-attack features as the map alone normalises them (see the module docstring)."""
        A, E, f = self.num_allies, self.num_enemies, self._unit
        a_t, e_t = self._allies[task].astype(jnp.float32), self._enemies[task].astype(jnp.float32)
        allies = view[:, : (A - 1) * f].reshape(A, A - 1, f)
        enemies = view[:, (A - 1) * f: (A - 1 + E) * f].reshape(A, E, f)
        ally_act = jnp.round(allies[..., 5] * (E + STOP))            # raw action 5 + k of an ally
        enemy_act = jnp.round(enemies[..., 5] * (A + STOP))          # raw action of an enemy, counted at A allies
        enemy_act = jnp.where(enemy_act > STOP, enemy_act - (A - a_t), enemy_act)
        allies = allies.at[..., 5].set(ally_act / (e_t + STOP))
        enemies = enemies.at[..., 5].set(enemy_act / (a_t + STOP))
        return jnp.concatenate([allies.reshape(A, -1), enemies.reshape(A, -1), view[:, (A - 1 + E) * f:]], axis=1)

    def _timestep(self, st, task, health, done) -> TimeStep:
        env, A = self.smax._env, self.num_allies
        obs = env.get_obs(st.state)
        view = jnp.stack([obs[a] for a in self.smax.agents]).astype(jnp.float32)
        avail = env.get_avail_actions(st.state)
        alive = st.state.unit_alive
        won = ~jnp.any(alive[A:]) & jnp.any(alive[:A])
        lost = ~jnp.any(alive[:A])
        terminal = done & (won | lost)
        wide = env.get_world_state(st.state).astype(jnp.float32)
        index = self._gather[task]
        return TimeStep(
            observation=Observation(
                agents_view=self._fix_attack_features(view, task),
                action_mask=jnp.stack([avail[a] for a in self.smax.agents]).astype(bool),
                active=jnp.arange(A) < self._allies[task],
                step_count=st.state.step.astype(jnp.int32),
            ),
            reward=self._reward(st, task, health),
            terminal=terminal,
            truncated=done & ~terminal,
            state=jnp.where(index >= 0, wide[jnp.maximum(index, 0)], 0.0),
            success=done & won,
        )

    def __repr__(self) -> str:
        return f"SmaxStack({', '.join(m.map_name for m in self.maps)})"
