"""bench/precision.py's kernels, on the CPU: fp8_gemm rewritten to an f32 output and to an
unpromoted product compile, and the interpreter's unpromoted product equals the promoted one
with unit scales (they differ only in where the GPU's sums are rounded)."""
import importlib
import os
import sys

import torch

from commdsl.compiler import compile_source
from commdsl.interpreter import run

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
precision = importlib.import_module("precision")
SOURCE = precision.f32_output(open(precision.FP8_GEMM).read())


def test_the_variants_compile_to_wgmma_with_and_without_promotion():
    promoted = compile_source(SOURCE, "p.cdsl", constants=dict(BM=64, BN=64, PROMOTE=32)).ptx
    plain = compile_source(precision.unpromoted(SOURCE), "u.cdsl", constants=dict(BM=64, BN=64)).ptx
    assert "wgmma.mma_async" in promoted and "wgmma.mma_async" in plain
    assert promoted.count("fma.rn.f32") > plain.count("fma.rn.f32")   # the promotion's FFMAs


def test_unit_scales_make_both_the_same_product_on_the_cpu():
    m, n, k = 64, 64, 256
    g = torch.Generator().manual_seed(0)
    a = (torch.randn(m, k, generator=g) * 4).to(torch.float8_e4m3fn)
    b = (torch.randn(n, k, generator=g) * 4).to(torch.float8_e4m3fn)
    ones = dict(sa=torch.ones(k // 128, m), sb=torch.ones(1, k // 128))     # sa: mn_major
    outs = []
    for text in (SOURCE, precision.unpromoted(SOURCE)):
        kir = compile_source(text, "x.cdsl", emit="ir", constants=dict(BM=64, BN=64)).ir[0]
        d = torch.full((m, n), float("nan"))
        run(kir, dict(a=a, b=b, d=d, **ones), dict(M=m, N=n, K=k), sms=2)
        outs.append(d)
    ref = (a.double() @ b.double().T).float()
    atol = 1e-5 * ref.abs().max().item()          # f32 sums of products of e4m3 values
    for d in outs:
        assert torch.allclose(d, ref, rtol=1e-5, atol=atol)
