#!/usr/bin/env python3
"""Times the peers of `fwdbench kernel bench --suite seed` on this GPU's own torch.

Reads the suite's CSV (results/kernel_bench/seed.csv), and for every attention, MLA, MoE
and linear row times the same problem (the row's `dims`) with:
  attention / MLA prefill: torch SDPA with the cuDNN, FLASH and EFFICIENT backends;
  MLA decode: the absorbed form as two bf16 bmm's with an fp32 softmax;
  MoE: torch._grouped_mm (bf16) for gate|up and down with SiLU-and-multiply between, and
       torch._scaled_grouped_mm (FP8 e4m3, row-wise scales: per token, per expert output
       channel) the same way, over the row's routing (`routing` column: balanced gives every
       expert exactly its share, as fwdbench's --routing balanced; otherwise uniform random
       top-k, what a lone moe op of fwdbench draws), the local experts' share;
  linear: torch.matmul (bf16), and torch._scaled_mm in FP8 e4m3 with row-wise scales (per
       token x per output channel) and with DeepSeek-V3's block scales (1x128 activation
       groups x 128x128 weight blocks; cuBLAS >= 12.9 on SM90).
The FP8 peers time the GEMMs only (inputs quantized beforehand, outside the events). Each is
guarded: a torch without the op, or whose op refuses the scaling, writes 'not available in
this torch' (and the reason) instead of failing.
Each: 3 warm-ups, then 25 iterations, each after a 256 MB L2 flush outside the events (a
read of the buffer, as fwdbench's bench::timing flush: a write would leave dirty lines whose
write-back lands inside the timed region),
timed with CUDA events (the GPU held busy by a spin kernel while the host enqueues them, so
Python's dispatch time stays outside); the median is reported. TFLOP/s and GB/s use fwdbench's own FLOP
and byte counts of the row, so the ratio of times is the ratio of rates. A peer that
cannot run a shape (a backend without support, out of memory) writes its error instead.

  python3 python/reference/kernel_peers.py [--seed-csv results/kernel_bench/seed.csv]
                                           [--out results/kernel_bench/peers.csv]
"""
import argparse
import csv
import os

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

WARMUP, ITERS = 3, 25
# ~200 us at the H200's ~2 GHz: longer than any peer's host-side dispatch.
SPIN_CYCLES = 400_000
FLUSH = None


def timed(fn, spin=True):
    """Median milliseconds of fn() over ITERS runs, L2 flushed before each (and, with spin,
    the GPU held busy while the host enqueues the run)."""
    global FLUSH
    if FLUSH is None:
        FLUSH = torch.empty(256 << 20, dtype=torch.int8, device="cuda")
    for _ in range(WARMUP):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(ITERS):
        FLUSH.sum(dtype=torch.int32)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        # Hold the GPU busy while Python enqueues the events and fn's kernels, so the host's
        # dispatch time (tens of microseconds through SDPA's backend selection) never sits
        # between the events: a 20 us kernel was otherwise timed anywhere from 17 to 48 us.
        if spin:
            torch.cuda._sleep(SPIN_CYCLES)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


def dims_of(row):
    return {k: float(v) if "." in v else int(v) for k, v in (kv.split("=") for kv in row["dims"].split())}


def randn(*shape):
    return torch.randn(*shape, device="cuda", dtype=torch.bfloat16)


def sdpa_peers(d):
    q = randn(d["b"], d["hq"], d["sq"], d["dqk"])
    k = randn(d["b"], d["hk"], d["skv"], d["dqk"])
    v = randn(d["b"], d["hv"], d["skv"], d["dv"])
    # A decode query is the last position: it sees every key, so no mask. A prefill of the
    # whole context is causal.
    causal = d["sq"] == d["skv"] and d["sq"] > 1
    gqa = d["hq"] != d["hk"]
    out = {}
    for name, backend in [("sdpa_cudnn", SDPBackend.CUDNN_ATTENTION), ("sdpa_flash", SDPBackend.FLASH_ATTENTION),
                          ("sdpa_efficient", SDPBackend.EFFICIENT_ATTENTION)]:
        def run(backend=backend):
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa)
        out[name] = run
    return out


