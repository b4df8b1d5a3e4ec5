// MoE router: from fp32 router logits to each token's top-k experts and their weights.
//
// Per token (logits l[E], E <= 512, top_k <= 32; models use <= 16):
//   1. soft-cap     l = softcap * tanh(l / softcap)            when softcap > 0 (SGLang Grok)
//   2. scores       s = softmax(l) over all experts     (SCORING_CODE_SOFTMAX: Qwen, Grok, DS-V2)
//                   s = 1 / (1 + exp(-l))               (SCORING_CODE_SIGMOID: DeepSeek-V3, Sigma V2)
//   3. choice       c = s + correction_bias                    (bias nullable; selection only)
//   4. groups       when 1 < n_group <= E (E % n_group == 0 expected): experts split into
//                   n_group consecutive groups of E / n_group; group score = sum of its two
//                   best c (GROUP_SCORE_CODE_TOP2_SUM, V3) or its best c (GROUP_SCORE_CODE_MAX,
//                   V2; a group of one expert scores that expert); keep the topk_group best
//                   groups, c = -inf elsewhere
//   5. top-k        the k largest c, in descending order; ties go to the lower expert
//                   (or group) index
//   6. weights      w_j = s[id_j] (unbiased); if renormalize: w_j /= sum (softmax) or
//                   w_j /= sum + 1e-20 (sigmoid), the sum taken in selection order
//                   starting from 0; then w_j *= routed_scaling
// out_ids / out_weights are [tokens, top_k] (int32 / fp32), row stride top_k.
// If fewer than top_k experts are selectable (top_k > E), missing slots get id -1, weight 0.
//
// dtypes: fp32 in and out; expf/tanhf (full precision, not the __expf intrinsics).
// Bytes per call: tokens * (4E + 8k); FLOPs ~ tokens * E * (10 + 2k) compare/adds: tiny.
// Launch: one warp per token, 4 warps (128 threads) per block, grid-stride over tokens.
// Lane l holds experts l, l+32, ..., so each top-k step is a 16-value local scan plus a
// 5-step shuffle reduction. Group scores go through shared memory (any group size).
//
// moe_route_choice (after moe_route, only under --routing balanced|uniform) replaces the
// ids in place and leaves the weights: the router's work and weights stay, only the
// experts change. Rules (exec/cpu/ops/route.rs `replace_choice`, the same arithmetic):
//   balanced  slot s = t*k + j, position i = s mod E, G = ep_groups (1 unless G | E):
//             id = (i mod G) * (E / G) + i / G   (consecutive positions: distinct per token)
//   uniform   token t draws h_d = mix64(mix64(mix64(seed) ^ t) ^ d) mod E for d = 0, 1, ...,
//             keeping each new expert until it has k (k <= E)
// Bytes: tokens * k * 4 written. One thread per token, 128 per block, grid-stride.
#include <math_constants.h>

#include "kern_util.cuh"

// The host's limits (usize in Rust, so uintptr_t in the header) as ints for the arithmetic.
constexpr int MAX_EXPERTS = MOE_ROUTE_MAX_EXPERTS;
constexpr int PER_LANE = MAX_EXPERTS / 32;
constexpr int WARPS = ROUTE_WARPS;

// Candidate order: larger value first, then lower index. A strict total order on distinct
// indices, so every lane of a shuffle reduction ends with the same winner.
__device__ __forceinline__ bool route_better(float v, int i, float best_v, int best_i) {
    return v > best_v || (v == best_v && i < best_i);
}

// Warp-wide arg-best of (value, index, payload); every lane gets the winner.
__device__ __forceinline__ void route_warp_best(float& v, int& i, float& payload) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, v, o);
        const int oi = __shfl_xor_sync(0xffffffffu, i, o);
        const float op = __shfl_xor_sync(0xffffffffu, payload, o);
        if (route_better(ov, oi, v, i)) v = ov, i = oi, payload = op;
    }
}

