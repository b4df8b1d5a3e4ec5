"""Time plain PyTorch / HF transformers forwards for a config.json (baseline for fwdbench).

    python hf_latency.py --config model_conf/qwen3-30b-a3b/config_2l.json \
        [--device cuda] [--dtype bf16] [--seq 2048] [--prefill-bsz 1] [--decode-bsz 8] \
        [--prefill-seq N] [--decode-seq N] [--iters 5] [--warmup 2] [--phases prefill,decode] \
        [--attn-impl eager] [--all-logits] [--compile [--sdpa-order cudnn,flash,efficient,math]] \
        [--no-flush] [--csv FILE]

Weights are random (built from the config, no Hub access). Families:
* gpt2, qwen2, qwen3, qwen2_moe, qwen3_moe, deepseek_v3, deepseek_v2 (and anything else
  transformers' AutoModelForCausalLM knows): the HF class, `attn_implementation` from
  --attn-impl (default "eager": HF's own matmul + softmax attention, no fused kernels;
  "sdpa" with --compile);
* Grok-1 (architectures Grok1ModelForCausalLM or model_type grok-1), Sigma V2 (model_type
  sigma / SigmaV2ForCausalLM / SigmaForCausalLM) and Sigma v1 (model_type sigma_v1): the
  references in this folder (matmul attention, experts looped), KV cache included.

--compile (HF families only): the strongest whole-forward peer, hf_compile.py: SDPA with
cuDNN preferred, torch.compile for prefill, a static cache + torch.compile "reduce-overhead"
(CUDA graphs) for decode; the first call of each shape (the compile) is timed apart.

Shapes: every --prefill-bsz (a comma list) at --prefill-seq, every --decode-bsz at
--decode-seq (both default --seq). Each is timed as fwdbench's `run` times it: CUDA events
around the forward only, the L2 flushed before each iteration outside the events (unless
--no-flush; wall clock and no flush on CPU), `--warmup` untimed runs, median of `--iters`:
* prefill: one forward of `bsz x seq` new tokens, no cache;
* decode: one forward of `bsz` new tokens (one per sequence) attending to `seq` cached
  tokens. The cache is built once by a prefill of that length; every timed step starts from
  the same cache (HF: cropped back to `seq`, or the static cache's length reset; references:
  their cache is immutable).
The LM head is applied to the last position only (as a server does, models.md §6.6) unless
--all-logits is given.

Output: one JSON line per shape on stdout (and with --csv one row appended per shape):
  {"model", "phase", "bsz", "seq", "latency_ms", "p10_ms", "p90_ms", "min_ms", "mode", "impl",
   "sdpa_backend", "cuda_graph", "compile_s", "graph_breaks", "dtype", "device", "lm_head", "flush",
   "experts"}
Errors go to stderr as one sentence and the exit status is non-zero.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import hf_compile as hc  # noqa: E402

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
        if ref is not None and args.compile:
            raise LatencyError(
                f"{args.config}: --compile times HF transformers' classes, and this family runs on our "
                "references; drop --compile for it"
            )
        self.impl = "reference" if ref is not None else f"hf-{args.attn_impl}"
        self.vocab = int(cfg.get("vocab_size", 0))
        if self.vocab <= 0:
            raise LatencyError(f"{args.config}: vocab_size is missing or not positive")
        limit = cfg.get("n_positions") or cfg.get("max_position_embeddings")
        # A decode step needs one position past the cached ones; a prefill only its length.
        for phase, flag, needed in [("prefill", "--prefill-seq", args.prefill_seq),
                                    ("decode", "--decode-seq", args.decode_seq + 1)]:
            if phase in args.phases and limit and needed > int(limit):
                raise LatencyError(
                    f"{args.config}: {flag} {args.prefill_seq if phase == 'prefill' else args.decode_seq} "
                    f"exceeds the model's {limit} positions{' (+1 decode token)' if phase == 'decode' else ''}; "
                    "lower it or raise max_position_embeddings / n_positions"
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
        # HF's MoE kernels (eager loop, batched_mm, grouped_mm): meaningful for MoE configs only.
        moe = any(k in cfg for k in ("num_experts", "n_routed_experts", "num_local_experts"))
        self.experts = (getattr(self.model.config, "_experts_implementation", None) or "eager") if moe and not self.is_ref else "-"

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
        cache.crop(-1)  # undo this step's append (a negative count removes tokens in every transformers 5.x)


FLUSH_BYTES = 256 << 20  # fwdbench's bench::timing::FLUSH_BYTES: five times the H200's L2


def timed(fn, device: torch.device, warmup: int, iters: int, flush: bool, before=None) -> list[float]:
    """Milliseconds of each of `iters` runs of `fn()` after `warmup` untimed ones. On CUDA each
    run sits alone between two events; before it, outside them, the L2 is flushed (with
    `flush`) and `before()` runs, as fwdbench's bench::timing::time_iterations does."""
    for _ in range(warmup):
        if before:
            before()
        fn()
    scratch = torch.empty(FLUSH_BYTES, dtype=torch.uint8, device=device) if flush and device.type == "cuda" else None
    samples = []
    for _ in range(iters):
        if scratch is not None:
            scratch.sum(dtype=torch.int32)  # a read: fwdbench's flush (no dirty lines left)
        if before:
            before()
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            samples.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t0) * 1e3)
    return samples


