// The mainloop the block-scaled FP8 GEMMs share (kernels/gemm_fp8.cu, kernels/moe_fp8.cu):
// one consumer warpgroup's DeepGEMM-style promotion over a hopper::TmaRing of e4m3 tiles, for
// a 64-row slab against HALVES x 128 weight rows (one weight scale block per half).
//
// Per 128-deep K block kb and half h: 4 wgmma m64n128k32 into a fresh fp32 accumulator, wait
// for them, then total[h] += acc * sx[row, kb] * sw[h, kb] in fp32 (the FP8 tensor cores
// accumulate with ~14 mantissa bits, so sums are promoted once per scale block, never carried
// across blocks in the tensor cores). The stage is freed after the last half's wgmma, before
// its promotion. The scales of block kb + 1 are loaded while block kb is in flight, or those
// the producer copies into shared memory with the stage are read once it has landed.
//
// Why halves and not one m64n256 group: total (HALVES x 64 fp32) plus a 64-register
// accumulator is 192 registers at HALVES = 2, where two n256 accumulators would need 256. The
// tile's bytes per FLOP are what the half split buys: a 128 x 256 CTA tile reads 48 KiB from
// L2 per 8.4 MFLOP (170 FLOP/B) where 128 x 128 read 32 KiB per 4.2 (128 FLOP/B), and L2
// bandwidth, not the tensor cores, capped the 128 x 128 kernels (~6.5 TB/s x 128 = 830
// TFLOP/s, docs/perf.md "FP8 GEMMs"). The other consumer warpgroup's wgmma covers this one's
// wait and promotion FMAs (64 per half per thread).
#pragma once
#include "hopper.cuh"

namespace hopper {

// Two consumer warpgroups taking turns on the tensor cores (FWDBENCH_MOE_FP8_ORDER=1): consumer
// 0 issues its wgmma group g only after consumer 1 issued g - 1, consumer 1 its group g only
// after consumer 0 issued g (named barriers 1 and 2 over both warpgroups, arrive / sync). Both
// wait for their own group before promoting it, and both are released by the same stage, so
// without an order they issue together, their groups share the tensor cores and complete
// together, and both promote (64 FFMA per thread per half) while the tensor cores idle. Taking
// turns queues one group behind the other: one consumer's promotion runs under the other's
// group (DeepGEMM gets the same from its SASS post-pass, hopper-kernels.md §4). A consumer
// that skips a tile's math (a drained slab) still takes its turns, two per K block, so both
// count the same groups; `finish` takes consumer 1's last arrival before the kernel ends.
struct Fp8Turns {
    int consumer;  // 0 or 1; -1: no order
    int issued = 0;

    __device__ __forceinline__ void before() const {
        if (consumer == 0 && issued > 0) named_sync(2, 256);
        else if (consumer == 1) named_sync(1, 256);
    }
    __device__ __forceinline__ void after() {
        if (consumer < 0) return;
        ++issued;
        named_arrive(consumer == 0 ? 1 : 2, 256);
    }
    // One group's turn without math (a drained stage, per half).
    __device__ __forceinline__ void skip() {
        before();
        after();
    }
    __device__ __forceinline__ void finish() const {
        if (consumer == 0 && issued > 0) named_sync(2, 256);
    }
};

// Scales of one K block for one thread: its two accumulator rows (16 warp + lane/4 + 8i) and
// the weight blocks of its two 128-row halves (w1 unused with one half).
struct Fp8Scales {
    float x0, x1, w0, w1;
};

// total[HALVES * 64] += the promoted products of K blocks 0..k_blocks over the stages of
// `ring` (A at a_offset, B half h at b_offset + h * 128 rows into each stage, in the ring's
// bf16-sized elements; both K-major, 128-byte rows). `scales(kb)` returns block kb's
// Fp8Scales, called one block ahead; `landed(kb, s, scales)` may then fill in the ones that
// arrive with stage s (shared memory), called once its full barrier has completed.
// total[64 h + 4j + 2i + c]: row i, column 128 h + 8j + 2(lane%4) + c.
// `release(s)` frees stage s once its last wgmma has completed (every thread of the warp
// calls it; lane 0 arrives: on this CTA's empty barrier, and for a CTA pair on the peer's too).
// `turns` orders the wgmma issue of the CTA's two consumers (Fp8Turns; consumer -1: none).
// `first` is the ring position of block 0 (a persistent kernel's running stage counter;
// block kb lives in stage (first + kb) % STAGES, phase ((first + kb) / STAGES) & 1).
template <int HALVES, int STAGES, int A_STAGE, int B_STAGE, class ScalesOf, class Landed, class Release>
__device__ __forceinline__ void consume_fp8(const TmaRing<STAGES, A_STAGE, B_STAGE>& ring, int a_offset, int b_offset,
                                            int k_blocks, float (&total)[HALVES * 64], ScalesOf scales,
                                            Landed landed, Release release, Fp8Turns& turns, int first = 0) {
    static_assert(HALVES == 1 || HALVES == 2, "one or two 128-row weight halves");
    constexpr int HALF_ELEMS = 128 * 128 / 2;  // 128 rows of 128 bytes, in bf16-sized elements
    float acc[64];
    Fp8Scales cur = scales(0);
    for (int kb = 0; kb < k_blocks; ++kb) {
        const int s = (first + kb) % STAGES;
        const Fp8Scales next = kb + 1 < k_blocks ? scales(kb + 1) : cur;
        mbar_wait(&ring.full[s], ((first + kb) / STAGES) & 1);
        landed(kb, s, cur);
        const uint64_t da = desc_sw128(ring.a + s * A_STAGE + a_offset, 16, 1024);
#pragma unroll
        for (int h = 0; h < HALVES; ++h) {
            const uint64_t db = desc_sw128(ring.b + s * B_STAGE + b_offset + h * HALF_ELEMS, 16, 1024);
            turns.before();
            wgmma_fence();
#pragma unroll
            for (int kk = 0; kk < 4; ++kk) wgmma_ss_e4m3<128>(acc, da + 2 * kk, db + 2 * kk, kk > 0);
            wgmma_commit();
            turns.after();
            wgmma_wait<0>();
            fence_regs(acc);
            // The last half's tiles are in registers: the producer refills during promotion.
            if (h == HALVES - 1) release(s);
            const float w = h == 0 ? cur.w0 : cur.w1;
            const float s0 = cur.x0 * w, s1 = cur.x1 * w;
            // acc[4j + 2i + c]: row i (bit 1 of the index).
#pragma unroll
            for (int i = 0; i < 64; ++i) total[64 * h + i] = fmaf(acc[i], (i & 2) ? s1 : s0, total[64 * h + i]);
        }
        cur = next;
    }
}

}  // namespace hopper
