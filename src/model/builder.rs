//! The plan builder the layer graphs write into: tensors, weights (as HF pieces), caches
//! and ops, plus the sharding arithmetic every block shares.

use crate::config::model::ModelConfig;
use crate::plan::{
    CacheId, CacheInfo, DType, Init, Op, OpSite, PlannedOp, RankLayout, Shape, TensorId, TensorInfo, View, WeightId,
    WeightInfo, WeightPiece,
};

/// Options that change what a plan computes, not how it is sharded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PlanOptions {
    /// Compute logits at every prefill position (checks against HF) instead of only the
    /// last position of each sequence (what a server does).
    pub all_logits: bool,
    /// Cache capacity per sequence; default: the shape's context.
    pub cache_len: Option<usize>,
}

/// Contiguous share `[start, start + len)` of `total` items for `part` of `parts`.
pub fn split(total: usize, parts: usize, part: usize) -> (usize, usize) {
    let len = total / parts;
    (part * len, len)
}

/// Which KV heads a rank of an attention-TP group holds (SGLang's QKVParallelLinear):
/// `kv_heads / tp` each, or one replicated head when `tp > kv_heads`.
pub fn kv_head_share(kv_heads: usize, tp: usize, tp_rank: usize) -> (usize, usize) {
    if tp >= kv_heads {
        (tp_rank * kv_heads / tp, 1)
    } else {
        split(kv_heads, tp, tp_rank)
    }
}

pub struct Builder<'a> {
    pub cfg: &'a ModelConfig,
    pub layout: RankLayout,
    pub shape: Shape,
    pub opts: PlanOptions,
    pub tensors: Vec<TensorInfo>,
    pub weights: Vec<WeightInfo>,
    pub caches: Vec<CacheInfo>,
    pub ops: Vec<PlannedOp>,
    pub layer: Option<usize>,
    /// Sequences this rank's attention serves.
    pub local_batch: usize,
}

impl<'a> Builder<'a> {
    pub fn new(cfg: &'a ModelConfig, layout: RankLayout, shape: Shape, opts: PlanOptions) -> Self {
        Builder {
            cfg,
            layout,
            shape,
            opts,
            tensors: Vec::new(),
            weights: Vec::new(),
            caches: Vec::new(),
            ops: Vec::new(),
            layer: None,
            local_batch: shape.batch / layout.dp,
        }
    }

    /// Tokens this rank's attention processes.
    pub fn attn_tokens(&self) -> usize {
        self.local_batch * self.shape.new_tokens_per_seq()
    }

    /// Tokens the feed-forward blocks process (all DP groups' tokens under DP attention).
    pub fn ffn_tokens(&self) -> usize {
        self.attn_tokens() * self.layout.dp
    }

    pub fn tensor(&mut self, name: &str, rows: usize, cols: usize, dtype: DType) -> View {
        let full_name = match self.layer {
            Some(l) => format!("layers.{l}.{name}"),
            None => name.to_string(),
        };
        self.tensors.push(TensorInfo { name: full_name, rows, cols, dtype });
        View { id: TensorId(self.tensors.len() - 1), col: 0, cols }
    }

    pub fn act(&mut self, name: &str, rows: usize, cols: usize) -> View {
        self.tensor(name, rows, cols, DType::BF16)
    }

    pub fn weight(&mut self, name: &str, shape: [usize; 3], dtype: DType, pieces: Vec<WeightPiece>) -> WeightId {
        let [count, rows, cols] = shape;
        let full_name = match self.layer {
            Some(l) => format!("layers.{l}.{name}"),
            None => name.to_string(),
        };
        debug_assert!(pieces
            .iter()
            .all(|p| p.dst_index < count && p.dst_row + p.rows <= rows && p.dst_col + p.cols <= cols));
        self.weights.push(WeightInfo { name: full_name, count, rows, cols, dtype, pieces });
        WeightId(self.weights.len() - 1)
    }

    pub fn op(&mut self, name: &str, op: Op) {
        self.ops.push(PlannedOp { site: OpSite { layer: self.layer, name: name.to_string() }, op });
    }

    pub fn cache(&mut self, info: CacheInfo) -> CacheId {
        self.caches.push(info);
        CacheId(self.caches.len() - 1)
    }

    pub fn cache_len(&self) -> usize {
        self.opts.cache_len.unwrap_or(self.shape.context()).max(self.shape.context())
    }

    pub fn rows(&self, v: View) -> usize {
        self.tensors[v.id.0].rows
    }

    /// `out = x . W^T (+ bias)` into a new bf16 tensor of `weight`'s row count.
    pub fn linear(&mut self, name: &str, x: View, weight: WeightId, bias: Option<WeightId>) -> View {
        let rows = self.rows(x);
        let n = self.weights[weight.0].rows;
        let out = self.act(name, rows, n);
        self.op(name, Op::Linear { x, weight, bias, alpha: 1.0, out });
        out
    }

    pub fn window(&self, v: View, col: usize, cols: usize) -> View {
        debug_assert!(col + cols <= v.cols);
        View { id: v.id, col: v.col + col, cols }
    }
}

/// Builders of weight pieces. Every HF tensor is addressed in its logical `[out, in]`
/// orientation, `rows x cols`.
#[derive(Debug, Clone)]
pub struct Hf {
    pub name: String,
    pub rows: usize,
    pub cols: usize,
    pub init: Init,
    pub transposed_in_file: bool,
}

impl Hf {
    pub fn new(name: impl Into<String>, rows: usize, cols: usize, init: Init) -> Self {
        Hf { name: name.into(), rows, cols, init, transposed_in_file: false }
    }
    /// A 1-D tensor (norm weight, bias) of `len` values.
    pub fn vector(name: impl Into<String>, len: usize, init: Init) -> Self {
        Hf::new(name, 1, len, init)
    }
    pub fn conv1d(mut self) -> Self {
        self.transposed_in_file = true;
        self
    }
    /// Rows `[row, row + rows)`, all columns, placed at `(dst_index, dst_row, 0)`.
    pub fn rows_at(&self, row: usize, rows: usize, dst_index: usize, dst_row: usize) -> WeightPiece {
        self.block(row, 0, rows, self.cols, dst_index, dst_row, 0)
    }
    /// Columns `[col, col + cols)`, all rows, placed at `(dst_index, 0, dst_col)`.
    pub fn cols_at(&self, col: usize, cols: usize, dst_index: usize, dst_col: usize) -> WeightPiece {
        self.block(0, col, self.rows, cols, dst_index, 0, dst_col)
    }
    pub fn whole(&self) -> WeightPiece {
        self.rows_at(0, self.rows, 0, 0)
    }
    #[allow(clippy::too_many_arguments)]
    pub fn block(
        &self,
        src_row: usize,
        src_col: usize,
        rows: usize,
        cols: usize,
        dst_index: usize,
        dst_row: usize,
        dst_col: usize,
    ) -> WeightPiece {
        debug_assert!(src_row + rows <= self.rows && src_col + cols <= self.cols, "{}: block out of range", self.name);
        WeightPiece {
            hf_name: self.name.clone(),
            hf_rows: self.rows,
            hf_cols: self.cols,
            transposed_in_file: self.transposed_in_file,
            src_row,
            src_col,
            rows,
            cols,
            dst_index,
            dst_row,
            dst_col,
            init: self.init,
        }
    }
}
