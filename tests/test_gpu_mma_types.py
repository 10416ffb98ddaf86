"""tf32 and int8 mma on a GPU (test_mma_types.py's kernels): f32 tiles multiplied as tf32
within tf32's rounding of a float64 product of the truncated operands, 8-bit integers exact,
ragged shapes, outputs poisoned first."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.gpu
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

import commdsl  # noqa: E402
from commdsl.cpu_numerics import tf32  # noqa: E402

from test_mma_types import GEMM, I8, TF32  # noqa: E402

SHAPES = [(1000, 1032, 1000), (70, 200, 64), (256, 256, 4096)]
# 8-bit rows are K bytes, which TMA needs to be a multiple of 16: K ragged against 128 only
INT8_SHAPES = [(1000, 1032, 1008), (70, 200, 64), (256, 256, 4096)]


@pytest.mark.parametrize("m,n,k", SHAPES)
@pytest.mark.parametrize("config", [dict(), dict(BM=64, BN=64)], ids=["128x128", "64x64"])
def test_tf32_within_rounding_of_the_truncated_product(m, n, k, config):
    g = torch.Generator(device="cuda").manual_seed(m + n + k)
    a = torch.randn(m, k, generator=g, device="cuda")
    b = torch.randn(n, k, generator=g, device="cuda")
    a[m // 2, 0] = 1e4                                      # an outlier
    d = torch.full((m, n), float("nan"), device="cuda")
    commdsl.load(TF32, **config)(a, b, d=d)
    ref = tf32(a).double() @ tf32(b).double().T
    size = a.abs().double() @ b.abs().double().T
    # f32 accumulation: the worst case of n roundings is n * 2^-24 of the sum of |products|,
    # n = the K / 8 wgmma steps added into the accumulator plus the 8 products of a step (the
    # outlier row, whose partial sums are ~1e4 from its first step on, gets near it). A
    # wrong or missing k8 step errs by ~8 |a b|, far above it.
    steps = (k + 7) // 8 + 8
    assert ((d.double() - ref).abs() <= steps * 2 ** -24 * size + 1e-30).all()


@pytest.mark.parametrize("m,n,k", INT8_SHAPES)
@pytest.mark.parametrize("source", [I8, GEMM.format(A="u8", B="u8", ACC="i32", KS=128)],
                         ids=["s8", "u8"])
def test_int8_exact(m, n, k, source):
    low, high, dtype = (-128, 128, torch.int8) if "i8[M" in source else (0, 256, torch.uint8)
    g = torch.Generator(device="cuda").manual_seed(m * n + k)
    a = torch.randint(low, high, (m, k), generator=g, device="cuda", dtype=dtype)
    b = torch.randint(low, high, (n, k), generator=g, device="cuda", dtype=dtype)
    d = torch.full((m, n), -7, dtype=torch.int32, device="cuda")
    commdsl.load(source)(a, b, d=d)
    assert torch.equal(d.cpu(), (a.cpu().long() @ b.cpu().long().T).int())
