"""Accurate f32 math from range reduction and FMA polynomials, written once over abstract
operations so that the PTX backend (codegen.py, LLVM IR) and a CPU emulation of the same
instructions (tests/test_math.py) run the very same algorithm.

`o` is the operations object: float ops (fma, add, sub, mul: f32, round to nearest;
minnum, maxnum, fabs; rcp_seed: rcp.approx, only as a seed that a residual corrects: div_1_2
and rsqrt), integer ops on i32 (iadd, isub, shl, ashr, lshr, and_), i64 ops (for the
large-argument reduction of sin and cos), compares returning predicates (flt, fge, feq,
isnan, ilt), select, and conversions (bits, from_bits, i2f).

The polynomials were fitted by iteratively reweighted least squares on Chebyshev nodes
(near-minimax) in float64, then rounded to f32; their own error is far below an f32 ulp.
Each function's maximum error, measured against float64 over >= 10^6 inputs, is in its op's
doc line (commdsl/ops/math.py) and asserted by tests/test_math.py (this algorithm, emulated)
and tests/test_gpu_math.py (on the GPU).
"""
from __future__ import annotations

import math


def _coefficients(text: str) -> tuple[float, ...]:
    return tuple(float.fromhex(c) for c in text.split())


# Coefficients, highest degree first (Horner).
EXP2 = _coefficients(  # 2^f, |f| <= 1/2
    "0x1.41d32ep-13 0x1.5f456ap-10 0x1.3b2dbcp-7 "
    "0x1.c6aed4p-5 0x1.ebfbdap-3 0x1.62e43p-1 "
    "0x1p+0")
EXP = _coefficients(  # e^r, |r| <= ln2 / 2
    "0x1.6ab776p-10 0x1.126f0cp-7 0x1.5558a4p-5 "
    "0x1.555406p-3 0x1.fffffap-2 0x1p+0 "
    "0x1p+0")
LOG1P = _coefficients(  # (log1p(f) - f) / f^2, |f| <= 1/3
    "-0x1.082148p-3 0x1.1efbb2p-3 -0x1.f2d4b4p-4 "
    "0x1.1eb678p-3 -0x1.55a322p-3 0x1.99d262p-3 "
    "-0x1.fffeap-3 0x1.5555p-2 -0x1p-1")
TANH = _coefficients(  # (tanh(x) - x) / x^3 in x^2, |x| < 0.625
    "0x1.18e1c4p-9 -0x1.0bf4f6p-7 0x1.638b56p-6 "
    "-0x1.b9ee9p-5 0x1.111066p-3 -0x1.555554p-2")
ERF_SMALL = _coefficients(  # erf(x) / x in x^2, |x| < 1
    "0x1.496a28p-14 -0x1.a3f6fcp-11 0x1.5405b2p-8 "
    "-0x1.b7f90cp-6 0x1.ce2cf8p-4 -0x1.81273ep-2 "
    "0x1.20dd74p+0")
ERF_LARGE = _coefficients(  # log(erfc(x)), 1 <= x <= 4
    "-0x1.3d0668p-22 0x1.a6a3fp-18 -0x1.e5ccc6p-15 "
    "0x1.280d38p-12 -0x1.2bbd3ap-11 -0x1.00ce3cp-9 "
    "0x1.65f65ep-6 -0x1.ae5374p-4 -0x1.454f26p-1 "
    "-0x1.20f7d8p+0 0x1.e6f4a2p-15")
SIN = _coefficients(  # (sin(r) - r) / r^3 in r^2, |r| <= pi/4
    "0x1.6cc50ap-19 -0x1.a00f48p-13 0x1.111108p-7 "
    "-0x1.555556p-3")
COS = _coefficients(  # (cos(r) - 1 + r^2/2) / r^4 in r^2, |r| <= pi/4
    "-0x1.2414dcp-22 0x1.a010bp-16 -0x1.6c16b8p-10 "
    "0x1.555556p-5")

