"""`persistent(sms = S)`: a persistent kernel's SM budget (issue 19), so a GEMM can leave SMs
to communication running beside it. The schedule sizes the grid by S, the interpreter gives
the same result for any S, and the launcher launches S CTAs, refusing an S the device lacks."""
import os

import pytest
import torch

from commdsl.compiler import compile_source
from commdsl.diagnostics import CompileError, LaunchError
from commdsl.dims import BinOp, Const, SmCount
from commdsl.interpreter import run
from commdsl.ir_parser import parse_kernel
from commdsl.ir_printer import print_kernel
from commdsl.passes.manager import PASS_ORDER, get_pass
from commdsl.runtime import driver
from commdsl.runtime.launcher import Launcher
from commdsl.target import get_target

FP8_GEMM = os.path.join(os.path.dirname(__file__), "..", "examples", "fp8_gemm.cdsl")
SOURCE = open(FP8_GEMM).read()
CLAUSE = "persistent(raster = GROUP, cluster = CLUSTER)"
TINY = dict(BM=64, BN=64, STAGES=3)


def budgeted(sms: str) -> str:
    return SOURCE.replace(CLAUSE, f"persistent(raster = GROUP, cluster = CLUSTER, sms = {sms})")


def lowered(source: str, **constants):
    kir = compile_source(source, FP8_GEMM, constants=constants, emit="ir").ir[0]
    for name in PASS_ORDER:
        kir = get_pass(name)(kir, get_target("sm_90a"))
    return kir


def test_the_schedule_sizes_the_grid_by_the_budget():
    kir = lowered(budgeted("20"))
    assert kir.grid[0].op == "min" and kir.grid[0].rhs == SmCount(20)
    text = print_kernel(kir)
    assert "sms(20)" in text
    assert parse_kernel(text).grid == kir.grid          # the IR text reads back
    clusters = lowered(budgeted("20"), CLUSTER=2).grid[0]
    assert clusters.evaluate({"M": 4096, "N": 4096}) == 20
    free = str(lowered(SOURCE).grid[0])                 # no budget: every SM, balanced
    assert "sms" in free and "sms(" not in free


def test_a_tune_name_sets_the_budget():
    source = budgeted("SMS").replace("  tune PROMOTE", "  tune SMS = 112 in [100, 112]\n"
                                                      "  tune PROMOTE")
    assert lowered(source, SMS=100).grid[0].rhs == SmCount(100)


@pytest.mark.parametrize("sms,constants,message", [
    ("0", {}, "sms must be a positive compile-time integer"),
    ("M", {}, "sms must be a positive compile-time integer"),
    ("3", dict(CLUSTER=2), "does not split into clusters of 2"),
])
def test_bad_budgets_get_errors_with_a_span(sms, constants, message):
    with pytest.raises(CompileError) as e:
        compile_source(budgeted(sms), FP8_GEMM, constants=constants, emit="ir")
    assert message in e.value.message and e.value.span is not None


def _operands(m, n, k):
    from test_fp8_gemm import mn_major, random_operands
    a, sa, b, sb = random_operands(m, n, k, seed=7)
    return dict(a=a, sa=mn_major(sa), b=b, sb=sb)


@pytest.mark.parametrize("cluster,budgets", [(1, ["1", "2", "3"]), (2, ["2", "4"])])
def test_the_interpreter_gives_one_result_for_every_budget(cluster, budgets):
    m, n, k = 130, 200, 256                   # 3 x 4 tiles, ragged in both
    tensors, sizes = _operands(m, n, k), dict(M=m, N=n, K=k)
    results = []
    for sms in [None, *budgets]:
        kir = lowered(SOURCE if sms is None else budgeted(sms), CLUSTER=cluster, **TINY)
        grid = kir.grid[0].evaluate({**sizes, "@sms": 5})
        # no budget: 12 tiles (6 pairs) take 3 waves of 5 SMs, or of 4 CTAs (2 pairs)
        assert grid == (4 if sms is None else int(sms))
        d = torch.full((m, n), float("nan"), dtype=torch.bfloat16)
        run(kir, {**tensors, "d": d}, sizes, sms=5)
        results.append(d.view(torch.int16))
    assert all(torch.equal(results[0], r) for r in results[1:])


def _launcher(source: str) -> Launcher:
    spec = compile_source(source, FP8_GEMM, constants=TINY).specs[0]
    return Launcher(spec)


def test_the_launch_grid_is_the_budget(monkeypatch):
    monkeypatch.setattr(driver, "sm_count", lambda device: 132)
    sizes, source = dict(M=4096, N=4096, K=1024), {"M": "a", "N": "b", "K": "a"}
    cuda = torch.device("cuda", 0)
    assert _launcher(budgeted("112"))._grid(sizes, source, cuda) == (112, 1, 1)
    # no budget: 1024 tiles take 8 waves of 132 SMs, or of 128 CTAs (passes/schedule.py)
    assert _launcher(SOURCE)._grid(sizes, source, cuda) == (128, 1, 1)
    small = dict(sizes, M=64, N=64)                     # one tile: one CTA whatever the budget
    assert _launcher(budgeted("112"))._grid(small, source, cuda) == (1, 1, 1)


def test_a_budget_past_the_devices_sms_is_a_launch_error(monkeypatch):
    monkeypatch.setattr(driver, "sm_count", lambda device: 132)
    with pytest.raises(LaunchError) as e:
        _launcher(budgeted("140"))._grid(dict(M=4096, N=4096, K=1024), {}, torch.device("cuda", 0))
    assert "sms = 140" in str(e.value) and "132 SMs" in str(e.value)


def test_the_budget_survives_the_compile_cache_encoding():
    from commdsl.runtime.codec import decode, encode
    grid = (BinOp("min", Const(4), SmCount(20)),)
    assert decode(encode(grid)) == grid
