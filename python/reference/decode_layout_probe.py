"""How much of GQA decode's speed is the KV layout, and how much the peer's timing method.

fwdbench's KV cache is [batch, seq, heads, d] (a key of one head is d contiguous elements at a
stride of heads * d); torch's SDPA peers get [batch, heads, seq, d] (each head contiguous). This
times cuDNN SDPA (the decode peer of kernel_peers.py) on both, at the issue's decode shapes,
and each way twice: with the GPU held busy while Python enqueues the call (kernel_peers.py's
method) and without (the host's dispatch time can then land between the events).

  python3 python/reference/decode_layout_probe.py
"""
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from kernel_peers import timed


def case(name, b, hq, hk, ctx, d=128):
    q = torch.randn(b, hq, 1, d, device="cuda", dtype=torch.bfloat16)
    contiguous = [torch.randn(b, hk, ctx, d, device="cuda", dtype=torch.bfloat16) for _ in range(2)]
    # Same values, stored token-major like fwdbench's cache, viewed as [b, h, s, d].
    token_major = [t.transpose(1, 2).contiguous().transpose(1, 2) for t in contiguous]
    kv_bytes = 2 * b * hk * ctx * d * 2
    for layout, (k, v) in [("bhsd", contiguous), ("bshd", token_major)]:
        for backend_name, backend in [("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION)]:
            def run():
                with sdpa_kernel(backend):
                    return F.scaled_dot_product_attention(q, k, v, enable_gqa=hq != hk)
            try:
                ref = run()
                torch.testing.assert_close(ref, F.scaled_dot_product_attention(
                    q.float(), contiguous[0].float(), contiguous[1].float(), enable_gqa=hq != hk).to(ref.dtype),
                    atol=2e-2, rtol=2e-2)
                busy, eager = timed(run), timed(run, spin=False)
                print(f"{name} {layout} {backend_name}: {busy:.4f} ms ({kv_bytes / busy / 1e6:.0f} GB/s) held busy, "
                      f"{eager:.4f} ms eager", flush=True)
            except Exception as e:  # a backend that refuses a stride or shape says so
                print(f"{name} {layout} {backend_name}: {type(e).__name__}: {str(e).splitlines()[0][:120]}", flush=True)


if __name__ == "__main__":
    for b in (1, 32, 64):
        case(f"sigma b{b}", b, 64, 8, 4097)
    for b in (32, 64):
        case(f"qwen3 b{b}", b, 64, 4, 4097)
