"""max/min propagate NaN and nanmax/nanmin leave it out, elementwise and as reductions, with
+0 > -0 (docs/language.md, "NaN, Inf and -0.0"): the interpreter against a scalar reference
written from the PTX rules, the PTX instructions each form lowers to, and (marked gpu) the
GPU against the interpreter bit for bit."""
import itertools
import math
import struct

import pytest
import torch

import commdsl
from commdsl.compiler import compile_source
from commdsl.diagnostics import CompileError

NAN, INF = float("nan"), float("inf")
SPECIALS = [NAN, INF, -INF, 0.0, -0.0, 1.0, -1.0, 3.5]
CANONICAL_NAN = 0x7FFFFFFF

ELEMENTWISE = """
kernel pairs(a: f32[N], b: f32[N], mx: out f32[N], mn: out f32[N], nmx: out f32[N],
             nmn: out f32[N])
  grid(cdiv(N, 128))
{
  let x = load a[pid.0 * 128 : +128]
  let y = load b[pid.0 * 128 : +128]
  store mx[pid.0 * 128 : +128] = max(x, y)
  store mn[pid.0 * 128 : +128] = min(x, y)
  store nmx[pid.0 * 128 : +128] = nanmax(x, y)
  store nmn[pid.0 * 128 : +128] = nanmin(x, y)
}
"""

REDUCTIONS = """
kernel rows(x: f32[M, N], mx: out f32[M], mn: out f32[M], am: out f32[M], nmx: out f32[M],
            nmn: out f32[M])
  grid(M)
  warps(2)
{
  let t = load x[pid.0 : +1, 0 : +64]
  store mx[pid.0 : +1] = max(t, axis = 1)
  store mn[pid.0 : +1] = min(t, axis = 1)
  store am[pid.0 : +1] = amax(t, axis = 1)
  store nmx[pid.0 : +1] = nanmax(t, axis = 1)
  store nmn[pid.0 : +1] = nanmin(t, axis = 1)
}
"""


def _bits(x: float) -> int:
    return struct.unpack("<I", struct.pack("<f", x))[0]


def ref_minmax(a: float, b: float, which: str, propagate: bool) -> int:
    """The PTX rules as bits: NaN as said, +0 > -0, else the larger (smaller)."""
    if math.isnan(a) or math.isnan(b):
        if propagate or (math.isnan(a) and math.isnan(b)):
            return CANONICAL_NAN
        return _bits(b if math.isnan(a) else a)
    if a == b == 0:
        neg = (math.copysign(1, a) < 0) and (math.copysign(1, b) < 0) if which == "max" else (
            math.copysign(1, a) < 0) or (math.copysign(1, b) < 0)
        return _bits(-0.0 if neg else 0.0)
    return _bits((max if which == "max" else min)(a, b))


def ref_reduce(row, which: str, propagate: bool) -> int:
    acc = row[0]
    for v in row[1:]:
        acc = struct.unpack("<f", struct.pack("<I", ref_minmax(acc, v, which, propagate)))[0]
    return _bits(acc)


def _pairs():
    a, b = zip(*itertools.product(SPECIALS, SPECIALS))
    n = 128
    pad = n - len(a)
    return (torch.tensor(list(a) + [2.0] * pad), torch.tensor(list(b) + [-2.0] * pad))


