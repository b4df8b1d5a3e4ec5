// Decode attention v4 (the fa3 backend's decode): GQA over the KV cache with a TMA-fed,
// warp-specialised ring, split-KV, and a combine that overlaps through PDL.
//
//   s_q new tokens per sequence b (s_q = 1 for plain decode; several for speculative decoding):
//   query token i sits at position n_kv - s_q + i and sees keys 0..=that position (causal among
//   the new tokens; the caller has already written their K/V, so n_kv includes them).
//   Query head h reads K and V head h / (q_heads / k_heads): GQA and MHA with d_qk == d_v and
//   k_heads == v_heads (Sigma v1's DiffQKV stays on attention_decode.cu).
//   s = scale * q.k; if softcap > 0: s = softcap * tanh(s / softcap); o = softmax(s) V.
//   bf16 in/out, fp32 scores, online softmax (log2 domain) and accumulators.
//   Bytes: batch * n_kv * k_heads * 2d * 2 (each cached byte read once per CTA row tile);
//   FLOPs: 2 * batch * s_q * q_heads * n_kv * 2d (minus the causal corner).
//
// Launch (src/exec/cuda/kernels/attention_decode_tma.rs): grid (num_splits, k_heads /
// heads_per_cta * row_tiles, batch), 160 threads, dynamic smem `DecodeTmaTile::smem_bytes`,
// with PDL (programmatic stream serialization): every thread waits on griddepcontrol before
// reading q or the cache, so the prologue overlaps the previous kernel.
//   Heads: a CTA serves HB = heads_per_cta (1, 2 or 4) consecutive K heads, so each key's K
//   and V of all of them, one contiguous run of the [batch, seq, heads, d] cache, are
//   requested together (one head's 256 bytes at a heads * 256 byte stride, with the other
//   heads read by other SMs at their own pace, leave DRAM pages mostly unused).
//   Rows: the (token, head) pairs of one K head, head fastest (FA3's PackGQA), 16 per row
//   tile (the m16 of mma.sync: 8 for 64q/8kv, 16 for 64q/4kv); row_tiles = ceil(group * s_q
//   / 16); a CTA takes the same row tile of each of its heads.
//   Warp 4, one lane: producer. Stages of 16 keys x HB heads of K and V (one box of 64
//   columns x 16 keys per head and 64-column chunk, 128-byte swizzle, EVICT_FIRST); the ring
//   holds 4 * SPW head tiles, so 4 * SPW / HB stages. Each head has WPH = 4 / HB consumer
//   warps that take turns on its tiles: tile t goes to turn t % WPH of every head and stage
//   turn * SPW + (t / WPH) % SPW, so a stage has one consumer per head and its phases can
//   never alias. The tensor maps' token extent is n_kv: keys past the cache's end read as
//   zero.
//   Warps 0-3: consumers, warp w on head w / WPH. S = Q K^T and O += P V on mma.sync
//   m16n8k16 (decode is bandwidth bound; wgmma's 64-row M would be mostly padding), ldmatrix
//   through the swizzle, per-warp online softmax; each head's WPH warps merge (m, l, O)
//   through shared memory at the end. The per-tile chain is what bounds a CTA's rate (one
//   consumer warp per SMSP and CTA), so it is kept short: every k-step runs unguarded (boxes
//   past d are TMA zero fill), S accumulates in two independent chains per n8 half, only
//   edge tiles (split end, causal corner) are masked, the soft cap is a compile-time branch,
//   and the softmax rescales O only when a row's max moves by more than 2^8 (update_lazy).
//   v5 (`p.stage_warps` = WS > 0, d exactly 64 or 128 and n_kv >= one stage): WS consumer
//   warps of a head share a stage of 16 * WS keys of the HB heads, one 5-D box for K and one
//   for V (dims 64 columns, keys, d / 64 chunks at a 128-byte stride, heads, batch), so each
//   op brings both 64-column halves of every row (WS = 4 / HB: 2 TMA ops per 32 KiB stage where
//   v4 issues 16 of 2 KiB); warp u of a group reads keys u * 16.., the same tiles as v4's turns.
//   num_splits == 1: o is written directly. Otherwise fp32 partials and log2-LSE go to scratch
//   (attention_decode.rs `decode_scratch_bytes`, rows (b, token, head)); with `p.fused` (v5b)
//   the last split CTA of each (b, head block, row tile) to take a ticket merges them into o,
//   else decode_tma_combine does.
//
// Entries: _d64 / _d128 / _d256 for any d <= the bucket (multiple of 8); SPW 6 / 3 / 1 keep
// the ring at 96 / 96 / 64 KiB, two CTAs per SM at d64/d128 (about 190 KiB of KV in flight
// per SM; d256's registers allow one); HB up to 4 / 4 / 1 (d256's ring of 4 head tiles would
// be one stage at 4 heads), shipped at 1 (docs/perf.md "GQA decode v3").
// Versions (docs/perf.md): v2 the TMA ring with per-warp stages and the PDL combine; v3 K-head
// blocks per CTA (kept, capped at one head); v4 the short consumer chain above (ptxas: ~170
// instructions per unmasked tile at d128, down from ~500) and a combine that requests all
// of its inputs at once; v5 the shared stages of one box each; v5b the merge in the last
// split's CTA; v6 (p.async_copy, the default wherever v5's layout runs) each consumer warp
// filling its own tiles of that layout with cp.async (no producer, no barriers: TMA boxes
// stream this cache at ~4.1 TB/s, LDGSTS at ~4.35, session 14's stream probe).
//
// decode_tma_combine: the split merge (`combine_rows`) behind griddepcontrol.wait, launched
// with PDL so its launch and scheduling overlap the main kernel's tail, and only when there
// are splits (every PDL kernel of ours waits on griddepcontrol before reading, so the kernel
// after the decode is ordered behind it directly). Grid ceil(batch * s_q * q_heads / (4 /
// slices)), block 128; d_v a multiple of 4 and at most 256.
#include "attention_decode.cuh"
#include "hopper.cuh"

