// Stream-rate probe: how fast 128 CTAs (one per SM) read the MLA decode's latent cache from
// HBM with no compute, per way of loading it. The TP8 shard's MLA decode (docs/perf.md,
// session 13) waits on its chunks' full barriers at ~3.5 TB/s whatever its ring depth; this
// separates the access pattern from the kernel.
//
//   cache: 64 sequences x 4096 keys x 576 bf16 (302 MB), as the b64 ctx4096 shard reads it;
//   grid (2 splits, 64 sequences), each CTA reading 32 tiles of 64 keys x 1152 bytes.
//   mode box:  9 TMA boxes of 64 columns x 64 keys per tile (128-byte segments 1152 bytes
//              apart, 128-byte swizzle), the kernels' pattern, into a ring of `slots` 8 KiB slots;
//   mode bulk: 9 cp.async.bulk copies of 8 KiB contiguous bytes per tile, same ring;
//   mode ldg:  512 threads, 16-byte ld.global.cg loads over the CTA's contiguous range.
// Consumers (4 warps) wait for a tile's 9 slots, spin `busy_clk` cycles (a stand-in for the
// tile's compute) and release them. Before each timed launch the
// L2 is flushed by reading 256 MB (as bench::timing does); median of 15 CUDA-event timings.
//
// Built and run on the GPU machine (nvcc there), not by build.rs:
//   nvcc -std=c++17 -O3 -arch=sm_90a -I kernels -I <dir of fwdbench_params.h> \
//     scripts/probes/stream_probe.cu -lcuda -o stream_probe && ./stream_probe
#include <cuda.h>
#include <cuda_runtime.h>

#include <cstdio>

#include "hopper.cuh"
#include "probe_common.cuh"

using namespace hopper;

constexpr int SEQS = 64, KEYS = 4096, ROW = 576, SPLITS = 2, BN = 64, CHUNKS = 9;
constexpr int CHUNK_BYTES = BN * 64 * 2, MAX_SLOTS = 25;
constexpr long long CACHE_BYTES = (long long)SEQS * KEYS * ROW * 2;

struct Probe {
    CUtensorMap map;
    const unsigned char* cache;
    int slots;
    int bulk;
    long long busy_clk;  // consumer time per tile (clock64 spin) between landing and release
    int* sink;
};

__global__ void __launch_bounds__(160, 1) stream_ring(const __grid_constant__ Probe p) {
    extern __shared__ unsigned char raw[];
    unsigned char* ring = raw + ((1024 - (smem_addr(raw) & 1023)) & 1023);
    uint64_t* full = reinterpret_cast<uint64_t*>(ring + MAX_SLOTS * CHUNK_BYTES);
    uint64_t* empty = full + MAX_SLOTS;
    const int split = blockIdx.x, b = blockIdx.y, tiles = KEYS / SPLITS / BN, kb = split * (KEYS / SPLITS);
    if (threadIdx.x == 0) {
        for (int s = 0; s < p.slots; ++s) mbar_init(&full[s], 1), mbar_init(&empty[s], 4);
        mbar_init_fence();
    }
    __syncthreads();
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (warp == 0) {
        if (lane == 0) {
            int slot = 0;
            uint32_t parity = 0;
            for (int t = 0; t < tiles; ++t)
                for (int c = 0; c < CHUNKS; ++c) {
                    mbar_wait(&empty[slot], parity ^ 1);
                    mbar_arrive_expect_tx(&full[slot], CHUNK_BYTES);
                    unsigned char* dst = ring + slot * CHUNK_BYTES;
                    if (p.bulk) {
                        const long long off = ((long long)b * KEYS + kb + t * BN) * ROW * 2 + (long long)c * CHUNK_BYTES;
                        bulk_load(dst, p.cache + off, CHUNK_BYTES, &full[slot]);
                    } else {
                        asm volatile(
                            "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, "
                            "{%3, %4, %5}], [%2];" ::"r"(smem_addr(dst)),
                            "l"(reinterpret_cast<uint64_t>(&p.map)), "r"(smem_addr(&full[slot])), "r"(64 * c),
                            "r"(kb + t * BN), "r"(b)
                            : "memory");
                    }
                    if (++slot == p.slots) slot = 0, parity ^= 1;
                }
        }
        return;
    }
    uint32_t acc = 0;
    for (int t = 0; t < tiles; ++t) {
        for (int c = 0; c < CHUNKS; ++c) {
            const int n = t * CHUNKS + c, slot = n % p.slots;
            mbar_wait(&full[slot], (n / p.slots) & 1);
            acc ^= reinterpret_cast<const uint32_t*>(ring + slot * CHUNK_BYTES)[lane];
        }
        // The tile's compute, as the kernels hold a tile's chunks until it is done.
        const long long t0 = clock64();
        while (clock64() - t0 < p.busy_clk) {
        }
        __syncwarp();
        if (lane == 0)
            for (int c = 0; c < CHUNKS; ++c) mbar_arrive(&empty[(t * CHUNKS + c) % p.slots]);
    }
    if (acc == 0x5eedf105u) *p.sink = acc;
}

