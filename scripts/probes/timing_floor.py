"""What an event pair around one tiny launch measures on this GPU, under the two harnesses
that time our rows side by side: fwdbench's (bench::timing: L2 flush, start event, the op,
end event) and kernel_peers.py's (the same flush, then a spin kernel that holds the GPU while
the host enqueues, then start, the op, end). Prints the median microseconds of an empty
region, of one 4-byte add and of a 16 KB copy under each, 200 iterations.

  python3 scripts/probes/timing_floor.py
"""
import torch

ITERS = 200
flush = torch.empty(256 << 20, dtype=torch.int8, device="cuda")
tiny = torch.zeros(1, device="cuda")
src = torch.zeros(4096, device="cuda")
dst = torch.empty_like(src)
cases = {"empty": lambda: None, "add 4 B": lambda: tiny.add_(1.0), "copy 16 KB": lambda: dst.copy_(src)}


def median_us(fn, spin):
    times = []
    for i in range(ITERS + 5):
        flush.sum(dtype=torch.int32)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        if spin:
            torch.cuda._sleep(400_000)
        start.record()
        fn()
        end.record()
        end.synchronize()
        if i >= 5:
            times.append(start.elapsed_time(end) * 1e3)
    times.sort()
    return times[len(times) // 2]


print(f"{'region':<12} {'flush only (us)':>16} {'flush + spin (us)':>18}")
for name, fn in cases.items():
    print(f"{name:<12} {median_us(fn, False):16.2f} {median_us(fn, True):18.2f}")