# ln 2 = LN2_HI + LN2_LO, LN2_HI the nearest f32
LN2_HI, LN2_LO = float.fromhex("0x1.62e43p-1"), float.fromhex("-0x1.05c61p-29")
# 1.5 * 2^23: a float of magnitude < 2^22 plus MAGIC lies where the f32 spacing is 1, so the
# sum is rounded to an integer (nearest, ties to even), held in its low mantissa bits:
# bits(MAGIC + n) = MAGIC_BITS + n. One FFMA and one FADD where cvt.rni and cvt.rzi.s32
# take two conversions (quarter rate on Hopper).
MAGIC, MAGIC_BITS = 12582912.0, 0x4B400000
LOG2E = float.fromhex("0x1.715476p+0")
# 2/pi's bits after the point, 32 to a word, after two words of zeros: the window a large
# argument needs starts up to 25 bits before the point (Payne and Hanek's reduction).
TWO_OVER_PI = (0x0, 0x0, 0xa2f9836e, 0x4e441529, 0xfc2757d1, 0xf534ddc0, 0xdb629599,
               0x3c439041, 0xfe5163ab, 0xdebbc561, 0xb7246e3a)
INF = math.inf


def horner(o, x, coeffs):
    acc = o.f(coeffs[0])
    for c in coeffs[1:]:
        acc = o.fma(acc, x, o.f(c))
    return acc


def rint_magic(o, t, bias=0.0):
    """(n, ni): t = MAGIC + bias + n (an FMA or add that rounded to an integer n), n as a
    float and as an i32."""
    return o.sub(t, o.f(MAGIC + bias)), o.isub(o.bits(t), o.i(MAGIC_BITS + int(bias)))


def scale(o, p, ni):
    """p * 2^ni for an i32 ni in [-252, 129] and p in [1/2, 2]: two exact steps and one final
    rounding, so subnormal and overflowing results round once."""
    h = o.ashr(ni, 1)
    p = o.mul(p, o.from_bits(o.shl(o.iadd(h, o.i(127)), 23)))
    return o.mul(p, o.from_bits(o.shl(o.iadd(o.isub(ni, h), o.i(127)), 23)))


def _nan_through(o, x, r):
    return o.select(o.isnan(x), o.add(x, x), r)


def exp2(o, x):
    xc = o.maxnum(o.minnum(x, o.f(128.0)), o.f(-150.0))
    n, ni = rint_magic(o, o.add(xc, o.f(MAGIC)))
    return _nan_through(o, x, scale(o, horner(o, o.sub(xc, n), EXP2), ni))


def exp_parts(o, x, nonpositive=False, bias=0.0):
    """(p, t) with e^x = p * 2^n: n = rint(x / ln 2), p = e^r for r = x - n ln 2 reduced with
    ln 2 in two parts (Cody and Waite), each step one FMA; t = MAGIC + bias + n
    (rint_magic). `nonpositive`: x is -|a| for some a, so the upper clamp has nothing to
    do."""
    xc = o.maxnum(x if nonpositive else o.minnum(x, o.f(89.0)), o.f(-112.0))
    t = o.fma(xc, o.f(LOG2E), o.f(MAGIC + bias))
    n = rint_magic(o, t, bias)[0]
    r = o.fma(o.fneg(n), o.f(LN2_HI), xc)
    r = o.fma(o.fneg(n), o.f(LN2_LO), r)
    return horner(o, r, EXP), t


def exp(o, x):
    p, t = exp_parts(o, x)
    return _nan_through(o, x, scale(o, p, rint_magic(o, t)[1]))


