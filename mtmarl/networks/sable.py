"""Sable encoder-decoder retention network (Mahjoub et al. 2025), as used by Oryx / the multi-task Oryx paper.

Encoder: observation embedding -> blocks of [non-causal self-retention over all
agents of a timestep and the past, RMSNorm, SwiGLU FFN, RMSNorm] -> obs_rep (and
an optional value head). Decoder: shifted-action tokens (a start token for the
first active agent of a timestep, otherwise the previous *active* agent's
action) -> blocks of [causal self-retention, RMSNorm, retention with queries
from obs_rep and keys/values from the decoder stream (causal; residual on
obs_rep, so each agent's own observation enters its output as in MAT/Sable),
RMSNorm, SwiGLU FFN, RMSNorm] -> policy logits and per-action Q. Actions enter
only as the next agent's shifted token, so the last agent's action of a
timestep is never an input (as in Sable); observations carry the history.

Padded agents (``active=False``) are dropped from every retention's keys, and
the shifted-action token skips them, so their observations and actions cannot
reach active agents wherever they sit in the agent order. Illegal actions get
logit ``NEG``; scalar Q of illegal actions is ``NEG`` too (HL-Gauss Q logits
are returned unmasked: use ``SableNet.q_values`` for masked scalars).

The functional API is ``make_sable(cfg, n_actions) -> SableNet`` of pure
functions: ``init``, ``apply_train`` (chunkwise, whole (B, T, N) sequences),
``init_carry`` and ``act`` (recurrent, one timestep, agents autoregressively in
a given order).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtmarl.configs import CONFIG_DIR
from mtmarl.errors import UserInputError
from mtmarl.networks.config import NetworkConfig
from mtmarl.networks.hl_gauss import HLGauss
from mtmarl.networks.layers import MATMUL_DTYPES, Dense, fastest_matmul_dtype
from mtmarl.networks.retention import Ctx, MultiScaleRetention, decay_state, head_decays

NEG = -1e9  # logit for illegal actions: exp underflows to exactly 0, and no inf - inf NaNs
PRESET_DIR = CONFIG_DIR / "network"
CHUNK_TOKENS = 32  # agents x timesteps per training chunk under chunk_size "auto" (SableConfig.chunk_steps)


@dataclasses.dataclass(frozen=True)
class SableConfig(NetworkConfig):
    embed_dim: int = 128
    n_blocks: int = 1
    n_heads: int = 4
    chunk_size: int | str = 16  # timesteps per chunk in training, or "auto" (chunk_steps); any gives the same outputs
    ffn_mult: float = 1.0       # SwiGLU hidden = ffn_mult * embed_dim (1.0 as in Sable)
    q_bins: int = 0             # 0: scalar Q per action; K > 1: HL-Gauss logits over K bins
    v_min: float = -10.0        # HL-Gauss support (only used when q_bins > 1)
    v_max: float = 10.0
    sigma_ratio: float = 0.75
    value_head: bool = False    # state-value head on the encoder output
    matmul_dtype: str = "float32"  # or "bfloat16": bf16 matmul operands, float32 accumulation (networks/layers.py);
    # "auto": whichever is fast on this machine, resolved here, so a run's algorithm spec records the one it used

    def __post_init__(self):
        if self.matmul_dtype == "auto":
            object.__setattr__(self, "matmul_dtype", fastest_matmul_dtype())
        if self.embed_dim <= 0 or self.n_heads <= 0 or self.embed_dim % self.n_heads:
            raise UserInputError(f"embed_dim ({self.embed_dim}) must be a positive multiple of n_heads ({self.n_heads})")
        if self.n_blocks < 1:
            raise UserInputError(f"network.n_blocks must be >= 1, got {self.n_blocks}")
        if self.chunk_size != "auto" and not (isinstance(self.chunk_size, int) and self.chunk_size >= 1):
            raise UserInputError(f"network.chunk_size must be an integer >= 1 or 'auto', got {self.chunk_size!r}")
        if self.matmul_dtype not in MATMUL_DTYPES:
            raise UserInputError(f"network.matmul_dtype must be one of {(*MATMUL_DTYPES, 'auto')}, "
                                 f"got {self.matmul_dtype!r}")
        if self.q_bins == 1 or self.q_bins < 0:
            raise UserInputError(f"q_bins must be 0 (scalar Q) or >= 2, got {self.q_bins}")

    def chunk_steps(self, n_agents: int) -> int:
        """Timesteps per training chunk for ``n_agents`` agents: ``chunk_size``, or with ``auto``
        ``CHUNK_TOKENS // n_agents`` (at least 1).

        Why: inside a chunk retention is quadratic in its tokens (timesteps x agents), across chunks it is
        sequential, so a fixed number of timesteps makes chunks of many agents costly; a fixed token budget
        per chunk keeps the cost flat in the agent count (``benchmarks/train_step.py --chunk-size``;
        docs/decisions.md).
        """
        return max(1, CHUNK_TOKENS // n_agents) if self.chunk_size == "auto" else int(self.chunk_size)

    @property
    def hl_gauss(self) -> HLGauss | None:
        return HLGauss(self.v_min, self.v_max, self.q_bins, self.sigma_ratio) if self.q_bins else None



def load_preset(name: str, **overrides) -> SableConfig:
    """``mtmarl/configs/network/<name>.yaml`` as a SableConfig, e.g. ``load_preset('base', embed_dim=256)``."""
    from omegaconf import OmegaConf

    path = PRESET_DIR / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
        raise UserInputError(f"no network preset {name!r}; known: {known}")
    return SableConfig.from_dict({**OmegaConf.to_container(OmegaConf.load(path)), **overrides})


class SwiGLU(nn.Module):
    """SwiGLU FFN: W2(silu(W1 x) * W3 x), W1 and W3 fused into one product.

    Default (non-zero) init: a zero-initialised SwiGLU would kill every gradient.
    """

    hidden: int
    out: int
    matmul_dtype: str = "float32"

    @nn.compact
    def __call__(self, x):
        gate, up = jnp.split(Dense(2 * self.hidden, use_bias=False, matmul_dtype=self.matmul_dtype,
                                   name="w13")(x), 2, -1)
        return Dense(self.out, use_bias=False, matmul_dtype=self.matmul_dtype, name="w2")(nn.silu(gate) * up)


class EncoderBlock(nn.Module):
    cfg: SableConfig

    def setup(self):
        c = self.cfg
        self.ret = MultiScaleRetention(c.embed_dim, c.n_heads, causal=False, matmul_dtype=c.matmul_dtype)
        self.ffn = SwiGLU(max(1, int(c.ffn_mult * c.embed_dim)), c.embed_dim, c.matmul_dtype)
        self.norm1, self.norm2 = nn.RMSNorm(), nn.RMSNorm()

    def __call__(self, x, state, ctx: Ctx):
        y, state = self.ret(x, x, state, ctx)
        x = self.norm1(x + y)
        return self.norm2(x + self.ffn(x)), state


class DecoderBlock(nn.Module):
    cfg: SableConfig

    def setup(self):
        c = self.cfg
        md = c.matmul_dtype
        self.self_ret = MultiScaleRetention(c.embed_dim, c.n_heads, causal=True, matmul_dtype=md)
        self.cross_ret = MultiScaleRetention(c.embed_dim, c.n_heads, causal=True, cross=True, matmul_dtype=md)
        self.ffn = SwiGLU(max(1, int(c.ffn_mult * c.embed_dim)), c.embed_dim, md)
        self.norm1, self.norm2, self.norm3 = nn.RMSNorm(), nn.RMSNorm(), nn.RMSNorm()

    def __call__(self, x, obs_rep, states, ctx: Ctx):
        s_self, s_cross = states
        y, s_self = self.self_ret(x, x, s_self, ctx)
        x = self.norm1(x + y)
        y, s_cross = self.cross_ret(obs_rep, x, s_cross, ctx)
        x = self.norm2(obs_rep + y)
        return self.norm3(x + self.ffn(x)), (s_self, s_cross)


def _mlp_head(embed: int, out: int, name: str, matmul_dtype: str):
    return nn.Sequential([Dense(embed, matmul_dtype=matmul_dtype), nn.gelu,
                          Dense(out, matmul_dtype=matmul_dtype)], name=name)


class SableModule(nn.Module):
    """Parameters and the three execution modes; use through ``make_sable``."""

    cfg: SableConfig
    n_actions: int

    def setup(self):
        c = self.cfg
        md = c.matmul_dtype
        self.obs_embed = Dense(c.embed_dim, matmul_dtype=md, name="obs_embed")
        self.enc_blocks = [EncoderBlock(c, name=f"enc_{i}") for i in range(c.n_blocks)]
        self.act_embed = Dense(c.embed_dim, use_bias=False, name="act_embed")  # one-hot input: exact in fp32
        self.dec_blocks = [DecoderBlock(c, name=f"dec_{i}") for i in range(c.n_blocks)]
        self.policy_head = _mlp_head(c.embed_dim, self.n_actions, "policy_head", md)
        self.q_head = _mlp_head(c.embed_dim, self.n_actions * max(c.q_bins, 1), "q_head", md)
        if c.value_head:
            self.value_head_ = _mlp_head(c.embed_dim, max(c.q_bins, 1), "value_head", md)

    def encode(self, obs, states, ctx: Ctx):
        x = nn.gelu(self.obs_embed(obs))
        new = []
        for blk, s in zip(self.enc_blocks, states):
            x, s = blk(x, s, ctx)
            new.append(s)
        value = self.value_head_(x) if self.cfg.value_head else None
        if value is not None and not self.cfg.q_bins:
            value = value[..., 0]
        return x, value, new

    def decode(self, tokens, obs_rep, states, ctx: Ctx):
        """tokens: shifted actions in [0, A] (A = start); returns raw (logits, q, states)."""
        # gelu(one_hot(t) @ W) == gelu(W)[t]: embed the A + 1 possible tokens once, then gather rows,
        # so neither the matmul nor the gelu (and their gradients) run over every token.
        table = nn.gelu(self.act_embed(jnp.eye(self.n_actions + 1, dtype=jnp.float32)))
        x = jnp.take(table, tokens, axis=0)
        new = []
        for blk, s in zip(self.dec_blocks, states):
            x, s = blk(x, obs_rep, s, ctx)
            new.append(s)
        q = self.q_head(x)
        if self.cfg.q_bins:
            q = q.reshape(*q.shape[:-1], self.n_actions, self.cfg.q_bins)
        return self.policy_head(x), q, new

    def __call__(self, obs, tokens, carry, ctx: Ctx):
        obs_rep, value, enc = self.encode(obs, carry["enc"], ctx)
        logits, q, dec = self.decode(tokens, obs_rep, carry["dec"], ctx)
        return logits, q, value, {"enc": enc, "dec": dec}


class Outputs(NamedTuple):
    logits: jax.Array          # (..., N, A), illegal actions = NEG
    q: jax.Array               # (..., N, A) masked scalars, or (..., N, A, K) raw HL-Gauss logits
    value: jax.Array | None    # (..., N) or (..., N, K) when cfg.value_head, else None


def shifted_tokens(actions, active, n_actions: int):
    """Decoder input per agent (..., N): previous active agent's action in this timestep, or n_actions (start)."""
    N = actions.shape[-1]
    idx = jnp.where(active, jnp.arange(N), -1)
    last = jax.lax.cummax(idx, axis=idx.ndim - 1)
    prev = jnp.concatenate([jnp.full_like(last[..., :1], -1), last[..., :-1]], axis=-1)
    prev_action = jnp.take_along_axis(actions, jnp.maximum(prev, 0), axis=-1)
    return jnp.where(prev >= 0, prev_action, n_actions)


