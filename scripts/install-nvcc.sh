#!/usr/bin/env bash
# Installs the pinned CUDA 13.0 compiler wheels into ./.cuda (no CUDA toolkit needed),
# where build.rs finds nvcc. Versions must match the GPU machine's driver (580 = CUDA 13.0);
# nvvm is pinned too, because an unpinned install pulls a newer cicc whose PTX the 13.0
# ptxas rejects.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! ls .cuda/lib/python3*/site-packages/nvidia/cu13/bin/nvcc >/dev/null 2>&1; then
  python3 -m venv .cuda
  .cuda/bin/pip install --quiet --disable-pip-version-check \
    nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 \
    nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85
fi
ls .cuda/lib/python3*/site-packages/nvidia/cu13/bin/nvcc
