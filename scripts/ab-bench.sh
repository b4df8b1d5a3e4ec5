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
# The sides: base, new and (NEW2 / NEW2_ENV) alt, each a binary and its environment.
names=(base new) bins=("$base" "$new") envs=("${BASE_ENV:-}" "${NEW_ENV:-}")
if [ -n "${NEW2:-}${NEW2_ENV:-}" ]; then
  names+=(alt) bins+=("${NEW2:-$new}") envs+=("${NEW2_ENV:-}")
fi
header=(row)
for round in 1 2; do for n in "${names[@]}"; do header+=("$n$round"); done; done
for n in "${names[@]:1}"; do header+=("$n/base"); done
printf '%-16s' "${header[0]}"; printf ' %9s' "${header[@]:1}"; printf '\n'
for s in "${@:-prefill}"; do
  [ -n "${sets[$s]:-}" ] || { echo "ab-bench: unknown set '$s' (prefill decode mla moe fp8, file with ROWS_FILE)" >&2; exit 2; }
  while IFS= read -r r; do
    name=${r%%|*} args=${r#*|}
    [[ $name =~ ${ONLY:-.} ]] || continue
    # Rounds A B [C] A B [C]: drift over the call hits every side alike.
    ms=()
    for round in 1 2; do
      for i in "${!names[@]}"; do
        # shellcheck disable=SC2086
        ms+=("$(run_one "${envs[$i]}" "${bins[$i]}" $args)")
      done
    done
    # Speed of each side against base: mean base time over mean side time, both rounds.
    ratios=$(python3 -c "import sys; k=int(sys.argv[1]); v=[float(x) for x in sys.argv[2:]]; t=[(v[i]+v[k+i])/2 for i in range(k)]; print(' '.join(f'{t[0]/x:.3f}' for x in t[1:]))" "${#names[@]}" "${ms[@]}" 2>/dev/null || echo nan)
    # shellcheck disable=SC2086
    { printf '%-16s' "$name"; printf ' %9s' "${ms[@]}" $ratios; printf '\n'; } | tee -a "$out/ab.txt"
  done <<<"${sets[$s]}"
done
