"""export -> HF transformers / references -> `fwdbench check`, for every fixture config.

Needs torch + transformers (the reference venv) and a built fwdbench binary, so it runs on
the GPU box, not in CI (the CI machine has no torch):

    FWDBENCH=target/release/fwdbench python python/reference/test_reference_logits.py

For each family: `fwdbench export` of the fixture config (random weights, bf16), HF's
loader must load the folder with no missing, unexpected or mismatched keys (references:
strict load), HF / the reference in fp32 on the CPU writes expected logits, and
`fwdbench check` on the CPU must PASS against them. The cases that need no torch (ids
validation, the SGLang message) also run alone: `python ... NoTorch`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import reference_logits as rl  # noqa: E402

FIXTURES = ["gpt2", "qwen2", "qwen3", "qwen2_moe", "qwen3_moe", "deepseek_v3", "deepseek_v2_lite_style",
            "grok1", "grok1_hpcai", "sigma_v2", "sigma_v1"]


class NoTorch(unittest.TestCase):
    def write(self, d, text):
        path = os.path.join(d, "ids.json")
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_ids_are_validated_with_one_sentence(self):
        with tempfile.TemporaryDirectory() as d:
            self.assertEqual(rl.read_ids(self.write(d, '{"input_ids": [[1, 2], [3, 4]]}')), [[1, 2], [3, 4]])
            for bad, needle in [('{"input_ids": [[1, 2], [3]]}', "same length"), ('{"input_ids": [[-1]]}', "non-negative"),
                                ('{"ids": []}', "cannot read"), ("not json", "cannot read"), ('{"input_ids": []}', "non-empty")]:
                with self.assertRaises(rl.RefError) as e:
                    rl.read_ids(self.write(d, bad))
                self.assertIn(needle, str(e.exception))
            with self.assertRaises(rl.RefError) as e:
                rl.check_vocab([[5, 300]], 256, "ids.json")
            self.assertIn("300", str(e.exception))

    def test_sglang_engine_says_it_needs_sglang(self):
        try:
            import sglang  # noqa: F401
        except ImportError:
            with self.assertRaises(rl.RefError) as e:
                rl.sglang_logprobs("dir", {"vocab_size": 8}, [[1]], "fp32")
            self.assertIn("needs SGLang", str(e.exception))


class ExportThroughHf(unittest.TestCase):
    def test_every_fixture_passes_fwdbench_check(self):
        binary = os.environ.get("FWDBENCH", os.path.join(ROOT, "target", "release", "fwdbench"))
        failures = []
        for name in FIXTURES:
            fixture = os.path.join(ROOT, "tests", "fixtures", name)
            with tempfile.TemporaryDirectory() as d:
                model_dir = os.path.join(d, "models", name)
                os.makedirs(model_dir)
                shutil.copy(os.path.join(fixture, "config.json"), os.path.join(model_dir, "config_fx.json"))
                out = os.path.join(d, "export")
                subprocess.run([binary, "export", "--model", name, "--mconf", "fx", "--model-dir",
                                os.path.join(d, "models"), "--out", out, "--seed", "3"], check=True)
                ids = os.path.join(fixture, "input.json")
                expect = os.path.join(d, "expect.safetensors")
                self.assertEqual(rl.main(["--engine", "hf", "--model", out, "--ids", ids, "--out", expect]), 0)
                check = subprocess.run([binary, "check", "--config", os.path.join(out, "config.json"), "--weights", out,
                                        "--input", ids, "--expect", expect], capture_output=True, text=True)
                print(name, check.stdout.strip(), check.stderr.strip())
                if check.returncode != 0:
                    failures.append(name)
        self.assertEqual(failures, [])


if __name__ == "__main__":
    unittest.main()
