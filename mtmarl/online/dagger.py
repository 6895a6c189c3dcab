"""A local-view student of the RWARE planner, trained by DAgger: the online learner behind the RWARE data.

The planner (:mod:`mtmarl.online.scripted_rware`) reads the whole warehouse, so data
recorded from it cannot be imitated by a policy that sees only its own sensor: every
offline method learned a blurred average of it. The data should come from
a learner that sees what the offline policy sees, as the multi-task Oryx paper records it from an
online Sable. Online MARL needs millions of RWARE steps (sparse deliveries, episodes
end at the first collision); DAgger reaches a useful local-view policy in tens of
thousands, because every visited state gets a planner label:

  iteration i: run B envs for T steps; each agent executes the planner's action with
  probability ``beta_decay ** i`` and the student's sampled action otherwise; label every
  visited (agent view, legal mask) with the planner's collision-checked action; add the
  labels to a FIFO buffer; take ``sgd_steps`` cross-entropy steps on minibatches of it.

The student is MAPPO's MLP actor (:class:`mtmarl.online.system.Actor`) over the agent
view the offline learner also gets, so recordings, policies and evaluators are shared
with the MAPPO collector. One iteration is one ``jit``; the collector records the pure
student (sampled actions, no planner) between iterations, so a vault mixes the student's
qualities from untrained to final, and the final student's return is the task's reference.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax

from mtmarl.errors import UserInputError
from mtmarl.evaluation.policies import masked_sample
from mtmarl.online import scripted_rware as planner
from mtmarl.online.rollout import (EnvBatch, Transition, fresh_pool, make_reset_pool, rollout,
                                   start_from_pool, step_with_pool)
from mtmarl.online.system import Actor, actor_policy


@dataclasses.dataclass(frozen=True)
class DaggerConfig:
    hidden: Sequence[int] = (128, 128)
    lr: float = 1e-3
    num_envs: int = 32  # envs stepped per iteration
    steps: int = 128  # steps of each env per iteration (episodes continue across iterations)
    iterations: int = 24
    beta_decay: float = 0.5  # P(an agent executes the planner's action) = beta_decay ** iteration
    sgd_steps: int = 200  # cross-entropy steps per iteration
    minibatch: int = 2048  # agent-steps per SGD step
    buffer: int = 262144  # agent-steps kept (oldest dropped first)

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        for name in ("num_envs", "steps", "iterations", "sgd_steps", "minibatch", "buffer"):
            if int(getattr(self, name)) < 1:
                raise UserInputError(f"collect.dagger.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.beta_decay <= 1.0:
            raise UserInputError(f"collect.dagger.beta_decay must be in [0, 1], got {self.beta_decay}")
        if not self.lr > 0:
            raise UserInputError(f"collect.dagger.lr must be > 0, got {self.lr}")

    @classmethod
    def from_mapping(cls, cfg: dict[str, Any]) -> "DaggerConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise UserInputError(f"unknown collect.dagger key(s) {unknown}; known: {sorted(known)}")
        return cls(**cfg)


class DaggerState(NamedTuple):
    params: Any
    opt_state: Any
    obs: jax.Array  # (M, O) buffered agent views
    mask: jax.Array  # (M, A) their legal actions
    label: jax.Array  # (M,) the planner's action there
    filled: jax.Array  # () int32 valid rows of the buffer
    cursor: jax.Array  # () int32 next row to write
    batch: EnvBatch  # the running envs (episodes continue across iterations)
    iteration: jax.Array  # () int32


class IterMetrics(NamedTuple):
    loss: jax.Array  # mean cross-entropy over the iteration's SGD steps
    accuracy: jax.Array  # student argmax == planner label on the new samples (before the update)
    beta: jax.Array
    filled: jax.Array


class Dagger(NamedTuple):
    config: DaggerConfig
    actor: Actor
    init: Any  # key -> DaggerState
    iterate: Any  # (state, key) -> (state, IterMetrics), jitted
    record: Any  # (params, key, envs, length) -> Transition (T, B, ...), jitted
    policy: Any  # sampled-action Policy over the actor params (the evaluator's interface)
    greedy_policy: Any


def cross_entropy(actor: Actor, params, obs, mask, label) -> tuple[jax.Array, jax.Array]:
    """Mean masked cross-entropy of the planner labels, and the student's argmax accuracy."""
    _, logits = actor.apply(params, (), obs)
    logp = jax.nn.log_softmax(jnp.where(mask, logits, -1e9), -1)
    nll = -jnp.take_along_axis(logp, label[:, None], -1)[:, 0]
    return nll.mean(), (jnp.argmax(logp, -1) == label).mean()


