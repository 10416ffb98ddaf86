"""Scalar and elementwise arithmetic: constants, the program id, math on tiles or scalars."""
from __future__ import annotations

from commdsl.dtypes import dtype as dtype_info
from commdsl.ir import TileType

from .registry import (ANY_NONNEGATIVE, CONSTANT, ELEMENTWISE, INDEX, KEEPS_NONNEGATIVE,
                       NONNEGATIVE, PER_CTA, Builtin, declare, fail)

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


# ---- CPU meaning (commdsl/interpreter.py): i32 scalars are ints, floats 0-d tensors -------

def _run_const(ctx, op):
    from commdsl.cpu_numerics import scalar
    return scalar(op.attrs["value"], op.result.type.dtype)


def _run_pid(ctx, op):
    return ctx.pid[op.attrs["axis"]]


def _run_div(ctx, op, a, b):
    if isinstance(a, int) and isinstance(b, int):  # C division: toward zero
        q = abs(a) // abs(b)
        return q if (a >= 0) == (b > 0) else -q
    if dtype_info(op.result.type.dtype).is_int:     # integer tiles truncate too
        import torch
        return torch.div(a, b, rounding_mode="trunc")
    return a / b


def _run_rem(ctx, op, a, b):
    import math
    return int(math.fmod(a, b)) if isinstance(a, int) else a.fmod(b)


def _minmax(which: str, propagate_nan: bool):
    """max/min: integers as Python's or torch's; floats as PTX's max.NaN.f32 (propagate_nan)
    or max.f32 (commdsl/cpu_numerics.py)."""
    def run(ctx, op, a, b):
        import torch
        if isinstance(a, int) and isinstance(b, int):
            return (max if which == "max" else min)(a, b)
        # An integer scalar from a load is a 0-d tensor, a constant a Python int.
        if isinstance(a, int):
            a = torch.tensor(a, dtype=b.dtype)
        if isinstance(b, int) and not a.is_floating_point():
            b = torch.tensor(b, dtype=a.dtype)
        if not a.is_floating_point():
            return torch.maximum(a, b) if which == "max" else torch.minimum(a, b)
        from commdsl.cpu_numerics import minmax
        return minmax(a, b, which, propagate_nan)
    return run


_RUN_BINARY = {
    "add": lambda ctx, op, a, b: a + b,
    "sub": lambda ctx, op, a, b: a - b,
    "mul": lambda ctx, op, a, b: a * b,
    "div": _run_div,
    "rem": _run_rem,
    "max": _minmax("max", propagate_nan=True),
    "min": _minmax("min", propagate_nan=True),
    "nanmax": _minmax("max", propagate_nan=False),
    "nanmin": _minmax("min", propagate_nan=False),
}


def _run_neg(ctx, op, a):
    return -a


def _run_abs(ctx, op, a):
    return abs(a)


def _run_sqrt(ctx, op, a):
    # f64's root rounded once is sqrt.rn's for f32 inputs; torch's own f32 sqrt on the CPU
    # is off by an ulp for about 1 input in 6 (measured on AVX-512).
    return a.double().sqrt().to(a.dtype)


def _run_fma(ctx, op, a, b, c):
    from commdsl.cpu_numerics import fma_f32
    return fma_f32(a, b, c).to(a.dtype)


def _run_recip(ctx, op, a):
    if op.result.type.dtype == "ue8m0":           # 2^-(e - 127) is the byte 254 - e
        import torch
        return torch.where(a == 0xFF, a, 254 - a)
    return 1.0 / a                                # rcp.rn: correctly rounded


def _run_convert(ctx, op, a):
    from commdsl.cpu_numerics import convert
    return convert(a, op.operands[0].type.dtype, op.result.type.dtype)


declare("const", "const() {value} : T", "a compile-time scalar",
        traits=(CONSTANT,), attrs={"value": "the number (int or float)"},
        interpret=_run_const, family=FAMILY)
declare("pid", "pid() {axis} : i32", "this program's index along a grid axis",
        traits=(INDEX, PER_CTA), attrs={"axis": "the grid axis, 0 .. 2"}, interpret=_run_pid,
        family=FAMILY)

_BINARY = {
    "add": "a + b",
    "sub": "a - b",
    "mul": "a * b",
    "div": "a / b (integers: rounded toward zero)",
    "rem": "a - b * (a / b): the remainder with the sign of a",
    "max": "the larger of a and b, NaN if either is (+0 > -0; PTX max.NaN)",
    "min": "the smaller of a and b, NaN if either is (+0 > -0; PTX min.NaN)",
    "nanmax": "the larger of a and b, leaving a NaN out (NaN if both are; PTX max)",
    "nanmin": "the smaller of a and b, leaving a NaN out (NaN if both are; PTX min)",
}
_CALLED = {name: Builtin(name, f"{name}(a, b)", arity=2)     # the others are + - * / %
           for name in ("max", "min", "nanmax", "nanmin")}
_SIGN = {"add": KEEPS_NONNEGATIVE, "mul": KEEPS_NONNEGATIVE, "div": KEEPS_NONNEGATIVE,
         "min": KEEPS_NONNEGATIVE, "nanmin": KEEPS_NONNEGATIVE, "max": ANY_NONNEGATIVE,
         "nanmax": ANY_NONNEGATIVE}
for _name, _doc in _BINARY.items():
    declare(_name, f"{_name}(a, b) : T", _doc,
            traits=(ELEMENTWISE,) + ((_SIGN[_name],) if _name in _SIGN else ()), verify=_elementwise,
            interpret=_RUN_BINARY[_name], family=FAMILY, builtin=_CALLED.get(_name))
declare("neg", "neg(a) : T", "-a", traits=(ELEMENTWISE,), verify=_elementwise,
        interpret=_run_neg, family=FAMILY)
declare("abs", "abs(a) : T", "|a|", traits=(ELEMENTWISE, NONNEGATIVE), verify=_elementwise,
        interpret=_run_abs, family=FAMILY, builtin=Builtin("abs", "abs(t)", floats_only=True))
declare("sqrt", "sqrt(a) : T", "the square root, correctly rounded (NaN below 0)",
        traits=(ELEMENTWISE, KEEPS_NONNEGATIVE), verify=_elementwise, interpret=_run_sqrt, family=FAMILY,
        builtin=Builtin("sqrt", "sqrt(t)", floats_only=True))
declare("fma", "fma(a, b, c) : T", "a * b + c, rounded once",
        traits=(ELEMENTWISE, KEEPS_NONNEGATIVE),
        verify=_elementwise, interpret=_run_fma, family=FAMILY,
        builtin=Builtin("fma", "fma(a, b, c)", arity=3, floats_only=True))
declare("recip", "recip(a) : T", "1 / a, correctly rounded (ue8m0: the exponent negated)",
        traits=(ELEMENTWISE, KEEPS_NONNEGATIVE), verify=_elementwise, interpret=_run_recip, family=FAMILY)
declare("convert", "convert(a) : U",
        "a in another dtype, same shape: round to nearest, saturating to FP8",
        traits=(ELEMENTWISE, KEEPS_NONNEGATIVE), verify=_convert, interpret=_run_convert, family=FAMILY)
