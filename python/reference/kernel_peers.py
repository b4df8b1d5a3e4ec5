#!/usr/bin/env python3
"""Times the peers of `fwdbench kernel bench --suite seed` on this GPU's own torch.

Reads the suite's CSV (results/kernel_bench/seed.csv), and for every attention, MLA, MoE
and linear row times the same problem (the row's `dims`) with:
  attention / MLA prefill: torch SDPA with the cuDNN, FLASH and EFFICIENT backends;
  MLA decode: the absorbed form as two bf16 bmm's with an fp32 softmax;
  MoE: torch._grouped_mm for gate|up and down with SiLU-and-multiply between, over the
       same uniform random top-k routing fwdbench uses (the local experts' share);
  linear: torch.matmul.
Each: 3 warm-ups, then 25 iterations, each after a 256 MB L2 flush outside the events,
timed with CUDA events; the median is reported. TFLOP/s and GB/s use fwdbench's own FLOP
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
FLUSH = None


def timed(fn):
    """Median milliseconds of fn() over ITERS runs, L2 flushed before each."""
    global FLUSH
    if FLUSH is None:
        FLUSH = torch.empty(256 << 20, dtype=torch.int8, device="cuda")
    for _ in range(WARMUP):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(ITERS):
        FLUSH.zero_()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
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


def moe_peer(d):
    t, hidden, inter, e, first, etotal, k = (d[n] for n in ("t", "h", "i", "e", "first", "etotal", "k"))
    ids = torch.rand(t, etotal, device="cuda").topk(k, dim=-1).indices.flatten()
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
    return {"grouped_mm": run}


def linear_peer(d):
    x, w = randn(d["m"], d["k"]), randn(d["n"], d["k"])
    return {"matmul": lambda: torch.matmul(x, w.t())}


def peers_of(row):
    d = dims_of(row)
    kind = row["kind"]
    if kind in ("attention", "mla_prefill_attention"):
        return sdpa_peers(d)
    if kind == "mla_decode_attention":
        return mla_decode_peer(d)
    if kind == "moe":
        return moe_peer(d)
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
                    ms = timed(fn)
                    rate = (f"{gflop / ms:.2f}", f"{mbytes / ms:.1f}")  # GFLOP/ms = TFLOP/s, MB/ms = GB/s
                    w.writerow([row["case"], name, f"{ms:.5f}", *rate, "", torch.cuda.get_device_name(), torch.__version__])
                    print(f"{row['case']}: {name} {ms:.4f} ms, {rate[0]} TFLOP/s, {rate[1]} GB/s", flush=True)
                except Exception as e:
                    msg = f"{type(e).__name__}: {e}".splitlines()[0][:200]
                    w.writerow([row["case"], name, "", "", "", msg, "", torch.__version__])
                    print(f"{row['case']}: {name} failed: {msg}", flush=True)
                f.flush()
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
