"""Time plain PyTorch / HF transformers forwards for a config.json (baseline for fwdbench).

    python hf_latency.py --config model_conf/qwen3-30b-a3b/config_2l.json \
        [--device cuda] [--dtype bf16] [--seq 2048] [--prefill-bsz 1] [--decode-bsz 8] \
        [--iters 5] [--warmup 2] [--phases prefill,decode] [--attn-impl eager] [--all-logits]

Weights are random (built from the config, no Hub access). Families:
* gpt2, qwen2, qwen3, qwen2_moe, qwen3_moe, deepseek_v3, deepseek_v2 (and anything else
  transformers' AutoModelForCausalLM knows): the HF class, `attn_implementation` from
  --attn-impl (default "eager": HF's own matmul + softmax attention, no fused kernels);
* Grok-1 (architectures Grok1ModelForCausalLM or model_type grok-1), Sigma V2 (model_type
  sigma / SigmaV2ForCausalLM / SigmaForCausalLM) and Sigma v1 (model_type sigma_v1): the
  references in this folder (matmul attention, experts looped), KV cache included.

Phases, each timed with CUDA events (wall clock on CPU), `--warmup` untimed runs, median of
`--iters`:
* prefill: one forward of `--prefill-bsz x --seq` new tokens, no cache;
* decode: one forward of `--decode-bsz` new tokens (one per sequence) attending to `--seq`
  cached tokens. The cache is built once by a prefill of that length; every timed step starts
  from the same cache (HF: cropped back to `--seq`; references: their cache is immutable).
The LM head is applied to the last position only (as a server does, models.md §6.6) unless
--all-logits is given.

Output: one JSON line per phase on stdout,
  {"model", "phase", "bsz", "seq", "latency_ms", "impl", "dtype", "device", "lm_head"}
Errors go to stderr as one sentence and the exit status is non-zero.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


class LatencyError(RuntimeError):
    pass


def reference_class(cfg: dict):
    """The self-written reference for families transformers does not ship, else None."""
    arch = (cfg.get("architectures") or [""])[0]
    model_type = cfg.get("model_type", "")
    if arch.startswith("Grok1") or model_type == "grok-1":
        from grok1_ref import Grok1ForCausalLM

        return Grok1ForCausalLM
    if model_type == "sigma" or arch in ("SigmaV2ForCausalLM", "SigmaForCausalLM"):
        from sigma_v2_ref import SigmaV2ForCausalLM

        return SigmaV2ForCausalLM
    if model_type == "sigma_v1" or arch == "SigmaV1ForCausalLM":
        from sigma_v1_ref import SigmaV1ForCausalLM

        return SigmaV1ForCausalLM
    return None


def init_small_(model: torch.nn.Module, seed: int) -> None:
    """N(0, 0.02) weights, unit norm weights: HF's usual init, applied on the target device."""
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            module = name.rsplit(".", 2)[-2] if name.count(".") else ""
            if ("norm" in module or module.startswith("ln_")) and name.endswith("weight"):
                p.fill_(1.0)
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.normal_(0.0, 0.02, generator=gen)


