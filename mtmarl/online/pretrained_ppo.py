"""Online fine-tuning of an offline-pretrained policy (the M3 paper, M3's online stage): ``online.system=finetune``.

The M3 paper loads the pretrained policy as the shared actor of MAPPO (its Eq. 7: the PPO-clip objective
summed over agents, with a centralised critic) and keeps the fine-tuned policy near the pretrained one
with "the AWAC trick": AWAC solves ``max E[A]`` subject to ``KL(pi || pi_beta) <= eps`` (KKT), whose
solution is ``pi*(a|o) ∝ pi_beta(a|o) exp(A(o, a) / lambda)``. Here ``pi_beta`` is the frozen
pretrained policy ``pi_0``. The paper gives no formula or coefficient for the online term, so this
module offers both readings, picked by ``kl_weighting``:

* ``uniform`` (default): PPO loss ``+ kl_coef * E[KL(pi_theta(.|o) || pi_0(.|o))]``, the exact KL of
  the masked categoricals at every visited (step, active agent): the penalty form of the constraint;
* ``awac``: PPO loss ``+ kl_coef * E[-w log pi_theta(a|o)]``, AWAC's advantage-weighted regression
  onto ``pi*`` (the projection ``min KL(pi* || pi_theta)``) estimated from the rollout's own actions:
  ``w = min(exp(A / awac_temperature) * pi_0(a|o) / pi_old(a|o), awac_max_weight)`` (no gradient;
  ``A`` the minibatch-normalised GAE advantage, the importance ratio turns samples of the behaviour
  policy ``pi_old`` into samples of ``pi_0``).

Either way the exact KL to ``pi_0`` is logged (``kl_pretrained``; 0 before the first update).

The actor is the offline algorithm itself, restored from ``init_from`` (a ``python -m mtmarl.train``
run directory; its best checkpoint, else its latest): rollouts act with ``algo.act`` (its carry,
resets and sampling unchanged, so the initial policy is the offline one), and the loss replays whole
env rollouts through ``algo.replay`` (the protocol's optional sequence form of ``act``) from the
carry each env had when its rollout began, under the current and under the frozen pretrained params
(a sequence learner, like recurrent MAPPO). The critic is MAPPO's (:func:`mtmarl.online.system.make_critic`),
freshly initialised. The task's env is padded to the offline run's padded EnvSpec (:func:`task_env`),
since the network reads that layout.

Simplifications: acting runs two forward passes per step (``algo.act`` for the action, its logits and
carry, and ``algo.replay`` of that step for the pretrained policy's own carry, kept beside the
actor's so the KL compares each policy on its own history); the
frozen params ride in the train state under ``"pretrained"`` with their gradient stopped (Adam moves
them by exactly 0). Only algorithms with ``replay`` fine-tune: M3 (``m3``) and the Sable policies
acting with their policy head (``mt_bc_sable``, ``mt_oryx``), whose fresh random agent order of every
step ``replay`` draws again from the key ``act`` was given (kept per step in ``Transition.extras``).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import jax
import jax.numpy as jnp

from mtmarl.algos.registry import register_online
from mtmarl.envs import TimeStep
from mtmarl.errors import UserInputError
from mtmarl.online import ppo
from mtmarl.online.anakin import PPOLearner, build
from mtmarl.online.rollout import Transition, carried_rollout
from mtmarl.online.system import make_critic

WEIGHTINGS = ("uniform", "awac")


@dataclasses.dataclass(frozen=True)
class FinetuneConfig(ppo.PPOSettings):
    """PPO settings (minibatches split the envs) + where the pretrained policy is and how it binds."""

    system: str = "finetune"
    init_from: str = ""            # the offline run directory (python -m mtmarl.train) to start from
    init_seed: int | None = None   # which seed of a population run (training.population > 1) to start from
    kl_coef: float = 0.1           # weight of the term that keeps the policy near the pretrained one
    kl_weighting: str = "uniform"  # uniform: KL(pi || pi_0); awac: advantage-weighted regression onto pi_0 exp(A/lambda)
    awac_temperature: float = 1.0  # lambda of the AWAC weights (on normalised advantages)
    awac_max_weight: float = 20.0  # AWAC weights are clipped to this
    hidden: tuple[int, ...] = (64, 64)  # the critic's MLP
    critic_input: str = "obs"      # obs | state | state_agent, as MAPPO's

    SYSTEM = "finetune"
    FOREIGN = ("embed_dim", "n_blocks", "actor", "recurrent")

    def __post_init__(self):
        super().__post_init__()
        if not str(self.init_from).strip():
            raise UserInputError("online.init_from is not set: give the offline run directory to fine-tune "
                                 "(online.init_from=<dir written by python -m mtmarl.train>)")
        if self.num_envs % self.minibatches:
            raise UserInputError(f"online.num_envs={self.num_envs} is not divisible by online.minibatches="
                                 f"{self.minibatches} (fine-tuning minibatches split the envs)")
        if self.kl_weighting not in WEIGHTINGS:
            raise UserInputError(f"online.kl_weighting={self.kl_weighting!r}; allowed: {', '.join(WEIGHTINGS)}")
        if not self.kl_coef >= 0:
            raise UserInputError(f"online.kl_coef={self.kl_coef!r} must be >= 0")
        if not (self.awac_temperature > 0 and self.awac_max_weight > 0):
            raise UserInputError(f"online.awac_temperature={self.awac_temperature!r} and online.awac_max_weight="
                                 f"{self.awac_max_weight!r} must be > 0")

    @staticmethod
    def coerce(kw: dict) -> dict:
        if "hidden" in kw:
            kw["hidden"] = tuple(int(h) for h in kw["hidden"])
        if kw.get("init_from") is not None:
            kw["init_from"] = str(kw["init_from"])
        return kw


# --------------------------------------------------------------------------- the pretrained policy
@functools.lru_cache(maxsize=4)
def _restore(run_dir: str, seed: int | None):
    from mtmarl.training.restore import load_run

    path = Path(run_dir).expanduser()
    if not path.is_dir():
        raise UserInputError(f"online.init_from={run_dir!r}: no such directory (give an offline run directory "
                             f"written by python -m mtmarl.train)")
    try:
        algo, params, _, _ = load_run(path, seed=seed)
    except UserInputError as e:
        raise UserInputError(f"online.init_from={run_dir!r}: {str(e).splitlines()[0]}") from None
    if algo.replay is None:
        raise UserInputError(f"online.init_from={run_dir!r} holds a {algo.name!r} run, which cannot be fine-tuned: "
                             f"the algorithm has no sequence replay (Algorithm.replay); m3, mt_bc_sable and "
                             f"mt_oryx have one")
    return algo, jax.device_get(params)


def pretrained(cfg: FinetuneConfig):
    """(offline Algorithm, its acting params) restored from ``cfg.init_from`` (cached per directory)."""
    return _restore(str(cfg.init_from), cfg.init_seed)


def task_env(env, cfg: FinetuneConfig):
    """``env`` seen with the offline run's padded EnvSpec (what its network reads); unchanged if it has it."""
    from mtmarl.envs import EnvSpec, pad_to_network

    algo, _ = pretrained(cfg)
    return pad_to_network(env, EnvSpec.from_json(algo.spec["env"]), f"online.init_from={cfg.init_from}")


