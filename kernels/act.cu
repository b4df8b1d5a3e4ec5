// Activations and elementwise combinations of the feed-forward path.
//
//   act_mul:   out[r, c] = bf16(act(in[r, c]) * in[r, inter + c])   c < inter
//              (gate = first half of the fused gate|up GEMM output, up = second half)
//   bias_act:  x[r, c] = bf16(act(x[r, c] + bias[c]))               in place; bias nullable,
//              ACT_NONE = identity (plain bias add)
//   gated_add: acc[r, c] = bf16(acc[r, c] + g_r * x[r, c]),  g_r = sigmoid(gate[r*gate_ld])
//              or 1 when gate is null (Qwen2-MoE shared-expert gate; residual/branch sums)
//
// act (an `Act` code): ACT_SILU g/(1+e^-g), ACT_GELU_TANH (tanh approximation), ACT_GELU_ERF
// (erff), ACT_NONE identity; see apply_act in kern_util.cuh. All math in fp32 with one rounding per stored value (HF rounds act(gate)
// to bf16 before the multiply; we follow the fused SGLang kernels instead).
// Bytes per call: act_mul 6*rows*inter, bias_act 4*rows*cols, gated_add 6*rows*cols
// (+2 per row for the gate). FLOPs: a handful per value, plus one exp/tanh/erf.
// Launch: 1-D grid-stride over (row, 8-value chunk), 256 threads; 16-byte vectors when all
// row starts are 16-byte aligned and the width is a multiple of 8, single values otherwise.
#include "kern_util.cuh"

// Grid-stride walk over (row, chunk) pairs; `body(row, col, vectorised)` handles 8 values
// at `col` when vectorised, else 1.
template <typename Body>
__device__ __forceinline__ void for_each_chunk(int rows, int cols, bool vec, Body body) {
    const int width = vec ? 8 : 1;
    const long long per_row = cols / width;
    const long long total = static_cast<long long>(rows) * per_row;
    const bool fits32 = total < (1ll << 32);
    for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < total;
         i += static_cast<long long>(gridDim.x) * blockDim.x) {
        const RowChunk rc = split_index(i, per_row, fits32);
        body(rc.row, rc.chunk * width);
    }
}

extern "C" __global__ void act_mul(const ActMulParams p) {
    const bool vec = (p.inter & 7) == 0 && rows_aligned16(p.in, p.in_ld) && rows_aligned16(p.out, p.out_ld);
    const int act = p.act;
    for_each_chunk(p.rows, p.inter, vec, [&](long long r, long long c) {
        const bf16* g = p.in + r * p.in_ld + c;
        const bf16* u = g + p.inter;
        bf16* o = p.out + r * p.out_ld + c;
        if (vec) {
            float gv[8], uv[8];
            load8_ro(g, gv);
            load8_ro(u, uv);
#pragma unroll
            for (int k = 0; k < 8; ++k) gv[k] = apply_act(gv[k], act) * uv[k];
            store8(o, gv);
        } else {
            o[0] = to_bf16(apply_act(to_f32(g[0]), act) * to_f32(u[0]));
        }
    });
}

extern "C" __global__ void bias_act(const BiasActParams p) {
    const bool vec = (p.cols & 7) == 0 && rows_aligned16(p.x, p.ld) && (p.bias == nullptr || is_aligned16(p.bias));
    const int act = p.act;
    for_each_chunk(p.rows, p.cols, vec, [&](long long r, long long c) {
        bf16* x = p.x + r * p.ld + c;
        if (vec) {
            float v[8], b[8];
            load8(x, v);
            if (p.bias) {
                load8_ro(p.bias + c, b);
#pragma unroll
                for (int k = 0; k < 8; ++k) v[k] += b[k];
            }
#pragma unroll
            for (int k = 0; k < 8; ++k) v[k] = apply_act(v[k], act);
            store8(x, v);
        } else {
            float v = to_f32(x[0]);
            if (p.bias) v += to_f32(p.bias[c]);
            x[0] = to_bf16(apply_act(v, act));
        }
    });
}

extern "C" __global__ void gated_add(const GatedAddParams p) {
    const bool vec = (p.cols & 7) == 0 && rows_aligned16(p.acc, p.acc_ld) && rows_aligned16(p.x, p.x_ld);
    for_each_chunk(p.rows, p.cols, vec, [&](long long r, long long c) {
        // The gate is one value per row; re-reading it per chunk hits L1.
        const float g = p.gate ? 1.f / (1.f + expf(-to_f32(p.gate[r * p.gate_ld]))) : 1.f;
        bf16* a = p.acc + r * p.acc_ld + c;
        const bf16* x = p.x + r * p.x_ld + c;
        if (vec) {
            float av[8], xv[8];
            load8(a, av);
            load8_ro(x, xv);
            // __fmul_rn: no fused multiply-add, so the fp32 sum matches a CPU evaluation.
#pragma unroll
            for (int k = 0; k < 8; ++k) av[k] = av[k] + __fmul_rn(g, xv[k]);
            store8(a, av);
        } else {
            a[0] = to_bf16(to_f32(a[0]) + __fmul_rn(g, to_f32(x[0])));
        }
    });
}