def _rows(n):
    """Rows of n values: each special alone among ordinary values, NaN beside Inf, zeros of
    both signs in both orders, NaN everywhere, NaN only past n (never read)."""
    base = torch.linspace(-3, 3, n)
    rows = []
    for v in SPECIALS:
        for at in (0, n // 2, n - 1):
            r = base.clone()
            r[at] = v
            rows.append(r)
    for first, second in ((NAN, INF), (INF, NAN), (NAN, -INF), (0.0, -0.0), (-0.0, 0.0)):
        r = torch.zeros(n)
        r[0], r[-1] = first, second
        rows.append(r)
    rows += [torch.full((n,), -0.0), torch.full((n,), NAN), torch.full((n,), -INF)]
    return torch.stack(rows)


def _as_bits(t):
    return [x & 0xFFFFFFFF for x in t.contiguous().view(torch.int32).tolist()]


def test_elementwise_follow_the_ptx_rules():
    a, b = _pairs()
    mx, mn, nmx, nmn = commdsl.load(ELEMENTWISE).interpret(a, b)
    for out, which, prop in ((mx, "max", True), (mn, "min", True), (nmx, "max", False),
                             (nmn, "min", False)):
        want = [ref_minmax(x, y, which, prop) for x, y in zip(a.tolist(), b.tolist())]
        assert _as_bits(out) == want, f"{'' if prop else 'nan'}{which}"


@pytest.mark.parametrize("n", [64, 50])
def test_reductions_follow_the_ptx_rules(n):
    """n = 50: the tile of 64 reads past the row's end; what it did not read is left out."""
    x = _rows(n)
    mx, mn, am, nmx, nmn = commdsl.load(REDUCTIONS).interpret(x)
    rows = x.tolist()
    for out, which, prop, f in ((mx, "max", True, None), (mn, "min", True, None),
                                (am, "max", True, abs), (nmx, "max", False, None),
                                (nmn, "min", False, None)):
        want = [ref_reduce([f(v) if f else v for v in r], which, prop) for r in rows]
        assert _as_bits(out) == want, f"{which} propagate={prop} abs={f is abs}"


def test_propagating_forms_lower_to_max_nan():
    for source in (ELEMENTWISE, REDUCTIONS):
        ptx = compile_source(source, "nan.cdsl", target="sm_90a").ptx
        assert "max.NaN.f32" in ptx and "min.NaN.f32" in ptx
        # the NaN-dropping forms: plain max.f32 / min.f32
        assert "\tmax.f32" in ptx and "\tmin.f32" in ptx


def test_nanmax_on_integers_is_max():
    src = """
kernel ints(a: i32[N], b: i32[N], y: out i32[N], z: out i32[N])
  grid(cdiv(N, 128))
{
  let x = load a[pid.0 * 128 : +128]
  let w = load b[pid.0 * 128 : +128]
  store y[pid.0 * 128 : +128] = nanmax(x, w) - max(x, w)
  store z[pid.0 * 128 : +128] = nanmin(x, w) - min(x, w)
}
"""
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randint(-100, 100, (128,), dtype=torch.int32, generator=gen) for _ in "ab")
    y, z = commdsl.load(src).interpret(a, b)
    assert (y == 0).all() and (z == 0).all()
    assert compile_source(src, "ints.cdsl", target="sm_90a").ptx


def test_nanmax_of_one_tile_needs_the_axis():
    src = """
kernel bad(x: f32[M, 128], y: out f32[M])
  grid(M)
{
  store y[pid.0 : +1] = nanmax(load x[pid.0 : +1, 0 : +128])
}
"""
    with pytest.raises(CompileError, match="nanmax takes 2 argument"):
        compile_source(src, "bad.cdsl", target="sm_90a")


@pytest.mark.gpu
@pytest.mark.parametrize("case", ["pairs", "rows64", "rows50"])
def test_gpu_gives_the_interpreters_bits(case):
    """Bit for bit, NaN included: max.NaN gives the canonical NaN 0x7FFFFFFF (PTX ISA), and
    the interpreter does the same."""
    if case == "pairs":
        source, inputs = ELEMENTWISE, _pairs()
    else:
        source, inputs = REDUCTIONS, (_rows(int(case[4:])),)
    kernel = commdsl.load(source)
    want = kernel.interpret(*inputs)
    names = ["mx", "mn", "nmx", "nmn"] if case == "pairs" else ["mx", "mn", "am", "nmx", "nmn"]
    outs = {n: torch.full(w.shape, 12345.0, device="cuda") for n, w in zip(names, want)}
    kernel(*(i.cuda() for i in inputs), **outs)
    torch.cuda.synchronize()
    for n, w in zip(names, want):
        assert _as_bits(outs[n].cpu()) == _as_bits(w), n
