"""Regenerate fwdbench's CPU-executor test fixtures (deterministic).

    /work/refenv/bin/python python/reference/make_fixtures.py --out tests/fixtures [--only NAME ...]

Each fixture directory holds config.json, model.safetensors (float32, Hub tensor names,
MoE experts un-fused, tied LM head omitted), input.json ({"input_ids": [[...], [...]]}) and
logits.safetensors ("logits", float32 [batch, seq, vocab], every position). HF families are
computed with the transformers classes in fp32 eager mode; Grok-1 and the two Sigma variants
with the references in this folder.

Every fixture is checked before it is written:
* routing margins: in every MoE layer the last chosen expert beats the first rejected one
  (and, for DeepSeek, the last kept group beats the first dropped one) by a clear gap, so an
  fp32 implementation with a different summation order picks the same experts; if a seed
  fails the check the next seed is tried (the seed used is recorded in the report);
* the logits are not trivial (spread, and the argmax differs across positions);
* round trip: the written config.json + model.safetensors are loaded into a fresh model
  (HF `from_pretrained` for HF families, so Hub names and un-fused experts are validated by
  HF's own loader) and must reproduce the logits.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Callable

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from grok1_ref import Grok1ForCausalLM, Grok1Moe  # noqa: E402
from sigma_v1_ref import SigmaV1ForCausalLM  # noqa: E402
from sigma_v2_ref import SigmaV2ForCausalLM, SigmaV2Router  # noqa: E402

BATCH = 2
# Routing margins wide enough that a bf16 engine (GPU check, rel-L2 2e-2) routes every
# token like the fp32 reference; override with FIXTURE_LOGIT_GAP / FIXTURE_SCORE_GAP.
LOGIT_GAP = float(os.environ.get("FIXTURE_LOGIT_GAP", "0.05"))  # k-th vs (k+1)-th router logit (softmax routers)
SCORE_GAP = float(os.environ.get("FIXTURE_SCORE_GAP", "0.01"))  # biased sigmoid scores (sigmoid routers)
ATTEMPTS = int(os.environ.get("FIXTURE_ATTEMPTS", "3000"))

# Keys HF writes into every config that say nothing about the model graph.
NOISE_KEYS = {
    "id2label",
    "label2id",
    "problem_type",
    "output_hidden_states",
    "output_attentions",
    "return_dict",
    "chunk_size_feed_forward",
    "is_encoder_decoder",
    "_name_or_path",
    "dtype",
    "torch_dtype",
    "use_cache",
    "output_router_logits",
    "router_aux_loss_coef",
    "initializer_range",
    "pretraining_tp",
}


# --------------------------------------------------------------------------------------
# weight initialisation


def _is_norm(name: str) -> bool:
    module = name.rsplit(".", 1)[0].rsplit(".", 1)[-1]
    return "norm" in module or module.startswith("ln_")


def _is_router(name: str) -> bool:
    return bool(re.search(r"(mlp|block_sparse_moe)\.gate\.weight$|shared_expert_gate\.weight$", name))


def _fan_in(name: str, shape: torch.Size) -> int:
    # GPT-2's Conv1D stores [in, out]; everything else is [.., out, in].
    if re.search(r"\.(c_attn|c_proj|c_fc)\.weight$", name):
        return shape[0]
    return shape[-1]


def randomize_(
    model: torch.nn.Module,
    gen: torch.Generator,
    emb_std: float = 0.3,
    router_std: float = 0.3,
    norm_means: dict[str, float] | None = None,
) -> None:
    """Give every weight a spread well above HF's 0.02 so the fixture exercises real numerics.

    Linear weights N(0, clamp(0.8/sqrt(fan_in), 0.08, 0.2)) (output rms ~0.8 x input rms),
    norm weights mean + N(0, 0.1) with mean 1 unless a `norm_means` regex matches the name,
    biases and correction biases N(0, 0.1), routers N(0, router_std) (routing varies across
    tokens), embeddings N(0, emb_std), lm_head N(0, 0.25).
    """
    tensors = dict(model.named_parameters())
    for name, buf in model.named_buffers():
        if name.endswith("e_score_correction_bias"):
            tensors[name] = buf
    with torch.no_grad():
        for name in sorted(tensors):
            t = tensors[name]
            noise = torch.randn(t.shape, generator=gen, dtype=torch.float32)
            if name.endswith("e_score_correction_bias"):
                t.copy_(0.1 * noise)
            elif _is_norm(name) and name.endswith("weight"):
                mean = next((m for pat, m in (norm_means or {}).items() if re.search(pat, name)), 1.0)
                t.copy_(mean + 0.1 * noise)
            elif name.endswith("bias"):
                t.copy_(0.1 * noise)
            elif _is_router(name):
                t.copy_(router_std * noise)
            elif re.search(r"(wte|wpe|embed_tokens)\.weight$", name):
                t.copy_(emb_std * noise)
            elif name.endswith("lm_head.weight"):
                t.copy_(0.25 * noise)
            else:
                std = min(max(0.8 / math.sqrt(_fan_in(name, t.shape)), 0.08), 0.2)
                t.copy_(std * noise)


# --------------------------------------------------------------------------------------
# routing margin checks (fed by forward hooks on the router modules)


class RoutingProbe:
    """Collects, per MoE layer, the smallest decision gap and the distinct expert sets."""

    def __init__(self):
        self.layers: list[dict] = []

    def _record(self, gap: float, chosen: torch.Tensor, threshold: float) -> None:
        sets = {tuple(sorted(r)) for r in chosen.tolist()}
        self.layers.append({"min_gap": gap, "threshold": threshold, "distinct_sets": len(sets)})

    def softmax_topk(self, logits: torch.Tensor, k: int) -> None:
        s = logits.float().sort(dim=-1, descending=True).values
        self._record((s[:, k - 1] - s[:, k]).min().item(), logits.topk(k, dim=-1).indices, LOGIT_GAP)

    def grouped_sigmoid_topk(self, choice: torch.Tensor, k: int, n_group: int, topk_group: int) -> None:
        """DeepSeek-V3 noaux_tc selection on biased scores `choice [T, E]` (one group = plain top-k)."""
        t, e = choice.shape
        gaps = []
        masked = choice
        if n_group > 1:
            grouped = choice.view(t, n_group, e // n_group)
            group_score = grouped.topk(2, dim=-1).values.sum(-1)
            gs = group_score.sort(dim=-1, descending=True).values
            if topk_group < n_group:
                gaps.append((gs[:, topk_group - 1] - gs[:, topk_group]).min().item())
            keep = torch.zeros_like(group_score, dtype=torch.bool)
            keep.scatter_(1, group_score.topk(topk_group, dim=-1).indices, True)
            masked = grouped.masked_fill(~keep[..., None], float("-inf")).view(t, e)
        s = masked.sort(dim=-1, descending=True).values
        gaps.append((s[:, k - 1] - s[:, k]).min().item())
        self._record(min(gaps), masked.topk(k, dim=-1).indices, SCORE_GAP)

    def ok(self) -> bool:
        return all(layer["min_gap"] > layer["threshold"] and layer["distinct_sets"] > 2 for layer in self.layers)


def attach_probe(model: torch.nn.Module) -> tuple[RoutingProbe, list]:
    """Hook every router of the model (HF or reference) so a forward fills a RoutingProbe."""
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3TopkRouter
    from transformers.models.qwen2_moe.modeling_qwen2_moe import Qwen2MoeTopKRouter
    from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeTopKRouter

    probe, handles = RoutingProbe(), []

    def flat(x):
        return x.reshape(-1, x.shape[-1]).float()

    for module in model.modules():
        if isinstance(module, (Qwen2MoeTopKRouter, Qwen3MoeTopKRouter)):

            def hook(m, args, _out):
                probe.softmax_topk(flat(args[0]) @ m.weight.float().t(), m.top_k)

        elif isinstance(module, DeepseekV3TopkRouter):

            def hook(m, args, _out):
                scores = torch.sigmoid(flat(args[0]) @ m.weight.float().t()) + m.e_score_correction_bias
                probe.grouped_sigmoid_topk(scores, m.top_k, m.num_group, m.topk_group)

        elif isinstance(module, Grok1Moe):

            def hook(m, args, _out):
                logits = flat(args[0]) @ m.gate.weight.float().t()
                if m.cfg.router_softcap is not None:
                    logits = m.cfg.router_softcap * torch.tanh(logits / m.cfg.router_softcap)
                probe.softmax_topk(logits, m.cfg.top_k)

        elif isinstance(module, SigmaV2Router):

            def hook(m, args, out):
                probe.grouped_sigmoid_topk(out[0], m.cfg.top_k, 1, 1)

        else:
            continue
        handles.append(module.register_forward_hook(hook))
    return probe, handles


# --------------------------------------------------------------------------------------
# fixture definitions


@dataclass
class Fixture:
    name: str
    kind: str  # "hf" or "ref"
    seq: int
    config: dict  # the config.json to write (HF: kwargs for the config class, see build)
    ref_class: type | None = None
    post_config: Callable[[dict], dict] | None = None  # HF only: edit to_dict() output
    init: dict = field(default_factory=dict)  # keyword overrides for randomize_


def _legacy_rope(d: dict) -> dict:
    """Write RoPE in the Hub spelling (rope_theta + rope_scaling) instead of v5 rope_parameters."""
    params = dict(d.pop("rope_parameters"))
    d["rope_theta"] = params.pop("rope_theta")
    kind = params.pop("rope_type", None) or params.pop("type", "default")
    params.pop("type", None)
    d["rope_scaling"] = None if kind == "default" else {"type": kind, **params}
    return d


def _qwen_moe_hub_keys(d: dict) -> dict:
    # Hub Qwen-MoE configs spell the expert count num_experts (HF aliases it to num_local_experts).
    if "num_local_experts" in d:
        d["num_experts"] = d.pop("num_local_experts")
    return d


def _deepseek_hub_keys(d: dict) -> dict:
    # head_dim / qk_head_dim are attributes HF derives (head_dim = qk_rope_head_dim); Hub
    # DeepSeek configs do not carry them, so neither do we.
    d.pop("head_dim", None)
    d.pop("qk_head_dim", None)
    d["scoring_func"] = "sigmoid"  # what HF's DeepseekV3 router always computes
    d["topk_method"] = "noaux_tc"
    d["moe_layer_freq"] = 1
    return _legacy_rope(d)


def fixtures() -> list[Fixture]:
    common = dict(bos_token_id=0, eos_token_id=1, pad_token_id=None)
    return [
        Fixture(
            "gpt2",
            "hf",
            10,
            dict(
                model_type="gpt2",
                architectures=["GPT2LMHeadModel"],
                vocab_size=256,
                n_embd=64,
                n_layer=2,
                n_head=4,
                n_positions=32,
                n_inner=None,
                activation_function="gelu_new",
                layer_norm_epsilon=1e-5,
                tie_word_embeddings=True,
                **common,
            ),
        ),
        Fixture(
            "qwen2",
            "hf",
            9,
            dict(
                model_type="qwen2",
                architectures=["Qwen2ForCausalLM"],
                vocab_size=260,
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                max_position_embeddings=64,
                rms_norm_eps=1e-6,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                tie_word_embeddings=False,
                use_sliding_window=False,
                **common,
            ),
            post_config=_legacy_rope,
        ),
        Fixture(
            "qwen3",
            "hf",
            11,
            dict(
                model_type="qwen3",
                architectures=["Qwen3ForCausalLM"],
                vocab_size=264,
                hidden_size=64,
                intermediate_size=96,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                head_dim=24,
                max_position_embeddings=64,
                rms_norm_eps=1e-6,
                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                tie_word_embeddings=False,
                attention_bias=False,
                use_sliding_window=False,
                **common,
            ),
        ),
        Fixture(
            "qwen2_moe",
            "hf",
            12,
            dict(
                model_type="qwen2_moe",
                architectures=["Qwen2MoeForCausalLM"],
                vocab_size=268,
                hidden_size=64,
                intermediate_size=48,
                moe_intermediate_size=16,
                shared_expert_intermediate_size=24,
                num_experts=6,
                num_experts_per_tok=2,
                norm_topk_prob=False,
                decoder_sparse_step=1,
                mlp_only_layers=[1],
                qkv_bias=True,
                num_hidden_layers=3,
                num_attention_heads=4,
                num_key_value_heads=2,
                max_position_embeddings=64,
                rms_norm_eps=1e-6,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                tie_word_embeddings=False,
                use_sliding_window=False,
                **common,
            ),
            post_config=lambda d: _legacy_rope(_qwen_moe_hub_keys(d)),
        ),
        Fixture(
            "qwen3_moe",
            "hf",
            10,
            dict(
                model_type="qwen3_moe",
                architectures=["Qwen3MoeForCausalLM"],
                vocab_size=272,
                hidden_size=64,
                intermediate_size=96,
                moe_intermediate_size=16,
                num_experts=8,
                num_experts_per_tok=2,
                norm_topk_prob=True,
                decoder_sparse_step=1,
                mlp_only_layers=[],
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                head_dim=24,
                # Small theta and original length put the YaRN ramp inside the rotary dims
                # (pair 0 untouched, pairs 1-2 blended, 3+ interpolated), so all branches run.
                max_position_embeddings=64,
                rope_parameters={
                    "rope_type": "yarn",
                    "rope_theta": 100.0,
                    "factor": 4.0,
                    "original_max_position_embeddings": 16,
                },
                rms_norm_eps=1e-6,
                tie_word_embeddings=False,
                attention_bias=False,
                use_sliding_window=False,
                **common,
            ),
            post_config=_qwen_moe_hub_keys,
        ),
        Fixture(
            "deepseek_v3",
            "hf",
            11,
            dict(
                model_type="deepseek_v3",
                architectures=["DeepseekV3ForCausalLM"],
                vocab_size=276,
                hidden_size=64,
                intermediate_size=96,
                moe_intermediate_size=16,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=4,
                q_lora_rank=32,
                kv_lora_rank=32,
                qk_nope_head_dim=16,
                qk_rope_head_dim=8,
                v_head_dim=16,
                n_routed_experts=8,
                n_group=4,
                topk_group=2,
                num_experts_per_tok=2,
                n_shared_experts=1,
                routed_scaling_factor=2.5,
                norm_topk_prob=True,
                first_k_dense_replace=1,
                max_position_embeddings=64,
                rope_parameters={
                    "rope_type": "yarn",
                    "rope_theta": 10000.0,
                    "factor": 4.0,
                    "original_max_position_embeddings": 16,
                    "mscale": 1.0,
                    "mscale_all_dim": 1.0,
                    "beta_fast": 32,
                    "beta_slow": 1,
                },
                rope_interleave=True,
                rms_norm_eps=1e-6,
                tie_word_embeddings=False,
                attention_bias=False,
                **common,
            ),
            post_config=_deepseek_hub_keys,
        ),
        Fixture(
            "deepseek_v2_lite_style",
            "hf",
            9,
            dict(
                model_type="deepseek_v3",
                architectures=["DeepseekV3ForCausalLM"],
                vocab_size=280,
                hidden_size=64,
                intermediate_size=80,
                moe_intermediate_size=16,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=4,
                q_lora_rank=None,
                kv_lora_rank=32,
                qk_nope_head_dim=16,
                qk_rope_head_dim=8,
                v_head_dim=16,
                n_routed_experts=8,
                n_group=1,
                topk_group=1,
                num_experts_per_tok=3,
                n_shared_experts=2,
                routed_scaling_factor=1.0,
                norm_topk_prob=False,
                first_k_dense_replace=1,
                max_position_embeddings=64,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                rope_interleave=True,
                rms_norm_eps=1e-6,
                tie_word_embeddings=False,
                attention_bias=False,
                **common,
            ),
            post_config=_deepseek_hub_keys,
        ),
        Fixture(
            "grok1",
            "ref",
            10,
            {
                "architectures": ["Grok1ModelForCausalLM"],
                "model_type": "mixtral",
                "vocab_size": 284,
                "hidden_size": 64,
                "intermediate_size": 16,
                "moe_intermediate_size": 16,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "head_dim": 24,
                "num_local_experts": 8,
                "num_experts_per_tok": 2,
                "rms_norm_eps": 1e-5,
                "rope_theta": 10000.0,
                "max_position_embeddings": 64,
                "embedding_multiplier_scale": 8.0,
                "output_multiplier_scale": 0.5773502691896257,
                "attn_logit_softcapping": 1.5,
                "attn_logit_softcapping_method": "tanh",
                "router_logit_softcapping": 2.0,
                "hidden_act": "gelu",
                "tie_word_embeddings": False,
                "rope_rotate_half_dims": False,
                "residual_moe": False,
            },
            ref_class=Grok1ForCausalLM,
            # The erf and tanh GELUs differ by at most ~2e-4 relative per expert output, so the
            # MoE branch is made dominant (post-MoE sandwich norm ~2, small embeddings) for the
            # GELU flavour to show above the 1e-4 check tolerance (see grok_cap_sensitivity).
            init=dict(emb_std=0.1, router_std=0.8, norm_means={r"post_moe_norm": 2.0}),
        ),
        Fixture(
            "grok1_hpcai",
            "ref",
            9,
            {
                "architectures": ["Grok1ModelForCausalLM"],
                "model_type": "grok-1",
                "vocab_size": 288,
                "hidden_size": 64,
                "intermediate_size": 24,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "num_experts": 8,
                "num_experts_per_tok": 2,
                # Deliberately not 1/sqrt(head_dim) = 0.25: the dialect's logit scale is this key.
                "attn_output_multiplier": 0.2,
                "max_attn_value": 1.5,
                "embedding_multiplier_scale": 8.0,
                "output_multiplier_scale": 0.5773502691896257,
                "max_position_embeddings": 64,
                "rms_norm_eps": 1e-5,
                "hidden_act": "gelu_pytorch_tanh",
                "tie_word_embeddings": True,
            },
            ref_class=Grok1ForCausalLM,
            # The erf and tanh GELUs differ by at most ~2e-4 relative per expert output, so the
            # MoE branch is made dominant (post-MoE sandwich norm ~2) for the GELU flavour
            # to show above the 1e-4 check tolerance (see grok_cap_sensitivity).
            init=dict(emb_std=0.3, router_std=0.8, norm_means={r"post_moe_norm": 2.0}),
        ),
        Fixture(
            "sigma_v2",
            "ref",
            10,
            {
                "architectures": ["SigmaV2ForCausalLM"],
                "model_type": "sigma",
                "vocab_size": 292,
                "hidden_size": 64,
                "intermediate_size": 64,
                "moe_intermediate_size": 16,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "head_dim": 24,
                "n_routed_experts": 8,
                "num_experts_per_tok": 2,
                "n_shared_experts": 1,
                "first_k_dense_replace": 0,
                "norm_topk_prob": True,
                "routed_scaling_factor": 1.5,
                "scoring_func": "sigmoid",
                "topk_method": "noaux_tc",
                "qk_layernorm": True,
                "attention_bias": False,
                "hidden_act": "silu",
                "rms_norm_eps": 1e-6,
                "rope_theta": 10000.0,
                "rope_scaling": None,
                "max_position_embeddings": 64,
                "tie_word_embeddings": False,
            },
            ref_class=SigmaV2ForCausalLM,
        ),
        Fixture(
            "sigma_v1",
            "ref",
            12,
            {
                "architectures": ["SigmaV1ForCausalLM"],
                "model_type": "sigma_v1",
                "vocab_size": 296,
                "hidden_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 8,
                "num_key_heads": 2,
                "num_value_heads": 4,
                "head_dim": 8,
                "aug_q_intermediate_size": 48,
                "intermediate_size": 64,
                "hidden_act": "silu",
                "rms_norm_eps": 1e-6,
                "rope_theta": 50000.0,
                "max_position_embeddings": 64,
                "tie_word_embeddings": False,
            },
            ref_class=SigmaV1ForCausalLM,
        ),
    ]


# --------------------------------------------------------------------------------------
# building, saving, reloading


def build_hf(fx: Fixture):
    from transformers import AutoConfig, AutoModelForCausalLM

    kwargs = dict(fx.config)
    model_type = kwargs.pop("model_type")
    cfg = AutoConfig.for_model(model_type, **kwargs)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager", dtype=torch.float32)
    return model.eval()


def hf_config_json(fx: Fixture, model) -> dict:
    d = model.config.to_dict()
    for key in NOISE_KEYS:
        d.pop(key, None)
    d["architectures"] = fx.config["architectures"]
    d["torch_dtype"] = "float32"
    if fx.post_config is not None:
        d = fx.post_config(d)
    return dict(sorted(d.items()))


_FUSED_GATE_UP = re.compile(r"^(.*\.experts)\.gate_up_proj$")
_FUSED_DOWN = re.compile(r"^(.*\.experts)\.down_proj$")


def hub_state_dict(model: torch.nn.Module, tied: bool) -> dict[str, torch.Tensor]:
    """State dict in Hub layout: per-expert gate/up/down matrices, tied LM head left out."""
    out = {}
    for name, t in model.state_dict().items():
        t = t.detach().to(torch.float32).contiguous()
        if tied and name == "lm_head.weight":
            continue
        m = _FUSED_GATE_UP.match(name)
        if m and t.dim() == 3:
            inter = t.shape[1] // 2  # HF concatenates [gate; up] along dim 1
            for e in range(t.shape[0]):
                out[f"{m.group(1)}.{e}.gate_proj.weight"] = t[e, :inter].clone()
                out[f"{m.group(1)}.{e}.up_proj.weight"] = t[e, inter:].clone()
            continue
        m = _FUSED_DOWN.match(name)
        if m and t.dim() == 3:
            for e in range(t.shape[0]):
                out[f"{m.group(1)}.{e}.down_proj.weight"] = t[e].clone()
            continue
        out[name] = t.clone()
    return out


def run_logits(model, fx: Fixture, input_ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        if fx.kind == "hf":
            return model(input_ids=input_ids, use_cache=False).logits.float()
        return model(input_ids)[0].float()


def reload(fx: Fixture, directory: str):
    """A fresh model from the written files only (what the Rust side also sees)."""
    if fx.kind == "hf":
        from transformers import AutoModelForCausalLM

        model, info = AutoModelForCausalLM.from_pretrained(
            directory, attn_implementation="eager", dtype=torch.float32, output_loading_info=True
        )
        problems = {k: v for k, v in info.items() if v and k != "mismatched_keys"} | (
            {"mismatched_keys": info["mismatched_keys"]} if info.get("mismatched_keys") else {}
        )
        if problems:
            raise RuntimeError(f"{fx.name}: HF reload of {directory} reported {problems}")
        return model.eval()
    with open(os.path.join(directory, "config.json")) as f:
        model = fx.ref_class.from_dict(json.load(f))
    model.load_state_dict(load_file(os.path.join(directory, "model.safetensors")), strict=True)
    return model.eval()


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def grok_cap_sensitivity(model: Grok1ForCausalLM, input_ids: torch.Tensor, reference: torch.Tensor) -> dict:
    """How much each soft-cap / GELU switch moves the logits (each must matter in the fixture)."""
    cfg = model.cfg
    out = {}
    for field, alt in (("attn_softcap", None), ("router_softcap", 2.0 if cfg.router_softcap is None else None)):
        saved = getattr(cfg, field)
        setattr(cfg, field, alt)
        with torch.no_grad():
            out[f"{field}->{alt}"] = rel_l2(model(input_ids)[0], reference)
        setattr(cfg, field, saved)
    saved = cfg.gelu
    for expert_layer in model.model.layers:
        for ex in expert_layer.block_sparse_moe.experts:
            ex.flavour = "tanh" if saved == "erf" else "erf"
    with torch.no_grad():
        out["gelu_flavour_swapped"] = rel_l2(model(input_ids)[0], reference)
    for expert_layer in model.model.layers:
        for ex in expert_layer.block_sparse_moe.experts:
            ex.flavour = saved
    return out


def make_one(fx: Fixture, out_dir: str, base_seed: int) -> dict:
    directory = os.path.join(out_dir, fx.name)
    os.makedirs(directory, exist_ok=True)
    for attempt in range(ATTEMPTS):
        seed = base_seed + attempt
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)  # HF's own init draws from the global RNG before we overwrite it
        if fx.kind == "hf":
            model = build_hf(fx)
        else:
            model = fx.ref_class.from_dict(dict(fx.config)).eval()
        randomize_(model, gen, **fx.init)
        vocab = model.config.vocab_size if fx.kind == "hf" else model.cfg.vocab_size
        input_ids = torch.randint(0, vocab, (BATCH, fx.seq), generator=gen)
        probe, handles = attach_probe(model)
        logits = run_logits(model, fx, input_ids)
        for h in handles:
            h.remove()
        top1 = logits.argmax(-1)
        if probe.ok() and top1.unique().numel() >= fx.seq // 2:
            break
    else:
        raise RuntimeError(f"{fx.name}: no seed in {ATTEMPTS} gave clear routing margins; loosen the thresholds")

    if fx.kind == "hf":
        config = hf_config_json(fx, model)
        tied = bool(model.config.tie_word_embeddings)
    else:
        config = dict(fx.config)
        tied = bool(model.cfg.tie_word_embeddings)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    weights = hub_state_dict(model, tied)
    save_file(weights, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(directory, "input.json"), "w") as f:
        json.dump({"input_ids": input_ids.tolist()}, f)
        f.write("\n")
    save_file({"logits": logits.contiguous()}, os.path.join(directory, "logits.safetensors"))

    again = run_logits(reload(fx, directory), fx, input_ids)
    roundtrip = rel_l2(again, logits)
    if roundtrip > 1e-6:
        raise RuntimeError(f"{fx.name}: reloading the written files changed the logits (rel-L2 {roundtrip:.2e})")

    report = {
        "name": fx.name,
        "seed": seed,
        "input": list(input_ids.shape),
        "logits": list(logits.shape),
        "logits_std": round(logits.std().item(), 3),
        "distinct_top1": int(top1.unique().numel()),
        "roundtrip_rel_l2": roundtrip,
        "routing": [
            {"min_gap": round(layer["min_gap"], 5), "distinct_sets": layer["distinct_sets"]} for layer in probe.layers
        ],
        "tensors": len(weights),
        "bytes": {f: os.path.getsize(os.path.join(directory, f)) for f in sorted(os.listdir(directory))},
    }
    if fx.ref_class is Grok1ForCausalLM:
        sens = grok_cap_sensitivity(model, input_ids, logits)
        report["switch_sensitivity_rel_l2"] = {k: round(v, 4) for k, v in sens.items()}
        caps = [v for k, v in sens.items() if "softcap" in k]
        if min(caps) < 1e-2 or sens["gelu_flavour_swapped"] < 1.5e-4:
            raise RuntimeError(f"{fx.name}: a soft-cap or GELU switch barely changes the logits: {sens}")
    return report


def make_tokenizer(out_dir: str) -> dict:
    """A tiny BPE tokenizer (whitespace pre-tokenizer, vocab < 256) plus a prompt and its ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    corpus = [
        "The quick brown fox jumps over the lazy dog.",
        "A forward pass maps token ids to logits, one position at a time.",
        "Experts are chosen by a router; the top two experts process each token.",
        "Rotary embeddings rotate query and key vectors by position.",
        "The benchmark measures prefill and decode latency on the GPU.",
        "Small models make fast tests, and fast tests run on every commit.",
    ]
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=200, special_tokens=["[UNK]", "[BOS]", "[EOS]"], show_progress=False)
    tok.train_from_iterator(corpus, trainer=trainer)
    directory = os.path.join(out_dir, "tokenizer")
    os.makedirs(directory, exist_ok=True)
    tok.save(os.path.join(directory, "tokenizer.json"))
    # No trailing newline, so "the file's bytes" and "the file's stripped text" encode the same.
    prompt = "The router chooses two experts for each token, and the benchmark measures decode latency."
    with open(os.path.join(directory, "prompt.txt"), "w") as f:
        f.write(prompt)
    reloaded = Tokenizer.from_file(os.path.join(directory, "tokenizer.json"))
    ids = reloaded.encode(prompt).ids
    with open(os.path.join(directory, "expected_ids.json"), "w") as f:
        json.dump({"prompt_file": "prompt.txt", "input_ids": ids}, f)
        f.write("\n")
    return {"name": "tokenizer", "vocab_size": reloaded.get_vocab_size(), "prompt_tokens": len(ids)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="fixture root, e.g. tests/fixtures")
    parser.add_argument("--only", nargs="*", help="fixture names to regenerate (default: all)")
    parser.add_argument("--seed", type=int, default=1234, help="base seed; fixture i starts at seed + 1000*i")
    args = parser.parse_args()

    torch.set_num_threads(1)  # deterministic reductions, and the build machine is shared
    torch.use_deterministic_algorithms(True)
    known = fixtures()
    names = [fx.name for fx in known] + ["tokenizer"]
    wanted = args.only or names
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        print(f"error: unknown fixture(s) {unknown}; known: {names}", file=sys.stderr)
        return 2
    reports = []
    for i, fx in enumerate(known):
        if fx.name in wanted:
            reports.append(make_one(fx, args.out, args.seed + 1000 * i))
            print(json.dumps(reports[-1]), flush=True)
    if "tokenizer" in wanted:
        reports.append(make_tokenizer(args.out))
        print(json.dumps(reports[-1]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