def div_1_2(o, a, d, lows=None):
    """a / d for d in [1, 2]: a quotient from a reciprocal seed (rcp.approx, 1 ulp), then
    one correction by its FMA residual. For 2^-100 <= |a| < 2^126 that is within 0.5 ulp +
    2^-21 ulp (correctly rounded but for quotients that close to a rounding midpoint; none
    among 2^20 random ones), within 1 ulp below (where the residual is subnormal). Four
    instructions without a branch, where div.rn's range check and the branch around its slow
    path keep ptxas from interleaving the divisions of a tile. `lows` = (a_lo or None, d_lo):
    the rounding errors of a and d, put into the residual, divides a + a_lo by d + d_lo.
    The residual is kept negated (d q - a), so that a = -0 gives q - r (+0) = -0, where
    q + r (a - d q) would be -0 + +0 = +0."""
    r = o.rcp_seed(d)
    q = o.mul(a, r)
    nres = o.fma(d, q, o.fneg(a))
    if lows is not None:
        a_lo, d_lo = lows
        nres = o.fma(d_lo, q, nres if a_lo is None else o.sub(nres, a_lo))
    return o.fma(o.fneg(r), nres, q)


def _log_parts(o, x):
    """(log(m), e) with x = m 2^e, m in [2/3, 4/3): log(m) = f + f^2 P(f) for f = m - 1 (exact)."""
    tiny = o.flt(x, o.f(2.0 ** -126))                 # subnormals: scale by 2^23 first
    xs = o.select(tiny, o.mul(x, o.f(2.0 ** 23)), x)
    i = o.isub(o.bits(xs), o.i(0x3F2AAAAB))        # the bits of 2/3
    e = o.ashr(i, 23)
    f = o.sub(o.from_bits(o.isub(o.bits(xs), o.shl(e, 23))), o.f(1.0))
    e = o.i2f(o.isub(e, o.select(tiny, o.i(23), o.i(0))))
    r = o.fma(o.mul(f, f), horner(o, f, LOG1P), f)
    return r, e


def _log_special(o, x, r):
    """log of 0 is -inf, of a negative number NaN, of inf inf, of NaN NaN."""
    special = o.select(o.feq(x, o.f(0.0)), o.f(-INF),
                       o.select(o.feq(x, o.f(INF)), x, o.f(math.nan)))
    finite_positive = o.and_(o.flt(o.f(0.0), x), o.flt(x, o.f(INF)))
    return o.select(finite_positive, r, special)


def log(o, x):
    r, e = _log_parts(o, x)
    return _log_special(o, x, o.fma(e, o.f(LN2_HI), o.fma(e, o.f(LN2_LO), r)))


def log2(o, x):
    r, e = _log_parts(o, x)
    return _log_special(o, x, o.fma(r, o.f(LOG2E), e))


def sigmoid(o, x):
    """1 / (1 + e^-x) for x >= 0, e^x / (1 + e^x) below: e^-|x| never overflows. The divisor's
    rounding error (Fast2Sum: 1 >= e) goes into the division's residual."""
    e = exp(o, o.fneg(o.fabs(x)))
    d = o.add(o.f(1.0), e)
    d_lo = o.sub(e, o.sub(d, o.f(1.0)))
    return div_1_2(o, o.select(o.fge(x, o.f(0.0)), o.f(1.0), e), d, (None, d_lo))


def silu(o, x):
    """x / (1 + e^-x) for x >= 0, x e^x / (1 + e^x) below, one division for both: below 0
    the numerator is x (e^x 2^64), so that a subnormal e^x does not lose the bits a normal
    x e^x keeps, and the quotient is scaled back by 2^-64 (one rounding). e^-|x| is that
    2^64-scaled power times 2^-64: exact where it is normal, and where it is not, 1 + e^-|x|
    is 1 either way. The 2^64-scaled power is always normal, so it needs no scale()."""
    p, t = exp_parts(o, o.fneg(o.fabs(x)), nonpositive=True, bias=64.0)
    # p 2^(n + 64) by adding n + 64 to p's exponent bits: with n >= -162 (x clamped at -112)
    # it is a normal number, so that is exact, and 2 instructions where scale() takes 9.
    # t's bits are MAGIC_BITS + n + 64, and MAGIC_BITS << 23 wraps to 0.
    big = o.from_bits(o.iadd(o.bits(p), o.shl(o.bits(t), 23)))
    d = o.fma(big, o.f(2.0 ** -64), o.f(1.0))
    positive = o.fge(x, o.f(0.0))
    q = div_1_2(o, o.select(positive, x, o.mul(x, big)), d)
    # silu(x) <= x from 0 on, and q is x where x / (1 + e^-x) rounds to x (from 18 on), but
    # NaN at x = inf (div_1_2's residual is inf - inf): min(q, x) is q but there, where it is
    # inf (and -0 at -0, however min orders -0 and +0: min(q, |x|) would lean on that).
    r = o.select(positive, o.minnum(q, x), o.mul(q, o.f(2.0 ** -64)))
    return o.select(o.flt(x, o.f(-112.0)), o.mul(x, o.f(0.0)), r)   # -0 below 2^-150; -inf: NaN


