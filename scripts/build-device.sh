#!/usr/bin/env bash
# Builds everything the GPU machine runs into .device/ (git-ignored, carried by the device
# tool): the release binary, stripped to fit the transfer limit, with every kernel embedded.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-nvcc.sh >/dev/null
mkdir -p .device
cargo build --release
cp target/release/fwdbench .device/fwdbench
strip .device/fwdbench
ls -la .device
