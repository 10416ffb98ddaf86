"""Emitters of the math ops (commdsl/ops/math.py): the accurate algorithms of mathlib.py
built as LLVM IR, the exact roundings as single cvt instructions, and the `approx` variants
as PTX's .approx instructions."""
from __future__ import annotations

import math

from llvmlite import ir

from . import mathlib
from .asm import F32, I32, I64
from .emitters import emits

F64 = ir.DoubleType()


class LLVMOps:
    """mathlib's operations on one f32 (or i32) LLVM value at a time."""

    def __init__(self, cg):
        self.cg, self.b = cg, cg.b

    def f(self, c):
        return ir.Constant(F32, c)

    def i(self, c):
        return ir.Constant(I32, c)

    def _call(self, name, ret, *args):
        return self.cg.intrinsic(name, ret, list(args))

    def fma(self, a, b, c):
        return self._call("llvm.fma.f32", F32, a, b, c)

    def add(self, a, b):
        return self.b.fadd(a, b)

    def sub(self, a, b):
        return self.b.fsub(a, b)

    def mul(self, a, b):
        return self.b.fmul(a, b)

    def sqrt(self, a):
        return self._call("llvm.sqrt.f32", F32, a)     # sqrt.rn.f32

    def rcp_seed(self, a):
        asm = ir.InlineAsm(ir.FunctionType(F32, [F32]), "rcp.approx.ftz.f32 $0, $1;", "=f,f")
        return self.b.call(asm, [a])

    def fneg(self, a):
        return self.b.fneg(a)

    def fabs(self, a):
        return self._call("llvm.fabs.f32", F32, a)

    def minnum(self, a, b):
        return self._call("llvm.minnum.f32", F32, a, b)

    def maxnum(self, a, b):
        return self._call("llvm.maxnum.f32", F32, a, b)

    def bits(self, a):
        return self.b.bitcast(a, I32)

    def from_bits(self, i):
        return self.b.bitcast(i, F32)

    def i2f(self, i):
        return self.b.sitofp(i, F32)

    def iadd(self, a, b):
        return self.b.add(a, b)

    def isub(self, a, b):
        return self.b.sub(a, b)

    def imul(self, a, b):
        return self.b.mul(a, b)

    def shl(self, a, n):
        # One PTX shl, opaque to LLVM: as plain IR, the exponent shifts of every exp/log in a
        # large tile become candidates of LLVM's straight-line strength reduction, which
        # compares them pairwise: 5 s of LLVM time for a softmax of 8 x 1024 rows (0.4 s so).
        asm = ir.InlineAsm(ir.FunctionType(I32, [I32]), f"shl.b32 $0, $1, {n};", "=r,r")
        return self.b.call(asm, [a])

    def ashr(self, a, n):
        return self.b.ashr(a, self.i(n))

    def lshr(self, a, n):
        return self.b.lshr(a, self.i(n))

    def and_(self, a, b):
        return self.b.and_(a, b)

    def or_(self, a, b):
        return self.b.or_(a, b)

    def xor(self, a, b):
        return self.b.xor(a, b)

    def flt(self, a, b):
        return self.b.fcmp_ordered("<", a, b)

    def fge(self, a, b):
        return self.b.fcmp_ordered(">=", a, b)

    def feq(self, a, b):
        return self.b.fcmp_ordered("==", a, b)

    def ilt(self, a, b):
        return self.b.icmp_signed("<", a, b)

    def ieq(self, a, b):
        return self.b.icmp_signed("==", a, b)

    def isnan(self, a):
        return self.b.fcmp_unordered("uno", a, a)

    def select(self, c, a, b):
        return self.b.select(c, a, b)

    def table(self, words, index):
        """words[index] from a constant array in global memory (one per module)."""
        name = "commdsl_two_over_pi"
        table = self.cg.module.globals.get(name)
        if table is None:
            ty = ir.ArrayType(I32, len(words))
            table = ir.GlobalVariable(self.cg.module, ty, name, addrspace=1)
            table.global_constant, table.linkage, table.align = True, "internal", 4
            table.initializer = ir.Constant(ty, [w - (1 << 32) if w >= 1 << 31 else w
                                                 for w in words])
        return self.b.load(self.b.gep(table, [self.i(0), index]), typ=I32)

    def fshl(self, a, b, s):
        return self._call("llvm.fshl.i32", I32, a, b, s)   # shf.l.wrap.b32

    def zext64(self, a):
        return self.b.zext(a, I64)

    def trunc32(self, a):
        return self.b.trunc(a, I32)

    def mul64(self, a, b):
        return self.b.mul(a, b)

    def add64(self, a, b):
        return self.b.add(a, b)

    def shl64(self, a, n):
        return self.b.shl(a, ir.Constant(I64, n))

    def lshr64(self, a, n):
        return self.b.lshr(a, ir.Constant(I64, n))

    def or64(self, a, b):
        return self.b.or_(a, b)

    def ult64(self, a, b):
        return self.b.icmp_unsigned("<", a, b)

    def frac_to_f32(self, frac, k):
        return self.b.fptrunc(self.b.fmul(self.b.sitofp(frac, F64), ir.Constant(F64, k)), F32)


def _approx(cg, instruction: str, x):
    """One PTX .approx instruction (inline asm: the intrinsics' names vary across LLVMs)."""
    fn = ir.FunctionType(F32, [F32])
    return cg.b.call(ir.InlineAsm(fn, f"{instruction} $0, $1;", "=f,f"), [x])


def _fast_sigmoid(cg, x):
    """1 / (1 + 2^(-x log2 e)) on ex2.approx and rcp.approx: e^-x = inf below -88 gives 0."""
    e = _approx(cg, "ex2.approx.ftz.f32", cg.b.fmul(x, ir.Constant(F32, -mathlib.LOG2E)))
    return _approx(cg, "rcp.approx.ftz.f32", cg.b.fadd(ir.Constant(F32, 1.0), e))


_FAST = {
    "exp": lambda cg, x: _approx(cg, "ex2.approx.ftz.f32",
                                 cg.b.fmul(x, ir.Constant(F32, mathlib.LOG2E))),
    "exp2": lambda cg, x: _approx(cg, "ex2.approx.ftz.f32", x),
    "log": lambda cg, x: cg.b.fmul(_approx(cg, "lg2.approx.ftz.f32", x),
                                   ir.Constant(F32, math.log(2))),
    "log2": lambda cg, x: _approx(cg, "lg2.approx.ftz.f32", x),
    "rsqrt": lambda cg, x: _approx(cg, "rsqrt.approx.ftz.f32", x),
    "tanh": lambda cg, x: _approx(cg, "tanh.approx.f32", x),
    "sin": lambda cg, x: _approx(cg, "sin.approx.ftz.f32", x),
    "cos": lambda cg, x: _approx(cg, "cos.approx.ftz.f32", x),
    "sigmoid": _fast_sigmoid,
    "silu": lambda cg, x: cg.b.fmul(x, _fast_sigmoid(cg, x)),
}
_ROUNDING = {"floor": "llvm.floor.f32", "ceil": "llvm.ceil.f32", "round": "llvm.rint.f32"}


@emits(*mathlib.ACCURATE)
def emit_accurate(cg, op):
    if op.attrs.get("approx"):
        cg._map(op, lambda x: _FAST[op.name](cg, x))
    else:
        cg._map(op, lambda x: mathlib.ACCURATE[op.name](LLVMOps(cg), x))


@emits(*_ROUNDING)
def emit_rounding(cg, op):
    cg._map(op, lambda x: cg.intrinsic(_ROUNDING[op.name], F32, [x]))
