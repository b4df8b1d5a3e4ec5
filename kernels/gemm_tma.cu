// The Hopper layer's gate: a plain TMA + wgmma GEMM, measured against cuBLASLt on the same
// buffers (tests/gpu.rs `hopper_gemm_gate`). Not a product path: linears stay on cuBLASLt
// unless this wins.
//
//   C[M, N] = A[M, K] * B[N, K]^T      bf16 in and out, fp32 accumulation, one rounding.
//   A and B row-major (K contiguous, the layout of activations and of our [out, in] weights);
//   C row-major with row stride ldc. FLOPs 2*M*N*K; bytes (M*K + N*K + M*N) * 2 at best.
//
// v1: tile 128 x 256 x 64, one CTA per tile (not persistent), 384 threads: warpgroup 0 is
// the producer (one thread issues TMA into a 4-stage ring of full/empty mbarriers, 40
// registers), warpgroups 1-2 each own 64 rows of the tile and issue m64n256k16 wgmma from
// shared memory (232 registers), keeping one stage's wgmma group in flight while the next
// stage is waited for (hopper.cuh's TmaRing, which the MoE GEMMs share). The epilogue stores bf16 pairs from registers.
#include "hopper.cuh"

using namespace hopper;

namespace {
constexpr int BM = GEMM_TMA_TILE.m, BN = GEMM_TMA_TILE.n, BK = GEMM_TMA_TILE.k, STAGES = GEMM_TMA_TILE.stages;
constexpr int CONSUMER_WARPS = 8;
constexpr int A_STAGE = BM * BK, B_STAGE = BN * BK;  // elements
}  // namespace

extern "C" __global__ void __launch_bounds__(384, 1) gemm_tma_bf16(const __grid_constant__ GemmTmaParams p) {
    // TMA with the 128-byte swizzle needs 1024-byte aligned destinations; the launch asks for
    // 1 KiB of slack so the ring can start on the next boundary (TmaRing aligns it).
    extern __shared__ unsigned char smem_raw[];
    const TmaRing<STAGES, A_STAGE, B_STAGE> ring(smem_raw, CONSUMER_WARPS);
    const int wg = threadIdx.x / 128, t = threadIdx.x % 128;
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    const int k_tiles = (p.k + BK - 1) / BK;
    __syncthreads();

    if (wg == 0) {
        setmaxnreg_dec<40>();
        if (threadIdx.x == 0) {
            tma_prefetch(&p.a);
            tma_prefetch(&p.b);
            for (int kt = 0; kt < k_tiles; ++kt) {
                const int s = ring.acquire(kt);
                tma_load_2d(ring.a + s * A_STAGE, &p.a, &ring.full[s], kt * BK, m0);
                tma_load_2d(ring.b + s * B_STAGE, &p.b, &ring.full[s], kt * BK, n0);
            }
        }
        return;
    }

    setmaxnreg_inc<232>();
    const int g = wg - 1, warp = t / 32, lane = t % 32;
    float acc[BN / 2];
#pragma unroll
    for (int i = 0; i < BN / 2; ++i) acc[i] = 0.f;
    ring.consume<BN>(acc, g * 64 * BK, 0, k_tiles);

    const int row_base = m0 + g * 64 + warp * 16 + lane / 4;
    const bool pairs = (p.ldc & 1) == 0;
#pragma unroll
    for (int j = 0; j < BN / 8; ++j) {
        const int col = n0 + 8 * j + 2 * (lane % 4);
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            const int row = row_base + 8 * i;
            if (row >= p.m || col >= p.n) continue;
            bf16* dst = p.c + static_cast<long long>(row) * p.ldc + col;
            const float x = acc[4 * j + 2 * i], y = acc[4 * j + 2 * i + 1];
            if (pairs && col + 1 < p.n) {
                *reinterpret_cast<__nv_bfloat162*>(dst) = __floats2bfloat162_rn(x, y);
            } else {
                dst[0] = to_bf16(x);
                if (col + 1 < p.n) dst[1] = to_bf16(y);
            }
        }
    }
}
