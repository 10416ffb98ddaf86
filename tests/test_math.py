"""Math functions on tiles (commdsl/ops/math.py), on the CPU: the accurate algorithms'
error (backends/ptx/mathlib.py run on emulated f32 instructions) against float64, the PTX
each lowers to (default and fast math), the interpreter's meaning, and the diagnostics."""
import re

import numpy as np
import pytest
import torch

import commdsl
from commdsl.backends.ptx import mathlib
from commdsl.cli import main as cli_main
from commdsl.compiler import compile_source
from commdsl.diagnostics import CompileError
from commdsl.runtime.ptxas import assemble, find_ptxas
from f32_emulation import NumpyOps
from math_reference import BOUND, inputs, reference, ulp_error

KERNEL = """\
kernel k(x: {dtype}[M, 256], y: out f32[M, 256]){header}
  grid(M)
{{
  let t = load x[pid.0 : +1, 0 : +256]
  store y[pid.0 : +1, 0 : +256] = {expr}
}}
"""
ACCURATE = sorted(mathlib.ACCURATE)
# The instruction a fast-math variant lowers to.
FAST = {"exp": "ex2.approx.ftz.f32", "exp2": "ex2.approx.ftz.f32", "log": "lg2.approx.ftz.f32",
        "log2": "lg2.approx.ftz.f32", "rsqrt": "rsqrt.approx.ftz.f32", "tanh": "tanh.approx.f32",
        "sigmoid": "ex2.approx.ftz.f32", "silu": "ex2.approx.ftz.f32", "sin": "sin.approx.ftz.f32",
        "cos": "cos.approx.ftz.f32"}


def kernel(expr: str, dtype: str = "f32", header: str = "") -> str:
    return KERNEL.format(dtype=dtype, expr=expr, header=header)


def ptx_of(expr: str, **options) -> str:
    ptx = compile_source(kernel(expr), "k.cdsl", options=options).ptx
    if find_ptxas():
        assemble(ptx, arch="sm_90a", entry="k")
    return ptx


@pytest.mark.parametrize("name", ACCURATE)
def test_the_accurate_algorithm_is_within_its_documented_error(name):
    """Over 2^20 inputs spanning the domain (and inf, NaN, -0, subnormals), on the f32
    instructions the backend emits, emulated."""
    x = inputs(name, 1 << 20, seed=1)
    with np.errstate(all="ignore"):
        y = mathlib.ACCURATE[name](NumpyOps(), x.numpy())
    err = ulp_error(torch.from_numpy(np.asarray(y, np.float32)), reference(name, x))
    worst = int(err.argmax())
    assert err.max() <= BOUND[name], f"{name}({x[worst].item()!r}): {err.max():.2f} ulp"


def test_division_by_one_to_two_is_correctly_rounded():
    """mathlib.div_1_2 (sigmoid's, silu's and tanh's division, without div.rn's slow path),
    from a seed one ulp off, with divisors in [1, 2]: within 0.5 ulp + 2^-21 for numerators
    of magnitude 2^-100 to 2^126, within 1 ulp below (where the residual is subnormal)."""
    rng = np.random.default_rng(0)
    n = 1 << 19
    for low, high, bound in [(-100, 126, 0.5 + 2.0 ** -21), (-149, -100, 1.0)]:
        a = (rng.uniform(1, 2, n) * 2.0 ** rng.integers(low, high, n)).astype(np.float32)
        a[::2] *= -1
        d = rng.uniform(1, 2, n).astype(np.float32)
        q = mathlib.div_1_2(NumpyOps(), a, d).astype(np.float64)
        exact = a.astype(np.float64) / d
        ulp = np.spacing(np.maximum(np.abs(exact), 2.0 ** -126).astype(np.float32))
        assert (np.abs(q - exact) / ulp).max() <= bound, (low, high)


@pytest.mark.parametrize("name", ["sigmoid", "silu", "tanh", "rsqrt"])
def test_no_division_keeps_div_rn_and_its_slow_path(name):
    """Their divisors lie in [1, 2] (or a Newton step follows): div.rn's range check and the
    branch around its slow path, which keep ptxas from interleaving a tile's elements, are
    not needed, nor cvt's rounding to an integer (quarter-rate) for exp's n."""
    ptx = ptx_of(f"{name}(t)")
    assert not re.search(r"\b(div|rcp)\.rn\.f32", ptx) and "cvt.rni" not in ptx


