// What the standalone probes in scripts/probes/ share: the CUDA error check of their main(),
// and their timing, which is bench::timing's: before each launch the L2 is flushed by reading
// 256 MB (no dirty lines left), then the launch alone between two CUDA events; 3 warm-ups,
// the median of the next 15.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <vector>

// In a function returning int: print the failing call and return 1.
#define CK(x)                                                                             \
    do {                                                                                  \
        cudaError_t e = (x);                                                              \
        if (e != cudaSuccess) {                                                           \
            std::printf("%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e)); \
            return 1;                                                                     \
        }                                                                                 \
    } while (0)

// Reads n 16-byte vectors through L2; writes `sink` only if their XOR is a value a zeroed
// buffer cannot give, so the loads stay and nothing is written.
__global__ void flush_read(const uint4* buf, long long n, int* sink) {
    uint32_t acc = 0;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        const uint4 v = __ldcg(buf + i);
        acc ^= v.x ^ v.y ^ v.z ^ v.w;
    }
    if (acc == 0x5eedf105u) *sink = acc;
}

struct ProbeTimer {
    static constexpr long long FLUSH_BYTES = 256ll << 20;
    unsigned char* flush = nullptr;
    int* sink = nullptr;  // also the probes' kernels' never-written sink
    cudaEvent_t e0, e1;

    int init() {
        CK(cudaMalloc(&flush, FLUSH_BYTES));
        CK(cudaMemset(flush, 0, FLUSH_BYTES));
        CK(cudaMalloc(&sink, 4));
        CK(cudaEventCreate(&e0));
        CK(cudaEventCreate(&e1));
        return 0;
    }

    template <class Launch>
    float median_ms(Launch launch) {
        return median_ms_after([] {}, launch);
    }

    // The same, with `before` enqueued untimed between the flush and the start event.
    template <class Before, class Launch>
    float median_ms_after(Before before, Launch launch) {
        std::vector<float> ms;
        for (int it = 0; it < 18; ++it) {
            flush_read<<<132 * 8, 256>>>(reinterpret_cast<const uint4*>(flush), FLUSH_BYTES / 16, sink);
            before();
            cudaEventRecord(e0);
            launch();
            cudaEventRecord(e1);
            cudaEventSynchronize(e1);
            float t;
            cudaEventElapsedTime(&t, e0, e1);
            if (it >= 3) ms.push_back(t);
        }
        std::sort(ms.begin(), ms.end());
        return ms[ms.size() / 2];
    }
};
