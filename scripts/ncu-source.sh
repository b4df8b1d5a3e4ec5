#!/usr/bin/env bash
# Where a kernel's warps wait, per SASS instruction: Nsight Compute's warp-stall sampling of
# one launch of each case, exported as the source page (SASS with the sampled stall reasons
# per instruction) and digested into the instructions with the most samples. The question
# scripts/ncu-probe.sh's per-kernel stall ratios cannot answer: which load, barrier or wgmma.
#   scripts/ncu-source.sh [case ...]   (cases below; default all; expects .device/ from
#   scripts/build-device.sh, or FWDBENCH_BIN). Under $OUT/ncu-source/: <case>.csv.xz (the
#   whole page) and <case>.top.txt (the digest, also printed).
set -uo pipefail
cd "$(dirname "$0")/.."
export NCCL_NVLS_ENABLE=0
final=${OUT:-results/ncu-source}/ncu-source
mkdir -p "$final"
source scripts/ncu-common.sh
# case -> "kernel regex;bench flags" (the first launch the regex matches is sampled)
declare -A cases=(
  [gqa_sigma_b32]="decode_tma;--model sigma $dec --bsz 32"
  [gqa_sigma_b1]="decode_tma_d;--model sigma $dec --bsz 1"
  [gqa_sigma_b1_ctx16]="decode_tma_d;--model sigma --mconf full --op attention --phase decode --bsz 1 --seq 15"
  [norm_b1]="rms_norm;--model sigma --mconf full --op norm --phase decode --bsz 1 --seq 15"
  [moe_align_ds]="^moe_align$;--model deepseek $moe --quant bf16"
  [moe_align_count_ds]="moe_align_count;--model deepseek $moe --quant bf16"
  [mla_tp8_b64]="mla_decode;$mla --deploy tp8"
  [mla_tp1_b64]="mla_decode;$mla --deploy tp1"
  [moe_fp8_qwen_gate_up]="moe_fp8_gate_up;--model qwen $moe --quant fp8"
  [moe_fp8_ds_gate_up]="moe_fp8_gate_up;--model deepseek $moe --quant fp8"
)
order=(gqa_sigma_b32 gqa_sigma_b1 gqa_sigma_b1_ctx16 norm_b1 moe_align_ds moe_align_count_ds mla_tp8_b64 mla_tp1_b64 moe_fp8_qwen_gate_up moe_fp8_ds_gate_up)
[ $# -gt 0 ] && order=("$@")
for c in "${order[@]}"; do
  [ -n "${cases[$c]:-}" ] || { echo "ncu-source: unknown case '$c' (${order[*]})"; exit 2; }
  IFS=';' read -r regex flags <<<"${cases[$c]}"
  rep=$(mktemp -u /tmp/ncu-source-XXXX)
  timeout 180 "$ncu" --clock-control none --kernel-name "regex:$regex" --launch-count 1 \
    --section WarpStateStats --section SourceCounters -o "$rep" \
    $bin kernel bench --no-check --warmup 0 --iters 1 $flags >"$final/$c.log" 2>&1
  echo "== $c (profile rc=$?)"
  "$ncu" -i "$rep.ncu-rep" --page source --csv --print-source sass >"$final/$c.csv" 2>>"$final/$c.log"
  # The digest: the 25 instructions with the most stall samples, and their leading reasons.
  python3 - "$final/$c.csv" >"$final/$c.top.txt" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1], newline="")))
head = next((i for i, r in enumerate(rows) if "Source" in r), None)
if head is None:
    print("no source page (counters unreadable here?)"); sys.exit(0)
cols, body = rows[head], rows[head + 1:]
def col(name):
    return next((i for i, c in enumerate(cols) if c.strip() == name), None)
src, samp = col("Source"), col("Warp Stall Sampling (All Samples)")
addr = col("Address")
if samp is None:
    print("columns:", cols); sys.exit(0)
reasons = [i for i, c in enumerate(cols) if i != samp and any(k in c.lower() for k in ("stall", "pcsamp"))]
def num(v):
    try: return float(v.replace(",", ""))
    except ValueError: return 0.0
total = sum(num(r[samp]) for r in body if len(r) > samp) or 1.0
print(f"{len(body)} SASS lines, {total:.0f} samples")
for r in sorted((r for r in body if len(r) > samp), key=lambda r: -num(r[samp]))[:25]:
    top = sorted(((num(r[i]), cols[i]) for i in reasons if num(r[i]) > 0), reverse=True)[:3]
    why = ", ".join(f"{n}={v:.0f}" for v, n in top)
    print(f"{100 * num(r[samp]) / total:5.1f}%  {r[addr] if addr is not None else ''}  {r[src].strip()[:70]:70s}  {why}")
PY
  cat "$final/$c.top.txt"
  xz -f "$final/$c.csv"
  rm -f "$rep.ncu-rep"
done
