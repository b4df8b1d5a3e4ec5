"""Building blocks shared by the self-written reference models (Grok-1, Sigma V2, Sigma v1).

These references exist because transformers 5.17 has no native class for those families
(models.md §7). They favour obviousness over speed: attention materialises the full score
matrix (needed anyway for Grok's soft-cap), MoE loops over experts.

KV cache convention (used by hf_latency.py for decode timing): a model's forward takes
`cache` = None or a list with one `(k, v)` pair per layer and returns a *new* list; the input
list is never modified, so the same prefix cache can be reused for repeated decode steps.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class ConfigError(ValueError):
    """A config.json key is missing or has a value the reference cannot run."""


def require(d: dict, key: str, where: str):
    if key not in d or d[key] is None:
        raise ConfigError(f"{where}: config key '{key}' is required but missing; add it to config.json")
    return d[key]


class RMSNorm(nn.Module):
    """`x / sqrt(mean(x^2) + eps) * w` with statistics in fp32.

    `scale_in_fp32` picks where the cast back to the activation dtype happens: Grok's JAX
    code multiplies by the weight in fp32 and casts after; HF (Qwen/DeepSeek) casts first.
    Identical in fp32, slightly different in bf16 (models.md §0.1).
    """

    def __init__(self, dim: int, eps: float, scale_in_fp32: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps
        self.scale_in_fp32 = scale_in_fp32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.scale_in_fp32:
            return (normed * self.weight.float()).to(x.dtype)
        return self.weight * normed.to(x.dtype)


def rope_theta_of(d: dict, default: float = 10000.0) -> float:
    """`rope_theta`, else `rope_parameters.rope_theta`, else the family default."""
    if d.get("rope_theta") is not None:
        return float(d["rope_theta"])
    params = d.get("rope_parameters") or {}
    if params.get("rope_theta") is not None:
        return float(params["rope_theta"])
    return default


def _yarn_mscale(scale: float, m: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0


def rope_inv_freq(d: dict, rotary_dim: int, theta: float, where: str) -> tuple[torch.Tensor, float]:
    """Inverse frequencies for `rotary_dim` and the cos/sin multiplier.

    Plain RoPE unless the config carries a YaRN `rope_scaling` / `rope_parameters` entry,
    which is resolved the way HF's `_compute_yarn_parameters` does (so a YaRN config means
    the same thing here as in the HF classes).
    """
    base = 1.0 / (theta ** (torch.arange(0, rotary_dim, 2, dtype=torch.float64) / rotary_dim))
    scaling = d.get("rope_scaling") or d.get("rope_parameters") or {}
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind in (None, "default"):
        return base.float(), 1.0
    if kind != "yarn":
        raise ConfigError(f"{where}: rope type '{kind}' is not supported by the reference; use none or yarn")
    factor = float(require(scaling, "factor", where + " rope_scaling"))
    orig = int(require(scaling, "original_max_position_embeddings", where + " rope_scaling"))
    beta_fast = float(scaling.get("beta_fast") or 32)
    beta_slow = float(scaling.get("beta_slow") or 1)
    attention_factor = scaling.get("attention_factor")
    if attention_factor is None:
        mscale, mscale_all = scaling.get("mscale"), scaling.get("mscale_all_dim")
        if mscale and mscale_all:
            attention_factor = _yarn_mscale(factor, mscale) / _yarn_mscale(factor, mscale_all)
        else:
            attention_factor = _yarn_mscale(factor)

    def correction_dim(rotations: float) -> float:
        return rotary_dim * math.log(orig / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if scaling.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, rotary_dim - 1)
    if low == high:
        high += 0.001
    ramp = ((torch.arange(rotary_dim // 2, dtype=torch.float64) - low) / (high - low)).clamp(0, 1)
    # ramp 0 keeps the original (high-frequency) dims, ramp 1 interpolates by `factor`.
    inv = base / factor * ramp + base * (1 - ramp)
    return inv.float(), float(attention_factor)


def rope_cos_sin(inv_freq: torch.Tensor, positions: torch.Tensor, attention_factor: float, dtype):
    """cos/sin tables `[S, rotary_dim]` in rotate-half layout (angles repeated twice)."""
    angles = positions.float()[:, None] * inv_freq.to(positions.device)[None, :]
    emb = torch.cat((angles, angles), dim=-1)
    return (emb.cos() * attention_factor).to(dtype), (emb.sin() * attention_factor).to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """NeoX rotate-half RoPE on `x [B, heads, S, d]` with `cos/sin [S, d]`."""
    return x * cos + rotate_half(x) * sin


def expand_heads(x: torch.Tensor, num_query_heads: int) -> torch.Tensor:
    """Repeat kv heads so query head i reads head floor(i * n / nq) (GQA / DiffQKV mapping)."""
    n = x.shape[1]
    if num_query_heads % n != 0:
        raise ConfigError(f"query heads ({num_query_heads}) must be a multiple of key/value heads ({n})")
    return x.repeat_interleave(num_query_heads // n, dim=1)


def causal_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    softcap: float | None = None,
) -> torch.Tensor:
    """Causal attention, `q [B, nq, S, d]`, `k [B, nk, T, d]`, `v [B, nv, T, dv]`, T >= S.

    The S queries are the last S positions of the T keys (T - S cached tokens before them).
    Scores and softmax in fp32; the optional tanh soft-cap is applied after scaling and before
    the mask, as Grok does.
    """
    nq, s, t = q.shape[1], q.shape[2], k.shape[2]
    k = expand_heads(k, nq)
    v = expand_heads(v, nq)
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale
    if softcap is not None:
        scores = softcap * torch.tanh(scores / softcap)
    query_pos = torch.arange(t - s, t, device=q.device)[:, None]
    key_pos = torch.arange(t, device=q.device)[None, :]
    scores = scores.masked_fill(key_pos > query_pos, float("-inf"))
    probs = torch.softmax(scores, dim=-1).to(v.dtype)
    return torch.matmul(probs, v)


def gelu(x: torch.Tensor, flavour: str) -> torch.Tensor:
    if flavour == "erf":
        return F.gelu(x)
    if flavour == "tanh":
        return F.gelu(x, approximate="tanh")
    raise ConfigError(f"unknown GELU flavour '{flavour}' (expected erf or tanh)")


def activation_of(name: str, where: str):
    """Map an HF `hidden_act` string to a function."""
    if name == "silu":
        return F.silu
    if name == "gelu":
        return lambda x: gelu(x, "erf")
    if name in ("gelu_new", "gelu_pytorch_tanh", "gelu_tanh"):
        return lambda x: gelu(x, "tanh")
    raise ConfigError(f"{where}: hidden_act '{name}' is not supported; use silu, gelu or gelu_pytorch_tanh")


class GatedMLP(nn.Module):
    """`down(act(gate x) * up x)`, no biases (SwiGLU when act is SiLU)."""

    def __init__(self, hidden: int, intermediate: int, act):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


def dispatch_experts(x: torch.Tensor, experts: nn.ModuleList, indices: torch.Tensor, weights: torch.Tensor):
    """`sum_j weights[t, j] * experts[indices[t, j]](x[t])` for flat tokens `x [T, H]`."""
    out = torch.zeros_like(x)
    for e in torch.unique(indices).tolist():
        token, slot = torch.where(indices == e)
        y = experts[e](x[token]) * weights[token, slot, None].to(x.dtype)
        out.index_add_(0, token, y)
    return out


def cache_len(cache) -> int:
    return 0 if cache is None or cache[0] is None else cache[0][0].shape[2]


def extend_kv(past, k: torch.Tensor, v: torch.Tensor):
    """Append this step's `k, v [B, h, S, d]` to a layer's past (returns new tensors)."""
    if past is None:
        return k, v
    return torch.cat((past[0], k), dim=2), torch.cat((past[1], v), dim=2)
