"""Predicates and bits: comparisons give `bool` tiles (one byte per element in memory, 0 or
1 in a register), which `and`/`or`/`not` combine and `select` (the language's `where`)
chooses by; integer bitwise ops and shifts; `iota`; `bitcast` between dtypes of one width."""
from __future__ import annotations

from commdsl.ir import TileType

from .arith import _same_shape_operands
from .registry import ELEMENTWISE, declare, fail

FAMILY = "logic"
PREDICATES = ("<", "<=", ">", ">=", "==", "!=")


def _shape(t):
    return getattr(t, "shape", None)


def _verify_cmp(op):
    _same_shape_operands(op)
    if op.attrs.get("pred") not in PREDICATES:
        fail(op, f"pred must be one of {' '.join(PREDICATES)}")
    if op.result.type.dtype != "bool" or _shape(op.result.type) != _shape(op.operands[0].type):
        fail(op, "gives a bool of its operands' shape")


def _verify_bits(op):
    _same_shape_operands(op)
    dt = op.operands[0].type.dtype
    if dt in ("f32", "bf16", "f16", "e4m3", "e5m2", "ue8m0"):
        fail(op, f"takes integers or bools, not {dt}")
    if op.result.type != op.operands[0].type:
        fail(op, "result must have the operands' type")


def _verify_select(op):
    c, a, b = (o.type for o in op.operands)
    if c.dtype != "bool":
        fail(op, f"chooses by a bool, not {c.dtype}")
    if a != b or op.result.type != a or _shape(c) != _shape(a):
        fail(op, "operands must share one type and the condition their shape")


def _verify_iota(op):
    t = op.result.type
    if op.operands or not isinstance(t, TileType) or t.dtype != "i32":
        fail(op, "gives an i32 tile from no operands")
    if op.attrs.get("axis") not in range(len(t.shape)):
        fail(op, "counts along one of its axes")


def _verify_bitcast(op):
    from commdsl.dtypes import dtype
    a, r = op.operands[0].type, op.result.type
    if _shape(a) != _shape(r) or dtype(a.dtype).bits != dtype(r.dtype).bits:
        fail(op, "keeps the shape and the element width")


# ---- CPU meaning: i32 scalars are ints (wrapped to 32 bits where a shift overflows them) ----

def _wrap32(x):
    return ((x + (1 << 31)) % (1 << 32)) - (1 << 31) if isinstance(x, int) else x


def _run_cmp(ctx, op, a, b):
    import operator
    fn = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
          "==": operator.eq, "!=": operator.ne}[op.attrs["pred"]]
    r = fn(a, b)
    return bool(r) if isinstance(a, int) and isinstance(b, int) else r


def _run_not(ctx, op, a):
    if op.operands[0].type.dtype == "bool":
        return (not a) if isinstance(a, bool) else a.logical_not()
    return ~a


def _run_select(ctx, op, c, a, b):
    import torch
    if isinstance(c, bool):
        return a if c else b
    return torch.where(c, a, b)


def _run_iota(ctx, op):
    import torch
    shape, axis = op.result.type.shape, op.attrs["axis"]
    n = torch.arange(shape[axis], dtype=torch.int32)
    along = [1] * len(shape)
    along[axis] = shape[axis]
    return n.reshape(along).expand(shape).contiguous()


def _run_bitcast(ctx, op, a):
    import torch
    from commdsl.cpu_numerics import is_int
    from commdsl.dtypes import torch_dtype
    src, dst = op.operands[0].type.dtype, op.result.type.dtype
    r = (torch.tensor(a, dtype=torch_dtype(src)) if isinstance(a, int) else a).view(
        torch_dtype(dst))
    return int(r) if r.dim() == 0 and is_int(dst) else r


_RUN_BITS = {
    "and": lambda ctx, op, a, b: a & b,
    "or": lambda ctx, op, a, b: a | b,
    "xor": lambda ctx, op, a, b: a ^ b,
    "shl": lambda ctx, op, a, b: _wrap32(a << b),
    "shr": lambda ctx, op, a, b: a >> b,
}
_BITS_DOC = {
    "and": "a & b; of bools, a and b",
    "or": "a | b; of bools, a or b",
    "xor": "a ^ b",
    "shl": "a << b (counts outside [0, bits) are undefined)",
    "shr": "a >> b: arithmetic for signed integers, logical for u8 (counts outside [0, bits) "
           "are undefined)",
}

declare("cmp", "cmp(a, b) {pred} : bool", "compares a and b: a bool per element (floats: "
        "false if either is NaN, but != true)", traits=(ELEMENTWISE,), verify=_verify_cmp,
        interpret=_run_cmp, attrs={"pred": "one of < <= > >= == !="}, family=FAMILY)
for _name, _doc in _BITS_DOC.items():
    declare(_name, f"{_name}(a, b) : T", _doc, traits=(ELEMENTWISE,), verify=_verify_bits,
            interpret=_RUN_BITS[_name], family=FAMILY)
declare("not", "not(a) : T", "of a bool, its negation; of an integer, ~a (every bit flipped)",
        traits=(ELEMENTWISE,), verify=_verify_bits, interpret=_run_not, family=FAMILY)
declare("select", "select(c, a, b) : T", "a where the bool c holds, else b (the language's "
        "where(c, a, b))", traits=(ELEMENTWISE,), verify=_verify_select,
        interpret=_run_select, family=FAMILY)
declare("iota", "iota() {axis} : i32[N, ...]", "each element's index along an axis "
        "(1-D: 0, 1, ..., N - 1)", verify=_verify_iota, interpret=_run_iota,
        attrs={"axis": "the axis counted along"}, family=FAMILY)
declare("bitcast", "bitcast(a) : U", "a's bits read as another dtype of the same width",
        traits=(ELEMENTWISE,), verify=_verify_bitcast, interpret=_run_bitcast, family=FAMILY)
