"""examples/swiglu_gemm.cdsl on a GPU (A computed in registers, wgmma's register form): against
a float64 product of the bf16-rounded activation, on fresh random data with outliers, output
poisoned first, ragged shapes, NaN carried to its row."""
from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.gpu
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

import commdsl  # noqa: E402

SWIGLU_GEMM = os.path.join(os.path.dirname(__file__), "..", "examples", "swiglu_gemm.cdsl")
CONFIGS = [dict(), dict(BM=64, BN=64, STAGES=6)]
_kernels: dict = {}


def kernel(config):
    key = tuple(sorted(config.items()))
    if key not in _kernels:
        _kernels[key] = commdsl.load(SWIGLU_GEMM, **config)
    return _kernels[key]


def operands(m, n, k, seed):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    g, u = (torch.randn(m, k, generator=gen, device="cuda").to(torch.bfloat16) for _ in range(2))
    w = torch.randn(n, k, generator=gen, device="cuda").to(torch.bfloat16)
    g[m // 2, :2] = torch.tensor([30.0, -40.0])               # outliers
    return g, u, w


def reference(g, u, w):
    g, u, w = g.double(), u.double(), w.double()
    h = (g * torch.sigmoid(g) * u).to(torch.bfloat16).double()
    return h @ w.T, h.abs() @ w.abs().T


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default")
@pytest.mark.parametrize("m,n,k", [(4096, 4096, 4096), (1000, 1032, 4104), (70, 200, 64), (1, 8, 8)])
def test_within_bf16_rounding_of_float64(config, m, n, k):
    g, u, w = operands(m, n, k, seed=m + n + k)
    d = torch.full((m, n), float("nan"), dtype=torch.bfloat16, device="cuda")
    kernel(config)(g, u, w, d=d)
    ref, size = reference(g, u, w)
    # d's rounding, f32 accumulation, and h's bf16 rounding the other way where silu's f32
    # result is an ulp from float64's
    slack = 2 ** -8 * ref.abs() + 2 ** -7 * size
    assert not d.isnan().any()
    assert ((d.double() - ref).abs() <= slack).all()


def test_nan_reaches_its_row():
    g, u, w = operands(256, 256, 256, seed=3)
    g[5, 9] = float("nan")
    d = kernel({})(g, u, w)
    assert d[5].isnan().all() and not d[torch.arange(256) != 5].isnan().any()
