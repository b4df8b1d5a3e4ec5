// The mainloop the block-scaled FP8 GEMMs share (kernels/gemm_fp8.cu, kernels/moe_fp8.cu):
// one consumer warpgroup's DeepGEMM-style promotion over a hopper::TmaRing of e4m3 tiles.
//
// Per 128-deep K block kb: wait for its stage, 4 wgmma m64nNk32 into a fresh fp32
// accumulator, wait for them, free the stage, then total += acc * sx[row, kb] * sw[col block,
// kb] in fp32 (the FP8 tensor cores accumulate with ~14 mantissa bits, so sums are promoted
// once per scale block, never carried across blocks in the tensor cores). The scales of block
// kb + 1 are loaded while block kb's tiles and wgmma are in flight.
#pragma once
#include "hopper.cuh"

namespace hopper {

// Scales of one K block for one thread: its two accumulator rows (16 warp + lane/4 + 8i) and
// the weight blocks of its columns below and from `N / 2` (gate and up halves of a gate/up
// tile; the same block for a plain tile).
struct Fp8Scales {
    float x0, x1, w_lo, w_hi;
};

// total[N/2] += the promoted products of K blocks 0..k_blocks over the stages of `ring` (A at
// a_offset, B at b_offset into each stage, in the ring's bf16-sized elements; both K-major,
// 128-byte rows). `scales(kb)` returns block kb's Fp8Scales.
template <int N, int STAGES, int A_STAGE, int B_STAGE, class ScalesOf>
__device__ __forceinline__ void consume_fp8(const TmaRing<STAGES, A_STAGE, B_STAGE>& ring, int a_offset, int b_offset,
                                            int k_blocks, float (&total)[N / 2], ScalesOf scales) {
    const int lane = threadIdx.x % 32;
    float acc[N / 2];
    Fp8Scales cur = scales(0);
    for (int kb = 0; kb < k_blocks; ++kb) {
        const int s = kb % STAGES;
        const Fp8Scales next = kb + 1 < k_blocks ? scales(kb + 1) : cur;
        mbar_wait(&ring.full[s], (kb / STAGES) & 1);
        const uint64_t da = desc_sw128(ring.a + s * A_STAGE + a_offset, 16, 1024);
        const uint64_t db = desc_sw128(ring.b + s * B_STAGE + b_offset, 16, 1024);
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < 4; ++kk) wgmma_ss_e4m3<N>(acc, da + 2 * kk, db + 2 * kk, kk > 0);
        wgmma_commit();
        wgmma_wait<0>();
        fence_regs(acc);
        // The tiles are in registers now: the producer refills the stage during promotion.
        if (lane == 0) mbar_arrive(&ring.empty[s]);
        // d[4j + 2i + c]: row i (bit 1 of the index), column block by j < N / 16.
#pragma unroll
        for (int i = 0; i < N / 2; ++i) {
            const float w = (i / 4) < N / 16 ? cur.w_lo : cur.w_hi;
            total[i] = fmaf(acc[i], ((i & 2) ? cur.x1 : cur.x0) * w, total[i]);
        }
        cur = next;
    }
}

}  // namespace hopper
