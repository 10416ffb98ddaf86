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
