"""HF transformers under torch.compile: the strongest whole-forward peer (issue 8), for hf_latency.py --compile.

* prefill: SDPA attention with the backends in `--sdpa-order` preferred in that order (cuDNN
  first), the whole `model.forward` through torch.compile (inductor, default mode, static
  shapes: one compile per shape);
* decode: HF's documented recipe, a `StaticCache` and torch.compile mode "reduce-overhead"
  (inductor + CUDA graphs). The cache holds exactly `seq + 1` positions, filled once by an
  eager prefill of `seq` tokens; before each step its length is set back to `seq`, so every
  step writes position `seq` and attends to `seq` cached tokens plus itself, as fwdbench's
  decode does, and reads no padding.

Which SDPA backend ran is found by recording the arguments HF passes to
`F.scaled_dot_product_attention` in one eager forward, then trying each backend of the order
alone on them: the first that accepts them is the one the dispatcher picks (under compile the
same choice is traced into the graph).
"""

from __future__ import annotations

import contextlib
import time
import warnings

import torch
import torch.nn.functional as F

# --sdpa-order names -> torch.nn.attention.SDPBackend members.
SDPA_BACKENDS = {"cudnn": "CUDNN_ATTENTION", "flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "math": "MATH"}


def parse_sdpa_order(text: str) -> list[str]:
    order = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in order if x not in SDPA_BACKENDS]
    if bad or not order or len(set(order)) != len(order):
        raise ValueError(f"--sdpa-order takes distinct names from {','.join(SDPA_BACKENDS)}, got {text!r}")
    return order


def _members(order: list[str]):
    from torch.nn.attention import SDPBackend

    return [getattr(SDPBackend, SDPA_BACKENDS[n]) for n in order]


def sdpa_priority(order: list[str]):
    """SDPA restricted to `order`, tried in that order (torch's default tries flash first)."""
    import inspect

    from torch.nn.attention import sdpa_kernel

    if "set_priority" not in inspect.signature(sdpa_kernel).parameters:
        # Without it the order cannot be imposed, and sdpa_backend's answer would be a guess.
        raise RuntimeError(f"torch {torch.__version__} has no sdpa_kernel(set_priority=...): --sdpa-order needs torch >= 2.6")
    return sdpa_kernel(_members(order), set_priority=True)


@contextlib.contextmanager
def record_sdpa(calls: list):
    """Appends the (args, kwargs) of the first `F.scaled_dot_product_attention` call made
    inside (HF's sdpa integration looks the function up at each call)."""
    original = F.scaled_dot_product_attention

    def recording(*args, **kwargs):
        if not calls:
            calls.append((args, kwargs))
        return original(*args, **kwargs)

    F.scaled_dot_product_attention = recording
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


def sdpa_backend(calls: list, order: list[str]) -> str:
    """The first backend of `order` that accepts the recorded call ("none" if no call)."""
    from torch.nn.attention import sdpa_kernel

    if not calls:
        return "none"
    args, kwargs = calls[0]
    for name, member in zip(order, _members(order)):
        with sdpa_kernel([member]), warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # torch explains each refusal in a UserWarning
            try:
                F.scaled_dot_product_attention(*args, **kwargs)
            except RuntimeError:
                continue
        return name
    return "none"


def dynamo_counts() -> dict:
    """Graph breaks and CUDA-graph skips so far (torch._dynamo's counters)."""
    from torch._dynamo.utils import counters

    return {
        "graph_breaks": sum(counters["graph_break"].values()),
        "cudagraph_skips": counters["inductor"]["cudagraph_skips"],
    }


def fresh_compile_state() -> None:
    """Forget earlier shapes' graphs: each shape compiles alone, so its compile time is its
    own and no recompile limit is reached across shapes."""
    torch._dynamo.reset()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def first_call_s(fn, device: torch.device) -> float:
    """Seconds of the first call of `fn` (tracing, inductor compile, graph capture)."""
    synchronize(device)
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - t0


class CompiledPrefill:
    """`model.forward` compiled for one prefill shape; call() runs it."""

    def __init__(self, model, ids: torch.Tensor, last_only: bool):
        self.model, self.ids, self.keep = model, ids, 1 if last_only else 0
        self.forward = torch.compile(model.forward, dynamic=False)

    def eager(self):
        self.model(input_ids=self.ids, use_cache=False, logits_to_keep=self.keep)

    def __call__(self):
        self.forward(input_ids=self.ids, use_cache=False, logits_to_keep=self.keep)


class CompiledDecode:
    """One decode step over a static cache of `seq` tokens, compiled with CUDA graphs."""

    def __init__(self, model, prompt: torch.Tensor, step: torch.Tensor):
        from transformers import StaticCache

        self.model, self.step, self.seq = model, step, prompt.shape[1]
        self.cache = StaticCache(config=model.config, max_cache_len=self.seq + 1)
        # Eager, so the cache allocates its tensors and marks them static (a compiled
        # prefill could not, and CUDA graphs would then be skipped for the mutated cache).
        model(input_ids=prompt, past_key_values=self.cache, use_cache=True, logits_to_keep=1)
        self.forward = torch.compile(model.forward, mode="reduce-overhead", dynamic=False)

    def reset(self):
        """Back to `seq` cached tokens (in place: the graphs hold these addresses)."""
        for layer in self.cache.layers:
            layer.cumulative_length.fill_(self.seq)

    def eager(self):
        self.model(input_ids=self.step, past_key_values=self.cache, use_cache=True)
        self.reset()

    def __call__(self):
        torch.compiler.cudagraph_mark_step_begin()
        self.forward(input_ids=self.step, past_key_values=self.cache, use_cache=True)