def _copysign(o, mag, x):
    sign = o.and_(o.bits(x), o.i(-0x80000000))
    return o.from_bits(o.or_(o.bits(mag), sign))


def tanh(o, x):
    """x + x^3 P(x^2) below 0.625, else (1 - e) / (1 + e) for e = e^-2|x| in (0, 0.29]: no
    cancellation, a divisor in [1, 2] (div_1_2), and 1 once e underflows."""
    ax = o.fabs(x)
    s = o.mul(ax, ax)
    small = o.fma(o.mul(ax, s), horner(o, s, TANH), ax)
    e = exp(o, o.fneg(o.add(ax, ax)))
    n, d = o.sub(o.f(1.0), e), o.add(o.f(1.0), e)
    # their rounding errors, exactly (Fast2Sum: 1 >= e)
    lows = (o.sub(o.sub(o.f(1.0), n), e), o.sub(e, o.sub(d, o.f(1.0))))
    large = div_1_2(o, n, d, lows)
    return _copysign(o, o.select(o.flt(ax, o.f(0.625)), small, large), x)


def erf(o, x):
    """x P(x^2) below 1, else 1 - e^Q(|x|) with Q fitted to log(erfc); 1 from 4 on."""
    s = o.mul(x, x)
    small = o.mul(x, horner(o, s, ERF_SMALL))
    ax = o.minnum(o.fabs(x), o.f(4.0))
    large = o.sub(o.f(1.0), exp(o, horner(o, ax, ERF_LARGE)))
    r = o.select(o.flt(o.fabs(x), o.f(1.0)), small, _copysign(o, large, x))
    return _nan_through(o, x, r)


def _reduce_quadrant(o, ax):
    """(q, r) with |x| = (q + r / (pi/2)) pi/2 mod 2 pi, |r| <= pi/4, for |x| >= pi/4: the
    product of x's 24-bit mantissa with a 96-bit window of 2/pi's bits (the bits that do not
    add whole turns), kept mod 2^96; its top 2 bits are the quadrant, the next 64 the
    fraction, rounded to the nearest quadrant and made a float through f64."""
    bits = o.bits(ax)
    mant = o.or_(o.and_(bits, o.i(0x7FFFFF)), o.i(0x800000))
    t0 = o.iadd(o.lshr(bits, 23), o.i(-150 - 1 + 63))   # the window's first bit, from x's exponent
    t0 = o.select(o.ilt(t0, o.i(0)), o.i(0), t0)        # (|x| < 2^-25: unused, kept in the table)
    q = o.lshr(t0, 5)
    s = o.and_(t0, o.i(31))
    w = [o.table(TWO_OVER_PI, o.iadd(q, o.i(k))) for k in range(4)]
    hi, mid, lo = (o.fshl(w[k], w[k + 1], s) for k in range(3))
    m64 = o.zext64(mant)
    p_lo = o.mul64(m64, o.zext64(lo))                  # < 2^56
    p_mid = o.mul64(m64, o.zext64(mid))
    low = o.add64(p_lo, o.shl64(p_mid, 32))            # bits 0..63 of the product
    carry = o.select(o.ult64(low, p_lo), o.i(1), o.i(0))
    top = o.iadd(o.iadd(o.trunc32(o.lshr64(p_mid, 32)), carry), o.imul(mant, hi))  # bits 64..95
    frac = o.or64(o.shl64(o.zext64(top), 34), o.lshr64(low, 30))   # bits 30..93 of the product
    quadrant = o.iadd(o.lshr(top, 30), o.trunc32(o.lshr64(frac, 63)))  # round to nearest
    r = o.frac_to_f32(frac, math.pi / 2 * 2.0 ** -64)  # frac as a signed i64 times pi/2 / 2^64
    small = o.flt(ax, o.f(math.pi / 4))
    return o.select(small, o.i(0), quadrant), o.select(small, ax, r)


