"""LevelBasedForaging: Jumanji's grid observation, flattened.

The grid view (agent levels, food levels, accessibility; each (2fov+1)^2) has
a size fixed by the field of view alone, unlike the vector view whose size
grows with agents and food, so one network reads every task of a set.
"""

from __future__ import annotations

import warnings

import jax.numpy as jnp
from jumanji.environments import LevelBasedForaging
from jumanji.environments.routing.lbf.generator import RandomGenerator

from mtmarl.envs.base import JumanjiEnv
from mtmarl.envs.lbf_stack import LbfStack
from mtmarl.envs.registry import register
from mtmarl.errors import UserInputError
from mtmarl.task_params import MAX_AGENTS, MAX_SIZE, MAX_STEPS, as_bool, integer

# Per-channel divisors: agent levels (<= 4 in our tasks), food levels (<= the
# sum of the levels of the agents that may load it), accessibility (0/1).
CHANNEL_SCALE = (4.0, 8.0, 1.0)

# jumanji 1.1.2's grid observer writes int32 values into a bool array; jax 0.10 warns on every trace that
# this will become an error. Harmless with the pinned versions (values are 0/1); silenced so logs stay readable.
warnings.filterwarnings("ignore", message="scatter inputs have incompatible types: cannot safely cast value "
                        "from dtype=int32 to dtype=bool", category=FutureWarning)


def scaled_view(view):
    """Jumanji's (n, 3, k, k) grid view, each channel divided by its ``CHANNEL_SCALE``, flattened per agent."""
    view = view.astype(jnp.float32) / jnp.asarray(CHANNEL_SCALE)[None, :, None, None]
    return view.reshape(view.shape[0], -1)


@register("lbf")
class LbfEnv(JumanjiEnv):
    name = "lbf"
    TASK_PARAMS = {"grid": integer(5, MAX_SIZE), "agents": integer(1, MAX_AGENTS), "food": integer(1, MAX_SIZE**2),
                   "level": integer(2, MAX_SIZE), "fov": integer(1, MAX_SIZE), "coop": as_bool,
                   "horizon": integer(1, MAX_STEPS)}

    @classmethod
    def check_layout(cls, p):
        if not {"grid", "agents", "food"} <= p.keys():
            return
        # Jumanji places food off the edges and apart: it needs (grid-2)^2 - agents > 5 * food cells.
        inner = (p["grid"] - 2) ** 2 - p["agents"]
        if inner <= 5 * p["food"]:
            raise UserInputError(f"grid={p['grid']} is too small for agents={p['agents']} and food={p['food']}: "
                                 f"LBF needs (grid-2)^2 - agents > 5 * food")
        if "fov" in p and p["fov"] > p["grid"]:
            raise UserInputError(f"fov={p['fov']} must be <= grid={p['grid']}")

    def __init__(self, grid: int, agents: int, food: int, level: int = 2,
                 fov: int = 2, coop: bool = False, horizon: int = 100):
        gen = RandomGenerator(grid_size=grid, num_agents=agents, num_food=food, fov=fov,
                              max_agent_level=level, force_coop=bool(coop))
        env = LevelBasedForaging(generator=gen, time_limit=horizon, grid_observation=True)
        super().__init__(env, horizon)
        self._level = (grid, food, level, bool(coop))

    def size_property(self) -> int:
        return int(self.jumanji_env._generator.max_agent_level)

    def describe_layout(self) -> str:
        grid, food, level, coop = self._level
        return f"{grid}x{grid}, {food} food, max level {level}{', coop' if coop else ''}"

    def agents_view(self, state, raw_obs):
        return scaled_view(raw_obs.agents_view)

    @classmethod
    def stack(cls, envs):
        """All levels in one traced env (:class:`mtmarl.envs.lbf_stack.LbfStack`); they must share the horizon,
        field of view, observation layout and reward settings."""
        same = lambda get: len({get(e) for e in envs}) == 1  # noqa: E731
        if not all(same(get) for get in (lambda e: e.horizon, lambda e: e.spec.obs, lambda e: e.jumanji_env.fov,
                                          lambda e: e.jumanji_env.normalize_reward, lambda e: e.jumanji_env.penalty)):
            return None
        return LbfStack(envs, scaled_view)
