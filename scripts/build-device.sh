#!/usr/bin/env bash
# Builds everything the GPU machine runs into .device/ (git-ignored, carried by the device
# tool): the release binary, stripped to fit the transfer limit, with every kernel embedded,
# and the GPU integration tests (tests/gpu.rs), which the GPU machine runs without cargo.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-nvcc.sh >/dev/null
mkdir -p .device
cargo build --release
cp target/release/fwdbench .device/fwdbench
strip .device/fwdbench
gpu_tests=$(cargo test --release --test gpu --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "gpu":
        print(m["executable"])' | tail -n1)
cp "$gpu_tests" .device/gpu_tests
strip .device/gpu_tests
ls -la .device