def _sin_cos_of_reduced(o, r):
    s = o.mul(r, r)
    sin = o.fma(o.mul(r, s), horner(o, s, SIN), r)
    cos = o.fma(o.mul(s, s), horner(o, s, COS), o.fma(s, o.f(-0.5), o.f(1.0)))
    return sin, cos


def _pick(o, q, sin, cos, shift: int):
    """The quadrant's value of sin (shift 0) or cos (shift 1): q -> [s, c, -s, -c][q % 4]."""
    q = o.iadd(q, o.i(shift))
    v = o.select(o.ieq(o.and_(q, o.i(1)), o.i(0)), sin, cos)
    return o.select(o.ieq(o.and_(q, o.i(2)), o.i(0)), v, o.fneg(v))


def sin(o, x):
    ax = o.fabs(x)
    q, r = _reduce_quadrant(o, ax)
    s, c = _sin_cos_of_reduced(o, r)
    v = _pick(o, q, s, c, 0)
    v = o.from_bits(o.xor(o.bits(v), o.and_(o.bits(x), o.i(-0x80000000))))    # sin is odd
    return o.select(o.flt(ax, o.f(INF)), v, o.sub(x, x))


def cos(o, x):
    ax = o.fabs(x)
    q, r = _reduce_quadrant(o, ax)
    s, c = _sin_cos_of_reduced(o, r)
    return o.select(o.flt(ax, o.f(INF)), _pick(o, q, s, c, 1), o.sub(x, x))


def rsqrt(o, x):
    """1 / sqrt(x) from sqrt.rn and a reciprocal seed (rcp.approx: 1.5 ulp together, without
    div.rn's slow path), then one Newton step y (1 + e / 2) on
    the residual e = 1 - x y^2, which two FMAs compute nearly exactly (y^2 as a rounded
    product and its exact error); the step's one rounding leaves the result within about
    0.5 ulp. x is scaled by 2^-+100 first so that y^2 stays normal."""
    tiny, huge = o.flt(x, o.f(2.0 ** -100)), o.flt(o.f(2.0 ** 100), x)
    xs = o.mul(x, o.select(tiny, o.f(2.0 ** 100), o.select(huge, o.f(2.0 ** -100), o.f(1.0))))
    y = o.rcp_seed(o.sqrt(xs))
    h = o.mul(y, y)
    low = o.fma(y, y, o.fneg(h))
    e = o.fma(o.fneg(xs), low, o.fma(o.fneg(xs), h, o.f(1.0)))
    y = o.fma(o.mul(y, o.f(0.5)), e, y)
    y = o.mul(y, o.select(tiny, o.f(2.0 ** 50), o.select(huge, o.f(2.0 ** -50), o.f(1.0))))
    finite_positive = o.and_(o.flt(o.f(0.0), x), o.flt(x, o.f(INF)))
    return o.select(finite_positive, y, o.rcp_seed(o.sqrt(x)))   # 0, inf, < 0, NaN


ACCURATE = {"exp": exp, "exp2": exp2, "log": log, "log2": log2, "sigmoid": sigmoid,
            "silu": silu, "tanh": tanh, "erf": erf, "sin": sin, "cos": cos, "rsqrt": rsqrt}
