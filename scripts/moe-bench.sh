#!/usr/bin/env bash
# The MoE grouped GEMMs' check and side-by-side benchmark, in one call on an H200 (docs/perf.md,
# "MoE v2 (wgmma)"): the moe op against the CPU reference on odd expert loads (both GEMM paths:
# block_m 16 on moe.cu, 64 and 128 on moe_wgmma.cu), then fwdbench and torch._grouped_mm on the
# same shapes (DeepSeek-V3 and Qwen3-235B experts at 512, 4096 and 16384 tokens, an EP8 shard,
# decode streaming); the FP8 dense and grouped GEMMs (gemm_fp8.cu, moe_fp8.cu) checked and
# timed the same way against torch._scaled_mm / _scaled_grouped_mm (docs/perf.md, "FP8 GEMMs").
#   scripts/moe-bench.sh [check|bench|all]     (expects .device/ from scripts/build-device.sh)
# Logs and CSVs go to $OUT (or results/moe), packed into moe-logs.tgz.
set -uo pipefail
cd "$(dirname "$0")/.."
export NCCL_NVLS_ENABLE=0
final=${OUT:-results/moe}
out=$(mktemp -d)
mkdir -p "$final"
bin=${FWDBENCH_BIN:-.device/fwdbench}
mode=${1:-all}
source scripts/steps.sh
check="$bin kernel check --op moe"
# Tiny routings: every token to the one expert (qwen: softmax top-1 of 1), every token to both
# of two experts, and DeepSeek's grouped router over 16 experts.
one_expert="--model qwen --mconf 2l --set num_experts=1 --set num_experts_per_tok=1 --set hidden_size=512"
two_experts="--model qwen --mconf 2l --set num_experts=2 --set num_experts_per_tok=2 --set hidden_size=512"
ds16="--model deepseek --mconf 2l --set n_routed_experts=16 --set hidden_size=128"

