"""Each user mistake gets one diagnostic: file:line:col, the line, a caret, and a fix."""
import re
import subprocess
import sys


from commdsl.cli import main

GOOD = """\
kernel k(x: bf16[M, K], y: out e4m3[M, K] quant(1 x 128, scale = s), s: out f32[M, K / 128])
  grid(M, K / 128)
{
  let t = load x[pid.0 : +1, pid.1 * 128 : +128] cache(nc, L1 = no_allocate, L2 = 256B)
  let sc = max(amax(t, axis = 1), 1e-4) / 448.0
  store y[pid.0 : +1, pid.1 * 128 : +128] = cast<e4m3>(t / sc[:, None])
  store s[pid.0 : +1, pid.1] = sc
}
"""


def compile_error(tmp_path, capsys, source, *extra):
    path = tmp_path / "k.cdsl"
    path.write_text(source)
    code = main(["compile", str(path), "-o", str(tmp_path / "k.ptx"), *extra])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "Traceback" not in err
    return Diagnostic(err, source)


class Diagnostic(str):
    def __new__(cls, text, source):
        d = super().__new__(cls, text)
        d.source = source
        return d


def assert_points_at(err, line, text_under_caret, nth=0):
    """The error names `line` and the column where `text_under_caret` starts on it."""
    src_line = err.source.splitlines()[line - 1]
    col = [m.start() for m in re.finditer(re.escape(text_under_caret), src_line)][nth] + 1
    assert re.search(rf"k\.cdsl:{line}:{col}: error: ", err), err
    lines = err.splitlines()
    caret = next(i for i, s in enumerate(lines) if s.strip().startswith("^"))
    src, marks = lines[caret - 1], lines[caret]
    start = marks.index("^")
    assert src[start:start + len(text_under_caret)] == text_under_caret, err
    assert "help:" in err, err


def test_good_kernel_compiles(tmp_path, capsys):
    path = tmp_path / "k.cdsl"
    path.write_text(GOOD)
    assert main(["compile", str(path), "-o", str(tmp_path / "k.ptx")]) == 0
    assert "cvt.rn.satfinite.e4m3x2.f32" in (tmp_path / "k.ptx").read_text()


def test_syntax_error(tmp_path, capsys):
    err = compile_error(tmp_path, capsys, GOOD.replace("pid.1 * 128 : +128] cache", "pid.1 * 128 : +128 cache"))
    assert_points_at(err, 4, "cache")


def test_unknown_name(tmp_path, capsys):
    err = compile_error(tmp_path, capsys, GOOD.replace("t / sc[", "tt / sc["))
    assert_points_at(err, 6, "tt")
    assert "unknown name 'tt'" in err and "did you mean 't'" in err


def test_store_without_cast_is_a_dtype_mismatch(tmp_path, capsys):
    err = compile_error(tmp_path, capsys, GOOD.replace("cast<e4m3>(t / sc[:, None])", "t / sc[:, None]"))
    assert_points_at(err, 6, "t / sc")
    assert "cast<e4m3>" in err


def test_int_float_mix_is_a_dtype_mismatch(tmp_path, capsys):
    err = compile_error(tmp_path, capsys, GOOD.replace("max(amax(t, axis = 1), 1e-4)", "max(amax(t, axis = 1), pid.0)"))
    assert "dtype mismatch: f32 and i32" in err
    assert_points_at(err, 5, "max(")


def test_group_that_does_not_divide_its_dim(tmp_path, capsys):
    src = GOOD.replace("e4m3[M, K] quant(1 x 128", "e4m3[M, 200] quant(1 x 128").replace(
        "s: out f32[M, K / 128]", "s: out f32[M, 200 / 128]")
    err = compile_error(tmp_path, capsys, src)
    assert "group extent 128 does not divide dimension 200" in err
    assert "cdiv(200, 128)" in err


def test_group_not_a_multiple_of_16(tmp_path, capsys):
    err = compile_error(tmp_path, capsys, GOOD.replace("quant(1 x 128", "quant(1 x 100"))
    assert_points_at(err, 1, "100")
    assert "multiple of 16" in err


