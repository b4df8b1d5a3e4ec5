#!/usr/bin/env bash
# Nsight Compute on the kernels behind the issue rows: one profiled launch per kernel of each
# case (ncu replays it with caches flushed; clocks left alone, as METHOD.md asks), the speed-of-
# light, memory, occupancy and warp-stall sections plus tensor-pipe and DRAM counters. Where
# the device runtime cannot read counters (gVisor), every case says so and nothing else fails.
#   scripts/ncu-probe.sh [case ...]   (default: all cases below; expects .device/ from
#   scripts/build-device.sh). Reports under $OUT/ncu/<case>.txt, a digest printed last.
set -uo pipefail
cd "$(dirname "$0")/.."
export NCCL_NVLS_ENABLE=0
final=${OUT:-results/ncu}/ncu
mkdir -p "$final"
source scripts/ncu-common.sh
pos="--set n_positions=16384 --set n_ctx=16384"
h64="--model gpt3 $pos --set n_embd=8192 --set n_head=64"
d128="--model gpt3 $pos --set n_embd=4096 --set n_head=32"
# case -> "kernel regex;launches;bench flags"
declare -A cases=(
  [fa3_h64_s2048]="fa3_prefill;1;$h64 --op attention --tokens 2048"
  [fa3_d128_s8192]="fa3_prefill;1;$d128 --op attention --tokens 8192"
  [gqa_sigma_b1]="decode_tma;2;--model sigma $dec --bsz 1"
  [gqa_sigma_b32]="decode_tma;1;--model sigma $dec --bsz 32"
  [gqa_qwen_b32]="decode_tma;2;--model qwen $dec --bsz 32"
  [mla_tp8_b64]="mla_decode;2;$mla --deploy tp8"
  [mla_tp1_b64]="mla_decode;2;$mla --deploy tp1"
  [moe_bf16_deepseek]="moe_wgmma;2;--model deepseek $moe --quant bf16"
  [moe_bf16_qwen]="moe_wgmma;2;--model qwen $moe --quant bf16"
  [moe_fp8_deepseek]="moe_fp8_(gate|down);2;--model deepseek $moe --quant fp8"
  [moe_fp8_qwen]="moe_fp8_(gate|down);2;--model qwen $moe --quant fp8"
)
order=(fa3_h64_s2048 fa3_d128_s8192 gqa_sigma_b1 gqa_sigma_b32 gqa_qwen_b32 mla_tp8_b64 mla_tp1_b64
  moe_bf16_deepseek moe_bf16_qwen moe_fp8_deepseek moe_fp8_qwen)
[ $# -gt 0 ] && order=("$@")
metrics="dram__throughput.avg.pct_of_peak_sustained_elapsed,dram__bytes_read.sum,gpu__time_duration.sum"
metrics+=",sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active"
metrics+=",sm__warps_active.avg.pct_of_peak_sustained_active,sm__throughput.avg.pct_of_peak_sustained_elapsed"
metrics+=",regex:smsp__average_warps_issue_stalled_.*_per_issue_active.ratio"
for c in "${order[@]}"; do
  IFS=';' read -r regex launches flags <<<"${cases[$c]}"
  timeout 120 "$ncu" --clock-control none --kernel-name "regex:$regex" --launch-count "$launches" \
    --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy --section LaunchStats \
    --section WarpStateStats --metrics "$metrics" \
    $bin kernel bench --no-check --warmup 0 --iters 1 $flags >"$final/$c.txt" 2>&1
  echo "== $c (rc=$?)"
  # The digest: duration, DRAM and tensor-pipe use, occupancy, and the three largest stalls.
  grep -E '^\s+(gpu__time_duration.sum|dram__throughput.avg.pct|dram__bytes_read.sum|sm__pipe_tensor_op_gmma|sm__warps_active|Registers Per Thread|Block Limit (Registers|Shared Mem)|Achieved Occupancy)|==PROF==.*Profiling|^\s+[a-z_0-9]+ \(|ERR|rror' \
    "$final/$c.txt" | grep -v 'smsp__average' | head -40
  awk '/smsp__average_warps_issue_stalled_/ {print $1, $NF}' "$final/$c.txt" |
    sed 's/smsp__average_warps_issue_stalled_//; s/_per_issue_active.ratio//' | sort -k2 -g -r | head -6
done
