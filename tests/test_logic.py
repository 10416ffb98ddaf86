"""Predicates and bits (commdsl/ops/logic.py): comparisons give bool tiles, and/or/not,
where, iota, integer & | ^ ~ << >>, bitcast; their precedence, PTX, CPU meaning and errors."""
import pytest
import torch

import commdsl
from commdsl.compiler import compile_source
from commdsl.diagnostics import CompileError
from commdsl.runtime.ptxas import assemble, find_ptxas

KERNEL = """\
kernel k(x: f32[M, 256], n: i32[M, 256], y: out f32[M, 256], z: out i32[M, 256])
  grid(M / 2)
{{
  let t = load x[pid.0 * 2 : +2, 0 : +256]
  let i = load n[pid.0 * 2 : +2, 0 : +256]
  store y[pid.0 * 2 : +2, 0 : +256] = {y}
  store z[pid.0 * 2 : +2, 0 : +256] = {z}
}}
"""
Y = "where((t < 0.0 and not (t == -1.0)) or t >= 2.0, t * 2.0, 1.0) + cast<f32>(where(i > j, j, i))"
# bitcast<f32> of the low 23 bits: a positive subnormal, doubled exactly (a negative i would
# be a NaN, whose payload PTX's mul does not keep: the GPU gives 0x7FFFFFFF, torch the input's).
Z = ("(~i << 2 | i & 4 ^ i >> 1) + bitcast<i32>(t) "
     "+ bitcast<i32>(bitcast<f32>(i & 8388607) * 2.0)")


def source(y: str = Y, z: str = Z) -> str:
    text = KERNEL.format(y=y, z=z)
    if "j" in y + z:
        text = text.replace("  let i =", "  let j = iota(256)[None, :]\n  let i =")
    return text


def inputs(rows: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, 256, generator=g)
    x[0, :5] = torch.tensor([-1.0, 2.0, 3.0, float("nan"), -0.0])
    n = torch.randint(-1000, 1000, (rows, 256), generator=g, dtype=torch.int32)
    return x, n


def reference(x, n):
    keep = ((x < 0) & ~(x == -1)) | (x >= 2)
    j = torch.arange(256, dtype=torch.int32)[None, :]
    y = torch.where(keep, x * 2, torch.tensor(1.0)) + torch.where(n > j, j, n).float()
    z = ((~n << 2) | ((n & 4) ^ (n >> 1))) + x.view(torch.int32) + \
        ((n & 8388607).view(torch.float32) * 2.0).view(torch.int32)
    return y, z


def test_the_interpreter_matches_torch():
    x, n = inputs()
    y, z = commdsl.load(source()).interpret(x, n)
    ry, rz = reference(x, n)
    assert torch.equal(y, ry) and torch.equal(z, rz)


def test_precedence_is_pythons():
    x, n = inputs()
    _, z = commdsl.load(source(z="i | 3 & 5 << 1 ^ 6")).interpret(x, n)
    assert torch.equal(z, n | ((3 & (5 << 1)) ^ 6))
    y, _ = commdsl.load(source(y="where(not t > 0.0 or t > 1.0 and t < 1.5, 1.0, 0.0)")
                        ).interpret(x, n)
    assert torch.equal(y, (~(x > 0) | ((x > 1) & (x < 1.5))).float())


def test_comparisons_of_nan_follow_ieee():
    x, n = inputs()
    y, _ = commdsl.load(source(y="where(t != t, 1.0, 0.0) + where(t < t, 2.0, 0.0)")
                        ).interpret(x, n)
    assert torch.equal(y, x.isnan().float())


def test_compile_time_conditions_fold():
    ir = compile_source(source(y="where(1 < 2 and 3 >= 3, t, 0.0)", z="i << (1 + 1)"), "k.cdsl",
                        emit="ir").text["ir"]
    assert "select" not in ir and "cmp" not in ir.replace("cmp(", "")


def test_the_ptx_compares_selects_and_shifts():
    ptx = compile_source(source(), "k.cdsl").ptx
    for instruction in ("setp.lt.f32", "selp", "shr.s32", "shl.b32", "xor.b32"):
        assert instruction in ptx, instruction
    if find_ptxas():
        assemble(ptx, arch="sm_90a", entry="k")


def diagnostic(y: str = Y, z: str = Z) -> str:
    with pytest.raises(CompileError) as e:
        compile_source(source(y, z), "k.cdsl")
    return str(e.value)


def test_where_on_mixed_dtypes_is_a_located_error():
    msg = diagnostic(y="where(t > 0.0, t, i)")
    assert "k.cdsl:6:39: error: where's choices differ in dtype: f32 and i32" in msg
    assert "^^^^" in msg and "help: convert one, e.g. where(c, t, cast<f32>(i))" in msg


