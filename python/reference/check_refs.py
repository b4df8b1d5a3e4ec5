"""Cross-checks of the self-written references against independent formulas and HF classes.

    /work/refenv/bin/python python/reference/check_refs.py

Exits non-zero on the first mismatch. What is checked, and against what:
* grok1_ref: RoPE against a complex-number rotation; attention (scale, soft-cap, GQA, causal
  mask) against a per-head loop; the MoE against a dense all-experts sum with top-2 of the
  (capped) softmax and no renormalisation; GELU flavours against their closed forms; a
  prefill+decode through the KV cache against one full forward.
* sigma_v2_ref: attention against HF Qwen3Attention (same QK-norm-before-RoPE graph) with
  copied weights; the MoE block against HF DeepseekV3MoE with n_group = topk_group = 1.
* sigma_v1_ref: with nk = nv = nq and no augmented Q, the whole model against HF
  LlamaForCausalLM; with DiffQKV + augmented Q, attention against a per-head loop.
* ref_common.rope_inv_freq: YaRN against HF's `_compute_yarn_parameters`.
"""

from __future__ import annotations

import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from grok1_ref import Grok1ForCausalLM  # noqa: E402
from make_fixtures import fixtures, randomize_  # noqa: E402
from ref_common import rope_inv_freq  # noqa: E402
from sigma_v1_ref import SigmaV1ForCausalLM  # noqa: E402
from sigma_v2_ref import SigmaV2ForCausalLM  # noqa: E402

GEN = torch.Generator().manual_seed(7)


def close(name: str, got: torch.Tensor, want: torch.Tensor, tol: float = 1e-5) -> None:
    err = ((got - want).norm() / want.norm()).item()
    status = "ok" if err <= tol else "FAIL"  # tol 0 demands bit equality
    print(f"{status:4} {name}: rel-L2 {err:.2e}")
    if err > tol:
        raise SystemExit(f"{name} differs from its independent formula (rel-L2 {err:.2e} > {tol:.0e})")


def fixture_config(name: str) -> dict:
    return dict(next(f for f in fixtures() if f.name == name).config)