@pytest.mark.parametrize("name", sorted(FAST))
def test_default_lowering_is_accurate_and_fast_math_uses_approx(name):
    accurate = ptx_of(f"{name}(t)")
    # rcp.approx only as a seed that a residual corrects (mathlib.div_1_2, rsqrt)
    assert ".approx" not in accurate.replace("rcp.approx.ftz.f32", "")
    assert FAST[name] in ptx_of(f"{name}(t)", fast_math=True)
    assert FAST[name] in ptx_of(f"fast_{name}(t)", fast_math=True)


@pytest.mark.parametrize("name, instruction", [("floor", "cvt.rmi.f32.f32"),
                                               ("ceil", "cvt.rpi.f32.f32"),
                                               ("round", "cvt.rni.f32.f32")])
def test_roundings_are_one_cvt(name, instruction):
    assert instruction in ptx_of(f"{name}(t)")


def test_rsqrt_starts_from_the_correctly_rounded_root_and_a_reciprocal_seed():
    ptx = ptx_of("rsqrt(t)")
    assert "sqrt.rn.f32" in ptx and "rcp.approx.ftz.f32" in ptx
    assert not re.search(r"(div|rcp)\.rn\.f32", ptx)        # no slow path


def test_sin_and_cos_reduce_large_arguments_through_a_table_of_two_over_pi():
    ptx = ptx_of("sin(t) + cos(t)")
    assert "commdsl_two_over_pi" in ptx and ptx.count("commdsl_two_over_pi[") == 1


def test_erf_and_the_roundings_have_no_fast_variant():
    for name in ("erf", "floor", "ceil", "round"):
        assert ".approx" not in ptx_of(f"{name}(t)", fast_math=True)


def test_fast_math_in_the_kernel_header():
    ptx = compile_source(kernel("exp(t) + fast_tanh(t)", header=" fast_math()"), "k.cdsl").ptx
    assert "ex2.approx" in ptx and "tanh.approx" in ptx


def test_fast_math_from_the_python_api():
    assert "ex2.approx" in commdsl.load(kernel("exp(t)"), fast_math=True).ptx
    assert "ex2.approx" not in commdsl.load(kernel("exp(t)")).ptx


def test_fast_math_from_the_command_line(tmp_path, capsys):
    src = tmp_path / "k.cdsl"
    src.write_text(kernel("exp(t)"))
    assert cli_main(["compile", str(src), "--fast-math", "-o", "-"]) == 0
    assert "ex2.approx" in capsys.readouterr().out
    assert cli_main(["compile", str(src), "-o", "-"]) == 0
    assert "ex2.approx" not in capsys.readouterr().out


@pytest.mark.parametrize("name", [*ACCURATE, "floor", "ceil", "round"])
def test_the_interpreter_rounds_the_float64_value_once(name):
    x = inputs(name, 256 * 4, seed=2).reshape(4, 256) if name in BOUND else \
        torch.randn(4, 256) * 100
    y = commdsl.load(kernel(f"{name}(t)")).interpret(x)
    ref = (getattr(torch, name, None) or torch.nn.functional.silu)(x.double()).float()
    assert torch.equal(y.isnan(), ref.isnan())
    keep = ~ref.isnan()
    assert torch.equal(y[keep].view(torch.int32), ref[keep].view(torch.int32))


def test_math_on_bf16_computes_in_f32_and_on_scalars():
    x = torch.randn(2, 256).bfloat16()
    y = commdsl.load(kernel("exp(t) * sigmoid(2.0)", dtype="bf16")).interpret(x)
    ref = (x.double().exp().float() * torch.tensor(2.0).double().sigmoid().float())
    assert torch.equal(y, ref)


