// Stream-rate probe for GQA decode: how fast a KV cache of Sigma b32's shape (32 sequences x
// 4096 keys x 8 KV heads x d128, K and V 256 MiB each) streams into shared memory with no
// compute, per access pattern. The decode kernel (kernels/attention_decode_tma.cu) reads it at
// ~3.9 TB/s where cuDNN SDPA reaches ~4.2 on the same bytes (docs/perf.md, session 14); this
// separates the pattern (which bytes one CTA asks for, in what order) from the kernel.
//
//   Each CTA: one producer lane filling a ring of `stages` stages of 64 keys' K and V (32 KiB,
//   one full barrier), 4 consumer warps that wait for a stage, spin `busy` cycles (a stand-in
//   for the compute of their 16 keys) and release it. 160 threads, two CTAs per SM at <= 3
//   stages, as the kernel.
//   head/bshd:    CTA (b, kv head), the kernel's pattern on fwdbench's token-major cache: one
//                 5-D box per stage and tensor, 64 columns x 64 keys x 2 chunks (a key's 256
//                 bytes at a 2 KiB stride), 128-byte swizzle.
//   head/bhsd:    the same CTAs on a head-major cache ([b, h, s, d], what the SDPA peers get):
//                 each box is 16 KiB of contiguous bytes.
//   heads8/bshd:  CTA (b, key eighth): all 8 heads of 512 keys, boxes of 8 keys x 8 heads (16
//                 KiB contiguous per box on the token-major cache), one each of K and V a stage.
//   bulk/bhsd:    CTA (b, kv head), 1-D bulk copies of 16 KiB on the head-major cache.
//   rows/bshd:    CTA (b, kv head) on the token-major cache, one 1-D bulk copy per key row
//                 (256 bytes of K, 256 of V) into rows padded to 272 bytes (ldmatrix without
//                 bank conflicts, no swizzle), the 128 copies of a stage issued by the
//                 producer warp's 32 lanes, 4 each.
//   ldgsts/bshd:  CTA (b, kv head) on the token-major cache, the producer warp's lanes copying
//                 16 bytes each with cp.async (LDGSTS, as the cuDNN peer's sm80 kernel does) into
//                 the same 128-byte-swizzled [chunk][key][64] layout the TMA boxes write, one
//                 cp.async.mbarrier.arrive per lane and stage; `warps` producer warps share it.
//   warp/bshd:    the decode kernel's v6: no producer; each of the 4 consumer warps copies
//                 its own 16-key quarter of every stage with cp.async (a commit group per
//                 tile, wait_group stages - 1), spins, and refills the slot it just read.
// Before each timed launch the L2 is flushed by reading 256 MB (as bench::timing does);
// median of 15 CUDA-event timings.
//
// Built and run on the GPU machine (nvcc there), not by build.rs:
//   nvcc -std=c++17 -O3 -arch=sm_90a -I kernels -I <dir of fwdbench_params.h> \
//     scripts/probes/gqa_stream_probe.cu -lcuda -o gqa_stream_probe && ./gqa_stream_probe
#include <cuda.h>
#include <cuda_runtime.h>

#include <cstdio>

#include "hopper.cuh"
#include "probe_common.cuh"

using namespace hopper;

constexpr int B = 32, S = 4096, H = 8, D = 128, KEYS = 64, MAX_STAGES = 6;
constexpr int HALF_STAGE = KEYS * D * 2, STAGE_BYTES = 2 * HALF_STAGE;  // K then V, 16 KiB each
constexpr long long TENSOR_BYTES = (long long)B * S * H * D * 2;

enum Mode { HEAD_BSHD = 0, HEAD_BHSD = 1, HEADS8_BSHD = 2, BULK_BHSD = 3, ROWS_BSHD = 4, LDGSTS_BSHD = 5, WARP_BSHD = 6 };
constexpr int ROW_PITCH = D * 2 + 16, ROWS_HALF = KEYS * ROW_PITCH, ROWS_STAGE = 2 * ROWS_HALF;

struct Probe {
    CUtensorMap k_map, v_map;
    const unsigned char* k;
    const unsigned char* v;
    int mode, stages, producer_warps;
    long long busy_clk;
    int* sink;
};