namespace dtma {

constexpr int BN = DECODE_TMA_BLOCK_N;         // keys per stage: one warp's mma slice
constexpr int CW = DECODE_TMA_CONSUMER_WARPS;  // consumer warps
constexpr int ROWS = DECODE_TMA_ROWS;          // packed (token, head) rows per CTA

__device__ __forceinline__ void grid_dependency_wait() { asm volatile("griddepcontrol.wait;" ::: "memory"); }
__device__ __forceinline__ void allow_dependents() { asm volatile("griddepcontrol.launch_dependents;" ::: "memory"); }

// KV is read exactly once: let it leave L2 first.
__device__ __forceinline__ uint64_t evict_first_policy() {
    uint64_t policy;
    asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
    return policy;
}

__device__ __forceinline__ void tma_load_4d_evict_first(void* dst, const TensorMap* map, uint64_t* bar, int c0,
                                                        int c1, int c2, int c3, uint64_t policy) {
    asm volatile(
        "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.L2::cache_hint"
        " [%0], [%1, {%3, %4, %5, %6}], [%2], %7;" ::"r"(hopper::smem_addr(dst)),
        "l"(reinterpret_cast<uint64_t>(map)), "r"(hopper::smem_addr(bar)), "r"(c0), "r"(c1), "r"(c2), "r"(c3),
        "l"(policy)
        : "memory");
}

// v5's stage load: one box of 64 columns x keys x column chunks x heads x 1 sequence (the
// map's dims (64, n_kv, d / 64, k_heads, batch): the chunk dim's stride is 128 bytes, below the
// token's, so one op brings every 64-column half of the row, K-head-major in shared memory).
__device__ __forceinline__ void tma_load_5d_evict_first(void* dst, const TensorMap* map, uint64_t* bar, int c0,
                                                        int c1, int c2, int c3, int c4, uint64_t policy) {
    asm volatile(
        "cp.async.bulk.tensor.5d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.L2::cache_hint"
        " [%0], [%1, {%3, %4, %5, %6, %7}], [%2], %8;" ::"r"(hopper::smem_addr(dst)),
        "l"(reinterpret_cast<uint64_t>(map)), "r"(hopper::smem_addr(bar)), "r"(c0), "r"(c1), "r"(c2), "r"(c3),
        "r"(c4), "l"(policy)
        : "memory");
}

// One 16-byte cp.async (LDGSTS) global -> shared, `src_bytes` of it read (0: all zero fill),
// L2 only; the thread's copies since the last commit form one group.
__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, uint32_t src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

// ldmatrix x4 (plain and transposed) from a shared-space address: the consumer loop adds
// per-lane constant offsets to a tile's base instead of redoing the swizzle per k-step.
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t (&r)[4], uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

// Byte offset of element (row, col) in a [rows][64] chunk written by TMA with the 128-byte
// swizzle (the 16-byte column group XOR row % 8); col a multiple of 8, below 64.
// Conflict-free for ldmatrix: the 8 rows of one phase land in 8 different bank groups.
__host__ __device__ constexpr uint32_t swizzle_offset(int row, int col) {
    return row * 128 + (((col >> 3) ^ (row & 7)) << 4);
}

// Shared memory, from a 1024-byte aligned base: the ring of CW * SPW head tiles (a stage is
// HB consecutive ones, one per head of the CTA's block; reused for the warps' O at the end),
// the q tiles when q is not held in registers (QHEADS heads, rows padded by 8 bf16,
// attention_util.cuh's ldmatrix layout), per-warp m and l, then the full and empty barriers
// (one per stage of the largest count, HB = 1). attention_decode_tma.rs
// `DecodeTmaTile::smem_bytes` is the same sum.
template <int D, int SPW, int QHEADS>
struct Layout {
    static constexpr int HEAD_TILES = CW * SPW;
    static constexpr int TILE_ELEMS = BN * D;  // one K (or V) tile of one head
    static constexpr int RING_BYTES = HEAD_TILES * 2 * TILE_ELEMS * 2;
    static constexpr int MERGE_BYTES = CW * ROWS * D * 4;
    static constexpr int AREA = RING_BYTES > MERGE_BYTES ? RING_BYTES : MERGE_BYTES;
    static constexpr int QS = D + 8;
    static constexpr int Q_BYTES = QHEADS * ROWS * QS * 2;
    static constexpr int STATS_BYTES = 2 * CW * ROWS * 4;
};

// v5b's split tickets (`p.fused`): one counter per (sequence, head block x row tile), zero at
// module load; each split's CTA takes a ticket after its partials are visible with
// atomicInc(.., num_splits - 1), which wraps to 0 on the last one: that CTA merges, and every
// call finds the counters at 0 again, whatever its split count (calls on one stream are
// ordered: a decode touches them only after griddepcontrol.wait). attention_decode_tma.rs
// fuses only grids with at most DECODE_TMA_TICKETS such pairs.
__device__ unsigned int g_split_tickets[DECODE_TMA_TICKETS];

// A compile-time bool passed as a value, for the generic tile lambda below.
template <bool B>
struct Flag {
    static constexpr bool value = B;
};

// V6_ONLY: the entry for v6 launches at their default layout (async_copy set, fused 0, one
// K head per CTA, stage_warps = CW, d exactly D; attention_decode_tma.rs `v6_entry` picks it
// only then): the producer, the barriers and the fused merge compiled out, the layout's
// divisions constant, a third of the code of the entry of every path (a launch fetches its
// code cold once a decode step's weights have streamed through L2: docs/perf.md, session 16).
template <int D, int SPW, bool Q_IN_REGS, int HB_MAX, bool V6_ONLY>
__device__ __forceinline__ void decode_tma(const DecodeTmaParams& p) {
    using L = Layout<D, SPW, Q_IN_REGS ? 0 : HB_MAX>;
    constexpr int HEAD_TILES = L::HEAD_TILES, KSTEPS = D / 16, NO = D / 8, QS = L::QS, CHUNKS = D / 64;
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    unsigned char* base = smem_raw + ((1024 - (hopper::smem_addr(smem_raw) & 1023)) & 1023);
    bf16* ring = reinterpret_cast<bf16*>(base);
    bf16* sQ = reinterpret_cast<bf16*>(base + L::AREA);
    float* sM = reinterpret_cast<float*>(base + L::AREA + L::Q_BYTES);
    float* sL = sM + CW * ROWS;
    uint64_t* full = reinterpret_cast<uint64_t*>(base + L::AREA + L::Q_BYTES + L::STATS_BYTES);
    uint64_t* empty = full + HEAD_TILES;

    __shared__ int s_last;  // v5b: this CTA took its pair's last ticket
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int split = blockIdx.x, b = blockIdx.z;
    // HB K heads per CTA, each served by WPH consumer warps that take turns on its tiles.
    const int hb = V6_ONLY ? 1 : p.heads_per_cta, wph = CW / hb;
    // The head dim (v5's layout, so v6, has d == D); read where used, as p.d was: a copy held
    // in a register changed the code of the other entries.
    auto head_dim = [&]() { return V6_ONLY ? D : p.d; };
    // v4 (stage_warps 0): per-warp stages of 16 keys x hb heads, HEAD_TILES / hb of them, one
    // box per head and 64-column chunk. v5: WS = stage_warps warps of each head share a stage
    // of KPS = 16 * WS keys x hb heads (hb * WS head tiles), one 5-D box for K and one for V;
    // the head's wph / WS groups of WS warps take turns on stages, SPW slots each (WS = wph:
    // one group, SPW stages of CW head tiles, 8x fewer and larger TMA ops than v4 at d128).
    const bool grouped = V6_ONLY || p.stage_warps > 0;
    const int wsn = V6_ONLY ? CW : grouped ? p.stage_warps : 1, groups = wph / wsn;
    const int kps = BN * wsn;
    const int stages = grouped ? HEAD_TILES / (hb * wsn) : HEAD_TILES / hb;
    const int group = p.q_heads / p.k_heads;
    const int packed = group * p.s_q;
    const int row_tiles = (packed + ROWS - 1) / ROWS;
    const int kh0 = blockIdx.y / row_tiles * hb, r0 = (blockIdx.y % row_tiles) * ROWS;
    const int nrows = min(ROWS, packed - r0);
    // Keys per split in whole tiles, so every split but the last starts and ends on a tile.
    const int per_split = (p.n_kv + p.num_splits - 1) / p.num_splits;
    const int chunk = (per_split + kps - 1) / kps * kps;
    const int kb = split * chunk, ke = min(p.n_kv, kb + chunk);
    const int n_tiles = kb < ke ? (ke - kb + BN - 1) / BN : 0;

    // Packed row r of K head kh -> (token row b * s_q + i, q head, scratch row), and its
    // causal limit; the rows are the same for every head of the block.
    // V6_ONLY divides by `group` through its reciprocal, m = floor((2^32 - 1) / group) + 1,
    // one division instead of one per use: floor(x m / 2^32) = floor(x / group) exactly for
    // x * group < 2^32 (here x < group * s_q rows).
    const unsigned long long group_inv = V6_ONLY ? 0xffffffffu / static_cast<unsigned>(group) + 1ull : 0ull;
    auto token_of = [&](int r) {
        if constexpr (V6_ONLY) return static_cast<int>((static_cast<unsigned long long>(r0 + r) * group_inv) >> 32);
        else return (r0 + r) / group;
    };
    auto head_of = [&](int kh, int r) {
        if constexpr (V6_ONLY) return kh * group + (r0 + r) - token_of(r) * group;
        else return kh * group + (r0 + r) % group;
    };
    float* lse_out = p.scratch + (long long)p.batch * p.s_q * p.q_heads * p.num_splits * head_dim();
    auto scratch_row = [&](int kh, int r) {
        return ((long long)b * p.s_q + token_of(r)) * p.q_heads + head_of(kh, r);
    };

    // v6 (p.async_copy, v5's layout): every consumer warp copies its own tiles with cp.async,
    // no producer, no barriers (below).
    const bool async_fill = V6_ONLY || (grouped && p.async_copy);
    if (!V6_ONLY && tid < stages) {  // one lane per stage (at most 24)
        hopper::mbar_init(&full[tid], 1);
        // v4: one warp per head of the block frees a stage; v5: the WS warps of every head.
        hopper::mbar_init(&empty[tid], grouped ? hb * wsn : hb);
        hopper::mbar_init_fence();
    }
    if (!V6_ONLY && warp == CW && lane == 0) {
        hopper::tma_prefetch(&p.k);
        hopper::tma_prefetch(&p.v);
    }
    if (!V6_ONLY) __syncthreads();
    // Everything above overlapped the previous kernel; q and the cache it wrote are read below.
    grid_dependency_wait();
    allow_dependents();

    // v5b, fused combine: the split's partials are written; the last of the pair's splits to
    // take a ticket merges them all into o (the combine kernel's work, without its launch).
    // Consumer threads only (named barrier 1).
    auto merge_if_last = [&]() {
        __threadfence();  // this CTA's partials before its ticket
        hopper::named_sync(1, CW * 32);
        const unsigned ticket_idx = blockIdx.z * gridDim.y + blockIdx.y;
        const unsigned last = p.num_splits - 1;
        if (tid == 0) s_last = atomicInc(&g_split_tickets[ticket_idx], last) == last;
        hopper::named_sync(1, CW * 32);
        if (!s_last) return;
        __threadfence();  // every other split's partials, after their tickets
        const int S = p.num_splits, R = hb * nrows, warp_id = tid >> 5;
        float* sW = reinterpret_cast<float*>(ring);  // [R][S] weights (the ring is idle)
        for (int i = warp_id; i < R; i += CW) {
            const long long srow = scratch_row(kh0 + i / nrows, i % nrows);
            float l[4], w[4];
#pragma unroll
            for (int k = 0; k < 4; ++k) l[k] = lane + 32 * k < S ? __ldcg(lse_out + srow * S + lane + 32 * k) : -INFINITY;
            const float mx = warp_max(fmaxf(fmaxf(l[0], l[1]), fmaxf(l[2], l[3])));
            float sum = 0.f;
#pragma unroll
            for (int k = 0; k < 4; ++k) {
                w[k] = l[k] == -INFINITY ? 0.f : exp2f(l[k] - mx);
                sum += w[k];
            }
            sum = warp_sum(sum);
            const float inv = sum > 0.f ? 1.f / sum : 0.f;
#pragma unroll
            for (int k = 0; k < 4; ++k)
                if (lane + 32 * k < S) sW[i * S + lane + 32 * k] = w[k] * inv;
        }
        hopper::named_sync(1, CW * 32);
        const int vecs = head_dim() / 4;
        constexpr int BATCH = 16;
        for (int i = tid; i < R * vecs; i += CW * 32) {
            const int row = i / vecs, c = (i % vecs) * 4, h = row / nrows, r = row % nrows;
            const float* part = p.scratch + scratch_row(kh0 + h, r) * S * head_dim() + c;
            float4 o = make_float4(0.f, 0.f, 0.f, 0.f);
            for (int s0 = 0; s0 < S; s0 += BATCH) {
                float4 v[BATCH];
#pragma unroll
                for (int u = 0; u < BATCH; ++u)
                    v[u] = s0 + u < S ? __ldcg(reinterpret_cast<const float4*>(part + (long long)(s0 + u) * head_dim()))
                                      : make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
                for (int u = 0; u < BATCH; ++u) {
                    const float wt = s0 + u < S ? sW[row * S + s0 + u] : 0.f;
                    if (wt != 0.f) {  // a select: an empty split's partial is never written
                        o.x += wt * v[u].x; o.y += wt * v[u].y; o.z += wt * v[u].z; o.w += wt * v[u].w;
                    }
                }
            }
            const long long orow = (long long)b * p.s_q + token_of(r);
            bf16* out = p.o + orow * p.o_row_stride + (long long)head_of(kh0 + h, r) * p.o_head_stride + c;
            *reinterpret_cast<uint2*>(out) = make_uint2(attn::pack_bf16(o.x, o.y), attn::pack_bf16(o.z, o.w));
        }
    };

    if (n_tiles == 0) {  // a split past n_kv (n_kv small for num_splits): contributes nothing
        if (warp == CW) return;
        if (p.num_splits > 1 && tid < hb * nrows)
            lse_out[scratch_row(kh0 + tid / nrows, tid % nrows) * p.num_splits + split] = -INFINITY;
        if (!V6_ONLY && p.fused) merge_if_last();
        return;
    }

    // Tile t of the split goes to turn t % wph of every head and stage turn * SPW + j % SPW,
    // j = t / wph: each stage has one consumer warp per head, and its phases never alias.
    if (warp == CW && async_fill) return;  // v6: the consumers load their own tiles
    if (warp == CW) {  // producer
        if (lane == 0) {
            const uint64_t policy = evict_first_policy();
            // Every 64-column box of the bucket, also those past d: TMA zero-fills them
            // without reading memory, so the consumers run all D / 16 k-steps unguarded.
            constexpr int TX = 2 * CHUNKS * BN * 64 * 2;
            if (grouped) {
                const int HALF = hb * wsn * L::TILE_ELEMS;  // K (or V) of one stage, elements
                const int n_stages = (n_tiles + wsn - 1) / wsn;
                for (int j = 0; j < n_stages; ++j) {
                    // Stage j goes to group j % groups, its slot q % SPW, q = j / groups.
                    const int q = j / groups, s = (j % groups) * SPW + q % SPW;
                    hopper::mbar_wait(&empty[s], ((q / SPW) & 1) ^ 1);
                    hopper::mbar_arrive_expect_tx(&full[s], 2 * HALF * 2);
                    bf16* stage = ring + s * 2 * HALF;
                    const int key0 = kb + j * kps;
                    tma_load_5d_evict_first(stage, &p.k, &full[s], 0, key0, 0, kh0, b, policy);
                    tma_load_5d_evict_first(stage + HALF, &p.v, &full[s], 0, key0, 0, kh0, b, policy);
                }
                return;
            }
            for (int t = 0; t < n_tiles; ++t) {
                const int j = t / wph, s = (t % wph) * SPW + j % SPW;
                hopper::mbar_wait(&empty[s], ((j / SPW) & 1) ^ 1);
                hopper::mbar_arrive_expect_tx(&full[s], hb * TX);
                bf16* stage = ring + s * hb * 2 * L::TILE_ELEMS;
                const int key0 = kb + t * BN;
                // Heads then columns: per key, the block's K (then V) is one contiguous run of
                // hb * d * 2 bytes of the [batch, seq, heads, d] cache, requested together.
                for (int h = 0; h < hb; ++h)
#pragma unroll
                    for (int c = 0; c < CHUNKS; ++c)
                        tma_load_4d_evict_first(stage + h * 2 * L::TILE_ELEMS + c * BN * 64, &p.k, &full[s], c * 64,
                                                kh0 + h, key0, b, policy);
                for (int h = 0; h < hb; ++h)
#pragma unroll
                    for (int c = 0; c < CHUNKS; ++c)
                        tma_load_4d_evict_first(stage + (h * 2 + 1) * L::TILE_ELEMS + c * BN * 64, &p.v, &full[s],
                                                c * 64, kh0 + h, key0, b, policy);
            }
        }
        return;
    }

    const int hh = warp / wph, turn = warp % wph, kh = kh0 + hh;
    const int g = lane >> 2, t4 = lane & 3;
    auto q_row = [&](int r) {
        return p.q + ((long long)b * p.s_q + token_of(r)) * p.q_row_stride + (long long)head_of(kh, r) * p.q_head_stride;
    };

    // q's A fragments: straight from global into registers (rows g and g + 8, columns 2 t4
    // and 2 t4 + 8 of each k-step, zero past nrows and d), or through shared memory for d256.
    uint32_t qf[Q_IN_REGS ? KSTEPS : 1][4];
    if constexpr (Q_IN_REGS) {
        const bf16* q_lo = g < nrows ? q_row(g) : nullptr;
        const bf16* q_hi = g + 8 < nrows ? q_row(g + 8) : nullptr;
        auto pair = [&](const bf16* row, int c) {
            return row != nullptr && c < head_dim() ? *reinterpret_cast<const uint32_t*>(row + c) : 0u;
        };
#pragma unroll
        for (int kk = 0; kk < KSTEPS; ++kk) {
            const int c = kk * 16 + 2 * t4;
            qf[kk][0] = pair(q_lo, c); qf[kk][1] = pair(q_hi, c);
            qf[kk][2] = pair(q_lo, c + 8); qf[kk][3] = pair(q_hi, c + 8);
        }
    } else {
        // Every consumer thread loads part of the block's hb q tiles; sQ is [hb][ROWS][QS].
        for (int i = tid; i < hb * ROWS * (D / 8); i += CW * 32) {
            const int h = i / (ROWS * (D / 8)), r = i / (D / 8) % ROWS, c = (i % (D / 8)) * 8;
            uint4 val = make_uint4(0u, 0u, 0u, 0u);
            if (r < nrows && c < head_dim()) {
                const long long row = (long long)b * p.s_q + token_of(r);
                val = *reinterpret_cast<const uint4*>(p.q + row * p.q_row_stride +
                                                      (long long)head_of(kh0 + h, r) * p.q_head_stride + c);
            }
            *reinterpret_cast<uint4*>(sQ + (h * ROWS + r) * QS + c) = val;
        }
        hopper::named_sync(1, CW * 32);
        sQ += hh * ROWS * QS;
    }

    // Last key rows g and g + 8 may see (-1: a padding row, fully masked in masked tiles).
    const int lim_lo = g < nrows ? p.n_kv - p.s_q + token_of(g) : -1;
    const int lim_hi = g + 8 < nrows ? p.n_kv - p.s_q + token_of(g + 8) : -1;
    // Keys below this are visible to every real row of the CTA (row 0 holds its earliest
    // token): tiles wholly below it skip the mask. Padding rows (q = 0) then see finite
    // scores of 0, harmless since they are never written.
    const int unmasked_end = min(ke, p.n_kv - p.s_q + token_of(0) + 1);
    const float scale_log2 = p.scale * attn::LOG2E;
    const bool softcapped = p.softcap > 0.f;
    const float cap_in = softcapped ? p.scale / p.softcap : 0.f, cap_out = p.softcap * attn::LOG2E;
    float acc[NO][4];
#pragma unroll
    for (int n = 0; n < NO; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
    attn::SliceSoftmax st;
    // ldmatrix row/column of this lane within a 16 x 16 block: K^T (non-transposed) and V
    // (transposed) fragments, as attention_util.cuh's load_kt_frag / load_v_frag. Within a
    // tile, k-step kk reads chunk kk / 4 (BN * 128 bytes apart) at this lane's swizzled
    // offset for column group kk % 4, so four offsets per operand serve every k-step.
    const int k_row = (lane & 7) + ((lane >> 4) << 3), k_col = ((lane >> 3) & 1) * 8;
    const int v_row = (lane & 7) + (((lane >> 3) & 1) << 3), v_col = (lane >> 4) * 8;
    const uint32_t chunk_bytes = kps * 64 * 2;  // a 64-column chunk of the tile's head
    uint32_t k_off[4], v_off[4];
#pragma unroll
    for (int c = 0; c < 4; ++c) {
        k_off[c] = swizzle_offset(k_row, c * 16 + k_col);
        v_off[c] = swizzle_offset(v_row, c * 16 + v_col);
    }

    // One 16-key tile: S = Q K^T in two independent chains per n8 half (even and odd
    // k-steps, so four HMMAs deep at d128 instead of eight), the score transform, the lazy
    // online softmax, O += P V. Two instantiations: FAST for interior tiles without a soft
    // cap (one multiply per score), the generic one for edge tiles (split end, causal
    // corner) and Grok's soft cap; two, not four, keep the code that every SM fetches anew
    // after the timing's L2 flush small.
    auto tile = [&](uint32_t tk, uint32_t tv, int key0, auto fast) {
        constexpr bool FAST = decltype(fast)::value;
        float sc[2][2][4] = {};  // [n8 half][k-step parity][element]
#pragma unroll
        for (int kk = 0; kk < KSTEPS; ++kk) {
            uint32_t a[4];
            attn::q_frag<Q_IN_REGS>(a, qf, sQ, QS, kk, lane);
            uint32_t bk[4];
            ldsm_x4(bk, tk + (kk >> 2) * chunk_bytes + k_off[kk & 3]);
            attn::mma_bf16(sc[0][kk & 1], a, bk[0], bk[1]);
            attn::mma_bf16(sc[1][kk & 1], a, bk[2], bk[3]);
        }
        float s[2][4];
#pragma unroll
        for (int n = 0; n < 2; ++n) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const float x = sc[n][0][e] + sc[n][1][e];
                if constexpr (FAST) {
                    s[n][e] = x * scale_log2;
                } else {
                    const float v = softcapped ? cap_out * tanhf(x * cap_in) : x * scale_log2;
                    const int key = key0 + n * 8 + 2 * t4 + (e & 1);
                    s[n][e] = key < ke && key <= (e < 2 ? lim_lo : lim_hi) ? v : -INFINITY;
                }
            }
        }
        uint32_t pa[4];
        st.update_lazy(s, acc, pa);
#pragma unroll
        for (int dn = 0; dn < NO / 2; ++dn) {
            uint32_t bv[4];
            ldsm_x4_t(bv, tv + (dn >> 2) * chunk_bytes + v_off[dn & 3]);
            attn::mma_bf16(acc[2 * dn], pa, bv[0], bv[1]);
            attn::mma_bf16(acc[2 * dn + 1], pa, bv[2], bv[3]);
        }
    };

