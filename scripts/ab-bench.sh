#!/usr/bin/env bash
# A/B of two fwdbench builds on the same H200 in one call: the fa3 prefill rows of
# hopper-bench.sh timed with BASE (the previous build) and NEW, interleaved A B A B so drift
# over the call hits both alike. Prints each run's median ms and the NEW/BASE speed ratio.
#   BASE=.device/fwdbench_base NEW=.device/fwdbench scripts/ab-bench.sh
set -uo pipefail
cd "$(dirname "$0")/.."
export NCCL_NVLS_ENABLE=0
base=${BASE:-.device/fwdbench_base} new=${NEW:-.device/fwdbench}
out=${OUT:-results/ab}/ab
mkdir -p "$out"
pos="--set n_positions=16384 --set n_ctx=16384"
rows=(
  "d128_s8192|--model gpt3 $pos --set n_embd=4096 --set n_head=32 --op attention --tokens 8192"
  "d256_b2_s8192|--model gpt3 $pos --set n_embd=4096 --set n_head=16 --op attention --bsz 2 --seq 8192"
  "mla_s4096|--model deepseek --op mla_prefill_attention --tokens 4096"
  "h64_s2048|--model gpt3 $pos --set n_embd=8192 --set n_head=64 --op attention --tokens 2048"
  "sigma_gqa_s8192|--model sigma --op attention --tokens 8192"
  "d64_s8192|--model gpt3 $pos --set n_embd=2048 --set n_head=32 --op attention --tokens 8192"
)
printf '%-18s %10s %10s %10s %10s %8s\n' row base1_ms new1_ms base2_ms new2_ms new/base
for r in "${rows[@]}"; do
  name=${r%%|*} args=${r#*|}
  ms=()
  for bin in "$base" "$new" "$base" "$new"; do
    csv=$(mktemp --suffix .csv)
    # shellcheck disable=SC2086
    timeout 120 "$bin" kernel bench --no-check --csv "$csv" $args --attention fa3 >>"$out/$name.log" 2>&1
    ms+=("$(python3 -c 'import csv,sys; r=list(csv.DictReader(open(sys.argv[1]))); print(r[-1]["median_ms"] if r else "nan")' "$csv")")
  done
  ratio=$(python3 -c "import sys; b=(float(sys.argv[1])+float(sys.argv[3]))/2; n=(float(sys.argv[2])+float(sys.argv[4]))/2; print(f'{b/n:.3f}')" "${ms[@]}" 2>/dev/null || echo nan)
  printf '%-18s %10s %10s %10s %10s %8s\n' "$name" "${ms[@]}" "$ratio" | tee -a "$out/ab.txt"
done
