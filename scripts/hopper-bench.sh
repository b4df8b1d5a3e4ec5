#!/usr/bin/env bash
# The Hopper kernels' check and side-by-side benchmark, in one call on an H200 (docs/perf.md):
# every fa3 variant and the TMA gate GEMM against the CPU reference on odd shapes, then
# fwdbench (fa3 and fa2, tma and cuBLASLt) and the torch peers on the same shapes.
#   scripts/hopper-bench.sh [check|bench|all]     (expects .device/ from scripts/build-device.sh;
#   BACKENDS="fa3" skips the fa2 rows)
# Logs and CSVs go to $OUT (or results/hopper), packed into hopper-logs.tgz.
set -uo pipefail
cd "$(dirname "$0")/.."
export NCCL_NVLS_ENABLE=0
final=${OUT:-results/hopper}
out=$(mktemp -d)
mkdir -p "$final"
bin=${FWDBENCH_BIN:-.device/fwdbench}
mode=${1:-all}
source scripts/steps.sh
# Synthetic MHA shapes on the GPT-3 block: head dim = n_embd / n_head.
pos="--set n_positions=16384 --set n_ctx=16384"
d64="--model gpt3 $pos --set n_embd=2048 --set n_head=32"
d128="--model gpt3 $pos --set n_embd=4096 --set n_head=32"
d256="--model gpt3 $pos --set n_embd=4096 --set n_head=16"
h64="--model gpt3 $pos --set n_embd=8192 --set n_head=64"