    // The i-th tile of this warp is t = turn + i * wph in both layouts. v4: stage turn * SPW +
    // slot, K then V per head. v5: stage i % SPW, [K: hb heads][V: hb heads], each head
    // [chunk][kps keys][64], this warp's keys at turn * 16; every warp waits on every stage
    // (also past n_tiles in the last one), so no TMA write is pending at the merge below.
    constexpr uint32_t TILE_BYTES = L::TILE_ELEMS * 2;
    const uint32_t ring_addr = hopper::smem_addr(ring);
    // Group gi = turn / WS reads slots gi * SPW.., warp u = turn % WS of it keys u * 16.. of
    // each of its stages j = gi, gi + groups, ..: tile j * WS + u = turn + i * wph (v4: WS 1).
    const int gi = turn / wsn, u = turn % wsn;
    const int stage0 = gi * SPW;
    const uint32_t stage_bytes = grouped ? 2 * hb * wsn * TILE_BYTES : hb * 2 * TILE_BYTES;
    const uint32_t warp_off = grouped ? hh * CHUNKS * chunk_bytes + u * BN * 128 : hh * 2 * TILE_BYTES;
    const uint32_t v_delta = grouped ? hb * wsn * TILE_BYTES : TILE_BYTES;
    const int n_stages = (n_tiles + wsn - 1) / wsn;
    const int n_iters = grouped ? max(0, (n_stages - gi + groups - 1) / groups) : (n_tiles - turn + wph - 1) / wph;
    if (async_fill) {
        // v6: warp (hh, turn) is the only reader of its 16-key tile in each of its SPW slots
        // (the v5 layout: [chunk][key][64] per head, 128-byte lines swizzled by key % 8), so it
        // fills them itself with 16-byte cp.async copies, SPW tiles in flight, and waits on its
        // own copy groups: no producer warp, no barriers (session 14's stream probe: TMA boxes
        // stop at ~4.1 TB/s on this cache, LDGSTS reaches ~4.35; one producer warp per CTA
        // issuing them all measured 6-7% slower than the boxes, its issue rate the limit).
        // Lane l copies 16-byte group l % (CHUNKS * 8) of rows l / (CHUNKS * 8) + k * 32 /
        // (CHUNKS * 8) of the tile (two keys' 256 bytes per instruction at d128); keys at or
        // past n_kv are zero-filled (src-size 0), as TMA's out-of-bounds fill.
        constexpr int ROW_UNITS = CHUNKS * 8, ROW_STEP = 32 / ROW_UNITS;
        static_assert(32 % ROW_UNITS == 0, "v5 / v6 stages are d64 or d128");
        const int g16 = lane % ROW_UNITS;
        const uint32_t lane_off = (g16 / 8) * chunk_bytes;
        const long long token = (long long)p.k_heads * D;
        const long long col0 = (long long)b * p.max_seq * token + (long long)kh * D + g16 * 8;
        const bf16* kc = p.k_cache + col0;
        const bf16* vc = p.v_cache + col0;
        // Iteration i's tile: slot i % SPW of this warp's group, its K (V at + v_delta).
        auto tile_addr = [&](int i) { return ring_addr + (stage0 + i % SPW) * stage_bytes + warp_off; };
        auto load = [&](int i) {
            const int t = turn + i * wph;
            if (i < n_iters && t < n_tiles) {
                const uint32_t tk = tile_addr(i) + lane_off;
                const int key0 = kb + t * BN;
#pragma unroll
                for (int r = lane / ROW_UNITS; r < BN; r += ROW_STEP) {
                    const bool in = key0 + r < p.n_kv;
                    const long long src = in ? (long long)(key0 + r) * token : 0;
                    const uint32_t off = r * 128 + (((g16 % 8) ^ (r & 7)) << 4);
                    cp_async_16(tk + off, kc + src, in ? 16 : 0);
                    cp_async_16(tk + v_delta + off, vc + src, in ? 16 : 0);
                }
            }
            cp_async_commit();  // one group per iteration, empty or not: the count stays exact
        };
        if constexpr (V6_ONLY) {
            // One copy of the fill code, not SPW (the first tiles wait on memory anyway).
#pragma unroll 1
            for (int i = 0; i < SPW; ++i) load(i);
        } else {
#pragma unroll
            for (int i = 0; i < SPW; ++i) load(i);
        }
        for (int i = 0; i < n_iters; ++i) {
            const int t = turn + i * wph;
            cp_async_wait<SPW - 1>();  // iteration i's copies of this lane have landed
            __syncwarp();              // and every lane's
            const uint32_t tk = tile_addr(i);
            const int key0 = kb + t * BN;
            if (t < n_tiles) {
                if (!softcapped && key0 + BN <= unmasked_end) tile(tk, tk + v_delta, key0, Flag<true>{});
                else tile(tk, tk + v_delta, key0, Flag<false>{});
            }
            __syncwarp();  // every lane's ldmatrix of the slot is done before it is refilled
            load(i + SPW);
        }
        cp_async_wait<0>();
    }
    // The phase flips each time slot wraps.
    int slot = 0;
    uint32_t phase = 0;
    for (int i = 0; i < (async_fill ? 0 : n_iters); ++i) {
        const int t = turn + i * wph;
        const int s = stage0 + slot;
        hopper::mbar_wait(&full[s], phase);
        const uint32_t tk = ring_addr + s * stage_bytes + warp_off;
        const uint32_t tv = tk + v_delta;
        const int key0 = kb + t * BN;
        if (t < n_tiles) {
            if (!softcapped && key0 + BN <= unmasked_end) tile(tk, tv, key0, Flag<true>{});
            else tile(tk, tv, key0, Flag<false>{});
        }
        __syncwarp();  // every lane's ldmatrix of this stage is done before it is refilled
        if (lane == 0) hopper::mbar_arrive(&empty[s]);
        if (++slot == SPW) slot = 0, phase ^= 1;
    }

