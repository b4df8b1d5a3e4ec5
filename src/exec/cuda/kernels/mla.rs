//! Launch parameters for `kernels/mla.cu`: the latent cache write, the MHA-form key builder
//! and absorbed-form split-KV MLA decode with its combine. The `fa3` backend's decode at
//! DeepSeek's 512 + 64 latent runs `mla_decode_wgmma` instead ([`super::mla_decode`]),
//! combined by the same `mla_combine`.

use anyhow::Context;
use cudarc::driver::{DeviceRepr, LaunchConfig};

use super::attention_decode::choose_splits;
use super::attention_fa3::{fa3_prefill_call, Fa3Problem, HeadsOperand};
use super::attention_prefill::{self, flash_prefill_launch, FlashPrefillParams};
use super::mla_decode::{mla_wgmma_call, mla_wgmma_num_splits, mla_wgmma_supports};
use super::prepare::{kernel, Call, Prep};
use super::ptr::{Bf16Ptr, ConstBf16Ptr, ConstF32Ptr, F32Ptr};
use crate::config::run_conf::AttentionBackend;
use crate::plan::memory::Target;
use crate::plan::{Op, Plan};

/// cache[b, pos, :] = [latent[t, 0:L] ; k_pe[t, 0:R]].
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct MlaCacheWriteParams {
    pub latent: ConstBf16Ptr,
    pub latent_ld: i32,
    pub k_pe: ConstBf16Ptr,
    pub k_pe_ld: i32,
    pub rows: i32,
    pub kv_lora_rank: i32,
    pub rope_dim: i32,
    /// [batch, max_seq, kv_lora_rank + rope_dim].
    pub cache: Bf16Ptr,
    pub max_seq: i32,
    pub tokens_per_seq: i32,
    pub past: i32,
}
unsafe impl DeviceRepr for MlaCacheWriteParams {}
pub const MLA_CACHE_WRITE: (&str, &str) = ("mla", "mla_cache_write");

pub fn mla_cache_write_launch(rows: i32) -> LaunchConfig {
    LaunchConfig { grid_dim: (rows.max(0) as u32, 1, 1), block_dim: (64, 1, 1), shared_mem_bytes: 0 }
}

/// k_out[t, h, :] = [kv[t, h, 0:d_nope] ; k_pe[t, 0:d_rope]], where a `kv` row holds per
/// head [k_nope (d_nope) | v (d_v)].
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct MlaBuildKParams {
    pub kv: ConstBf16Ptr,
    pub kv_ld: i32,
    pub k_pe: ConstBf16Ptr,
    pub k_pe_ld: i32,
    /// [rows, heads, d_nope + d_rope].
    pub k_out: Bf16Ptr,
    pub rows: i32,
    pub heads: i32,
    pub d_nope: i32,
    pub d_v: i32,
    pub d_rope: i32,
}
unsafe impl DeviceRepr for MlaBuildKParams {}
pub const MLA_BUILD_K: (&str, &str) = ("mla", "mla_build_k");

pub fn mla_build_k_launch(rows: i32) -> LaunchConfig {
    LaunchConfig { grid_dim: (rows.max(0) as u32, 1, 1), block_dim: (128, 1, 1), shared_mem_bytes: 0 }
}

/// Absorbed form: score = scale * (q_lat.c_kv + q_pe.k_pe) over the cache
/// [batch, max_seq, kv_lora_rank + rope_dim]; o = softmax . c_kv, `kv_lora_rank` wide.
/// `kv_lora_rank <= MLA_MAX_KV_LORA_RANK`, `rope_dim <= MLA_MAX_ROPE_DIM`, both multiples of 8.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct MlaDecodeParams {
    pub q_lat: ConstBf16Ptr,
    pub q_lat_batch_stride: i32,
    pub q_lat_head_stride: i32,
    pub q_pe: ConstBf16Ptr,
    pub q_pe_batch_stride: i32,
    pub q_pe_head_stride: i32,
    pub cache: ConstBf16Ptr,
    pub max_seq: i32,
    pub n_kv: i32,
    pub batch: i32,
    pub heads: i32,
    pub kv_lora_rank: i32,
    pub rope_dim: i32,
    pub scale: f32,
    pub o: Bf16Ptr,
    pub o_batch_stride: i32,
    pub o_head_stride: i32,
    /// Partials, [`mla_scratch_bytes`]; may be 0 when `num_splits == 1`.
    pub scratch: F32Ptr,
    pub num_splits: i32,
}
unsafe impl DeviceRepr for MlaDecodeParams {}

