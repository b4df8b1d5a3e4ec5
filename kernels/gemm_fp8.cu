// The dense block-scaled FP8 GEMM of every FP8 Linear (DeepSeek-V3's format, issue 9):
//
//   out[M, N] = alpha * sum_kb sx[kb, m] * sw[n / 128, kb] * (xq[m, kb] . Wq[n, kb]) (+ bias[n])
//
//   xq [M, K] e4m3 codes from quant_act_fp8, sx [K/128, M] its 1x128 group scales;
//   Wq [N, K] e4m3 codes, sw [ceil(N/128), sw_ld] its 128x128 block scales (quant::Fp8Layout,
//   each operand's scales behind its codes); bf16 out, row stride ldo; K a multiple of 128
//   (checked on the host: FP8 plans only quantize such depths). FLOPs 2*M*N*K; bytes M*K +
//   N*K + 2*M*N at best, plus the scales.
//
// Promotion as DeepSeek's DeepGEMM does it: the FP8 tensor cores accumulate with ~14 bits of
// mantissa, so each 128-deep K block runs, per 128-column half of the tile, 4 wgmma
// m64n128k32 into a fresh fp32 accumulator, and the consumer then adds acc * sx[row, kb] *
// sw[nb, kb] into its running total in full fp32. That is the same per-K-block sum the CPU reference forms (exec::cpu::ops::quant), so
// the two differ only by fp32 summation order and the tensor cores' internal accumulation.
//
// Tile 128 x 256 x 128: BK 128 bytes is one 128-byte swizzle row of e4m3, BN 256 is two
// weight scale blocks (fp8_block.cuh's halves), so every thread needs two weight scales per K
// block and two activation scales (its two rows). 128 x 128 tiles read 128 FLOP per byte of
// L2 and topped out at 755-852 TFLOP/s, L2-bound; 128 x 256 reads 170. 384 threads, one CTA
// per tile: warpgroup 0 is the producer (one thread issues TMA into a 4-stage ring, 40
// registers), warpgroups 1-2 each own 64 rows (232 registers: 64 for a half's accumulator, 128
// for the total), running fp8_block.cuh's promotion loop; the two consumers interleave on the
// tensor cores, which hides each one's wait and promotion (DeepGEMM's structure, without its
// persistent scheduler). The ring is hopper.cuh's TmaRing, whose stages count bf16 elements:
// a 128 x 128-byte FP8 tile is 128 x 64 of them, the same swizzled layout.
//
// Raster: a 1-D grid walked in groups of GEMM_FP8_GROUP_M M-blocks across all n-tiles, so a
// wave's CTAs share A and B tiles in L2 instead of streaming all of W once per M-block.
// Tails: TMA zero-fills rows past M and N; the scale loads and stores mask them. A consumer
// whose 64 rows all lie past M (M <= 64, decode) only frees the stages.
#include "fp8_block.cuh"

using namespace hopper;

namespace {
constexpr int BM = GEMM_FP8_TILE.m, BN = GEMM_FP8_TILE.n, BK = GEMM_FP8_TILE.k, STAGES = GEMM_FP8_TILE.stages;
constexpr int GROUP_M = GEMM_FP8_GROUP_M;
constexpr int CONSUMER_WARPS = 8;
constexpr int A_STAGE = BM * BK / 2, B_STAGE = BN * BK / 2;  // bf16-sized elements of TmaRing
static_assert(BK == 128 && BN == 256, "one swizzle row of e4m3 and two weight scale blocks per tile");
}  // namespace