def mla_decode_peer(d):
    b, h, skv, dl, dr = d["b"], d["h"], d["skv"], d["dl"], d["dr"]
    q = randn(b, h, dl + dr)
    cache = randn(b, skv, dl + dr)
    scale = (dl + dr) ** -0.5

    def run():
        scores = torch.bmm(q, cache.transpose(1, 2)).float() * scale
        p = torch.softmax(scores, dim=-1).to(torch.bfloat16)
        return torch.bmm(p, cache[:, :, :dl])
    return {"bmm_absorbed": run}


class NotAvailable(Exception):
    """This torch lacks the op, or its op refuses the scaling on this GPU."""


FP8 = getattr(torch, "float8_e4m3fn", None)
FP8_MAX = 448.0


def quantize(x, scale):
    """x / scale rounded to e4m3; `scale` broadcasts over x (amax / 448 per group)."""
    return (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8)


def rowwise(x, dim):
    """e4m3 values and fp32 scales, one scale per row (dim=-1) or column (dim=0)."""
    scale = x.float().abs().amax(dim=dim, keepdim=True).clamp(min=1e-12) / FP8_MAX
    return quantize(x, scale), scale


def guarded(name, build):
    """`build()` -> the timed function, or a NotAvailable with the reason."""
    if FP8 is None or not hasattr(torch, name):
        raise NotAvailable(f"torch.{name} not available in this torch")
    try:
        fn = build()
        fn()  # the feature check: an op that refuses the scaling raises here
        torch.cuda.synchronize()
        return fn
    except (RuntimeError, NotImplementedError, TypeError, ValueError) as e:
        raise NotAvailable(f"torch.{name} not available in this torch ({type(e).__name__}: {str(e).splitlines()[0][:160]})")