__device__ __forceinline__ void tma_5d(void* dst, const CUtensorMap* map, uint64_t* bar, int c0, int c1, int c2, int c3,
                                       int c4) {
    asm volatile(
        "cp.async.bulk.tensor.5d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4, %5, %6, "
        "%7}], [%2];" ::"r"(smem_addr(dst)),
        "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_addr(bar)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(c4)
        : "memory");
}

__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dst), "l"(src) : "memory");
}

__global__ void __launch_bounds__(224, 2) gqa_ring(const __grid_constant__ Probe p) {
    extern __shared__ unsigned char raw[];
    unsigned char* ring = raw + ((1024 - (smem_addr(raw) & 1023)) & 1023);
    const bool rows = p.mode == ROWS_BSHD;
    const int stage_bytes = rows ? ROWS_STAGE : STAGE_BYTES;
    uint64_t* full = reinterpret_cast<uint64_t*>(ring + p.stages * stage_bytes);
    uint64_t* empty = full + MAX_STAGES;
    // heads8 CTAs take an eighth of one sequence's keys for all heads; the others one head.
    const bool heads8 = p.mode == HEADS8_BSHD;
    const int b = blockIdx.y, h = heads8 ? 0 : blockIdx.x;
    const int kb = heads8 ? blockIdx.x * (S / 8) : 0, n_stages = (heads8 ? S / 8 : S) / (heads8 ? KEYS / 8 : KEYS);
    if (threadIdx.x == 0) {
        const int full_count = p.mode == LDGSTS_BSHD ? 32 * p.producer_warps : 1;
        for (int s = 0; s < p.stages; ++s) mbar_init(&full[s], full_count), mbar_init(&empty[s], 4);
        mbar_init_fence();
    }
    __syncthreads();
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (warp >= 4 && p.mode == LDGSTS_BSHD) {
        // Unit u of a stage's 1024 16-byte units per tensor: key u / 16, 16-byte group u % 16
        // of the key's 256 bytes (chunk g / 8, column group g % 8, swizzled by key % 8).
        const int pw = warp - 4, nthreads = 32 * p.producer_warps;
        if (pw >= p.producer_warps) return;
        const long long row = H * D * 2;
        const unsigned char* kb0 = p.k + ((long long)b * S * H + h) * D * 2;
        const unsigned char* vb0 = p.v + ((long long)b * S * H + h) * D * 2;
        for (int t = 0; t < n_stages; ++t) {
            const int slot = t % p.stages;
            mbar_wait(&empty[slot], ((t / p.stages) & 1) ^ 1);
            const uint32_t dst = smem_addr(ring + slot * STAGE_BYTES);
            for (int u = pw * 32 + lane; u < KEYS * 16; u += nthreads) {
                const int key = u / 16, g = u % 16;
                const long long src = ((long long)t * KEYS + key) * row + g * 16;
                const uint32_t off = (g / 8) * (KEYS * 128) + key * 128 + (((g % 8) ^ (key & 7)) << 4);
                cp_async_16(dst + off, kb0 + src);
                cp_async_16(dst + HALF_STAGE + off, vb0 + src);
            }
            asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];" ::"r"(smem_addr(&full[slot])) : "memory");
        }
        return;
    }
    if (warp >= 4 && p.mode == WARP_BSHD) return;
    if (p.mode == WARP_BSHD) {
        // Warp w's tile of stage t: keys t * 64 + w * 16 .. + 16, its quarter of each half.
        const long long row = H * D * 2;
        const unsigned char* kb0 = p.k + ((long long)b * S * H + h) * D * 2;
        const unsigned char* vb0 = p.v + ((long long)b * S * H + h) * D * 2;
        const int g = lane % 16;
        auto load = [&](int t) {
            if (t < n_stages) {
                const uint32_t dst = smem_addr(ring + (t % p.stages) * STAGE_BYTES);
                for (int r = lane / 16; r < 16; r += 2) {
                    const int key = warp * 16 + r;
                    const long long src = ((long long)t * KEYS + key) * row + g * 16;
                    const uint32_t off = (g / 8) * (KEYS * 128) + key * 128 + (((g % 8) ^ (key & 7)) << 4);
                    cp_async_16(dst + off, kb0 + src);
                    cp_async_16(dst + HALF_STAGE + off, vb0 + src);
                }
            }
            asm volatile("cp.async.commit_group;" ::: "memory");
        };
        for (int t = 0; t < 2; ++t) load(t);
        uint32_t acc = 0;
        for (int t = 0; t < n_stages; ++t) {
            load(t + 2);  // p.stages == 3: two tiles in flight while this one is read
            asm volatile("cp.async.wait_group 2;" ::: "memory");
            __syncwarp();
            acc ^= reinterpret_cast<const uint32_t*>(ring + (t % p.stages) * STAGE_BYTES + warp * 2048)[lane];
            const long long t0 = clock64();
            while (clock64() - t0 < p.busy_clk) {
            }
            __syncwarp();
        }
        if (acc == 0x5eedf105u) *p.sink = acc;
        return;
    }
    if (warp >= 5) return;
    if (warp == 4 && rows) {
        // Lane l copies key rows l, l + 32 of K and of V: 4 bulk copies a lane and stage.
        const long long row = H * D * 2;
        const unsigned char* kb0 = p.k + ((long long)b * S * H + h) * D * 2;
        const unsigned char* vb0 = p.v + ((long long)b * S * H + h) * D * 2;
        for (int t = 0; t < n_stages; ++t) {
            const int slot = t % p.stages;
            if (lane == 0) {
                mbar_wait(&empty[slot], ((t / p.stages) & 1) ^ 1);
                mbar_arrive_expect_tx(&full[slot], 2 * KEYS * D * 2);
            }
            __syncwarp();
            unsigned char* dst = ring + slot * ROWS_STAGE;
            for (int j = lane; j < KEYS; j += 32) {
                const long long key = (long long)t * KEYS + j;
                bulk_load(dst + j * ROW_PITCH, kb0 + key * row, D * 2, &full[slot]);
                bulk_load(dst + ROWS_HALF + j * ROW_PITCH, vb0 + key * row, D * 2, &full[slot]);
            }
        }
        return;
    }
    if (warp == 4) {
        if (lane == 0) {
            for (int t = 0; t < n_stages; ++t) {
                const int slot = t % p.stages;
                mbar_wait(&empty[slot], ((t / p.stages) & 1) ^ 1);
                mbar_arrive_expect_tx(&full[slot], STAGE_BYTES);
                unsigned char* dst = ring + slot * STAGE_BYTES;
                if (p.mode == BULK_BHSD) {
                    const long long off = (((long long)b * H + h) * S + t * KEYS) * D * 2;
                    bulk_load(dst, p.k + off, HALF_STAGE, &full[slot]);
                    bulk_load(dst + HALF_STAGE, p.v + off, HALF_STAGE, &full[slot]);
                } else if (heads8) {
                    // One box of 8 keys x 8 heads (16 KiB) each of K and V: the same bytes a stage.
                    tma_5d(dst, &p.k_map, &full[slot], 0, 0, kb + t * 8, 0, b);
                    tma_5d(dst + HALF_STAGE, &p.v_map, &full[slot], 0, 0, kb + t * 8, 0, b);
                } else {
                    tma_5d(dst, &p.k_map, &full[slot], 0, t * KEYS, 0, h, b);
                    tma_5d(dst + HALF_STAGE, &p.v_map, &full[slot], 0, t * KEYS, 0, h, b);
                }
            }
        }
        return;
    }
    uint32_t acc = 0;
    for (int t = 0; t < n_stages; ++t) {
        const int slot = t % p.stages;
        mbar_wait(&full[slot], (t / p.stages) & 1);
        acc ^= reinterpret_cast<const uint32_t*>(ring + slot * stage_bytes + warp * 4096)[lane];
        const long long t0 = clock64();
        while (clock64() - t0 < p.busy_clk) {
        }
        __syncwarp();
        if (lane == 0) mbar_arrive(&empty[slot]);
    }
    if (acc == 0x5eedf105u) *p.sink = acc;
}