__global__ void __launch_bounds__(512) stream_ldg(const unsigned char* cache, int* sink) {
    const int split = blockIdx.x, b = blockIdx.y;
    const long long per = (long long)KEYS / SPLITS * ROW * 2 / 16;
    const uint4* src = reinterpret_cast<const uint4*>(cache + ((long long)b * KEYS + split * (KEYS / SPLITS)) * ROW * 2);
    uint32_t acc = 0;
#pragma unroll 8
    for (long long i = threadIdx.x; i < per; i += blockDim.x) {
        const uint4 v = __ldcg(src + i);
        acc ^= v.x ^ v.y ^ v.z ^ v.w;
    }
    if (acc == 0x5eedf105u) *sink = acc;
}

int main() {
    ProbeTimer timer;
    if (timer.init()) return 1;
    unsigned char* cache;
    CK(cudaMalloc(&cache, CACHE_BYTES));
    CK(cudaMemset(cache, 0, CACHE_BYTES));
    Probe p{};
    cuuint64_t dims[3] = {ROW, KEYS, SEQS}, strides[2] = {ROW * 2, (cuuint64_t)KEYS * ROW * 2};
    cuuint32_t box[3] = {64, BN, 1}, estr[3] = {1, 1, 1};
    CUresult r = cuTensorMapEncodeTiled(&p.map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3, cache, dims, strides, box, estr,
                                        CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                                        CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (r != CUDA_SUCCESS) return std::printf("cuTensorMapEncodeTiled: %d\n", (int)r), 1;
    p.cache = cache;
    p.sink = timer.sink;
    const int smem = MAX_SLOTS * CHUNK_BYTES + 2 * MAX_SLOTS * 8 + 1024;
    CK(cudaFuncSetAttribute(stream_ring, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    auto time = [&](auto launch) { return timer.median_ms(launch); };
    const dim3 grid(SPLITS, SEQS);
    auto report = [&](const char* name, float ms) {
        std::printf("%-28s %8.4f ms  %7.1f GB/s\n", name, ms, CACHE_BYTES / (ms * 1e6));
    };
    for (int slots : {9, 18, 25})
        for (int bulk : {0, 1}) {
            p.slots = slots;
            p.bulk = bulk;
            p.busy_clk = 0;
            char name[64];
            std::snprintf(name, sizeof name, "%s slots=%d", bulk ? "bulk" : "box", slots);
            report(name, time([&] { stream_ring<<<grid, 160, smem>>>(p); }));
        }
    for (int slots : {18, 25})
        for (long long busy : {1000, 2000, 3000, 4000, 5000}) {
            p.slots = slots;
            p.bulk = 0;
            p.busy_clk = busy;
            char name[64];
            std::snprintf(name, sizeof name, "box slots=%d busy=%lld", slots, busy);
            report(name, time([&] { stream_ring<<<grid, 160, smem>>>(p); }));
        }
    int clk_khz = 0;
    cudaDeviceGetAttribute(&clk_khz, cudaDevAttrClockRate, 0);
    std::printf("SM clock attribute %d MHz (busy cycles / clock = us per tile)\n", clk_khz / 1000);
    report("ldg 512 threads", time([&] { stream_ldg<<<grid, 512>>>(cache, timer.sink); }));
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
    return 0;
}
