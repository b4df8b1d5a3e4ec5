"""Expected logits of an exported model (`fwdbench export`) for `fwdbench check --expect`.

    python python/reference/reference_logits.py --engine hf --model DIR --ids IDS.json --out F \
        [--dtype fp32|bf16] [--device cpu|cuda]
    python python/reference/reference_logits.py --engine sglang --model DIR --ids IDS.json --out F
    python python/reference/reference_logits.py --engine hf --jobs JOBS.json

IDS.json is fwdbench's input format, {"input_ids": [[...], ...]} (equal-length rows).
JOBS.json, a list of {"model": DIR, "ids": IDS.json, "out": F}, runs several models in one
process: torch and transformers take seconds to import, far longer than a tiny model's forward.

* `--engine hf`: HF transformers (`AutoModelForCausalLM.from_pretrained`, eager attention)
  for the families transformers ships; Grok-1 and Sigma (V2, v1), which it lacks, run on our
  PyTorch references in this folder, loaded strictly from the same shards. Writes `logits`,
  float32 `[batch, seq, vocab]`, every position: the format of tests/fixtures/*/logits.safetensors.
* `--engine sglang`: SGLang's offline `Engine` (needs SGLang and a GPU). SGLang returns
  log-probabilities, not logits, so the file holds `logprobs` `[batch, seq, vocab]` instead;
  `fwdbench check` then compares the log-softmax of its own logits.

Errors are one sentence on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


class RefError(RuntimeError):
    pass


def read_ids(path: str) -> list[list[int]]:
    """`input_ids` of an ids file: a non-empty list of equal-length, non-empty int lists."""
    try:
        with open(path) as f:
            rows = json.load(f)["input_ids"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise RefError(f"--ids {path}: cannot read {{\"input_ids\": [[...], ...]}} ({e})") from e
    ok = isinstance(rows, list) and rows and all(isinstance(r, list) and r for r in rows)
    if not ok or any(not all(isinstance(t, int) and t >= 0 for t in r) for r in rows):
        raise RefError(f"--ids {path}: input_ids must be non-empty lists of non-negative token ids")
    if len({len(r) for r in rows}) != 1:
        raise RefError(f"--ids {path}: every row of input_ids must have the same length")
    return rows


def read_config(model_dir: str) -> dict:
    path = os.path.join(model_dir, "config.json")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise RefError(f"--model {model_dir}: cannot read config.json ({e}); pass a folder written by fwdbench export") from e


def check_vocab(ids: list[list[int]], vocab: int, path: str) -> None:
    top = max(max(r) for r in ids)
    if top >= vocab:
        raise RefError(f"--ids {path}: token id {top} is outside the model's vocabulary of {vocab}")


def load_shards(model_dir: str) -> dict:
    """Every tensor of the folder's safetensors shards (the index's, else all files)."""
    from safetensors.torch import load_file

    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = sorted(n for n in os.listdir(model_dir) if n.endswith(".safetensors"))
    state = {}
    for name in files:
        state.update(load_file(os.path.join(model_dir, name)))
    return state


def hf_logits(model_dir: str, cfg: dict, ids: list[list[int]], dtype: str, device: str):
    import torch
    from hf_latency import reference_class

    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    ref = reference_class(cfg)
    if ref is not None:
        model = ref.from_dict(cfg)
        state = load_shards(model_dir)
        # The references hold fp32 parameters; loading casts each tensor to them.
        model.load_state_dict(state, strict=True)
    else:
        from transformers import AutoModelForCausalLM

        model, info = AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=torch.float32, attn_implementation="eager", output_loading_info=True
        )
        problems = {k: v for k, v in info.items() if v}
        if problems:
            raise RefError(f"--model {model_dir}: HF's loader reported {problems}; the export and HF disagree on names")
    model = model.to(device=device, dtype=torch_dtype).eval()
    input_ids = torch.tensor(ids, dtype=torch.long, device=device)
    with torch.no_grad():
        out = model(input_ids)[0] if ref is not None else model(input_ids=input_ids, use_cache=False).logits
    return {"logits": out.float().cpu().contiguous()}


def sglang_logprobs(model_dir: str, cfg: dict, ids: list[list[int]], dtype: str):
    try:
        import sglang
    except ImportError as e:
        raise RefError("--engine sglang needs SGLang installed (pip install sglang, on a GPU machine); use --engine hf without it") from e
    import torch

    vocab = int(cfg["vocab_size"])
    engine = sglang.Engine(
        model_path=model_dir,
        dtype={"fp32": "float32", "bf16": "bfloat16"}[dtype],
        skip_tokenizer_init=True,
        disable_cuda_graph=True,
        random_seed=0,
    )
    try:
        outs = engine.generate(
            input_ids=ids,
            sampling_params={"max_new_tokens": 1, "temperature": 0.0},
            return_logprob=True,
            logprob_start_len=0,
            top_logprobs_num=vocab,
        )
    finally:
        engine.shutdown()
    rows = []
    for out in outs:
        meta = out["meta_info"]
        # input_top_logprobs[i] is the distribution that predicted token i (None for i = 0),
        # so position j's distribution is entry j + 1; the last position's is the first
        # generated token's.
        dists = meta["input_top_logprobs"][1:] + [meta["output_top_logprobs"][0]]
        if len(dists) != len(ids[0]):
            raise RefError(f"SGLang returned {len(dists)} positions for prompts of {len(ids[0])} tokens")
        seq = torch.full((len(dists), vocab), float("-inf"))
        for j, dist in enumerate(dists):
            for logprob, token, *_ in dist:
                seq[j, token] = logprob
        rows.append(seq)
    return {"logprobs": torch.stack(rows).contiguous()}


def reference(engine: str, model_dir: str, ids_path: str, out: str, dtype: str, device: str) -> dict:
    """Writes `out` for one model; returns the JSON line that reports it."""
    ids = read_ids(ids_path)
    cfg = read_config(model_dir)
    check_vocab(ids, int(cfg.get("vocab_size", 0)), ids_path)
    if engine == "hf":
        tensors = hf_logits(model_dir, cfg, ids, dtype, device)
    else:
        tensors = sglang_logprobs(model_dir, cfg, ids, dtype)
    from safetensors.torch import save_file

    save_file(tensors, out)
    (name, t), = tensors.items()
    return {"engine": engine, "model": model_dir, "out": out, name: list(t.shape)}


def read_jobs(path: str) -> list[dict]:
    try:
        with open(path) as f:
            jobs = json.load(f)
    except (OSError, ValueError) as e:
        raise RefError(f"--jobs {path}: cannot read a JSON list of {{\"model\", \"ids\", \"out\"}} ({e})") from e
    keys = {"model", "ids", "out"}
    if not isinstance(jobs, list) or not jobs or not all(isinstance(j, dict) and set(j) == keys for j in jobs):
        raise RefError(f"--jobs {path}: must be a non-empty list of objects with exactly the keys model, ids, out")
    return jobs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--engine", choices=["hf", "sglang"], required=True)
    p.add_argument("--model", help="folder written by fwdbench export")
    p.add_argument("--ids", help='{"input_ids": [[...], ...]}')
    p.add_argument("--out", help="safetensors file for fwdbench check --expect")
    p.add_argument("--jobs", help='instead of --model/--ids/--out: a JSON list of {"model", "ids", "out"}')
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--device", default="cpu", help="torch device of --engine hf (cpu, cuda)")
    args = p.parse_args(argv)
    single = (args.model, args.ids, args.out)
    if (args.jobs is None) == (None in single) or (args.jobs is not None and any(single)):
        p.error("pass either --model, --ids and --out, or --jobs alone")
    try:
        jobs = read_jobs(args.jobs) if args.jobs else [dict(zip(("model", "ids", "out"), single))]
        for job in jobs:
            line = reference(args.engine, job["model"], job["ids"], job["out"], args.dtype, args.device)
            print(json.dumps(line), flush=True)
    except RefError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
