// Strided bf16 row gather, and the benchmarks' L2 flush.
//
//   gather_rows: dst[i, :] = src[rows_idx[i], :]   i < n_rows  (e.g. the last token of each
//                sequence before the LM head)
// Widths are `cols` values; src_ld / dst_ld are row strides in elements. src and dst must
// not overlap (src is read through the read-only cache).
//
//   l2_flush_read: reads n_vec16 16-byte vectors of buf into L2 (ld.global.cg) and writes
//                nothing unless their XOR is `never` (the caller passes a value a zeroed
//                buffer cannot give): the lines it displaces, dirty or not, are written back
//                during the sweep, so the timed work after it starts from a clean L2 that
//                holds none of its own data.
//
// dtypes: bf16, bit-exact copies. Bytes per call: 4 * n_rows * cols + 4 * n_rows.
// Launch: 1-D grid-stride over (row, 8-value chunk), 256 threads; 16-byte vectors when both
// sides' rows are 16-byte aligned and cols % 8 == 0, 2-byte copies otherwise.
#include "kern_util.cuh"

// Copies `rows` rows; `row_of(r)` maps a destination row to its source row.
template <typename RowOf>
__device__ __forceinline__ void copy_rows(const bf16* src, long long src_ld, bf16* dst, long long dst_ld, int rows,
                                          int cols, RowOf row_of) {
    const bool vec = (cols & 7) == 0 && rows_aligned16(src, src_ld) && rows_aligned16(dst, dst_ld);
    const int width = vec ? 8 : 1;
    const long long per_row = cols / width;
    const long long total = static_cast<long long>(rows) * per_row;
    const bool fits32 = total < (1ll << 32);
    for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < total;
         i += static_cast<long long>(gridDim.x) * blockDim.x) {
        const RowChunk rc = split_index(i, per_row, fits32);
        const long long c = rc.chunk * width;
        const bf16* s = src + row_of(rc.row) * src_ld + c;
        bf16* d = dst + rc.row * dst_ld + c;
        if (vec)
            *reinterpret_cast<uint4*>(d) = __ldg(reinterpret_cast<const uint4*>(s));
        else
            *d = *s;
    }
}

extern "C" __global__ void gather_rows(const GatherRowsParams p) {
    const int* idx = p.rows_idx;
    copy_rows(p.src, p.src_ld, p.dst, p.dst_ld, p.n_rows, p.cols,
              [idx](long long r) { return static_cast<long long>(__ldg(idx + r)); });
}

extern "C" __global__ void l2_flush_read(const L2FlushParams p) {
    const uint4* buf = reinterpret_cast<const uint4*>(p.buf);
    uint32_t acc = 0;
    for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < p.n_vec16;
         i += static_cast<long long>(gridDim.x) * blockDim.x) {
        const uint4 v = __ldcg(buf + i);
        acc ^= v.x ^ v.y ^ v.z ^ v.w;
    }
    if (acc == static_cast<uint32_t>(p.never)) *p.sink = static_cast<int>(acc);
}
