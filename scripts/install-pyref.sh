#!/usr/bin/env bash
# Installs the pinned Python references' env into ./.pyref (torch, transformers, safetensors,
# numpy), where tests/hf_crosscheck.rs finds it; skipped when it is already there, so a CI
# cache of .pyref makes this free. It is separate from ./.cuda (nvcc only) on purpose: torch
# brings its own CUDA wheels (~5.6 GB from PyPI on x86_64) and runs on a CPU-only machine.
# The pins are the versions the export -> HF cross-check passes with; change them together.
set -euo pipefail
cd "$(dirname "$0")/.."
pins=(torch==2.15.0 transformers==5.24.0 safetensors==0.8.0 numpy==2.4.6)
stamp=.pyref/pins.txt
if [ "$(cat "$stamp" 2>/dev/null)" != "${pins[*]}" ]; then
  rm -rf .pyref
  python3 -m venv .pyref
  .pyref/bin/pip install --quiet --disable-pip-version-check "${pins[@]}"
  # Written last: an interrupted install leaves no stamp and is redone.
  echo "${pins[*]}" > "$stamp"
fi
.pyref/bin/python -c 'import torch, transformers, safetensors, numpy; print("pyref: torch", torch.__version__, "transformers", transformers.__version__)'
