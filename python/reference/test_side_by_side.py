"""side_by_side.py's join: a MoE row's grouped GEMM launches are summed from calls_ms (the
routing, permute and combine left out), other rows get no second line.
tests/hf_crosscheck.rs runs this file with the other python/reference tests."""

import contextlib
import io
import os
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import side_by_side as sbs  # noqa: E402


class GroupedGemmOnly(unittest.TestCase):
    def test_sums_the_gate_up_and_down_launches_only(self):
        row = {"family": "moe", "calls_ms": "moe_align=0.01;moe_permute=0.1;moe_wgmma_gate_up_m128=1.2;"
                                             "moe_wgmma_down_m128=0.6;moe_combine=0.09"}
        self.assertAlmostEqual(sbs.grouped_gemm_ms(row), 1.8)
        fp8 = {"family": "moe", "calls_ms": "moe_fp8_quant_permute=0.2;moe_fp8_gate_up_m128_pair=1.0;moe_fp8_down_m64=0.5"}
        self.assertAlmostEqual(sbs.grouped_gemm_ms(fp8), 1.5)

    def test_rows_without_gemm_launches_have_none(self):
        self.assertIsNone(sbs.grouped_gemm_ms({"family": "attention", "calls_ms": "decode_tma_d128=0.1"}))
        self.assertIsNone(sbs.grouped_gemm_ms({"family": "moe", "calls_ms": ""}))
        self.assertIsNone(sbs.grouped_gemm_ms({"family": "moe"}))

    def test_the_table_prints_the_gemm_line_with_its_ratio(self):
        with tempfile.TemporaryDirectory() as d:
            seed, peers = os.path.join(d, "seed.csv"), os.path.join(d, "peers.csv")
            with open(seed, "w") as f:
                f.write("case,check,median_ms,tflops,gbs,family,calls_ms\n"
                        "m,pass,2.0,1,1,moe,moe_permute=0.2;moe_wgmma_gate_up_m128=1.2;moe_wgmma_down_m128=0.6\n")
            with open(peers, "w") as f:
                f.write("case,peer,median_ms\nm,grouped_mm,1.8\n")
            out = io.StringIO()
            sys.argv = ["side_by_side.py", "--seed-csv", seed, "--peers-csv", peers]
            with contextlib.redirect_stdout(out):
                sbs.main()
        lines = out.getvalue().splitlines()
        self.assertIn("grouped_mm: 1.8000 (0.90x)", lines[1])
        self.assertIn("grouped GEMMs only", lines[2])
        self.assertIn("grouped_mm: 1.00x", lines[2])


if __name__ == "__main__":
    unittest.main()
