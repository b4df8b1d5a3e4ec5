#!/usr/bin/env bash
# The several-GPU suite of issues 12 (2 GPUs) and 13 (8 GPUs), in as few device calls as the
# parts allow, on an nvidia-h200-x2 / -x8 (expects .device/ from scripts/build-device.sh):
#   scripts/multi-gpu.sh 2 [numerics] [comm] [run] [project]     (default: all four, in order)
#   scripts/multi-gpu.sh 8 [comm] [run] [project]
#     numerics  every fixture of tests/fixtures, prefill and decode, on tp1 and each deployment
#               of the world (`fwdbench check --device cuda`, HF logits, rel-L2 <= 2e-2)
#     comm      `fwdbench comm bench` on the world, eager and graphed (every size 1K..512M),
#               with the all-reduce rows the public figures quote (1 KB, 1 MB, 512 MB) printed
#     run       measured rows, decode graphs on: 2 GPUs, every family's 2l config over the
#               default grid on tp2 / tp2ep2 / tp2ep2dp2; 8 GPUs, the seed's deployments of the
#               full models (GPT-3 tp8; Grok-1, Qwen3-235B, Sigma V2, DeepSeek-V3 FP8 on tp8,
#               tp8ep8, tp8ep8dp8) over GRID (default {1,16,64,256};{128,4096})
#     project   the same rows projected from GPU 0 (`--project --comm-table` with comm's
#               table, or the built-in one if comm did not run) against the measured ones:
#               the projection's error per row, the target within 10% on every row
# MODELS="gpt3 grok ..." restricts run/project to those models (split a long run over calls:
# each measures and projects its models); DEPLOYS likewise; COMM_TABLE=<csv> projects with
# an earlier call's comm table; MEASURED_DIR=<dir> compares with an earlier call's measured CSVs; FIXTURES=<dir> checks another folder of fixtures; DEVICE=cpu runs
# the numerics part on the CPU's ranks (a smoke test of this script without GPUs). Logs, CSVs and summary.txt go to $OUT (or results/multi-gpu<N>),
# packed into multi-gpu-logs.tgz; the CSVs stay readable beside it.
set -uo pipefail
cd "$(dirname "$0")/.."
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
world=${1:-}
case "$world" in
  2 | 8) shift ;;
  *) echo "multi-gpu: the first argument is the world size, 2 or 8 (got '${world}')" >&2; exit 2 ;;
esac
parts=("$@")
[ ${#parts[@]} -gt 0 ] || { [ "$world" = 2 ] && parts=(numerics comm run project) || parts=(comm run project); }
want() { [[ " ${parts[*]} " == *" $1 "* ]]; }
for p in "${parts[@]}"; do
  case "$p" in numerics | comm | run | project) ;; *) echo "multi-gpu: unknown part '$p' (numerics comm run project)" >&2; exit 2 ;; esac
done
bin=${FWDBENCH_BIN:-.device/fwdbench}
[ -x "$bin" ] || { echo "multi-gpu: $bin is missing; run scripts/build-device.sh first (or set FWDBENCH_BIN)" >&2; exit 2; }
device=${DEVICE:-cuda}
if [ "$device" = cuda ]; then
  gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
  [ "$gpus" -ge "$world" ] || { echo "multi-gpu: world $world needs $world GPUs, nvidia-smi lists $gpus" >&2; exit 2; }
fi
final=${OUT:-results/multi-gpu$world}
out=$(mktemp -d)
mkdir -p "$final"
source scripts/steps.sh
STEP_TIMEOUT_S=${STEP_TIMEOUT_S:-600}

if [ "$world" = 2 ]; then
  deploys=${DEPLOYS:-tp2 tp2ep2 tp2ep2dp2}
  models=${MODELS:-gpt3 grok qwen qwen_dense deepseek sigma sigma_v1}
  mconf=2l grid=conf/bsz_seq.csv
else
  deploys=${DEPLOYS:-tp8 tp8ep8 tp8ep8dp8}
  models=${MODELS:-gpt3 grok qwen sigma deepseek}
  mconf=full grid=$out/grid.csv
  default_grid='{1,16,64,256};{128,4096}'
  printf '%s\n' "${GRID:-$default_grid}" > "$grid"
fi
# The deployments a model runs on: GPT-3 has no experts (the seed runs it on tp8 alone at 8).
deploys_of() { if [ "$1" = gpt3 ] && [ "$world" = 8 ]; then echo tp8; else echo "$deploys"; fi; }

