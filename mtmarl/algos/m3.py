"""M3 offline pretraining (the M3 paper): an agent-invariant, context-prompted VQ-VAE policy.

Why: the M3 paper pretrains one policy on multi-task offline data by encoding each agent's
action-observation history into a latent space split into an agent-sharing part, quantised
by a learnable codebook ("expert dictionary"), and an agent-specific part; the discrete
code is meant to be a transferable, reusable policy representation across tasks.

Model (one step of one agent, parameters shared by all agents and tasks):

* Encoder: the entity transformer (:mod:`mtmarl.networks.entity`) reads the observation
  ``o_i^t`` and the previous action ``a_i^{t-1}`` (one-hot, an extra token; zero at an
  episode's first step); its recurrent history token is the embedding of
  ``tau_i^t = {o_i^j, a_i^{j-1}}_{j<=t}``. Two linear heads split it into the
  agent-sharing code ``z_tau`` and the agent-specific Gaussian ``q(z_i | tau) = N(mu, sigma^2)``.
* Task context: ``z_e = p(c) * z_tau`` (elementwise), ``p(c)`` an MLP embedding of the
  context ``c`` (:func:`task_context`, see "Simplified" below).
* Codebook: ``z_q = e_k``, ``k = argmin_j ||z_e - e_j||`` (the M3 paper's Eq. 4), gradient straight
  through to ``z_e`` (:mod:`mtmarl.networks.vq`).
* Decoder: an MLP of ``[z_q, z_i]`` (``z_i`` sampled by reparameterisation) reconstructs the
  step's input ``[o_i^t, onehot(a_i^{t-1})]``.
* Action head: an MLP giving logits over the padded action set from ``z_q`` (straight-through,
  ``policy_input: quantized``, the default) or from ``z_e`` (``continuous``, the M3 paper's literal
  ``pi = p(a_i | z_e)``).

Loss, the M3 paper's Eq. 6 (each term reduced per task, then over tasks, over active agents), with a
weight per term (all 1 by default, as Eq. 6 has none):

* ``L_SL``: cross-entropy of the dataset action under the legal-action softmax;
* ``L_recons``: the squared reconstruction error, averaged over the input features (the negative
  log-likelihood of a unit-variance Gaussian decoder up to scale and a constant);
* ``L_as = KL[q(z_i | tau) || N(0, I)]``, summed over ``z_i``'s dimensions (the agent-invariance term);
* ``L_emb = ||sg[z_e] - e||^2 + beta ||z_e - sg[e]||^2`` (Eq. 5), squared norms over the code.

Acting (offline evaluation, and the initial policy of fine-tuning): each agent's history token
and previous action are carried; the logits come from the quantised code (or ``z_e``), masked to
the legal actions, then sampled or arg-maxed.

Simplified, and why: the algorithm protocol gives a policy no task id or description at acting
time (``Batch.task_ids`` are never a model input), so the context ``c`` is what the agent sees of
the map's composition at each step: per entity group, the fraction of its slots holding an entity
and the mean feature vector of those entities (unit types, in SMAX), instead of the M3 paper's
semantic task description. Codes no entry of a batch chose are moved onto random encoder outputs
after each update (``restart_dead_codes``, Jukebox's random restart; not in the M3 paper): without it the
codebook collapsed to one code within 100 updates on the toy data (perplexity 1.0), which leaves a
policy reading ``z_q`` blind to its input. ``beta`` is not given in the M3 paper ("described in [31]"): 0.25, the
VQ-VAE paper's value. The online fine-tuning stage (the M3 paper's Eq. 7: MAPPO from this policy with a KL/AWAC
term to it) is :mod:`mtmarl.online.pretrained_ppo` (``online.system=finetune``), which trains through ``replay``.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from mtmarl.algos import common
from mtmarl.algos.protocol import Algorithm, Stage
from mtmarl.algos.reductions import batch_noise
from mtmarl.algos.registry import register
from mtmarl.envs.layout import EnvSpec
from mtmarl.errors import UserInputError
from mtmarl.networks.entity import NEG, EntityAgent, EntityConfig
from mtmarl.networks.vq import VectorQuantizer, perplexity, restart_dead_codes

POLICY_INPUTS = ("quantized", "continuous")


@dataclasses.dataclass(frozen=True)
class Config(common.BatchConfig):
    lr: float
    max_grad_norm: float
    task_mean: bool
    num_codes: int        # codebook size K
    code_dim: int         # size of z_tau, z_e and the codes
    agent_dim: int        # size of the agent-specific z_i
    head_width: int       # hidden width of the context embedding, decoder and action head
    beta: float           # commitment weight of Eq. 5
    sl_weight: float      # weights of the four terms of Eq. 6
    recons_weight: float
    as_weight: float
    emb_weight: float
    policy_input: str     # 'quantized' (z_q, straight-through) or 'continuous' (z_e)
    restart_dead_codes: bool  # codes no entry of a batch chose move onto random encoder outputs (not in the M3 paper)

    def __post_init__(self):
        for key in ("num_codes", "code_dim", "agent_dim", "head_width"):
            if getattr(self, key) < 1:
                raise UserInputError(f"algo.{key}={getattr(self, key)!r} of {self.name!r} must be >= 1")
        for key in ("beta", "sl_weight", "recons_weight", "as_weight", "emb_weight"):
            if not getattr(self, key) >= 0.0:
                raise UserInputError(f"algo.{key}={getattr(self, key)!r} of {self.name!r} must be >= 0")
        if not self.lr > 0:
            raise UserInputError(f"algo.lr={self.lr!r} of {self.name!r} must be > 0")
        if self.policy_input not in POLICY_INPUTS:
            raise UserInputError(f"algo.policy_input={self.policy_input!r} of {self.name!r} is not one of "
                                 f"{list(POLICY_INPUTS)}")


def task_context(env: EnvSpec, obs):
    """(..., O) -> (..., C): per entity group, the fraction of slots holding an entity, then the mean
    features of the entities present (zeros if none); C = groups + total features per entity."""
    parts, fracs = [], []
    for g in env.obs.groups:
        x = env.obs.split(obs)[g.name]                       # (..., count, features)
        present = jnp.any(x != 0, axis=-1).astype(obs.dtype)  # (..., count)
        n = present.sum(-1, keepdims=True)
        fracs.append(n / g.count)
        parts.append(jnp.sum(x * present[..., None], -2) / jnp.maximum(n, 1.0))
    return jnp.concatenate(fracs + parts, axis=-1)


def gaussian_kl(mu, logvar):
    """KL[N(mu, exp(logvar)) || N(0, I)] per entry, summed over the last axis."""
    return 0.5 * jnp.sum(jnp.square(mu) + jnp.exp(logvar) - 1.0 - logvar, axis=-1)


def previous_actions(actions, resets, n_actions: int):
    """(B, T, N) actions -> (B, T, N, A) one-hot of each step's previous action, zero at an episode's
    first step and at a sequence's first step (the same start as the zeroed history token)."""
    oh = jax.nn.one_hot(actions, n_actions)
    prev = jnp.concatenate([jnp.zeros_like(oh[:, :1]), oh[:, :-1]], axis=1)
    return jnp.where(resets[:, :, None, None], 0.0, prev)


