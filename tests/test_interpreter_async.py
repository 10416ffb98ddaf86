"""The interpreter's meaning of the IR after the passes: a pipeline whose barriers or stages
are wrong gives a deadlock error or a race error (never a hang, never the right answer by
luck), and FMA rounds once."""
from __future__ import annotations

import os

import pytest
import torch

from commdsl.compiler import compile_source
from commdsl.cpu_numerics import fma_f32
from commdsl.interpreter import run
from commdsl.interpreter_async import InterpreterError
from commdsl.passes import PassManager
from commdsl.target import get_target

FP8_GEMM = os.path.join(os.path.dirname(__file__), "..", "examples", "fp8_gemm.cdsl")
M, N, K = 130, 128, 768         # 6 K steps on a 5-stage ring, promoted one by one


def _gemm(**constants):
    """fp8_gemm's IR after every pass, and a function that runs it on fixed operands."""
    from test_fp8_gemm import mn_major, random_operands
    kir = compile_source(open(FP8_GEMM).read(), FP8_GEMM, constants=constants, emit="ir",
                         divisible=dict(M=False, N=True, K=True)).ir[0]
    kir = PassManager(get_target("sm_90a")).run(kir)
    a, sa, b, sb = random_operands(M, N, K, seed=5)

    def execute():
        d = torch.full((M, N), float("nan"), dtype=torch.bfloat16)
        run(kir, dict(a=a, sa=mn_major(sa), b=b, sb=sb, d=d), dict(M=M, N=N, K=K), sms=2)
        return d
    return kir, execute


def _consumer_ops(kir, name):
    ws = next(op for op in kir.walk() if op.name == "warp_specialize")
    return [op for op in ws.blocks[1].walk() if op.name == name]


def test_the_pipeline_runs_clean():
    _, execute = _gemm()
    assert not execute().isnan().any()


def test_one_arrival_too_many_expected_is_a_deadlock():
    kir, execute = _gemm()
    empty = [op for op in kir.walk() if op.name == "mbarrier_alloc"][1]
    empty.attrs["arrivals"] += 1
    with pytest.raises(InterpreterError, match=r"deadlock at mbarrier_wait.*producer.*consumers"):
        execute()


def test_a_consumer_that_skips_its_wait_reads_a_copy_in_flight():
    kir, execute = _gemm()
    wait = _consumer_ops(kir, "mbarrier_wait")[0]
    block = next(b for op in kir.walk() for b in op.blocks if wait in b.ops)
    block.ops.remove(wait)
    # Its first read of the stage is the row of A's scales.
    with pytest.raises(InterpreterError, match="race at smem_read"):
        execute()


def test_an_mma_on_the_wrong_stage_gives_a_wrong_result():
    kir, execute = _gemm()
    good = execute()
    mma = _consumer_ops(kir, "mma_promote")[0]
    mma.operands[2] = _consumer_ops(kir, "mbarrier_wait")[0].operands[2]   # stage := parity
    assert not torch.equal(execute().view(torch.int16), good.view(torch.int16))


def test_a_cluster_runs_clean_and_needs_its_partners_arrivals():
    kir, execute = _gemm(CLUSTER=2, BN=64)
    # A's tile is shared by the pair; B's and the row of A's scales are each CTA's own.
    assert [op.attrs["multicast"] for op in kir.walk() if op.name == "tma_load"] == [2, 1, 1]
    assert not execute().isnan().any()
    for arrive in _consumer_ops(kir, "mbarrier_arrive"):
        arrive.attrs["cluster"] = 1              # release only this CTA's copy of the stage
    with pytest.raises(InterpreterError, match=r"deadlock at mbarrier_wait.*CTA \(1,\) producer"):
        execute()


def test_fma_rounds_once():
    a = torch.tensor(1 + 2 ** -12, dtype=torch.float32)
    exact = 2 ** -11 + 2 ** -24                  # a * a - 1, representable in f32
    assert float(fma_f32(a, a, torch.tensor(-1.0))) == exact
    assert float(a * a - 1) != exact             # the product alone rounds it away


def test_fma_is_not_double_rounded():
    """a * b + c lies 2^-70 below the midpoint of two f32; rounded to f64 first it would be
    the midpoint itself, and then round to even, up."""
    a = torch.tensor(2 ** -24 * (1 + 2 ** -23), dtype=torch.float32)
    b = torch.tensor(1 - 2 ** -23, dtype=torch.float32)
    c = torch.tensor(1 + 2 ** -23, dtype=torch.float32)      # a * b = 2^-24 - 2^-70
    assert float((a.double() * b.double() + c.double()).float()) == 1 + 2 ** -22
    assert float(fma_f32(a, b, c)) == 1 + 2 ** -23


def test_every_op_but_yield_has_a_cpu_meaning():
    from commdsl.ops import OPS
    assert [name for name, d in OPS.items() if d.interpret is None] == ["yield"]


def test_an_op_without_a_meaning_is_a_clear_error(monkeypatch):
    from dataclasses import replace
    from commdsl.ops import OPS, IRVerifyError
    copy_nc = os.path.join(os.path.dirname(__file__), "..", "examples", "copy_nc.cdsl")
    kir = compile_source(open(copy_nc).read(), copy_nc, emit="ir").ir[0]
    tensors = dict(x=torch.zeros(8, dtype=torch.bfloat16), y=torch.zeros(8, dtype=torch.bfloat16))
    monkeypatch.setitem(OPS, "load", replace(OPS["load"], interpret=None))
    with pytest.raises(InterpreterError, match="op 'load' has no CPU meaning"):
        run(kir, tensors, dict(N=8))
    next(op for op in kir.walk() if op.name == "load").name = "frobnicate"
    with pytest.raises(IRVerifyError, match="unknown op 'frobnicate'"):
        run(kir, tensors, dict(N=8))


def test_a_tensor_of_another_shape_than_its_parameter_is_refused():
    """A transposed scale tensor passed row by row: refused, not read out of place."""
    from test_fp8_gemm import random_operands
    kir, _ = _gemm()
    a, sa, b, sb = random_operands(M, N, K, seed=5)
    d = torch.full((M, N), float("nan"), dtype=torch.bfloat16)
    with pytest.raises(ValueError, match=r"tensor 'sa' has shape \(%d, %d\)" % (M, K // 128)):
        run(kir, dict(a=a, sa=sa, b=b, sb=sb, d=d), dict(M=M, N=N, K=K), sms=2)
