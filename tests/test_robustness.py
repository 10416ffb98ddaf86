"""Inputs that once crashed the compiler (issue 17): each now ends in a located diagnostic
(file:line:col, the line, a caret, a help line) or a correct result."""
import pytest

from commdsl.cli import main
from test_diagnostics import assert_points_at, compile_error

BODY = """\
kernel k(x: bf16[M, K], y: out f32[M, K])
{consts}  grid(M)
{{
  let t = load x[pid.0 : +1, 0 : +128]
  store y[pid.0 : +1, 0 : +128] = {value}
}}
"""


def kernel(value="cast<f32>(t)", consts=""):
    return BODY.format(value=value, consts=consts)


# ---- 1. checked constant folding --------------------------------------------------------

@pytest.mark.parametrize("const, divisor, message", [
    ("const Z = 128 / 0", "0", "division by zero"),
    ("const Z = cdiv(128, 0)", "0", "division by zero in cdiv"),
    ("const Z = 7 % 0", "0", "remainder of a division by zero"),
    ("const Z = 1.0 / 0", "0", "division by zero"),
    ("const Z = 1.0 / (2.0 - 2.0)", "2.0 - 2.0", "division by zero"),
])
def test_constant_division_by_zero_is_located(tmp_path, capsys, const, divisor, message):
    err = compile_error(tmp_path, capsys, kernel("cast<f32>(t) * Z", f"  {const}\n"))
    assert message in err
    assert_points_at(err, 2, divisor, nth=-1)


@pytest.mark.parametrize("value, divisor", [
    ("cast<f32>(t) * (1.0 / (2.0 - 0.0 - 2.0))", "2.0 - 0.0 - 2.0"),
    ("cast<f32>(t) * cdiv(7, 0)", "0"),
    ("cast<f32>(t) * cast<f32>(7 % 0)", "0"),
    ("cast<f32>(t) * cast<f32>(pid.0 / (3 - 3))", "pid.0 / (3 - 3)"),
])
def test_body_division_by_zero_is_located(tmp_path, capsys, value, divisor):
    err = compile_error(tmp_path, capsys, kernel(value))
    assert "division by zero" in err
    assert_points_at(err, 5, divisor, nth=-1)


def test_size_divided_by_zero_is_located(tmp_path, capsys):
    source = kernel().replace("y: out f32[M, K]", "y: out f32[M, K / (2 - 2)]")
    err = compile_error(tmp_path, capsys, source)
    assert "divided by zero" in err
    assert_points_at(err, 1, "2 - 2")


def test_float_division_of_a_tile_by_a_folded_constant_compiles(tmp_path):
    path = tmp_path / "k.cdsl"
    path.write_text(kernel("cast<f32>(t) / (2.0 - 0.0)"))
    assert main(["compile", str(path), "-o", str(tmp_path / "k.ptx")]) == 0


@pytest.mark.parametrize("const, under", [("const Z = -e4m3", "-e4m3"),
                                          ("const Z = e4m3 + 1", "e4m3 + 1")])
def test_dtype_used_as_a_number_in_a_constant(tmp_path, capsys, const, under):
    err = compile_error(tmp_path, capsys, kernel("cast<f32>(t) * Z", f"  {const}\n"))
    assert "dtype e4m3 is used as a number" in err
    assert_points_at(err, 2, under)


def test_dtype_constant_used_as_a_number_in_the_body(tmp_path, capsys):
    err = compile_error(tmp_path, capsys, kernel("cast<f32>(t) * Z", "  const Z = e4m3\n"))
    assert "dtype e4m3 is used as a number" in err
    assert_points_at(err, 6, "Z")


def test_dtype_given_with_D_for_an_integer_tune(tmp_path, capsys):
    source = open("examples/act_quant.cdsl").read()
    err = compile_error(tmp_path, capsys, source, "-D", "ROWS=f32")
    assert "'ROWS' is an integer (16), so it cannot be set to 'f32'" in err
    line = next(i for i, s in enumerate(source.splitlines(), 1) if "tune ROWS" in s)
    assert_points_at(err, line, "ROWS = 16")
