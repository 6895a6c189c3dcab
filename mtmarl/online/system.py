"""The MAPPO learner of the Anakin online builder (:mod:`mtmarl.online.anakin`).

Only what is MAPPO's lives here: its config, networks, acting and PPO loss, handed
to the builder as a :class:`~mtmarl.online.anakin.PPOLearner` by :func:`make_learner`
(the loop, pools, pmap and recording are the builder's).

The actor is one MLP shared by every agent, reading only that agent's
observation (no agent id), so it applies to any agent count; the centralised
critic reads every agent's observation concatenated (``critic_input=obs``) or
the env's global state (``critic_input=state``) and predicts the team value;
``critic_input=state_agent`` reads the global state with the agent's one-hot id
and predicts one value per agent (JaxMARL's SMAX MAPPO critic), each trained on
the team reward, so GAE and the policy loss are per agent.
Feed-forward MAPPO trains on single steps (the default, what the bundled data
were collected with).

``recurrent=true`` makes it the shared-parameter *recurrent* MAPPO: a
``flax.linen.GRUCell`` (``gru_hidden`` units) between the MLP torso and the
logits head, so an agent can use its observation history (partial views such
as LBF's ``fov``); parameters are still shared, the hidden state is per (env,
agent). Acting carries it across env steps and zeroes it after an episode ends
(:func:`mtmarl.online.rollout.carried_rollout`). It is a *sequence* learner: the
builder stores every env's hidden state at the start of its rollout, and the loss
re-runs the GRU over the rollout's time axis from it, with the same resets
(:func:`replay_actor`), so before the first gradient step it reproduces the
behaviour log-probabilities (tested); PPO minibatches then split the envs, not
the time steps. The critic is feed-forward unless ``critic_recurrent=true``: then
it too has a GRU (``gru_hidden`` units after its MLP, ``gru_head`` layers after
the GRU; JaxMARL's SMAX MAPPO critic), whose hidden state is per env (team value)
or per (env, agent) (``state_agent``); the carry is then ``(actor's, critic's)``,
the bootstrap value of a step's next timestep is read with the critic state after
that step, and the loss re-runs the critic over the rollout like the actor.

``agent_minibatches=true`` (with ``state_agent``'s per-agent values) draws the minibatches from (env, agent)
samples, each agent's steps or rollout alone with its own critic input and start state, as JaxMARL's SMAX
MAPPO does; by default a minibatch holds whole envs, all their agents together. The samples and the loss per
entry are the same either way, so with one minibatch the update is too (tested); only how the entries are
grouped into minibatches differs.

``actor=entity`` replaces the MLP by the entity transformer of
:mod:`mtmarl.networks.entity` over the env's declared entity groups; its history
token is the recurrent state, trained like the GRU (a sequence learner), and
attack-enemy-k is scored from enemy k's token, so one actor fits maps of any size.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtmarl.algos.registry import register_online
from mtmarl.envs import EnvSpec, Observation, TimeStep
from mtmarl.errors import UserInputError
from mtmarl.evaluation.policies import Policy
from mtmarl.networks.entity import EntityAgent, EntityConfig
from mtmarl.online import ppo
from mtmarl.online.anakin import PPOLearner, agent_samples, build, samples
from mtmarl.online.rollout import Transition, carried_rollout, reset_where


@dataclasses.dataclass(frozen=True)
class MappoConfig(ppo.PPOSettings):
    system: str = "mappo"
    hidden: tuple[int, ...] = (64, 64)
    critic_input: str = "obs"  # obs | state | state_agent
    recurrent: bool = False  # GRU actor (minibatches then split the envs)
    gru_hidden: int = 64
    gru_head: tuple[int, ...] = ()  # recurrent: MLP layers between the GRU and the logits (JaxMARL's SMAX actor: [128])
    activation: str = "tanh"  # tanh | relu: the MLP layers of actor and critic (JaxMARL's SMAX MAPPO: relu)
    actor: str = "mlp"  # mlp | entity (the entity transformer over the env's entity groups; recurrent)
    entity_width: int = 64
    critic_recurrent: bool = False  # a GRU in the critic too (carry (actor's, critic's); a sequence learner)
    agent_minibatches: bool = False  # minibatches of (env, agent) samples, not whole envs (needs state_agent)

    SYSTEM = "mappo"
    FOREIGN = ("embed_dim", "n_blocks", "n_heads", "chunk_size", "ffn_mult", "matmul_dtype")

    def __post_init__(self):
        super().__post_init__()
        if self.actor not in ("mlp", "entity"):
            raise UserInputError(f"online.actor={self.actor!r}; allowed: mlp, entity")
        if self.critic_input not in CRITIC_INPUTS:
            raise UserInputError(f"online.critic_input={self.critic_input!r}; allowed: {', '.join(CRITIC_INPUTS)}")
        if self.activation not in ACTIVATIONS:
            raise UserInputError(f"online.activation={self.activation!r}; allowed: {', '.join(ACTIVATIONS)}")
        if self.agent_minibatches and self.critic_input != "state_agent":
            raise UserInputError(f"online.agent_minibatches=true needs one value per agent: online.critic_input="
                                 f"state_agent, got {self.critic_input}")
        if self.carries_state and self.num_envs % self.minibatches:
            raise UserInputError(f"online.num_envs={self.num_envs} is not divisible by online.minibatches="
                                 f"{self.minibatches} (recurrent MAPPO minibatches split the envs)")

    @property
    def carries_state(self) -> bool:
        """A network has a hidden state across steps (the actor's GRU or entity history token, the critic's GRU)."""
        return self.recurrent or self.actor == "entity" or self.critic_recurrent

    @staticmethod
    def coerce(kw: dict) -> dict:
        for key in ("hidden", "gru_head"):
            if key in kw:
                kw[key] = tuple(int(h) for h in kw[key])
        for key in ("recurrent", "critic_recurrent", "agent_minibatches"):
            if key in kw and not isinstance(kw[key], bool):
                raise UserInputError(f"online.{key} must be true or false, got {kw[key]!r}")
        for key in ("gru_hidden", "entity_width"):
            if key in kw:
                kw[key] = int(kw[key])
        return kw


ACTIVATIONS = {"tanh": nn.tanh, "relu": nn.relu}
CRITIC_INPUTS = ("obs", "state", "state_agent")


def torso(x: jax.Array, hidden: Sequence[int], activation: str = "tanh") -> jax.Array:
    """MLP layers (called inside a compact module, whose Dense_i they become)."""
    for h in hidden:
        x = ACTIVATIONS[activation](nn.Dense(h, kernel_init=nn.initializers.orthogonal(math.sqrt(2)))(x))
    return x


def logits_head(x: jax.Array, num_actions: int) -> jax.Array:
    return nn.Dense(num_actions, kernel_init=nn.initializers.orthogonal(0.01))(x)


class Actor(nn.Module):
    """MLP torso -> logits. Same interface as :class:`RecurrentNet`, with an empty carry ``()``
    passed through, so acting, recording and evaluation never ask which actor they hold."""

    hidden: Sequence[int]
    num_actions: int
    activation: str = "tanh"

    def initial_carry(self, lead_shape: tuple[int, ...]) -> tuple:
        return ()

    @nn.compact
    def __call__(self, carry, agents_view: jax.Array) -> tuple[Any, jax.Array]:
        return carry, logits_head(torso(agents_view, self.hidden, self.activation), self.num_actions)


class RecurrentNet(nn.Module):
    """MLP torso -> GRU cell -> MLP head (``head``, may be empty) -> ``outputs`` linear outputs, over any leading axes:
    ``(h, x) -> (h', out)``. The recurrent actor (outputs = the logits, last layer initialised at scale 0.01 so the
    first policy is near uniform) and the recurrent critic (one output at scale 1.0)."""

    hidden: Sequence[int]
    gru_hidden: int
    outputs: int
    activation: str = "tanh"
    head: Sequence[int] = ()
    out_scale: float = 0.01

    def initial_carry(self, lead_shape: tuple[int, ...]) -> jax.Array:
        """The episode-start state: zeros of ``lead_shape + (gru_hidden,)``."""
        return jnp.zeros(tuple(lead_shape) + (self.gru_hidden,))

    @nn.compact
    def __call__(self, h: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        h, y = nn.GRUCell(self.gru_hidden)(h, torso(x, self.hidden, self.activation))
        y = torso(y, self.head, self.activation)  # first: flax numbers the Dense layers in creation order
        return h, nn.Dense(self.outputs, kernel_init=nn.initializers.orthogonal(self.out_scale))(y)


class EntityActor(nn.Module):
    """The entity transformer (:mod:`mtmarl.networks.entity`) as an actor: its history token is the carry,
    attack logits come from the enemy tokens, so one actor reads every map of an entity env."""

    env: EnvSpec
    width: int

    def initial_carry(self, lead_shape: tuple[int, ...]) -> jax.Array:
        return jnp.zeros(tuple(lead_shape) + (self.width,))

    @nn.compact
    def __call__(self, h: jax.Array, agents_view: jax.Array) -> tuple[jax.Array, jax.Array]:
        return EntityAgent(self.env, EntityConfig(width=self.width))(h, agents_view)


def replay_actor(actor: nn.Module, params, h0: jax.Array, traj: Transition) -> jax.Array:
    """Logits (B, T, N, A) of batch-major transitions, the actor re-run from ``h0`` (B, N, G) by :func:`replay`."""
    return replay(functools.partial(actor.apply, params), h0, traj.obs.agents_view, traj.done)


class Critic(nn.Module):
    hidden: Sequence[int]
    activation: str = "tanh"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = torso(x, self.hidden, self.activation)  # first: flax numbers the Dense layers in creation order
        return nn.Dense(1, kernel_init=nn.initializers.orthogonal(1.0))(x)[..., 0]


def replay(step: Callable, h0: Any, inputs: jax.Array, done: jax.Array) -> jax.Array:
    """Outputs (B, T, ...) of a recurrent ``step(h, x) -> (h', y)`` over batch-major ``inputs`` (B, T, ...) from
    ``h0``: the same steps as acting in :func:`carried_rollout` (the state after a step that ended an episode,
    ``done`` (B, T), is zeroed before the next step)."""
    def body(h, x):
        inp, d = x
        h, y = step(h, inp)
        return reset_where(d, h), y

    time_major = lambda x: jnp.swapaxes(x, 0, 1)  # noqa: E731
    _, ys = jax.lax.scan(body, h0, (time_major(inputs), time_major(done)))
    return time_major(ys)


def masked_sample(key: jax.Array, logits: jax.Array, mask: jax.Array) -> jax.Array:
    return jax.random.categorical(key, jnp.where(mask, logits, ppo.NEG_INF), axis=-1)


def actor_step(actor: nn.Module, params, ts: TimeStep, carry, key, greedy: bool = False):
    """Sampled (or greedy) actions of B envs by the actor alone: ``(actions, logp, actor carry')``."""
    obs = ts.observation
    carry, logits = actor.apply(params["actor"], carry, obs.agents_view)
    if greedy:
        actions = jnp.argmax(jnp.where(obs.action_mask, logits, ppo.NEG_INF), -1)
    else:
        actions = jax.vmap(masked_sample)(jax.random.split(key, logits.shape[0]), logits, obs.action_mask)
    return actions, ppo.log_prob(logits, obs.action_mask, actions), carry


def act_batch(actor: nn.Module, value_fn: Callable, params, ts: TimeStep, carry, key, greedy: bool = False):
    """:func:`actor_step` with a feed-forward critic's value: ``(actions, logp, value, carry')`` (a
    :func:`carried_rollout` act)."""
    actions, logp, carry = actor_step(actor, params, ts, carry, key, greedy)
    return actions, logp, value_fn(params, ts), carry


def actor_policy(actor: nn.Module, greedy: bool = False) -> Policy:
    """One-episode policy over actor params (the evaluator's interface).

    The recurrent actor's carry is the (N, gru_hidden) hidden state, zeros at the episode's start.
    """
    def act(params, obs: Observation, carry, key):
        carry, logits = actor.apply(params, carry, obs.agents_view)
        if greedy:
            return jnp.argmax(jnp.where(obs.action_mask, logits, ppo.NEG_INF), -1), carry
        return masked_sample(key, logits, obs.action_mask), carry

    return Policy(init_carry=lambda params, num_agents: actor.initial_carry((num_agents,)), act=act)


def make_critic(env, cfg) -> tuple[Critic, int, Callable, Callable]:
    """MAPPO's centralised team critic on ``env`` (``cfg.hidden``, ``cfg.critic_input``), also the critic of
    other learners (:mod:`mtmarl.online.pretrained_ppo`): ``(module, input size, critic_in(obs, state),
    value_fn(params, timestep))``; ``value_fn`` reads ``params["critic"]``."""
    if cfg.critic_input not in CRITIC_INPUTS:
        raise ValueError(f"critic_input must be one of {', '.join(CRITIC_INPUTS)}, got {cfg.critic_input!r}")
    if cfg.critic_input != "obs" and env.state_dim == 0:
        raise ValueError(f"{env!r} has no global state; use critic_input=obs")
    n, o = env.num_agents, env.obs_dim
    critic = Critic(cfg.hidden, getattr(cfg, "activation", "tanh"))
    critic_dim = {"obs": n * o, "state": env.state_dim, "state_agent": env.state_dim + n}[cfg.critic_input]

    def critic_in(ts_obs: Observation, state: jax.Array) -> jax.Array:
        """(..., critic_dim) for a team value; (..., N, critic_dim) for per-agent values (state_agent)."""
        if cfg.critic_input == "obs":
            return ts_obs.agents_view.reshape(ts_obs.agents_view.shape[:-2] + (n * o,))
        if cfg.critic_input == "state_agent":
            lead = state.shape[:-1]
            ids = jnp.broadcast_to(jnp.eye(n, dtype=state.dtype), lead + (n, n))
            return jnp.concatenate([jnp.broadcast_to(state[..., None, :], lead + (n, state.shape[-1])), ids], -1)
        return state

    def value_fn(params, ts: TimeStep) -> jax.Array:
        return critic.apply(params["critic"], critic_in(ts.observation, ts.state))

    return critic, critic_dim, critic_in, value_fn


def make_learner(env, cfg: MappoConfig) -> PPOLearner:
    """MAPPO on ``env`` as a :class:`~mtmarl.online.anakin.PPOLearner` (params ``{"actor", "critic"}``)."""
    critic, critic_dim, critic_in, value_fn = make_critic(env, cfg)
    n, o, a = env.num_agents, env.obs_dim, env.num_actions
    if cfg.actor == "entity":
        actor: nn.Module = EntityActor(env.spec, cfg.entity_width)
    else:
        actor = (RecurrentNet(cfg.hidden, cfg.gru_hidden, a, cfg.activation, cfg.gru_head) if cfg.recurrent
                 else Actor(cfg.hidden, a, cfg.activation))
    # The critic's hidden state per value: per (env, agent) for state_agent's per-agent values, else per env.
    value_lead = (n,) if cfg.critic_input == "state_agent" else ()
    if cfg.critic_recurrent:
        critic = RecurrentNet(cfg.hidden, cfg.gru_hidden, 1, cfg.activation, cfg.gru_head, out_scale=1.0)

    def critic_step(critic_params, hc, x):
        """The recurrent critic's step: ``(hc, critic input) -> (hc', value)``."""
        hc, value = critic.apply(critic_params, hc, x)
        return hc, value[..., 0]

    def init(param_key):
        critic_carry = (critic.initial_carry((1,)),) if cfg.critic_recurrent else ()
        return {"actor": actor.init(param_key, actor.initial_carry((1,)), jnp.zeros((1, o))),
                "critic": critic.init(jax.random.fold_in(param_key, 1), *critic_carry, jnp.zeros((1, critic_dim)))}

    def init_carry(b: int):
        if cfg.critic_recurrent:
            return actor.initial_carry((b, n)), critic.initial_carry((b,) + value_lead)
        return actor.initial_carry((b, n))

    def act(params, ts: TimeStep, carry, key, greedy=False):
        if not cfg.critic_recurrent:
            return act_batch(actor, value_fn, params, ts, carry, key, greedy)
        ha, hc = carry
        actions, logp, ha = actor_step(actor, params, ts, ha, key, greedy)
        hc, value = critic_step(params["critic"], hc, critic_in(ts.observation, ts.state))
        return actions, logp, value, (ha, hc)

    def next_value(params, ts: TimeStep, carry):
        """The value of a step's next timestep, with the critic state after that step."""
        if cfg.critic_recurrent:
            return critic_step(params["critic"], carry[1], critic_in(ts.observation, ts.state))[1]
        return value_fn(params, ts)

    def rollout(params, envs, carry, pool, key, length, greedy=False):
        return carried_rollout(env, functools.partial(act, greedy=greedy), next_value, params, envs, carry, pool,
                               key, length)

    def split_samples(traj: Transition, adv, targets, carry0):
        """One sample per (env, agent), its critic input (the state with its id) computed before the split."""
        traj = traj._replace(state=critic_in(traj.obs, traj.state))
        return agent_samples(samples(cfg.carries_state, traj, adv, targets, carry0), n, cfg.carries_state,
                             agent_state=True)

    def loss(params, mb: Transition, adv, targets, h0):
        """Feed-forward: a minibatch of (flattened) steps; sequences: of whole env rollouts (B', T) + h0;
        ``agent_minibatches``: of single agents' steps or rollouts (``mb.state`` is then the critic's input)."""
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)  # per minibatch
        critic_x = mb.state if cfg.agent_minibatches else critic_in(mb.obs, mb.state)
        h_actor = h0[0] if cfg.critic_recurrent else h0
        if cfg.carries_state:
            logits = replay_actor(actor, params["actor"], h_actor, mb)
        else:
            _, logits = actor.apply(params["actor"], (), mb.obs.agents_view)
        if cfg.critic_recurrent:
            values = replay(functools.partial(critic_step, params["critic"]), h0[1], critic_x, mb.done)
        else:
            values = critic.apply(params["critic"], critic_x)
        active = mb.obs.active.astype(jnp.float32)
        info = ppo.ppo_loss(logits, mb.obs.action_mask, mb.actions, mb.logp, adv, values,
                            mb.value, targets, cfg.clip_eps, cfg.vf_coef, cfg.ent_coef, weight=active)
        return info.total, info

    return PPOLearner(init=init, init_carry=init_carry, rollout=rollout, loss=loss,
                   sequences=cfg.carries_state, actor_params=lambda params: params["actor"],
                   policy=actor_policy(actor), greedy_policy=actor_policy(actor, greedy=True),
                   samples=split_samples if cfg.agent_minibatches else None)


@register_online("mappo", MappoConfig, "MAPPO")
def make_system(env, cfg, num_devices: int | None = None):
    """MAPPO on ``env``: :func:`make_learner` in the Anakin builder."""
    return build(env, cfg, make_learner(env, cfg), num_devices)
