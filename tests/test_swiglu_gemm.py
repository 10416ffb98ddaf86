"""examples/swiglu_gemm.cdsl: an mma whose A the kernel computes in registers (wgmma's register
form), in the PTX, in the interpreter against float64, and the located errors around it. The
numerics on a GPU are in test_gpu_swiglu_gemm.py."""
from __future__ import annotations

import os
import re

import pytest
import torch

from commdsl.compiler import compile_file, compile_source
from commdsl.diagnostics import CompileError
from commdsl.interpreter import run
from commdsl.runtime.ptxas import assemble

SWIGLU_GEMM = os.path.join(os.path.dirname(__file__), "..", "examples", "swiglu_gemm.cdsl")
SOURCE = open(SWIGLU_GEMM).read()


def reference(g, u, w):
    g, u, w = g.double(), u.double(), w.double()
    h = (g * torch.sigmoid(g) * u).to(torch.bfloat16).double()   # rounded as the kernel does
    return h @ w.T, h.abs() @ w.abs().T


@pytest.mark.parametrize("config", [{}, dict(BM=64, BN=64), dict(STAGES=6)])
def test_a_goes_to_wgmma_from_registers(config):
    ptx = compile_file(SWIGLU_GEMM, constants=config).ptx
    bn = config.get("BN", 128)
    # the register form: A as four .b32 registers, no A major, B K-major
    assert re.search(rf"wgmma\.mma_async\.sync\.aligned\.m64n{bn}k16\.f32\.bf16\.bf16 "
                     r"\{[^}]+\}, \{%r\d+, %r\d+, %r\d+, %r\d+\}, %rd\d+, 1, 1, 1, 0;", ptx)
    assert "ld.global.b32" in ptx and "ld.global.b16" not in ptx     # g and u, pairs at a time
    report = assemble(ptx).report
    assert report.spill_stores_bytes == 0 and report.spill_loads_bytes == 0


@pytest.mark.parametrize("m,n,k", [(70, 136, 200), (128, 64, 64)])
def test_interpreter_matches_float64(m, n, k):
    gen = torch.Generator().manual_seed(m + n + k)
    g, u = (torch.randn(m, k, generator=gen).to(torch.bfloat16) for _ in range(2))
    w = torch.randn(n, k, generator=gen).to(torch.bfloat16)
    g[1, 2], u[3, 4] = 30.0, -50.0                         # outliers
    d = torch.full((m, n), float("nan"), dtype=torch.bfloat16)
    kir = compile_file(SWIGLU_GEMM, emit="ir", constants=dict(BM=64, BN=64)).ir[0]
    run(kir, dict(g=g, u=u, w=w, d=d), dict(M=m, H=n, I=k), sms=3)
    ref, size = reference(g, u, w)
    # h's bf16 may round the other way where silu's f32 differs from float64's by an ulp
    slack = 2 ** -8 * ref.abs() + 2 ** -7 * size
    assert not d.isnan().any()
    assert ((d.double() - ref).abs() <= slack).all()


def error(source: str) -> str:
    with pytest.raises(CompileError) as e:
        compile_source(source, "swiglu_gemm.cdsl")
    return str(e.value)


def test_an_fp8_a_from_registers_is_not_supported_yet():
    msg = error(SOURCE.replace("let h = cast<bf16>(", "let h = cast<e4m3>(")
                .replace("w: bf16[H, I]", "w: e4m3[H, I]").replace("step 64", "step 128")
                .replace("k : +64]", "k : +128]"))
    assert re.search(r"swiglu_gemm\.cdsl:\d+:\d+: error: an mma operand a computed in "
                     r"registers is lowered for bf16 and f16; e4m3 from registers", msg)
    assert "help: cast it to bf16" in msg


def test_an_a_tile_too_wide_for_the_registers_is_located():
    """A from registers holds its rows beside the accumulator: BN = 256 does not fit."""
    msg = error(SOURCE.replace("tune BN = 128 in [64, 128]", "tune BN = 256 in [64, 128, 256]"))
    assert "an accumulator of BN = 256 need about 184 registers per thread; 2 consumer " \
           "warpgroups get 168" in msg


def test_a_transposed_a_is_located():
    msg = error(SOURCE.replace("mma(h, tw.T, acc)", "mma(h.T, tw.T, acc)"))
    assert re.search(r"swiglu_gemm\.cdsl:\d+:\d+: error: mma reads A K-major \(\[M, K\]\): "
                     r"wgmma's register form has no transposed A", msg)
    assert "help: load or compute a as [M, K]" in msg


def test_b_from_registers_is_located():
    msg = error(SOURCE.replace("let tw = load w[n0 : +BN, k : +64] via tma",
                               "let tw = load w[n0 : +BN, k : +64]")
                .replace("pipeline(STAGES)", "pipeline(2)"))
    assert "mma's operand b must be loaded 'via tma': wgmma reads B from shared memory" in msg
