#!/usr/bin/env bash
# The whole GPU verification and benchmark suite, in one call on an H200 (see
# docs/perf.md). Expects .device/ from scripts/build-device.sh; writes logs under $OUT
# (or ./results/verify). Summary last.
#   scripts/gpu-verify.sh [checks|bench|kernels|multi|refs|fixtures|hf|all]
#   (default all: everything but hf and fixtures; several modes as one quoted argument).
# Every log and result CSV comes back inside verify-logs.tgz.
set -uo pipefail
cd "$(dirname "$0")/.."
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
# Logs go to a scratch folder, packed into one archive under $OUT (few files come back).
final=${OUT:-results/verify}
out=$(mktemp -d)
mkdir -p "$final"
bin=.device/fwdbench
mode=${1:-all}
want() { [ "$mode" = "$1" ] || { [ "$mode" = all ] && [ "$1" != hf ] && [ "$1" != fixtures ]; }; }
# Several modes in one call: `scripts/gpu-verify.sh "checks bench multi"`.
if [ "$mode" != all ] && [ "${mode#* }" != "$mode" ]; then
  modes=$mode
  want() { [[ " $modes " == *" $1 "* ]]; }
fi
want_fixtures() { want checks || want fixtures; }
declare -a summary
start=$(date +%s)
budget=${VERIFY_BUDGET_S:-540}
step() { # name, command...
  local name=$1; shift
  if [ $(( $(date +%s) - start )) -gt "$budget" ]; then
    summary+=("$(printf '%-44s %-10s' "$name" "SKIP(time)")"); return
  fi
  local t0=$(date +%s)
  if "$@" >>"$out/$name.log" 2>&1; then r=PASS; else r="FAIL(rc=$?)"; fi
  summary+=("$(printf '%-44s %-10s %4ss' "$name" "$r" $(( $(date +%s) - t0 )))")
  tail -n 3 "$out/$name.log"
}

nvidia-smi -L | tee "$out/gpu.txt"
$bin info | tee -a "$out/gpu.txt"

if want_fixtures; then
# 2. Every plan op on the GPU vs the CPU reference, on random data: the fixture configs
#    (odd sizes: head dims 24, vocab 264..296) and the real 2-layer configs (fewer
#    experts so the CPU reference stays fast; every dim is the real one).
for f in tests/fixtures/*/config.json; do
  n=$(basename "$(dirname "$f")")
  step "kernel_check_$n" timeout 120 $bin kernel check --config "$f" --bsz 3 --seq 29
done
# 3. GPU logits vs the HF / reference fixtures, prefill and decode.
for d in tests/fixtures/*/; do
  n=$(basename "$d"); [ -f "$d/config.json" ] || continue
  for phase in prefill decode; do
    flag=""; [ $phase = decode ] && flag=--decode
    step "check_cuda_${n}_$phase" $bin check --device cuda $flag --config "$d/config.json" \
      --weights "$d/model.safetensors" --input "$d/input.json" --expect "$d/logits.safetensors"
  done
done

fi

# 4. fwdbench run on the 2-layer config of every family, default grid.
if want bench; then
  for m in gpt3 grok qwen qwen_dense deepseek sigma sigma_v1; do
    step "run_${m}_2l" timeout 300 $bin run --model $m --mconf 2l --deploy tp1 --save --results-dir "$out/results" --profile decode
  done
  cp -r "$out/results/csv" "$out/csv" 2>/dev/null || true
fi

if want checks; then
declare -A reduce=(
  [gpt3]="" [qwen_dense]="" [sigma_v1]=""
  [qwen]="--set num_experts=16" [sigma]="--set n_routed_experts=16"
  [deepseek]="--set n_routed_experts=16" [grok]="--set num_local_experts=4"
)
for m in gpt3 grok qwen qwen_dense deepseek sigma sigma_v1; do
  step "kernel_check_${m}_2l" timeout 300 $bin kernel check --model $m --mconf 2l ${reduce[$m]} --bsz 3 --seq 37
done

fi

