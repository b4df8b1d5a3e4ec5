#!/usr/bin/env bash
# The SASS size of every kernel entry the build compiled (the `.text.<entry>` section of each
# cubin, KB of 1024 bytes), largest first. After the benchmark's L2 flush, and in serving after a decode
# step's weights have streamed through L2, a launch fetches its code from DRAM; a small kernel
# pays ~0.25-0.3 us per KB it executes (docs/perf.md, session 16), so decode kernels should
# stay small.
#   scripts/kernel-sizes.sh [regex]     (after cargo build --release; regex filters entries)
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(ls -td target/release/build/fwdbench-*/out 2>/dev/null | head -n1)
[ -n "$out" ] || { echo "kernel-sizes: no target/release/build/fwdbench-*/out; run cargo build --release first" >&2; exit 2; }
python3 - "$out" "${1:-.}" <<'EOF'
import glob, os, re, signal, struct, sys

signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # piped into head: stop quietly

out, pattern = sys.argv[1], re.compile(sys.argv[2])
rows = []
for path in sorted(glob.glob(os.path.join(out, "*.cubin"))):
    data = open(path, "rb").read()
    if data[:4] != b"\x7fELF" or data[4] != 2:
        sys.exit(f"kernel-sizes: {path} is not a 64-bit ELF cubin")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    def section(i):
        name, _, _, _, off, size = struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize)
        return name, off, size
    _, str_off, _ = section(shstrndx)
    for i in range(shnum):
        name_off, _, size = section(i)
        name = data[str_off + name_off:data.index(b"\0", str_off + name_off)].decode()
        if name.startswith(".text.") and pattern.search(name[6:]):
            rows.append((size, os.path.basename(path)[:-6], name[6:]))
for size, module, entry in sorted(rows, reverse=True):
    print(f"{size / 1024:8.1f} KB  {module:22} {entry}")
EOF
