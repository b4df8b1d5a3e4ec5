// Standalone test + timing harness for kernels/moe.cu (not built by build.rs).
//
//   nvcc -gencode=arch=compute_90a,code=sm_90a -O3 -std=c++17 -I kernels kernels/dev/moe_test.cu -o /tmp/t && /tmp/t
//   (optional argument "quick": small shapes only, no timing; "sweep": times GEMM tile
//   variants of the template on DeepSeek/Qwen decode and prefill, to pick the entries)
//
// Runs the whole pipeline align -> gemm13 -> act_mul -> gemm2 -> combine (act_mul is this
// file's own copy of kernels/act.cu's math) on hashed random data (never zeros) with every
// output buffer poisoned with NaN first, and checks:
//   - align: sorted_slots / block_expert / slot_to_sorted / total_padded equal a CPU
//     reference exactly (the order inside an expert's group is the slot order);
//   - y: no NaN in any row (tokens with no local expert must come out 0, or unchanged under
//     accumulate), padding columns past `hidden` in y's row stride left untouched, and for
//     sampled tokens (all of them on small shapes) rel-L2 against a CPU reference that
//     mirrors the bf16 roundings of the pipeline (h13, act output, expert output), fp32/double
//     accumulation.
// Tolerance: rel-L2 <= 1e-2 and max-abs <= 5% of max|ref|. The roundings are mirrored, so the
// only differences are fp32 summation order flipping a bf16 rounding here and there (seen
// around 1e-3); a wrong row, expert or weight gives rel-L2 of order 1.
// Then times decode (T = 1, 8, 64: GB/s of the touched experts' weights) and prefill
// (T = 4096: TFLOP/s of 2*R*3*H*I, R local (token, expert) pairs) for the DeepSeek-V3 and
// Qwen3-235B expert shapes with all experts local, against 4277 GB/s and 812 TFLOP/s.
#include "moe.cu"

#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#define CK(call)                                                                                  \
    do {                                                                                          \
        cudaError_t err_ = (call);                                                                \
        if (err_ != cudaSuccess) {                                                                \
            fprintf(stderr, "CUDA error %s at %s:%d: %s\n", cudaGetErrorString(err_), __FILE__, \
                    __LINE__, #call);                                                             \
            exit(1);                                                                              \
        }                                                                                         \
    } while (0)

static const double PEAK_GBS = 4277.0, PEAK_TFLOPS = 812.0;
static int g_pass = 0, g_fail = 0;

// ---------------------------------------------------------------- host bf16 helpers
static inline float bf2f(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline float round_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return f;
    u += 0x7fffu + ((u >> 16) & 1u);
    u &= 0xffff0000u;
    memcpy(&f, &u, 4);
    return f;
}

// ---------------------------------------------------------------- device helpers
__device__ __host__ inline uint64_t mix64(uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// Uniform in [-scale, scale), never exactly zero in practice (53-bit hash -> 24-bit grid).
__global__ void fill_hash(bf16* p, size_t n, uint64_t seed, float scale) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const uint64_t h = mix64(seed * 0x100000001b3ull + i);
        const float u = ((h >> 40) + 0.5f) * (1.0f / 16777216.0f);
        p[i] = __float2bfloat16_rn((2.f * u - 1.f) * scale);
    }
}

enum Act { ACT_SILU = 0, ACT_GELU = 1 };

__device__ __host__ inline float act_fn(float g, int act) {
    if (act == ACT_SILU) return g / (1.f + expf(-g));
    return 0.5f * g * (1.f + erff(g * 0.70710678118654752f));
}

// The engine's act_mul contract: out[r, i] = act(in[r, i]) * in[r, I + i], one rounding.
__global__ void act_mul_ref(const bf16* in, int in_ld, bf16* out, int out_ld, int rows, int inter, int act) {
    const size_t total = (size_t)rows * inter;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < total; idx += (size_t)gridDim.x * blockDim.x) {
        const size_t r = idx / inter, i = idx % inter;
        const float g = to_f32(in[r * in_ld + i]), u = to_f32(in[r * in_ld + inter + i]);
        out[r * out_ld + i] = to_bf16(act_fn(g, act) * u);
    }
}

static void fill(bf16* p, size_t n, uint64_t seed, float scale) {
    fill_hash<<<2048, 256>>>(p, n, seed, scale);
    CK(cudaGetLastError());
}

// ---------------------------------------------------------------- sizes (mirror moe.rs)
static long long max_sorted_for(long long tokens, int top_k, int num_local, int bm) {
    const long long slots = tokens * top_k;
    const long long groups = std::min<long long>(num_local, slots);
    const long long rows = slots + groups * (bm - 1);
    return std::max<long long>(bm, (rows + bm - 1) / bm * bm);
}
static int choose_block_m(long long tokens, int top_k, int num_experts) {
    const double per_expert = (double)tokens * top_k / num_experts;
    if (per_expert <= 8.0) return 16;
    if (per_expert <= 96.0) return 64;
    return 128;
}