class Runner:
    """Uniform prefill / decode calls over HF models and the references."""

    def __init__(self, cfg: dict, args):
        self.device = torch.device(args.device)
        self.dtype = DTYPES[args.dtype]
        self.last_only = not args.all_logits
        ref = reference_class(cfg)
        self.impl = "reference" if ref is not None else f"hf-{args.attn_impl}"
        self.vocab = int(cfg.get("vocab_size", 0))
        if self.vocab <= 0:
            raise LatencyError(f"{args.config}: vocab_size is missing or not positive")
        limit = cfg.get("n_positions") or cfg.get("max_position_embeddings")
        # A decode step needs one position past the cached ones; a prefill only --seq.
        needed = args.seq + (1 if "decode" in args.phases else 0)
        if limit and needed > int(limit):
            raise LatencyError(
                f"{args.config}: --seq {args.seq} (+1 decode token) exceeds the model's {limit} positions; "
                "lower --seq or raise max_position_embeddings / n_positions"
            )
        # Build directly on the device in the target dtype (no fp32 copy of a large model);
        # the references keep their RoPE inverse frequencies in fp32 explicitly.
        previous_dtype = torch.get_default_dtype()
        torch.set_default_dtype(self.dtype)
        try:
            self._build(cfg, ref, args)
        finally:
            torch.set_default_dtype(previous_dtype)
        self.model.eval()
        init_small_(self.model, args.seed)
        self.is_ref = ref is not None

    def _build(self, cfg: dict, ref, args) -> None:
        with torch.device(self.device):
            if ref is not None:
                self.model = ref.from_dict(cfg)
            else:
                from transformers import AutoConfig, AutoModelForCausalLM

                d = dict(cfg)
                model_type = d.pop("model_type", None)
                if model_type is None:
                    raise LatencyError(f"{args.config}: 'model_type' is missing; cannot pick an HF class")
                try:
                    hf_cfg = AutoConfig.for_model(model_type, **d)
                except ValueError:
                    raise LatencyError(
                        f"{args.config}: model_type '{model_type}' is neither a transformers model nor one "
                        "of the references (grok-1/Grok1ModelForCausalLM, sigma, sigma_v1)"
                    ) from None
                self.model = AutoModelForCausalLM.from_config(
                    hf_cfg, attn_implementation=args.attn_impl, dtype=self.dtype
                )

    def ids(self, bsz: int, seq: int, seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return torch.randint(0, self.vocab, (bsz, seq), generator=gen).to(self.device)

    @torch.no_grad()
    def prefill(self, ids: torch.Tensor, keep_cache: bool = False):
        if self.is_ref:
            _, cache = self.model(ids, last_only=self.last_only)
            return cache if keep_cache else None
        out = self.model(input_ids=ids, use_cache=keep_cache, logits_to_keep=1 if self.last_only else 0)
        return out.past_key_values if keep_cache else None

    @torch.no_grad()
    def decode(self, ids: torch.Tensor, cache, cached_len: int):
        if self.is_ref:
            self.model(ids, cache)
            return
        self.model(input_ids=ids, past_key_values=cache, use_cache=True)
        cache.crop(cached_len)  # undo this step's append so every timed step sees the same cache


def timed(fn, device: torch.device, warmup: int, iters: int) -> float:
    """Median milliseconds of `fn()` over `iters` runs after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(iters):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(device)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            samples.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="path to an HF-style config.json")
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    p.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    p.add_argument("--seq", type=int, default=2048, help="prefill length, and cached length for decode")
    p.add_argument("--bsz", type=int, help="batch for both phases (overrides --prefill-bsz/--decode-bsz)")
    p.add_argument("--prefill-bsz", type=int, default=1)
    p.add_argument("--decode-bsz", type=int, default=8)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--phases", default="prefill,decode", help="comma list of prefill, decode")
    p.add_argument("--attn-impl", default="eager", help="HF attn_implementation (eager, sdpa, ...)")
    p.add_argument("--all-logits", action="store_true", help="LM head on every prefill position")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", help="model label in the output (default: config's parent folder/file)")
    args = p.parse_args(argv)
    if args.bsz is not None:
        args.prefill_bsz = args.decode_bsz = args.bsz
    for key in ("seq", "prefill_bsz", "decode_bsz", "iters"):
        if getattr(args, key) < 1:
            p.error(f"--{key.replace('_', '-')} must be at least 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    args.phases = [x.strip() for x in args.phases.split(",") if x.strip()]
    bad = [x for x in args.phases if x not in ("prefill", "decode")]
    if bad or not args.phases:
        p.error(f"--phases takes prefill and/or decode, got {args.phases}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        with open(args.config) as f:
            cfg = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        print(f"error: cannot read config {args.config}: {e}", file=sys.stderr)
        return 2
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: --device cuda requested but torch sees no CUDA device; pass --device cpu", file=sys.stderr)
        return 2
    label = args.name or os.path.join(
        os.path.basename(os.path.dirname(os.path.abspath(args.config))), os.path.basename(args.config)
    )
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        runner = Runner(cfg, args)
        base = {"model": label, "impl": runner.impl, "dtype": args.dtype, "device": args.device}
        for phase in args.phases:
            if phase == "prefill":
                ids = runner.ids(args.prefill_bsz, args.seq, args.seed)
                ms = timed(lambda: runner.prefill(ids), runner.device, args.warmup, args.iters)
                bsz = args.prefill_bsz
                lm_head = "last" if runner.last_only else "all"
            else:
                prompt = runner.ids(args.decode_bsz, args.seq, args.seed)
                cache = runner.prefill(prompt, keep_cache=True)
                step = runner.ids(args.decode_bsz, 1, args.seed + 1)
                ms = timed(lambda: runner.decode(step, cache, args.seq), runner.device, args.warmup, args.iters)
                del cache
                bsz = args.decode_bsz
                lm_head = "all"  # one new token per sequence: its logits are the step's output
            line = {"model": label, "phase": phase, "bsz": bsz, "seq": args.seq, "latency_ms": round(ms, 4)}
            print(json.dumps({**line, **base, "lm_head": lm_head}), flush=True)
            if runner.device.type == "cuda":
                torch.cuda.empty_cache()
    except torch.OutOfMemoryError as e:
        print(f"error: out of device memory for {label} ({e}); use a smaller config (e.g. 2 layers) or batch", file=sys.stderr)
        return 3
    except LatencyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # ConfigError from the references, HF config validation, ...
        print(f"error: {label}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
