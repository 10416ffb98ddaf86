"""Operand tests the verifier rules of several op families share."""
from __future__ import annotations

from commdsl.ir import ScalarType


def is_i32(v) -> bool:
    return isinstance(v.type, ScalarType) and v.type.dtype == "i32"


def shape_of(t):
    """A type without its layout: carried tiles get theirs from passes one end at a time."""
    return (type(t).__name__, t.dtype, getattr(t, "shape", None))
