//! The typed model description every other module works from.
//!
//! `hf.rs` turns an HF-style `config.json` (any of the dialects in models.md) into a
//! [`ModelConfig`]; the layer graphs in `model/` read nothing else. Every field is
//! resolved here (head_dim, layer types, softmax scale, RoPE frequencies), so no later
//! stage re-derives a value from raw keys.

use serde::Serialize;

/// The model families fwdbench implements, one per layer graph in `model/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// GPT-2-style dense transformer (GPT-3 sizes), `model_type: gpt2`.
    Gpt3,
    /// Grok-1: sandwich RMSNorms, soft-capped attention, GELU-gated 8-expert MoE.
    Grok1,
    /// Qwen2 / Qwen2.5 dense (q/k/v biases).
    Qwen2,
    /// Qwen3 dense (QK-norm, no biases).
    Qwen3,
    /// Qwen2-MoE (softmax router, shared expert with sigmoid gate).
    Qwen2Moe,
    /// Qwen3-MoE (QK-norm, softmax router with renormalisation).
    Qwen3Moe,
    /// DeepSeek-V3 (and V2-style MLA without q_lora): MLA attention + DeepSeekMoE.
    DeepseekV3,
    /// Sigma V2: GQA + QK-norm + sigmoid-routed MoE.
    SigmaV2,
    /// Sigma v1: DiffQKV attention (separate K and V head counts, augmented Q), dense.
    SigmaV1,
    /// Llama 2 / 3.x dense (GQA, no biases by default, Llama 3 RoPE scaling).
    Llama,
    /// Mixtral: Llama attention with a softmax top-k MoE in every layer, no shared expert.
    Mixtral,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Gpt3 => "gpt3",
            Family::Grok1 => "grok1",
            Family::Qwen2 => "qwen2",
            Family::Qwen3 => "qwen3",
            Family::Qwen2Moe => "qwen2_moe",
            Family::Qwen3Moe => "qwen3_moe",
            Family::DeepseekV3 => "deepseek_v3",
            Family::SigmaV2 => "sigma_v2",
            Family::SigmaV1 => "sigma_v1",
            Family::Llama => "llama",
            Family::Mixtral => "mixtral",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NormKind {
    /// Mean/variance normalisation with weight and bias (GPT).
    LayerNorm,
    /// `x / sqrt(mean(x^2) + eps) * w`, statistics in fp32.
    RmsNorm,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct NormConfig {
    pub kind: NormKind,
    pub eps: f32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Silu,
    /// tanh approximation (`gelu_new`, `gelu_pytorch_tanh`, JAX default).
    GeluTanh,
    /// exact erf GELU (`gelu`).
    GeluErf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RopeStyle {
    /// NeoX: the first half of the rotary dims rotates against the second half.
    RotateHalf,
    /// GPT-J: adjacent pairs (x0,x1), (x2,x3), ... rotate.
    Interleaved,
}

/// YaRN context extension, resolved the way HF `_compute_yarn_parameters` does.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct YarnConfig {
    pub factor: f64,
    pub original_max_position_embeddings: usize,
    pub beta_fast: f64,
    pub beta_slow: f64,
    /// Multiplier on cos and sin, already resolved from `attention_factor` /
    /// `mscale` / `mscale_all_dim` by the config parser.
    pub attention_factor: f64,
    /// Round the correction range to whole dims (HF `truncate`, default true).
    pub truncate: bool,
}

/// Llama 3.x frequency-dependent scaling (HF `_compute_llama3_parameters`): wavelengths
/// longer than `original / low_freq_factor` are divided by `factor`, shorter than
/// `original / high_freq_factor` kept, and those between interpolated smoothly.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Llama3Config {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: usize,
}