extern "C" __global__ void __launch_bounds__(384, 1) gemm_fp8_block(const __grid_constant__ GemmFp8Params p) {
    const int n_tiles = p.n_tiles, m_blocks = gridDim.x / n_tiles;
    const int group_first = blockIdx.x / (GROUP_M * n_tiles) * GROUP_M;
    const int group_rows = min(GROUP_M, m_blocks - group_first);
    const int in_group = blockIdx.x - group_first * n_tiles;
    const int m_block = group_first + in_group % group_rows, n_block = in_group / group_rows;
    const int m0 = m_block * BM, n0 = n_block * BN;
    const int k_blocks = p.k / BK;

    extern __shared__ unsigned char smem_raw[];
    const TmaRing<STAGES, A_STAGE, B_STAGE> ring(smem_raw, CONSUMER_WARPS);
    __syncthreads();
    const int wg = threadIdx.x / 128, t = threadIdx.x % 128;

    if (wg == 0) {
        setmaxnreg_dec<40>();
        if (threadIdx.x == 0) {
            tma_prefetch(&p.a);
            tma_prefetch(&p.b);
            for (int kb = 0; kb < k_blocks; ++kb) {
                const int s = ring.acquire(kb);
                tma_load_2d(ring.a + s * A_STAGE, &p.a, &ring.full[s], kb * BK, m0);
                tma_load_2d(ring.b + s * B_STAGE, &p.b, &ring.full[s], kb * BK, n0);
            }
        }
        return;
    }

    setmaxnreg_inc<232>();
    const int g = wg - 1, warp = t / 32, lane = t % 32;
    if (m0 + g * 64 >= p.m) {
        ring.drain(k_blocks);
        return;
    }
    // Accumulator d[4j + 2i + c]: row 16 warp + lane/4 + 8i, column 8j + 2(lane%4) + c.
    const int r0 = m0 + g * 64 + warp * 16 + lane / 4, r1 = r0 + 8;
    const bool live0 = r0 < p.m, live1 = r1 < p.m;
    // The tile's two 128-column weight scale blocks; past N the second is clamped to the
    // last block (its columns are zero-filled and never stored).
    const float* sw0 = p.sw + static_cast<long long>(2 * n_block) * p.sw_ld;
    const float* sw1 = p.sw + static_cast<long long>(min(2 * n_block + 1, (p.n - 1) / 128)) * p.sw_ld;
    float total[BN / 2];
#pragma unroll
    for (int i = 0; i < BN / 2; ++i) total[i] = 0.f;
    Fp8Turns turns{-1};
    consume_fp8<BN / 128>(ring, g * 64 * BK / 2, 0, k_blocks, total, [&](int kb) {
        const float* sx = p.sx + static_cast<long long>(kb) * p.m;
        return Fp8Scales{live0 ? __ldg(sx + r0) : 0.f, live1 ? __ldg(sx + r1) : 0.f, __ldg(sw0 + kb), __ldg(sw1 + kb)};
    }, [](int, int, Fp8Scales&) {}, [&](int s) {
        if (threadIdx.x % 32 == 0) mbar_arrive(&ring.empty[s]);
    }, turns);

    const bool pairs = (p.ldo & 1) == 0;
#pragma unroll
    for (int j = 0; j < BN / 8; ++j) {
        // total[64h + 4j' + 2i + c] holds column 128h + 8j' + 2(lane%4) + c.
        const int col = n0 + (j / 16) * 128 + 8 * (j % 16) + 2 * (lane % 4);
        if (col >= p.n) continue;
        const bool two = col + 1 < p.n;
        const float b0 = p.bias ? to_f32(p.bias[col]) : 0.f;
        const float b1 = p.bias && two ? to_f32(p.bias[col + 1]) : 0.f;
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            const int row = i ? r1 : r0;
            if (row >= p.m) continue;
            const float x = fmaf(total[4 * j + 2 * i], p.alpha, b0), y = fmaf(total[4 * j + 2 * i + 1], p.alpha, b1);
            bf16* dst = p.out + static_cast<long long>(row) * p.ldo + col;
            if (pairs && two) {
                *reinterpret_cast<__nv_bfloat162*>(dst) = __floats2bfloat162_rn(x, y);
            } else {
                dst[0] = to_bf16(x);
                if (two) dst[1] = to_bf16(y);
            }
        }
    }
}