/// Same scratch, o and sizes as the decode launch.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct MlaCombineParams {
    pub scratch: ConstF32Ptr,
    pub o: Bf16Ptr,
    pub o_batch_stride: i32,
    pub o_head_stride: i32,
    pub batch: i32,
    pub heads: i32,
    pub kv_lora_rank: i32,
    pub num_splits: i32,
}
unsafe impl DeviceRepr for MlaCombineParams {}
pub const MLA_COMBINE: (&str, &str) = ("mla", "mla_combine");

/// Latent and rope widths the decode kernels are compiled for (DeepSeek's 512 + 64): the
/// smem rows hold `MLA_MAX_KV_LORA_RANK + MLA_MAX_ROPE_DIM` values.
pub const MLA_MAX_KV_LORA_RANK: i32 = 512;
pub const MLA_MAX_ROPE_DIM: i32 = 64;

/// Compile-time shape of one MLA decode entry: mla.cu instantiates its template from these
/// constants (through the generated header), [`MlaDecodeVariant`] sizes the launch from them.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MlaDecodeTile {
    /// Heads as mma M rows, a multiple of 16.
    pub heads_per_cta: i32,
    /// A multiple of `heads_per_cta / 16`: the remaining factor splits the columns.
    pub warps: i32,
    pub block_n: i32,
    pub stages: i32,
}
pub const MLA_TILE_M64: MlaDecodeTile = MlaDecodeTile { heads_per_cta: 64, warps: 8, block_n: 32, stages: 3 };
pub const MLA_TILE_M16: MlaDecodeTile = MlaDecodeTile { heads_per_cta: 16, warps: 4, block_n: 64, stages: 2 };

/// One compiled MLA decode shape: `heads_per_cta` heads as mma M rows, `warps` warps,
/// `block_n` cache rows per tile, `stages` tiles in the cp.async ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MlaDecodeVariant {
    pub kernel: (&'static str, &'static str),
    pub heads_per_cta: i32,
    pub warps: i32,
    pub block_n: i32,
    pub stages: i32,
}

impl MlaDecodeVariant {
    const fn new(kernel: &'static str, tile: MlaDecodeTile) -> Self {
        MlaDecodeVariant {
            kernel: ("mla", kernel),
            heads_per_cta: tile.heads_per_cta,
            warps: tile.warps,
            block_n: tile.block_n,
            stages: tile.stages,
        }
    }
    /// Q tile + ring of cache tiles (576 + 8 padded columns), the P tile, and two fp32 row
    /// statistics arrays per column part (`warps / m-tiles` parts).
    pub const fn smem_bytes(&self) -> u32 {
        let row = MLA_MAX_KV_LORA_RANK + MLA_MAX_ROPE_DIM + 8;
        let parts = self.warps / (self.heads_per_cta / 16);
        ((self.heads_per_cta * row + self.stages * self.block_n * row + self.heads_per_cta * (self.block_n + 8)) * 2
            + 2 * parts * self.heads_per_cta * 4) as u32
    }
}

pub const MLA_DECODE_M64: MlaDecodeVariant = MlaDecodeVariant::new("mla_decode_m64", MLA_TILE_M64);
pub const MLA_DECODE_M16: MlaDecodeVariant = MlaDecodeVariant::new("mla_decode_m16", MLA_TILE_M16);

/// 64 heads per CTA when there are more than 32 heads (each cached row then serves 64 heads),
/// else 16 (small TP shards, test fixtures).
pub fn mla_select(heads: i32) -> MlaDecodeVariant {
    if heads > 32 {
        MLA_DECODE_M64
    } else {
        MLA_DECODE_M16
    }
}