    // Merge each head's wph warps' (m, l, O): the ring is idle once every consumer is past its
    // loop. Warps hh * wph .. hh * wph + wph - 1 hold head hh, so its state is contiguous.
    st.reduce_sums();
    hopper::named_sync(1, CW * 32);
    float* sO = reinterpret_cast<float*>(ring);  // [warp][ROWS][D]
    attn::store_warp_state(st, acc, sM, sL, sO, warp, lane);
    hopper::named_sync(1, CW * 32);
    // Per (head, row), once: each warp's weight exp2(m_w - max) / l over the head's warps
    // (written over that warp's l) and the row's log2-LSE (over the first warp's m). Each
    // (head, row) entry is read and written by one thread only.
    for (int i = tid; i < hb * nrows; i += CW * 32) {
        // One head per CTA (V6_ONLY: hb == 1): i < nrows, no division.
        const int r = V6_ONLY ? i : i % nrows, w0 = V6_ONLY ? 0 : i / nrows * wph;
        float mx = -INFINITY;
        for (int w = w0; w < w0 + wph; ++w) mx = fmaxf(mx, sM[w * ROWS + r]);
        float l = 0.f;
        for (int w = w0; w < w0 + wph; ++w) {
            const float wt = sM[w * ROWS + r] == -INFINITY ? 0.f : exp2f(sM[w * ROWS + r] - mx);
            l += wt * sL[w * ROWS + r];
            sL[w * ROWS + r] = wt;
        }
        const float inv = l > 0.f ? 1.f / l : 0.f;  // l == 0: no visible key (causal rows of a later split)
        for (int w = w0; w < w0 + wph; ++w) sL[w * ROWS + r] *= inv;
        sM[w0 * ROWS + r] = l > 0.f ? mx + log2f(l) : -INFINITY;
    }
    hopper::named_sync(1, CW * 32);
    // o (or the split's partial) four columns per thread.
    const int vecs = head_dim() / 4;
    for (int i = tid; i < hb * nrows * vecs; i += CW * 32) {
        const int h = V6_ONLY ? 0 : i / (nrows * vecs), r = V6_ONLY ? i / vecs : i / vecs % nrows;
        const int c = (i % vecs) * 4;
        const int w0 = h * wph;
        float4 val = make_float4(0.f, 0.f, 0.f, 0.f);
        for (int w = w0; w < w0 + wph; ++w) {
            const float wt = sL[w * ROWS + r];
            const float4 o = *reinterpret_cast<const float4*>(sO + (w * ROWS + r) * D + c);
            val.x += wt * o.x; val.y += wt * o.y; val.z += wt * o.z; val.w += wt * o.w;
        }
        if (p.num_splits == 1) {
            const long long row = (long long)b * p.s_q + token_of(r);
            bf16* out = p.o + row * p.o_row_stride + (long long)head_of(kh0 + h, r) * p.o_head_stride + c;
            *reinterpret_cast<uint2*>(out) = make_uint2(attn::pack_bf16(val.x, val.y), attn::pack_bf16(val.z, val.w));
        } else {
            const long long srow = scratch_row(kh0 + h, r);
            *reinterpret_cast<float4*>(p.scratch + (srow * p.num_splits + split) * head_dim() + c) = val;
            if (c == 0) lse_out[srow * p.num_splits + split] = sM[w0 * ROWS + r];
        }
    }
    if (!V6_ONLY && p.num_splits > 1 && p.fused) merge_if_last();  // its first barrier orders the sO reads before sW
}