# --------------------------------------------------------------------------- the KL / AWAC term
def pretrained_kl(logits: jax.Array, pre_logits: jax.Array, mask: jax.Array) -> jax.Array:
    """``KL(pi || pi_0)`` per row of the masked categoricals (illegal actions carry no mass)."""
    lp, lq = ppo.masked_log_softmax(logits, mask), ppo.masked_log_softmax(pre_logits, mask)
    return jnp.sum(jnp.where(mask, jnp.exp(lp) * (lp - lq), 0.0), axis=-1)


def awac_weights(adv: jax.Array, pre_logp: jax.Array, behaviour_logp: jax.Array, temperature: float,
                 max_weight: float) -> jax.Array:
    """``min(exp(A / temperature) * pi_0(a) / pi_old(a), max_weight)``, computed in log space, no gradient."""
    log_w = adv / temperature + pre_logp - behaviour_logp
    return jax.lax.stop_gradient(jnp.exp(jnp.minimum(log_w, jnp.log(max_weight))))


def regulariser(cfg: FinetuneConfig, logits, pre_logits, mask, actions, behaviour_logp, adv, weight):
    """(the term ``kl_coef`` multiplies, mean KL to the pretrained policy) over ``weight``-ed rows."""
    kl = ppo._mean(pretrained_kl(logits, pre_logits, mask), weight)
    if cfg.kl_weighting == "uniform":
        return kl, kl
    logp = ppo.log_prob(logits, mask, actions)
    w = awac_weights(jnp.broadcast_to(adv, logp.shape), ppo.log_prob(pre_logits, mask, actions), behaviour_logp,
                     cfg.awac_temperature, cfg.awac_max_weight)
    return ppo._mean(-w * logp, weight), kl