/// Split count for MLA decode: one resident CTA per SM, at most one split per 64 cache rows.
pub fn mla_num_splits(batch: i32, heads: i32, n_kv: i32, sm_count: i32) -> i32 {
    let hpc = mla_select(heads).heads_per_cta;
    let head_tiles = (heads + hpc - 1) / hpc;
    choose_splits(batch as i64 * head_tiles as i64, sm_count as i64, n_kv, 64, 64)
}

/// fp32 scratch: partial o [batch, heads, splits, kv_lora_rank] then lse [batch, heads, splits];
/// 0 when `num_splits <= 1`.
pub fn mla_scratch_bytes(batch: i32, heads: i32, kv_lora_rank: i32, num_splits: i32) -> usize {
    if num_splits <= 1 {
        return 0;
    }
    batch as usize * heads as usize * num_splits as usize * (kv_lora_rank as usize + 1) * 4
}

/// Grid (splits, head tiles, batch); raise the function's max dynamic smem attribute first.
pub fn mla_decode_launch(variant: &MlaDecodeVariant, batch: i32, heads: i32, num_splits: i32) -> LaunchConfig {
    let tiles = (heads + variant.heads_per_cta - 1) / variant.heads_per_cta;
    LaunchConfig {
        grid_dim: (num_splits as u32, tiles as u32, batch as u32),
        block_dim: (32 * variant.warps as u32, 1, 1),
        shared_mem_bytes: variant.smem_bytes(),
    }
}

/// Grid (heads, batch); returns at once when `num_splits <= 1`.
pub fn mla_combine_launch(batch: i32, heads: i32) -> LaunchConfig {
    LaunchConfig { grid_dim: (heads as u32, batch as u32, 1), block_dim: (128, 1, 1), shared_mem_bytes: 0 }
}

/// Splits of MLA decode over `n_kv = context` cache rows, for `rows` sequences: the mma.sync
/// kernels' count, or the wgmma kernel's when `wgmma`.
fn decode_splits(plan: &Plan, rows: usize, heads: usize, target: Target, wgmma: bool) -> i32 {
    let (rows, heads, n_kv) = (rows as i32, heads as i32, plan.shape.context() as i32);
    if wgmma {
        mla_wgmma_num_splits(rows, heads, n_kv, target.sm_count)
    } else {
        mla_num_splits(rows, heads, n_kv, target.sm_count)
    }
}

/// Decode's fp32 partial sums (enough for either decode kernel: the memory plan does not know
/// the backend); prefill's MHA-form keys `[tokens, heads, d_nope + d_rope]` bf16.
pub fn scratch_bytes(plan: &Plan, op: &Op, target: Target) -> usize {
    match op {
        Op::MlaDecodeAttention { q_lat, heads, kv_lora_rank, .. } => {
            let rows = plan.rows(*q_lat);
            let splits = [false, true].map(|wgmma| decode_splits(plan, rows, *heads, target, wgmma));
            let splits = splits.into_iter().max().unwrap_or(1);
            mla_scratch_bytes(rows as i32, *heads as i32, *kv_lora_rank as i32, splits)
        }
        Op::MlaPrefillAttention { q, heads, d_nope, d_rope, .. } => plan.rows(*q) * heads * (d_nope + d_rope) * 2,
        _ => 0,
    }
}

