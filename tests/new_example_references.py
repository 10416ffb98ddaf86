"""Float64-based references and checks for examples/swiglu_quant, rmsnorm_quant and softmax,
shared by the CPU tests (tests/test_new_examples.py) and the GPU tests
(tests/test_gpu_new_examples.py); they run on the tensors' device.

"The f32 formula" is each example's formula evaluated step by step in f32, every step
correctly rounded (computed in float64, rounded once), as docs/ir.md defines the ops:
    swiglu:  v = f32(silu(a)) * b
    rmsnorm: r = f32(1 / sqrt(f32(f32(sum x^2) / H) + EPS)),  v = (x * r) * w
    both:    s = max(amax(v over 128), 1e-4) / 448,  y = e4m3(v / s)
The row sum in the rmsnorm reference is exact before its one rounding; the kernel
accumulates in f32 in its own order, so on inputs whose sums f32 does not hold exactly
its r may differ by an ulp or two (rmsnorm_grid_rows gives inputs whose sums it does).

FP8 bytes are compared in check_quant: a byte may differ from the reference only where
the exact quotient v / s lies next to the midpoint between the two FP8 values (so an ulp
of v or s moved the rounding), and only by one code.
"""
from __future__ import annotations

import torch

E4M3_MAX = 448.0
# A mismatched FP8 byte's exact quotient must lie this close (relative) to the midpoint
# the rounding chose between: a few ulp of v and of s.
NEAR_MIDPOINT = 2.0 ** -19


def random_bf16(m, n, gen, device="cpu"):
    """randn * 2 with DeepSeek-style outliers (one element in 500 times 300)."""
    x = torch.randn(m, n, generator=gen, device=device) * 2
    idx = torch.randint(0, m * n, (max(1, m * n // 500),), generator=gen, device=device)
    x.view(-1)[idx] *= 300
    return x.to(torch.bfloat16)


def rmsnorm_grid_rows(m, h, gen, device="cpu"):
    """bf16 rows on a grid of 1/4 with |x| <= 128 (outliers included): every partial sum of
    their squares is a multiple of 1/16 below 2^20, which f32 holds exactly in any order."""
    x = torch.round(torch.randn(m, h, generator=gen, device=device) * 8) / 4
    idx = torch.randint(0, m * h, (max(1, m * h // 500),), generator=gen, device=device)
    x.view(-1)[idx] = torch.randint(-128, 129, (idx.numel(),), generator=gen,
                                    device=device).float()
    return x.clamp(-128, 128).to(torch.bfloat16)


def _div(a, b):
    """IEEE f32 division by a tensor (torch on CUDA divides by a Python scalar through a
    reciprocal multiply)."""
    return a / torch.full_like(a, b) if not isinstance(b, torch.Tensor) else a / b


def quantize_groups(v):
    """The f32 formula's s, y and the exact quotient v / s (float64) for f32 values v."""
    m, n = v.shape
    g = v.view(m, n // 128, 128)
    s = _div(g.abs().amax(-1).clamp(min=1e-4), E4M3_MAX)
    y = (g / s[..., None]).view(m, n).to(torch.float8_e4m3fn)
    q = (g.double() / s.double()[..., None]).view(m, n)
    return y, s, q


def swiglu_reference(a, b):
    a64 = a.double()
    silu = (a64 * torch.sigmoid(a64)).float()
    return quantize_groups(silu * b.float())


def rmsnorm_reference(x, w, eps=1e-6):
    h = x.shape[1]
    sq = x.double().pow(2).sum(1, keepdim=True).float()
    ms = _div(sq, float(h)) + torch.full_like(sq, eps)
    r = (1.0 / ms.double().sqrt()).float()
    return quantize_groups((x.float() * r) * w.float()[None, :])


def ulps(a, b):
    """Distance in f32 ulps between tensors of positive (or same-signed) floats."""
    return (a.float().view(torch.int32).long() - b.float().view(torch.int32).long()).abs()


def check_quant(y, s, ref, max_scale_ulps, max_moved):
    """Scales within max_scale_ulps of the reference's; each FP8 byte equal to the
    reference's but where its rounding sat on a midpoint (one code off); at most max_moved
    of those. Returns (scale ulps, moved bytes) for the caller to print."""
    y_ref, s_ref, q = ref
    assert not torch.isnan(s).any(), "a scale was not written"
    d = ulps(s, s_ref).max().item()
    assert d <= max_scale_ulps, f"scales {d} ulp from the f32 formula"
    yb, rb = y.view(torch.uint8), y_ref.view(torch.uint8)
    moved = yb != rb
    if moved.any():
        assert ((yb[moved].int() - rb[moved].int()).abs() == 1).all(), "an FP8 byte moved by more than one code"
        mid = (y.double()[moved] + y_ref.double()[moved]) / 2
        off = ((q[moved] - mid).abs() / q[moved].abs()).max().item()
        assert off <= NEAR_MIDPOINT, f"an FP8 byte differs {off:.2e} away from a rounding midpoint"
    n = int(moved.sum())
    assert n <= max_moved, f"{n} FP8 bytes moved a rounding"
    return d, n


def softmax_inputs(m, n, gen, dtype, device="cpu"):
    """randn * 3 with outliers anywhere in [-30, 30): exp(x - max) stays a normal f32."""
    x = torch.randn(m, n, generator=gen, device=device) * 3
    idx = torch.randint(0, m * n, (max(1, m * n // 200),), generator=gen, device=device)
    x.view(-1)[idx] = torch.rand(idx.numel(), generator=gen, device=device) * 60 - 30
    return x.to(dtype)


def check_softmax(y, x, max_rel=2e-6):
    """f32 output: max relative error against float64 <= max_rel. bf16 output: the float64
    softmax rounded to bf16, but where it lies within max_rel of a bf16 midpoint.
    Returns the max relative error of y against float64."""
    ref = torch.softmax(x.double(), 1)
    rel = ((y.double() - ref).abs() / ref).max().item()
    if y.dtype == torch.float32:
        assert rel <= max_rel, f"max relative error {rel:.3g}"
        return rel
    want = ref.to(y.dtype)
    moved = y != want
    if moved.any():
        mid = (y[moved].double() + want[moved].double()) / 2
        off = ((ref[moved] - mid).abs() / ref[moved]).max().item()
        assert off <= max_rel, f"a {y.dtype} value differs {off:.2e} away from a midpoint"
    return rel
