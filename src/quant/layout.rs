//! Where codes and scales sit in device memory, shared by the weight loaders, the memory
//! planner, the quantization kernels and the cuBLASLt call (one buffer per tensor, so a
//! plan weight or a quantized activation keeps a single address).
//!
//! cuBLASLt's block-scaled FP8 matmul (12.9+, Hopper) fixes the scale layouts:
//! - 128x128 weight blocks (`BLK128x128_32F`): per row block, its column blocks' scales
//!   contiguous, the row stride padded to a multiple of 4 blocks;
//! - 1x128 activation groups (`VEC128_32F`): per 128-column group, every row's scale
//!   contiguous ("outer-dimension major", one column of scales per group).

use super::BLOCK;

const ALIGN: usize = 256;

fn align(bytes: usize) -> usize {
    bytes.div_ceil(ALIGN) * ALIGN
}

/// An e4m3 tensor `[count, rows, cols]` and its fp32 scales, in one buffer: codes first
/// (row-major), the scales at [`Fp8Layout::scale_offset`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fp8Layout {
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
}

impl Fp8Layout {
    pub fn new(count: usize, rows: usize, cols: usize) -> Self {
        Fp8Layout { count, rows, cols }
    }
    pub fn row_blocks(&self) -> usize {
        self.rows.div_ceil(BLOCK)
    }
    pub fn col_blocks(&self) -> usize {
        self.cols.div_ceil(BLOCK)
    }
    /// Scales of one matrix's row block, padded as cuBLASLt requires.
    pub fn weight_scale_ld(&self) -> usize {
        self.col_blocks().div_ceil(4) * 4
    }
    /// Byte offset of the scales (after the codes, 256-byte aligned).
    pub fn scale_offset(&self) -> usize {
        align(self.count * self.rows * self.cols)
    }
    /// Bytes of a weight buffer: codes plus `[count, row_blocks, weight_scale_ld]` scales.
    pub fn weight_bytes(&self) -> usize {
        self.scale_offset() + self.count * self.row_blocks() * self.weight_scale_ld() * 4
    }
    /// Index, in f32 units from the scale offset, of weight block `(index, rb, cb)`.
    pub fn weight_scale_index(&self, index: usize, rb: usize, cb: usize) -> usize {
        (index * self.row_blocks() + rb) * self.weight_scale_ld() + cb
    }
    /// Bytes of a quantized activation `[rows, cols]` (count 1): codes plus
    /// `[col_blocks, rows]` scales.
    pub fn activation_bytes(&self) -> usize {
        self.scale_offset() + self.col_blocks() * self.rows * 4
    }
    /// The device image of a weight: `codes` `[count, rows, cols]` and compact scales
    /// `[count, row_blocks, col_blocks]` (what `quantize_blocks` returns) in this layout;
    /// padding scales are 1.
    pub fn weight_buffer(&self, codes: &[u8], scales: &[f32]) -> Vec<u8> {
        assert_eq!(codes.len(), self.count * self.rows * self.cols, "weight_buffer: wrong code count");
        assert_eq!(scales.len(), self.real_scale_count(), "weight_buffer: wrong scale count");
        let mut out = vec![0u8; self.weight_bytes()];
        out[..codes.len()].copy_from_slice(codes);
        let (rb, cb) = (self.row_blocks(), self.col_blocks());
        for i in 0..self.count * rb {
            for j in 0..self.weight_scale_ld() {
                let v = if j < cb { scales[i * cb + j] } else { 1.0 };
                let at = self.scale_offset() + (i * self.weight_scale_ld() + j) * 4;
                out[at..at + 4].copy_from_slice(&v.to_le_bytes());
            }
        }
        out
    }
    /// Scales the blocks really hold (no padding): what a forward reads.
    pub fn real_scale_count(&self) -> usize {
        self.count * self.row_blocks() * self.col_blocks()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deepseek_expert_sizes() {
        // 32 local experts of w13 [4096, 7168]: 32 x 56 blocks each, ld 56 (already x4).
        let l = Fp8Layout::new(32, 4096, 7168);
        assert_eq!((l.row_blocks(), l.col_blocks(), l.weight_scale_ld()), (32, 56, 56));
        assert_eq!(l.weight_bytes(), 32 * 4096 * 7168 + 32 * 32 * 56 * 4);
        // kv_a's 576 rows end in half a block; 18 column blocks pad to 20.
        let kv = Fp8Layout::new(1, 576, 2304);
        assert_eq!((kv.row_blocks(), kv.weight_scale_ld()), (5, 20));
        assert_eq!(kv.weight_scale_index(0, 4, 17), 4 * 20 + 17);
        assert_eq!(kv.scale_offset() % 256, 0);
        let small = Fp8Layout::new(2, 130, 5);
        let buf = small.weight_buffer(&[7u8; 1300], &[0.5, 0.25, 2.0, 4.0]);
        let scale = |i: usize| f32::from_le_bytes(buf[small.scale_offset() + 4 * i..][..4].try_into().unwrap());
        assert_eq!(buf.len(), small.weight_bytes());
        // ld 4: each row block's one scale, then three padding ones.
        assert_eq!((scale(0), scale(1), scale(4), scale(small.weight_scale_index(1, 1, 0))), (0.5, 1.0, 0.25, 4.0));
        let act = Fp8Layout::new(1, 3, 200);
        assert_eq!(act.activation_bytes(), 768 + 2 * 3 * 4);
    }
}
