#!/usr/bin/env python3
"""Joins `fwdbench kernel bench --suite seed` (seed.csv) with kernel_peers.py (peers.csv) by
row key and prints, per point, fwdbench's time and rate, each peer's time, and the ratio
fwdbench / peer as speed (peer_ms / fwdbench_ms: above 1 means fwdbench is faster).
A MoE row whose launches were timed apart (the CSV's calls_ms) gets a second line with its
grouped GEMMs alone (the gate/up and down kernels, each between its own events) against
the same peers, whose timed region holds the GEMMs (and for bf16 the activation) but no
routing, permute or combine. Plain Python, no torch.

  python3 python/reference/side_by_side.py [--seed-csv ...] [--peers-csv ...]
"""
import argparse
import csv


def grouped_gemm_ms(row):
    """Sum of the grouped GEMM launches of a MoE row's calls_ms, None without them."""
    if row.get("family") != "moe" or not row.get("calls_ms"):
        return None
    parts = [c.split("=") for c in row["calls_ms"].split(";")]
    gemms = [float(ms) for name, ms in parts if "gate_up" in name or "_down" in name or name.startswith("moe_gemm")]
    return sum(gemms) if gemms else None


def read(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag in ("seed", "peers"):
        ap.add_argument(f"--{flag}-csv", default=f"results/kernel_bench/{flag}.csv")
    args = ap.parse_args()
    ours = read(args.seed_csv)
    peers = {}
    for p in read(args.peers_csv):
        peers.setdefault(p["case"], []).append(p)
    print(f"{'case':44} {'check':8} {'fwdbench ms':>11} {'TFLOP/s':>8} {'GB/s':>7}  peer: ms (fwdbench/peer)")
    for r in ours:
        if r["case"] not in peers:
            continue
        ms = float(r["median_ms"]) if r["median_ms"] else None
        check = r["check"].split("(")[0]
        cells = []
        for p in peers[r["case"]]:
            if not p["median_ms"]:
                cells.append(f"{p['peer']}: n/a")
                continue
            pm = float(p["median_ms"])
            ratio = f"{pm / ms:.2f}x" if ms else "-"
            cells.append(f"{p['peer']}: {pm:.4f} ({ratio})")
        ours_ms = f"{ms:.4f}" if ms else "skipped"
        print(f"{r['case']:44} {check:8} {ours_ms:>11} {r['tflops'] or '-':>8} {r['gbs'] or '-':>7}  " + "; ".join(cells))
        gemm = grouped_gemm_ms(r)
        if gemm:
            cells = [f"{p['peer']}: {float(p['median_ms']) / gemm:.2f}x" for p in peers[r["case"]] if p["median_ms"]]
            print(f"{'  grouped GEMMs only':44} {'':8} {gemm:11.4f} {'':>8} {'':>7}  " + "; ".join(cells))


if __name__ == "__main__":
    main()