# --------------------------------------------------------------------------- the learner
def make_learner(env, cfg: FinetuneConfig) -> PPOLearner:
    """The pretrained actor + MAPPO's critic as a sequence :class:`~mtmarl.online.anakin.PPOLearner`.

    Params ``{"actor", "critic", "pretrained"}``; the carry is ``(actor carry, pretrained carry)``.
    """
    from mtmarl.training.policy import make_policy

    algo, pre = pretrained(cfg)
    env = task_env(env, cfg)
    critic, critic_dim, critic_in, value_fn = make_critic(env, cfg)

    def init(param_key):
        return {"actor": pre, "critic": critic.init(param_key, jnp.zeros((1, critic_dim))), "pretrained": pre}

    def init_carry(b: int):
        one = algo.init_carry()
        both = (one, one)
        return jax.tree.map(lambda x: jnp.broadcast_to(x, (b,) + x.shape), both)

    def step_replay(params, carry, obs, actions, reset, keys):
        """One step of B envs through ``replay``: (masked logits (B, N, A), carry after it)."""
        logits, carry = algo.replay(params, carry, obs.agents_view[None], actions[None], obs.action_mask[None],
                                    obs.active[None], reset[None], keys[None])
        return logits[0], carry

    def act_batch(params, ts: TimeStep, carry, key, greedy=False):
        obs = ts.observation
        reset = obs.step_count == 0
        actor_carry, pre_carry = carry
        keys = jax.random.split(key, reset.shape[0])
        act = lambda c, o, m, a, r, k: algo.act(params["actor"], c, o, m, a, r, k, greedy=greedy)  # noqa: E731
        actions, logits, new_actor = jax.vmap(act)(actor_carry, obs.agents_view, obs.action_mask, obs.active,
                                                   reset, keys)  # aux: the masked logits it sampled from
        _, new_pre = step_replay(params["pretrained"], pre_carry, obs, actions, reset, keys)
        logp = ppo.log_prob(logits, obs.action_mask, actions)
        return actions, logp, value_fn(params, ts), (new_actor, new_pre), keys  # keys: for replay

    def rollout(params, envs, carry, pool, key, length, greedy=False):
        return carried_rollout(env, functools.partial(act_batch, greedy=greedy), lambda p, ts, c: value_fn(p, ts),
                               params, envs, carry, pool, key, length)

    def replay_logits(params, carry0, mb: Transition) -> jax.Array:
        """Batch-major (B', T, N, A) logits of whole env rollouts from their start carry."""
        tm = lambda x: jnp.swapaxes(x, 0, 1)  # noqa: E731
        obs = mb.obs
        logits, _ = algo.replay(params, carry0, tm(obs.agents_view), tm(mb.actions), tm(obs.action_mask),
                                tm(obs.active), tm(obs.step_count == 0), tm(mb.extras))
        return tm(logits)

    def loss(params, mb: Transition, adv, targets, carry0):
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)  # per minibatch
        actor_carry, pre_carry = carry0
        logits = replay_logits(params["actor"], actor_carry, mb)
        pre_logits = jax.lax.stop_gradient(replay_logits(params["pretrained"], pre_carry, mb))
        values = critic.apply(params["critic"], critic_in(mb.obs, mb.state))
        active = mb.obs.active.astype(jnp.float32)
        info = ppo.ppo_loss(logits, mb.obs.action_mask, mb.actions, mb.logp, adv, values,
                            mb.value, targets, cfg.clip_eps, cfg.vf_coef, cfg.ent_coef, weight=active)
        reg, kl = regulariser(cfg, logits, pre_logits, mb.obs.action_mask, mb.actions, mb.logp, ppo.per_agent(adv, mb.logp),
                              active)
        total = info.total + cfg.kl_coef * reg
        return total, info._replace(total=total, extra={"kl_pretrained": kl, "regulariser": reg})

    return PPOLearner(init=init, init_carry=init_carry, rollout=rollout, loss=loss, sequences=True,
                   actor_params=lambda params: params["actor"], policy=make_policy(algo),
                   greedy_policy=make_policy(algo, greedy=True))


@register_online("finetune", FinetuneConfig, "M3 fine-tuning (MAPPO + KL)", pretrained=True, task_env=task_env)
def make_system(env, cfg, num_devices: int | None = None):
    """fine-tuning on ``env``: :func:`make_learner` in the Anakin builder."""
    return build(env, cfg, make_learner(env, cfg), num_devices)