class Heads(NamedTuple):
    logits: jax.Array      # (..., A) before the legal mask
    z_e: jax.Array         # (..., D) context-prompted agent-sharing code
    codes: jax.Array       # (...,) codebook index
    codebook_loss: jax.Array
    commitment_loss: jax.Array
    mu: jax.Array          # (..., Z) agent-specific Gaussian
    logvar: jax.Array
    recon: jax.Array       # (..., O + A) reconstruction of [obs, previous action]


class M3Net(nn.Module):
    env: EnvSpec
    cfg: EntityConfig
    algo: Config

    def setup(self):
        a, n_act = self.algo, self.env.num_actions
        self.encoder = EntityAgent(self.env, self.cfg)
        self.task_head = nn.Dense(a.code_dim)
        self.agent_head = nn.Dense(2 * a.agent_dim)
        self.context = [nn.Dense(a.head_width), nn.Dense(a.code_dim)]
        self.vq = VectorQuantizer(a.num_codes, a.code_dim)
        self.decoder = [nn.Dense(a.head_width), nn.Dense(a.head_width), nn.Dense(self.env.obs_dim + n_act)]
        self.policy = [nn.Dense(a.head_width), nn.Dense(n_act)]

    def encode(self, hidden, obs, prev):
        """One step: (history token (..., W), obs (..., O), previous action one-hot (..., A)) -> new token."""
        h, _ = self.encoder(hidden, obs, prev)
        return h

    def heads(self, h, obs, eps) -> Heads:
        """Everything read from a history token ``h``; ``eps`` (..., Z) is the reparameterisation noise."""
        z_tau = self.task_head(h)
        mu, logvar = jnp.split(self.agent_head(h), 2, axis=-1)
        logvar = jnp.clip(logvar, -10.0, 10.0)
        c = self.context[1](nn.relu(self.context[0](task_context(self.env, obs))))
        z_e = c * z_tau
        q = self.vq(z_e)
        z_i = mu + jnp.exp(0.5 * logvar) * eps
        x = jnp.concatenate([q.z_st, z_i], axis=-1)
        for layer in self.decoder[:-1]:
            x = nn.relu(layer(x))
        recon = self.decoder[-1](x)
        pi_in = q.z_st if self.algo.policy_input == "quantized" else z_e
        logits = self.policy[1](nn.relu(self.policy[0](pi_in)))
        return Heads(logits, z_e, q.codes, q.codebook_loss, q.commitment_loss, mu, logvar, recon)

    def __call__(self, hidden, obs, prev, eps):
        h = self.encode(hidden, obs, prev)
        return h, self.heads(h, obs, eps)