def make_dagger(env, cfg: DaggerConfig) -> Dagger:
    actor = Actor(cfg.hidden, env.num_actions)
    opt = optax.adam(cfg.lr)
    n, o, a = env.num_agents, env.obs_dim, env.num_actions
    per_env = cfg.steps // 10 + 2  # untrained students collide within tens of steps
    if cfg.num_envs * cfg.steps * n > cfg.buffer:
        raise UserInputError(f"collect.dagger.buffer={cfg.buffer} is smaller than one iteration's "
                             f"{cfg.num_envs * cfg.steps * n} agent-steps (num_envs x steps x {n} agents)")

    def init(key):
        p_key, e_key = jax.random.split(key)
        params = actor.init(p_key, (), jnp.zeros((n, o)))
        batch = start_from_pool(make_reset_pool(env, e_key, cfg.num_envs, per_env))
        return DaggerState(params, opt.init(params), jnp.zeros((cfg.buffer, o)), jnp.zeros((cfg.buffer, a), bool),
                           jnp.zeros((cfg.buffer,), jnp.int32), jnp.int32(0), jnp.int32(0), batch, jnp.int32(0))

    def labelled_step(params, beta, pool, batch, key):
        label_key, act_key, coin_key = jax.random.split(key, 3)
        ts = batch.timestep
        mask = ts.observation.action_mask
        labels = jax.vmap(lambda s, m, k: planner.act(env, s, m, k, 0.0))(
            batch.state, mask, jax.random.split(label_key, cfg.num_envs))
        _, logits = actor.apply(params, (), ts.observation.agents_view)
        student = masked_sample(act_key, logits, mask)
        actions = jnp.where(jax.random.uniform(coin_key, labels.shape) < beta, labels, student)
        batch, _ = step_with_pool(env, batch, actions, pool)
        return batch, (ts.observation.agents_view, mask, labels)

    def iterate(state: DaggerState, key):
        pool_key, run_key, sgd_key = jax.random.split(key, 3)
        beta = jnp.float32(cfg.beta_decay) ** state.iteration
        batch, pool = fresh_pool(env, pool_key, state.batch, per_env)
        step = lambda b, k: labelled_step(state.params, beta, pool, b, k)  # noqa: E731
        batch, (obs, mask, labels) = jax.lax.scan(step, batch, jax.random.split(run_key, cfg.steps))
        obs, mask, labels = obs.reshape(-1, o), mask.reshape(-1, a), labels.reshape(-1)
        _, accuracy = cross_entropy(actor, state.params, obs, mask, labels)
        rows = (state.cursor + jnp.arange(labels.shape[0])) % cfg.buffer
        buf_obs, buf_mask = state.obs.at[rows].set(obs), state.mask.at[rows].set(mask)
        buf_label = state.label.at[rows].set(labels)
        filled = jnp.minimum(state.filled + labels.shape[0], cfg.buffer)

        def sgd(carry, k):
            params, opt_state = carry
            idx = jax.random.randint(k, (cfg.minibatch,), 0, filled)
            loss, grads = jax.value_and_grad(lambda p: cross_entropy(actor, p, buf_obs[idx], buf_mask[idx],
                                                                     buf_label[idx])[0])(params)
            updates, opt_state = opt.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, opt_state), losses = jax.lax.scan(sgd, (state.params, state.opt_state),
                                                   jax.random.split(sgd_key, cfg.sgd_steps))
        new = DaggerState(params, opt_state, buf_obs, buf_mask, buf_label, filled,
                          (state.cursor + labels.shape[0]) % cfg.buffer, batch, state.iteration + 1)
        return new, IterMetrics(losses.mean(), accuracy, beta, filled)

    def record(params, key, envs: int, length: int) -> Transition:
        """``length`` steps of ``envs`` envs under the pure student (sampled actions); (T, B, ...)."""
        pool_key, run_key = jax.random.split(key)
        pool = make_reset_pool(env, pool_key, envs, length // 20 + 2)

        def act(params, ts, k):  # no value function, no behaviour log-probabilities
            _, logits = actor.apply(params, (), ts.observation.agents_view)
            actions = masked_sample(k, logits, ts.observation.action_mask)
            return actions, jnp.zeros(actions.shape), jnp.zeros(actions.shape[:1])

        no_value = lambda params, ts: jnp.zeros_like(ts.reward)  # noqa: E731
        return rollout(env, act, no_value, params, start_from_pool(pool), pool, run_key, length)[1]

    return Dagger(cfg, actor, jax.jit(init), jax.jit(iterate), jax.jit(record, static_argnums=(2, 3)),
                  actor_policy(actor), actor_policy(actor, greedy=True))

