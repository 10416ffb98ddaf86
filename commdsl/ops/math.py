"""Math functions on f32 tiles and scalars: exp, log, sigmoid, ... (narrow floats are
promoted to f32 by irgen, integers are an error).

Each doc line states the max error of the default lowering against float64 over >= 10^6
inputs across the function's domain, with inf, NaN, -0 and subnormals: the algorithm of
backends/ptx/mathlib.py measured on emulated f32 instructions (tests/test_math.py), and on
the GPU by tests/test_gpu_math.py, which asserts the same bounds; `approx` ops
(the `fast_math` compile option, or a `fast_` spelling such as `fast_exp(t)`) use the PTX
`.approx` instructions instead, with the accuracy the `approx` attribute's line gives. The
CPU interpreter computes each in float64 and rounds once to f32 (correctly rounded but for
float64's own last-bit errors).
"""
from __future__ import annotations

from .arith import _elementwise
from .registry import ELEMENTWISE, KEEPS_NONNEGATIVE, NONNEGATIVE, Builtin, declare, fail

FAMILY = "math"


def _float_elementwise(op):
    _elementwise(op)
    if op.operands[0].type.dtype != "f32":
        fail(op, f"computes on f32, not {op.operands[0].type.dtype}")


def _in_f64(fn):
    """The interpreter's meaning: fn in float64, rounded once to the operand's dtype."""
    def run(ctx, op, a):
        return fn(a.double()).to(a.dtype)
    return run


def _torch(name):
    def fn(x):
        import torch
        return getattr(torch, name)(x)
    return fn


def _silu(x):
    import torch
    return torch.nn.functional.silu(x)


# name -> (CPU meaning in float64, doc with the accurate lowering's max error, fast variant)
FUNCTIONS = {
    "exp": (_torch("exp"), "e^a; max error 1.5 ulp (1.05 measured; range reduction + FMA "
            "polynomial)",
            "ex2.approx.ftz.f32 of a * log2(e): 2 ulp + about |a| ulp, subnormals flushed"),
    "exp2": (_torch("exp2"), "2^a; max error 1 ulp (0.95 measured)", "ex2.approx.ftz.f32: 2 ulp, "
             "subnormals flushed"),
    "log": (_torch("log"), "the natural logarithm; max error 1 ulp (0.92 measured)",
            "lg2.approx.ftz.f32 times ln 2: 2^-22 absolute near 1, a few ulp elsewhere"),
    "log2": (_torch("log2"), "the base-2 logarithm; max error 2 ulp (1.81 measured)",
             "lg2.approx.ftz.f32: 2^-22 absolute near 1, 2 ulp elsewhere"),
    "rsqrt": (_torch("rsqrt"), "1 / sqrt(a): sqrt.rn and a reciprocal seed, then a Newton step on "
              "their FMA residual; max error 1 ulp (0.5 measured: correctly rounded)",
              "rsqrt.approx.ftz.f32: 2 ulp"),
    "sigmoid": (_torch("sigmoid"), "1 / (1 + e^-a); max error 2 ulp (1.44 measured)",
                "rcp.approx(1 + ex2.approx(-a log2(e))): 2^-21 + |a| 2^-23 relative, "
                "0 below -87"),
    "silu": (_silu, "a * sigmoid(a); max error 4 ulp (3.14 measured)",
             "a times the fast sigmoid: 2^-21 + |a| 2^-23 relative, 0 below -87"),
    "tanh": (_torch("tanh"), "the hyperbolic tangent; max error 1 ulp (0.86 measured)",
             "tanh.approx.f32: about 2^-11 relative"),
    "erf": (_torch("erf"), "the error function; max error 3 ulp (2.46 measured)", None),
    "sin": (_torch("sin"), "the sine, any argument (Payne-Hanek reduction); max error 2 ulp "
            "(1.57 measured)",
            "sin.approx.ftz.f32: 2^-20.9 absolute in [-pi, pi], worse outside"),
    "cos": (_torch("cos"), "the cosine, any argument (Payne-Hanek reduction); max error 2 ulp "
            "(1.56 measured)",
            "cos.approx.ftz.f32: 2^-20.9 absolute in [-pi, pi], worse outside"),
    "floor": (_torch("floor"), "the largest integer <= a, exact (cvt.rmi)", None),
    "ceil": (_torch("ceil"), "the smallest integer >= a, exact (cvt.rpi)", None),
    "round": (_torch("round"), "the nearest integer, halves to even, exact (cvt.rni)", None),
}
# Ops with a fast variant: the language's `fast_NAME(t)`, or NAME under fast_math.
APPROX = frozenset(n for n, (_, _, fast) in FUNCTIONS.items() if fast)

_SIGN = {"exp": NONNEGATIVE, "exp2": NONNEGATIVE, "sigmoid": NONNEGATIVE,
         "rsqrt": KEEPS_NONNEGATIVE}
for _name, (_fn, _doc, _fast) in FUNCTIONS.items():
    declare(_name, f"{_name}(a) : T", _doc,
            traits=(ELEMENTWISE,) + ((_SIGN[_name],) if _name in _SIGN else ()),
            verify=_float_elementwise,
            interpret=_in_f64(_fn), family=FAMILY,
            attrs={"approx": f"the fast variant: {_fast}"} if _fast else None,
            builtin=Builtin(_name, f"{_name}(t)", floats_only=True))
