"""Scalar and elementwise arithmetic: constants, the program id, math on tiles or scalars."""
from __future__ import annotations

from commdsl.ir import TileType

from .registry import CONSTANT, ELEMENTWISE, INDEX, declare, fail

FAMILY = "arith"


def _same_shape_operands(op):
    types = [o.type for o in op.operands]
    if any(type(t) is not type(types[0]) for t in types):
        fail(op, "mixes scalars and tiles: broadcast first")
    if isinstance(types[0], TileType) and len({t.shape for t in types}) > 1:
        fail(op, f"operand shapes differ: {[t.shape for t in types]}")
    if len({t.dtype for t in types}) > 1:
        fail(op, f"operand dtypes differ: {[t.dtype for t in types]}")


def _elementwise(op):
    _same_shape_operands(op)
    r, a = op.result.type, op.operands[0].type
    if type(r) is not type(a) or getattr(r, "shape", None) != getattr(a, "shape", None):
        fail(op, "result must have the operands' shape")


def _convert(op):
    a, r = op.operands[0].type, op.result.type
    if getattr(a, "shape", None) != getattr(r, "shape", None):
        fail(op, "changes the shape")


declare("const", "const() {value} : T", "a compile-time scalar",
        traits=(CONSTANT,), attrs={"value": "the number (int or float)"}, family=FAMILY)
declare("pid", "pid() {axis} : i32", "this program's index along a grid axis",
        traits=(INDEX,), attrs={"axis": "the grid axis, 0 .. 2"}, family=FAMILY)

_BINARY = {
    "add": "a + b",
    "sub": "a - b",
    "mul": "a * b",
    "div": "a / b (integers: rounded toward zero)",
    "rem": "a - b * (a / b): the remainder with the sign of a",
    "max": "the larger of a and b",
    "min": "the smaller of a and b",
}
for _name, _doc in _BINARY.items():
    declare(_name, f"{_name}(a, b) : T", _doc, traits=(ELEMENTWISE,), verify=_elementwise,
            family=FAMILY)
declare("neg", "neg(a) : T", "-a", traits=(ELEMENTWISE,), verify=_elementwise, family=FAMILY)
declare("abs", "abs(a) : T", "|a|", traits=(ELEMENTWISE,), verify=_elementwise, family=FAMILY)
declare("fma", "fma(a, b, c) : T", "a * b + c, rounded once", traits=(ELEMENTWISE,),
        verify=_elementwise, family=FAMILY)
declare("recip", "recip(a) : T", "1 / a, correctly rounded (ue8m0: the exponent negated)", traits=(ELEMENTWISE,),
        verify=_elementwise, family=FAMILY)
declare("convert", "convert(a) : U", "a in another dtype, same shape: round to nearest, saturating to FP8",
        traits=(ELEMENTWISE,), verify=_convert, family=FAMILY)
