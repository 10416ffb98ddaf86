"""bench/grouped_fp8_gemm.py's pure-Python parts, on the CPU: the masked setups, the check of
an output's valid rows and of the rows past each count, which runs are timed and which config
is reported, the table row."""
import importlib
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
bench = importlib.import_module("grouped_fp8_gemm")


def test_the_masked_setups_are_the_issues():
    assert sorted({(g, e) for g, e, _, _ in bench.MASKED_SETUPS}) == [(1, 1024), (2, 512),
                                                                     (4, 256)]
    assert {(n, k) for *_, n, k in bench.MASKED_SETUPS} == {(4096, 7168), (7168, 2048)}
    assert bench.M_MAX == 4096


def test_masked_outputs_are_checked_on_valid_rows_and_past_the_counts():
    counts = [3, 0, 5]
    ref = torch.randn(3, 8, 4, dtype=torch.float64)
    out = torch.full((3, 8, 4), float("nan"))
    for g, c in enumerate(counts):
        out[g, :c] = ref[g, :c]
    assert bench.masked_diff(out, ref, counts) < 1e-12
    assert bench.rows_past_counts_untouched(out, counts)
    out[2, 6] = 0.0
    assert not bench.rows_past_counts_untouched(out, counts)
    out[0, 1] = -ref[0, 1]
    assert bench.masked_diff(out, ref, counts) > 1e-3


def test_a_table_row_gives_ratios_only_where_both_were_timed():
    row = bench._table_row("1 x ~1024", 2e12, ("BM=128", 1.0), 2.0, None)
    assert row == ["1 x ~1024", 2000.0, "BM=128", 1000.0, "-", "2.00x", "-"]
    assert bench._table_row("x", 2e12, None, 2.0, 4.0)[1:3] == ["-", "no correct config"]



def test_only_right_runs_are_timed_together(monkeypatch):
    timed = []
    monkeypatch.setattr(bench.common, "timed_in_rounds",
                        lambda runs, iters: timed.append(sorted(runs)) or {n: 2.0 for n in runs})
    runs = {"BM=128": lambda: None, "BM=64": lambda: None, "deepgemm": lambda: None}
    out = bench.timed_if_right(runs, {"BM=128": 1e-4, "BM=64": 0.5, "deepgemm": 2e-4},
                               flops=4e12, iters=30)
    assert timed == [["BM=128", "deepgemm"]]
    assert out["BM=128"] == {"ms": 2.0, "tflops": 2000.0, "calc_diff": 1e-4}
    assert "ms" not in out["BM=64"] and "not timed" in out["BM=64"]["error"]


def test_the_best_config_is_the_fastest_right_one_that_left_its_rows_alone():
    configs = {"a": {"ms": 1.0, "untouched": False}, "b": {"ms": 3.0, "untouched": True},
               "c": {"ms": 2.0, "untouched": True}, "d": {"error": "wrong", "untouched": True}}
    assert bench._best(configs, "untouched") == ("c", 2.0)
    assert bench._best({"a": configs["a"]}, "untouched") is None
