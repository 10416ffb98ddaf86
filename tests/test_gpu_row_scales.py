"""On a GPU: tests/fp8_gemm_row_scales.cdsl (the A scales a `via tma` row of DeepGEMM's
transposed, TMA-aligned layout) against float64, outputs poisoned, ragged M included."""
from __future__ import annotations

import pytest
import torch

import commdsl
from test_fp8_gemm import quantize_a, quantize_b, reference, relative_error
from test_row_scales import ROW_SCALES, transposed_scales

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("config", [{}, dict(CLUSTER=2), dict(BM=64, BN=64),
                                    dict(BM=256, STAGES=3)], ids=str)
@pytest.mark.parametrize("m,n,k", [(4096, 7168, 2048), (130, 2112, 7168), (1, 256, 512),
                                   (4097, 1000, 1024)])
def test_matches_float64_reference(m, n, k, config):
    a, sa = quantize_a(torch.randn(m, k, device="cuda"))
    b, sb = quantize_b(torch.randn(n, k, device="cuda"))
    d = torch.full((m, n), float("nan"), dtype=torch.bfloat16, device="cuda")
    commdsl.load(ROW_SCALES, **config)(a, transposed_scales(sa), b, sb, d=d)
    assert not d.isnan().any()
    assert relative_error(d, reference(a, sa, b, sb)) <= 2e-3
