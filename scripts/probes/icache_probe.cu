// Instruction-fetch probe: what a launch pays for its code when L2 is cold. Session 16
// (docs/perf.md) read ~0.25-0.3 us per KB of executed SASS off the per-launch times of
// moe_align's versions (26-160 KB) after bench::timing's L2 flush; this measures it directly.
//
//   straight<N>: N KB of straight-line SASS per thread (N * 64 16-byte FFMAs over eight
//   independent chains, so a warp issues about one a cycle and the code, not the math,
//   is the variable), one result written only if it is a value the inputs cannot give.
//   Timed per size and grid (1 CTA of one warp; 132 CTAs of 128 threads) three ways, each
//   after bench::timing's flush (256 MB read through L2 before each launch):
//     cold:   the launch right after the flush (its code in neither L2 nor the SMs);
//     warm:   after one untimed launch of the same kernel (its code in L2, and in the SMs'
//             instruction caches as far as they hold it);
//     other:  after one untimed launch of a different kernel of the same size, so the flush's
//             tail and a launch's fixed cost are paid as in warm, but this kernel's code is
//             still cold: cold and other agree if the difference to warm is the code.
//   Prints us per case and (cold - warm) / KB.
//
// Built and run on the GPU machine (nvcc there), not by build.rs:
//   nvcc -std=c++17 -O3 -arch=sm_90a -I scripts/probes scripts/probes/icache_probe.cu \
//     -o icache_probe && ./icache_probe
#include <cuda_runtime.h>

#include <cstdio>

#include "probe_common.cuh"

// 64 FFMAs of 16 bytes each = 1 KB of SASS; `asm volatile` keeps every one and its order.
#define FMA8                                                                              \
    asm volatile("fma.rn.f32 %0, %0, %8, %9;\n fma.rn.f32 %1, %1, %8, %9;\n"                \
                 "fma.rn.f32 %2, %2, %8, %9;\n fma.rn.f32 %3, %3, %8, %9;\n"                \
                 "fma.rn.f32 %4, %4, %8, %9;\n fma.rn.f32 %5, %5, %8, %9;\n"                \
                 "fma.rn.f32 %6, %6, %8, %9;\n fma.rn.f32 %7, %7, %8, %9;\n"                \
                 : "+f"(x0), "+f"(x1), "+f"(x2), "+f"(x3), "+f"(x4), "+f"(x5), "+f"(x6), "+f"(x7) \
                 : "f"(a), "f"(b));
#define FMA64 FMA8 FMA8 FMA8 FMA8 FMA8 FMA8 FMA8 FMA8

// TAG makes two otherwise equal instantiations distinct code (the "other" case).
template <int KB, int TAG>
__global__ void straight(float a, float b, float* sink) {
    float x0 = threadIdx.x, x1 = x0 + 1, x2 = x0 + 2, x3 = x0 + 3, x4 = x0 + 4, x5 = x0 + 5, x6 = x0 + 6,
          x7 = x0 + 7 + TAG;
#pragma unroll
    for (int i = 0; i < KB; ++i) {
        FMA64
    }
    const float s = x0 + x1 + x2 + x3 + x4 + x5 + x6 + x7;
    if (s == -1.2345f) *sink = s;  // never true for these inputs; keeps the chains live
}

template <int KB>
int run(ProbeTimer& timer) {
    struct Grid {
        int ctas, threads;
        const char* name;
    } grids[] = {{1, 32, "1x32"}, {132, 128, "132x128"}};
    float* sink = reinterpret_cast<float*>(timer.sink);
    for (const Grid& g : grids) {
        auto launch = [&] { straight<KB, 0><<<g.ctas, g.threads>>>(1.0f, 0.0f, sink); };
        const float cold = timer.median_ms(launch) * 1e3f;
        // warm: an untimed launch of the same kernel between the flush and the timed one
        const float warm = timer.median_ms_after(launch, launch) * 1e3f;
        // other: an untimed launch of a different kernel of the same size first
        const float other =
            timer.median_ms_after([&] { straight<KB, 1><<<g.ctas, g.threads>>>(1.0f, 0.0f, sink); }, launch) * 1e3f;
        CK(cudaGetLastError());
        std::printf("%5d KB %8s   cold %8.2f us   warm %8.2f us   other-first %8.2f us   (cold-warm)/KB %.3f us\n", KB,
                    g.name, cold, warm, other, (cold - warm) / KB);
    }
    return 0;
}

int main() {
    ProbeTimer timer;
    if (timer.init()) return 1;
    if (run<1>(timer) || run<4>(timer) || run<16>(timer) || run<32>(timer) || run<64>(timer) || run<128>(timer))
        return 1;
    CK(cudaDeviceSynchronize());
    return 0;
}
