"""One cuDNN SDPA decode call per KV layout at Sigma b32's shape (64 q heads, 8 KV heads, d128,
4097 keys), for Nsight Compute to profile: which grid, block, registers and shared memory the
peer's kernel uses, and how much of DRAM's peak it draws, on a head-major cache and on
fwdbench's token-major one (viewed as [b, h, s, d]). Buffers are torch.empty, so the only
kernels launched are the SDPA calls themselves (one warm-up each, then the profiled call).

  ncu --section LaunchStats --section SpeedOfLight python3 scripts/probes/sdpa_decode_once.py
"""
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

b, hq, hk, ctx, d = 32, 64, 8, 4097, 128
q = torch.empty(b, hq, 1, d, device="cuda", dtype=torch.bfloat16)
head_major = [torch.empty(b, hk, ctx, d, device="cuda", dtype=torch.bfloat16) for _ in range(2)]
token_major = [torch.empty(b, ctx, hk, d, device="cuda", dtype=torch.bfloat16).transpose(1, 2) for _ in range(2)]
for name, (k, v) in [("bhsd", head_major), ("bshd", token_major)]:
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        for _ in range(2):
            F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    torch.cuda.synchronize()
    print(f"{name}: done", flush=True)
