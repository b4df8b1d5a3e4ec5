# Sourced by scripts/ncu-probe.sh and scripts/ncu-source.sh (from the repo root): the binary,
# the ncu executable (NCU, else PATH, else the usual install) and the issue rows' bench flags.
bin=${FWDBENCH_BIN:-.device/fwdbench}
ncu=${NCU:-$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)}
[ -n "$ncu" ] || { echo "$(basename "$0"): ncu not found (set NCU=/path/to/ncu)"; exit 1; }
dec="--op attention --phase decode --seq 4096 --mconf full"
mla="--model deepseek --op mla_decode_attention --phase decode --mconf full --bsz 64 --seq 4096"
moe="--op moe --mconf full --tokens 4096 --routing balanced"