@dataclasses.dataclass(frozen=True, kw_only=True)
class M3Algorithm(Algorithm):
    """The algorithm plus its network and loss, for tools and tests."""

    net: M3Net
    loss: object


@register("m3", Config, network=EntityConfig, online="finetune")
def make(cfg: Config, network: dict, env: EnvSpec) -> Algorithm:
    net = M3Net(env, EntityConfig.from_dict(dict(network)), cfg)
    tx = optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), optax.adam(cfg.lr))
    width, n_act = net.cfg.width, env.num_actions

    def init(key, sample_obs):
        lead = sample_obs.shape[:-1]
        params = net.init(key, jnp.zeros(lead + (width,)), sample_obs, jnp.zeros(lead + (n_act,)),
                          jnp.zeros(lead + (cfg.agent_dim,)))
        return common.TrainState(params, None, tx.init(params))

    def history(params, obs, prev, resets):
        """(B, T, N, W) history tokens over a sequence (zero at its start and at every episode start)."""
        B, _, N, _ = obs.shape

        def step(h, xs):
            o, p, r = xs
            h = net.apply(params, jnp.where(r[:, None, None], 0.0, h), o, p, method=M3Net.encode)
            return h, h

        tm = lambda x: jnp.moveaxis(x, 1, 0)  # noqa: E731
        _, hs = jax.lax.scan(step, jnp.zeros((B, N, width), obs.dtype), (tm(obs), tm(prev), tm(resets)),
                             unroll=net.cfg.unroll_time)
        return tm(hs)

    def full_loss(params, batch, key, axis_name=None):
        """(total, (metrics, z_e, codes)): Eq. 6 and what the dead-code restart reads."""
        prev = previous_actions(batch.actions, batch.resets, n_act)
        hs = history(params, batch.obs, prev, batch.resets)
        eps = batch_noise(jax.random.normal, key, hs.shape[:-1] + (cfg.agent_dim,), axis_name)
        out = net.apply(params, hs, batch.obs, eps, method=M3Net.heads)
        sl = -common.take_action(common.legal_log_softmax(out.logits, batch.legals), batch.actions)
        recons = jnp.mean(jnp.square(out.recon - jnp.concatenate([batch.obs, prev], -1)), -1)
        agent = gaussian_kl(out.mu, out.logvar)
        emb = out.codebook_loss + cfg.beta * out.commitment_loss
        mean = lambda x: common.task_mean(x, batch.active, batch.task_ids, cfg.task_mean, axis_name)  # noqa: E731
        terms = {"sl_loss": mean(sl), "recons_loss": mean(recons), "as_loss": mean(agent), "emb_loss": mean(emb)}
        total = (cfg.sl_weight * terms["sl_loss"] + cfg.recons_weight * terms["recons_loss"]
                 + cfg.as_weight * terms["as_loss"] + cfg.emb_weight * terms["emb_loss"])
        hit = jnp.where(batch.legals, out.logits, NEG).argmax(-1) == batch.actions
        metrics = {k: common.global_sum(v, axis_name) for k, v in terms.items()}
        metrics.update(accuracy=common.masked_mean(hit, batch.active, axis_name),
                       commitment=common.masked_mean(out.commitment_loss, batch.active, axis_name),
                       code_perplexity=perplexity(out.codes, batch.active, cfg.num_codes, axis_name))
        return total, (metrics, out.z_e, out.codes)

    def loss(params, target_params, batch, key, axis_name=None):
        del target_params
        total, (metrics, _, _) = full_loss(params, batch, key, axis_name)
        return total, metrics

    def update(state, batch, key, axis_name=None):
        """One clipped-Adam step on Eq. 6 (gradients summed over shards), then the dead-code restart."""
        k_loss, k_restart = jax.random.split(key)
        (total, (metrics, z_e, codes)), grads = jax.value_and_grad(full_loss, has_aux=True)(
            state.params, batch, k_loss, axis_name)
        metrics = dict(metrics, loss=common.global_sum(total, axis_name))
        if axis_name is not None:
            grads = jax.lax.psum(grads, axis_name)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics["grad_norm"] = optax.tree.norm(grads)
        if cfg.restart_dead_codes:
            codebook, metrics["codes_restarted"] = restart_dead_codes(
                params["params"]["vq"]["codebook"], z_e, codes, batch.active, k_restart, axis_name)
            params = {**params, "params": {**params["params"], "vq": {"codebook": codebook}}}
        return common.TrainState(params, None, opt_state), metrics

    def init_carry(num_agents=None):
        n = num_agents or env.num_agents
        return jnp.zeros((n, width)), jnp.zeros((n, n_act))

    def act(params, carry, obs, action_mask, active, reset, key, greedy=False):
        del active
        h, prev = carry
        h, prev = jnp.where(reset, 0.0, h), jnp.where(reset, 0.0, prev)
        h = net.apply(params, h, obs, prev, method=M3Net.encode)
        out = net.apply(params, h, obs, jnp.zeros(h.shape[:-1] + (cfg.agent_dim,)), method=M3Net.heads)
        logits = jnp.where(action_mask, out.logits, NEG)
        actions = jnp.where(greedy, logits.argmax(-1), jax.random.categorical(key, logits)).astype(jnp.int32)
        return actions, logits, (h, jax.nn.one_hot(actions, n_act))  # aux: what replay gives for this step

    def replay(params, carry0, obs, actions, legals, active, resets, keys=None):
        """``act`` over time-major (T, B, ...) episodes from ``carry0`` ((B, N, W), (B, N, A)): the masked
        logits of every step and the carry after the last (the same ops as ``act``, so the same values;
        M3 draws nothing but the action sample, so the keys are not needed)."""
        del active, keys

        def step(carry, xs):
            h, prev = carry
            o, a, m, r = xs
            r = r[:, None, None]
            h, prev = jnp.where(r, 0.0, h), jnp.where(r, 0.0, prev)
            h = net.apply(params, h, o, prev, method=M3Net.encode)
            out = net.apply(params, h, o, jnp.zeros(h.shape[:-1] + (cfg.agent_dim,)), method=M3Net.heads)
            return (h, jax.nn.one_hot(a, n_act)), jnp.where(m, out.logits, NEG)

        carry, logits = jax.lax.scan(step, carry0, (obs, actions, legals, resets))
        return logits, carry

    spec = {"name": cfg.name, "n_actions": n_act, "env": env.to_json(), "algo": dataclasses.asdict(cfg),
            "network": dataclasses.asdict(net.cfg)}
    return M3Algorithm(name=cfg.name, cfg=cfg, sampler=cfg.sampler(), init=init,
                       stages=(Stage("pretrain", update),), act=act,
                       init_carry=init_carry, spec=spec, net=net, loss=loss, replay=replay)
