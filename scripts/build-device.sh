#!/usr/bin/env bash
# Builds everything the GPU machine runs into .device/ (git-ignored, carried by the device
# tool): the release binary (stripped to fit the transfer limit) and the standalone kernel
# harnesses of kernels/dev/, linked against the static CUDA runtime from the pip wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-nvcc.sh >/dev/null
nvcc=$(ls .cuda/lib/python3*/site-packages/nvidia/cu13/bin/nvcc | head -n1)
lib=$(cd "$(dirname "$nvcc")/../lib" && pwd)
mkdir -p .device
cargo build --release
cp target/release/fwdbench .device/fwdbench
strip .device/fwdbench
for t in elementwise attention moe; do
  "$nvcc" -gencode=arch=compute_90a,code=sm_90a -O3 -std=c++17 -I kernels "kernels/dev/${t}_test.cu" \
    -o ".device/${t}_test" -L"$lib" -lcudart_static &
done
wait
ls -la .device
