"""Inputs that once crashed the compiler (issue 17): each now ends in a located diagnostic
(file:line:col, the line, a caret, a help line) or a correct result."""
import struct

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


@pytest.mark.parametrize("const, under, message", [
    ("const Z = (1 < 2) + 1", "1 < 2", "'<' does not fold at compile time"),
    ("const Z = 1 << 64", "64", "a shift by 64 bits"),
    ("const Z = 1 >> -1", "-1", "a shift by -1 bits"),
    ("const Z = 4294967296 * 4294967296", "4294967296 * 4294967296", "past 64-bit integers"),
    ("const Z = 1.5 & 1", "1.5 & 1", "'&' is for integers"),
    ("const Z = 7.5 % 2", "7.5 % 2", "'%' is for integers"),
])
def test_constant_operators_that_cannot_fold_are_located(tmp_path, capsys, const, under, message):
    err = compile_error(tmp_path, capsys, kernel("cast<f32>(t) * cast<f32>(Z)", f"  {const}\n"))
    assert message in err
    assert_points_at(err, 2, under)


def test_constant_integer_arithmetic_folds_as_the_gpu_computes(tmp_path):
    """Division truncates toward zero and the remainder takes the dividend's sign (div.s32,
    rem.s32), in constants and in folded body expressions alike; bitwise ops fold."""
    from commdsl.compiler import compile_source
    source = kernel("cast<f32>(t) * cast<f32>(A * 1000 + B * 100 + (-7 / 2) * 10 + -7 % 2)",
                    "  const A = (6 ^ 3) << 1 | 1, B = -7 / 2\n")
    ptx = compile_source(source, "k.cdsl", target="sm_90a").ptx
    value = 11 * 1000 + -3 * 100 + -3 * 10 + -1
    assert f"0f{struct.unpack('<I', struct.pack('<f', value))[0]:08X}" in ptx


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
@pytest.mark.parametrize("n, warps", [(1, 4), (3, 4), (16, 4), (128, 4), (128, 1)])
def test_fp8_load_in_a_pipeline_2_loop_without_tma(dt, n, warps):
    """warps(1) with 128 FP8 values: 4 a thread, packed in one 32-bit word (the fuzzer found
    the backend's one-output inline asm wrapped in a struct, which LLVM rejects)."""
    import torch

    import commdsl
    from commdsl.compiler import compile_source
    from commdsl.runtime.ptxas import assemble
    source = f"""kernel k(x: {dt}[M, K], y: out {dt}[M, K], z: out f32[M, K])
  grid(M)
  warps({warps})
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


# ---- 5. found by the fuzzer ----------------------------------------------------------------

@pytest.mark.parametrize("dt, value, bits", [
    ("e4m3", "3", 0x44), ("e4m3", "1e30", 0x7E), ("bf16", "3.0", 0x4040),
    ("ue8m0", "3.0", 129), ("f16", "-2", 0xC000),
])
def test_a_number_stored_into_a_narrow_float_is_cast(tmp_path, dt, value, bits):
    """A number meets a bf16/FP8/UE8M0 output as cast<dt>(number): FP8 saturates, UE8M0
    rounds up to a power of two (3 -> 4 = 2^(129 - 127))."""
    import torch

    import commdsl
    from commdsl.compiler import compile_source
    from commdsl.runtime.ptxas import assemble
    source = f"""kernel k(x: f32[M, 128], y: out {dt}[M, 128])
  grid(M)
{{
  store y[pid.0 : +1, 0 : +128] = {value}
}}
"""
    compiled = compile_source(source, "k.cdsl")
    assemble(compiled.ptx, arch=compiled.target, entry="k")
    width = {"bf16": torch.int16, "f16": torch.int16}.get(dt, torch.uint8)
    torch_dt = {"e4m3": torch.float8_e4m3fn, "bf16": torch.bfloat16, "f16": torch.float16,
                "ue8m0": torch.uint8}[dt]
    y = torch.zeros(2, 128, dtype=torch_dt)
    commdsl.load(source).interpret(torch.ones(2, 128), y)
    assert (y.view(width).to(torch.int32) & 0xFFFF == bits).all(), y


def test_a_bool_index_is_located(tmp_path, capsys):
    err = compile_error(tmp_path, capsys, kernel().replace("pid.0 : +1", "(pid.0 == 3) : +1", 1))
    assert "an index must be an integer scalar, got bool" in err
    assert_points_at(err, 4, "pid.0 == 3")


@pytest.mark.parametrize("dt", ["e4m3", "bf16"])
def test_zeros_of_a_narrow_float(dt):
    import torch

    import commdsl
    from commdsl.compiler import compile_source
    from commdsl.runtime.ptxas import assemble
    source = kernel().replace("y: out f32[M, K]", f"y: out {dt}[M, K]").replace(
        "cast<f32>(t)", f"zeros({dt}, 1, 128)")
    compiled = compile_source(source, "k.cdsl")
    assemble(compiled.ptx, arch=compiled.target, entry="k")
    y = torch.full((2, 128), float("nan")).to({"e4m3": torch.float8_e4m3fn, "bf16": torch.bfloat16}[dt])
    commdsl.load(source).interpret(torch.ones(2, 128, dtype=torch.bfloat16), y)
    assert (y.float() == 0).all() and not y.float().signbit().any()


def test_zeros_of_ue8m0_is_located(tmp_path, capsys):
    err = compile_error(tmp_path, capsys, kernel("cast<f32>(zeros(ue8m0, 1, 128))"))
    assert "ue8m0 has no zero" in err
    assert_points_at(err, 5, "ue8m0")


def test_a_ue8m0_fill_value_that_is_no_scale_is_located(tmp_path, capsys):
    source = kernel("cast<f32>(u)").replace("bf16[M, K]", "ue8m0[M, K]").replace(
        "  let t = load x[pid.0 : +1, 0 : +128]",
        "  let u = load x[pid.0 : +1, 0 : +128] mask(iota(1, 128) < 3) other = 3.0")
    err = compile_error(tmp_path, capsys, source)
    assert "'other' of a ue8m0 load is a scale, a power of two" in err
    assert_points_at(err, 4, "3.0")


GATHER = """\
kernel allgather(x: sym bf16[T, 128], src: i16[R], rows: i16[R], y: out bf16[R, 128], flags: sym i32[W])
  grid(cdiv(R, 4))
{
  let i = pid.0 * 4
  store y[i : +4, 0 : +128] = get peer(load src[i : +4]).x[INDEX, 0 : +128]
}
"""


def test_a_bool_index_of_a_get_is_located(tmp_path, capsys):
    err = compile_error(tmp_path, capsys, GATHER.replace("peer(load src[i : +4])", "peer(0)")
                        .replace("INDEX", "i == 3").replace("y[i : +4, 0", "y[i, 0"))
    assert "an index must be an integer scalar, got bool" in err
    assert_points_at(err, 5, "i == 3")


@pytest.mark.parametrize("index, message", [
    ("load rows[i : +4]", "a tile of ranks is i32, not i16"),
    ("load rows[i : +4] == 1", "an index tile must be a 1-D i32 tile, not tile<bool[4]>"),
])
def test_narrow_integer_ranks_and_rows_of_a_get_are_located(tmp_path, capsys, index, message):
    """Found by the fuzzer: the IR verifier refused what the front end let through."""
    err = compile_error(tmp_path, capsys, GATHER.replace("INDEX", index).replace(
        "src: i16[R]", "src: i32[R]" if "==" in index else "src: i16[R]"))
    assert message in err


def test_a_bool_mixed_with_an_integer_is_located(tmp_path, capsys):
    """Found by the fuzzer: `(n == 255) ^ ~n` crashed looking for the bool's bit width."""
    source = kernel().replace("bf16[M, K]", "i32[M, K]").replace(
        "store y[pid.0 : +1, 0 : +128] = cast<f32>(t)",
        "store y[pid.0 : +1, 0 : +128] = cast<f32>((t == 255) ^ ~t)")
    err = compile_error(tmp_path, capsys, source)
    assert "dtype mismatch: bool and i32" in err
    assert_points_at(err, 5, "(t == 255) ^ ~t")


