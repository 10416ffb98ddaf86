"""Floating-point operations the GPU computes differently from plain torch on the CPU: FMA
rounded once, FP8 conversion saturating as `cvt.rn.satfinite`, the UE8M0 scale byte, and
max/min with PTX's NaN and signed-zero rules.
What the ops' CPU meanings (commdsl/ops, `interpret`) compute with. torch is imported only
when they run: compiling a kernel does not need it."""
from __future__ import annotations

from .dtypes import DTYPES, FP8_MAX, torch_dtype


def is_int(dtype: str) -> bool:
    return DTYPES[dtype].is_int


def scalar(value, dtype: str):
    """A constant as the interpreter holds it: an i32 as an int, a float as a 0-d tensor."""
    import torch
    return int(value) if is_int(dtype) else torch.tensor(value, dtype=torch_dtype(dtype))


def fma_f32(a, b, c):
    """a * b + c rounded once to f32, as `fma.rn.f32`. The product of two f32 is exact in
    f64; the f64 sum is rounded to odd (nudged off an even last bit when inexact, the error
    from TwoSum), so its rounding to f32 is the correct rounding of the exact value."""
    import torch
    a, b, c = (x.double() for x in torch.broadcast_tensors(a, b, c))
    p = a * b
    s = p + c
    back = s - p
    err = (p - (s - back)) + (c - back)
    even = (s.view(torch.int64) & 1) == 0
    inexact = (err != 0) & torch.isfinite(err)
    away = torch.where(err > 0, torch.full_like(s, float("inf")), torch.full_like(s, -float("inf")))
    s = torch.where(inexact & even, torch.nextafter(s, away), s)
    return s.float()


CANONICAL_NAN = 0x7FFFFFFF   # the NaN PTX's max.NaN / min.NaN give (and GPU arithmetic)


def _canonical_nan(like):
    import torch
    return torch.tensor(CANONICAL_NAN, dtype=torch.int32).view(torch.float32).to(like.dtype)


def _order_zeros(a, b, which: str):
    """a and b with PTX's order of zeros, +0 > -0: equal zeros both become the one max
    (or min) picks, so the larger (smaller) of two values is then well defined."""
    import torch
    both_zero = (a == 0) & (b == 0)
    neg = torch.signbit(a) & torch.signbit(b) if which == "max" else (
        torch.signbit(a) | torch.signbit(b))
    z = torch.where(neg, torch.tensor(-0.0, dtype=a.dtype), torch.tensor(0.0, dtype=a.dtype))
    return torch.where(both_zero, z, a), torch.where(both_zero, z, b)


def minmax(a, b, which: str, propagate_nan: bool):
    """PTX `max.NaN.f32` (propagate_nan) or `max.f32`, and the same for min, on f32 tensors:
    +0 > -0; with a NaN operand, .NaN gives the canonical NaN, plain max the other operand
    (the canonical NaN when both are NaN)."""
    import torch
    a, b = torch.broadcast_tensors(a, b)
    a, b = _order_zeros(a, b, which)
    r = torch.maximum(a, b) if which == "max" else torch.minimum(a, b)
    an, bn = torch.isnan(a), torch.isnan(b)
    if not propagate_nan:
        r = torch.where(an, b, torch.where(bn, a, r))
    return torch.where(an & bn if not propagate_nan else an | bn, _canonical_nan(r), r)


def reduce_minmax(t, axis: int, which: str, propagate_nan: bool):
    """A max (min) reduction along `axis` as a fold of `minmax`: the operation is
    associative and commutative, so the GPU's order of combining does not change it."""
    import torch
    nan = torch.isnan(t)
    fill = float("-inf") if which == "max" else float("inf")
    clean = torch.where(nan, torch.tensor(fill, dtype=t.dtype), t)
    r = clean.amax(axis) if which == "max" else clean.amin(axis)
    # the sign of a zero result: max is -0 only if every zero is; min is +0 only if every is
    zeros = clean == 0
    neg_zero = torch.signbit(clean) & zeros
    pick_neg = (~(zeros & ~neg_zero).any(axis)) if which == "max" else neg_zero.any(axis)
    r = torch.where(r == 0, torch.where(pick_neg, torch.tensor(-0.0, dtype=t.dtype),
                                        torch.tensor(0.0, dtype=t.dtype)), r)
    bad = nan.any(axis) if propagate_nan else nan.all(axis)
    return torch.where(bad, _canonical_nan(r), r)


def ue8m0_from_f32(x):
    """The UE8M0 byte of the smallest power of two >= |x|, from the f32 bits: exponent +
    (mantissa != 0), at most 0xFF. For positive normal x this is DeepGEMM's
    ceil_to_ue8m0(x) = 2^ceil(log2(x)), computed without log2's rounding."""
    import torch
    bits = x.float().contiguous().view(torch.int32)
    exp = (bits >> 23) & 0xFF
    up = exp + ((bits & 0x7FFFFF) != 0).to(torch.int32)
    return up.clamp(max=0xFF).to(torch.uint8)


def f32_from_ue8m0(b):
    """2^(b - 127) for a UE8M0 byte: 0 gives 2^-127 (subnormal), 0xFF gives NaN."""
    import torch
    e = b.to(torch.int32)
    bits = torch.where(e == 0, torch.full_like(e, 0x400000), e << 23)
    bits = torch.where(e == 0xFF, torch.full_like(e, 0x7FC00000), bits)
    return bits.view(torch.float32)


def convert(a, src: str, dst: str):
    """`a` (a tile, a 0-d tensor or an int) from dtype `src` to `dst` as the GPU converts:
    to FP8 rounding to nearest and saturating (any NaN becomes the NaN byte 0x7F, as `cvt`
    gives for the GPU's canonical NaN), to integers toward zero."""
    import torch
    if isinstance(a, int):
        a = torch.tensor(a, dtype=torch.int32)
    if dst == "ue8m0":
        return ue8m0_from_f32(a)
    if src == "ue8m0":
        return f32_from_ue8m0(a)
    if dst in FP8_MAX:
        a = a.float()
        a = torch.where(torch.isnan(a), _canonical_nan(a), a.clamp(-FP8_MAX[dst], FP8_MAX[dst]))
    elif is_int(dst) and a.is_floating_point():
        a = a.trunc()
    return a.to(torch_dtype(dst))


def tf32(x):
    """f32 values as wgmma reads them for a tf32 product: the low 13 bits of the mantissa
    dropped (toward zero)."""
    import torch
    return (x.contiguous().view(torch.int32) & ~0x1FFF).view(torch.float32)


def wrap_i32(x):
    """int64 values wrapped to i32 two's complement, as an s32 accumulator overflows."""
    import torch
    return ((x + 2 ** 31) % 2 ** 32 - 2 ** 31).to(torch.int32)


def matmul_i32(a, b):
    """[M, K] x [K, N] of 8-bit integers, summed exactly and wrapped to i32."""
    return wrap_i32(a.long() @ b.long())


def matmul_f32(a, b):
    """[M, K] x [K, N] of exactly widened operands, summed exactly and rounded once to f32:
    the f64 sum is exact for FP8 operands (8-bit products between 2^-18 and 2^17, 128 of
    them), so the result does not depend on the order of the sum nor on how K is split."""
    return (a.double() @ b.double()).float()
