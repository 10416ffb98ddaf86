"""examples/bf16_gemm.cdsl (b as [N, K]) and bf16_matmul.cdsl (b as [K, N], read MN-major) on a
GPU: within bf16 rounding of a float64 product on fresh random data with outliers, outputs
poisoned first, ragged shapes, NaN and Inf carried through."""
from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.gpu
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

import commdsl  # noqa: E402

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")
BF16_GEMM = os.path.join(EXAMPLES, "bf16_gemm.cdsl")
BF16_MATMUL = os.path.join(EXAMPLES, "bf16_matmul.cdsl")
CONFIGS = [dict(), dict(BN=256, STAGES=3), dict(BM=64, BN=64, STAGES=8), dict(BM=256, STAGES=4)]
_kernels: dict = {}


def kernel(config, path=BF16_GEMM):
    key = (path, tuple(sorted(config.items())))
    if key not in _kernels:
        _kernels[key] = commdsl.load(path, **config)
    return _kernels[key]


def operands(m, n, k, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
    a = torch.randn(m, k, generator=g, device="cuda").to(torch.bfloat16)
    b = torch.randn(n, k, generator=g, device="cuda").to(torch.bfloat16)
    a[m // 2, :3] = torch.tensor([300.0, -250.0, 1e-3])      # outliers
    return a, b


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default")
@pytest.mark.parametrize("m,n,k", [(4096, 4096, 4096), (1000, 1032, 4104), (70, 200, 64), (1, 8, 8)])
def test_within_bf16_rounding_of_float64(config, m, n, k):
    a, b = operands(m, n, k, seed=m + n + k)
    d = torch.full((m, n), float("nan"), dtype=torch.bfloat16, device="cuda")
    kernel(config)(a, b, d=d)
    ref = a.double() @ b.double().T
    # half an ulp of bf16 for the rounding of d, plus f32 accumulation over K
    slack = 2 ** -8 * ref.abs() + 2 ** -20 * (a.double().abs() @ b.double().abs().T)
    assert not d.isnan().any()
    assert ((d.double() - ref).abs() <= slack).all()


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default")
@pytest.mark.parametrize("m,n,k", [(4096, 4096, 4096), (1000, 1032, 4104), (70, 200, 64), (1, 8, 8)])
def test_mn_major_b_within_bf16_rounding_of_float64(config, m, n, k):
    a, bt = operands(m, n, k, seed=m + n + k + 1)
    b = bt.T.contiguous()                                 # [K, N]
    b[k // 2, : min(n, 2)] = -200.0                       # outliers in B too
    d = torch.full((m, n), float("nan"), dtype=torch.bfloat16, device="cuda")
    kernel(config, BF16_MATMUL)(a, b, d=d)
    ref = a.double() @ b.double()
    slack = 2 ** -8 * ref.abs() + 2 ** -20 * (a.double().abs() @ b.double().abs())
    assert not d.isnan().any()
    assert ((d.double() - ref).abs() <= slack).all()


@pytest.mark.parametrize("mn_major", [False, True], ids=["b_nk", "b_kn"])
def test_nan_and_inf_reach_their_rows_and_columns(mn_major):
    m, n, k = 256, 256, 256
    a, b = operands(m, n, k, seed=5)
    a[3, 7] = float("nan")
    b[9, 1] = float("inf")
    if mn_major:
        b = b.T.contiguous()
        d = kernel({}, BF16_MATMUL)(a, b)
        ref = a.float() @ b.float()
    else:
        d = kernel({})(a, b)
        ref = a.float() @ b.float().T
    assert d[3].isnan().all()
    same = ref.isnan() == d.isnan()
    assert same.all() and (d.isinf() == ref.isinf()).all()
