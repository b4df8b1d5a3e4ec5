#!/usr/bin/env bash
# A/B of two fwdbench builds (or one build under two environments) on the same H200 in one
# call: the issue rows of one or more sets timed with BASE and NEW, interleaved A B A B so
# drift over the call hits both alike. Prints each run's median ms and the NEW/BASE speed ratio.
#   BASE=.device/fwdbench_base NEW=.device/fwdbench [BASE_ENV="K=V ..."] [NEW_ENV="K=V ..."] \
#     scripts/ab-bench.sh [prefill] [decode] [mla] [moe] [fp8]      (default: prefill)
# BASE_ENV / NEW_ENV are set for that side's runs only (A/B of an env knob on one build);
# NEW2 and/or NEW2_ENV add a third side, "alt" (A B C A B C; its columns and alt/base ratio last),
# so two variants share one pass of the base runs;
# ONLY (a regex) keeps the rows whose name matches; ROWS_FILE adds a set `file` of lines
# `name|<kernel bench arguments>` (run it as the set name `file`).
set -uo pipefail
cd "$(dirname "$0")/.."
export NCCL_NVLS_ENABLE=0
base=${BASE:-.device/fwdbench_base} new=${NEW:-.device/fwdbench}
out=${OUT:-results/ab}/ab
mkdir -p "$out"
pos="--set n_positions=16384 --set n_ctx=16384"
dec="--mconf full --op attention --phase decode --seq 4096 --attention fa3"
mla="--model deepseek --mconf full --op mla_decode_attention --phase decode --seq 4096 --bsz 64 --attention fa3"
moe="--op moe --mconf full --quant bf16 --routing balanced"
fp8="--op moe --mconf full --quant fp8 --routing balanced --tokens 4096"
declare -A sets
sets[prefill]="d128_s8192|--model gpt3 $pos --set n_embd=4096 --set n_head=32 --op attention --tokens 8192 --attention fa3
d256_b2_s8192|--model gpt3 $pos --set n_embd=4096 --set n_head=16 --op attention --bsz 2 --seq 8192 --attention fa3
mla_s4096|--model deepseek --op mla_prefill_attention --tokens 4096 --attention fa3
h64_s2048|--model gpt3 $pos --set n_embd=8192 --set n_head=64 --op attention --tokens 2048 --attention fa3
sigma_gqa_s8192|--model sigma --op attention --tokens 8192 --attention fa3
d64_s8192|--model gpt3 $pos --set n_embd=2048 --set n_head=32 --op attention --tokens 8192 --attention fa3"
sets[decode]="dec_sig_b1|--model sigma $dec --bsz 1
dec_sig_b32|--model sigma $dec --bsz 32
dec_sig_b64|--model sigma $dec --bsz 64
dec_qwen_b32|--model qwen $dec --bsz 32
dec_qwen_b64|--model qwen $dec --bsz 64
dec_sig_tp8_b32|--model sigma $dec --bsz 32 --deploy tp8"
sets[mla]="mla_tp1_b64|$mla
mla_tp8_b64|$mla --deploy tp8"
sets[moe]="moe_ds_4096|$moe --model deepseek --tokens 4096
moe_qw_4096|$moe --model qwen --tokens 4096
moe_ds_16384|$moe --model deepseek --tokens 16384
moe_qw_16384|$moe --model qwen --tokens 16384
moe_ds_ep8|$moe --model deepseek --tokens 4096 --deploy tp8ep8
moe_qw_ep8|$moe --model qwen --tokens 4096 --deploy tp8ep8
moe_ds_512|$moe --model deepseek --tokens 512"
sets[fp8]="fp8_ds_4096|$fp8 --model deepseek
fp8_qw_4096|$fp8 --model qwen"
if [ -n "${ROWS_FILE:-}" ]; then
  sets[file]=$(grep -v '^[[:space:]]*\(#\|$\)' "$ROWS_FILE" 2>/dev/null)
  [ -n "${sets[file]}" ] || { echo "ab-bench: ROWS_FILE '$ROWS_FILE' is missing, unreadable or has no name|args rows" >&2; exit 2; }
fi

run_one() { # side env, binary, args... -> median ms on stdout
  local side_env=$1 bin=$2; shift 2
  local csv
  csv=$(mktemp --suffix .csv)
  # shellcheck disable=SC2086
  env $side_env timeout 120 "$bin" kernel bench --no-check --csv "$csv" "$@" >>"$out/$name.log" 2>&1
  python3 -c 'import csv,sys; r=list(csv.DictReader(open(sys.argv[1]))); print(r[-1]["median_ms"] if r else "nan")' "$csv"
}
three=$([ -n "${NEW2:-}${NEW2_ENV:-}" ] && echo 1)
new2=${NEW2:-$new}
if [ -n "$three" ]; then
  printf '%-16s %9s %9s %9s %9s %9s %9s %8s %9s\n' row base1 new1 alt1 base2 new2 alt2 new/base alt/base
else
  printf '%-16s %9s %9s %9s %9s %8s\n' row base1 new1 base2 new2 new/base
fi
for s in "${@:-prefill}"; do
  [ -n "${sets[$s]:-}" ] || { echo "ab-bench: unknown set '$s' (prefill decode mla moe fp8, file with ROWS_FILE)" >&2; exit 2; }
  while IFS= read -r r; do
    name=${r%%|*} args=${r#*|}
    [[ $name =~ ${ONLY:-.} ]] || continue
    if [ -n "$three" ]; then
      # shellcheck disable=SC2086
      ms=("$(run_one "${BASE_ENV:-}" "$base" $args)" "$(run_one "${NEW_ENV:-}" "$new" $args)"
          "$(run_one "${NEW2_ENV:-}" "$new2" $args)" "$(run_one "${BASE_ENV:-}" "$base" $args)"
          "$(run_one "${NEW_ENV:-}" "$new" $args)" "$(run_one "${NEW2_ENV:-}" "$new2" $args)")
      ratios=$(python3 -c "import sys; v=[float(x) for x in sys.argv[1:]]; b=(v[0]+v[3])/2; print(f'{2*b/(v[1]+v[4]):.3f} {2*b/(v[2]+v[5]):.3f}')" "${ms[@]}" 2>/dev/null || echo "nan nan")
      # shellcheck disable=SC2086
      printf '%-16s %9s %9s %9s %9s %9s %9s %8s %9s\n' "$name" "${ms[@]}" $ratios | tee -a "$out/ab.txt"
      continue
    fi
    # shellcheck disable=SC2086
    ms=("$(run_one "${BASE_ENV:-}" "$base" $args)" "$(run_one "${NEW_ENV:-}" "$new" $args)"
        "$(run_one "${BASE_ENV:-}" "$base" $args)" "$(run_one "${NEW_ENV:-}" "$new" $args)")
    ratio=$(python3 -c "import sys; b=(float(sys.argv[1])+float(sys.argv[3]))/2; n=(float(sys.argv[2])+float(sys.argv[4]))/2; print(f'{b/n:.3f}')" "${ms[@]}" 2>/dev/null || echo nan)
    printf '%-16s %9s %9s %9s %9s %8s\n' "$name" "${ms[@]}" "$ratio" | tee -a "$out/ab.txt"
  done <<<"${sets[$s]}"
done
