"""reference_logits.py's own checks: ids and jobs validation, the SGLang message.

The cross-check itself (export -> HF / references -> `fwdbench check` for every fixture
config) is tests/hf_crosscheck.rs, which also runs this file through the ./.pyref venv:

    .pyref/bin/python -m unittest discover -s python/reference -p 'test_*.py'
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import reference_logits as rl  # noqa: E402


class NoTorch(unittest.TestCase):
    def write(self, d, text, name="ids.json"):
        path = os.path.join(d, name)
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

    def test_jobs_are_validated_and_exclude_single_flags(self):
        with tempfile.TemporaryDirectory() as d:
            for bad in ["[]", '[{"model": "m", "ids": "i"}]', '{"model": "m"}', "nope"]:
                with self.assertRaises(rl.RefError) as e:
                    rl.read_jobs(self.write(d, bad))
                self.assertIn("--jobs", str(e.exception))
            jobs = self.write(d, '[{"model": "m", "ids": "i", "out": "o"}]', "jobs.json")
            self.assertEqual(rl.read_jobs(jobs), [{"model": "m", "ids": "i", "out": "o"}])
            for argv in [["--jobs", jobs, "--model", "m"], ["--model", "m", "--ids", "i"], []]:
                with self.assertRaises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
                    rl.main(["--engine", "hf", *argv])
            # A job whose folder has no config.json stops the run with one sentence naming it.
            ids = self.write(d, '{"input_ids": [[1, 2]]}')
            missing = self.write(d, json.dumps([{"model": os.path.join(d, "none"), "ids": ids, "out": "o"}]), "jobs.json")
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                self.assertEqual(rl.main(["--engine", "hf", "--jobs", missing]), 2)
            self.assertIn("none: cannot read config.json", err.getvalue())


if __name__ == "__main__":
    unittest.main()
