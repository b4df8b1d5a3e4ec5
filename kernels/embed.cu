// Token (and learned position) embedding lookup.
//
//   out[t, :] = scale * table[ids[t] - vocab_start, :]   if vocab_start <= ids[t] < vocab_start + vocab_rows
//             = 0                                         otherwise (another rank owns the row)
//   out[t, :] += pos_table[positions[t], :]               when pos_table is set (GPT)
//
// The table is this rank's vocab-parallel shard, [vocab_rows, hidden] contiguous; the
// sum over ranks (all-reduce) completes the lookup. The position table is never sharded;
// positions == null with a position table means position t for token t.
//
// dtypes: bf16 tables and output, int32 ids/positions, fp32 math, one rounding per value
// (bf16(scale * e + p)); __fmul_rn keeps the compiler from fusing the multiply into the
// add, so the fp32 value matches a plain CPU evaluation bit for bit.
// Bytes per call: tokens * hidden * 2 * (2 + has_pos) (+ 4-8 B per token for ids);
// no FLOPs to speak of.
// Launch: 1-D grid-stride over (token, 8-value chunk), 256 threads; chunks are 16-byte
// vectors when hidden % 8 == 0 and every pointer/stride is 16-byte aligned, single values
// otherwise.
#include "kern_util.cuh"

extern "C" __global__ void embed_tokens(const EmbedTokensParams p) {
    const bool vec = (p.hidden & 7) == 0 && rows_aligned16(p.out, p.out_ld) && is_aligned16(p.table) &&
                     (p.pos_table == nullptr || is_aligned16(p.pos_table));
    const int width = vec ? 8 : 1;
    const long long per_row = p.hidden / width;
    const long long total = static_cast<long long>(p.tokens) * per_row;
    const bool fits32 = total < (1ll << 32);
    for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < total;
         i += static_cast<long long>(gridDim.x) * blockDim.x) {
        const RowChunk rc = split_index(i, per_row, fits32);
        const long long t = rc.row, c = rc.chunk * width;
        const int local = p.ids[t] - p.vocab_start;
        const bool owned = local >= 0 && local < p.vocab_rows;
        const bf16* emb = p.table + static_cast<long long>(local) * p.hidden + c;
        const bf16* pos = nullptr;
        if (p.pos_table) {
            const long long position = p.positions ? p.positions[t] : t;
            pos = p.pos_table + position * p.hidden + c;
        }
        bf16* dst = p.out + t * p.out_ld + c;
        if (vec) {
            float v[8], q[8];
            if (owned) {
                load8_ro(emb, v);
#pragma unroll
                for (int k = 0; k < 8; ++k) v[k] = __fmul_rn(v[k], p.scale);
            } else {
#pragma unroll
                for (int k = 0; k < 8; ++k) v[k] = 0.f;
            }
            if (pos) {
                load8_ro(pos, q);
#pragma unroll
                for (int k = 0; k < 8; ++k) v[k] += q[k];
            }
            store8(dst, v);
        } else {
            float v = owned ? __fmul_rn(p.scale, to_f32(emb[0])) : 0.f;
            if (pos) v += to_f32(pos[0]);
            dst[0] = to_bf16(v);
        }
    }
}
