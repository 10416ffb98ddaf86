"""Compile-time arithmetic on literals and constants, checked.

Constants (`const`, `tune`, `-D`) and literal subexpressions of a kernel body fold here, so a
division by zero, a dtype used as a number or a result that is not a finite number is a
located error instead of a Python exception or a silent 0.
"""
from __future__ import annotations

import math

from .diagnostics import CompileError, Span

_OPS = {"+": "add", "-": "subtract", "*": "multiply", "/": "divide", "%": "take the remainder",
        "&": "and", "|": "or", "^": "xor", "<<": "shift", ">>": "shift"}
_ARITHMETIC = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
               "/": lambda a, b: a / b}
# Integer-only ops. `/` and `%` of integers truncate toward zero (the remainder takes the
# dividend's sign), as div.s32 and rem.s32 do at run time, so folding never changes a result.
_INTEGER = {"/": lambda a, b: abs(a) // abs(b) * (1 if (a < 0) == (b < 0) else -1),
            "%": lambda a, b: a - b * _INTEGER["/"](a, b),
            "&": lambda a, b: a & b, "|": lambda a, b: a | b, "^": lambda a, b: a ^ b,
            "<<": lambda a, b: a << b, ">>": lambda a, b: a >> b}
INT64 = range(-2 ** 63, 2 ** 63)


def number(value, span: Span | None, what: str = "a constant expression"):
    """`value` itself, after checking it is a number: a dtype constant (`e4m3`) is not one."""
    if isinstance(value, str):
        raise CompileError(f"the dtype {value} is used as a number in {what}", span,
                           "dtypes name element types: use them in a parameter's type, "
                           "cast<...>(...) or zeros(...), and numbers in arithmetic")
    return value


def _finite(value, span: Span | None):
    if isinstance(value, float) and not math.isfinite(value):
        raise CompileError(f"a constant expression folds to {value}", span,
                           "compile-time arithmetic must stay finite")
    return value


def fold_binary(op: str, a, b, span: Span | None, rhs_span: Span | None):
    """`a op b` for folded operands; `/` of two integers is integer division, as in sizes."""
    if op not in _OPS:
        raise CompileError(f"'{op}' does not fold at compile time", span,
                           "constants take + - * / % & | ^ << >> and cdiv(a, b)")
    a, b = number(a, span), number(b, span)
    if op in ("/", "%") and b == 0:
        raise CompileError("division by zero in a constant expression" if op == "/" else
                           "remainder of a division by zero in a constant expression",
                           rhs_span or span, "the divisor folds to 0 at compile time")
    integers = isinstance(a, int) and isinstance(b, int)
    if op not in _ARITHMETIC and not integers:
        raise CompileError(f"'{op}' is for integers, got {a} {op} {b}", span,
                           "convert a float with cast<i32>(...) first, or write integer literals")
    if op in ("<<", ">>") and b not in range(64):
        raise CompileError(f"a shift by {b} bits", rhs_span or span,
                           "shift counts run from 0 to 63")
    try:
        result = (_INTEGER if integers and op in _INTEGER else _ARITHMETIC)[op](a, b)
    except OverflowError:
        raise CompileError(f"cannot {_OPS[op]} {a} and {b}: the result is out of range", span,
                           "compile-time arithmetic must stay finite") from None
    if isinstance(result, int) and result not in INT64:
        raise CompileError(f"a constant expression folds to {result}, past 64-bit integers",
                           span, "compile-time integers must fit in i64")
    return _finite(result, span)


def fold_cdiv(a, b, span: Span | None, divisor_span: Span | None):
    """cdiv(a, b) = ceil(a / b) of integers."""
    a, b = number(a, span), number(b, span)
    if not isinstance(a, int) or not isinstance(b, int):
        raise CompileError(f"cdiv takes integers, got cdiv({a}, {b})", span,
                           "cdiv(a, b): ceil(a / b) of integers")
    if b == 0:
        raise CompileError("division by zero in cdiv", divisor_span or span,
                           "the divisor folds to 0 at compile time")
    return -(-a // b)


def fold_neg(a, span: Span | None):
    return -number(a, span)
