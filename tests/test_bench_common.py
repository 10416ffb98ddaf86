"""bench/common.py's helpers that the GEMM benches share, on the CPU."""
import argparse
import importlib
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
common = importlib.import_module("common")
ACT_QUANT = os.path.join(os.path.dirname(__file__), "..", "examples", "act_quant.cdsl")


def test_each_config_compiles_once():
    kernels = common.ConfigKernels(ACT_QUANT)
    first = kernels({"ROWS": 8, "WARPS": 4})
    assert kernels({"WARPS": 4, "ROWS": 8}) is first          # the order of keys is no matter
    assert kernels({"ROWS": 16, "WARPS": 4}) is not first
    assert common.config_name({"ROWS": 8, "WARPS": 4}) == "ROWS=8,WARPS=4"


def test_gemm_args_parse_shapes_or_take_the_default(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["bench", "--shapes", "128,256,512", "--iters", "7"])
    args = common.gemm_args(argparse.ArgumentParser(), [(1, 2, 3)])
    assert args.shapes == [(128, 256, 512)] and args.iters == 7
    monkeypatch.setattr(sys, "argv", ["bench"])
    assert common.gemm_args(argparse.ArgumentParser(), [(1, 2, 3)]).shapes == [(1, 2, 3)]



def test_rounds_start_from_another_run_each_time(monkeypatch):
    timed = []

    def clock_slowing_over_a_round(run, iters):      # the k-th run of a round takes k ms
        timed.append(run())
        return float((len(timed) - 1) % 3 + 1)
    monkeypatch.setattr(common, "time_flushed_ms", clock_slowing_over_a_round)
    ms = common.timed_in_rounds({n: (lambda n=n: n) for n in "abc"}, iters=30, rounds=3)
    assert timed == list("abc" "bca" "cab")
    # Each run held each slot once, so the slow last slot lands on none alone.
    assert ms == {"a": 2.0, "b": 2.0, "c": 2.0}


def test_a_round_times_its_share_of_the_calls(monkeypatch):
    shares = []
    monkeypatch.setattr(common, "time_flushed_ms",
                        lambda run, iters: shares.append(iters) or 1.0)
    assert common.timed_in_rounds({"a": lambda: None}, iters=30, rounds=3) == {"a": 1.0}
    assert shares == [10, 10, 10]
    assert common.timed_in_rounds({}, iters=30) == {}