def rope_complex(x: torch.Tensor, positions: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE as complex multiplication of (x_i, x_{i+d/2}) pairs."""
    half = x.shape[-1] // 2
    z = torch.complex(x[..., :half].double(), x[..., half:].double())
    angle = positions.double()[:, None] * inv_freq.double()[None, :]
    z = z * torch.polar(torch.ones_like(angle), angle)
    return torch.cat((z.real, z.imag), dim=-1).float()


def loop_attention(q, k, v, scale, cap=None):
    """Per-head, per-query attention with explicit head mapping floor(i * n / nq)."""
    b, nq, s, _ = q.shape
    out = torch.zeros(b, nq, s, v.shape[-1])
    for i in range(nq):
        kh, vh = k[:, i * k.shape[1] // nq], v[:, i * v.shape[1] // nq]
        for t in range(s):
            sc = (q[:, i, t : t + 1] @ kh[:, : t + 1].transpose(-1, -2)) * scale
            if cap is not None:
                sc = cap * torch.tanh(sc / cap)
            out[:, i, t] = (torch.softmax(sc, -1) @ vh[:, : t + 1])[:, 0]
    return out


def check_cache(name: str, model) -> None:
    """Prefill, then two cached steps, must equal one full forward (hf_latency's decode path)."""
    ids = torch.randint(0, model.cfg.vocab_size, (2, 9), generator=GEN)
    with torch.no_grad():
        full, _ = model(ids)
        _, cache = model(ids[:, :6])
        step, cache2 = model(ids[:, 6:8], cache)
        last, _ = model(ids[:, 8:], cache2)
        again, _ = model(ids[:, 6:8], cache)  # the prefix cache must not have been modified
    close(f"{name} prefill + cached decode", torch.cat((step, last), 1), full[:, 6:])
    close(f"{name} cache reuse", again, step, 0.0)


def check_grok() -> None:
    for name in ("grok1", "grok1_hpcai"):
        model = Grok1ForCausalLM.from_dict(fixture_config(name)).eval()
        randomize_(model, GEN, router_std=0.8)
        cfg = model.cfg
        b, s = 2, 7
        x = torch.randn(b, s, cfg.hidden_size, generator=GEN)
        pos = torch.arange(s)
        attn = model.model.layers[0].self_attn
        with torch.no_grad():
            q = attn.q_proj(x).view(b, s, -1, cfg.head_dim).transpose(1, 2)
            k = attn.k_proj(x).view(b, s, -1, cfg.head_dim).transpose(1, 2)
            v = attn.v_proj(x).view(b, s, -1, cfg.head_dim).transpose(1, 2)
            qr, kr = rope_complex(q, pos, model.inv_freq), rope_complex(k, pos, model.inv_freq)
            want = attn.o_proj(loop_attention(qr, kr, v, cfg.attn_scale, cfg.attn_softcap).transpose(1, 2).reshape(b, s, -1))
            cos = torch.cat([pos[:, None] * model.inv_freq[None]] * 2, -1)
            got = attn(x, cos.cos(), cos.sin())[0]
        close(f"{name} attention (rope, scale {cfg.attn_scale}, cap {cfg.attn_softcap})", got, want)

        moe = model.model.layers[1].block_sparse_moe
        flat = x.reshape(-1, cfg.hidden_size)
        with torch.no_grad():
            logits = flat @ moe.gate.weight.t()
            if cfg.router_softcap is not None:
                logits = cfg.router_softcap * torch.tanh(logits / cfg.router_softcap)
            p = torch.softmax(logits, -1)
            keep = torch.zeros_like(p).scatter(1, p.topk(cfg.top_k, -1).indices, 1.0)
            dense = torch.stack([ex(flat) for ex in moe.experts], 1)  # [T, E, H]
            want = ((p * keep)[..., None] * dense).sum(1)
            got = moe(x).reshape(-1, cfg.hidden_size)
        close(f"{name} MoE (router cap {cfg.router_softcap}, no renorm)", got, want)

        ex = moe.experts[0]
        with torch.no_grad():
            a = ex.w1(flat)
            if cfg.gelu == "erf":
                g = 0.5 * a * (1 + torch.erf(a / math.sqrt(2)))
            else:
                g = 0.5 * a * (1 + torch.tanh(math.sqrt(2 / math.pi) * (a + 0.044715 * a**3)))
            close(f"{name} expert with {cfg.gelu} GELU", ex(flat), ex.w2(g * ex.w3(flat)))

        check_cache(name, model)


def check_sigma_v2() -> None:
    from transformers import DeepseekV3Config, Qwen3Config
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3MoE
    from transformers.models.qwen3.modeling_qwen3 import Qwen3Attention, Qwen3RotaryEmbedding

    d = fixture_config("sigma_v2")
    model = SigmaV2ForCausalLM.from_dict(d).eval()
    randomize_(model, GEN, router_std=0.5)
    cfg = model.cfg
    layer = model.model.layers[0]

    qcfg = Qwen3Config(
        hidden_size=cfg.hidden_size,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        head_dim=cfg.head_dim,
        rms_norm_eps=cfg.rms_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        attention_bias=False,
    )
    qcfg._attn_implementation = "eager"
    hf_attn = Qwen3Attention(qcfg, 0).eval()
    sd = {k: v for k, v in layer.self_attn.state_dict().items()}
    sd["q_norm.weight"] = sd.pop("q_layernorm.weight")
    sd["k_norm.weight"] = sd.pop("k_layernorm.weight")
    hf_attn.load_state_dict(sd, strict=True)
    b, s = 2, 8
    x = torch.randn(b, s, cfg.hidden_size, generator=GEN)
    pos = torch.arange(s)[None].expand(b, -1)
    with torch.no_grad():
        cos, sin = Qwen3RotaryEmbedding(qcfg)(x, pos)
        mask = torch.full((s, s), float("-inf")).triu(1)[None, None]
        want = hf_attn(x, (cos, sin), mask)[0]
        got = layer.self_attn(x, cos[0], sin[0])[0]
    close("sigma_v2 attention vs HF Qwen3Attention", got, want)
    check_cache("sigma_v2", model)

    dcfg = DeepseekV3Config(
        hidden_size=cfg.hidden_size,
        moe_intermediate_size=cfg.moe_intermediate_size,
        n_routed_experts=cfg.n_routed_experts,
        num_experts_per_tok=cfg.top_k,
        n_shared_experts=cfg.n_shared_experts,
        n_group=1,
        topk_group=1,
        norm_topk_prob=cfg.norm_topk_prob,
        routed_scaling_factor=cfg.routed_scaling_factor,
    )
    hf_moe = DeepseekV3MoE(dcfg).eval()
    mine = layer.mlp
    with torch.no_grad():
        hf_moe.gate.weight.copy_(mine.gate.weight)
        hf_moe.gate.e_score_correction_bias.copy_(mine.gate.e_score_correction_bias)
        for e, ex in enumerate(mine.experts):
            hf_moe.experts.gate_up_proj[e].copy_(torch.cat((ex.gate_proj.weight, ex.up_proj.weight), 0))
            hf_moe.experts.down_proj[e].copy_(ex.down_proj.weight)
        hf_moe.shared_experts.load_state_dict(mine.shared_experts.state_dict(), strict=False)
        close("sigma_v2 MoE vs HF DeepseekV3MoE (one group)", mine(x), hf_moe(x))


def check_sigma_v1() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    d = fixture_config("sigma_v1")
    plain = dict(d, num_key_heads=d["num_attention_heads"], num_value_heads=d["num_attention_heads"])
    plain.pop("aug_q_intermediate_size")
    model = SigmaV1ForCausalLM.from_dict(plain).eval()
    randomize_(model, GEN)
    cfg = model.cfg
    llama = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=cfg.vocab_size,
            hidden_size=cfg.hidden_size,
            intermediate_size=cfg.intermediate_size,
            num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads,
            num_key_value_heads=cfg.num_heads,
            head_dim=cfg.head_dim,
            rms_norm_eps=cfg.rms_norm_eps,
            rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
            tie_word_embeddings=False,
            attn_implementation="eager",
        )
    ).eval()
    llama.load_state_dict(model.state_dict(), strict=True)
    ids = torch.randint(0, cfg.vocab_size, (2, 10), generator=GEN)
    with torch.no_grad():
        close("sigma_v1 (nk = nv = nq, no aug-Q) vs HF Llama", model(ids)[0], llama(ids).logits)

    model = SigmaV1ForCausalLM.from_dict(d).eval()
    randomize_(model, GEN)
    cfg = model.cfg
    attn = model.model.layers[0].self_attn
    b, s = 2, 6
    x = torch.randn(b, s, cfg.hidden_size, generator=GEN)
    pos = torch.arange(s)
    with torch.no_grad():
        q0 = attn.q_proj(x)
        q = attn.q_down_proj(F.silu(attn.q_gate_proj(q0)) * attn.q_up_proj(q0))
        q = q.view(b, s, -1, cfg.head_dim).transpose(1, 2)
        k = attn.k_proj(x).view(b, s, -1, cfg.head_dim).transpose(1, 2)
        v = attn.v_proj(x).view(b, s, -1, cfg.head_dim).transpose(1, 2)
        qr, kr = rope_complex(q, pos, model.inv_freq), rope_complex(k, pos, model.inv_freq)
        want = attn.o_proj(loop_attention(qr, kr, v, cfg.head_dim**-0.5).transpose(1, 2).reshape(b, s, -1))
        ang = torch.cat([pos[:, None] * model.inv_freq[None]] * 2, -1)
        got = attn(x, ang.cos(), ang.sin())[0]
    close("sigma_v1 DiffQKV + aug-Q attention vs per-head loop", got, want)
    check_cache("sigma_v1", model)


def check_yarn() -> None:
    from transformers import AutoConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    for name, dim_key in (("qwen3_moe", "head_dim"), ("deepseek_v3", "qk_rope_head_dim")):
        kwargs = fixture_config(name)
        cfg = AutoConfig.for_model(kwargs.pop("model_type"), **kwargs)
        want, want_factor = ROPE_INIT_FUNCTIONS["yarn"](cfg, None)
        params = cfg.rope_parameters
        got, got_factor = rope_inv_freq({"rope_parameters": params}, getattr(cfg, dim_key), params["rope_theta"], name)
        close(f"{name} YaRN inv_freq vs HF", got, want.float(), 1e-6)
        if abs(got_factor - want_factor) > 1e-9:
            raise SystemExit(f"{name} YaRN attention factor {got_factor} != HF {want_factor}")


def main() -> None:
    torch.set_num_threads(1)
    check_grok()
    check_sigma_v2()
    check_sigma_v1()
    check_yarn()
    print("all reference cross-checks passed")


if __name__ == "__main__":
    main()