def test_scale_of_wrong_shape(tmp_path, capsys):
    err = compile_error(tmp_path, capsys, GOOD.replace("s: out f32[M, K / 128]", "s: out f32[M, K]"))
    assert "needs [M, K / 128]" in err
    assert_points_at(err, 1, "s: out f32[M, K]")


def test_l2_prefetch_size_that_does_not_exist(tmp_path, capsys):
    err = compile_error(tmp_path, capsys, GOOD.replace("L2 = 256B", "L2 = 512B"))
    assert_points_at(err, 4, "L2 = 512B")
    assert "64B, 128B, 256B" in err


def test_nc_on_a_store(tmp_path, capsys):
    err = compile_error(tmp_path, capsys, GOOD.replace("store s[pid.0 : +1, pid.1] =", "store s[pid.0 : +1, pid.1] cache(nc) ="))
    assert_points_at(err, 7, "nc")
    assert "loads only" in err


def test_cache_operator_and_l1_policy_exclude_each_other(tmp_path, capsys):
    err = compile_error(tmp_path, capsys, GOOD.replace("cache(nc, L1", "cache(cg, nc, L1"))
    assert "exclude each other" in err


def test_unknown_target(tmp_path, capsys):
    err = compile_error(tmp_path, capsys, GOOD, "--target", "sm_91")
    assert "unknown target 'sm_91'" in err and "sm_90a" in err


def test_missing_constant(tmp_path, capsys):
    src = GOOD.replace("  grid(M, K / 128)", "  const ROWS\n  grid(M, K / 128)")
    err = compile_error(tmp_path, capsys, src)
    assert "constant 'ROWS' has no value" in err and "-D ROWS=" in err
    assert_points_at(err, 2, "ROWS")


def test_unknown_constant_on_the_command_line(tmp_path, capsys):
    err = compile_error(tmp_path, capsys, GOOD, "-D", "ROWZ=4")
    assert "no kernel declares a constant 'ROWZ'" in err


def test_unknown_dtype(tmp_path, capsys):
    err = compile_error(tmp_path, capsys, GOOD.replace("x: bf16", "x: bf61"))
    assert_points_at(err, 1, "bf61")
    assert "did you mean 'bf16'" in err


def test_store_into_an_input(tmp_path, capsys):
    err = compile_error(tmp_path, capsys, GOOD.replace("store s[", "store x["))
    assert "'x' is an input" in err


def test_tile_length_must_be_constant(tmp_path, capsys):
    err = compile_error(tmp_path, capsys, GOOD.replace("load x[pid.0 : +1,", "load x[pid.0 : +M,"))
    assert_points_at(err, 4, "M")


def test_shapes_that_do_not_combine(tmp_path, capsys):
    err = compile_error(tmp_path, capsys, GOOD.replace("t / sc[:, None]", "t / sc"))
    assert "do not combine" in err and "[:, None]" in err


def test_ctas_per_sm_out_of_range(tmp_path, capsys):
    err = compile_error(tmp_path, capsys, GOOD.replace("grid(M, K / 128)",
                                                       "grid(M, K / 128)\n  ctas_per_sm(40)"))
    assert_points_at(err, 3, "40")
    assert "at most 32 CTAs" in err and "ctas_per_sm(N)" in err


def test_ctas_per_sm_caps_registers(tmp_path):
    path = tmp_path / "k.cdsl"
    path.write_text(GOOD.replace("grid(M, K / 128)", "grid(M, K / 128)\n  ctas_per_sm(4)"))
    assert main(["compile", str(path), "-o", str(tmp_path / "k.ptx")]) == 0
    assert ".minnctapersm 4" in (tmp_path / "k.ptx").read_text()


def test_console_script_prints_no_traceback(tmp_path):
    path = tmp_path / "k.cdsl"
    path.write_text(GOOD.replace("L2 = 256B", "L2 = 512B"))
    proc = subprocess.run([sys.executable, "-m", "commdsl.cli", "compile", str(path)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "k.cdsl:4:" in proc.stderr