struct GemmEntry {
    void (*fn)(MoeGemmParams);
    int bm, bn, threads, smem;
};
static GemmEntry gemm_entry(int bm) {
    switch (bm) {
        case 16: return {moe_gemm_m16, 16, MoeGemmM16::BN, MoeGemmM16::THREADS, MoeGemmM16::SMEM_BYTES};
        case 64: return {moe_gemm_m64, 64, MoeGemmM64::BN, MoeGemmM64::THREADS, MoeGemmM64::SMEM_BYTES};
        default: return {moe_gemm_m128, 128, MoeGemmM128::BN, MoeGemmM128::THREADS, MoeGemmM128::SMEM_BYTES};
    }
}

// ---------------------------------------------------------------- a model's experts on the GPU
struct Model {
    std::string name;
    int num_experts, num_local, expert_start, top_k, hidden, inter, act;
    bf16 *w13 = nullptr, *w2 = nullptr;
    uint64_t seed;
    size_t w13_elems() const { return (size_t)num_local * 2 * inter * hidden; }
    size_t w2_elems() const { return (size_t)num_local * hidden * inter; }
    double expert_bytes() const { return 3.0 * hidden * inter * 2.0; }
};

static void model_alloc(Model& m) {
    CK(cudaMalloc(&m.w13, m.w13_elems() * 2));
    CK(cudaMalloc(&m.w2, m.w2_elems() * 2));
    fill(m.w13, m.w13_elems(), m.seed * 3 + 1, 1.f / sqrtf((float)m.hidden) * 1.7f);
    fill(m.w2, m.w2_elems(), m.seed * 3 + 2, 1.f / sqrtf((float)m.inter) * 1.7f);
    CK(cudaDeviceSynchronize());
}
static void model_free(Model& m) {
    CK(cudaFree(m.w13));
    CK(cudaFree(m.w2));
    m.w13 = m.w2 = nullptr;
}

// ---------------------------------------------------------------- one batch of tokens
struct Batch {
    int tokens, x_ld, y_ld, bm;
    bool accumulate;
    long long max_sorted, max_blocks;
    std::vector<int> ids;
    std::vector<float> weights;
    bf16 *x, *h13, *act, *c2, *y;
    int *d_ids, *sorted, *block_expert, *slot_to_sorted, *total;
    float* d_weights;
};

enum Routing { ROUTE_UNIFORM, ROUTE_SKEWED };