def _mask_outputs(cfg: SableConfig, logits, q, action_mask):
    logits = jnp.where(action_mask, logits, NEG)
    if not cfg.q_bins:
        q = jnp.where(action_mask, q, NEG)
    return logits, q


@dataclasses.dataclass(frozen=True)
class SableNet:
    """Pure functions over a params pytree (see module docstring)."""

    cfg: SableConfig
    n_actions: int
    module: SableModule
    init: Callable
    apply_train: Callable
    init_carry: Callable
    act: Callable

    def q_values(self, q, action_mask):
        """Scalar per-action Q with illegal actions at NEG (HL-Gauss logits converted by expectation)."""
        if self.cfg.q_bins:
            q = jnp.where(action_mask, self.cfg.hl_gauss.to_scalar(q), NEG)
        return q

    def param_count(self, params) -> int:
        return sum(x.size for x in jax.tree.leaves(params))


def make_sable(cfg: SableConfig, n_actions: int) -> SableNet:
    module = SableModule(cfg, n_actions)
    dh = cfg.embed_dim // cfg.n_heads

    def init_carry(batch: int | Sequence[int] | None = None, n_agents: int | None = None):
        """Zero retention states, (*batch, H, dh, dh) per retention; independent of the agent count."""
        lead = () if batch is None else (batch,) if isinstance(batch, int) else tuple(batch)
        shape = lead + (cfg.n_heads, dh, dh)
        z = lambda: jnp.zeros(shape, jnp.float32)  # noqa: E731
        return {"enc": [z() for _ in range(cfg.n_blocks)],
                "dec": [(z(), z()) for _ in range(cfg.n_blocks)]}

    def init(key, sample_obs):
        """Params from a (B, T, N, O) observation sample (only O matters).

        Parameters do not depend on the execution mode, so initialise through the
        cheapest one (a single one-agent timestep) to keep compile time down.
        """
        obs = sample_obs.reshape(-1, sample_obs.shape[-1])[:1, None]       # (1, 1, O)
        ctx = Ctx("step", jnp.ones((1, 1), bool), jnp.ones((1,), bool), 1)
        tokens = jnp.full((1, 1), n_actions, jnp.int32)
        return module.init(key, obs, tokens, init_carry(1), ctx)

    def apply_train(params, obs, actions, action_mask, active, resets, carry=None):
        """Chunkwise pass over (B, T, N) sequences with teacher-forced actions.

        ``resets[b, t]`` marks timestep t as an episode start; ``carry`` is the state
        before timestep 0 (zeros if None). Returns (Outputs, carry after the last step).
        """
        B, T, N, _ = obs.shape
        if carry is None:
            carry = init_carry(B)
        tokens = shifted_tokens(actions, active, n_actions).reshape(B, T * N)
        ctx = Ctx("chunk", active.reshape(B, T * N), resets, N, cfg.chunk_steps(N))
        logits, q, value, carry = module.apply(params, obs.reshape(B, T * N, -1), tokens, carry, ctx)
        unflat = lambda x: None if x is None else x.reshape(B, T, N, *x.shape[2:])  # noqa: E731
        logits, q = _mask_outputs(cfg, unflat(logits), unflat(q), action_mask)
        return Outputs(logits, q, unflat(value)), carry

    def act(params, carry, obs, action_mask, active, reset, key, order=None,
            forced_actions=None, greedy: bool = False):
        """One timestep of one environment: obs (N, O), action_mask (N, A), active (N,), reset ().

        Agents are decoded one at a time in ``order`` (a permutation of range(N);
        identity if None); each samples from its masked logits (argmax if greedy, or
        takes ``forced_actions`` for teacher forcing) before the next agent is
        decoded. Returns (actions (N,), Outputs for this step, new carry).
        """
        N = obs.shape[0]
        order = jnp.arange(N) if order is None else jnp.asarray(order)
        obs_p, mask_p, active_p = obs[order][None], action_mask[order], active[order][None]
        reset = jnp.asarray(reset, bool).reshape(1)
        add_b = lambda s: s[None]  # noqa: E731
        enc = jax.tree.map(add_b, carry["enc"])
        obs_rep, value, enc = module.apply(params, obs_p, enc, Ctx("step", active_p, reset, N),
                                           method=SableModule.encode)
        # Decoder states: decayed once for this timestep; each agent then adds its token (agent_step), so
        # after the last agent they hold the per-timestep update that chunkwise training computes at once.
        dec = jax.tree.map(lambda s: decay_state(add_b(s), reset, head_decays(cfg.n_heads)), carry["dec"])
        forced = jnp.zeros((N,), jnp.int32) if forced_actions is None else jnp.asarray(forced_actions)[order]

        def body(c, xs):
            states, prev = c
            rep, mask, act_i, k, f = xs
            ctx = Ctx("agent", act_i[None, None])
            logits, q, states = module.apply(params, prev[None, None], rep[None, None], states, ctx,
                                             method=SableModule.decode)
            logits, q = _mask_outputs(cfg, logits[0, 0], q[0, 0], mask)
            if forced_actions is not None:
                a = f
            else:  # jnp.where so ``greedy`` may be traced under jit
                a = jnp.where(greedy, jnp.argmax(logits), jax.random.categorical(k, logits))
            prev = jnp.where(act_i, a, prev).astype(jnp.int32)
            return (states, prev), (a.astype(jnp.int32), logits, q)

        xs = (obs_rep[0], mask_p, active_p[0], jax.random.split(key, N), forced)
        (dec, _), (acts, logits, q) = jax.lax.scan(body, (dec, jnp.int32(n_actions)), xs)
        inv = jnp.argsort(order)
        value = None if value is None else value[0][inv]
        new_carry = jax.tree.map(lambda s: s[0], {"enc": enc, "dec": dec})
        return acts[inv], Outputs(logits[inv], q[inv], value), new_carry

    return SableNet(cfg, n_actions, module, init, apply_train, init_carry, act)