extern "C" __global__ void __launch_bounds__(WARPS * 32) moe_route(const MoeRouteParams p) {
    __shared__ float choice_s[WARPS][MAX_EXPERTS];
    __shared__ float group_s[WARPS][MAX_EXPERTS];
    __shared__ unsigned char keep_s[WARPS][MAX_EXPERTS];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int E = min(p.num_experts, MAX_EXPERTS);
    const bool softmax = p.scoring == SCORING_CODE_SOFTMAX;

    for (long long t = static_cast<long long>(blockIdx.x) * WARPS + warp; t < p.tokens;
         t += static_cast<long long>(gridDim.x) * WARPS) {
        const float* lg = p.logits + t * p.ld;
        float score[PER_LANE], choice[PER_LANE];
        unsigned taken = 0;  // bit j: expert j*32+lane is unavailable (absent or chosen)

        // 1-2. soft-cap and scores.
        float mx = -CUDART_INF_F;
#pragma unroll
        for (int j = 0; j < PER_LANE; ++j) {
            const int e = j * 32 + lane;
            float l = -CUDART_INF_F;
            if (e < E) {
                l = lg[e];
                if (p.softcap > 0.f) l = p.softcap * tanhf(l / p.softcap);
                mx = fmaxf(mx, l);
            } else {
                taken |= 1u << j;
            }
            score[j] = l;
        }
        if (softmax) {
            mx = warp_max(mx);
            float sum = 0.f;
#pragma unroll
            for (int j = 0; j < PER_LANE; ++j) {
                score[j] = (taken >> j & 1u) ? 0.f : expf(score[j] - mx);
                sum += score[j];
            }
            sum = warp_sum(sum);
#pragma unroll
            for (int j = 0; j < PER_LANE; ++j) score[j] = score[j] / sum;
        } else {
#pragma unroll
            for (int j = 0; j < PER_LANE; ++j) score[j] = 1.f / (1.f + expf(-score[j]));
        }

        // 3. selection values.
#pragma unroll
        for (int j = 0; j < PER_LANE; ++j) {
            const int e = j * 32 + lane;
            choice[j] = score[j];
            if (p.correction_bias && e < E) choice[j] += p.correction_bias[e];
        }

        // 4. group-limited masking.
        if (p.n_group > 1 && p.n_group <= E) {
            const int group_size = E / p.n_group;
#pragma unroll
            for (int j = 0; j < PER_LANE; ++j) {
                const int e = j * 32 + lane;
                if (e < E) choice_s[warp][e] = choice[j];
            }
            __syncwarp();
            for (int g = lane; g < p.n_group; g += 32) {
                float top1 = -CUDART_INF_F, top2 = -CUDART_INF_F;
                const float* c = &choice_s[warp][g * group_size];
                for (int k = 0; k < group_size; ++k) {
                    const float v = c[k];
                    if (v > top1) {
                        top2 = top1;
                        top1 = v;
                    } else if (v > top2) {
                        top2 = v;
                    }
                }
                group_s[warp][g] = (p.group_score == GROUP_SCORE_CODE_MAX || group_size < 2) ? top1 : top1 + top2;
                keep_s[warp][g] = 0;
            }
            __syncwarp();
            for (int s = 0; s < p.topk_group; ++s) {
                float bv = -CUDART_INF_F, unused = 0.f;
                int bi = INT_MAX;
                for (int g = lane; g < p.n_group; g += 32)
                    if (!keep_s[warp][g] && route_better(group_s[warp][g], g, bv, bi)) bv = group_s[warp][g], bi = g;
                route_warp_best(bv, bi, unused);
                if (lane == 0 && bi < p.n_group) keep_s[warp][bi] = 1;
                __syncwarp();
            }
#pragma unroll
            for (int j = 0; j < PER_LANE; ++j) {
                const int g = (j * 32 + lane) / group_size;
                if (g >= p.n_group || !keep_s[warp][g]) choice[j] = -CUDART_INF_F;
            }
            __syncwarp();  // shared buffers are rewritten for the next token
        }

        // 5-6. top-k in descending order, carrying the unbiased score along.
        int my_id = -1;
        float my_w = 0.f, sum = 0.f;
        for (int s = 0; s < p.top_k; ++s) {
            float bv = -CUDART_INF_F, bs = 0.f;
            int bi = INT_MAX;
#pragma unroll
            for (int j = 0; j < PER_LANE; ++j) {
                const int e = j * 32 + lane;
                if (!(taken >> j & 1u) && route_better(choice[j], e, bv, bi)) bv = choice[j], bi = e, bs = score[j];
            }
            route_warp_best(bv, bi, bs);
            if (bi == INT_MAX) {  // nothing left to pick (top_k > E)
                bi = -1;
                bs = 0.f;
            } else if ((bi & 31) == lane) {
                taken |= 1u << (bi >> 5);
            }
            if (lane == s) my_id = bi, my_w = bs;
            sum += bs;
        }
        if (lane < p.top_k) {
            float w = my_w;
            if (p.renormalize) w = w / (softmax ? sum : sum + 1e-20f);
            w = w * p.routed_scaling;
            p.out_ids[t * p.top_k + lane] = my_id;
            p.out_weights[t * p.top_k + lane] = w;
        }
    }
}

// rng.rs `mix64` (splitmix64 finaliser), as init.cu's rng_mix64: the uniform draws must be
// the CPU reference's bit for bit.
__device__ __forceinline__ unsigned long long route_mix64(unsigned long long z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

extern "C" __global__ void __launch_bounds__(ROUTE_CHOICE_THREADS) moe_route_choice(const MoeRouteChoiceParams p) {
    const int E = p.num_experts, k = p.top_k;
    if (E <= 0 || k <= 0 || k > E || k > static_cast<int>(MOE_ROUTE_MAX_TOP_K)) return;  // the host refuses these
    const int G = (p.ep_groups > 0 && E % p.ep_groups == 0) ? p.ep_groups : 1;
    for (long long t = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; t < p.tokens;
         t += static_cast<long long>(gridDim.x) * blockDim.x) {
        int* ids = p.ids + t * k;
        if (p.mode == EXPERT_CHOICE_CODE_BALANCED) {
            for (int j = 0; j < k; ++j) {
                const int i = static_cast<int>((t * k + j) % E);
                ids[j] = (i % G) * (E / G) + i / G;
            }
        } else if (p.mode == EXPERT_CHOICE_CODE_UNIFORM) {
            const unsigned long long token_key = route_mix64(route_mix64(p.seed) ^ static_cast<unsigned long long>(t));
            int picked = 0;
            for (unsigned long long d = 0; picked < k; ++d) {
                const int e = static_cast<int>(route_mix64(token_key ^ d) % static_cast<unsigned long long>(E));
                bool seen = false;
                for (int j = 0; j < picked; ++j) seen |= ids[j] == e;
                if (!seen) ids[picked++] = e;
            }
        }
    }
}