if [ "$mode" != bench ]; then
  # block_m 128 (wgmma): 301 x 8 / 16 = ~150 rows per expert; tails of a few to ~60 rows, so
  # the second 64-row slab of a last block is often all padding (the drain path). Hidden 128
  # keeps every check here under the CPU reference's budget (a check over it is refused).
  step check_ds16_t301_m128 $check $ds16 --tokens 301
  # block_m 64 (wgmma, two consumers side by side along N): 37 x 8 / 16 = 18.5 rows.
  step check_ds16_t37_m64 $check $ds16 --tokens 37
  # block_m 16 (moe.cu, decode kernel): T = 1, 8 of 16 experts empty.
  step check_ds16_t1_m16 $check $ds16 --tokens 1
  step check_ds16_decode_b3 $check $ds16 --phase decode --bsz 3 --seq 63
  # One expert takes every token: 4 full blocks and a last one of 5 rows (slab 2 drained).
  step check_one_expert_t517 $check $one_expert --tokens 517
  step check_one_expert_t1 $check $one_expert --tokens 1
  step check_two_experts_t300 $check $two_experts --tokens 300
  # Sigma V2: I = 2160, so the last gate/up tile holds 112 of 128 channels and the down GEMM's
  # K ends 16 into a 64-wide tile (TMA zero-fill on both).
  step check_sigma16_t301 $check --model sigma --mconf 2l --set n_routed_experts=16 --set hidden_size=128 --tokens 301
  # Grok: GELU in the gate/up epilogue, 2 of 4 experts.
  step check_grok4_t129 $check --model grok --mconf 2l --set num_local_experts=4 --set hidden_size=768 --set moe_intermediate_size=2048 --tokens 129
  # EP-local expert subsets: the shard of the last rank (expert ids offset by e0).
  step check_qwen16_ep2_rank1_t300 $check --model qwen --mconf 2l --set num_experts=16 --set hidden_size=256 --tokens 300 --deploy tp2ep2 --rank 1
  step check_ds_ep8_rank3_t600 $check --model deepseek --mconf 2l --set hidden_size=256 --tokens 600 --deploy tp8ep8 --rank 3
  # Fixtures (H 64, I 16: one K tile, boxes far past the tensors' ends).
  for n in qwen3_moe deepseek_v3 grok1 sigma_v2; do
    step "check_fixture_${n}_t51" $check --config tests/fixtures/$n/config.json --tokens 51
  done
  # Within the CPU check's 4 GFLOP budget (a check over it is refused, not passed): hidden 64
  # or 128, I 1024-4096, so the persistent GEMMs run many tiles per CTA and their claiming,
  # raster groups (G up to 5, remainders) and, with FWDBENCH_MOE_PAIRS=1, both kinds of CTA
  # pair (M pairs at >= 2 blocks per expert, mixed pairs and an odd block count at 1031 tokens;
  # N pairs at 220 tokens, the down GEMM's single n-tile leaving rank 1 past N) are compared.
  # auto: the default choice (moe_wgmma.rs pairs_default: pairs at >= 256 rows per expert, so
  # on at 512 and 1031 tokens, off at 220), with the L2 hints as shipped.
  narrow="--model qwen --mconf 2l --set num_experts=16"
  for pairs in 0 1 auto; do
    with="env FWDBENCH_MOE_PAIRS=$pairs"
    step "check_narrow_i2048_t512_pairs$pairs" $with $check $narrow --set hidden_size=64 --set moe_intermediate_size=2048 --tokens 512
    step "check_narrow_i1024_t1031_pairs$pairs" $with $check $narrow --set hidden_size=64 --set moe_intermediate_size=1024 --tokens 1031
    step "check_narrow_i2048_t220_pairs$pairs" $with $check $narrow --set hidden_size=64 --set moe_intermediate_size=2048 --tokens 220
  done
  step check_narrow_i2048_t60_m64 $check $narrow --set hidden_size=64 --set moe_intermediate_size=2048 --tokens 60
  # The epilogue's 8-byte stores (MoE v4b): with n % 16 == 8 (I 1032, H 136) a tile's last
  # column group is stored by the odd lane of each lane pair, and the group after it lies past N.
  step check_narrow_h136_i1032_t300 $check $narrow --set hidden_size=136 --set moe_intermediate_size=1032 --tokens 300
  step check_narrow_h136_i1032_t40_m64 $check $narrow --set hidden_size=136 --set moe_intermediate_size=1032 --tokens 40
  # The L2 prefetch (off by default, FWDBENCH_MOE_PREFETCH=k): near, crossing into the next
  # claimed tile, and far with pairs (within-tile only) on.
  step check_narrow_i1024_t1031_prefetch2 env FWDBENCH_MOE_PREFETCH=2 $check $narrow --set hidden_size=64 --set moe_intermediate_size=1024 --tokens 1031
  step check_narrow_i1024_t1031_prefetch7_pairs1 env FWDBENCH_MOE_PREFETCH=7 FWDBENCH_MOE_PAIRS=1 $check $narrow --set hidden_size=64 --set moe_intermediate_size=1024 --tokens 1031
  step check_fp8_narrow_h128_t256 $check $narrow --set hidden_size=128 --set moe_intermediate_size=2048 --tokens 256 --quant fp8
  # moe_align v2 (FWDBENCH_MOE_ALIGN=v2, off by default): one CTA of chunks (<= 16384 slots)
  # on odd loads, an EP rank and FP8, then 2 and 3 CTAs (17600 and 40000 slots), the path
  # no check above reaches.
  v2="env FWDBENCH_MOE_ALIGN=v2"
  step check_alignv2_ds16_t301 $v2 $check $ds16 --tokens 301
  step check_alignv2_ds16_decode_b3 $v2 $check $ds16 --phase decode --bsz 3 --seq 63
  step check_alignv2_one_expert_t517 $v2 $check $one_expert --tokens 517
  step check_alignv2_qwen16_ep2_rank1_t300 $v2 $check --model qwen --mconf 2l --set num_experts=16 --set hidden_size=256 --tokens 300 --deploy tp2ep2 --rank 1
  step check_alignv2_fp8_ds16_t37 $v2 $check $ds16 --quant fp8 --tokens 37
  step check_alignv2_narrow_t2200 $v2 $check $narrow --set hidden_size=64 --set moe_intermediate_size=256 --tokens 2200
  step check_alignv2_narrow_t5000 $v2 $check $narrow --set hidden_size=64 --set moe_intermediate_size=256 --tokens 5000
  step check_fp8_narrow_h128_t100_m64 $check $narrow --set hidden_size=128 --set moe_intermediate_size=4096 --tokens 100 --quant fp8
  # FP8 dense (kernels/gemm_fp8.cu, the default for FP8 linears): M and N tails of a tile,
  # M = 1, kv_a's 2112 rows (half a scale block at the end), DeepSeek's sites in prefill/decode.
  fp8_gemm="$bin kernel check --op linear --quant fp8"
  step check_fp8_gemm_m300_n520_k384 $fp8_gemm --m 300 --n 520 --k 384
  step check_fp8_gemm_m1_n576_k7168 $fp8_gemm --m 1 --n 576 --k 7168
  step check_fp8_gemm_m129_n2112_k1536 $fp8_gemm --m 129 --n 2112 --k 1536
  # The same shapes on our gemm_fp8.cu (--gemm tma; cuBLASLt is the default): 128 x 256 tiles,
  # so n 520 and 576 end in a tile whose second 128-column half lies wholly past N.
  step check_fp8_tma_gemm_m300_n520_k384 $fp8_gemm --gemm tma --m 300 --n 520 --k 384
  step check_fp8_tma_gemm_m1_n576_k7168 $fp8_gemm --gemm tma --m 1 --n 576 --k 7168
  step check_fp8_tma_gemm_m129_n2112_k1536 $fp8_gemm --gemm tma --m 129 --n 2112 --k 1536
  step check_fp8_tma_ds_o_proj_t133 $bin kernel check --model deepseek --mconf 2l --quant fp8 --gemm tma --op attn.o_proj --set hidden_size=512 --tokens 133
  fp8_site="$bin kernel check --model deepseek --mconf 2l --quant fp8"
  step check_fp8_ds_qkv_a_t300 $fp8_site --op attn.qkv_a --set hidden_size=2048 --tokens 300
  step check_fp8_ds_kv_b_t37 $fp8_site --op attn.kv_b --tokens 37
  step check_fp8_ds_o_proj_decode_b3 $fp8_site --op attn.o_proj --phase decode --bsz 3 --seq 63
  step check_fp8_ds_shared_down_t517 $fp8_site --op moe.shared.down --set hidden_size=1024 --tokens 517
  # Whether cuBLASLt accepts the block-scaled descriptor (--gemm cublaslt): reported, not failed.
  step probe_cublaslt_fp8 sh -c "$fp8_gemm --m 300 --n 520 --k 384 --gemm cublaslt && echo 'cuBLASLt block-scaled FP8: accepted' || echo 'cuBLASLt block-scaled FP8: rejected (FP8 linears use gemm_fp8.cu)'"
  # FP8 experts (kernels/moe_fp8.cu; block_m 64 or 128 for every batch): the odd loads above.
  step check_fp8_ds16_t301 $check $ds16 --quant fp8 --tokens 301
  step check_fp8_ds16_t37 $check $ds16 --quant fp8 --tokens 37
  step check_fp8_ds16_t1 $check $ds16 --quant fp8 --tokens 1
  step check_fp8_ds16_decode_b3 $check $ds16 --quant fp8 --phase decode --bsz 3 --seq 63
  step check_fp8_one_expert_t517 $check $one_expert --quant fp8 --tokens 517
  step check_fp8_qwen16_t300 $check --model qwen --mconf 2l --set num_experts=16 --set hidden_size=128 --quant fp8 --tokens 300
  # Odd scale-block counts: I 1408 (11 channel blocks: at block_m 64 the last tile's second
  # consumer drains) and H 384 (3 column blocks: the last 256-wide down tile's second half
  # lies past H), within the CPU check's budget.
  odd_fp8="--model qwen --mconf 2l --set num_experts=16 --set moe_intermediate_size=1408 --set hidden_size=384 --quant fp8"
  step check_fp8_qwen16_odd_blocks_t37 $check $odd_fp8 --tokens 37
  step check_fp8_qwen16_odd_blocks_t140 $check $odd_fp8 --tokens 140
  step check_fp8_ds_ep8_rank3_t600 $check --model deepseek --mconf 2l --set hidden_size=256 --quant fp8 --tokens 600 --deploy tp8ep8 --rank 3
  # A's scales from registers (FWDBENCH_MOE_FP8_SMEM_SCALES=0, v5's path) where shared memory
  # is the default: block_m 128 and 64, padded slabs, pairs.
  noscales="env FWDBENCH_MOE_FP8_SMEM_SCALES=0"
  step check_fp8_regscales_ds16_t301 $noscales $check $ds16 --quant fp8 --tokens 301
  step check_fp8_regscales_ds16_t37 $noscales $check $ds16 --quant fp8 --tokens 37
  step check_fp8_regscales_pairs1_one_expert_t517 $noscales FWDBENCH_MOE_FP8_PAIRS=1 $check $one_expert --quant fp8 --tokens 517
  # Every op of an FP8 DeepSeek forward, prefill and decode, against the CPU's FP8 reference.
  step check_fp8_ds16_all_ops $bin kernel check $ds16 --quant fp8 --bsz 2 --seq 37
  # FP8 CTA pairs and consumer turns (moe_fp8.cu PAIR, fp8_block.cuh Fp8Turns; block_m 128):
  # M pairs at two blocks per expert with padded second slabs (ds16 t301), an odd block count
  # (one expert, 5 blocks: rank 1 of the last pair past the end), mixed pairs and remainders
  # (1031 tokens), N pairs at about one block per expert (t256: 16 gate/up n-tiles, the down
  # GEMM's single n-tile leaving rank 1 past H), odd scale blocks (I 640, H 384); each with
  # the two knobs together, and each knob alone on the drain-heavy loads.
  fp8_narrow="$narrow --quant fp8 --set hidden_size=128"
  odd_pairs="--model qwen --mconf 2l --set num_experts=16 --set moe_intermediate_size=640 --set hidden_size=384 --quant fp8"
  for knobs in "PAIRS=1 ORDER=1" "PAIRS=1 ORDER=0" "PAIRS=0 ORDER=1"; do
    with="env FWDBENCH_MOE_FP8_${knobs% *} FWDBENCH_MOE_FP8_${knobs#* }"
    tag=$(echo "$knobs" | tr -d ' =' | tr 'A-Z' 'a-z')
    step "check_fp8_${tag}_ds16_t301" $with $check $ds16 --quant fp8 --tokens 301
    step "check_fp8_${tag}_one_expert_t517" $with $check $one_expert --quant fp8 --tokens 517
    [ "$knobs" = "PAIRS=1 ORDER=1" ] || continue
    step "check_fp8_${tag}_narrow_i2048_t256" $with $check $fp8_narrow --set moe_intermediate_size=2048 --tokens 256
    step "check_fp8_${tag}_narrow_i512_t1031" $with $check $fp8_narrow --set moe_intermediate_size=512 --tokens 1031
    step "check_fp8_${tag}_odd_blocks_t300" $with $check $odd_pairs --tokens 300
  done
