"""Grok-1 reference in plain PyTorch, written from models.md §2.1.

Graph: `x = embed[ids] * embedding_multiplier_scale`; per layer four RMSNorms ("sandwich"):
`x += post_attn_norm(attn(pre_attn_norm(x)))`, `x += post_moe_norm(moe(pre_moe_norm(x)))`;
GQA with rotate-half RoPE over the full head dim, logits scaled then tanh soft-capped;
MoE with an fp32 router, softmax over all experts (optionally soft-capped first, as SGLang
does), top-k weights NOT renormalised, experts `w2(gelu(w1 x) * w3 x)`; final RMSNorm;
`logits = h . W^T * output_multiplier_scale` with W the lm_head or the tied embedding.

Two config dialects are understood (models.md §2.2):
* SGLang (`model_type: "mixtral"`, `num_local_experts`, `head_dim`, `attn_logit_softcapping`,
  `router_logit_softcapping`; hidden_act "gelu" means the erf GELU SGLang runs on CUDA);
* hpcai-tech (`model_type: "grok-1"`, `num_experts`, `attn_output_multiplier` as the logit
  scale, `max_attn_value` as the attention cap, no router cap, tied embeddings).

State-dict names match the HF-style Grok checkpoints (`model.layers.N.pre_attn_norm.weight`,
`model.layers.N.block_sparse_moe.experts.E.w1.weight`, ...), so a fixture's
model.safetensors loads with `load_state_dict(strict=True)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ref_common import (
    ConfigError,
    RMSNorm,
    apply_rope,
    cache_len,
    causal_attention,
    dispatch_experts,
    extend_kv,
    gelu,
    require,
    rope_cos_sin,
    rope_inv_freq,
    rope_theta_of,
)

GROK1_EMBEDDING_MULTIPLIER = 78.38367176906169  # sqrt(6144), Grok-1 run.py
GROK1_OUTPUT_MULTIPLIER = 0.5773502691896257  # 1/sqrt(3)
GROK1_SOFTCAP = 30.0


@dataclass
class Grok1Config:
    dialect: str  # "sglang" or "hpcai"
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    num_experts: int
    top_k: int
    moe_intermediate_size: int
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int
    embedding_multiplier_scale: float
    output_multiplier_scale: float
    attn_scale: float
    attn_softcap: float | None
    router_softcap: float | None
    gelu: str  # "erf" or "tanh"
    tie_word_embeddings: bool
    raw: dict

    @staticmethod
    def from_dict(d: dict) -> "Grok1Config":
        where = "grok1 config"
        dialect = "hpcai" if d.get("model_type") == "grok-1" else "sglang"
        hidden = int(require(d, "hidden_size", where))
        nq = int(require(d, "num_attention_heads", where))
        head_dim = int(d.get("head_dim") or hidden // nq)
        if dialect == "hpcai":
            num_experts = int(require(d, "num_experts", where))
            attn_scale = float(d.get("attn_output_multiplier") or head_dim**-0.5)
            attn_cap = d.get("max_attn_value", GROK1_SOFTCAP)
            router_cap = d.get("router_logit_softcapping")
            default_tie = True
        else:
            # SGLang reads num_local_experts only; accept num_experts too but say which is missing.
            if d.get("num_local_experts") is None and d.get("num_experts") is None:
                raise ConfigError(f"{where}: 'num_local_experts' is required (SGLang dialect)")
            num_experts = int(d.get("num_local_experts") or d["num_experts"])
            attn_scale = head_dim**-0.5
            attn_cap = d.get("attn_logit_softcapping", GROK1_SOFTCAP)
            router_cap = d.get("router_logit_softcapping", GROK1_SOFTCAP)
            default_tie = False
        act = d.get("hidden_act", "gelu")
        if act == "gelu":
            flavour = "erf"
        elif act in ("gelu_new", "gelu_pytorch_tanh", "gelu_tanh"):
            flavour = "tanh"
        else:
            raise ConfigError(f"{where}: hidden_act '{act}' is not a GELU; Grok experts are GELU-gated")
        return Grok1Config(
            dialect=dialect,
            vocab_size=int(require(d, "vocab_size", where)),
            hidden_size=hidden,
            num_layers=int(require(d, "num_hidden_layers", where)),
            num_heads=nq,
            num_kv_heads=int(d.get("num_key_value_heads") or nq),
            head_dim=head_dim,
            num_experts=num_experts,
            top_k=int(d.get("num_experts_per_tok", 2)),
            moe_intermediate_size=int(d.get("moe_intermediate_size") or require(d, "intermediate_size", where)),
            rms_norm_eps=float(d.get("rms_norm_eps", 1e-5)),
            rope_theta=rope_theta_of(d, 10000.0),
            max_position_embeddings=int(d.get("max_position_embeddings", 8192)),
            embedding_multiplier_scale=float(d.get("embedding_multiplier_scale", GROK1_EMBEDDING_MULTIPLIER)),
            output_multiplier_scale=float(d.get("output_multiplier_scale", GROK1_OUTPUT_MULTIPLIER)),
            attn_scale=attn_scale,
            attn_softcap=float(attn_cap) if attn_cap else None,
            router_softcap=float(router_cap) if router_cap else None,
            gelu=flavour,
            tie_word_embeddings=bool(d.get("tie_word_embeddings", default_tie)),
            raw=d,
        )


class Grok1Attention(nn.Module):
    def __init__(self, cfg: Grok1Config):
        super().__init__()
        self.cfg = cfg
        h, dh = cfg.hidden_size, cfg.head_dim
        self.q_proj = nn.Linear(h, cfg.num_heads * dh, bias=False)
        self.k_proj = nn.Linear(h, cfg.num_kv_heads * dh, bias=False)
        self.v_proj = nn.Linear(h, cfg.num_kv_heads * dh, bias=False)
        self.o_proj = nn.Linear(cfg.num_heads * dh, h, bias=False)

    def forward(self, x, cos, sin, past=None):
        b, s, _ = x.shape
        dh = self.cfg.head_dim
        q = self.q_proj(x).view(b, s, -1, dh).transpose(1, 2)
        k = self.k_proj(x).view(b, s, -1, dh).transpose(1, 2)
        v = self.v_proj(x).view(b, s, -1, dh).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        k, v = extend_kv(past, k, v)
        o = causal_attention(q, k, v, self.cfg.attn_scale, self.cfg.attn_softcap)
        return self.o_proj(o.transpose(1, 2).reshape(b, s, -1)), (k, v)


class Grok1Expert(nn.Module):
    """`w2(gelu(w1 x) * w3 x)`: w1 is the GELU branch, w3 the linear branch (JAX linear/linear_v)."""

    def __init__(self, hidden: int, intermediate: int, flavour: str):
        super().__init__()
        self.w1 = nn.Linear(hidden, intermediate, bias=False)
        self.w3 = nn.Linear(hidden, intermediate, bias=False)
        self.w2 = nn.Linear(intermediate, hidden, bias=False)
        self.flavour = flavour

    def forward(self, x):
        return self.w2(gelu(self.w1(x), self.flavour) * self.w3(x))


class Grok1Moe(nn.Module):
    def __init__(self, cfg: Grok1Config):
        super().__init__()
        self.cfg = cfg
        self.gate = nn.Linear(cfg.hidden_size, cfg.num_experts, bias=False)
        self.experts = nn.ModuleList(
            Grok1Expert(cfg.hidden_size, cfg.moe_intermediate_size, cfg.gelu) for _ in range(cfg.num_experts)
        )

    def route(self, x_flat: torch.Tensor):
        """Router probabilities `[T, E]` (fp32) and the chosen top-k indices and weights."""
        logits = x_flat.float() @ self.gate.weight.float().t()
        if self.cfg.router_softcap is not None:
            logits = self.cfg.router_softcap * torch.tanh(logits / self.cfg.router_softcap)
        probs = torch.softmax(logits, dim=-1)
        weights, indices = torch.topk(probs, self.cfg.top_k, dim=-1)
        return probs, indices, weights  # no renormalisation: Grok keeps the raw softmax mass

    def forward(self, x):
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        _, indices, weights = self.route(flat)
        return dispatch_experts(flat, self.experts, indices, weights).view(shape)


class Grok1DecoderLayer(nn.Module):
    def __init__(self, cfg: Grok1Config):
        super().__init__()
        eps = cfg.rms_norm_eps
        self.pre_attn_norm = RMSNorm(cfg.hidden_size, eps, scale_in_fp32=True)
        self.self_attn = Grok1Attention(cfg)
        self.post_attn_norm = RMSNorm(cfg.hidden_size, eps, scale_in_fp32=True)
        self.pre_moe_norm = RMSNorm(cfg.hidden_size, eps, scale_in_fp32=True)
        self.block_sparse_moe = Grok1Moe(cfg)
        self.post_moe_norm = RMSNorm(cfg.hidden_size, eps, scale_in_fp32=True)

    def forward(self, x, cos, sin, past=None):
        a, kv = self.self_attn(self.pre_attn_norm(x), cos, sin, past)
        x = x + self.post_attn_norm(a)
        x = x + self.post_moe_norm(self.block_sparse_moe(self.pre_moe_norm(x)))
        return x, kv


class Grok1Model(nn.Module):
    def __init__(self, cfg: Grok1Config):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Grok1DecoderLayer(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, scale_in_fp32=True)


class Grok1ForCausalLM(nn.Module):
    def __init__(self, cfg: Grok1Config):
        super().__init__()
        self.cfg = cfg
        self.model = Grok1Model(cfg)
        self.lm_head = None if cfg.tie_word_embeddings else nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        inv_freq, factor = rope_inv_freq(cfg.raw, cfg.head_dim, cfg.rope_theta, "grok1 config")
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.rope_attention_factor = factor

    @classmethod
    def from_dict(cls, d: dict) -> "Grok1ForCausalLM":
        return cls(Grok1Config.from_dict(d))

    def forward(self, input_ids: torch.Tensor, cache=None, last_only: bool = False):
        """Logits `[B, S, V]` (or `[B, 1, V]` with last_only) and the extended KV cache."""
        past_len = cache_len(cache)
        x = self.model.embed_tokens(input_ids) * self.cfg.embedding_multiplier_scale
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
        return (h @ w.t()) * self.cfg.output_multiplier_scale, new_cache