@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 8, -1, -3])
def test_pow_multiplies_by_squaring(n):
    x = torch.randn(3, 256)
    y = commdsl.load(kernel(f"pow(t, {n})")).interpret(x)
    result, square, k = torch.ones_like(x), x, abs(n)    # the same chain of f32 multiplies
    first = True
    while k:
        if k & 1:
            result = square if first else result * square
            first = False
        k >>= 1
        if k:
            square = square * square
    assert torch.equal(y, 1.0 / result if n < 0 else result)
    ptx_of(f"pow(t, {n})")


def diagnostic(text: str, **options) -> str:
    with pytest.raises(CompileError) as e:
        compile_source(text, "k.cdsl", options=options)
    return str(e.value)


def test_exp_of_an_integer_tile_is_a_located_error():
    msg = diagnostic(kernel("exp(t)", dtype="i32"))
    assert "k.cdsl:5:39: error: exp takes floats, not i32" in msg
    assert "^" in msg and "help: exp(t); convert with cast<f32>(...)" in msg


def test_a_fast_function_without_fast_math_is_a_located_error():
    msg = diagnostic(kernel("t + fast_exp(t)"))
    assert "k.cdsl:5:39: error: fast_exp needs the fast_math option" in msg
    assert "^^^^^^^^^^^" in msg
    assert "help: enable fast math: fast_math() in the kernel header" in msg


def test_pow_needs_a_compile_time_integer_exponent():
    msg = diagnostic(kernel("pow(t, 2.5)"))
    assert "k.cdsl:5:42: error: pow's exponent must be a compile-time integer" in msg
    assert "help: pow(t, N)" in msg


def test_fast_math_option_takes_a_boolean():
    msg = diagnostic(kernel("exp(t)"), fast_math="yes")
    assert "fast_math" in msg and ".approx" in msg


def test_fma_rounds_once_and_broadcasts(tmp_path):
    """fma(a, b, c) of a tile, a row vector and a scalar: fma.rn.f32 per element, and on the
    interpreter a * b + c rounded once, which keeps the 2^-24 that a separate multiply would
    round away: (1 + 2^-12)^2 - 1 = 2^-11 + 2^-24."""
    src = tmp_path / "k.cdsl"
    src.write_text("""kernel k(x: f32[M, 4], r: f32[M], y: out f32[M, 4])
  grid(M)
{
  let t = load x[pid.0 : +1, 0 : +4]
  store y[pid.0 : +1, 0 : +4] = fma(t, load r[pid.0 : +1][:, None], -1.0)
}
""")
    assert commdsl.compile_file(str(src)).ptx.count("fma.rn.f32") >= 4
    x = torch.full((2, 4), 1 + 2.0 ** -12)
    x[1] = 3.0
    r = torch.tensor([1 + 2.0 ** -12, 0.5])
    y = commdsl.load(str(src)).interpret(x, r)
    assert y[0, 0].item() == 2.0 ** -11 + 2.0 ** -24
    assert torch.equal(y[1], torch.full((4,), 0.5))


def test_fma_takes_numbers_written_as_integers(tmp_path):
    """fma(t, 2, 1): the numbers are floats there, as in t * 2 + 1; fma(2, 3, 1) folds."""
    src = tmp_path / "k.cdsl"
    src.write_text("""kernel k(x: f32[N], y: out f32[N])
  grid(cdiv(N, 4))
{
  store y[pid.0 * 4 : +4] = fma(load x[pid.0 * 4 : +4], 2, 1) + fma(2, 3, 1)
}
""")
    x = torch.tensor([0.5, -1.0, 3.0, 1e30])
    y = commdsl.load(str(src)).interpret(x)
    assert torch.equal(y, x * 2 + 1 + 7)


@pytest.mark.parametrize("name", ACCURATE)
def test_the_accurate_algorithm_keeps_the_sign_of_zero(name):
    """f(-0) and f(+0) as torch gives them (silu(-0) is -0, log(-0) is -inf): a swiglu of
    -0 gates would otherwise quantize to 0x80 where torch's gives 0x00."""
    x = np.array([-0.0, 0.0], np.float32)
    with np.errstate(all="ignore"):
        y = np.asarray(mathlib.ACCURATE[name](NumpyOps(), x), np.float32)
    want = reference(name, torch.from_numpy(x)).float().numpy()
    assert np.array_equal(np.signbit(y), np.signbit(want)) and np.array_equal(y, want), (y, want)