def expert_ids(t, k, etotal, routing, ep):
    """[t*k] expert ids: fwdbench's balanced rule, else uniform random distinct top-k."""
    if routing == "balanced":
        g = ep if ep > 0 and etotal % ep == 0 else 1
        pos = torch.arange(t * k, device="cuda") % etotal
        return (pos % g) * (etotal // g) + pos // g
    return torch.rand(t, etotal, device="cuda").topk(k, dim=-1).indices.flatten()


def moe_peer(d, routing="model", ep=1):
    t, hidden, inter, e, first, etotal, k = (d[n] for n in ("t", "h", "i", "e", "first", "etotal", "k"))
    ids = expert_ids(t, k, etotal, routing, ep)
    local = ids[(ids >= first) & (ids < first + e)] - first
    counts = torch.bincount(local, minlength=e)
    offs = torch.cumsum(counts, 0).to(torch.int32)
    rows = int(counts.sum())
    x = randn(max(rows, 1), hidden)[:rows]
    w13 = randn(e, 2 * inter, hidden)
    w2 = randn(e, hidden, inter)

    def run():
        h = torch._grouped_mm(x, w13.transpose(-2, -1), offs=offs)
        a = F.silu(h[:, :inter]) * h[:, inter:]
        return torch._grouped_mm(a, w2.transpose(-2, -1), offs=offs)

    def fp8_grouped():
        xq, xs = rowwise(x, -1)
        w13q, w13s = rowwise(w13, -1)  # per expert output channel: [e, 2I, 1]
        w2q, w2s = rowwise(w2, -1)
        # The down GEMM's input, quantized per token as it would be after the activation.
        aq, as_ = rowwise(randn(max(rows, 1), inter)[:rows], -1)

        def gemms():
            h = torch._scaled_grouped_mm(xq, w13q.transpose(-2, -1), xs.squeeze(-1), w13s.squeeze(-1), offs=offs,
                                         out_dtype=torch.bfloat16)
            return h, torch._scaled_grouped_mm(aq, w2q.transpose(-2, -1), as_.squeeze(-1), w2s.squeeze(-1),
                                               offs=offs, out_dtype=torch.bfloat16)
        return gemms

    peers = {"grouped_mm": run}
    if inter % 16 == 0 and hidden % 16 == 0:
        peers["scaled_grouped_mm_rowwise"] = lambda: guarded("_scaled_grouped_mm", fp8_grouped)
    return peers


def linear_peer(d):
    x, w = randn(d["m"], d["k"]), randn(d["n"], d["k"])
    m, n, kdim = d["m"], d["n"], d["k"]

    def fp8_rowwise():
        xq, xs = rowwise(x, -1)  # [m, 1]
        wq, ws = rowwise(w, -1)  # [n, 1]
        return lambda: torch._scaled_mm(xq, wq.t(), scale_a=xs, scale_b=ws.t(), out_dtype=torch.bfloat16)

    def fp8_block():
        # DeepSeek-V3: activations per token and 128-channel group, weights per 128x128 block.
        if kdim % 128 or n % 128:
            raise ValueError(f"K = {kdim} and N = {n} must be multiples of 128 for 128x128 blocks")
        xg = x.float().view(m, kdim // 128, 128)
        xs = xg.abs().amax(-1).clamp(min=1e-12) / FP8_MAX  # [m, K/128]
        xq = quantize(xg, xs.unsqueeze(-1)).view(m, kdim)
        wb = w.float().view(n // 128, 128, kdim // 128, 128)
        ws = wb.abs().amax(dim=(1, 3)).clamp(min=1e-12) / FP8_MAX  # [N/128, K/128]
        wq = quantize(wb, ws[:, None, :, None]).view(n, kdim)
        # cuBLAS wants the 1x128 scales outer-dim-major and the 128x128 ones as [L4, N/128]
        # (K blocks padded to a multiple of 4), as torch's own tests build them.
        l4 = (kdim // 128 + 3) // 4 * 4
        ws_pad = torch.zeros(n // 128, l4, device="cuda")
        ws_pad[:, : kdim // 128] = ws
        xs_t = xs.t().contiguous().t()
        return lambda: torch._scaled_mm(xq, wq.t(), scale_a=xs_t, scale_b=ws_pad.t(), out_dtype=torch.bfloat16)

    return {
        "matmul": lambda: torch.matmul(x, w.t()),
        "scaled_mm_rowwise": lambda: guarded("_scaled_mm", fp8_rowwise),
        "scaled_mm_block128": lambda: guarded("_scaled_mm", fp8_block),
    }


def peers_of(row):
    d = dims_of(row)
    kind = row["kind"]
    if kind in ("attention", "mla_prefill_attention"):
        return sdpa_peers(d)
    if kind == "mla_decode_attention":
        return mla_decode_peer(d)
    if kind == "moe":
        return moe_peer(d, row.get("routing") or "model", int(row.get("ep") or 1))
    if kind == "linear":
        return linear_peer(d)
    return {}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed-csv", default="results/kernel_bench/seed.csv")
    ap.add_argument("--out", default="results/kernel_bench/peers.csv")
    args = ap.parse_args()
    with open(args.seed_csv) as f:
        rows = [r for r in csv.DictReader(f) if r["dims"]]
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case", "peer", "median_ms", "tflops", "gbs", "error", "gpu", "torch"])
        for row in rows:
            gflop, mbytes = float(row["gflop"]), float(row["mbytes"])
            try:
                peers = peers_of(row)
            except Exception as e:  # the shape itself does not fit: one line, keep going
                w.writerow([row["case"], "setup", "", "", "", f"{type(e).__name__}: {e}".splitlines()[0], "", ""])
                continue
            for name, fn in peers.items():
                try:
                    if name.startswith("scaled_"):
                        fn = fn()  # the guarded builder: the FP8 operands, then the GEMM
                    ms = timed(fn)
                    rate = (f"{gflop / ms:.2f}", f"{mbytes / ms:.1f}")  # GFLOP/ms = TFLOP/s, MB/ms = GB/s
                    w.writerow([row["case"], name, f"{ms:.5f}", *rate, "", torch.cuda.get_device_name(), torch.__version__])
                    print(f"{row['case']}: {name} {ms:.4f} ms, {rate[0]} TFLOP/s, {rate[1]} GB/s", flush=True)
                except NotAvailable as e:
                    w.writerow([row["case"], name, "", "", "", str(e), "", torch.__version__])
                    print(f"{row['case']}: {name}: {e}", flush=True)
                except Exception as e:
                    msg = f"{type(e).__name__}: {e}".splitlines()[0][:200]
                    w.writerow([row["case"], name, "", "", "", msg, "", torch.__version__])
                    print(f"{row['case']}: {name} failed: {msg}", flush=True)
                f.flush()
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