// The split-KV merge of one (token row, q head) pair per `slices` warps:
//   o = sum_s w_s o_s, w_s = exp2(lse_s - max lse) / sum w (-inf lse: an empty split, w = 0).
// slices = 1, 2 or 4 warps per pair by split count (combine_slices; attention_decode_tma.rs
// `combine_slices` sizes the grid with the same rule), 4 / slices pairs per 128-thread
// block; warp `slice` of a pair takes every slices-th split, lane l columns 4l.. (and 4l +
// 128.. at d256). Everything is requested at once, before any reduction: each lane's share of
// all the lse (every warp reduces max and sum over all splits itself and keeps the weights
// in shared memory) and its first COMBINE_BATCH partials, so a b1 decode's 33 splits cost
// about one L2 round trip, and few splits (Qwen3 b32's two) take few, small blocks (rows x
// q_heads / 4 of them, one wave). An empty split's partials, never written, are loaded but
// weighted out by a select, so garbage cannot leak.
constexpr int COMBINE_THREADS = 128;
constexpr int COMBINE_BATCH = 16;

__device__ __forceinline__ int combine_slices(int num_splits) {
    return num_splits <= COMBINE_BATCH ? 1 : num_splits <= 2 * COMBINE_BATCH ? 2 : 4;
}

// dry: the warm pass (`p.warm`), before the decode's results exist: every global load and
// store is predicated off (no pair is valid), the rest runs as the real pass does. One copy of
// the code serves both passes (noinline), so the dry one fetches the lines the real one runs.
__device__ __noinline__ void combine_rows(const DecodeCombineParams& p, bool dry) {
    constexpr int WARPS = COMBINE_THREADS / 32;
    __shared__ float s_w[WARPS][128];  // each warp's split weights (num_splits <= 128)
    __shared__ float4 s_acc[WARPS][32];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int slices = combine_slices(p.num_splits), pairs_per_block = WARPS / slices;
    const int slice = warp % slices;
    const long long pair = (long long)blockIdx.x * pairs_per_block + warp / slices;  // b * q_heads + h
    const bool valid = !dry && pair < (long long)p.batch * p.q_heads;
    const float* o_part = p.scratch + pair * p.num_splits * p.d_v;
    const float* lse = p.scratch + (long long)p.batch * p.q_heads * p.num_splits * p.d_v + pair * p.num_splits;
    const int vecs = p.d_v / 4;

    // One round trip: this lane's lse (splits lane, lane + 32, ..) and its first batch of
    // partials (columns 4 * lane..) are all in flight before anything waits on them.
    float all_lse[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) all_lse[k] = valid && lane + 32 * k < p.num_splits ? lse[lane + 32 * k] : -INFINITY;
    float4 part[COMBINE_BATCH];
    auto load_batch = [&](int vec) {
#pragma unroll
        for (int u = 0; u < COMBINE_BATCH; ++u) {
            const int s = slice + u * slices;
            part[u] = valid && vec < vecs && s < p.num_splits
                          ? *reinterpret_cast<const float4*>(o_part + (long long)s * p.d_v + vec * 4)
                          : make_float4(0.f, 0.f, 0.f, 0.f);
        }
    };
    load_batch(lane);

    float mx = fmaxf(fmaxf(all_lse[0], all_lse[1]), fmaxf(all_lse[2], all_lse[3]));
    mx = warp_max(mx);
    float w[4], wsum = 0.f;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        w[k] = all_lse[k] == -INFINITY ? 0.f : exp2f(all_lse[k] - mx);
        wsum += w[k];
    }
    wsum = warp_sum(wsum);
    const float inv = wsum > 0.f ? 1.f / wsum : 0.f;  // 0: a block's spare warp (no pair)
