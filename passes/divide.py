"""Division by a broadcast divisor: one correctly rounded reciprocal per divisor, then a
multiply and an FMA correction per element, instead of a full division per element.

    q = x / b   where b = broadcast(d) or splat(d)   (a group's scale over its elements, or
                                                  a 128 x 128 block's one scale)
 -> r = recip(d)                (rcp.rn: the correctly rounded 1/d, once per divisor)
    q0 = x * r;  e = fma(-q0, b, x);  q = fma(e, r, q0)   (and three details below)

Markstein's theorem makes this exact: when r = RN(1/b) and q0 is within one ulp of x/b, the
residual e is computed exactly and q = RN(x/b), the IEEE quotient `/` promises, barring
underflow of e. Underflow only happens for |x/b| far below anything an FP8 or bf16 result can
represent, where both quotients convert to the same value. The per-element division was
the bottleneck of act_quant: about 10 instructions and a reciprocal per element.

Three details make every IEEE special come out as `/` gives it (tests/test_stage_equivalence.py
checks each on the CPU, tests/test_quant_family.py on the GPU):
- the residual's FMA takes the divisor clamped to the finite range, so x / inf (r = 0,
  q0 = +-0) gives e = x and q = +-0, not inf * 0 = NaN;
- q takes q0's sign bit (an OR of the bits): q0 = x * r has the quotient's sign, and a
  nonzero q has it already, but a zero q is the sum of the residual's zero and q0's, +0
  where +0 / -3 must give -0. A divisor the sign traits of its producers show >= +0 (a
  quantization's scale) needs no OR: there the residual -(q0 b - x) gives zeros their sign;
- where q0 is infinite or NaN (x = +-inf, b = +-0, 0 / 0), q0 itself is the quotient and the
  correction (inf - inf) would make it NaN: q = |q0| < inf ? q : q0.

A divisor read from a UE8M0 scale is a power of two: its reciprocal is exact (the byte
254 - e), so the quotient is one multiply, x * 2^-e, correctly rounded with no correction.
"""
from __future__ import annotations

import math

from commdsl.dtypes import dtype
from commdsl.ir import Block, Builder, KernelIR, Op, ScalarType, TileType
from commdsl.ops import (ANY_NONNEGATIVE, CONSTANT, KEEPS_NONNEGATIVE, NONNEGATIVE, REDUCTION,
                         has_trait)
from commdsl.ops.tiles import KEEPS_NONNEGATIVE_KINDS, NONNEGATIVE_KINDS
from commdsl.target import Target


def _rewrite(op: Op, producers: dict[int, Op]) -> list[Op] | None:
    x, b = op.operands
    bcast = producers.get(b.id)
    if (op.result.type.dtype != "f32" or not isinstance(b.type, TileType)
            or bcast is None or bcast.name not in ("broadcast", "splat")):
        return None
    block = Block()
    builder = Builder(block, op.loc)
    if bcast.name == "splat":
        if producers.get(bcast.operands[0].id) is None or producers[bcast.operands[0].id].name == "const":
            return None                 # a literal divisor: one division per value is cheap
        d = bcast.operands[0]
        if _is_ue8m0(d, producers):
            return _exact(builder, op, x, builder.value("splat", [_ue8m0_recip(builder, d, producers)],
                                                        b.type))
        rb = builder.value("splat", [builder.value("recip", [d], d.type)], b.type)
        return _correct(builder, op, x, builder.value("splat", [_finite(builder, d)], b.type), rb,
                        _nonnegative(d, producers))
    inner = bcast.operands[0]
    chain = [inner]
    while producers.get(chain[-1].id) is not None and producers[chain[-1].id].name == "expand_dims":
        chain.append(producers[chain[-1].id].operands[0])
    # The reciprocal is taken before any expand_dims/broadcast: once per divisor value.
    source = chain[-1]
    pow2 = _is_ue8m0(source, producers)
    r = (_ue8m0_recip(builder, source, producers) if pow2 else
         builder.value("recip", [source], source.type))
    if pow2:
        return _exact(builder, op, x, _broadcast(builder, r, chain, producers, b.type))
    return _correct(builder, op, x,
                    _broadcast(builder, _finite(builder, source), chain, producers, b.type),
                    _broadcast(builder, r, chain, producers, b.type),
                    _nonnegative(source, producers))


def _broadcast(builder: Builder, v, chain, producers, tile_type):
    """v, a value of the divisor's source shape, through the divisor's expand_dims and
    broadcast."""
    for expand in reversed([producers[c.id] for c in chain[:-1]]):
        v = builder.value("expand_dims", [v], expand.result.type, axis=expand.attrs["axis"])
    return builder.value("broadcast", [v], tile_type)