def percentile(ordered: list[float], q: float) -> float:
    """Linear interpolation between ranks, as fwdbench's report::stats does."""
    pos = q * (len(ordered) - 1)
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summary(samples: list[float]) -> dict:
    """fwdbench's row statistics: median, p10, p90, min."""
    ordered = sorted(samples)
    return {"latency_ms": round(percentile(ordered, 0.5), 4), "p10_ms": round(percentile(ordered, 0.1), 4),
            "p90_ms": round(percentile(ordered, 0.9), 4), "min_ms": round(ordered[0], 4)}


def positive_list(text: str) -> list[int]:
    """A comma list of positive ints, e.g. "8,32"."""
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return values


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="path to an HF-style config.json")
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    p.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    p.add_argument("--seq", type=int, default=2048, help="prefill length, and cached length for decode")
    p.add_argument("--prefill-seq", type=int, help="prefill length (default --seq)")
    p.add_argument("--decode-seq", type=int, help="cached tokens of decode (default --seq)")
    p.add_argument("--bsz", type=positive_list, help="batches of both phases (overrides --prefill-bsz/--decode-bsz)")
    p.add_argument("--prefill-bsz", type=positive_list, default=[1], help="comma list, e.g. 1,32")
    p.add_argument("--decode-bsz", type=positive_list, default=[8], help="comma list, e.g. 8,32")
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--phases", default="prefill,decode", help="comma list of prefill, decode")
    p.add_argument("--attn-impl", help="HF attn_implementation (default eager; sdpa with --compile)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile: prefill compiled, decode on a static cache with CUDA graphs (hf_compile.py)")
    p.add_argument("--sdpa-order", default="cudnn,flash,efficient,math",
                   help="SDPA backends allowed, most preferred first (with --attn-impl sdpa or --compile)")
    p.add_argument("--no-flush", action="store_true", help="do not flush the L2 before each timed iteration")
    p.add_argument("--csv", help="append one row per shape to this CSV file")
    p.add_argument("--all-logits", action="store_true", help="LM head on every prefill position")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", help="model label in the output (default: config's parent folder/file)")
    args = p.parse_args(argv)
    if args.bsz is not None:
        args.prefill_bsz = args.decode_bsz = args.bsz
    args.prefill_seq = args.seq if args.prefill_seq is None else args.prefill_seq
    args.decode_seq = args.seq if args.decode_seq is None else args.decode_seq
    for key in ("seq", "prefill_seq", "decode_seq", "iters"):
        if getattr(args, key) < 1:
            p.error(f"--{key.replace('_', '-')} must be at least 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    args.phases = [x.strip() for x in args.phases.split(",") if x.strip()]
    bad = [x for x in args.phases if x not in ("prefill", "decode")]
    if bad or not args.phases:
        p.error(f"--phases takes prefill and/or decode, got {args.phases}")
    if args.compile and args.attn_impl not in (None, "sdpa"):
        p.error(f"--compile runs HF's sdpa attention; drop --attn-impl {args.attn_impl}")
    args.attn_impl = args.attn_impl or ("sdpa" if args.compile else "eager")
    try:
        args.sdpa_order = hc.parse_sdpa_order(args.sdpa_order)
    except ValueError as e:
        p.error(str(e))
    return args


CSV_COLUMNS = ["model", "phase", "bsz", "seq", "latency_ms", "p10_ms", "p90_ms", "min_ms", "mode", "impl",
               "sdpa_backend", "cuda_graph", "compile_s", "graph_breaks", "dtype", "device", "lm_head", "flush", "experts"]


def append_csv(path: str, row: dict) -> None:
    """One row; the header when the file is new. A file with other columns is refused."""
    header = ",".join(CSV_COLUMNS)
    if os.path.exists(path) and os.path.getsize(path) > 0:
        with open(path) as f:
            first = f.readline().strip()
        if first != header:
            raise LatencyError(f"--csv {path} has other columns than hf_latency.py writes ({header}); pass another file")
        new = False
    else:
        new = True
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        if new:
            w.writeheader()
        w.writerow({k: row.get(k, "") for k in CSV_COLUMNS})


def shape_calls(runner: Runner, args, phase: str, bsz: int, seq: int):
    """(fn, before, eager_fn) for one shape: the timed call, what runs before each (outside
    the events), and one uncompiled call (to see what SDPA receives)."""
    if phase == "prefill":
        ids = runner.ids(bsz, seq, args.seed)
        if args.compile:
            fn = hc.CompiledPrefill(runner.model, ids, runner.last_only)
            return fn, None, fn.eager
        fn = lambda: runner.prefill(ids)  # noqa: E731
        return fn, None, fn
    prompt, step = runner.ids(bsz, seq, args.seed), runner.ids(bsz, 1, args.seed + 1)
    if args.compile:
        fn = hc.CompiledDecode(runner.model, prompt, step)
        return fn, fn.reset, fn.eager
    cache = runner.prefill(prompt, keep_cache=True)
    fn = lambda: runner.decode(step, cache, seq)  # noqa: E731
    return fn, None, fn


def measure(runner: Runner, args, phase: str, bsz: int, seq: int) -> dict:
    """One shape's row: its timings, the SDPA backend, and with --compile the compile's cost."""
    sdpa = runner.impl == "hf-sdpa"
    row = {"mode": "compile" if args.compile else "eager", "sdpa_backend": "-", "cuda_graph": "no",
           "compile_s": "", "graph_breaks": ""}
    if args.compile:
        hc.fresh_compile_state()
    priority = hc.sdpa_priority(args.sdpa_order) if sdpa else contextlib.nullcontext()
    with priority:
        fn, before, eager = shape_calls(runner, args, phase, bsz, seq)
        if sdpa:
            calls = []
            with hc.record_sdpa(calls), torch.no_grad():
                eager()
            row["sdpa_backend"] = hc.sdpa_backend(calls, args.sdpa_order)
            del calls
        warmup = args.warmup
        if args.compile:
            counts = hc.dynamo_counts()
            if before:
                before()
            with torch.no_grad():
                row["compile_s"] = round(hc.first_call_s(fn, runner.device), 2)
            after = hc.dynamo_counts()
            row["graph_breaks"] = after["graph_breaks"] - counts["graph_breaks"]
            if phase == "decode" and runner.device.type == "cuda":
                graphed = after["cudagraph_skips"] == counts["cudagraph_skips"]
                row["cuda_graph"] = "yes" if graphed else "skipped"
                # CUDA-graph trees record on the second call: never time a recording.
                warmup = max(warmup, 1)
        with torch.no_grad():
            samples = timed(fn, runner.device, warmup, args.iters, not args.no_flush, before)
    return {**summary(samples), **row}


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
    shapes = [(p, b, args.prefill_seq if p == "prefill" else args.decode_seq)
              for p in args.phases for b in (args.prefill_bsz if p == "prefill" else args.decode_bsz)]
    try:
        runner = Runner(cfg, args)
        base = {"impl": runner.impl, "dtype": args.dtype, "device": args.device,
                "flush": "no" if args.no_flush or runner.device.type != "cuda" else "yes", "experts": runner.experts}
        for phase, bsz, seq in shapes:
            stats = measure(runner, args, phase, bsz, seq)
            # Decode: one new token per sequence, its logits are the step's output.
            lm_head = "last" if runner.last_only and phase == "prefill" else "all"
            row = {"model": label, "phase": phase, "bsz": bsz, "seq": seq, **stats, **base, "lm_head": lm_head}
            print(json.dumps(row), flush=True)
            if args.csv:
                append_csv(args.csv, row)
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
