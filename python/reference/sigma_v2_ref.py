"""Sigma V2 (MoE) reference in plain PyTorch, written from models.md §5.1.

Graph: Llama-style pre-norm blocks; GQA with per-head RMSNorm on q and k (`q_layernorm`,
`k_layernorm`, when `qk_layernorm`) *before* rotate-half RoPE; MoE in every layer
`>= first_k_dense_replace` (dense SwiGLU MLP below it). Router: `sigmoid(x . W_g)` in fp32,
`e_score_correction_bias` added for *selection only*, plain top-k (DeepSeek-V3's algorithm
with one group), weights = unbiased sigmoid scores, renormalised (`+1e-20`) when
`norm_topk_prob` and k > 1, times `routed_scaling_factor`; optional shared experts of width
`n_shared_experts * moe_intermediate_size` added unweighted. Untied lm_head unless the
config says otherwise.

State-dict names follow the Qwen3-MoE / DeepSeek Hub layout
(`model.layers.N.mlp.experts.E.gate_proj.weight`, `model.layers.N.mlp.gate.e_score_correction_bias`, ...).
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
    dispatch_experts,
    extend_kv,
    require,
    rope_cos_sin,
    rope_inv_freq,
    rope_theta_of,
)


@dataclass
class SigmaV2Config:
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    moe_intermediate_size: int
    n_routed_experts: int
    top_k: int
    n_shared_experts: int
    norm_topk_prob: bool
    routed_scaling_factor: float
    first_k_dense_replace: int
    qk_layernorm: bool
    attention_bias: bool
    rms_norm_eps: float
    rope_theta: float
    hidden_act: str
    tie_word_embeddings: bool
    raw: dict

    @staticmethod
    def from_dict(d: dict) -> "SigmaV2Config":
        where = "sigma_v2 config"
        scoring = d.get("scoring_func", "sigmoid")
        if scoring != "sigmoid":
            raise ConfigError(f"{where}: scoring_func '{scoring}' is not supported; Sigma V2 routes with sigmoid")
        hidden = int(require(d, "hidden_size", where))
        nq = int(require(d, "num_attention_heads", where))
        moe_i = int(require(d, "moe_intermediate_size", where))
        return SigmaV2Config(
            vocab_size=int(require(d, "vocab_size", where)),
            hidden_size=hidden,
            num_layers=int(require(d, "num_hidden_layers", where)),
            num_heads=nq,
            num_kv_heads=int(d.get("num_key_value_heads") or nq),
            head_dim=int(d.get("head_dim") or hidden // nq),
            intermediate_size=int(d.get("intermediate_size") or moe_i),
            moe_intermediate_size=moe_i,
            n_routed_experts=int(require(d, "n_routed_experts", where)),
            top_k=int(require(d, "num_experts_per_tok", where)),
            n_shared_experts=int(d.get("n_shared_experts") or 0),
            norm_topk_prob=bool(d.get("norm_topk_prob", True)),
            routed_scaling_factor=float(d.get("routed_scaling_factor", 1.0)),
            first_k_dense_replace=int(d.get("first_k_dense_replace") or 0),
            qk_layernorm=bool(d.get("qk_layernorm", True)),
            attention_bias=bool(d.get("attention_bias", False)),
            rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
            rope_theta=rope_theta_of(d, 10000.0),
            hidden_act=d.get("hidden_act", "silu"),
            tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
            raw=d,
        )


class SigmaV2Attention(nn.Module):
    def __init__(self, cfg: SigmaV2Config):
        super().__init__()
        self.cfg = cfg
        h, dh, bias = cfg.hidden_size, cfg.head_dim, cfg.attention_bias
        self.q_proj = nn.Linear(h, cfg.num_heads * dh, bias=bias)
        self.k_proj = nn.Linear(h, cfg.num_kv_heads * dh, bias=bias)
        self.v_proj = nn.Linear(h, cfg.num_kv_heads * dh, bias=bias)
        self.o_proj = nn.Linear(cfg.num_heads * dh, h, bias=bias)
        if cfg.qk_layernorm:
            self.q_layernorm = RMSNorm(dh, cfg.rms_norm_eps)
            self.k_layernorm = RMSNorm(dh, cfg.rms_norm_eps)

    def forward(self, x, cos, sin, past=None):
        b, s, _ = x.shape
        dh = self.cfg.head_dim
        q = self.q_proj(x).view(b, s, -1, dh)
        k = self.k_proj(x).view(b, s, -1, dh)
        v = self.v_proj(x).view(b, s, -1, dh).transpose(1, 2)
        if self.cfg.qk_layernorm:
            q, k = self.q_layernorm(q), self.k_layernorm(k)
        q = apply_rope(q.transpose(1, 2), cos, sin)
        k = apply_rope(k.transpose(1, 2), cos, sin)
        k, v = extend_kv(past, k, v)
        o = causal_attention(q, k, v, dh**-0.5)
        return self.o_proj(o.transpose(1, 2).reshape(b, s, -1)), (k, v)


class SigmaV2Router(nn.Module):
    def __init__(self, cfg: SigmaV2Config):
        super().__init__()
        self.cfg = cfg
        self.weight = nn.Parameter(torch.zeros(cfg.n_routed_experts, cfg.hidden_size))
        self.e_score_correction_bias = nn.Parameter(torch.zeros(cfg.n_routed_experts))

    def forward(self, x_flat: torch.Tensor):
        """Selection scores `[T, E]` (biased, fp32), chosen indices and their weights."""
        scores = torch.sigmoid(x_flat.float() @ self.weight.float().t())
        choice = scores + self.e_score_correction_bias.float()
        indices = torch.topk(choice, self.cfg.top_k, dim=-1).indices
        weights = scores.gather(1, indices)  # the bias only picks; weights stay unbiased
        if self.cfg.norm_topk_prob and self.cfg.top_k > 1:
            weights = weights / (weights.sum(-1, keepdim=True) + 1e-20)
        return choice, indices, weights * self.cfg.routed_scaling_factor


class SigmaV2Moe(nn.Module):
    def __init__(self, cfg: SigmaV2Config):
        super().__init__()
        act = activation_of(cfg.hidden_act, "sigma_v2 config")
        self.gate = SigmaV2Router(cfg)
        self.experts = nn.ModuleList(
            GatedMLP(cfg.hidden_size, cfg.moe_intermediate_size, act) for _ in range(cfg.n_routed_experts)
        )
        self.shared_experts = (
            GatedMLP(cfg.hidden_size, cfg.moe_intermediate_size * cfg.n_shared_experts, act)
            if cfg.n_shared_experts > 0
            else None
        )

    def forward(self, x):
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        _, indices, weights = self.gate(flat)
        out = dispatch_experts(flat, self.experts, indices, weights)
        if self.shared_experts is not None:
            out = out + self.shared_experts(flat)
        return out.view(shape)


class SigmaV2DecoderLayer(nn.Module):
    def __init__(self, cfg: SigmaV2Config, index: int):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = SigmaV2Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        if index >= cfg.first_k_dense_replace:
            self.mlp = SigmaV2Moe(cfg)
        else:
            self.mlp = GatedMLP(cfg.hidden_size, cfg.intermediate_size, activation_of(cfg.hidden_act, "sigma_v2"))

    def forward(self, x, cos, sin, past=None):
        a, kv = self.self_attn(self.input_layernorm(x), cos, sin, past)
        x = x + a
        return x + self.mlp(self.post_attention_layernorm(x)), kv


class SigmaV2Model(nn.Module):
    def __init__(self, cfg: SigmaV2Config):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(SigmaV2DecoderLayer(cfg, i) for i in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class SigmaV2ForCausalLM(nn.Module):
    def __init__(self, cfg: SigmaV2Config):
        super().__init__()
        self.cfg = cfg
        self.model = SigmaV2Model(cfg)
        self.lm_head = None if cfg.tie_word_embeddings else nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        inv_freq, factor = rope_inv_freq(cfg.raw, cfg.head_dim, cfg.rope_theta, "sigma_v2 config")
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.rope_attention_factor = factor

    @classmethod
    def from_dict(cls, d: dict) -> "SigmaV2ForCausalLM":
        return cls(SigmaV2Config.from_dict(d))

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
