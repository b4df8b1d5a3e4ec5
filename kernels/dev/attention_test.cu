// Standalone check and benchmark for kernels/{attention_prefill,attention_decode,mla}.cu.
// Build/run on the H200:
//   nvcc -gencode=arch=compute_90a,code=sm_90a -O3 -std=c++17 -I kernels \
//        kernels/dev/attention_test.cu -o /tmp/t && /tmp/t [--no-bench]
// Every kernel runs on seeded random inputs against a double-precision CPU reference computed
// from the same bf16-rounded inputs. Outputs are poisoned (bf16 NaN) before each launch and
// every element must come back finite. Tolerance for bf16 outputs: rel-L2 <= 1e-2 (P is rounded
// to bf16 before P.V and the output once more; expect ~3e-3); the copy kernels must be exact.
// The host-side variant tables and size formulas below mirror src/exec/cuda/kernels/*.rs.
#include "../attention_prefill.cu"
#include "../attention_decode.cu"
#include "../mla.cu"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

static_assert(sizeof(KvCacheWriteParams) == 72, "KvCacheWriteParams ABI");
static_assert(sizeof(FlashPrefillParams) == 136, "FlashPrefillParams ABI");
static_assert(sizeof(DecodeAttentionParams) == 104, "DecodeAttentionParams ABI");
static_assert(sizeof(DecodeCombineParams) == 40, "DecodeCombineParams ABI");
static_assert(sizeof(MlaCacheWriteParams) == 64, "MlaCacheWriteParams ABI");
static_assert(sizeof(MlaBuildKParams) == 64, "MlaBuildKParams ABI");
static_assert(sizeof(MlaDecodeParams) == 104, "MlaDecodeParams ABI");
static_assert(sizeof(MlaCombineParams) == 40, "MlaCombineParams ABI");