#pragma unroll
    for (int k = 0; k < 4; ++k) s_w[warp][lane + 32 * k] = w[k] * inv;
    __syncwarp();

#pragma unroll 1
    for (int v0 = 0; v0 < vecs; v0 += 32) {  // block-uniform trip count (d_v is)
        const int vec = v0 + lane;
        const bool active = valid && vec < vecs;
        if (v0 > 0) load_batch(vec);
        float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
        auto add = [&](float ws, const float4& v) {
            if (ws != 0.f) {  // a select, not a multiply: empty splits' partials may be garbage
                acc.x += ws * v.x; acc.y += ws * v.y; acc.z += ws * v.z; acc.w += ws * v.w;
            }
        };
#pragma unroll
        for (int u = 0; u < COMBINE_BATCH; ++u) {
            const int s = slice + u * slices;
            add(s < p.num_splits ? s_w[warp][min(s, 127)] : 0.f, part[u]);
        }
        if (active) {  // more splits than one batch covers (over 64 at four slices)
            for (int s = slice + COMBINE_BATCH * slices; s < p.num_splits; s += slices)
                add(s_w[warp][s], *reinterpret_cast<const float4*>(o_part + (long long)s * p.d_v + vec * 4));
        }
        if (slices > 1) {  // block-uniform: the pair's other warps add into its first
            s_acc[warp][lane] = acc;
            __syncthreads();
            if (slice == 0) {
                for (int k = 1; k < slices; ++k) {
                    const float4 v = s_acc[warp + k][lane];
                    acc.x += v.x; acc.y += v.y; acc.z += v.z; acc.w += v.w;
                }
            }
            __syncthreads();  // s_acc is reused by the next column block
        }
        if (active && slice == 0) {
            const long long b = pair / p.q_heads, h = pair % p.q_heads;
            bf16* out = p.o + b * p.o_batch_stride + h * p.o_head_stride + vec * 4;
            *reinterpret_cast<uint2*>(out) = make_uint2(attn::pack_bf16(acc.x, acc.y), attn::pack_bf16(acc.z, acc.w));
        }
    }
}

}  // namespace dtma