def test_a_float_axis_of_iota_is_located(tmp_path, capsys):
    """Found by the fuzzer: axis = -0.0 passed the range check and crashed the backend."""
    err = compile_error(tmp_path, capsys, kernel(
        "cast<f32>(t) + cast<f32>(iota(1, 128, axis = -0.0))"))
    assert "iota takes axis = 0 .. 1" in err
    assert_points_at(err, 5, "axis = -0.0")


def test_a_carried_accumulator_the_loop_body_never_reads(tmp_path):
    """Found by the fuzzer: fp8_gemm with `acc = mma(...) * s[:, None]` (no +=) left the
    carried block argument out of the mma pass's layout map (KeyError). It compiles, and
    every pass keeps its meaning (tests/test_stage_equivalence.py's harness)."""
    import torch

    from commdsl.runtime.ptxas import assemble
    from test_fp8_gemm import mn_major, random_operands
    from test_stage_equivalence import _check, _runner
    source = open("examples/fp8_gemm.cdsl").read().replace("acc += mma(", "acc = mma(")
    from commdsl.compiler import compile_source
    compiled = compile_source(source, "k.cdsl")
    assemble(compiled.ptx, arch=compiled.target, entry="fp8_gemm")
    m, n, k = 70, 160, 384
    a, sa, b, sb = random_operands(m, n, k, seed=1)
    sizes = dict(M=m, N=n, K=k)
    _check("k.cdsl", "fp8_gemm", sizes, _runner(dict(a=a, sa=mn_major(sa), b=b, sb=sb),
                                                dict(d=((m, n), torch.bfloat16)), sizes, sms=5),
           tolerance=2 ** -7, source=source)
