"""Emitters of the predicate and bit ops (commdsl/ops/logic.py). A bool lives in an i8
register holding 0 or 1, as a loaded bool does; comparisons widen their i1 to it."""
from __future__ import annotations

from llvmlite import ir

from .asm import I1, I8, reg_type
from .emitters import emits

_UNSIGNED = ("u8", "bool")


def _is_float(op) -> bool:
    return op.operands[0].type.dtype == "f32"


@emits("cmp")
def emit_cmp(cg, op):
    pred, b = op.attrs["pred"], cg.b
    if _is_float(op):       # ordered, but != is true where either is NaN (IEEE)
        test = (lambda x, y: b.fcmp_unordered(pred, x, y)) if pred == "!=" else \
            (lambda x, y: b.fcmp_ordered(pred, x, y))
    elif op.operands[0].type.dtype in _UNSIGNED:
        test = lambda x, y: b.icmp_unsigned(pred, x, y)               # noqa: E731
    else:
        test = lambda x, y: b.icmp_signed(pred, x, y)                 # noqa: E731
    cg._map(op, lambda x, y: b.zext(test(x, y), I8))


@emits("and", "or", "xor")
def emit_bits(cg, op):
    cg._map(op, getattr(cg.b, {"and": "and_", "or": "or_", "xor": "xor"}[op.name]))


@emits("shl")
def emit_shl(cg, op):
    cg._map(op, cg.b.shl)


@emits("shr")
def emit_shr(cg, op):
    cg._map(op, cg.b.lshr if op.operands[0].type.dtype in _UNSIGNED else cg.b.ashr)


@emits("not")
def emit_not(cg, op):
    ones = 1 if op.operands[0].type.dtype == "bool" else -1
    cg._map(op, lambda x: cg.b.xor(x, ir.Constant(x.type, ones)))


@emits("select")
def emit_select(cg, op):
    b = cg.b
    cg._map(op, lambda c, x, y: b.select(b.trunc(c, I1), x, y))


@emits("iota")
def emit_iota(cg, op):
    t = op.result.type
    tile_dims = t.layout.dims(t.shape)
    axis = op.attrs["axis"]
    regs = [cg.coord(tile_dims[axis], *slot[axis])[0] for slot in cg.held_slots(t)]
    cg.vals[op.result.id] = cg.new_tile(t, regs)


@emits("bitcast")
def emit_bitcast(cg, op):
    to = reg_type(op.result.type.dtype)
    # f32 <-> i32 changes the register's type; narrower dtypes share their integer register
    cg._map(op, lambda x: x if x.type == to else cg.b.bitcast(x, to))