def _finite(builder: Builder, d):
    """d clamped to the finite range (NaN stays NaN): the residual's FMA takes it, so that
    x / inf, where r = 0 and q0 = x * 0, gives e = x and q = q0 = +-0, not inf * 0 = NaN."""
    big = float.fromhex("0x1.fffffep+127")
    lo = builder.value("const", [], ScalarType(d.type.dtype), value=-big)
    hi = builder.value("const", [], lo.type, value=big)
    if isinstance(d.type, TileType):
        lo, hi = (builder.value("splat", [c], d.type) for c in (lo, hi))
    return builder.value("min", [builder.value("max", [d, lo], d.type), hi], d.type)


def _is_ue8m0(d, producers) -> bool:
    """`d` is a UE8M0 scale read as f32: a power of two (or NaN)."""
    conv = producers.get(d.id)
    return (conv is not None and conv.name == "convert" and d.type.dtype == "f32"
            and conv.operands[0].type.dtype == "ue8m0")


def _ue8m0_recip(builder: Builder, d, producers):
    """1 / f32(u) for a UE8M0 byte u, exactly: f32(254 - u), the byte arithmetic the
    backend gives `recip` of a ue8m0 (2^(127 - e) for every e; NaN stays NaN)."""
    u = producers[d.id].operands[0]
    return builder.value("convert", [builder.value("recip", [u], u.type)], d.type)


def _exact(builder: Builder, op: Op, x, rb) -> list[Op]:
    """x / 2^e = x * 2^-e, one rounding of the exact quotient: the IEEE result, no correction
    (2^-e is exact in f32 for every UE8M0 exponent, subnormal 2^-127 included)."""
    q = builder.op("mul", [x, rb], [x.type])
    q.results = op.results
    return builder.block.ops


def _correct(builder: Builder, op: Op, x, b, rb, nonnegative: bool) -> list[Op]:
    """q0 = x * r, one exact FMA correction, the zero's sign from q0 (unless the divisor is
    known >= +0), and q0 itself where it is infinite or NaN; `op`'s result becomes q."""
    t = x.type
    q0 = builder.value("mul", [x, rb], t)
    if nonnegative:
        # e = -(q0 b - x): over b >= +0 the zeros then add up to the quotient's own sign
        e = builder.value("neg", [builder.value("fma", [q0, b, builder.value("neg", [x], t)],
                                                t)], t)
        signed = builder.value("fma", [e, rb, q0], t)
    else:
        e = builder.value("fma", [builder.value("neg", [q0], t), b, x], t)
        corrected = builder.value("fma", [e, rb, q0], t)
        ints = TileType("i32", t.shape)
        sign = builder.value("and", [builder.value("bitcast", [q0], ints),
                                     _splat(builder, -2 ** 31, ints)], ints)
        signed = builder.value("bitcast", [builder.value(
            "or", [builder.value("bitcast", [corrected], ints), sign], ints)], t)
    finite = builder.value("cmp", [builder.value("abs", [q0], t), _splat(builder, float("inf"), t)],
                           TileType("bool", t.shape), pred="<")
    q = builder.op("select", [finite, signed, q0], [t])
    q.results = op.results                      # users keep reading the same value
    return builder.block.ops


def _nonnegative(v, producers, memo=None) -> bool:
    """`v` is >= +0 or NaN on every run, as its producers' sign traits show: then the plain
    residual keeps zeros' signs and the sign fix-up is not needed (a quantization's scale,
    max(amax(...), eps) / 448, is one)."""
    memo = {} if memo is None else memo
    if v.id not in memo:
        memo[v.id] = False                       # what a cycle through a loop would see
        memo[v.id] = _sign_known(v, producers, memo)
    return memo[v.id]


def _sign_known(v, producers, memo) -> bool:
    if dtype(v.type.dtype).kind == "uint" or v.type.dtype == "ue8m0":
        return True
    op = producers.get(v.id)
    if op is None:
        return False
    if has_trait(op, CONSTANT):
        return math.copysign(1.0, op.attrs["value"]) > 0
    operands = [_nonnegative(o, producers, memo) for o in op.operands]
    if has_trait(op, REDUCTION):
        return (op.attrs["kind"] in NONNEGATIVE_KINDS or
                op.attrs["kind"] in KEEPS_NONNEGATIVE_KINDS and operands[0])
    return (has_trait(op, NONNEGATIVE) or has_trait(op, KEEPS_NONNEGATIVE) and all(operands)
            or has_trait(op, ANY_NONNEGATIVE) and any(operands))


def _splat(builder: Builder, value, t: TileType):
    return builder.value("splat", [builder.value("const", [], ScalarType(t.dtype), value=value)], t)


def run(kernel: KernelIR, target: Target) -> KernelIR:
    producers = {r.id: op for op in kernel.walk() for r in op.results}
    new_ops: list[Op] = []
    for op in kernel.body.ops:
        replacement = _rewrite(op, producers) if op.name == "div" else None
        new_ops += replacement if replacement is not None else [op]
    kernel.body.ops = new_ops
    return kernel