impl Llama3Config {
    /// One pair's scaled inverse frequency.
    pub fn scale(&self, inv_freq: f64) -> f64 {
        let original = self.original_max_position_embeddings as f64;
        let wavelength = 2.0 * std::f64::consts::PI / inv_freq;
        if wavelength < original / self.high_freq_factor {
            inv_freq
        } else if wavelength > original / self.low_freq_factor {
            inv_freq / self.factor
        } else {
            let smooth =
                (original / wavelength - self.low_freq_factor) / (self.high_freq_factor - self.low_freq_factor);
            (1.0 - smooth) * inv_freq / self.factor + smooth * inv_freq
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum RopeScaling {
    None,
    Yarn(YarnConfig),
    Llama3(Llama3Config),
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RopeConfig {
    pub theta: f64,
    pub style: RopeStyle,
    /// Number of leading dims of the (rope part of the) head that rotate.
    pub rotary_dim: usize,
    pub scaling: RopeScaling,
}

/// YaRN's `0.1 * m * ln(s) + 1` (1 when `s <= 1`).
pub fn yarn_mscale(scale: f64, m: f64) -> f64 {
    if scale <= 1.0 {
        1.0
    } else {
        0.1 * m * scale.ln() + 1.0
    }
}

impl RopeConfig {
    /// The unscaled frequencies `theta^(-2i/rotary_dim)`, `i in 0..rotary_dim/2`.
    pub fn base_inv_freqs(&self) -> Vec<f64> {
        let dim = self.rotary_dim as f64;
        (0..self.rotary_dim / 2).map(|i| self.theta.powf(-(2.0 * i as f64) / dim)).collect()
    }

    /// YaRN's ramp bounds `(low, high)` over pair indices (HF `find_correction_range`): pairs
    /// at or below `low` keep their frequency, pairs at or above `high` are divided by the
    /// factor, pairs between interpolate linearly. None without YaRN.
    pub fn yarn_correction_range(&self) -> Option<(f64, f64)> {
        let RopeScaling::Yarn(y) = self.scaling else {
            return None;
        };
        let dim = self.rotary_dim as f64;
        let correction_dim = |rotations: f64| {
            let context_over_wavelength =
                y.original_max_position_embeddings as f64 / (rotations * 2.0 * std::f64::consts::PI);
            dim * context_over_wavelength.ln() / (2.0 * self.theta.ln())
        };
        let (mut low, mut high) = (correction_dim(y.beta_fast), correction_dim(y.beta_slow));
        if y.truncate {
            low = low.floor();
            high = high.ceil();
        }
        Some((low.max(0.0), high.min(dim - 1.0)))
    }

    /// Inverse frequencies for pair index `i in 0..rotary_dim/2`, YaRN-corrected (HF
    /// `_compute_yarn_parameters`) or Llama-3-scaled when set.
    pub fn inv_freqs(&self) -> Vec<f64> {
        let base = self.base_inv_freqs();
        if let RopeScaling::Llama3(l) = self.scaling {
            return base.iter().map(|&f| l.scale(f)).collect();
        }
        let (RopeScaling::Yarn(y), Some((low, high))) = (self.scaling, self.yarn_correction_range()) else {
            return base;
        };
        // HF nudges an empty range to avoid dividing by zero.
        let high = if high == low { high + 0.001 } else { high };
        base.iter()
            .enumerate()
            .map(|(i, f)| {
                let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
                // ramp 0 (high-frequency dims) keeps f; ramp 1 interpolates f/factor.
                f / y.factor * ramp + f * (1.0 - ramp)
            })
            .collect()
    }

    /// Multiplier applied to cos and sin ("attention_factor").
    pub fn attention_factor(&self) -> f64 {
        match self.scaling {
            RopeScaling::None | RopeScaling::Llama3(_) => 1.0,
            RopeScaling::Yarn(y) => y.attention_factor,
        }
    }
}

/// Grouped-query attention (MHA when kv heads == heads).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GqaConfig {
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub qkv_bias: bool,
    pub o_bias: bool,
    /// Per-head RMSNorm on q and k before RoPE (Qwen3, Sigma V2).
    pub qk_norm: bool,
    /// `cap * tanh(s / cap)` after scaling (Grok).
    pub logit_softcap: Option<f32>,
    /// None: no rotary embedding (GPT uses learned positions).
    pub rope: Option<RopeConfig>,
    pub softmax_scale: f32,
}

/// Multi-head latent attention (DeepSeek V2/V3).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MlaConfig {
    pub num_heads: usize,
    /// None: q is a plain projection `[H, nh*(dn+dr)]` (V2-Lite).
    pub q_lora_rank: Option<usize>,
    pub kv_lora_rank: usize,
    pub qk_nope_head_dim: usize,
    pub qk_rope_head_dim: usize,
    pub v_head_dim: usize,
    pub rope: RopeConfig,
    pub softmax_scale: f32,
}

impl MlaConfig {
    pub fn qk_head_dim(&self) -> usize {
        self.qk_nope_head_dim + self.qk_rope_head_dim
    }
    /// Width of one cached token: latent plus the shared rope key (576 for V3).
    pub fn cache_dim(&self) -> usize {
        self.kv_lora_rank + self.qk_rope_head_dim
    }
}

/// Sigma v1 DiffQKV attention: separate K and V head counts, optional augmented Q.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiffQkvConfig {
    pub num_heads: usize,
    pub num_k_heads: usize,
    pub num_v_heads: usize,
    pub head_dim: usize,
    /// Width of the augmented-Q gated MLP; None: no augmented Q.
    pub aug_q_intermediate: Option<usize>,
    pub rope: RopeConfig,
    pub softmax_scale: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttentionConfig {
    Gqa(GqaConfig),
    Mla(MlaConfig),
    DiffQkv(DiffQkvConfig),
}

impl AttentionConfig {
    pub fn num_heads(&self) -> usize {
        match self {
            AttentionConfig::Gqa(a) => a.num_heads,
            AttentionConfig::Mla(a) => a.num_heads,
            AttentionConfig::DiffQkv(a) => a.num_heads,
        }
    }
}

/// A dense feed-forward block.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MlpConfig {
    pub intermediate_size: usize,
    pub activation: Activation,
    /// `down(act(gate x) * up x)` when true; `fc2(act(fc1 x + b1)) + b2` when false (GPT).
    pub gated: bool,
    pub bias: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scoring {
    Softmax,
    Sigmoid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupScore {
    /// Sum of the two best (biased) scores in the group (DeepSeek-V3 noaux_tc).
    Top2Sum,
    /// Best score in the group (DeepSeek-V2 group_limited_greedy).
    Max,
}

/// How a token picks its experts and weights them. Covers every router of models.md:
/// softmax top-k with or without renormalisation (Qwen, Grok with its soft-cap) and
/// sigmoid + correction bias + group-limited top-k + scaling (DeepSeek-V3, Sigma V2).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouterConfig {
    pub scoring: Scoring,
    /// `cap * tanh(logit / cap)` before scoring (SGLang's Grok router).
    pub logit_softcap: Option<f32>,
    /// Renormalise the k selected weights to sum to one (`+1e-20` for sigmoid).
    pub norm_topk_prob: bool,
    /// `e_score_correction_bias` added for selection only.
    pub correction_bias: bool,
    pub n_group: usize,
    pub topk_group: usize,
    pub group_score: GroupScore,
    pub routed_scaling_factor: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SharedExpertConfig {
    pub intermediate_size: usize,
    /// Qwen2-MoE: output multiplied by `sigmoid(x . w_gate)`.
    pub sigmoid_gate: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MoeConfig {
    pub num_experts: usize,
    pub top_k: usize,
    pub expert_intermediate_size: usize,
    pub activation: Activation,
    pub router: RouterConfig,
    pub shared: Option<SharedExpertConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FfnKind {
    Dense,
    Moe,
}

/// One model, fully resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelConfig {
    pub family: Family,
    /// `architectures[0]` as written in the file (for messages).
    pub architecture: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub max_position_embeddings: usize,
    /// Rows of a learned absolute position table (GPT); None for rotary models.
    pub learned_positions: Option<usize>,
    /// Multiplier applied to the token embedding (Grok: sqrt(H)).
    pub embedding_scale: f32,
    pub norm: NormConfig,
    pub attention: AttentionConfig,
    /// Grok's sandwich norms: RMSNorm on the attention and MoE outputs before the residual add.
    pub post_branch_norms: bool,
    /// The dense MLP (dense models, dense layers of MoE models).
    pub mlp: Option<MlpConfig>,
    pub moe: Option<MoeConfig>,
    /// Which feed-forward each layer uses; `len() == num_layers`.
    pub layer_ffn: Vec<FfnKind>,
    pub tie_word_embeddings: bool,
    /// Multiplier on the final logits (Grok: 1/sqrt(3)).
    pub output_scale: f32,
    /// Weight format: HF's `quantization_config`, or forced by `--quant` / conf `quantization`.
    pub quant: crate::quant::Quant,
}

impl ModelConfig {
    pub fn is_moe(&self) -> bool {
        self.layer_ffn.contains(&FfnKind::Moe)
    }
}

/// Parameters the config describes, in f64 (no overflow for absurd sizes): the embedding
/// and head, and every layer's attention and feed-forward weights. Used to refuse configs
/// too large to plan; `plan::cost::count_params` is the exact count.
pub fn approx_params(cfg: &ModelConfig) -> f64 {
    let h = cfg.hidden_size as f64;
    let embed = cfg.vocab_size as f64 * h * if cfg.tie_word_embeddings { 1.0 } else { 2.0 };
    let attention = match &cfg.attention {
        AttentionConfig::Gqa(a) => (2 * a.num_heads + 2 * a.num_kv_heads) as f64 * a.head_dim as f64 * h,
        AttentionConfig::DiffQkv(d) => {
            let aug = d.aug_q_intermediate.unwrap_or(0) as f64 * 3.0 * (d.num_heads * d.head_dim) as f64;
            (2 * d.num_heads + d.num_k_heads + d.num_v_heads) as f64 * d.head_dim as f64 * h + aug
        }
        AttentionConfig::Mla(m) => {
            let qk = (m.qk_nope_head_dim + m.qk_rope_head_dim) as f64;
            let q = match m.q_lora_rank {
                Some(r) => r as f64 * (h + m.num_heads as f64 * qk),
                None => h * m.num_heads as f64 * qk,
            };
            let kv = h * (m.kv_lora_rank + m.qk_rope_head_dim) as f64
                + m.kv_lora_rank as f64 * m.num_heads as f64 * (m.qk_nope_head_dim + m.v_head_dim) as f64;
            q + kv + m.num_heads as f64 * m.v_head_dim as f64 * h
        }
    };
    let ffn = |kind: &FfnKind| match kind {
        FfnKind::Dense => cfg.mlp.as_ref().map_or(0.0, |m| 3.0 * h * m.intermediate_size as f64),
        FfnKind::Moe => cfg.moe.as_ref().map_or(0.0, |m| {
            let shared = m.shared.as_ref().map_or(0.0, |s| s.intermediate_size as f64);
            3.0 * h * (m.num_experts as f64 * m.expert_intermediate_size as f64 + shared) + h * m.num_experts as f64
        }),
    };
    embed + cfg.layer_ffn.iter().map(|k| attention + ffn(k)).sum::<f64>()
}