@pytest.mark.parametrize("expr, message, help_line", [
    ("where(t, t, 0.0)", "where chooses by a bool, not f32", "help: where(c, a, b)"),
    ("where(t > 0.0 and t, t, 0.0)", "'and' takes bools, not f32", "help: compare first"),
    ("where(not t, t, 0.0)", "'not' takes a bool, not f32", "help: compare first"),
    ("t & 1.0", "'&' takes integers, not f32", "help: bitcast<i32>(t) gives a float's bits"),
    ("where(t > 0.0 < t, t, 0.0)", "unexpected", "help: expected"),
    ("cast<f32>(bitcast<i16>(t))", "bitcast<i16> of a f32 value: the widths differ",
     "help: bitcast<i32>(t)"),
    ("cast<f32>(iota(t))", "iota's sizes must be positive compile-time integers",
     "help: iota(N)"),
    ("cast<f32>(iota())", "iota takes its tile's sizes", "help: iota(N)"),
])
def test_predicate_and_bit_errors_are_located(expr, message, help_line):
    msg = diagnostic(y=expr)
    assert "k.cdsl:" in msg and message in msg and "^" in msg and help_line in msg


def test_an_infinity_stored_as_an_integer_is_a_located_error():
    msg = diagnostic(z="-inf")
    assert "k.cdsl:8:" in msg and "-inf is not an integer" in msg and "help:" in msg


@pytest.mark.gpu
def test_the_gpu_matches_the_interpreter():
    x, n = inputs(rows=64, seed=5)
    y, z = commdsl.load(source())(x.cuda(), n.cuda())
    ry, rz = reference(x, n)
    assert torch.equal(y.cpu(), ry) and torch.equal(z.cpu(), rz)


@pytest.mark.parametrize("shape, axis", [((2, 256), 1), ((2, 256), 0)])
def test_a_2d_iota_counts_along_its_axis(shape, axis):
    x, n = inputs()
    expr = f"iota({shape[0]}, {shape[1]}, axis = {axis}) * 1000 + i"
    _, z = commdsl.load(source(z=expr)).interpret(x, n)
    along = torch.arange(shape[axis], dtype=torch.int32)
    along = along[None, :] if axis == 1 else along[:, None]
    assert torch.equal(z, (along * 1000).repeat(2, 1) + n if axis == 0 else along * 1000 + n)
    if find_ptxas():
        assemble(compile_source(source(z=expr), "k.cdsl").ptx, arch="sm_90a", entry="k")


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_a_3d_iota_counts_along_its_axis(axis):
    text = f"""\
kernel k(x: f32[M, 256], y: out i32[M, 256])
  grid(cdiv(M, 2))
{{
  let i = iota(2, 4, 64, axis = {axis})
  let t = cast<i32>(load x[pid.0 * 2 : +2, 0 : +256])
  store y[pid.0 * 2 : +2, 0 : +256] = reshape(i, 2, 256) + t
}}
"""
    x = torch.randint(-50, 50, (3, 256)).float()
    y = commdsl.load(text).interpret(x)
    shape = [2, 4, 64]
    along = torch.arange(shape[axis], dtype=torch.int32).view(
        [-1 if d == axis else 1 for d in range(3)]).expand(shape).reshape(2, 256)
    assert torch.equal(y, along.repeat(2, 1)[:3] + x.int())
    if find_ptxas():
        assemble(compile_source(text, "k.cdsl").ptx, arch="sm_90a", entry="k")


def test_inf_is_a_number_in_expressions_unless_a_name_shadows_it():
    text = """\
kernel k(x: f32[M, 256], y: out f32[M], z: out f32[M, 256])
  grid(M)
{
  let t = load x[pid.0 : +1, 0 : +256]
  store y[pid.0 : +1] = max(where(t < 0.5, -inf, t), axis = 1) + min(inf, 1.0)
  let inf = 3.0
  store z[pid.0 : +1, 0 : +256] = where(t > 0.0, inf, -inf)
}
"""
    x = torch.randn(3, 256)
    x[1] = -1.0                                 # nothing above 0.5: the max is -inf
    y, z = commdsl.load(text).interpret(x)
    want = torch.where(x < 0.5, -torch.inf, x).amax(1) + 1.0
    assert torch.equal(y, want) and y[1] == -torch.inf
    assert torch.equal(z, torch.where(x > 0.0, 3.0, -3.0))
    if find_ptxas():
        assemble(compile_source(text, "k.cdsl").ptx, arch="sm_90a", entry="k")


def test_a_predicate_stores_as_bool_and_scalar_predicates_choose_per_program():
    text = """\
kernel k(x: f32[M, 256], m: out bool[M, 256], y: out f32[M, 256])
  grid(M)
{
  let t = load x[pid.0 : +1, 0 : +256]
  store m[pid.0 : +1, 0 : +256] = t > 0.0
  store y[pid.0 : +1, 0 : +256] = where(not (pid.0 < 2), t, -t) + where(pid.0 == 1, 1.0, 0.0)
}
"""
    x = torch.randn(4, 256)
    m, y = commdsl.load(text).interpret(x)
    row = torch.arange(4)[:, None]
    assert m.dtype == torch.bool and torch.equal(m, x > 0)
    assert torch.equal(y, torch.where(row >= 2, x, -x) + (row == 1).float())
    if find_ptxas():
        assemble(compile_source(text, "k.cdsl").ptx, arch="sm_90a", entry="k")