fi

if [ "$mode" != check ]; then
  csv=$out/moe.csv
  # bf16 weights (DeepSeek full ships FP8; the FP8 rows follow) and exactly balanced routing,
  # so fwdbench and the peer do the same expert work.
  bench="$bin kernel bench --no-check --csv $csv --op moe --mconf full --quant bf16 --routing balanced"
  for t in 512 4096 16384; do
    step "bench_deepseek_t$t" $bench --model deepseek --tokens $t
    step "bench_qwen_t$t" $bench --model qwen --tokens $t
  done
  # EP8: rank 0's 32 of DeepSeek's 256 experts (the tokens' other choices are other ranks').
  step bench_deepseek_ep8_t4096 $bench --model deepseek --tokens 4096 --deploy tp8ep8
  step bench_qwen_ep8_t4096 $bench --model qwen --tokens 4096 --deploy tp8ep8
  # Decode streaming (moe.cu's block_m 16, unchanged): must stay >= 95% of copy from T = 8.
  for b in 1 8 64; do
    step "bench_deepseek_decode_b$b" $bench --model deepseek --phase decode --bsz $b --seq 128
  done
  # FP8 at DeepSeek-V3's full shapes, 4096 tokens: the dense linears (gemm_fp8.cu; peers
  # torch._scaled_mm block128 and rowwise) and the grouped experts (moe_fp8.cu; peers
  # torch._scaled_grouped_mm), Qwen3-235B's experts too (against the bf16 rows above).
  fp8_bench="$bin kernel bench --no-check --csv $csv --mconf full --quant fp8 --tokens 4096"
  # FP8_DENSE=0 leaves the dense sites out (a short call that times the grouped GEMMs only).
  [ "${FP8_DENSE:-1}" = 1 ] && for site in attn.qkv_a attn.q_b attn.kv_b attn.o_proj moe.shared.gate_up moe.shared.down; do
    step "bench_fp8_deepseek_${site}_t4096" $fp8_bench --model deepseek --op $site
  done
  [ "${FP8_DENSE:-1}" = 1 ] && step bench_fp8_deepseek_mlp.gate_up_t4096 $fp8_bench --model deepseek --op mlp.gate_up --layer 0
  [ "${FP8_DENSE:-1}" = 1 ] && step bench_fp8_deepseek_mlp.down_t4096 $fp8_bench --model deepseek --op mlp.down --layer 0
  # Our gemm_fp8.cu (--gemm tma) on three of the sites, beside cuBLASLt's block-scaled
  # matmul (the default above), so the choice of default stays measured.
  [ "${FP8_DENSE:-1}" = 1 ] && for site in attn.o_proj mlp.gate_up mlp.down; do
    step "bench_fp8_wgmma_deepseek_${site}_t4096" $fp8_bench --model deepseek --op $site --layer 0 --gemm tma
  done
  step bench_fp8_moe_deepseek_t4096 $fp8_bench --model deepseek --op moe --routing balanced
  step bench_fp8_moe_qwen_t4096 $fp8_bench --model qwen --op moe --routing balanced
  step peers python3 python/reference/kernel_peers.py --seed-csv "$csv" --out "$out/peers.csv"
  step side_by_side python3 python/reference/side_by_side.py --seed-csv "$csv" --peers-csv "$out/peers.csv"
  cat "$out/side_by_side.log"
fi

[ -f "$out/moe.csv" ] && cp "$out/moe.csv" "$final/"
finish_steps "$final" moe
