"""examples/grouped_fp8_gemm.cdsl and grouped_fp8_gemm_masked.cdsl on a GPU: DeepGEMM's
calc_diff < 1e-3 on every group against a float64 product, padding rows and rows past a
group's count untouched (poisoned before, NaN after), ragged groups (a group smaller than a
tile, an empty one, a count that ends inside a tile or at M_max)."""
from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.gpu
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

import commdsl  # noqa: E402

from grouped_layout import (calc_diff, grouped_operands, grouped_reference,  # noqa: E402
                            masked_operands, masked_reference)
from test_fp8_gemm import mn_major  # noqa: E402

GROUPED = os.path.join(os.path.dirname(__file__), "..", "examples", "grouped_fp8_gemm.cdsl")
MASKED = os.path.join(os.path.dirname(__file__), "..", "examples", "grouped_fp8_gemm_masked.cdsl")


@pytest.mark.parametrize("config", [dict(), dict(BM=64, BN=64, STAGES=6), dict(CLUSTER=2)],
                         ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default")
@pytest.mark.parametrize("rows,n,k", [([1000, 37, 0, 2200], 4096, 7168), ([300, 128], 200, 384)])
def test_every_group_right_and_padding_untouched(config, rows, n, k):
    a, sa, b, sb, m_idx = grouped_operands(rows, n, k, seed=sum(rows) + n, device="cuda")
    d = torch.full((a.shape[0], n), float("nan"), dtype=torch.bfloat16, device="cuda")
    commdsl.load(GROUPED, **config)(a, mn_major(sa), b, sb, m_idx, d=d)
    ref = grouped_reference(a, sa, b, sb, m_idx)
    assert d[m_idx < 0].isnan().all()
    for g, r in enumerate(rows):
        if r:
            sel = m_idx == g
            assert calc_diff(d[sel], ref[sel]) < 1e-3, f"group {g}"


@pytest.mark.parametrize("config", [dict(), dict(BM=64, BN=64, STAGES=6),
                                    dict(BM=192, STAGES=4), dict(BM=256, STAGES=3)],
                         ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default")
@pytest.mark.parametrize("counts,m_max,n,k", [([1000, 0, 1, 333, 1024], 1024, 4096, 7168),
                                              ([128, 70], 256, 200, 384)])
def test_masked_every_group_right_and_rows_past_the_count_untouched(config, counts, m_max,
                                                                    n, k):
    a, sa, b, sb, masked_m = masked_operands(counts, m_max, n, k, seed=sum(counts) + n,
                                             device="cuda")
    d = torch.full((len(counts), m_max, n), float("nan"), dtype=torch.bfloat16, device="cuda")
    commdsl.load(MASKED, **config)(a, mn_major(sa), b, sb, masked_m, d=d)
    ref = masked_reference(a, sa, b, sb, masked_m)
    for g, count in enumerate(counts):
        assert d[g, count:].isnan().all(), f"group {g}: a row past its count was written"
        if count:
            assert calc_diff(d[g, :count], ref[g, :count]) < 1e-3, f"group {g}"
