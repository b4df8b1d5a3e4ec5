//! The static forward plan: the ordered ops of one forward on one rank.
//!
//! A plan is built once per (model, deployment, rank, shape) by `model::build_plan`; the
//! cost model (`cost`), the memory planner (`memory`), the executors and the profiler all
//! read it, so what runs is what is counted. Activations are 2-D row-major tensors (rows =
//! tokens); ops address column windows of them through [`View`]s, which is how a fused
//! QKV projection feeds q, k and v to later ops without copies.

pub mod cost;
mod extract;
pub mod memory;
mod ops;
mod weights;

pub use extract::{gemm_plan, OpQuery, OpQueryError};
pub use ops::{Collective, CollectiveDim, ExpertChoice, Group, IdRef, Op, RoutingMode};
pub use weights::{quantize_linear_weights, Init, WeightInfo, WeightPiece};

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct TensorId(pub usize);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct WeightId(pub usize);

/// Index of a layer's KV cache in `Plan::caches`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct CacheId(pub usize);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    BF16,
    F32,
    I32,
    /// e4m3 with 128x128 block scales: weights only (see `quant`); activations are
    /// quantized into kernel scratch, never planned as tensors.
    #[serde(rename = "fp8_e4m3")]
    F8E4M3,
}

impl DType {
    /// Bytes of one element (FP8 weights' scales are counted by `WeightInfo::bytes`).
    pub fn bytes(self) -> usize {
        match self {
            DType::F8E4M3 => 1,
            DType::BF16 => 2,
            DType::F32 | DType::I32 => 4,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Prefill,
    Decode,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Prefill => "prefill",
            Phase::Decode => "decode",
        }
    }
}

/// One forward's shape. Prefill: `batch` sequences of `seq` new tokens each. Decode:
/// `batch` sequences with `seq` tokens already cached, one new token each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Shape {
    pub phase: Phase,
    pub batch: usize,
    pub seq: usize,
}

impl Shape {
    pub fn prefill(batch: usize, seq: usize) -> Self {
        Shape { phase: Phase::Prefill, batch, seq }
    }
    pub fn decode(batch: usize, seq: usize) -> Self {
        Shape { phase: Phase::Decode, batch, seq }
    }
    /// New tokens per sequence.
    pub fn new_tokens_per_seq(&self) -> usize {
        match self.phase {
            Phase::Prefill => self.seq,
            Phase::Decode => 1,
        }
    }
    /// Tokens already in the cache before this forward.
    pub fn past(&self) -> usize {
        match self.phase {
            Phase::Prefill => 0,
            Phase::Decode => self.seq,
        }
    }
    /// Keys each sequence's last query sees.
    pub fn context(&self) -> usize {
        self.past() + self.new_tokens_per_seq()
    }
    pub fn tokens(&self) -> usize {
        self.batch * self.new_tokens_per_seq()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TensorInfo {
    pub name: String,
    pub rows: usize,
    pub cols: usize,
    pub dtype: DType,
}

impl TensorInfo {
    pub fn bytes(&self) -> usize {
        self.rows * self.cols * self.dtype.bytes()
    }
}

/// A column window `[col, col + cols)` of a 2-D activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct View {
    pub id: TensorId,
    pub col: usize,
    pub cols: usize,
}

/// One layer's KV cache on this rank: K `[batch, max_seq, k_heads, d_k]` and V
/// `[batch, max_seq, v_heads, d_v]` (MLA: one latent cache, `v_heads == 0`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CacheInfo {
    pub layer: usize,
    pub batch: usize,
    pub max_seq: usize,
    pub k_heads: usize,
    pub d_k: usize,
    pub v_heads: usize,
    pub d_v: usize,
}

impl CacheInfo {
    pub fn k_elems_per_token(&self) -> usize {
        self.k_heads * self.d_k
    }
    pub fn v_elems_per_token(&self) -> usize {
        self.v_heads * self.d_v
    }
    pub fn bytes(&self) -> usize {
        self.batch * self.max_seq * (self.k_elems_per_token() + self.v_elems_per_token()) * 2
    }
}

/// Where an op sits in the model, for profiles and messages.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpSite {
    pub layer: Option<usize>,
    pub name: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlannedOp {
    pub site: OpSite,
    pub op: Op,
}

/// The parallel position of this plan's rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RankLayout {
    pub world: usize,
    pub rank: usize,
    /// Tensor-parallel width of attention (tp / dp).
    pub attn_tp: usize,
    pub dp: usize,
    /// Expert-parallel width of the MoE and tensor-parallel width inside one expert.
    pub ep: usize,
    pub moe_tp: usize,
}

impl RankLayout {
    pub fn single() -> Self {
        RankLayout { world: 1, rank: 0, attn_tp: 1, dp: 1, ep: 1, moe_tp: 1 }
    }
    pub fn attn_tp_rank(&self) -> usize {
        self.rank % self.attn_tp
    }
    pub fn dp_rank(&self) -> usize {
        self.rank / self.attn_tp
    }
    pub fn ep_rank(&self) -> usize {
        self.rank / self.moe_tp
    }
    pub fn moe_tp_rank(&self) -> usize {
        self.rank % self.moe_tp
    }
    /// Ranks of a collective group, in rank order.
    pub fn group_ranks(&self, group: Group) -> Vec<usize> {
        match group {
            Group::World => (0..self.world).collect(),
            Group::AttnTp => {
                let first = self.dp_rank() * self.attn_tp;
                (first..first + self.attn_tp).collect()
            }
            Group::DpPeers => (0..self.dp).map(|d| d * self.attn_tp + self.attn_tp_rank()).collect(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub model: String,
    pub shape: Shape,
    pub layout: RankLayout,
    pub tensors: Vec<TensorInfo>,
    pub weights: Vec<WeightInfo>,
    pub caches: Vec<CacheInfo>,
    pub ops: Vec<PlannedOp>,
    /// Token ids `[tokens, 1]` (i32), input of this rank.
    pub input_ids: TensorId,
    /// Position of every input token `[tokens]`.
    pub positions: Vec<usize>,
    /// Logits `[logit_rows, vocab_padded]` (f32); the first `vocab_size` columns are real.
    pub logits: View,
    /// Which (sequence, position-in-forward) each logits row belongs to.
    pub logit_rows: Vec<(usize, usize)>,
    /// Sequences this rank serves (its data-parallel share): global index of the first one.
    pub first_sequence: usize,
    pub local_batch: usize,
}

impl Plan {
    pub fn tensor(&self, id: TensorId) -> &TensorInfo {
        &self.tensors[id.0]
    }
    pub fn weight(&self, id: WeightId) -> &WeightInfo {
        &self.weights[id.0]
    }
    pub fn full(&self, id: TensorId) -> View {
        View { id, col: 0, cols: self.tensors[id.0].cols }
    }
    pub fn rows(&self, v: View) -> usize {
        self.tensors[v.id.0].rows
    }
}
