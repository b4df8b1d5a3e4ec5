"""hf_latency.py, hf_compile.py and hf_peer_table.py on the CPU: arguments, statistics, CSV
rows, a tiny model end to end, and the table's join. tests/hf_crosscheck.rs runs this file.

The compiled decode's test (the static-cache step gives eager's logits, every step sees `seq`
cached tokens) compiles on the CPU (~40 s on two cores; inductor needs a C++ compiler);
FWDBENCH_TEST_COMPILE=0 skips it. The compiled prefill takes minutes here and is left to the GPU
(scripts/hf-peer.sh).

    .pyref/bin/python python/reference/test_hf_latency.py Compiled
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(os.path.dirname(os.path.dirname(HERE)), "tests", "fixtures")
sys.path.insert(0, HERE)

import torch  # noqa: E402

import hf_compile as hc  # noqa: E402
import hf_latency as hl  # noqa: E402
import hf_peer_table as pt  # noqa: E402


def config(name: str) -> str:
    return os.path.join(FIXTURES, name, "config.json")


def run_main(argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = hl.main(argv)
    return code, out.getvalue(), err.getvalue()


class Arguments(unittest.TestCase):
    def parse(self, *extra):
        return hl.parse_args(["--config", "c.json", *extra])

    def refused(self, *extra):
        with self.assertRaises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
            self.parse(*extra)

    def test_batches_are_comma_lists_and_lengths_default_to_seq(self):
        a = self.parse("--prefill-bsz", "32", "--decode-bsz", "8,32", "--seq", "2048", "--prefill-seq", "8192")
        self.assertEqual((a.prefill_bsz, a.decode_bsz, a.prefill_seq, a.decode_seq), ([32], [8, 32], 8192, 2048))
        self.assertEqual(self.parse("--bsz", "2,3").decode_bsz, [2, 3])

    def test_compile_implies_sdpa_and_refuses_other_attention(self):
        self.assertEqual(self.parse().attn_impl, "eager")
        a = self.parse("--compile")
        self.assertEqual((a.attn_impl, a.sdpa_order), ("sdpa", ["cudnn", "flash", "efficient", "math"]))
        self.refused("--compile", "--attn-impl", "eager")

    def test_bad_values_are_refused(self):
        for bad in [("--decode-bsz", "8,0"), ("--prefill-bsz", "x"), ("--sdpa-order", "cudnn,fa3"),
                    ("--sdpa-order", "flash,flash"), ("--decode-seq", "0"), ("--phases", "train")]:
            self.refused(*bad)


class Statistics(unittest.TestCase):
    def test_percentiles_interpolate_like_fwdbench(self):
        # report::stats: position q * (n - 1), linear between the neighbours.
        s = hl.summary([5.0, 1.0, 4.0, 2.0, 3.0])
        self.assertEqual(s, {"latency_ms": 3.0, "p10_ms": 1.4, "p90_ms": 4.6, "min_ms": 1.0})
        self.assertEqual(hl.summary([2.0])["p90_ms"], 2.0)

    def test_timed_runs_before_each_iteration(self):
        order = []
        samples = hl.timed(lambda: order.append("fn"), torch.device("cpu"), 1, 2, True, lambda: order.append("before"))
        self.assertEqual(len(samples), 2)
        self.assertEqual(order, ["before", "fn"] * 3)


class Csv(unittest.TestCase):
    def test_rows_append_under_one_header_and_other_files_are_refused(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "peer.csv")
            hl.append_csv(path, {"model": "m", "phase": "decode", "bsz": 8})
            hl.append_csv(path, {"model": "m", "phase": "prefill", "bsz": 1})
            with open(path) as f:
                lines = f.read().splitlines()
            self.assertEqual((lines[0], len(lines)), (",".join(hl.CSV_COLUMNS), 3))
            other = os.path.join(d, "other.csv")
            with open(other, "w") as f:
                f.write("a,b\n")
            with self.assertRaises(hl.LatencyError) as e:
                hl.append_csv(other, {})
            self.assertIn("--csv", str(e.exception))


class TinyModel(unittest.TestCase):
    def test_eager_sdpa_rows_name_the_backend(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "peer.csv")
            code, out, err = run_main(["--config", config("qwen3"), "--device", "cpu", "--seq", "8", "--bsz", "1,2",
                                       "--iters", "2", "--warmup", "0", "--attn-impl", "sdpa", "--csv", path, "--name", "q"])
            self.assertEqual(code, 0, err)
            rows = [json.loads(line) for line in out.splitlines()]
            self.assertEqual([(r["phase"], r["bsz"]) for r in rows], [("prefill", 1), ("prefill", 2), ("decode", 1), ("decode", 2)])
            # On the CPU, SDPA has only its flash (CPU) and math kernels.
            self.assertTrue(all(r["sdpa_backend"] in ("flash", "math") and r["mode"] == "eager" for r in rows), rows)
            with open(path) as f:
                self.assertEqual(len(f.read().splitlines()), 5)

    def test_compile_refuses_the_references_and_positions_are_checked(self):
        code, _, err = run_main(["--config", config("grok1"), "--device", "cpu", "--compile"])
        self.assertEqual(code, 2)
        self.assertIn("drop --compile", err)
        # gpt2's fixture has 32 positions: a decode over 32 cached tokens needs 33.
        code, _, err = run_main(["--config", config("gpt2"), "--device", "cpu", "--phases", "decode", "--decode-seq", "32"])
        self.assertEqual(code, 2)
        self.assertIn("--decode-seq 32", err)


class PeerTable(unittest.TestCase):
    def test_rows_join_on_shape_and_a_missing_fwdbench_row_fails(self):
        ours = [{"model": "q", "phase": "decode", "bsz": "8", "seq_len": "2048", "latency_ms": "2.0", "method": "measured", "timing": "fwdbench"},
                {"model": "q", "phase": "prefill", "bsz": "8", "seq_len": "2048", "latency_ms": "9.0", "method": "measured", "timing": "fwdbench"}]
        peer = [{"model": "q", "phase": "decode", "bsz": "8", "seq": "2048", "latency_ms": "3.0", "mode": "eager"},
                {"model": "q", "phase": "decode", "bsz": "8", "seq": "2048", "latency_ms": "2.5", "mode": "compile",
                 "compile_s": "30", "cuda_graph": "yes", "sdpa_backend": "cudnn"}]
        table = pt.collect(peer, ours)
        self.assertEqual(list(table), [("q", "decode", 8, 2048)], "fwdbench-only shapes are left out")
        out, missing = pt.lines(table)
        self.assertEqual(missing, 0)
        self.assertIn("1.50x", out[1])
        self.assertIn("1.25x", out[1])
        peer.append({"model": "q", "phase": "decode", "bsz": "32", "seq": "2048", "latency_ms": "4.0", "mode": "eager"})
        self.assertEqual(pt.lines(pt.collect(peer, ours))[1], 1)


@unittest.skipIf(os.environ.get("FWDBENCH_TEST_COMPILE") == "0" or not (shutil.which("c++") or shutil.which("g++")),
                 "FWDBENCH_TEST_COMPILE=0, or no C++ compiler for inductor's CPU code")
class Compiled(unittest.TestCase):
    def test_static_cache_decode_matches_eager_and_keeps_seq_cached(self):
        args = hl.parse_args(["--config", config("qwen3"), "--device", "cpu", "--dtype", "fp32", "--compile", "--seq", "9"])
        with open(args.config) as f:
            runner = hl.Runner(json.load(f), args)
        prompt, step = runner.ids(2, 9, 0), runner.ids(2, 1, 1)
        with torch.no_grad():
            want = runner.model(input_ids=torch.cat([prompt, step], 1)).logits[:, -1]
            hc.fresh_compile_state()
            dec = hc.CompiledDecode(runner.model, prompt, step)
            for _ in range(2):  # the second step must see the same 9 cached tokens
                dec.reset()
                got = dec.forward(input_ids=step, past_key_values=dec.cache, use_cache=True).logits[:, -1]
                self.assertLess(float((got - want).norm() / want.norm()), 1e-5)
            self.assertEqual(int(dec.cache.layers[0].cumulative_length), 10)
            dec.reset()
            self.assertEqual(int(dec.cache.layers[0].cumulative_length), 9)


if __name__ == "__main__":
    unittest.main()