# 6. One op at a time through the production path (`kernel check --op`), on odd shapes:
#    odd sequence lengths, batches of 1 and 3, decode over an odd cache, and MoE layers
#    with few experts and few tokens so some experts stay empty; then the seed suite.
if want kernels; then
  kop() { # args of `kernel check`: an op this family does not have is not a failure here
    local out rc
    out=$(timeout 60 $bin kernel check "$@" 2>&1); rc=$?
    echo "$out"
    if [ $rc -ne 0 ] && grep -q "has no such op" <<<"$out"; then echo "(no such op in this family)"; return 0; fi
    return $rc
  }
  kcheck() { local name=$1; shift; step "kop_$name" kop "$@"; }
  # One fixture per attention/FFN variant: GQA + QK-norm, MLA + MoE, learned positions +
  # biases, soft-cap + MoE, DiffQKV.
  for n in qwen3 deepseek_v3 gpt2 grok1 sigma_v1; do
    f=tests/fixtures/$n/config.json
    for op in embed norm linear act rope attention mla route moe; do
      for shape in "--bsz 3 --seq 17" "--phase decode --bsz 1 --seq 29"; do
        kcheck "${n}_${op}_$(tr -d ' -' <<<"$shape")" --config "$f" --op $op $shape
      done
    done
  done
  declare -A few=(
    [qwen]="--set num_experts=16" [sigma]="--set n_routed_experts=16"
    [deepseek]="--set n_routed_experts=16" [grok]="--set num_local_experts=4"
  )
  for m in qwen deepseek sigma grok; do
    # One token picks top-k of 16 (grok: 2 of 4) experts: the rest stay empty.
    for shape in "--tokens 1" "--tokens 37" "--phase decode --bsz 3 --seq 63"; do
      kcheck "${m}_2l_moe_$(tr -d ' -' <<<"$shape")" --model $m --mconf 2l ${few[$m]} --op moe $shape
    done
  done
  kcheck deepseek_2l_mla_decode --model deepseek --mconf 2l --op mla_decode_attention --phase decode --bsz 3 --seq 45
  kcheck deepseek_2l_mla_prefill --model deepseek --mconf 2l --op mla_prefill_attention --bsz 1 --seq 77
  kcheck sigma_2l_attention_tp8 --model sigma --mconf 2l --op attention --phase decode --bsz 3 --seq 33 --deploy tp8
  kcheck qwen_2l_moe_ep_shard --model qwen --mconf 2l --set num_experts=16 --op moe --tokens 9 --deploy tp2ep2 --rank 1
  step kernel_bench_seed timeout 300 $bin kernel bench --suite seed --results-dir "$out/results"
  # The peers on exactly the suite's shapes, in the same call, and the ratios.
  step kernel_peers timeout 240 python3 python/reference/kernel_peers.py \
    --seed-csv "$out/results/kernel_bench/seed.csv" --out "$out/results/kernel_bench/peers.csv"
  step side_by_side python3 python/reference/side_by_side.py \
    --seed-csv "$out/results/kernel_bench/seed.csv" --peers-csv "$out/results/kernel_bench/peers.csv"
  cp "$out/side_by_side.log" "$final/side_by_side.txt" 2>/dev/null || true
fi

# 7. Multi-GPU paths on this machine: NCCL collectives at world size 1 (eager and inside a
#    graph), and projection of the seed's deployments of the full models that fit one rank in
#    bf16 (one rank's exact shard measured, collectives modelled from the public H200 table).
if want multi; then
  step comm_bench_world1 timeout 240 $bin comm bench --gpus 1 --max-bytes 256M --iters 10 \
    --out "$out/results/comm/comm_1xh200.csv"
  for dm in "gpt3 tp8" "grok tp8ep8" "qwen tp8ep8" "qwen tp8ep8dp8" "sigma tp8ep8"; do
    set -- $dm
    step "project_$1_$2" timeout 300 $bin run --model $1 --mconf full --deploy $2 --project --save \
      --results-dir "$out/results"
  done
  grep -h -B2 -A14 "^phase" "$out"/project_*.log > "$final/project-tables.txt" 2>/dev/null || true
fi

# 8. GPU integration tests (tests/gpu.rs, built by scripts/build-device.sh: fixture logits and
#    the weight generator pinned bit for bit against the CPU).
if want refs; then
  [ -x .device/gpu_tests ] && step gpu_tests .device/gpu_tests --test-threads 1
fi

# 5. HF transformers eager bf16 on the same GPU, same configs (random weights), against
#    fwdbench at prefill 1 x 2048 and decode 8 x 2048 (GPT-3: decode over 2047, its
#    learned positions end at 2048).
if want hf; then
  for m in grok qwen qwen_dense deepseek sigma sigma_v1; do
    step "hf_$m" timeout 120 python3 python/reference/hf_latency.py --config model_conf/$m/config_2l.json \
      --device cuda --seq 2048 --prefill-bsz 1 --decode-bsz 8 --iters 5
  done
  step hf_gpt3_prefill timeout 90 python3 python/reference/hf_latency.py --config model_conf/gpt3/config_2l.json \
    --device cuda --seq 2048 --prefill-bsz 1 --phases prefill --iters 5
  step hf_gpt3_decode timeout 90 python3 python/reference/hf_latency.py --config model_conf/gpt3/config_2l.json \
    --device cuda --seq 2047 --decode-bsz 8 --phases decode --iters 5
  printf '{8};{2047}\n' > "$out/gpt3_decode.csv"
  step run_gpt3_decode_2047 $bin run --model gpt3 --mconf 2l --shapes "$out/gpt3_decode.csv" --results-dir "$out/results"
  grep -h '"latency_ms"' "$out"/hf_*.log > "$final/hf.jsonl" 2>/dev/null || true
  grep -h "^decode\|^prefill" "$out/run_gpt3_decode_2047.log" >> "$final/hf.jsonl" 2>/dev/null || true
fi

tar czf "$final/verify-logs.tgz" -C "$out" .
grep -h -A 40 "^phase" "$out"/run_*_2l.log > "$final/run-tables.txt" 2>/dev/null || true
echo
echo "=== fwdbench GPU verification: $(( $(date +%s) - start ))s ==="
printf '%s\n' "${summary[@]}"
fails=$(printf '%s\n' "${summary[@]}" | grep -c FAIL)
skips=$(printf '%s\n' "${summary[@]}" | grep -c SKIP)
echo "SUMMARY: $(( ${#summary[@]} - fails - skips )) passed, $fails failed, $skips skipped"
