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


# ---- 3. the front end and the command line ------------------------------------------------

def test_two_kernels_of_one_name(tmp_path, capsys):
    one = open("examples/copy_nc.cdsl").read()
    err = compile_error(tmp_path, capsys, one + "\n" + one)
    assert "kernel 'copy_nc' is defined twice" in err
    line = len(one.splitlines()) + 1 + next(
        i for i, s in enumerate(one.splitlines(), 1) if s.startswith("kernel"))
    assert_points_at(err, line, "kernel copy_nc")


def test_a_sum_of_500_terms_is_a_nesting_error(tmp_path, capsys):
    err = compile_error(tmp_path, capsys, kernel(" + ".join(["cast<f32>(t)"] * 500)))
    assert "nests more than 256 levels deep" in err
    assert_points_at(err, 5, "cast<f32>(t) + cast<f32>(t)")


def test_a_sum_of_200_terms_compiles(tmp_path):
    path = tmp_path / "k.cdsl"
    path.write_text(kernel(" + ".join(["cast<f32>(t)"] * 200)))
    assert main(["compile", str(path), "-o", str(tmp_path / "k.ptx")]) == 0


def test_a_byte_that_is_not_utf8_is_located(tmp_path, capsys):
    path = tmp_path / "k.cdsl"
    source = kernel().replace("grid(M)", "grid(M)  # caf\xe9")
    path.write_bytes(source.encode("latin-1"))
    assert main(["compile", str(path), "-o", str(tmp_path / "k.ptx")]) == 1
    err = capsys.readouterr().err
    assert "byte 0xe9 is not UTF-8" in err and "Traceback" not in err
    line = source.splitlines()[1]
    assert f"k.cdsl:2:{line.index(chr(0xe9)) + 1}: error: " in err and "help:" in err


def test_output_into_a_missing_folder_names_the_path(tmp_path, capsys):
    path = tmp_path / "k.cdsl"
    path.write_text(kernel())
    target = tmp_path / "missing_dir" / "x.ptx"
    assert main(["compile", str(path), "-o", str(target)]) == 1
    err = capsys.readouterr().err
    assert f"cannot write {target}: No such file or directory" in err and "help:" in err


def test_a_constant_given_twice_with_D_is_an_error(tmp_path, capsys):
    err = compile_error(tmp_path, capsys, open("examples/act_quant.cdsl").read(),
                        "-D", "ROWS=1", "-D", "ROWS=2")
    assert "-D ROWS is given twice (ROWS=1 and ROWS=2)" in err and "help:" in err


# ---- 4. a cap on tile sizes, checked before layout -----------------------------------------

@pytest.mark.parametrize("example, define, message, under", [
    ("act_quant", "ROWS=2147483648", "2147483648 does not fit in i32", "pid.1 * ROWS"),
    ("act_quant", "ROWS=65536", "bytes of registers a CTA has on sm_90a", "load x["),
    ("requant_t", "G=1024", "bytes of registers a CTA has on sm_90a", "load x["),
])
def test_a_huge_tile_is_rejected_at_once(tmp_path, capsys, example, define, message, under):
    import time
    source = open(f"examples/{example}.cdsl").read()
    start = time.perf_counter()
    err = compile_error(tmp_path, capsys, source, "-D", define)
    assert time.perf_counter() - start < 2.0
    assert message in err
    line = next(i for i, s in enumerate(source.splitlines(), 1) if under in s)
    assert_points_at(err, line, under)


def test_a_zeros_tile_larger_than_the_register_file(tmp_path, capsys):
    err = compile_error(tmp_path, capsys, kernel("cast<f32>(t) + zeros(f32, 1024, 1024)"))
    assert "a [1024, 1024] f32 tile is 4194304 bytes" in err
    assert_points_at(err, 5, "zeros(")


def test_an_index_constant_past_i32(tmp_path, capsys):
    source = kernel(consts="  const BIG = 4294967296\n").replace(
        "load x[pid.0 : +1, 0 : +128]", "load x[pid.0 : +1, BIG : +128]")
    err = compile_error(tmp_path, capsys, source)
    assert "4294967296 does not fit in i32" in err
    assert_points_at(err, 5, "BIG")


# ---- 2. an FP8 load in a register-prefetched loop ----------------------------------------

@pytest.mark.parametrize("dt", ["e4m3", "e5m2"])
@pytest.mark.parametrize("n", [1, 3, 16, 128])
def test_fp8_load_in_a_pipeline_2_loop_without_tma(dt, n):
    import torch

    import commdsl
    from commdsl.compiler import compile_source
    from commdsl.runtime.ptxas import assemble
    source = f"""kernel k(x: {dt}[M, K], y: out {dt}[M, K], z: out f32[M, K])
  grid(M)
{{
  for k0 in 0 .. K step {n} pipeline(2) {{
    let t = load x[pid.0 : +1, k0 : +{n}]
    store y[pid.0 : +1, k0 : +{n}] = t
    store z[pid.0 : +1, k0 : +{n}] = cast<f32>(t) * 2.0
  }}
}}
"""
    compiled = compile_source(source, "k.cdsl")
    assemble(compiled.ptx, arch=compiled.target, entry="k")
    x = torch.randn(3, 4 * n).to(getattr(torch, {"e4m3": "float8_e4m3fn", "e5m2": "float8_e5m2"}[dt]))
    y, z = torch.empty_like(x), torch.empty(3, 4 * n)
    commdsl.load(source).interpret(x, y, z)
    assert torch.equal(y.view(torch.uint8), x.view(torch.uint8))
    assert torch.equal(z, x.float() * 2)