static void batch_make(Batch& b, const Model& m, int tokens, int bm, int x_pad, int y_pad, bool accumulate,
                       Routing routing, uint64_t seed) {
    b.tokens = tokens;
    b.bm = bm;
    b.x_ld = m.hidden + x_pad;
    b.y_ld = m.hidden + y_pad;
    b.accumulate = accumulate;
    b.max_sorted = max_sorted_for(tokens, m.top_k, m.num_local, bm);
    b.max_blocks = b.max_sorted / bm;
    std::mt19937_64 rng(seed);
    b.ids.assign((size_t)tokens * m.top_k, 0);
    b.weights.assign((size_t)tokens * m.top_k, 0.f);
    std::vector<int> perm(m.num_experts);
    for (int t = 0; t < tokens; ++t) {
        for (int e = 0; e < m.num_experts; ++e) perm[e] = e;
        for (int j = 0; j < m.top_k; ++j) {
            int pick;
            if (routing == ROUTE_SKEWED) {
                pick = m.expert_start + j;  // every token on the same k experts: many blocks per expert
            } else {
                const int r = j + (int)(rng() % (uint64_t)(m.num_experts - j));
                std::swap(perm[j], perm[r]);
                pick = perm[j];
            }
            b.ids[(size_t)t * m.top_k + j] = pick;
            b.weights[(size_t)t * m.top_k + j] = 0.1f + 0.9f * (float)((rng() >> 11) * (1.0 / 9007199254740992.0));
        }
    }
    const size_t slots = b.ids.size();
    CK(cudaMalloc(&b.x, (size_t)tokens * b.x_ld * 2));
    CK(cudaMalloc(&b.y, (size_t)tokens * b.y_ld * 2));
    CK(cudaMalloc(&b.h13, (size_t)b.max_sorted * 2 * m.inter * 2));
    CK(cudaMalloc(&b.act, (size_t)b.max_sorted * m.inter * 2));
    CK(cudaMalloc(&b.c2, (size_t)b.max_sorted * m.hidden * 2));
    CK(cudaMalloc(&b.d_ids, slots * 4));
    CK(cudaMalloc(&b.d_weights, slots * 4));
    CK(cudaMalloc(&b.sorted, b.max_sorted * 4));
    CK(cudaMalloc(&b.block_expert, b.max_blocks * 4));
    CK(cudaMalloc(&b.slot_to_sorted, slots * 4));
    CK(cudaMalloc(&b.total, 4));
    CK(cudaMemcpy(b.d_ids, b.ids.data(), slots * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(b.d_weights, b.weights.data(), slots * 4, cudaMemcpyHostToDevice));
    fill(b.x, (size_t)tokens * b.x_ld, seed ^ 0x55, 1.f);
}
static void batch_free(Batch& b) {
    for (void* p : {(void*)b.x, (void*)b.y, (void*)b.h13, (void*)b.act, (void*)b.c2, (void*)b.d_ids,
                    (void*)b.d_weights, (void*)b.sorted, (void*)b.block_expert, (void*)b.slot_to_sorted,
                    (void*)b.total})
        CK(cudaFree(p));
}

// NaN everywhere the pipeline writes; garbage in the index arrays. Under accumulate, y's
// first `hidden` columns get random values and its stride gap stays NaN.
static void batch_poison(Batch& b, const Model& m) {
    CK(cudaMemset(b.h13, 0xff, (size_t)b.max_sorted * 2 * m.inter * 2));
    CK(cudaMemset(b.act, 0xff, (size_t)b.max_sorted * m.inter * 2));
    CK(cudaMemset(b.c2, 0xff, (size_t)b.max_sorted * m.hidden * 2));
    CK(cudaMemset(b.y, 0xff, (size_t)b.tokens * b.y_ld * 2));
    if (b.accumulate)
        CK(cudaMemcpy2D(b.y, b.y_ld * 2, b.x, b.x_ld * 2, m.hidden * 2, b.tokens, cudaMemcpyDeviceToDevice));
    CK(cudaMemset(b.sorted, 0x7f, b.max_sorted * 4));
    CK(cudaMemset(b.block_expert, 0x7f, b.max_blocks * 4));
    CK(cudaMemset(b.slot_to_sorted, 0x7f, b.ids.size() * 4));
    CK(cudaMemset(b.total, 0x7f, 4));
}

static MoeGemmParams gemm13_params(const Batch& b, const Model& m) {
    MoeGemmParams g1{};
    g1.a = b.x;
    g1.a_ld = b.x_ld;
    g1.a_rows_are_tokens = 1;
    g1.top_k = m.top_k;
    g1.sorted_slots = b.sorted;
    g1.block_expert = b.block_expert;
    g1.total_padded = b.total;
    g1.w = m.w13;
    g1.w_expert_stride = (long long)2 * m.inter * m.hidden;
    g1.n = 2 * m.inter;
    g1.k = m.hidden;
    g1.c = b.h13;
    g1.c_ld = 2 * m.inter;
    g1.max_blocks_m = (int)b.max_blocks;
    return g1;
}
static MoeGemmParams gemm2_params(const Batch& b, const Model& m) {
    MoeGemmParams g2 = gemm13_params(b, m);
    g2.a = b.act;
    g2.a_ld = m.inter;
    g2.a_rows_are_tokens = 0;
    g2.w = m.w2;
    g2.w_expert_stride = (long long)m.hidden * m.inter;
    g2.n = m.hidden;
    g2.k = m.inter;
    g2.c = b.c2;
    g2.c_ld = m.hidden;
    return g2;
}

// The five launches. `ev` (6 events) brackets each stage when given.
static void run_pipeline(const Batch& b, const Model& m, cudaStream_t st, cudaEvent_t* ev = nullptr) {
    auto mark = [&](int i) {
        if (ev) CK(cudaEventRecord(ev[i], st));
    };
    const GemmEntry g = gemm_entry(b.bm);
    mark(0);
    MoeAlignParams ap{};
    ap.topk_ids = b.d_ids;
    ap.tokens = b.tokens;
    ap.top_k = m.top_k;
    ap.expert_start = m.expert_start;
    ap.num_local_experts = m.num_local;
    ap.block_m = b.bm;
    ap.sorted_slots = b.sorted;
    ap.block_expert = b.block_expert;
    ap.slot_to_sorted = b.slot_to_sorted;
    ap.total_padded = b.total;
    ap.max_sorted = (int)b.max_sorted;
    moe_align<<<m.num_local, MOE_ALIGN_THREADS, m.num_local * 4, st>>>(ap);
    CK(cudaGetLastError());
    mark(1);

    const MoeGemmParams g1 = gemm13_params(b, m);
    g.fn<<<dim3((g1.n + g.bn - 1) / g.bn, (unsigned)b.max_blocks), g.threads, g.smem, st>>>(g1);
    CK(cudaGetLastError());
    mark(2);

    act_mul_ref<<<2048, 256, 0, st>>>(b.h13, 2 * m.inter, b.act, m.inter, (int)b.max_sorted, m.inter, m.act);
    CK(cudaGetLastError());
    mark(3);

    const MoeGemmParams g2 = gemm2_params(b, m);
    g.fn<<<dim3((g2.n + g.bn - 1) / g.bn, (unsigned)b.max_blocks), g.threads, g.smem, st>>>(g2);
    CK(cudaGetLastError());
    mark(4);

    MoeCombineParams cp{};
    cp.c2 = b.c2;
    cp.c2_ld = m.hidden;
    cp.slot_to_sorted = b.slot_to_sorted;
    cp.topk_weights = b.d_weights;
    cp.tokens = b.tokens;
    cp.top_k = m.top_k;
    cp.hidden = m.hidden;
    cp.y = b.y;
    cp.y_ld = b.y_ld;
    cp.accumulate = b.accumulate ? 1 : 0;
    moe_combine<<<b.tokens, MOE_COMBINE_THREADS, 0, st>>>(cp);
    CK(cudaGetLastError());
    mark(5);
}

// ---------------------------------------------------------------- checks
// Exact CPU model of moe_align.
static std::string check_align(const Batch& b, const Model& m) {
    const size_t slots = b.ids.size();
    std::vector<std::vector<int>> groups(m.num_local);
    for (size_t s = 0; s < slots; ++s) {
        const int le = b.ids[s] - m.expert_start;
        if (le >= 0 && le < m.num_local) groups[le].push_back((int)s);
    }
    std::vector<int> sorted(b.max_sorted, -1), block_expert(b.max_blocks, -1), s2s(slots, -1);
    int pos = 0;
    for (int e = 0; e < m.num_local; ++e) {
        const int padded = ((int)groups[e].size() + b.bm - 1) / b.bm * b.bm;
        for (size_t i = 0; i < groups[e].size(); ++i) {
            sorted[pos + i] = groups[e][i];
            s2s[groups[e][i]] = pos + (int)i;
        }
        for (int r = 0; r < padded; r += b.bm) block_expert[(pos + r) / b.bm] = e;
        pos += padded;
    }
    if (pos > b.max_sorted) return "reference overflowed max_sorted (bound is wrong)";
    int total = 0;
    std::vector<int> g_sorted(b.max_sorted), g_be(b.max_blocks), g_s2s(slots);
    CK(cudaMemcpy(&total, b.total, 4, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(g_sorted.data(), b.sorted, b.max_sorted * 4, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(g_be.data(), b.block_expert, b.max_blocks * 4, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(g_s2s.data(), b.slot_to_sorted, slots * 4, cudaMemcpyDeviceToHost));
    char msg[160];
    if (total != pos) {
        snprintf(msg, sizeof msg, "total_padded %d != %d", total, pos);
        return msg;
    }
    for (long long i = 0; i < b.max_sorted; ++i)
        if (g_sorted[i] != sorted[i]) {
            snprintf(msg, sizeof msg, "sorted_slots[%lld] = %d, want %d", i, g_sorted[i], sorted[i]);
            return msg;
        }
    for (long long i = 0; i < b.max_blocks; ++i)
        if (g_be[i] != block_expert[i]) {
            snprintf(msg, sizeof msg, "block_expert[%lld] = %d, want %d", i, g_be[i], block_expert[i]);
            return msg;
        }
    for (size_t i = 0; i < slots; ++i)
        if (g_s2s[i] != s2s[i]) {
            snprintf(msg, sizeof msg, "slot_to_sorted[%zu] = %d, want %d", i, g_s2s[i], s2s[i]);
            return msg;
        }
    return "";
}

struct HostExpert {
    std::vector<uint16_t> w13, w2;
};

struct RefResult {
    double rel_l2 = 0, max_abs = 0, max_ref = 0;
    long long nan_count = 0, gap_touched = 0;
    int checked_tokens = 0;
};

// y for the sampled tokens, mirroring the pipeline's roundings; all rows checked for NaN.
static RefResult check_output(const Batch& b, const Model& m, int max_ref_tokens) {
    RefResult res;
    const int H = m.hidden, I = m.inter, k = m.top_k;
    std::vector<uint16_t> y((size_t)b.tokens * b.y_ld), x((size_t)b.tokens * b.x_ld);
    CK(cudaMemcpy(y.data(), b.y, y.size() * 2, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(x.data(), b.x, x.size() * 2, cudaMemcpyDeviceToHost));
    for (int t = 0; t < b.tokens; ++t) {
        for (int h = 0; h < H; ++h)
            if (std::isnan(bf2f(y[(size_t)t * b.y_ld + h]))) ++res.nan_count;
        for (int h = H; h < b.y_ld; ++h)
            if (y[(size_t)t * b.y_ld + h] != 0xffff) ++res.gap_touched;
    }
    std::vector<int> sample;
    if (b.tokens <= max_ref_tokens) {
        for (int t = 0; t < b.tokens; ++t) sample.push_back(t);
    } else {
        for (int i = 0; i < max_ref_tokens; ++i)
            sample.push_back((int)((long long)i * (b.tokens - 1) / (max_ref_tokens - 1)));
    }
    res.checked_tokens = (int)sample.size();
    std::map<int, HostExpert> experts;
    for (int t : sample)
        for (int j = 0; j < k; ++j) {
            const int le = b.ids[(size_t)t * k + j] - m.expert_start;
            if (le < 0 || le >= m.num_local || experts.count(le)) continue;
            HostExpert& he = experts[le];
            he.w13.resize((size_t)2 * I * H);
            he.w2.resize((size_t)H * I);
            CK(cudaMemcpy(he.w13.data(), m.w13 + (size_t)le * 2 * I * H, he.w13.size() * 2, cudaMemcpyDeviceToHost));
            CK(cudaMemcpy(he.w2.data(), m.w2 + (size_t)le * H * I, he.w2.size() * 2, cudaMemcpyDeviceToHost));
        }
    std::vector<std::vector<double>> ref(sample.size(), std::vector<double>(H, 0.0));
    std::atomic<int> next{0};
    auto worker = [&]() {
        std::vector<float> xf(H), gate(I), up(I), a(I);
        for (int si; (si = next.fetch_add(1)) < (int)sample.size();) {
            const int t = sample[si];
            std::vector<double>& out = ref[si];
            for (int h = 0; h < H; ++h) {
                xf[h] = bf2f(x[(size_t)t * b.x_ld + h]);
                out[h] = b.accumulate ? (double)xf[h] : 0.0;  // accumulate runs start from y = x
            }
            for (int j = 0; j < k; ++j) {
                const int le = b.ids[(size_t)t * k + j] - m.expert_start;
                if (le < 0 || le >= m.num_local) continue;
                const HostExpert& he = experts.at(le);
                for (int i = 0; i < 2 * I; ++i) {
                    const uint16_t* wr = he.w13.data() + (size_t)i * H;
                    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
                    int h = 0;
                    for (; h + 8 <= H; h += 8)
                        for (int q = 0; q < 8; ++q) acc[q] += xf[h + q] * bf2f(wr[h + q]);
                    for (; h < H; ++h) acc[0] += xf[h] * bf2f(wr[h]);
                    float s = 0;
                    for (int q = 0; q < 8; ++q) s += acc[q];
                    (i < I ? gate[i] : up[i - I]) = round_bf16(s);
                }
                for (int i = 0; i < I; ++i) a[i] = round_bf16(act_fn(gate[i], m.act) * up[i]);
                const double w = b.weights[(size_t)t * k + j];
                for (int h = 0; h < H; ++h) {
                    const uint16_t* wr = he.w2.data() + (size_t)h * I;
                    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
                    int i = 0;
                    for (; i + 8 <= I; i += 8)
                        for (int q = 0; q < 8; ++q) acc[q] += a[i + q] * bf2f(wr[i + q]);
                    for (; i < I; ++i) acc[0] += a[i] * bf2f(wr[i]);
                    float s = 0;
                    for (int q = 0; q < 8; ++q) s += acc[q];
                    out[h] += w * (double)round_bf16(s);
                }
            }
        }
    };
    const int nthreads = std::max(1u, std::min(std::thread::hardware_concurrency(), 32u));
    std::vector<std::thread> pool;
    for (int i = 0; i < nthreads; ++i) pool.emplace_back(worker);
    for (auto& th : pool) th.join();
    double err2 = 0, ref2 = 0;
    for (size_t si = 0; si < sample.size(); ++si)
        for (int h = 0; h < H; ++h) {
            const double r = ref[si][h], g = bf2f(y[(size_t)sample[si] * b.y_ld + h]);
            err2 += (g - r) * (g - r);
            ref2 += r * r;
            res.max_abs = std::max(res.max_abs, std::fabs(g - r));
            res.max_ref = std::max(res.max_ref, std::fabs(r));
            if (std::isnan(g)) res.max_abs = INFINITY;
        }
    res.rel_l2 = ref2 > 0 ? sqrt(err2 / ref2) : sqrt(err2);
    return res;
}

static void report(bool ok, const std::string& name, const std::string& detail) {
    printf("%s %s %s\n", ok ? "PASS" : "FAIL", name.c_str(), detail.c_str());
    fflush(stdout);
    (ok ? g_pass : g_fail)++;
}

struct CaseOpts {
    int x_pad = 0, y_pad = 0;
    bool accumulate = false;
    Routing routing = ROUTE_UNIFORM;
    int max_ref_tokens = 1 << 30;
};

static void run_case(const Model& m, int tokens, int bm, const CaseOpts& o, cudaStream_t st) {
    Batch b;
    batch_make(b, m, tokens, bm, o.x_pad, o.y_pad, o.accumulate, o.routing, 1000003ull * tokens + bm + m.seed);
    batch_poison(b, m);
    run_pipeline(b, m, st);
    CK(cudaStreamSynchronize(st));
    const std::string align_err = check_align(b, m);
    const RefResult r = check_output(b, m, o.max_ref_tokens);
    const bool ok = align_err.empty() && r.nan_count == 0 && r.gap_touched == 0 && r.rel_l2 <= 1e-2 &&
                    r.max_abs <= 0.05 * r.max_ref + 1e-6;
    char name[200], detail[400];
    snprintf(name, sizeof name, "%s_T%d_bm%d%s%s%s", m.name.c_str(), tokens, bm, o.accumulate ? "_acc" : "",
             o.routing == ROUTE_SKEWED ? "_skewed" : "", (o.x_pad || o.y_pad) ? "_strided" : "");
    snprintf(detail, sizeof detail, "rel_l2=%.2e max_abs=%.2e max_ref=%.2e ref_tokens=%d nan=%lld gap_touched=%lld%s%s",
             r.rel_l2, r.max_abs, r.max_ref, r.checked_tokens, r.nan_count, r.gap_touched,
             align_err.empty() ? "" : " align: ", align_err.c_str());
    report(ok, name, detail);
    batch_free(b);
}

// ---------------------------------------------------------------- timing
struct TimingRow {
    std::string model;
    int tokens, bm;
    bool chosen;
    float stage_us[5], total_us;
    double touched_gb, flops;
};

static float median(std::vector<float> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

static TimingRow time_case(const Model& m, int tokens, int bm, cudaStream_t st, void* flush, size_t flush_bytes) {
    Batch b;
    batch_make(b, m, tokens, bm, 0, 0, false, ROUTE_UNIFORM, 77 * tokens + bm);
    batch_poison(b, m);
    cudaEvent_t ev[6];
    for (auto& e : ev) CK(cudaEventCreate(&e));
    const int warmup = 3, reps = 25;
    std::vector<float> stage[5], total;
    for (int it = 0; it < warmup + reps; ++it) {
        CK(cudaMemsetAsync(flush, it & 0xff, flush_bytes, st));  // evict the weights from L2
        run_pipeline(b, m, st, ev);
        CK(cudaStreamSynchronize(st));
        if (it < warmup) continue;
        for (int s = 0; s < 5; ++s) {
            float ms;
            CK(cudaEventElapsedTime(&ms, ev[s], ev[s + 1]));
            stage[s].push_back(ms * 1000.f);
        }
        float ms;
        CK(cudaEventElapsedTime(&ms, ev[0], ev[5]));
        total.push_back(ms * 1000.f);
    }
    TimingRow row;
    row.model = m.name;
    row.tokens = tokens;
    row.bm = bm;
    row.chosen = choose_block_m(tokens, m.top_k, m.num_experts) == bm;
    for (int s = 0; s < 5; ++s) row.stage_us[s] = median(stage[s]);
    row.total_us = median(total);
    std::vector<char> touched(m.num_local, 0);
    long long pairs = 0;
    for (int id : b.ids) {
        const int le = id - m.expert_start;
        if (le >= 0 && le < m.num_local) touched[le] = 1, ++pairs;
    }
    row.touched_gb = std::count(touched.begin(), touched.end(), 1) * m.expert_bytes() / 1e9;
    row.flops = 2.0 * pairs * 3.0 * m.hidden * m.inter;
    for (auto& e : ev) CK(cudaEventDestroy(e));
    batch_free(b);
    return row;
}

// Same batch run directly and as a captured graph must give bit-identical y (proves the
// pipeline is capturable: no host sync, no host-read sizes).
static void check_graph(const Model& m, int tokens, int bm, cudaStream_t st) {
    Batch b;
    batch_make(b, m, tokens, bm, 0, 0, false, ROUTE_UNIFORM, 4242);
    batch_poison(b, m);
    run_pipeline(b, m, st);
    CK(cudaStreamSynchronize(st));
    std::vector<uint16_t> y1((size_t)tokens * b.y_ld), y2(y1.size());
    CK(cudaMemcpy(y1.data(), b.y, y1.size() * 2, cudaMemcpyDeviceToHost));
    batch_poison(b, m);
    CK(cudaDeviceSynchronize());
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
    run_pipeline(b, m, st);
    CK(cudaStreamEndCapture(st, &graph));
    CK(cudaGraphInstantiate(&exec, graph, 0));
    CK(cudaGraphLaunch(exec, st));
    CK(cudaGraphLaunch(exec, st));  // replay twice: the second run starts from the first's state
    CK(cudaStreamSynchronize(st));
    CK(cudaMemcpy(y2.data(), b.y, y2.size() * 2, cudaMemcpyDeviceToHost));
    const bool same = memcmp(y1.data(), y2.data(), y1.size() * 2) == 0;
    report(same, m.name + "_graph_replay_T" + std::to_string(tokens) + "_bm" + std::to_string(bm),
           same ? "bit-identical to the direct run (deterministic)" : "differs from the direct run");
    CK(cudaGraphExecDestroy(exec));
    CK(cudaGraphDestroy(graph));
    batch_free(b);
}

// ---------------------------------------------------------------- config sweep (argument "sweep")
template <class Cfg, int MIN_BLOCKS>
__global__ void __launch_bounds__(Cfg::THREADS, MIN_BLOCKS) gemm_variant(const MoeGemmParams p) {
    moe_gemm_body<Cfg>(p);
}
struct Variant {
    const char* name;
    GemmEntry e;
};
template <class Cfg, int MIN_BLOCKS>
static Variant variant(const char* name) {
    CK(cudaFuncSetAttribute(gemm_variant<Cfg, MIN_BLOCKS>, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::SMEM_BYTES));
    return {name, {gemm_variant<Cfg, MIN_BLOCKS>, Cfg::BM, Cfg::BN, Cfg::THREADS, Cfg::SMEM_BYTES}};
}

static float time_gemm(const GemmEntry& g, const MoeGemmParams& p, long long blocks, cudaStream_t st, void* flush,
                       size_t flush_bytes) {
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    std::vector<float> v;
    for (int it = 0; it < 13; ++it) {
        CK(cudaMemsetAsync(flush, it, flush_bytes, st));
        CK(cudaEventRecord(e0, st));
        g.fn<<<dim3((p.n + g.bn - 1) / g.bn, (unsigned)blocks), g.threads, g.smem, st>>>(p);
        CK(cudaEventRecord(e1, st));
        CK(cudaStreamSynchronize(st));
        float ms;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        if (it >= 3) v.push_back(ms * 1000.f);
    }
    CK(cudaGetLastError());
    CK(cudaEventDestroy(e0));
    CK(cudaEventDestroy(e1));
    return median(v);
}

static void sweep(Model& m, cudaStream_t st, void* flush, size_t flush_bytes) {
    std::vector<Variant> vs = {
        variant<MoeGemmConfig<16, 32, 1, 1, 4, 8>, 4>("m16_n32_k4_s8"),
        variant<MoeGemmConfig<16, 32, 1, 1, 2, 8>, 4>("m16_n32_k2_s8"),
        variant<MoeGemmConfig<16, 32, 1, 1, 2, 6>, 6>("m16_n32_k2_s6"),
        variant<MoeGemmConfig<64, 128, 2, 2, 1, 4>, 2>("m64_n128_2x2_s4"),
        variant<MoeGemmConfig<64, 256, 1, 4, 1, 3>, 1>("m64_n256_1x4_s3"),
        variant<MoeGemmConfig<64, 256, 2, 4, 1, 3>, 1>("m64_n256_2x4_s3"),
        variant<MoeGemmConfig<64, 256, 2, 4, 1, 4>, 1>("m64_n256_2x4_s4"),
        variant<MoeGemmConfig<128, 128, 2, 4, 1, 3>, 2>("m128_n128_2x4_s3"),
        variant<MoeGemmConfig<128, 128, 2, 2, 1, 3>, 2>("m128_n128_2x2_s3"),
        variant<MoeGemmConfig<128, 256, 2, 4, 1, 3>, 1>("m128_n256_2x4_s3"),
        variant<MoeGemmConfig<128, 256, 2, 4, 1, 4>, 1>("m128_n256_2x4_s4"),
    };
    for (int T : {1, 64, 4096}) {
        for (int bm : {16, 64, 128}) {
            if ((T < 4096) != (bm == 16)) continue;
            Batch b;
            batch_make(b, m, T, bm, 0, 0, false, ROUTE_UNIFORM, 99 + T);
            batch_poison(b, m);
            run_pipeline(b, m, st);
            CK(cudaStreamSynchronize(st));
            std::vector<char> touched(m.num_local, 0);
            long long pairs = 0;
            for (int id : b.ids) touched[id - m.expert_start] = 1, ++pairs;
            const double gb = std::count(touched.begin(), touched.end(), 1) * m.expert_bytes() / 1e9;
            const MoeGemmParams p13 = gemm13_params(b, m), p2 = gemm2_params(b, m);
            for (const Variant& v : vs) {
                if (v.e.bm != bm) continue;
                const float t13 = time_gemm(v.e, p13, b.max_blocks, st, flush, flush_bytes);
                const float t2 = time_gemm(v.e, p2, b.max_blocks, st, flush, flush_bytes);
                const double fl13 = 2.0 * pairs * 2 * m.inter * m.hidden, fl2 = 2.0 * pairs * m.hidden * m.inter;
                printf("sweep %-12s T=%-5d %-18s g13 %8.1f us %6.0f GB/s %6.1f TF | g2 %8.1f us %6.0f GB/s %6.1f TF\n",
                       m.name.c_str(), T, v.name, t13, gb * 2 / 3 / (t13 * 1e-6), fl13 / t13 * 1e-6, t2,
                       gb / 3 / (t2 * 1e-6), fl2 / t2 * 1e-6);
                fflush(stdout);
            }
            batch_free(b);
        }
    }
}

int main(int argc, char** argv) {
    const bool quick = argc > 1 && strcmp(argv[1], "quick") == 0;
    const bool do_sweep = argc > 1 && strcmp(argv[1], "sweep") == 0;
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("device: %s, %d SMs, L2 %d MB\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20);
    CK(cudaFuncSetAttribute(moe_gemm_m16, cudaFuncAttributeMaxDynamicSharedMemorySize, MoeGemmM16::SMEM_BYTES));
    CK(cudaFuncSetAttribute(moe_gemm_m64, cudaFuncAttributeMaxDynamicSharedMemorySize, MoeGemmM64::SMEM_BYTES));
    CK(cudaFuncSetAttribute(moe_gemm_m128, cudaFuncAttributeMaxDynamicSharedMemorySize, MoeGemmM128::SMEM_BYTES));
    cudaStream_t st;
    CK(cudaStreamCreate(&st));
    const int all_bm[3] = {16, 64, 128};
    if (do_sweep) {
        size_t flush_bytes = 256u << 20;
        void* flush;
        CK(cudaMalloc(&flush, flush_bytes));
        Model ds{"deepseek_v3", 256, 256, 0, 8, 7168, 2048, ACT_SILU};
        ds.seed = 101;
        model_alloc(ds);
        sweep(ds, st, flush, flush_bytes);
        model_free(ds);
        Model qw{"qwen3_235b", 128, 128, 0, 8, 4096, 1536, ACT_SILU};
        qw.seed = 102;
        model_alloc(qw);
        sweep(qw, st, flush, flush_bytes);
        model_free(qw);
        return 0;
    }

    // ---- small and odd shapes, every block_m
    {
        // name, experts, local, start, k, H, I, act, seed
        Model small[] = {
            {"e8k2_h200_i72", 8, 8, 0, 2, 200, 72, ACT_SILU},
            {"e32k8_h200_i72", 32, 32, 0, 8, 200, 72, ACT_GELU},
            {"e256k8_h264_i136", 256, 256, 0, 8, 264, 136, ACT_SILU},
            {"e64k8_local16at16_h136_i200", 64, 16, 16, 8, 136, 200, ACT_SILU},
        };
        uint64_t seed = 11;
        for (Model& m : small) {
            m.seed = seed++;
            model_alloc(m);
            for (int T : {1, 3, 64, 1000, 4096})
                for (int bm : all_bm) run_case(m, T, bm, CaseOpts{}, st);
            CaseOpts strided;
            strided.x_pad = 24;
            strided.y_pad = 40;
            strided.accumulate = true;
            for (int bm : all_bm) run_case(m, 333, bm, strided, st);
            CaseOpts skew;
            skew.routing = ROUTE_SKEWED;
            for (int bm : all_bm) run_case(m, 1000, bm, skew, st);
            model_free(m);
        }
    }
    if (!quick) {
        // ---- real expert shapes (full-model expert counts on one rank; sampled reference rows)
        Model ds{"deepseek_v3", 256, 256, 0, 8, 7168, 2048, ACT_SILU};
        ds.seed = 101;
        model_alloc(ds);
        CaseOpts sampled;
        sampled.max_ref_tokens = 6;
        for (int T : {1, 64}) run_case(ds, T, 16, sampled, st);
        run_case(ds, 4096, 128, sampled, st);
        run_case(ds, 4096, 64, sampled, st);
        check_graph(ds, 64, 16, st);

        Model qw{"qwen3_235b", 128, 128, 0, 8, 4096, 1536, ACT_SILU};
        qw.seed = 102;
        model_alloc(qw);
        run_case(qw, 8, 16, sampled, st);
        run_case(qw, 1000, 64, sampled, st);
        run_case(qw, 4096, 128, sampled, st);

        {
            Model grok{"grok1", 8, 8, 0, 2, 6144, 32768, ACT_GELU};
            grok.seed = 103;
            model_alloc(grok);
            CaseOpts g;
            g.max_ref_tokens = 3;
            run_case(grok, 1, 16, g, st);
            run_case(grok, 40, 64, g, st);
            model_free(grok);
        }
        {
            Model sig{"sigma_v2", 96, 96, 0, 8, 5120, 2160, ACT_SILU};
            sig.seed = 104;
            model_alloc(sig);
            run_case(sig, 3, 16, sampled, st);
            run_case(sig, 257, 64, sampled, st);
            model_free(sig);
        }
        {
            // EP 8: this rank owns experts 96..127 of DeepSeek's 256.
            Model ep{"deepseek_v3_ep8_rank3", 256, 32, 96, 8, 7168, 2048, ACT_SILU};
            ep.seed = 105;
            model_alloc(ep);
            run_case(ep, 200, 16, sampled, st);
            run_case(ep, 2048, 128, sampled, st);
            model_free(ep);
        }

        // ---- timings
        size_t flush_bytes = 256u << 20;
        void* flush;
        CK(cudaMalloc(&flush, flush_bytes));
        std::vector<TimingRow> rows;
        for (Model* m : {&ds, &qw}) {
            for (int T : {1, 8, 64})
                for (int bm : {16, 64}) rows.push_back(time_case(*m, T, bm, st, flush, flush_bytes));
            for (int bm : {64, 128}) rows.push_back(time_case(*m, 4096, bm, st, flush, flush_bytes));
        }
        printf("\nTiming (median of 25 after 3 warm-ups, L2 flushed before each pipeline; all experts local;\n");
        printf("stage times in us; GB/s = touched expert weights / time; TFLOP/s = 2*R*3*H*I / time;\n");
        printf("ceilings %.0f GB/s, %.0f TFLOP/s; * = choose_block_m's pick)\n", PEAK_GBS, PEAK_TFLOPS);
        printf("%-12s %5s %5s %7s %8s %7s %8s %8s %9s %7s %8s %6s %8s %6s %8s %6s\n", "model", "T", "bm", "align",
               "gemm13", "act", "gemm2", "combine", "total", "GB", "GB/s", "%bw", "gemmGB/s", "%bw", "TFLOP/s", "%pk");
        for (const TimingRow& r : rows) {
            const float gemm_us = r.stage_us[1] + r.stage_us[3];
            const double gbs = r.touched_gb / (r.total_us * 1e-6), gemm_gbs = r.touched_gb / (gemm_us * 1e-6);
            const double tflops = r.flops / (r.total_us * 1e-6) / 1e12;
            printf("%-12s %5d %4d%s %7.1f %8.1f %7.1f %8.1f %8.1f %9.1f %7.2f %8.0f %5.0f%% %8.0f %5.0f%% %8.1f %5.0f%%\n",
                   r.model.c_str(), r.tokens, r.bm, r.chosen ? "*" : " ", r.stage_us[0], r.stage_us[1], r.stage_us[2],
                   r.stage_us[3], r.stage_us[4], r.total_us, r.touched_gb, gbs, 100 * gbs / PEAK_GBS, gemm_gbs,
                   100 * gemm_gbs / PEAK_GBS, tflops, 100 * tflops / PEAK_TFLOPS);
        }
        CK(cudaFree(flush));
        model_free(ds);
        model_free(qw);
    }
    printf("SUMMARY: %d passed, %d failed\n", g_pass, g_fail);
    return g_fail == 0 ? 0 : 1;
}