/// `Op::MlaCacheWrite`, `Op::MlaPrefillAttention` (keys built into the scratch, then the
/// prefill flash kernel) and `Op::MlaDecodeAttention` (split-KV absorbed form + combine).
pub fn prepare(cx: &mut Prep, op: &Op) -> anyhow::Result<Vec<Call>> {
    let plan = cx.plan;
    match op {
        Op::MlaCacheWrite { latent, k_pe, cache } => {
            let p = MlaCacheWriteParams {
                latent: cx.ptr(*latent),
                latent_ld: cx.ld(*latent),
                k_pe: cx.ptr(*k_pe),
                k_pe_ld: cx.ld(*k_pe),
                rows: cx.rows(*latent),
                kv_lora_rank: latent.cols as i32,
                rope_dim: k_pe.cols as i32,
                cache: cx.cache(*cache).0,
                max_seq: plan.caches[cache.0].max_seq as i32,
                tokens_per_seq: plan.shape.new_tokens_per_seq() as i32,
                past: plan.shape.past() as i32,
            };
            Ok(vec![kernel(MLA_CACHE_WRITE, mla_cache_write_launch(cx.rows(*latent)), p)])
        }
        Op::MlaPrefillAttention { q, kv, k_pe, out, heads, d_nope, d_rope, d_v, scale } => {
            let rows = cx.rows(*q);
            let dqk = (d_nope + d_rope) as i32;
            let p = MlaBuildKParams {
                kv: cx.ptr(*kv),
                kv_ld: cx.ld(*kv),
                k_pe: cx.ptr(*k_pe),
                k_pe_ld: cx.ld(*k_pe),
                k_out: cx.scratch,
                rows,
                heads: *heads as i32,
                d_nope: *d_nope as i32,
                d_v: *d_v as i32,
                d_rope: *d_rope as i32,
            };
            let build_k = kernel(MLA_BUILD_K, mla_build_k_launch(rows), p);
            if cx.gpu.kernel_choice().attention == AttentionBackend::Fa3 {
                let (n, batch, heads) = (plan.shape.new_tokens_per_seq(), plan.local_batch, *heads);
                let (ldq, ldkv, ldo) = (cx.ld(*q) as usize, cx.ld(*kv) as usize, cx.ld(*out) as usize);
                let k_row = heads * (d_nope + d_rope);
                let operand = |base, d, head_stride, token_stride| HeadsOperand {
                    base,
                    d,
                    heads,
                    tokens: n,
                    batch,
                    head_stride,
                    token_stride,
                    batch_stride: n * token_stride,
                };
                let problem = |k, k_rope| Fa3Problem {
                    q: operand(cx.ptr(*q), d_nope + d_rope, d_nope + d_rope, ldq),
                    k,
                    v: operand(cx.ptr(*kv) + (*d_nope * 2) as u64, *d_v, d_nope + d_v, ldkv),
                    k_rope,
                    o: cx.ptr(*out),
                    o_batch_stride: n * ldo,
                    o_token_stride: ldo,
                    o_head_stride: *d_v,
                    scale: *scale,
                    softcap: 0.0,
                    sm_count: cx.sm_count(),
                };
                // K read in place (k_nope per head out of kv, the shared k_pe through a one-head
                // map) when k_nope is whole 64-column chunks and k_pe can be a TMA operand: no
                // mla_build_k pass (~200 MB written and read back at DeepSeek 4096 tokens).
                let ld_pe = cx.ld(*k_pe) as usize;
                if d_nope.is_multiple_of(64) && cx.ptr(*k_pe).is_multiple_of(16) && ld_pe.is_multiple_of(8) {
                    let k_nope = operand(cx.ptr(*kv), *d_nope, d_nope + d_v, ldkv);
                    let k_pe_op = HeadsOperand {
                        base: cx.ptr(*k_pe),
                        d: *d_rope,
                        heads: 1,
                        tokens: n,
                        batch,
                        head_stride: *d_rope,
                        token_stride: ld_pe,
                        batch_stride: n * ld_pe,
                    };
                    return Ok(vec![fa3_prefill_call(&problem(k_nope, Some(k_pe_op)))?]);
                }
                let call =
                    fa3_prefill_call(&problem(operand(cx.scratch, d_nope + d_rope, d_nope + d_rope, k_row), None))?;
                return Ok(vec![build_k, call]);
            }
            let variant = attention_prefill::select_variant(dqk, *d_v as i32)
                .with_context(|| format!("no prefill attention kernel for MLA dims {dqk}/{d_v}"))?;
            let n = plan.shape.new_tokens_per_seq() as i32;
            let (ldq, ldkv, ldo) = (cx.ld(*q), cx.ld(*kv), cx.ld(*out));
            let k_row = *heads as i32 * dqk;
            let p = FlashPrefillParams {
                q: cx.ptr(*q),
                q_batch_stride: (n * ldq) as i64,
                q_token_stride: ldq,
                q_head_stride: dqk,
                k: cx.scratch,
                k_batch_stride: (n * k_row) as i64,
                k_token_stride: k_row,
                k_head_stride: dqk,
                v: cx.ptr(*kv) + (*d_nope * 2) as u64,
                v_batch_stride: (n * ldkv) as i64,
                v_token_stride: ldkv,
                v_head_stride: (d_nope + d_v) as i32,
                o: cx.ptr(*out),
                o_batch_stride: (n * ldo) as i64,
                o_token_stride: ldo,
                o_head_stride: *d_v as i32,
                batch: plan.local_batch as i32,
                n_q: n,
                n_kv: n,
                q_heads: *heads as i32,
                k_heads: *heads as i32,
                v_heads: *heads as i32,
                d_qk: dqk,
                d_v: *d_v as i32,
                scale: *scale,
                softcap: 0.0,
            };
            let cfg = flash_prefill_launch(&variant, plan.local_batch as i32, n, *heads as i32);
            Ok(vec![build_k, kernel(variant.kernel, cfg, p)])
        }
        Op::MlaDecodeAttention { q_lat, q_pe, q_pe_stride, cache, out, heads, kv_lora_rank, d_rope, scale } => {
            let rows = cx.rows(*q_lat);
            let wgmma =
                cx.gpu.kernel_choice().attention == AttentionBackend::Fa3 && mla_wgmma_supports(*kv_lora_rank, *d_rope);
            let splits = decode_splits(plan, rows as usize, *heads, cx.mem.target, wgmma);
            let variant = mla_select(*heads as i32);
            let p = MlaDecodeParams {
                q_lat: cx.ptr(*q_lat),
                q_lat_batch_stride: cx.ld(*q_lat),
                q_lat_head_stride: *kv_lora_rank as i32,
                q_pe: cx.ptr(*q_pe),
                q_pe_batch_stride: cx.ld(*q_pe),
                q_pe_head_stride: *q_pe_stride as i32,
                cache: cx.cache(*cache).0,
                max_seq: plan.caches[cache.0].max_seq as i32,
                n_kv: plan.shape.context() as i32,
                batch: rows,
                heads: *heads as i32,
                kv_lora_rank: *kv_lora_rank as i32,
                rope_dim: *d_rope as i32,
                scale: *scale,
                o: cx.ptr(*out),
                o_batch_stride: cx.ld(*out),
                o_head_stride: *kv_lora_rank as i32,
                scratch: cx.scratch,
                num_splits: splits,
            };
            let (decode, merged) = if wgmma {
                mla_wgmma_call(&p)?
            } else {
                (kernel(variant.kernel, mla_decode_launch(&variant, rows, *heads as i32, splits), p), false)
            };
            if merged {
                return Ok(vec![decode]);
            }
            let p = MlaCombineParams {
                scratch: cx.scratch,
                o: cx.ptr(*out),
                o_batch_stride: cx.ld(*out),
                o_head_stride: *kv_lora_rank as i32,
                batch: rows,
                heads: *heads as i32,
                kv_lora_rank: *kv_lora_rank as i32,
                num_splits: splits,
            };
            Ok(vec![decode, kernel(MLA_COMBINE, mla_combine_launch(rows, *heads as i32), p)])
        }
        _ => unreachable!("mla::prepare got {op:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smem_matches_kernel_shapes() {
        // MlaShape<4, 2, 32, 3> and <1, 4, 64, 2> in mla.cu, counted by hand.
        assert_eq!(MLA_DECODE_M64.smem_bytes(), 193_024);
        assert_eq!(MLA_DECODE_M16.smem_bytes(), 171_008);
    }

    #[test]
    fn splits() {
        assert_eq!(mla_num_splits(64, 128, 4096, 132), 1);
        assert!(mla_num_splits(1, 128, 4096, 132) > 32);
        assert_eq!(mla_select(16), MLA_DECODE_M16);
        assert_eq!(mla_select(128), MLA_DECODE_M64);
        assert_eq!(mla_scratch_bytes(2, 16, 512, 3), 2 * 16 * 3 * 513 * 4);
    }
}