if [ "$mode" != bench ]; then
  for b in ${BACKENDS:-fa3 fa2}; do
    step "check_${b}_d64"  $bin kernel check $d64  --op attention --bsz 2 --seq 301 --attention $b
    step "check_${b}_d128" $bin kernel check $d128 --op attention --bsz 2 --seq 333 --attention $b
    step "check_${b}_d256" $bin kernel check $d256 --op attention --bsz 3 --seq 257 --attention $b
    step "check_${b}_mla"  $bin kernel check --model deepseek --op mla_prefill_attention --bsz 2 --seq 203 --attention $b
    step "check_${b}_grok_softcap" $bin kernel check --model grok --op attention --bsz 2 --seq 190 --attention $b
    step "check_${b}_qwen_gqa" $bin kernel check --model qwen --op attention --bsz 1 --seq 481 --attention $b
    step "check_${b}_sigma_v1_diffqkv" $bin kernel check --model sigma_v1 --op attention --bsz 2 --seq 129 --attention $b
  done
  step check_fa3_d128_one_token $bin kernel check $d128 --op attention --bsz 3 --seq 1
  for f in tests/fixtures/*/config.json; do
    n=$(basename "$(dirname "$f")")
    step "check_model_$n" $bin kernel check --config "$f" --bsz 3 --seq 29
    step "check_logits_$n" $bin check --device cuda --config "$f" --weights "$(dirname "$f")/model.safetensors" \
      --input "$(dirname "$f")/input.json" --expect "$(dirname "$f")/logits.safetensors"
  done
  step check_gemm_tma_odd $bin kernel check --op linear --m 300 --n 520 --k 200 --gemm tma
  step check_gemm_tma_tile $bin kernel check --op linear --m 256 --n 512 --k 128 --gemm tma
  step check_gemm_tma_row $bin kernel check --op linear --m 1 --n 264 --k 72 --gemm tma
  # Decode attention (fa3: attention_decode_tma.cu; fa2: attention_decode.cu) at odd contexts
  # (--seq cached tokens + the new one: 37, 1000, 4097) and batches 1, 3, 33; Sigma v1's
  # DiffQKV runs attention_decode.cu under both backends.
  dec="--op attention --phase decode"
  for b in ${BACKENDS:-fa3 fa2}; do
    step "check_${b}_decode_sigma_b1_ctx4097" $bin kernel check --model sigma $dec --bsz 1 --seq 4096 --attention $b
    step "check_${b}_decode_sigma_b33_ctx37" $bin kernel check --model sigma $dec --bsz 33 --seq 36 --attention $b
    step "check_${b}_decode_qwen_b3_ctx1000" $bin kernel check --model qwen $dec --bsz 3 --seq 999 --attention $b
    step "check_${b}_decode_qwen_b1_ctx4097" $bin kernel check --model qwen $dec --bsz 1 --seq 4096 --attention $b
    step "check_${b}_decode_grok_softcap_b3_ctx1000" $bin kernel check --model grok $dec --bsz 3 --seq 999 --attention $b
    step "check_${b}_decode_sigma_v1_diffqkv_b3_ctx1000" $bin kernel check --model sigma_v1 $dec --bsz 3 --seq 999 --attention $b
    step "check_${b}_decode_d64_b3_ctx1000" $bin kernel check $d64 $dec --bsz 3 --seq 999 --attention $b
    step "check_${b}_decode_d256_b3_ctx4097" $bin kernel check $d256 $dec --bsz 3 --seq 4096 --attention $b
    step "check_${b}_decode_sigma_tp8_b33_ctx1000" $bin kernel check --model sigma $dec --bsz 33 --seq 999 --deploy tp8 --attention $b
  done
  # fa3 batches that fill the GPU: split (b33 ctx1000, Qwen's 16-row groups at b64, d64),
  # unsplit (b160 ctx37), and two new tokens per sequence (b160); every launch runs v5's
  # layout filled by v6's consumer cp.async copies wherever d is the bucket and n_kv >= 64
  # (b33 ctx1000, Qwen b64, d64 b33, and the split b1 / tp8 rows above), v4's boxes otherwise.
  step check_fa3_decode_sigma_b33_ctx1000 $bin kernel check --model sigma $dec --bsz 33 --seq 999
  step check_fa3_decode_sigma_b160_ctx37 $bin kernel check --model sigma $dec --bsz 160 --seq 36
  step check_fa3_decode_qwen_b64_ctx1000 $bin kernel check --model qwen $dec --bsz 64 --seq 999
  step check_fa3_decode_d64_b33_ctx1000 $bin kernel check $d64 $dec --bsz 33 --seq 999
  step check_fa3_sq2_sigma_b160 $bin kernel check --model sigma --op attention --bsz 160 --seq 2
  # The A/B knobs (docs/perf.md "GQA decode v5"): two and four K heads per CTA (32- and 16-key
  # stages of 2 / 4 heads in one box), and v4's per-warp 16-key boxes.
  for h in 2 4; do
    step "check_fa3_decode_heads${h}_sigma_b33_ctx1000" env FWDBENCH_DECODE_HEADS=$h $bin kernel check --model sigma $dec --bsz 33 --seq 999
    step "check_fa3_decode_heads${h}_qwen_b64_ctx1000" env FWDBENCH_DECODE_HEADS=$h $bin kernel check --model qwen $dec --bsz 64 --seq 999
    step "check_fa3_decode_heads${h}_d64_b33_ctx1000" env FWDBENCH_DECODE_HEADS=$h $bin kernel check $d64 $dec --bsz 33 --seq 999
  done
  step check_fa3_decode_heads4_grok_softcap_b33_ctx1000 env FWDBENCH_DECODE_HEADS=4 $bin kernel check --model grok $dec --bsz 33 --seq 999
  # v5's stages filled by the producer's TMA boxes (FWDBENCH_DECODE_LOAD=tma) instead of
  # v6's consumer-issued cp.async copies (the default since session 14): unsplit at one and
  # four heads, d64. Every other check of v5 stages above runs v6.
  step check_fa3_decode_loadtma_sigma_b33_ctx1000 env FWDBENCH_DECODE_LOAD=tma $bin kernel check --model sigma $dec --bsz 33 --seq 999
  step check_fa3_decode_loadtma_heads4_qwen_b64_ctx1000 env FWDBENCH_DECODE_LOAD=tma FWDBENCH_DECODE_HEADS=4 $bin kernel check --model qwen $dec --bsz 64 --seq 999
  step check_fa3_decode_loadtma_d64_b33_ctx1000 env FWDBENCH_DECODE_LOAD=tma $bin kernel check $d64 $dec --bsz 33 --seq 999
  step check_fa3_decode_boxold_sigma_b1_ctx4097 env FWDBENCH_DECODE_BOX=old $bin kernel check --model sigma $dec --bsz 1 --seq 4096
  step check_fa3_decode_boxold_qwen_b3_ctx1000 env FWDBENCH_DECODE_BOX=old $bin kernel check --model qwen $dec --bsz 3 --seq 999
  # v5 stages of 32 and 16 keys (two warp pairs / four single warps per head taking turns;
  # the knob also forces v5 on split launches: b1, tp8).
  for k in 16 32; do
    step "check_fa3_decode_keys${k}_sigma_b1_ctx4097" env FWDBENCH_DECODE_KEYS=$k $bin kernel check --model sigma $dec --bsz 1 --seq 4096
    step "check_fa3_decode_keys${k}_sigma_tp8_b33_ctx1000" env FWDBENCH_DECODE_KEYS=$k $bin kernel check --model sigma $dec --bsz 33 --seq 999 --deploy tp8
    step "check_fa3_decode_keys${k}_d64_b3_ctx1000" env FWDBENCH_DECODE_KEYS=$k $bin kernel check $d64 $dec --bsz 3 --seq 999
  done
  step check_fa3_decode_keys16_heads2_qwen_b64_ctx1000 env FWDBENCH_DECODE_KEYS=16 FWDBENCH_DECODE_HEADS=2 $bin kernel check --model qwen $dec --bsz 64 --seq 999
  # A forced split count (FWDBENCH_DECODE_SPLITS, the end-of-launch imbalance A/B) where the
  # default runs unsplit, on v4's stages and (FWDBENCH_DECODE_KEYS=64) v5's.
  for n in 2 3; do
    step "check_fa3_decode_splits${n}_sigma_b33_ctx1000" env FWDBENCH_DECODE_SPLITS=$n $bin kernel check --model sigma $dec --bsz 33 --seq 999
    step "check_fa3_decode_splits${n}_keys64_qwen_b64_ctx1000" env FWDBENCH_DECODE_SPLITS=$n FWDBENCH_DECODE_KEYS=64 $bin kernel check --model qwen $dec --bsz 64 --seq 999
  done
  # Splits merge in the combine kernel by default; in their last CTA (v5b, measured slower)
  # behind the knob; the 20-split Sigma b1 ctx 2501 (two combine warps per pair) both ways.
  step check_fa3_decode_sigma_b1_ctx2501 $bin kernel check --model sigma $dec --bsz 1 --seq 2500
  step check_fa3_decode_fused_sigma_b1_ctx2501 env FWDBENCH_DECODE_COMBINE=fused $bin kernel check --model sigma $dec --bsz 1 --seq 2500
  step check_fa3_decode_fused_sigma_b1_ctx4097 env FWDBENCH_DECODE_COMBINE=fused $bin kernel check --model sigma $dec --bsz 1 --seq 4096
  step check_fa3_decode_fused_heads4_sigma_b33_ctx1000 env FWDBENCH_DECODE_COMBINE=fused FWDBENCH_DECODE_HEADS=4 $bin kernel check --model sigma $dec --bsz 33 --seq 999
  # Off by default, for the next A/B: the v6-only entries (FWDBENCH_DECODE_ENTRY=v6) and the
  # combine's warm pass (FWDBENCH_DECODE_COMBINE=warm): b1 with 20 and 33 splits, a few
  # sequences unsplit or lightly split, d64, and the tp8 shard.
  for knob in FWDBENCH_DECODE_ENTRY=v6 FWDBENCH_DECODE_COMBINE=warm; do
    tag=$(echo "${knob#FWDBENCH_DECODE_}" | tr 'A-Z=' 'a-z_')
    step "check_fa3_decode_${tag}_sigma_b1_ctx4097" env $knob $bin kernel check --model sigma $dec --bsz 1 --seq 4096
    step "check_fa3_decode_${tag}_sigma_b1_ctx2501" env $knob $bin kernel check --model sigma $dec --bsz 1 --seq 2500
    step "check_fa3_decode_${tag}_qwen_b3_ctx1000" env $knob $bin kernel check --model qwen $dec --bsz 3 --seq 999
    step "check_fa3_decode_${tag}_d64_b3_ctx1000" env $knob $bin kernel check $d64 $dec --bsz 3 --seq 999
    step "check_fa3_decode_${tag}_sigma_tp8_b33_ctx1000" env $knob $bin kernel check --model sigma $dec --bsz 33 --seq 999 --deploy tp8
  done
  # s_q > 1 new tokens per sequence (speculative decoding; causal among them): under fa3 a
  # prefill whose group x tokens fit 16 rows runs the decode kernel.
  step check_fa3_sq2_sigma $bin kernel check --model sigma --op attention --bsz 3 --seq 2
  step check_fa3_sq2_grok_softcap $bin kernel check --model grok --op attention --bsz 2 --seq 2
  step check_fa3_sq1_qwen $bin kernel check --model qwen --op attention --bsz 3 --seq 1
  step check_fa3_sq5_d128 $bin kernel check $d128 --op attention --bsz 3 --seq 5
  step check_fa3_sq16_d64 $bin kernel check $d64 --op attention --bsz 2 --seq 16
fi

# MLA decode (the fa3 backend's: kernels/mla_decode_wgmma.cu, and mla_decode_keys.cu at <= 16
# heads by default, FWDBENCH_MLA_KEYS=0 keeping them on the former): odd contexts (the step
# sees seq + 1 keys) and batches at 128 heads (tp1) and 16 (the tp8 shard), 64 (tp2) and 8
# (tp16) once, the fa2 kernel once, then b64 ctx4096 at both, into the CSV the peers step reads
# (bmm absorbed peer).
mla_dec="--model deepseek --op mla_decode_attention --phase decode"
if [ "$mode" != bench ]; then
  for dep in tp1 tp8; do
    for bs in "1 37" "3 1000" "5 2049" "1 4097" "3 63" "64 200"; do
      read -r bsz seq <<<"$bs"
      step "check_mla_decode_${dep}_b${bsz}_s${seq}" $bin kernel check $mla_dec --deploy $dep --bsz $bsz --seq $seq
    done
  done
  step check_mla_decode_tp2_b3_s1000 $bin kernel check $mla_dec --deploy tp2 --bsz 3 --seq 1000
  # The keys-on-M kernel (default at <= 16 heads): 8 heads (tp16), 132 CTAs in pairs; then the
  # 64-row kernel at the tp8 shard (FWDBENCH_MLA_KEYS=0), with its knobs below.
  step check_mla_decode_keys_tp16_b3_s1000 $bin kernel check $mla_dec --deploy tp16ep16 --bsz 3 --seq 1000
  step check_mla_decode_keys_tp8_b66_s999 $bin kernel check $mla_dec --deploy tp8 --bsz 66 --seq 999
  for bs in "1 37" "3 1000" "64 200"; do
    read -r bsz seq <<<"$bs"
    step "check_mla_decode_nokeys_tp8_b${bsz}_s${seq}" env FWDBENCH_MLA_KEYS=0 $bin kernel check $mla_dec --deploy tp8 --bsz $bsz --seq $seq
  done
  # Two splits run as 2-CTA clusters merged in the kernel (the _pair entry): tp8 at 132 CTAs,
  # tp1's two head tiles, tp2's 64 heads, a partial last tile; the combine path it replaces
  # (FWDBENCH_MLA_PAIR=0) and the L2 prefetch knob on both paths.
  step check_mla_decode_pair_tp8_b66_s999 $bin kernel check $mla_dec --deploy tp8 --bsz 66 --seq 999
  step check_mla_decode_pair_tp1_b33_s300 $bin kernel check $mla_dec --deploy tp1 --bsz 33 --seq 300
  step check_mla_decode_pair_tp2_b64_s200 $bin kernel check $mla_dec --deploy tp2 --bsz 64 --seq 200
  step check_mla_decode_nopair_tp8_b64_s200 env FWDBENCH_MLA_PAIR=0 $bin kernel check $mla_dec --deploy tp8 --bsz 64 --seq 200
  step check_mla_decode_l2pf2_tp8_b64_s1000 env FWDBENCH_MLA_KEYS=0 FWDBENCH_MLA_L2_PREFETCH=2 $bin kernel check $mla_dec --deploy tp8 --bsz 64 --seq 1000
  step check_mla_decode_l2pf0_tp1_b3_s1000 env FWDBENCH_MLA_L2_PREFETCH=0 $bin kernel check $mla_dec --deploy tp1 --bsz 3 --seq 1000
  # Q's register chunks (default above 64 heads) forced off at tp1 and on at tp8 (with the pair).
  step check_mla_decode_noqreg_tp1_b3_s1000 env FWDBENCH_MLA_QREG=0 $bin kernel check $mla_dec --deploy tp1 --bsz 3 --seq 1000
  step check_mla_decode_qreg_tp8_b64_s200 env FWDBENCH_MLA_KEYS=0 FWDBENCH_MLA_QREG=1 $bin kernel check $mla_dec --deploy tp8 --bsz 64 --seq 200
  # The tile order forced against each regime's default (and tp1 without its L2 prefetch).
  step check_mla_decode_schedpv_tp8_b64_s1000 env FWDBENCH_MLA_KEYS=0 FWDBENCH_MLA_SCHED=pv $bin kernel check $mla_dec --deploy tp8 --bsz 64 --seq 1000
  step check_mla_decode_schedafter_tp1_b5_s2049 env FWDBENCH_MLA_SCHED=after FWDBENCH_MLA_L2_PREFETCH=0 $bin kernel check $mla_dec --deploy tp1 --bsz 5 --seq 2049
  step check_mla_decode_schedafter_tp8_b64_s1000 env FWDBENCH_MLA_KEYS=0 FWDBENCH_MLA_SCHED=after $bin kernel check $mla_dec --deploy tp8 --bsz 64 --seq 1000
  step check_mla_decode_schedrelease_tp1_b5_s2049 env FWDBENCH_MLA_SCHED=release $bin kernel check $mla_dec --deploy tp1 --bsz 5 --seq 2049
  step check_mla_decode_fa2_b3_s1000 $bin kernel check $mla_dec --bsz 3 --seq 1000 --attention fa2
fi
if [ "$mode" != check ]; then
  for b in ${BACKENDS:-fa3 fa2}; do
    for dep in tp1 tp8; do
      step "bench_${b}_mla_decode_${dep}_b64_s4096" $bin kernel bench --no-check --csv $out/hopper.csv \
        $mla_dec --mconf full --deploy $dep --bsz 64 --seq 4096 --attention $b
    done
  done
fi

if [ "$mode" != check ]; then
  csv=$out/hopper.csv
  bench="$bin kernel bench --no-check --csv $csv"
  for b in ${BACKENDS:-fa3 fa2}; do
    step "bench_${b}_d128_s8192" $bench $d128 --op attention --tokens 8192 --attention $b
    step "bench_${b}_d256_b2_s8192" $bench $d256 --op attention --bsz 2 --seq 8192 --attention $b
    step "bench_${b}_mla_s4096" $bench --model deepseek --op mla_prefill_attention --tokens 4096 --attention $b
    step "bench_${b}_h64_s2048" $bench $h64 --op attention --tokens 2048 --attention $b
    step "bench_${b}_sigma_gqa_s8192" $bench --model sigma --op attention --tokens 8192 --attention $b
  done
  for g in tma cublaslt; do
    step "bench_gemm_${g}_8192" $bench --op linear --m 8192 --n 8192 --k 8192 --gemm $g
    step "bench_gemm_${g}_4096x18432x7168" $bench --op linear --m 4096 --n 18432 --k 7168 --gemm $g
  done
  # Decode attention, GQA 64q/8kv d128 at ctx 4097 (Sigma V2 tp1 and its tp8 shard), and
  # Qwen's 64q/4kv: the peers are SDPA on the same shapes.
  dec="--op attention --phase decode --seq 4096"
  for b in ${BACKENDS:-fa3 fa2}; do
    for bs in 1 32 64; do
      step "bench_${b}_decode_sigma_b${bs}" $bench --model sigma --mconf full $dec --bsz $bs --attention $b
      step "bench_${b}_decode_sigma_tp8_b${bs}" $bench --model sigma --mconf full $dec --bsz $bs --deploy tp8 --attention $b
    done
    step "bench_${b}_decode_qwen_b32" $bench --model qwen --mconf full $dec --bsz 32 --attention $b
    step "bench_${b}_decode_qwen_b64" $bench --model qwen --mconf full $dec --bsz 64 --attention $b
  done
  step bench_fa3_decode_sigma_b128 $bench --model sigma --mconf full $dec --bsz 128
  step bench_fa3_decode_sigma_b32_ctx8192 $bench --model sigma --mconf full --op attention --phase decode --seq 8192 --bsz 32
  step peers python3 python/reference/kernel_peers.py --seed-csv "$csv" --out "$out/peers.csv"
  step side_by_side python3 python/reference/side_by_side.py --seed-csv "$csv" --peers-csv "$out/peers.csv"
  cat "$out/side_by_side.log"
fi

finish_steps "$final" hopper
