#!/usr/bin/env bash
# Whole forwards, fwdbench beside HF transformers eager and HF under torch.compile (issue 8's
# strongest whole-forward peer: SDPA with cuDNN preferred, compiled prefill, static-cache decode
# with CUDA graphs), one H200, the 2-layer configs (random weights), the same timing (L2 flushed
# before each iteration, median of 10): MoE prefill 32 x 2048, dense prefill 1 x 8192 (GPT-3:
# 1 x 2048, its positions end there), decode 8 and 32 over 2048 cached tokens (GPT-3: 2047).
#   scripts/hf-peer.sh ["qwen deepseek qwen_dense llama3_8b gpt3"]   (expects .device/ from
#   scripts/build-device.sh, or FWDBENCH_BIN; PYTHON picks the interpreter with torch, default python3)
# Compiles cost device time, so steps that would start after HF_PEER_BUDGET_S (default 240 s)
# are skipped (SKIP(time) in the summary); run the rest as a second call (inductor's on-disk
# cache then makes the compiles that already ran fast). Prints the table of speed-ups
# (peer ms / fwdbench ms) last; logs and CSVs come back in $OUT/hf-peer-logs.tgz.
set -uo pipefail
cd "$(dirname "$0")/.."
export NCCL_NVLS_ENABLE=0
final=${OUT:-results/hf-peer}
out=$(mktemp -d)
mkdir -p "$final"
bin=${FWDBENCH_BIN:-.device/fwdbench}
py=${PYTHON:-python3}
families=${1:-qwen deepseek qwen_dense llama3_8b gpt3}
budget=${HF_PEER_BUDGET_S:-240}
export STEP_TIMEOUT_S=${STEP_TIMEOUT_S:-150}
source scripts/steps.sh
start=$(date +%s)
timely() { # name, command...: a step, or SKIP(time) once the budget is spent
  if [ $(( $(date +%s) - start )) -gt "$budget" ]; then
    summary+=("$(printf '%-44s %-10s' "$1" "SKIP(time)")"); return
  fi
  step "$@"
}
peer_csv=$out/peer.csv
# model -> "prefill_bsz prefill_seq decode_seq"; decode batches are 8 and 32 everywhere.
declare -A shape=(
  [qwen]="32 2048 2048" [deepseek]="32 2048 2048" [mixtral]="32 2048 2048"
  [qwen_dense]="1 8192 2048" [llama3_8b]="1 8192 2048" [gpt3]="1 2048 2047"
)
hf_args() { # model: the flags of hf_latency.py for its shapes (one process: one model build)
  set -- ${shape[$1]} "$1"
  echo "--config model_conf/$4/config_2l.json --name $4 --device cuda --prefill-bsz $1 --prefill-seq $2" \
    "--decode-bsz 8,32 --decode-seq $3 --iters 10 --warmup 2 --csv $peer_csv"
}
hf=python/reference/hf_latency.py

nvidia-smi -L | tee "$out/gpu.txt"
$py -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__, "cudnn", torch.backends.cudnn.version())' | tee -a "$out/gpu.txt"
for m in $families; do
  [ -n "${shape[$m]:-}" ] || { echo "hf-peer: no shapes for model '$m' (known: ${!shape[*]})"; exit 2; }
  set -- ${shape[$m]}
  # run crosses every batch with every length: {8,32};{2048} alone covers a MoE model's shapes.
  grids=("{8,32};{$3}")
  [ "$2" = "$3" ] && [[ " 8 32 " == *" $1 "* ]] || grids+=("{$1};{$2}")
  for i in "${!grids[@]}"; do
    printf '%s\n' "${grids[$i]}" > "$out/${m}_grid$i.csv"
    timely "fwdbench_${m}_grid$i" $bin run --model $m --mconf 2l --deploy tp1 --shapes "$out/${m}_grid$i.csv" \
      --warmup 3 --iters 10 --save --results-dir "$out/results"
  done
  timely "hf_eager_$m" $py $hf $(hf_args $m) --attn-impl sdpa
done
# The compiles last: the figures above do not wait on them.
for m in $families; do
  # Three compiles (prefill, decode 8, decode 32) in one step: a longer limit than the others.
  STEP_TIMEOUT_S=${HF_COMPILE_TIMEOUT_S:-240} timely "hf_compile_$m" $py $hf $(hf_args $m) --compile
done
csvs=$(ls "$out"/results/csv/*.csv 2>/dev/null)
step hf_peer_table $py python/reference/hf_peer_table.py --peer "$peer_csv" --fwdbench $csvs
cp "$out/hf_peer_table.log" "$final/hf_peer_table.txt" 2>/dev/null || true
cp "$peer_csv" "$final/" 2>/dev/null || true
cat "$out/hf_peer_table.log"
finish_steps "$final" hf-peer
