"""Torch references for the FP8 quantization family (examples/weight_quant, dequant,
requant_t), shared by the CPU tests and the GPU tests. Every formula is in float32:

    amax  = max |x| over the group (zeros past a ragged edge do not change it)
    sc    = max(amax, 1e-4) / max_finite(fmt)            (IEEE division; 448 for e4m3)
    ue8m0 = the smallest power of two >= sc, stored as its biased exponent byte; on the bits of
            sc: exponent + (mantissa != 0). For the positive normal sc here this is exactly
            DeepGEMM's ceil_to_ue8m0(sc) = 2^ceil(log2(sc)), without log2's rounding.
    y     = fmt(x / scale)  (round to nearest even, saturating to +-max_finite: cvt.rn.satfinite)
    dequant: bf16(x * scale), the product in float32

The divisors are tensors on purpose: torch on CUDA divides by a Python scalar through a
reciprocal multiply, which is not the IEEE division the kernels' '/' promises.
"""
from __future__ import annotations

import torch

FP8 = {"e4m3": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2}
FP8_MAX = {"e4m3": 448.0, "e5m2": 57344.0}


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def ue8m0_encode(sc: torch.Tensor) -> torch.Tensor:
    bits = sc.float().contiguous().view(torch.int32)
    up = ((bits >> 23) & 0xFF) + ((bits & 0x7FFFFF) != 0).to(torch.int32)
    return up.clamp(max=0xFF).to(torch.uint8)


def ue8m0_decode(b: torch.Tensor) -> torch.Tensor:
    e = b.to(torch.int32)
    bits = torch.where(e == 0, torch.full_like(e, 0x400000), e << 23)
    bits = torch.where(e == 0xFF, torch.full_like(e, 0x7FC00000), bits)
    return bits.view(torch.float32)


def to_fp8(v: torch.Tensor, fmt: str) -> torch.Tensor:
    m = FP8_MAX[fmt]
    return v.clamp(-m, m).to(FP8[fmt])                   # clamp keeps NaN: satfinite


def expand_scales(s: torch.Tensor, shape, group) -> torch.Tensor:
    """Per-element f32 scale of a [R, C] tensor from per-group scales (ragged edges cut)."""
    sf = ue8m0_decode(s) if s.dtype == torch.uint8 else s.float()
    gr, gc = group
    return sf.repeat_interleave(gr, 0).repeat_interleave(gc, 1)[:shape[0], :shape[1]]


def quantize(v: torch.Tensor, group, fmt: str = "e4m3", sf: str = "f32"):
    """v: f32 [R, C] -> (fmt [R, C], scales [cdiv(R, gr), cdiv(C, gc)] as f32 or ue8m0 bytes)."""
    r, c = v.shape
    gr, gc = group
    padded = torch.zeros(cdiv(r, gr) * gr, cdiv(c, gc) * gc, dtype=torch.float32,
                         device=v.device)
    padded[:r, :c] = v
    blocks = padded.view(cdiv(r, gr), gr, cdiv(c, gc), gc)
    amax = blocks.abs().amax(dim=(1, 3)).clamp(min=1e-4)
    sc = amax / torch.full_like(amax, FP8_MAX[fmt])
    if sf == "ue8m0":
        s = ue8m0_encode(sc)
        sc = ue8m0_decode(s)
    else:
        s = sc
    scale = sc.repeat_interleave(gr, 0).repeat_interleave(gc, 1)[:r, :c]
    return to_fp8(v / scale, fmt), s


def weight_quant(w: torch.Tensor, G: int = 128, fmt: str = "e4m3", sf: str = "f32"):
    return quantize(w.float(), (G, G), fmt, sf)


def act_quant(x: torch.Tensor, G: int = 128, fmt: str = "e4m3", sf: str = "f32"):
    return quantize(x.float(), (1, G), fmt, sf)


def dequant(x: torch.Tensor, s: torch.Tensor, group) -> torch.Tensor:
    return (x.float() * expand_scales(s, x.shape, group)).to(torch.bfloat16)


def requant_t(x: torch.Tensor, s: torch.Tensor, G: int = 128, fmt: str = "e4m3",
              sf: str = "f32"):
    """Dequantize x (1 x G groups along K), transpose, quantize in 1 x G groups along M."""
    v = (x.float() * expand_scales(s, x.shape, (1, G))).t().contiguous()
    return quantize(v, (1, G), fmt, sf)


def random_activations(m: int, k: int, seed: int | None = None, device="cpu"):
    """N(0, 2) with DeepSeek-style outliers (1 in 500 elements x300), as bf16."""
    g = torch.Generator(device=device)
    g.manual_seed(seed if seed is not None else torch.seed() % (1 << 62))
    x = torch.randn(m, k, generator=g, device=device) * 2
    n = max(1, m * k // 500)
    idx = torch.randint(0, m * k, (n,), generator=g, device=device)
    x.view(-1)[idx] *= 300
    return x.to(torch.bfloat16)


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise equality (NaN == NaN of the same bits), for any dtype."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    width = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
    return torch.equal(a.contiguous().view(width), b.contiguous().view(width))
