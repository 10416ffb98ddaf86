"""The PTX instructions backends/ptx/mathlib.py builds on, emulated with numpy on arrays:
f32 ops round to nearest once (an FMA as the f64 sum of an exact f64 product, then rounded
to f32: a double rounding that may differ from the GPU's FMA in the last bit, rarely), i32
and i64 ops wrap. It lets the CPU tests measure the accurate algorithms' error over millions
of inputs, as tests/test_gpu_math.py measures the code the backend emits."""
import numpy as np

F32, F64, I32, U32, I64, U64 = np.float32, np.float64, np.int32, np.uint32, np.int64, np.uint64


class NumpyOps:
    def f(self, c):
        return F32(c)

    def i(self, c):
        return I32(c)

    def fma(self, a, b, c):
        return (F64(a) * F64(b) + F64(c)).astype(F32)

    def add(self, a, b):
        return F32(a) + F32(b)

    def sub(self, a, b):
        return F32(a) - F32(b)

    def mul(self, a, b):
        return F32(a) * F32(b)

    def sqrt(self, a):
        return np.sqrt(F32(a))

    def rcp_seed(self, a):
        """rcp.approx (within 1 ulp on the GPU): the correctly rounded reciprocal, one ulp
        off where the divisor's last bit is set, so the tests see a seed that is not exact."""
        r = F32(1) / F32(a)
        return np.where(np.asarray(a, F32).view(I32) & 1, np.nextafter(r, F32(0)), r)

    def fneg(self, a):
        return -a

    def fabs(self, a):
        return np.abs(a)

    def minnum(self, a, b):
        return np.fmin(a, b)

    def maxnum(self, a, b):
        return np.fmax(a, b)

    def bits(self, a):
        return np.asarray(a, F32).view(I32)

    def from_bits(self, i):
        return np.asarray(i, I32).view(F32)

    def i2f(self, i):
        return np.asarray(i).astype(F32)

    def iadd(self, a, b):
        return (np.asarray(a, I32) + b).astype(I32)

    def isub(self, a, b):
        return (np.asarray(a, I32) - b).astype(I32)

    def imul(self, a, b):
        return (np.asarray(a, I32).view(U32) * np.asarray(b, I32).view(U32)).view(I32)

    def shl(self, a, n):
        return (np.asarray(a, I32).view(U32) << U32(n)).view(I32)

    def ashr(self, a, n):
        return np.asarray(a, I32) >> I32(n)

    def lshr(self, a, n):
        return (np.asarray(a, I32).view(U32) >> U32(n)).view(I32)

    def and_(self, a, b):
        return a & b

    def or_(self, a, b):
        return a | b

    def xor(self, a, b):
        return a ^ b

    def flt(self, a, b):
        return np.less(a, b)

    def fge(self, a, b):
        return np.greater_equal(a, b)

    def feq(self, a, b):
        return np.equal(a, b)

    def ilt(self, a, b):
        return np.less(a, b)

    def ieq(self, a, b):
        return np.equal(a, b)

    def isnan(self, a):
        return np.isnan(a)

    def select(self, c, a, b):
        return np.where(c, a, b)

    def table(self, words, index):
        return np.asarray(words, U32)[np.asarray(index)].view(I32)

    def fshl(self, a, b, s):
        """PTX shf.l.wrap: the high word of (a:b) << s."""
        a64 = (self.zext64(a) << U64(32)) | self.zext64(b)
        return ((a64 << np.asarray(s).astype(U64)) >> U64(32)).astype(U32).view(I32)

    def zext64(self, a):
        return np.asarray(a, I32).view(U32).astype(U64)

    def trunc32(self, a):
        return np.asarray(a, U64).astype(U32).view(I32)

    def mul64(self, a, b):
        return a * b

    def add64(self, a, b):
        return a + b

    def shl64(self, a, n):
        return a << U64(n)

    def lshr64(self, a, n):
        return a >> U64(n)

    def or64(self, a, b):
        return a | b

    def ult64(self, a, b):
        return np.less(a, b)

    def frac_to_f32(self, frac, k):
        return (np.asarray(frac, U64).view(I64).astype(F64) * k).astype(F32)