if want numerics; then
  for f in ${FIXTURES:-tests/fixtures}/*/; do
    f=${f%/} name=$(basename "$f")
    [ -f "$f/config.json" ] && [ -f "$f/logits.safetensors" ] || continue
    args=(--device "$device" --config "$f/config.json" --weights "$f/model.safetensors" --input "$f/input.json"
      --expect "$f/logits.safetensors")
    for d in tp1 $deploys; do
      step "check_${name}_${d}_prefill" "$bin" check "${args[@]}" --deploy "$d"
      step "check_${name}_${d}_decode" "$bin" check "${args[@]}" --deploy "$d" --decode
    done
  done
  # rel-L2 per fixture and deployment, tp1 first: the sharded runs should sit next to it.
  grep -h "^check " "$out"/check_*.log | sed 's/ on [A-Za-z]* (.*rel-L2 / rel-L2 /; s/ (tol[^:]*: / /' > "$final/numerics.txt" 2>/dev/null
fi

comm_csv=${COMM_TABLE:-$out/results/comm/comm_${world}xh200.csv}
if want comm; then
  step comm_bench "$bin" comm bench --gpus "$world" --factor 2 --max-bytes 512M --out "$comm_csv"
  # The sizes multi-gpu.md's public NCCL figures quote, eager and graphed.
  [ -f "$comm_csv" ] && python3 - "$comm_csv" <<'EOF' | tee "$final/comm-quoted.txt"
import csv, sys
rows = [r for r in csv.DictReader(open(sys.argv[1])) if r["op"] == "all_reduce"]
print(f"{'all_reduce':>12} {'graph':>6} {'us_median':>10} {'busbw_gbs':>10}")
for size in (1 << 10, 1 << 20, 512 << 20):
    for r in rows:
        if int(r["bytes"]) == size:
            print(f"{size:>12} {r['graph']:>6} {float(r['us_median']):>10.1f} {float(r['busbw_gbs']):>10.1f}")
EOF
  cp "$comm_csv" "$final/" 2>/dev/null
fi

# Per model, its measured rows then (project) the same rows projected, so MODELS can split a
# long run over calls: each call measures and projects its own models.
table=()
[ -f "$comm_csv" ] && table=(--comm-table "$comm_csv")
for m in $models; do
  if want run; then
    for d in $(deploys_of "$m"); do
      step "run_${m}_${d}" "$bin" run --model "$m" --mconf "$mconf" --deploy "$d" --shapes "$grid" --save \
        --results-dir "$out/measured"
    done
  fi
  if want project; then
    for d in $(deploys_of "$m"); do
      step "project_${m}_${d}" "$bin" run --model "$m" --mconf "$mconf" --deploy "$d" --shapes "$grid" --project \
        "${table[@]}" --save --results-dir "$out/projected"
    done
    measured=${MEASURED_DIR:-$out/measured/csv}/${m}_${mconf}.csv
    if [ -f "$measured" ]; then
      step "error_${m}" "$bin" compare "$measured" "$out/projected/csv/${m}_${mconf}.csv" --csv "$out/error_${m}.csv"
    fi
  fi
done
for side in measured projected; do
  [ -d "$out/$side/csv" ] && mkdir -p "$final/$side" && cp "$out/$side"/csv/*.csv "$final/$side/"
done

if want project; then
  # The projection's error, |projected / measured - 1|, per row; the target is 10% on every row.
  errors=("$out"/error_*.csv)
  [ -e "${errors[0]}" ] || errors=()
  python3 - "${errors[@]}" <<'EOF' | tee "$final/projection-error.txt"
import csv, sys
rows = [r for f in sys.argv[1:] for r in csv.DictReader(open(f))]
if not rows:
    sys.exit("no measured and projected rows to compare (run the run and project parts)")
worst = sorted(rows, key=lambda r: -abs(float(r["ratio_b_over_a"]) - 1))
over = [r for r in rows if abs(float(r["ratio_b_over_a"]) - 1) > 0.10]
print(f"{len(rows)} rows; {len(over)} off by more than 10%; worst first:")
for r in worst[:20]:
    err = 100 * (float(r["ratio_b_over_a"]) - 1)
    print(f"  {r['model']:>9} {r['deploy']:>10} {r['phase']:>7} bsz {r['bsz']:>4} seq {r['seq_len']:>5}: "
          f"measured {float(r['latency_a_ms']):9.3f} ms, projected {float(r['latency_b_ms']):9.3f} ms ({err:+.1f}%)")
EOF
fi

finish_steps "$final" multi-gpu