// One entry per DecodeTmaTile of attention_decode_tma.rs; q stays in registers up to d128
// (d256 would spill). Two CTAs per SM is the occupancy the split heuristic assumes: d64 and
// d128 ask ptxas for it (at most 168 registers: ten warps put three on some SMSP, 16K
// registers each). d256 does not: its 128 fp32 accumulators need ~227 registers, so it runs
// one CTA per SM (as it did at v3's ~182), and asking would spill.
// The _v6 entries serve v6 launches only (V6_ONLY above; attention_decode_tma.rs picks them).
#define DECODE_TMA_ENTRY(NAME, TILE, MIN_CTAS, V6_ONLY)                                                  \
    extern "C" __global__ void __launch_bounds__((DECODE_TMA_CONSUMER_WARPS + 1) * 32, MIN_CTAS)            \
        NAME(const __grid_constant__ DecodeTmaParams p) {                                                  \
        dtma::decode_tma<TILE.d, TILE.stages_per_warp, TILE.q_in_regs, TILE.max_heads_per_cta, V6_ONLY>(p); \
    }
DECODE_TMA_ENTRY(decode_tma_d64, DECODE_TMA_TILE_D64, 2, false)
DECODE_TMA_ENTRY(decode_tma_d128, DECODE_TMA_TILE_D128, 2, false)
DECODE_TMA_ENTRY(decode_tma_d256, DECODE_TMA_TILE_D256, 1, false)
DECODE_TMA_ENTRY(decode_tma_d64_v6, DECODE_TMA_TILE_D64, 2, true)
DECODE_TMA_ENTRY(decode_tma_d128_v6, DECODE_TMA_TILE_D128, 2, true)

extern "C" __global__ void __launch_bounds__(128) decode_tma_combine(const DecodeCombineParams p) {
    // p.warm: the merge's code fetched (from DRAM, cold after a decode step's weights have
    // streamed through L2) while the decode still runs, by a pass that reads and writes no
    // global memory (docs/perf.md, session 16).
    if (p.warm && p.num_splits > 1) dtma::combine_rows(p, true);
    // Wait even with nothing to merge: the kernels after this one are ordered only behind it.
    dtma::grid_dependency_wait();
    if (p.num_splits <= 1) return;  // decode_tma already wrote o (and the launch is skipped then)
    dtma::combine_rows(p, false);
}