#define CK(x)                                                                                   \
    do {                                                                                        \
        cudaError_t e_ = (x);                                                                   \
        if (e_ != cudaSuccess) {                                                                \
            fprintf(stderr, "CUDA error %s at %s:%d: %s\n", cudaGetErrorString(e_), __FILE__,  \
                    __LINE__, #x);                                                              \
            exit(2);                                                                            \
        }                                                                                       \
    } while (0)

static int g_pass = 0, g_fail = 0, g_sms = 132;

// ---------------------------------------------------------------- host bf16 and helpers
static uint16_t f2bf(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
static float bf2f(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
struct HostBuf {  // bf16 values with their float image
    std::vector<uint16_t> bits;
    std::vector<float> f;
};
static HostBuf rand_bf16(size_t n, uint64_t seed, float lo, float hi) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<float> d(lo, hi);
    HostBuf b;
    b.bits.resize(n);
    b.f.resize(n);
    for (size_t i = 0; i < n; ++i) {
        b.bits[i] = f2bf(d(rng));
        b.f[i] = bf2f(b.bits[i]);
    }
    return b;
}
template <class T>
static T* dev_upload(const std::vector<T>& v) {
    T* p;
    CK(cudaMalloc(&p, std::max<size_t>(v.size(), 1) * sizeof(T)));
    CK(cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
    return p;
}
static bf16* dev_bf16(const HostBuf& b) { return reinterpret_cast<bf16*>(dev_upload(b.bits)); }
static bf16* dev_poisoned(size_t n) {
    bf16* p;
    CK(cudaMalloc(&p, std::max<size_t>(n, 1) * 2));
    CK(cudaMemset(p, 0xff, n * 2));  // 0xffff is a bf16 NaN
    return p;
}
static std::vector<uint16_t> dev_download(const bf16* p, size_t n) {
    std::vector<uint16_t> v(n);
    CK(cudaMemcpy(v.data(), p, n * 2, cudaMemcpyDeviceToHost));
    return v;
}
static void parallel_for(int n, const std::function<void(int)>& fn) {
    int nt = std::max(1u, std::min(32u, std::thread::hardware_concurrency()));
    std::vector<std::thread> th;
    for (int t = 0; t < nt; ++t)
        th.emplace_back([&, t] {
            for (int i = t; i < n; i += nt) fn(i);
        });
    for (auto& x : th) x.join();
}
static void check_launch() {
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
}

// Compares device bf16 output `got` (bits) against `ref` at matching indices `idx`.
static void report(const std::string& name, const std::vector<uint16_t>& got, const std::vector<double>& ref,
                   const std::vector<size_t>& idx, double tol = 1e-2) {
    double num = 0, den = 0, max_abs = 0;
    size_t bad = 0;
    for (size_t i = 0; i < idx.size(); ++i) {
        float g = bf2f(got[idx[i]]);
        if (!std::isfinite(g)) {
            ++bad;
            continue;
        }
        double d = g - ref[i];
        num += d * d;
        den += ref[i] * ref[i];
        max_abs = std::max(max_abs, std::fabs(d));
    }
    double rel = std::sqrt(num / std::max(den, 1e-30));
    bool ok = bad == 0 && rel <= tol;
    printf("%s %s rel_l2=%.2e max_abs=%.2e nonfinite=%zu n=%zu\n", ok ? "PASS" : "FAIL", name.c_str(), rel,
           max_abs, bad, idx.size());
    (ok ? g_pass : g_fail)++;
}

// ---------------------------------------------------------------- host mirrors of the Rust tables
struct PrefillVariant {
    const char* name;
    void (*fn)(FlashPrefillParams);
    int dqk, dv, nwarps, bn;
};
static const PrefillVariant PREFILL[] = {
    {"flash_prefill_d32", flash_prefill_d32, 32, 32, 4, 64},
    {"flash_prefill_d64", flash_prefill_d64, 64, 64, 8, 64},
    {"flash_prefill_d128", flash_prefill_d128, 128, 128, 8, 64},
    {"flash_prefill_d192_128", flash_prefill_d192_128, 192, 128, 8, 64},
    {"flash_prefill_d256", flash_prefill_d256, 256, 256, 4, 32},
};
static const PrefillVariant& prefill_select(int dqk, int dv) {
    for (auto& v : PREFILL)
        if (dqk <= v.dqk && dv <= v.dv) return v;
    fprintf(stderr, "no prefill variant for %d/%d\n", dqk, dv);
    exit(2);
}
static int prefill_smem(const PrefillVariant& v) {
    int bm = 16 * v.nwarps;
    return (bm * (v.dqk + 8) + 2 * v.bn * (v.dqk + 8) + 2 * v.bn * (v.dv + 8)) * 2;
}
static void launch_prefill(const FlashPrefillParams& p, cudaStream_t st = 0) {
    const PrefillVariant& v = prefill_select(p.d_qk, p.d_v);
    int smem = prefill_smem(v), bm = 16 * v.nwarps;
    CK(cudaFuncSetAttribute(v.fn, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    dim3 grid((p.n_q + bm - 1) / bm, p.q_heads, p.batch);
    v.fn<<<grid, v.nwarps * 32, smem, st>>>(p);
}

struct DecodeVariant {
    const char* name;
    void (*fn)(DecodeAttentionParams);
    int d, stages;
};
static const DecodeVariant DECODE[] = {
    {"decode_attention_d32", decode_attention_d32, 32, 3},
    {"decode_attention_d64", decode_attention_d64, 64, 3},
    {"decode_attention_d128", decode_attention_d128, 128, 3},
    {"decode_attention_d256", decode_attention_d256, 256, 2},
};
static const DecodeVariant& decode_select(int dqk, int dv) {
    for (auto& v : DECODE)
        if (std::max(dqk, dv) <= v.d) return v;
    fprintf(stderr, "no decode variant for %d/%d\n", dqk, dv);
    exit(2);
}
static int decode_head_tiles(int q, int k) { return ((q + k - 1) / k + 15) / 16; }
static int decode_max_vheads(int q, int k, int v) {
    int best = 1, ht = decode_head_tiles(q, k);
    for (int kh = 0; kh < k; ++kh)
        for (int t = 0; t < ht; ++t) {
            long long hb = ((long long)kh * q + k - 1) / k, he = ((long long)(kh + 1) * q + k - 1) / k;
            long long h0 = hb + 16 * t, n = std::min<long long>(16, he - h0);
            if (n <= 0) continue;
            int lo = (int)(h0 * v / q), hi = (int)((h0 + n - 1) * v / q);
            best = std::max(best, hi - lo + 1);
        }
    return best;
}
static int decode_smem(const DecodeVariant& var, int q, int k, int v) {
    const int max_smem = 227 * 1024;  // sm_90 opt-in limit per block
    int s = var.d + 8, nvh = decode_max_vheads(q, k, v);
    int merge = 4 * 16 * 2 * 4 + 4 * 16 * var.d * 4;
    int ring = 0;
    for (int st = var.stages; st >= 1; --st) {
        ring = (16 * s + st * (64 * s + nvh * 64 * s)) * 2;
        if (std::max(ring, merge) <= max_smem) break;
    }
    return std::max(ring, merge);
}
// Split count: minimise waves(s) * (keys per split + per-CTA overhead) + combine overhead.
static int choose_splits(long long base_ctas, long long slots, int n_kv, int min_keys, int overhead_keys) {
    int max_s = std::max(1, std::min(128, (n_kv + min_keys - 1) / min_keys));
    int best = 1;
    double best_cost = 1e30;
    for (int s = 1; s <= max_s; ++s) {
        long long waves = (base_ctas * s + slots - 1) / slots;
        double cost = waves * ((n_kv + s - 1) / s + overhead_keys) + (s > 1 ? overhead_keys : 0);
        if (cost < best_cost) best_cost = cost, best = s;
    }
    return best;
}
static int decode_num_splits(int batch, int k_heads, int n_kv, int sms) {
    return choose_splits((long long)batch * k_heads, 2LL * sms, n_kv, 128, 128);
}
static size_t decode_scratch_bytes(int batch, int q_heads, int d_v, int splits) {
    return splits <= 1 ? 0 : (size_t)batch * q_heads * splits * (d_v + 1) * 4;
}
static void launch_decode(const DecodeAttentionParams& p, cudaStream_t st = 0) {
    const DecodeVariant& v = decode_select(p.d_qk, p.d_v);
    int smem = decode_smem(v, p.q_heads, p.k_heads, p.v_heads);
    CK(cudaFuncSetAttribute(v.fn, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    dim3 grid(p.num_splits, p.k_heads * decode_head_tiles(p.q_heads, p.k_heads), p.batch);
    v.fn<<<grid, 128, smem, st>>>(p);
    DecodeCombineParams c{p.scratch, p.o, p.o_batch_stride, p.o_head_stride, p.batch, p.q_heads, p.d_v, p.num_splits};
    decode_combine<<<dim3(p.q_heads, p.batch), 128, 0, st>>>(c);
}

static int mla_heads_per_cta(int heads) { return heads > 32 ? 64 : 16; }
static int mla_smem(int heads) {
    return mla_heads_per_cta(heads) == 64 ? attn::MlaShape<4, 2, 32, 3>::SMEM_BYTES
                                          : attn::MlaShape<1, 4, 64, 2>::SMEM_BYTES;
}
static int mla_num_splits(int batch, int heads, int n_kv, int sms) {
    int hpc = mla_heads_per_cta(heads);
    return choose_splits((long long)batch * ((heads + hpc - 1) / hpc), sms, n_kv, 64, 64);
}
static size_t mla_scratch_bytes(int batch, int heads, int kv_lora_rank, int splits) {
    return splits <= 1 ? 0 : (size_t)batch * heads * splits * (kv_lora_rank + 1) * 4;
}
static void launch_mla(const MlaDecodeParams& p, cudaStream_t st = 0) {
    int hpc = mla_heads_per_cta(p.heads), smem = mla_smem(p.heads);
    auto fn = hpc == 64 ? mla_decode_m64 : mla_decode_m16;
    CK(cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    dim3 grid(p.num_splits, (p.heads + hpc - 1) / hpc, p.batch);
    fn<<<grid, hpc == 64 ? 256 : 128, smem, st>>>(p);
    MlaCombineParams c{p.scratch, p.o, p.o_batch_stride, p.o_head_stride, p.batch, p.heads, p.kv_lora_rank,
                       p.num_splits};
    mla_combine<<<dim3(p.heads, p.batch), 128, 0, st>>>(c);
}

// ---------------------------------------------------------------- CPU reference
// One query row against keys 0..n_vis-1; k(j, c), v(j, c) give the bf16 values as double.
template <class KF, class VF>
static void ref_row(const float* q, int dqk, int dv, int n_vis, double scale, double softcap, KF k, VF v,
                    double* out) {
    std::vector<double> s(n_vis);
    double mx = -1e300;
    for (int j = 0; j < n_vis; ++j) {
        double a = 0;
        for (int c = 0; c < dqk; ++c) a += (double)q[c] * k(j, c);
        a *= scale;
        if (softcap > 0) a = softcap * std::tanh(a / softcap);
        s[j] = a;
        mx = std::max(mx, a);
    }
    double sum = 0;
    for (int j = 0; j < n_vis; ++j) sum += (s[j] = std::exp(s[j] - mx));
    for (int c = 0; c < dv; ++c) out[c] = 0;
    for (int j = 0; j < n_vis; ++j) {
        double w = s[j] / sum;
        for (int c = 0; c < dv; ++c) out[c] += w * v(j, c);
    }
}

// ---------------------------------------------------------------- prefill test
// q sits in a fused qkv-like buffer [batch, n_q, qh*dqk + pad]; K/V in a cache
// [batch, max_seq, heads, d] with max_seq > n_kv; o dense [batch, n_q, qh, dv].
static void test_prefill(const char* tag, int batch, int n_q, int n_kv, int qh, int kh, int vh, int dqk, int dv,
                         float softcap, float scale, uint64_t seed) {
    const int q_ld = qh * dqk + 24, max_seq = n_kv + 5;
    HostBuf q = rand_bf16((size_t)batch * n_q * q_ld, seed, -1.f, 1.f);
    HostBuf k = rand_bf16((size_t)batch * max_seq * kh * dqk, seed + 1, -1.f, 1.f);
    HostBuf v = rand_bf16((size_t)batch * max_seq * vh * dv, seed + 2, -1.f, 1.f);
    size_t o_n = (size_t)batch * n_q * qh * dv;
    bf16 *dq = dev_bf16(q), *dk = dev_bf16(k), *dvp = dev_bf16(v), *dout = dev_poisoned(o_n);
    FlashPrefillParams p{};
    p.q = dq; p.q_batch_stride = (long long)n_q * q_ld; p.q_token_stride = q_ld; p.q_head_stride = dqk;
    p.k = dk; p.k_batch_stride = (long long)max_seq * kh * dqk; p.k_token_stride = kh * dqk; p.k_head_stride = dqk;
    p.v = dvp; p.v_batch_stride = (long long)max_seq * vh * dv; p.v_token_stride = vh * dv; p.v_head_stride = dv;
    p.o = dout; p.o_batch_stride = (long long)n_q * qh * dv; p.o_token_stride = qh * dv; p.o_head_stride = dv;
    p.batch = batch; p.n_q = n_q; p.n_kv = n_kv; p.q_heads = qh; p.k_heads = kh; p.v_heads = vh;
    p.d_qk = dqk; p.d_v = dv; p.scale = scale; p.softcap = softcap;
    launch_prefill(p);
    check_launch();
    std::vector<uint16_t> got = dev_download(dout, o_n);
    std::vector<double> ref(o_n);
    std::vector<size_t> idx(o_n);
    for (size_t i = 0; i < o_n; ++i) idx[i] = i;
    parallel_for(batch * qh * n_q, [&](int w) {
        int i = w % n_q, h = (w / n_q) % qh, b = w / (n_q * qh);
        int khh = (int)((long long)h * kh / qh), vhh = (int)((long long)h * vh / qh);
        const float* qr = &q.f[((size_t)b * n_q + i) * q_ld + (size_t)h * dqk];
        int n_vis = n_kv - n_q + i + 1;
        ref_row(qr, dqk, dv, n_vis, scale, softcap,
                [&](int j, int c) { return (double)k.f[(((size_t)b * max_seq + j) * kh + khh) * dqk + c]; },
                [&](int j, int c) { return (double)v.f[(((size_t)b * max_seq + j) * vh + vhh) * dv + c]; },
                &ref[(((size_t)b * n_q + i) * qh + h) * dv]);
    });
    char name[256];
    snprintf(name, sizeof name, "prefill_%s [%s] b%d nq%d nkv%d h%d/%d/%d d%d/%d cap%g", tag,
             prefill_select(dqk, dv).name, batch, n_q, n_kv, qh, kh, vh, dqk, dv, softcap);
    report(name, got, ref, idx);
    cudaFree(dq); cudaFree(dk); cudaFree(dvp); cudaFree(dout);
}

// ---------------------------------------------------------------- decode test
static void test_decode(const char* tag, int batch, int n_kv, int qh, int kh, int vh, int dqk, int dv, float softcap,
                        float scale, int splits, uint64_t seed) {
    const int max_seq = n_kv + 3, q_bs = qh * dqk + 8 * 3;  // q rows padded like a fused qkv row
    if (splits <= 0) splits = decode_num_splits(batch, kh, n_kv, g_sms);
    HostBuf q = rand_bf16((size_t)batch * q_bs, seed, -1.f, 1.f);
    HostBuf k = rand_bf16((size_t)batch * max_seq * kh * dqk, seed + 1, -1.f, 1.f);
    HostBuf v = rand_bf16((size_t)batch * max_seq * vh * dv, seed + 2, -1.f, 1.f);
    size_t o_n = (size_t)batch * qh * dv;
    size_t scratch_b = decode_scratch_bytes(batch, qh, dv, splits);
    bf16 *dq = dev_bf16(q), *dk = dev_bf16(k), *dvp = dev_bf16(v), *dout = dev_poisoned(o_n);
    float* scratch = nullptr;
    if (scratch_b) {
        CK(cudaMalloc(&scratch, scratch_b));
        CK(cudaMemset(scratch, 0xff, scratch_b));
    }
    DecodeAttentionParams p{};
    p.q = dq; p.q_batch_stride = q_bs; p.q_head_stride = dqk; p.k_cache = dk; p.v_cache = dvp;
    p.max_seq = max_seq; p.k_heads = kh; p.v_heads = vh; p.q_heads = qh; p.d_qk = dqk; p.d_v = dv;
    p.n_kv = n_kv; p.batch = batch; p.scale = scale; p.softcap = softcap; p.o = dout;
    p.o_batch_stride = qh * dv; p.o_head_stride = dv; p.scratch = scratch; p.num_splits = splits;
    launch_decode(p);
    check_launch();
    std::vector<uint16_t> got = dev_download(dout, o_n);
    std::vector<double> ref(o_n);
    std::vector<size_t> idx(o_n);
    for (size_t i = 0; i < o_n; ++i) idx[i] = i;
    parallel_for(batch * qh, [&](int w) {
        int h = w % qh, b = w / qh;
        int khh = (int)((long long)h * kh / qh), vhh = (int)((long long)h * vh / qh);
        ref_row(&q.f[(size_t)b * q_bs + (size_t)h * dqk], dqk, dv, n_kv, scale, softcap,
                [&](int j, int c) { return (double)k.f[(((size_t)b * max_seq + j) * kh + khh) * dqk + c]; },
                [&](int j, int c) { return (double)v.f[(((size_t)b * max_seq + j) * vh + vhh) * dv + c]; },
                &ref[((size_t)b * qh + h) * dv]);
    });
    char name[256];
    snprintf(name, sizeof name, "decode_%s [%s] b%d nkv%d h%d/%d/%d d%d/%d cap%g splits%d", tag,
             decode_select(dqk, dv).name, batch, n_kv, qh, kh, vh, dqk, dv, softcap, splits);
    report(name, got, ref, idx);
    cudaFree(dq); cudaFree(dk); cudaFree(dvp); cudaFree(dout); cudaFree(scratch);
}

// ---------------------------------------------------------------- MLA decode test
static void test_mla(const char* tag, int batch, int n_kv, int heads, int L, int R, int splits, uint64_t seed) {
    const int max_seq = n_kv + 2, row = L + R;
    const float scale = 0.1352338f;
    if (splits <= 0) splits = mla_num_splits(batch, heads, n_kv, g_sms);
    HostBuf ql = rand_bf16((size_t)batch * heads * L, seed, -1.f, 1.f);
    HostBuf qp = rand_bf16((size_t)batch * heads * R, seed + 1, -1.f, 1.f);
    HostBuf cache = rand_bf16((size_t)batch * max_seq * row, seed + 2, -1.f, 1.f);
    size_t o_n = (size_t)batch * heads * L;
    size_t scratch_b = mla_scratch_bytes(batch, heads, L, splits);
    bf16 *dql = dev_bf16(ql), *dqp = dev_bf16(qp), *dc = dev_bf16(cache), *dout = dev_poisoned(o_n);
    float* scratch = nullptr;
    if (scratch_b) {
        CK(cudaMalloc(&scratch, scratch_b));
        CK(cudaMemset(scratch, 0xff, scratch_b));
    }
    MlaDecodeParams p{};
    p.q_lat = dql; p.q_lat_batch_stride = heads * L; p.q_lat_head_stride = L;
    p.q_pe = dqp; p.q_pe_batch_stride = heads * R; p.q_pe_head_stride = R;
    p.cache = dc; p.max_seq = max_seq; p.n_kv = n_kv; p.batch = batch; p.heads = heads;
    p.kv_lora_rank = L; p.rope_dim = R; p.scale = scale; p.o = dout; p.o_batch_stride = heads * L;
    p.o_head_stride = L; p.scratch = scratch; p.num_splits = splits;
    launch_mla(p);
    check_launch();
    std::vector<uint16_t> got = dev_download(dout, o_n);
    std::vector<double> ref(o_n);
    std::vector<size_t> idx(o_n);
    for (size_t i = 0; i < o_n; ++i) idx[i] = i;
    parallel_for(batch * heads, [&](int w) {
        int h = w % heads, b = w / heads;
        std::vector<float> qcat(row);
        for (int c = 0; c < L; ++c) qcat[c] = ql.f[((size_t)b * heads + h) * L + c];
        for (int c = 0; c < R; ++c) qcat[L + c] = qp.f[((size_t)b * heads + h) * R + c];
        const float* cb = &cache.f[(size_t)b * max_seq * row];
        ref_row(qcat.data(), row, L, n_kv, scale, 0.0, [&](int j, int c) { return (double)cb[(size_t)j * row + c]; },
                [&](int j, int c) { return (double)cb[(size_t)j * row + c]; }, &ref[((size_t)b * heads + h) * L]);
    });
    char name[256];
    snprintf(name, sizeof name, "mla_decode_%s [m%d] b%d nkv%d heads%d L%d R%d splits%d", tag,
             mla_heads_per_cta(heads), batch, n_kv, heads, L, R, splits);
    report(name, got, ref, idx);
    cudaFree(dql); cudaFree(dqp); cudaFree(dc); cudaFree(dout); cudaFree(scratch);
}

// ---------------------------------------------------------------- copy kernels (exact)
static void report_exact(const std::string& name, const std::vector<uint16_t>& got, const std::vector<uint16_t>& want) {
    size_t bad = 0;
    for (size_t i = 0; i < want.size(); ++i) bad += got[i] != want[i];
    printf("%s %s mismatches=%zu n=%zu\n", bad ? "FAIL" : "PASS", name.c_str(), bad, want.size());
    (bad ? g_fail : g_pass)++;
}

static void test_kv_cache_write(int batch, int tps, int past, int kh, int vh, int dk, int dv, bool with_v) {
    const int rows = batch * tps, max_seq = past + tps + 3;
    const int k_col = 3 * 8, v_col = k_col + kh * dk + 8, src_ld = v_col + vh * dv + 16;
    HostBuf src = rand_bf16((size_t)rows * src_ld, 77 + kh, -1.f, 1.f);
    size_t kn = (size_t)batch * max_seq * kh * dk, vn = (size_t)batch * max_seq * vh * dv;
    bf16 *ds = dev_bf16(src), *kc = dev_poisoned(kn), *vc = dev_poisoned(vn);
    KvCacheWriteParams p{ds, src_ld, rows, k_col, v_col, kh, vh, dk, dv, kc, with_v ? vc : nullptr, max_seq, tps, past};
    kv_cache_write<<<rows, 128>>>(p);
    check_launch();
    std::vector<uint16_t> gk = dev_download(kc, kn), gv = dev_download(vc, vn);
    std::vector<uint16_t> wk(kn, 0xffff), wv(vn, 0xffff);
    for (int t = 0; t < rows; ++t) {
        int b = t / tps, pos = past + t % tps;
        for (int i = 0; i < kh * dk; ++i) wk[((size_t)b * max_seq + pos) * kh * dk + i] = src.bits[(size_t)t * src_ld + k_col + i];
        if (with_v)
            for (int i = 0; i < vh * dv; ++i) wv[((size_t)b * max_seq + pos) * vh * dv + i] = src.bits[(size_t)t * src_ld + v_col + i];
    }
    char name[160];
    snprintf(name, sizeof name, "kv_cache_write b%d tps%d past%d kh%d vh%d dk%d dv%d v=%d", batch, tps, past, kh, vh, dk, dv,
             with_v);
    std::vector<uint16_t> g = gk, w = wk;
    g.insert(g.end(), gv.begin(), gv.end());
    w.insert(w.end(), wv.begin(), wv.end());
    report_exact(name, g, w);
    cudaFree(ds); cudaFree(kc); cudaFree(vc);
}

static void test_mla_cache_write(int batch, int tps, int past, int L, int R) {
    const int rows = batch * tps, max_seq = past + tps + 2, lat_ld = L + R + 8, pe_ld = R + 8;
    HostBuf lat = rand_bf16((size_t)rows * lat_ld, 5, -1.f, 1.f), pe = rand_bf16((size_t)rows * pe_ld, 6, -1.f, 1.f);
    size_t cn = (size_t)batch * max_seq * (L + R);
    bf16 *dl = dev_bf16(lat), *dp = dev_bf16(pe), *dc = dev_poisoned(cn);
    MlaCacheWriteParams p{dl, lat_ld, dp, pe_ld, rows, L, R, dc, max_seq, tps, past};
    mla_cache_write<<<rows, 64>>>(p);
    check_launch();
    std::vector<uint16_t> got = dev_download(dc, cn), want(cn, 0xffff);
    for (int t = 0; t < rows; ++t) {
        size_t base = ((size_t)(t / tps) * max_seq + past + t % tps) * (L + R);
        for (int c = 0; c < L; ++c) want[base + c] = lat.bits[(size_t)t * lat_ld + c];
        for (int c = 0; c < R; ++c) want[base + L + c] = pe.bits[(size_t)t * pe_ld + c];
    }
    char name[128];
    snprintf(name, sizeof name, "mla_cache_write b%d tps%d past%d L%d R%d", batch, tps, past, L, R);
    report_exact(name, got, want);
    cudaFree(dl); cudaFree(dp); cudaFree(dc);
}

static void test_mla_build_k(int rows, int heads, int dn, int dv, int dr) {
    const int kv_ld = heads * (dn + dv), pe_ld = 512 + dr;  // k_pe read from inside a wider row
    HostBuf kv = rand_bf16((size_t)rows * kv_ld, 8, -1.f, 1.f), pe = rand_bf16((size_t)rows * pe_ld, 9, -1.f, 1.f);
    size_t on = (size_t)rows * heads * (dn + dr);
    bf16 *dkv = dev_bf16(kv), *dp = dev_bf16(pe), *dout = dev_poisoned(on);
    MlaBuildKParams p{dkv, kv_ld, dp + 512, pe_ld, dout, rows, heads, dn, dv, dr};
    mla_build_k<<<rows, 128>>>(p);
    check_launch();
    std::vector<uint16_t> got = dev_download(dout, on), want(on);
    for (int t = 0; t < rows; ++t)
        for (int h = 0; h < heads; ++h)
            for (int c = 0; c < dn + dr; ++c)
                want[((size_t)t * heads + h) * (dn + dr) + c] =
                    c < dn ? kv.bits[(size_t)t * kv_ld + h * (dn + dv) + c] : pe.bits[(size_t)t * pe_ld + 512 + c - dn];
    char name[128];
    snprintf(name, sizeof name, "mla_build_k rows%d heads%d dn%d dv%d dr%d", rows, heads, dn, dv, dr);
    report_exact(name, got, want);
    cudaFree(dkv); cudaFree(dp); cudaFree(dout);
}

// ---------------------------------------------------------------- timing
static void* g_flush = nullptr;
static const size_t FLUSH_BYTES = 256ull << 20;
static float time_median(const std::function<void()>& launch, int reps = 25) {
    if (!g_flush) CK(cudaMalloc(&g_flush, FLUSH_BYTES));
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    for (int i = 0; i < 3; ++i) launch();
    CK(cudaDeviceSynchronize());
    std::vector<float> ts;
    for (int i = 0; i < reps; ++i) {
        CK(cudaMemsetAsync(g_flush, i & 0xff, FLUSH_BYTES));
        CK(cudaEventRecord(a));
        launch();
        CK(cudaEventRecord(b));
        CK(cudaEventSynchronize(b));
        float ms;
        CK(cudaEventElapsedTime(&ms, a, b));
        ts.push_back(ms);
    }
    CK(cudaGetLastError());
    std::sort(ts.begin(), ts.end());
    return ts[ts.size() / 2];
}

struct Row {
    std::string name;
    float ms;
    double tflops, gbs;
};
static std::vector<Row> g_rows;

static void bench_prefill(const char* name, int batch, int heads, int s, int dqk, int dv) {
    size_t qn = (size_t)batch * s * heads * dqk, vn = (size_t)batch * s * heads * dv;
    HostBuf hq = rand_bf16(qn, 1, -1.f, 1.f), hv = rand_bf16(vn, 2, -1.f, 1.f);
    bf16 *q = dev_bf16(hq), *k = dev_bf16(hq), *v = dev_bf16(hv), *o = dev_poisoned(vn);
    FlashPrefillParams p{};
    p.q = q; p.q_batch_stride = (long long)s * heads * dqk; p.q_token_stride = heads * dqk; p.q_head_stride = dqk;
    p.k = k; p.k_batch_stride = p.q_batch_stride; p.k_token_stride = heads * dqk; p.k_head_stride = dqk;
    p.v = v; p.v_batch_stride = (long long)s * heads * dv; p.v_token_stride = heads * dv; p.v_head_stride = dv;
    p.o = o; p.o_batch_stride = p.v_batch_stride; p.o_token_stride = heads * dv; p.o_head_stride = dv;
    p.batch = batch; p.n_q = s; p.n_kv = s; p.q_heads = heads; p.k_heads = heads; p.v_heads = heads;
    p.d_qk = dqk; p.d_v = dv; p.scale = 1.f / sqrtf((float)dqk); p.softcap = 0.f;
    float ms = time_median([&] { launch_prefill(p); });
    double flops = 2.0 * batch * heads * (double)s * s * (dqk + dv) / 2;  // = 4*b*h*s^2*d/2 for dqk == dv
    g_rows.push_back({name, ms, flops / ms / 1e9, 0});
    cudaFree(q); cudaFree(k); cudaFree(v); cudaFree(o);
}

static void bench_decode(const char* name, int batch, int n_kv, int qh, int kh, int d) {
    int splits = decode_num_splits(batch, kh, n_kv, g_sms);
    size_t kn = (size_t)batch * n_kv * kh * d;
    HostBuf hq = rand_bf16((size_t)batch * qh * d, 3, -1.f, 1.f), hk = rand_bf16(kn, 4, -1.f, 1.f);
    bf16 *q = dev_bf16(hq), *kc = dev_bf16(hk), *vc = dev_bf16(hk), *o = dev_poisoned((size_t)batch * qh * d);
    float* scratch = nullptr;
    size_t sb = decode_scratch_bytes(batch, qh, d, splits);
    if (sb) CK(cudaMalloc(&scratch, sb));
    DecodeAttentionParams p{q, qh * d, d, kc, vc, n_kv, kh, kh, qh, d, d, n_kv, batch, 1.f / sqrtf((float)d), 0.f,
                            o, qh * d, d, scratch, splits};
    float ms = time_median([&] { launch_decode(p); });
    double bytes = 2.0 * kn * 2, flops = 4.0 * batch * qh * (double)n_kv * d;
    char nm[160];
    snprintf(nm, sizeof nm, "%s (splits %d)", name, splits);
    g_rows.push_back({nm, ms, flops / ms / 1e9, bytes / ms / 1e6});
    cudaFree(q); cudaFree(kc); cudaFree(vc); cudaFree(o); cudaFree(scratch);
}

static void bench_mla(const char* name, int batch, int n_kv, int heads) {
    const int L = 512, R = 64;
    int splits = mla_num_splits(batch, heads, n_kv, g_sms);
    size_t cn = (size_t)batch * n_kv * (L + R);
    HostBuf hq = rand_bf16((size_t)batch * heads * L, 5, -1.f, 1.f), hp = rand_bf16((size_t)batch * heads * R, 6, -1.f, 1.f);
    HostBuf hc = rand_bf16(cn, 7, -1.f, 1.f);
    bf16 *ql = dev_bf16(hq), *qp = dev_bf16(hp), *c = dev_bf16(hc), *o = dev_poisoned((size_t)batch * heads * L);
    float* scratch = nullptr;
    size_t sb = mla_scratch_bytes(batch, heads, L, splits);
    if (sb) CK(cudaMalloc(&scratch, sb));
    MlaDecodeParams p{ql, heads * L, L, qp, heads * R, R, c, n_kv, n_kv, batch, heads, L, R, 0.1352338f,
                      o, heads * L, L, scratch, splits};
    float ms = time_median([&] { launch_mla(p); });
    double bytes = 2.0 * cn, flops = 2.0 * batch * heads * (double)n_kv * (2 * L + R);
    char nm[160];
    snprintf(nm, sizeof nm, "%s (splits %d)", name, splits);
    g_rows.push_back({nm, ms, flops / ms / 1e9, bytes / ms / 1e6});
    cudaFree(ql); cudaFree(qp); cudaFree(c); cudaFree(o); cudaFree(scratch);
}

int main(int argc, char** argv) {
    bool bench = !(argc > 1 && strcmp(argv[1], "--no-bench") == 0);
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    g_sms = prop.multiProcessorCount;
    printf("device %s, %d SMs\n", prop.name, g_sms);

    // Copy kernels.
    test_kv_cache_write(3, 7, 5, 8, 8, 128, 128, true);
    test_kv_cache_write(2, 1, 40, 4, 16, 64, 64, true);
    test_kv_cache_write(2, 5, 0, 1, 1, 576, 512, false);
    test_kv_cache_write(1, 3, 2, 3, 2, 12, 20, true);  // odd sizes: scalar path
    test_mla_cache_write(2, 9, 3, 512, 64);
    test_mla_cache_write(3, 4, 0, 32, 8);
    test_mla_build_k(5, 16, 128, 128, 64);
    test_mla_build_k(3, 4, 32, 16, 16);

    // Prefill: every bucket, prefix (n_q < n_kv), GQA, DiffQKV, softcap, odd lengths.
    const float s128 = 1.f / sqrtf(128.f);
    test_prefill("mha", 2, 77, 77, 4, 4, 4, 128, 128, 0.f, s128, 11);
    test_prefill("mha", 1, 1000, 1000, 2, 2, 2, 128, 128, 0.f, s128, 12);
    test_prefill("prefix", 2, 100, 333, 4, 2, 2, 128, 128, 0.f, s128, 13);
    test_prefill("prefix1", 3, 1, 257, 4, 4, 4, 128, 128, 0.f, s128, 14);
    test_prefill("gqa", 1, 77, 77, 64, 8, 8, 128, 128, 0.f, s128, 15);
    test_prefill("diffqkv", 2, 130, 130, 32, 4, 16, 64, 64, 0.f, 0.125f, 16);
    test_prefill("softcap30", 1, 300, 300, 4, 2, 2, 128, 128, 30.f, 1.f, 17);
    test_prefill("softcap1.5", 1, 129, 200, 4, 2, 2, 64, 64, 1.5f, 0.5f, 18);
    test_prefill("d64", 2, 200, 200, 4, 2, 2, 64, 64, 0.f, 0.125f, 19);
    test_prefill("d192_128", 1, 300, 300, 8, 8, 8, 192, 128, 0.f, 0.1352338f, 20);
    test_prefill("d192_128_prefix", 2, 65, 190, 4, 4, 4, 192, 128, 0.f, 0.1352338f, 21);
    test_prefill("d256", 2, 150, 150, 4, 2, 2, 256, 256, 0.f, 0.0625f, 22);
    test_prefill("d256_prefix", 1, 33, 301, 4, 1, 1, 256, 256, 0.f, 0.0625f, 23);
    test_prefill("g16", 2, 1000, 1000, 2, 1, 1, 16, 16, 0.f, 0.25f, 24);
    test_prefill("g24_16", 1, 77, 77, 4, 2, 2, 24, 16, 0.f, 0.2f, 25);
    test_prefill("g32", 1, 1, 1, 2, 2, 2, 32, 32, 0.f, 0.2f, 26);
    test_prefill("g48_80", 1, 150, 160, 4, 2, 1, 48, 80, 0.f, 0.15f, 27);
    test_prefill("g136_200", 1, 70, 70, 2, 1, 1, 136, 200, 0.f, 0.1f, 28);

    // Decode: n_kv 1 / 33 / 4097, batch 1 / 7 / 32, GQA 64/8, DiffQKV, softcap, forced splits.
    test_decode("gqa", 1, 1, 64, 8, 8, 128, 128, 0.f, s128, 0, 31);
    test_decode("gqa", 7, 33, 64, 8, 8, 128, 128, 0.f, s128, 0, 32);
    test_decode("gqa", 1, 4097, 64, 8, 8, 128, 128, 0.f, s128, 0, 33);
    test_decode("gqa", 32, 4097, 64, 8, 8, 128, 128, 0.f, s128, 0, 34);
    test_decode("gqa_split1", 2, 1000, 64, 8, 8, 128, 128, 0.f, s128, 1, 35);
    test_decode("empty_splits", 3, 33, 8, 2, 2, 128, 128, 0.f, s128, 8, 36);
    test_decode("many_splits", 2, 4097, 16, 4, 4, 64, 64, 0.f, 0.125f, 37, 37);
    test_decode("mha", 7, 300, 8, 8, 8, 64, 64, 0.f, 0.125f, 0, 38);
    test_decode("mqa64", 3, 500, 64, 1, 1, 128, 128, 0.f, s128, 0, 39);
    test_decode("diffqkv", 7, 777, 32, 4, 16, 128, 128, 0.f, s128, 0, 40);
    test_decode("diffqkv_d64", 2, 33, 32, 4, 16, 64, 64, 0.f, 0.125f, 3, 41);
    test_decode("softcap30", 4, 1000, 48, 8, 8, 128, 128, 30.f, 1.f, 0, 42);
    test_decode("softcap1.5", 2, 501, 8, 2, 2, 64, 64, 1.5f, 0.5f, 0, 43);
    test_decode("d256", 7, 1025, 16, 4, 4, 256, 256, 0.f, 0.0625f, 0, 44);
    test_decode("g16", 7, 33, 4, 2, 2, 16, 16, 0.f, 0.25f, 0, 45);
    test_decode("g24_16", 1, 1000, 6, 3, 2, 24, 16, 0.f, 0.2f, 0, 46);
    test_decode("g40_104", 2, 129, 12, 3, 4, 40, 104, 0.f, 0.15f, 0, 47);

    // MLA decode.
    test_mla("h16", 2, 1, 16, 512, 64, 0, 51);
    test_mla("h16", 3, 1000, 16, 512, 64, 0, 52);
    test_mla("h128", 2, 4096, 128, 512, 64, 0, 53);
    test_mla("h128", 1, 33, 128, 512, 64, 0, 54);
    test_mla("h128_split1", 2, 300, 128, 512, 64, 1, 55);
    test_mla("h128_splits", 2, 4096, 128, 512, 64, 13, 56);
    test_mla("h20", 3, 200, 20, 512, 64, 0, 57);
    test_mla("h40", 2, 257, 40, 512, 64, 5, 58);
    test_mla("fixture32_8", 2, 77, 16, 32, 8, 0, 59);
    test_mla("fixture32_16", 3, 4096, 16, 32, 16, 0, 60);
    test_mla("fixture32_16_h128", 1, 129, 128, 32, 16, 4, 61);

    if (bench) {
        bench_prefill("prefill b1 h32 s8192 d128 causal", 1, 32, 8192, 128, 128);
        bench_prefill("prefill b2 h16 s8192 d256 causal", 2, 16, 8192, 256, 256);
        bench_prefill("prefill DeepSeek MHA 192/128 h128 s4096", 1, 128, 4096, 192, 128);
        bench_decode("decode 64q/8kv d128 b32 ctx4096", 32, 4096, 64, 8, 128);
        bench_decode("decode 64q/8kv d128 b1 ctx4096", 1, 4096, 64, 8, 128);
        bench_mla("mla decode b64 ctx4096 h128", 64, 4096, 128);
        bench_mla("mla decode b1 ctx4096 h128", 1, 4096, 128);
        printf("\n%-52s %10s %10s %10s %8s\n", "case", "ms", "TFLOP/s", "GB/s", "%peak");
        for (auto& r : g_rows) {
            double pct = r.gbs > 0 ? 100.0 * r.gbs / 4277.0 : 100.0 * r.tflops / 812.0;
            printf("%-52s %10.4f %10.1f %10.0f %7.1f%%\n", r.name.c_str(), r.ms, r.tflops, r.gbs, pct);
        }
        printf("(%%peak: GB/s vs 4277 for decode rows, TFLOP/s vs 812 for prefill rows)\n");
    }
    printf("SUMMARY: %d passed, %d failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}
