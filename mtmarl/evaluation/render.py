"""Save a GIF of one episode with Jumanji's own viewer, so a person can watch a policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from mtmarl import envs
from mtmarl.errors import UserInputError
from mtmarl.evaluation.policies import Policy


def renders(env: str) -> bool:
    """Whether tasks of ``env`` can be drawn: its class has a viewer of its own (``MultiAgentEnv.animate``)."""
    return envs.ENVS[env].animate is not envs.MultiAgentEnv.animate


def check_renders(specs) -> None:
    """``render=true`` refused at start-up, before any episode is played, if a task's env has no viewer."""
    for spec in specs:
        if not renders(spec.env):
            allowed = ", ".join(sorted(name for name in envs.ENVS if renders(name)))
            raise UserInputError(f"render=true: {spec.env} tasks ({spec.name}) cannot be rendered; rendering works "
                                 f"for {allowed} tasks (leave render=false to evaluate {spec.name})")


def record_episode(env, policy: Policy, params: Any, key: jax.Array, max_steps: int) -> list:
    """Jumanji states of one episode, up to its first end or ``max_steps`` steps."""
    steps = min(max_steps, env.horizon)
    reset_key, act_key = jax.random.split(key)

    @jax.jit
    def play(reset_key, act_key):
        state, ts = env.reset(reset_key)
        carry = policy.init_carry(params, env.num_agents)

        def body(loop, t):
            state, ts, carry = loop
            actions, carry = policy.act(params, ts.observation, carry, jax.random.fold_in(act_key, t))
            state, ts = env.step(state, actions)
            carry = policy.observe(params, carry, ts.reward)
            return (state, ts, carry), (state, ts.done)

        _, (states, done) = jax.lax.scan(body, (state, ts, carry), jnp.arange(steps))
        return state, states, done

    first, states, done = play(reset_key, act_key)
    done = jax.device_get(done)
    length = int(done.argmax()) + 1 if done.any() else steps
    return [first] + [jax.tree.map(lambda x, i=i: x[i], states) for i in range(length)]


def save_gif(env, states: list, path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    env.animate(states, save_path=str(path))
    plt.close("all")
    return path
