"""Sigma v1 (DiffQKV, arXiv:2501.13629) reference in plain PyTorch, written from models.md §5.2.

Attention: `q0 = x Wq [nq*dh]`, `k = x Wk [nk*dh]`, `v = x Wv [nv*dh]`; augmented Q
`q = q_down(silu(q_gate q0) * q_up q0)` (when `aug_q_intermediate_size` is set); rotate-half
RoPE on q and k; query head i reads K head `floor(i*nk/nq)` and V head `floor(i*nv/nq)`;
scale `1/sqrt(dh)`; `o_proj`. The rest is a Llama block (pre-RMSNorm, SwiGLU MLP, final
RMSNorm, lm_head).

No public config exists; the keys are fwdbench's own: `num_attention_heads`, `num_key_heads`,
`num_value_heads`, `head_dim`, `aug_q_intermediate_size` (models.md §5.2 suggestion).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ref_common import (
    ConfigError,
    GatedMLP,
    RMSNorm,
    activation_of,
    apply_rope,
    cache_len,
    causal_attention,
    extend_kv,
    require,
    rope_cos_sin,
    rope_inv_freq,
    rope_theta_of,
)


@dataclass
class SigmaV1Config:
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_key_heads: int
    num_value_heads: int
    head_dim: int
    aug_q_intermediate_size: int | None
    intermediate_size: int
    hidden_act: str
    rms_norm_eps: float
    rope_theta: float
    tie_word_embeddings: bool
    raw: dict

    @staticmethod
    def from_dict(d: dict) -> "SigmaV1Config":
        where = "sigma_v1 config"
        hidden = int(require(d, "hidden_size", where))
        nq = int(require(d, "num_attention_heads", where))
        nk = int(require(d, "num_key_heads", where))
        nv = int(require(d, "num_value_heads", where))
        for name, n in (("num_key_heads", nk), ("num_value_heads", nv)):
            if nq % n != 0:
                raise ConfigError(f"{where}: num_attention_heads ({nq}) must be a multiple of {name} ({n})")
        aug = d.get("aug_q_intermediate_size")
        return SigmaV1Config(
            vocab_size=int(require(d, "vocab_size", where)),
            hidden_size=hidden,
            num_layers=int(require(d, "num_hidden_layers", where)),
            num_heads=nq,
            num_key_heads=nk,
            num_value_heads=nv,
            head_dim=int(d.get("head_dim") or hidden // nq),
            aug_q_intermediate_size=int(aug) if aug else None,
            intermediate_size=int(require(d, "intermediate_size", where)),
            hidden_act=d.get("hidden_act", "silu"),
            rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
            rope_theta=rope_theta_of(d, 10000.0),
            tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
            raw=d,
        )


class DiffQkvAttention(nn.Module):
    def __init__(self, cfg: SigmaV1Config):
        super().__init__()
        self.cfg = cfg
        h, dh = cfg.hidden_size, cfg.head_dim
        q_width = cfg.num_heads * dh
        self.q_proj = nn.Linear(h, q_width, bias=False)
        self.k_proj = nn.Linear(h, cfg.num_key_heads * dh, bias=False)
        self.v_proj = nn.Linear(h, cfg.num_value_heads * dh, bias=False)
        self.o_proj = nn.Linear(q_width, h, bias=False)
        self.act = activation_of(cfg.hidden_act, "sigma_v1 config")
        if cfg.aug_q_intermediate_size:
            dq = cfg.aug_q_intermediate_size
            self.q_gate_proj = nn.Linear(q_width, dq, bias=False)
            self.q_up_proj = nn.Linear(q_width, dq, bias=False)
            self.q_down_proj = nn.Linear(dq, q_width, bias=False)

    def forward(self, x, cos, sin, past=None):
        b, s, _ = x.shape
        dh = self.cfg.head_dim
        q = self.q_proj(x)
        if self.cfg.aug_q_intermediate_size:
            q = self.q_down_proj(self.act(self.q_gate_proj(q)) * self.q_up_proj(q))
        q = q.view(b, s, -1, dh).transpose(1, 2)
        k = self.k_proj(x).view(b, s, -1, dh).transpose(1, 2)
        v = self.v_proj(x).view(b, s, -1, dh).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        k, v = extend_kv(past, k, v)
        # causal_attention repeats K and V heads separately, which is exactly the
        # floor(i*n/nq) mapping for both (FlexHeadFA), K and V with different counts.
        o = causal_attention(q, k, v, dh**-0.5)
        return self.o_proj(o.transpose(1, 2).reshape(b, s, -1)), (k, v)


class SigmaV1DecoderLayer(nn.Module):
    def __init__(self, cfg: SigmaV1Config):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = DiffQkvAttention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = GatedMLP(cfg.hidden_size, cfg.intermediate_size, activation_of(cfg.hidden_act, "sigma_v1"))

    def forward(self, x, cos, sin, past=None):
        a, kv = self.self_attn(self.input_layernorm(x), cos, sin, past)
        x = x + a
        return x + self.mlp(self.post_attention_layernorm(x)), kv


class SigmaV1Model(nn.Module):
    def __init__(self, cfg: SigmaV1Config):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(SigmaV1DecoderLayer(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class SigmaV1ForCausalLM(nn.Module):
    def __init__(self, cfg: SigmaV1Config):
        super().__init__()
        self.cfg = cfg
        self.model = SigmaV1Model(cfg)
        self.lm_head = None if cfg.tie_word_embeddings else nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        inv_freq, factor = rope_inv_freq(cfg.raw, cfg.head_dim, cfg.rope_theta, "sigma_v1 config")
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.rope_attention_factor = factor

    @classmethod
    def from_dict(cls, d: dict) -> "SigmaV1ForCausalLM":
        return cls(SigmaV1Config.from_dict(d))

    def forward(self, input_ids: torch.Tensor, cache=None, last_only: bool = False):
        past_len = cache_len(cache)
        x = self.model.embed_tokens(input_ids)
        pos = torch.arange(past_len, past_len + input_ids.shape[1], device=input_ids.device)
        cos, sin = rope_cos_sin(self.inv_freq, pos, self.rope_attention_factor, x.dtype)
        new_cache = []
        for i, layer in enumerate(self.model.layers):
            x, kv = layer(x, cos, sin, None if cache is None else cache[i])
            new_cache.append(kv)
        h = self.model.norm(x)
        if last_only:
            h = h[:, -1:]
        w = self.model.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        return h @ w.t(), new_cache
