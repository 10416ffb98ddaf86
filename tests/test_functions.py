"""Inline functions: `fn name(params) = expr`, expanded at each call in irgen; an error in a
body points at the body with a note at the call."""
import torch

import commdsl
from commdsl.compiler import compile_source
from commdsl.runtime.ptxas import assemble, find_ptxas
from diagnostic_checks import compile_error, points_at

SOURCE = """\
fn sq(x) = x * x
fn norm2(a, b) = sq(a) + sq(b) * SCALE

kernel k(x: f32[M, 128], y: out f32[M, 128], z: out f32[M])
  grid(M)
  const SCALE = 2.0
{
  let t = load x[pid.0 : +1, 0 : +128]
  store y[pid.0 : +1, 0 : +128] = norm2(t, t + 1.0)
  store z[pid.0 : +1] = max(sq(t), axis = 1)
}
"""


def test_functions_expand_at_the_call_and_see_constants():
    x = torch.randn(3, 128)
    y, z = commdsl.load(SOURCE).interpret(x)
    torch.testing.assert_close(y, x * x + (x + 1) * (x + 1) * 2.0, rtol=0, atol=0)
    torch.testing.assert_close(z, (x * x).amax(1), rtol=0, atol=0)


def test_a_call_leaves_no_call_in_the_ir():
    kir = compile_source(SOURCE, "k.cdsl", emit="ir").ir[0]
    assert [op.name for op in kir.walk()].count("mul") == 4    # sq three times, * SCALE
    if find_ptxas():
        assemble(compile_source(SOURCE, "k.cdsl").ptx, arch="sm_90a", entry="k")


def test_an_error_in_a_body_points_at_the_body_and_at_the_call():
    source = SOURCE.replace("fn sq(x) = x * x", "fn sq(x) = x * t")
    text = compile_error(source)
    points_at(text, source, 1, "t")
    points_at(text, source, 9, "norm2(t, t + 1.0)", kind="note")
    points_at(text, source, 2, "sq(a)", kind="note")
    assert "unknown name 't'" in text and "help:" in text


def test_a_recursive_function_is_a_locatedcompile_error():
    source = SOURCE.replace("fn sq(x) = x * x", "fn sq(x) = sq(x) * x")
    text = compile_error(source)
    points_at(text, source, 1, "sq(x) * x")
    assert "calls itself" in text and "help:" in text


def test_mutual_recursion_is_a_locatedcompile_error():
    source = SOURCE.replace("fn sq(x) = x * x", "fn sq(x) = norm2(x, x)")
    text = compile_error(source)
    points_at(text, source, 1, "norm2(x, x)")
    points_at(text, source, 2, "sq(a)", kind="note")
    assert "'norm2' calls itself" in text


def test_a_call_with_the_wrong_arity_is_a_locatedcompile_error():
    source = SOURCE.replace("norm2(t, t + 1.0)", "norm2(t)")
    text = compile_error(source)
    points_at(text, source, 9, "norm2(t)")
    assert "takes 2 argument(s), got 1" in text and "help: fn norm2(a, b)" in text


def test_a_function_named_like_a_builtin_is_a_locatedcompile_error():
    source = SOURCE.replace("fn sq(x) = x * x", "fn amax(x) = x * x").replace("sq(", "amax(")
    text = compile_error(source)
    points_at(text, source, 1, "fn amax(x) = x * x")
    assert "builtin" in text and "help:" in text


def test_a_parameter_named_twice_is_a_locatedcompile_error():
    source = SOURCE.replace("fn norm2(a, b)", "fn norm2(a, a)")
    text = compile_error(source)
    points_at(text, source, 2, "a)")
    assert "named twice" in text


def test_the_block_form_binds_lets_before_its_value():
    source = """\
fn poly(x) {
  let x2 = x * x
  let x3 = x2 * x
  x3 + x2 * 2.0 + x
}

kernel k(x: f32[M, 128], y: out f32[M, 128])
  grid(M)
{
  let t = load x[pid.0 : +1, 0 : +128]
  store y[pid.0 : +1, 0 : +128] = poly(t) + poly(1.0)
}
"""
    x = torch.randn(3, 128)
    y = commdsl.load(source).interpret(x)
    torch.testing.assert_close(y, (x * x * x + x * x * 2.0 + x) + 4.0, rtol=1e-6, atol=1e-6)


def test_an_error_in_a_block_forms_let_points_at_it():
    source = """\
fn f(x) {
  let a = x * nope
  a
}

kernel k(x: f32[M, 128], y: out f32[M, 128])
  grid(M)
{
  store y[pid.0 : +1, 0 : +128] = f(load x[pid.0 : +1, 0 : +128])
}
"""
    text = compile_error(source)
    points_at(text, source, 2, "nope")
    points_at(text, source, 9, "f(load", kind="note")
