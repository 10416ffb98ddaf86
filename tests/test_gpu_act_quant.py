"""On a GPU: act_quant equals the torch formula bit for bit; copy_nc copies exactly."""

import pytest
import torch

import commdsl
from test_act_quant import ACT_QUANT, COPY_NC, act_quant_reference

pytestmark = pytest.mark.gpu

SHAPES = [(1, 7168), (127, 1024), (4097, 7168), (4096, 512), (33, 128), (2048, 2176)]


def random_activations_cuda(m, k):
    x = torch.randn(m, k, device="cuda") * 2
    n = max(1, m * k // 500)
    idx = torch.randint(0, m * k, (n,), device="cuda")
    x.view(-1)[idx] *= 300
    return x.to(torch.bfloat16)


@pytest.mark.parametrize("rows,warps", [(16, 4), (1, 1), (64, 8)])
@pytest.mark.parametrize("m,k", SHAPES)
def test_act_quant_bit_exact(m, k, rows, warps):
    kernel = commdsl.load(ACT_QUANT, ROWS=rows, WARPS=warps)
    x = random_activations_cuda(m, k)
    y = torch.full((m, k), 0x7F, dtype=torch.uint8, device="cuda").view(torch.float8_e4m3fn)
    s = torch.full((m, k // 128), float("nan"), device="cuda")       # poisoned outputs
    kernel(x, y=y, s=s)
    y_ref, s_ref = act_quant_reference(x)
    assert torch.equal(s, s_ref)
    assert torch.equal(y.view(torch.uint8), y_ref.view(torch.uint8))


def test_act_quant_all_zero_input():
    kernel = commdsl.load(ACT_QUANT)
    y, s = kernel(torch.zeros(300, 7168, dtype=torch.bfloat16, device="cuda"))
    assert (y.view(torch.uint8) == 0).all()
    assert torch.all(s == torch.tensor(1e-4) / 448.0)


def test_act_quant_allocates_outputs():
    kernel = commdsl.load(ACT_QUANT)
    x = random_activations_cuda(64, 256)
    y, s = kernel(x)
    assert y.dtype == torch.float8_e4m3fn and s.shape == (64, 2) and y.device == x.device


@pytest.mark.parametrize("n", [1, 1000, 4096 * 3 + 8, 1 << 22])
def test_copy_nc_exact(n):
    kernel = commdsl.load(COPY_NC)
    x = torch.randn(n, device="cuda").to(torch.bfloat16)
    y = torch.full_like(x, float("nan"))
    kernel(x, y=y)
    assert torch.equal(y, x)
