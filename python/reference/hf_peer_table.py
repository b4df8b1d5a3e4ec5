"""fwdbench beside HF transformers, eager and compiled, on the same shapes (scripts/hf-peer.sh).

    python hf_peer_table.py --peer PEER.csv --fwdbench RESULTS/csv/qwen_2l.csv [more fwdbench CSVs]

PEER.csv is what `hf_latency.py --csv` appends (column `mode`: eager or compile); the
fwdbench CSVs are `run --save`'s. Rows are matched on (model, phase, bsz, seq), the model
being hf_latency's `--name` and fwdbench's `model` column, seq fwdbench's `seq_len` (decode:
cached tokens in both). The speed-ups are peer ms / fwdbench ms: above 1, fwdbench is faster.
One line per shape the peer ran; exit status 1 when one of them has no fwdbench figure.
"""

from __future__ import annotations

import argparse
import csv
import sys

MODES = ("eager", "compile")


def read_rows(path: str) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def key(model: str, phase: str, bsz, seq) -> tuple:
    return (model, phase, int(bsz), int(seq))


def collect(peer_rows: list[dict], ours_rows: list[dict]) -> dict:
    """(model, phase, bsz, seq) of every peer row -> {"fwdbench": ms, "eager": ms, "compile":
    ms, ...}; the last row of a key wins (a rerun appends). fwdbench rows of shapes the peer
    did not run (its grid crosses every batch with every length) are left out."""
    ours = {}
    for r in ours_rows:
        if r.get("method", "measured") == "measured" and r.get("timing") in (None, "", "fwdbench"):
            ours[key(r["model"], r["phase"], r["bsz"], r["seq_len"])] = float(r["latency_ms"])
    table: dict = {}
    for r in peer_rows:
        k = key(r["model"], r["phase"], r["bsz"], r["seq"])
        entry = table.setdefault(k, {"fwdbench": ours.get(k)})
        entry[r["mode"]] = float(r["latency_ms"])
        if r["mode"] == "compile":
            entry.update(compile_s=r["compile_s"], cuda_graph=r["cuda_graph"], sdpa=r["sdpa_backend"])
    return table


def lines(table: dict) -> tuple[list[str], int]:
    out = [f"{'model':<12} {'phase':<8} {'bsz':>4} {'seq':>6} {'fwdbench_ms':>12} {'eager_ms':>10} {'compile_ms':>11} "
           f"{'x_eager':>8} {'x_compile':>10}  compile_s graph sdpa"]
    missing = 0
    for (model, phase, bsz, seq), e in sorted(table.items()):
        ours = e.get("fwdbench")
        cells = []
        for mode in MODES:
            theirs = e.get(mode)
            cells.append(f"{theirs:.3f}" if theirs is not None else "-")
        ratios = [f"{e[m] / ours:.2f}x" if ours and e.get(m) else "-" for m in MODES]
        missing += ours is None
        extra = f"{e.get('compile_s', '-')} {e.get('cuda_graph', '-')} {e.get('sdpa', '-')}"
        ours_cell = f"{ours:.3f}" if ours is not None else "missing"
        out.append(f"{model:<12} {phase:<8} {bsz:>4} {seq:>6} {ours_cell:>12} {cells[0]:>10} {cells[1]:>11} "
                   f"{ratios[0]:>8} {ratios[1]:>10}  {extra}")
    return out, missing


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--peer", required=True, help="hf_latency.py --csv output")
    p.add_argument("--fwdbench", nargs="+", required=True, help="fwdbench run --save CSVs")
    args = p.parse_args(argv)
    try:
        peer = read_rows(args.peer)
        ours = [r for path in args.fwdbench for r in read_rows(path)]
        table = collect(peer, ours)
    except (OSError, KeyError, ValueError) as e:
        print(f"error: cannot read the CSVs ({type(e).__name__}: {e}); pass hf_latency.py --csv and fwdbench run --save files",
              file=sys.stderr)
        return 2
    out, missing = lines(table)
    print("speed-up x = peer ms / fwdbench ms (above 1: fwdbench is faster)")
    print("\n".join(out))
    if missing:
        print(f"FAIL: {missing} peer shape(s) have no fwdbench figure")
        return 1
    print(f"PASS: {len(table)} shapes with both figures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