// A 5-D bf16 map with 128-byte swizzle: dims (64 columns, d1, d2, d3, d4), byte strides of
// dims 1-4, box (64, b1, b2, b3, b4).
static int encode(CUtensorMap* map, const void* base, const cuuint64_t (&dims)[5], const cuuint64_t (&strides)[4],
                  const cuuint32_t (&box)[5]) {
    cuuint32_t estr[5] = {1, 1, 1, 1, 1};
    CUresult r = cuTensorMapEncodeTiled(map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 5, const_cast<void*>(base), dims, strides,
                                        box, estr, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                                        CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (r != CUDA_SUCCESS) std::printf("cuTensorMapEncodeTiled: %d\n", (int)r);
    return r != CUDA_SUCCESS;
}

int main() {
    ProbeTimer timer;
    if (timer.init()) return 1;
    unsigned char *k, *v;
    CK(cudaMalloc(&k, TENSOR_BYTES));
    CK(cudaMalloc(&v, TENSOR_BYTES));
    CK(cudaMemset(k, 0, TENSOR_BYTES));
    CK(cudaMemset(v, 0, TENSOR_BYTES));
    const int smem = MAX_STAGES * ROWS_STAGE + 2 * MAX_STAGES * 8 + 1024;
    const int smem2 = 3 * ROWS_STAGE + 2 * MAX_STAGES * 8 + 1024;  // <= 3 stages: two CTAs per SM
    CK(cudaFuncSetAttribute(gqa_ring, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    auto time = [&](auto launch) { return timer.median_ms(launch); };
    const cuuint64_t row = H * D * 2, seq = (cuuint64_t)S * row;
    // Token-major [b, s, h, d]: (64 cols, keys, 2 chunks, heads, b).
    const cuuint64_t bshd_dims[5] = {64, S, 2, H, B}, bshd_str[4] = {row, 128, D * 2, seq};
    // Head-major [b, h, s, d]: (64 cols, keys, 2 chunks, heads, b).
    const cuuint64_t bhsd_dims[5] = {64, S, 2, H, B}, bhsd_str[4] = {D * 2, 128, (cuuint64_t)S * D * 2, seq};
    // All heads of 8 keys, token-major: (64 cols, 2 chunks, keys, heads, b), keys outside heads.
    const cuuint64_t h8_dims[5] = {64, 2, S, H, B}, h8_str[4] = {128, row, D * 2, seq};
    const cuuint32_t head_box[5] = {64, KEYS, 2, 1, 1}, h8_box[5] = {64, 2, 8, H, 1};
    struct Case {
        const char* name;
        int mode;
    };
    const Case cases[] = {{"head/bshd", HEAD_BSHD}, {"head/bhsd", HEAD_BHSD}, {"heads8/bshd", HEADS8_BSHD},
                          {"bulk/bhsd", BULK_BHSD}, {"rows/bshd", ROWS_BSHD}, {"ldgsts1/bshd", LDGSTS_BSHD},
                          {"ldgsts2/bshd", LDGSTS_BSHD}, {"warp/bshd", WARP_BSHD}};
    for (const Case& c : cases) {
        Probe p{};
        p.k = k;
        p.v = v;
        p.sink = timer.sink;
        p.mode = c.mode;
        p.producer_warps = c.name[6] == '2' ? 2 : 1;
        int bad = 0;
        if (c.mode == HEAD_BSHD)
            bad = encode(&p.k_map, k, bshd_dims, bshd_str, head_box) | encode(&p.v_map, v, bshd_dims, bshd_str, head_box);
        if (c.mode == HEAD_BHSD)
            bad = encode(&p.k_map, k, bhsd_dims, bhsd_str, head_box) | encode(&p.v_map, v, bhsd_dims, bhsd_str, head_box);
        if (c.mode == HEADS8_BSHD)
            bad = encode(&p.k_map, k, h8_dims, h8_str, h8_box) | encode(&p.v_map, v, h8_dims, h8_str, h8_box);
        if (bad) return 1;
        const dim3 grid(c.mode == HEADS8_BSHD ? 8 : H, B);
        for (int stages : {2, 3, 6})
            for (long long busy : {0ll, 800ll, 1600ll}) {
                if (stages == 6 && busy > 0) continue;
                if (c.mode == WARP_BSHD && stages != 3) continue;  // its wait_group depth is 2
                p.stages = stages;
                p.busy_clk = busy;
                const int bytes = stages <= 3 ? smem2 : smem;
                const float ms = time([&] { gqa_ring<<<grid, 224, bytes>>>(p); });
                std::printf("%-12s stages=%d busy=%4lld %8.4f ms  %7.1f GB/s\n", c.name, stages, busy, ms,
                            2.0 * TENSOR_BYTES / (ms * 1e6));
            }
        CK(cudaGetLastError());
    }
    CK(cudaDeviceSynchronize());
    return 0;
}
