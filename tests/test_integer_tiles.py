"""Integer tiles (issue 17): min, max, sum, division and remainder have integer semantics in
the interpreter and on the GPU (signed and unsigned, 8 to 32 bits, tiles smaller than the
CTA so layouts hold replicas); the ops that take only floats say so where they are used."""
import pytest
import torch

import commdsl
from commdsl.compiler import compile_source
from commdsl.runtime.ptxas import assemble
from test_diagnostics import assert_points_at, compile_error

DTYPES = {"i32": torch.int32, "i16": torch.int16, "i8": torch.int8, "u8": torch.uint8}

KERNEL = """\
kernel k(x: {dt}[M, 64], y: out {dt}[M, 64], r: out {dt}[M, 3], s: out {dt}[M])
  grid(M)
  warps(4)
{{
  let t = load x[pid.0 : +1, 0 : +64]
  let d = max(t % 7, 1)
  store y[pid.0 : +1, 0 : +64] = min(t / d, max(t, d)) + t % d
  store r[pid.0 : +1, 0 : +1] = min(t, axis = 1)[:, None]
  store r[pid.0 : +1, 1 : +1] = max(t, axis = 1)[:, None]
  store r[pid.0 : +1, 2 : +1] = sum(t % 3, axis = 1)[:, None]
  store s[pid.0] = sum(t % 5)
}}
"""


def inputs(dt, device="cpu"):
    g = torch.Generator().manual_seed(0)
    info = torch.iinfo(DTYPES[dt])
    lo, hi = max(info.min, -1000), min(info.max, 1000)
    x = torch.randint(lo, hi + 1, (5, 64), generator=g).to(DTYPES[dt])
    x[0] = hi                               # a row above every replica's old 0
    x[1] = max(lo, 1) if lo >= 0 else lo    # a row below it
    return x.to(device)


def reference(x):
    w = x.long()
    d = torch.clamp(torch.fmod(w, 7), min=1)
    y = torch.minimum(torch.div(w, d, rounding_mode="trunc"), torch.maximum(w, d)) + torch.fmod(w, d)
    r = torch.stack([w.amin(1), w.amax(1), torch.fmod(w, 3).sum(1)], 1)
    return [t.to(x.dtype) for t in (y, r, torch.fmod(w, 5).sum(1))]


def outputs(x):
    return [torch.empty(5, 64, dtype=x.dtype, device=x.device),
            torch.empty(5, 3, dtype=x.dtype, device=x.device),
            torch.empty(5, dtype=x.dtype, device=x.device)]


@pytest.mark.parametrize("dt", DTYPES)
def test_integer_tiles_in_the_interpreter(dt):
    x = inputs(dt)
    outs = outputs(x)
    commdsl.load(KERNEL.format(dt=dt)).interpret(x, *outs)
    for got, want in zip(outs, reference(x)):
        assert torch.equal(got, want), (got, want)


@pytest.mark.parametrize("dt", DTYPES)
def test_integer_tiles_assemble(dt):
    compiled = compile_source(KERNEL.format(dt=dt), "k.cdsl")
    assemble(compiled.ptx, arch=compiled.target, entry="k")
    if dt == "u8":
        assert "min.s" not in compiled.ptx and "div.s" not in compiled.ptx


@pytest.mark.gpu
@pytest.mark.parametrize("dt", DTYPES)
def test_integer_tiles_on_the_gpu(dt):
    x = inputs(dt, "cuda")
    outs = outputs(x)
    commdsl.load(KERNEL.format(dt=dt))(x, *outs)
    torch.cuda.synchronize()
    for got, want in zip(outs, reference(x)):
        assert torch.equal(got.cpu(), want.cpu()), (got, want)


FLOAT_ONLY = """\
kernel k(x: i32[M, 64], y: out i32[M, 64], s: out i32[M])
  grid(M)
{{
  let t = load x[pid.0 : +1, 0 : +64]
  store {store} = {value}
}}
"""


@pytest.mark.parametrize("store, value, message", [
    ("y[pid.0 : +1, 0 : +64]", "abs(t)", "abs takes floats, not i32"),
    ("s[pid.0 : +1]", "amax(t, axis = 1)", "amax takes floats, not i32"),
    ("y[pid.0 : +1, 0 : +64]", "fma(1.0, 2.0, t)", "fma takes floats, not i32"),
])
def test_float_only_functions_on_integer_tiles_are_located(tmp_path, capsys, store, value,
                                                           message):
    err = compile_error(tmp_path, capsys, FLOAT_ONLY.format(store=store, value=value))
    assert message in err
    assert_points_at(err, 5, "t)" if value.startswith(("abs", "fma")) else "t,")


def test_i64_tiles_are_not_supported_yet(tmp_path, capsys):
    err = compile_error(tmp_path, capsys, KERNEL.format(dt="i64"))
    assert "i64 is not supported yet" in err
    assert_points_at(err, 1, "i64")


def test_max_and_min_of_a_loaded_integer_scalar_and_a_constant_in_the_interpreter():
    """A loaded i32 scalar is a 0-d tensor in the interpreter, a constant a Python int:
    torch.maximum took only tensors (grouped_fp8_gemm's max(load m_idx[m0], 0) crashed)."""
    import torch

    from commdsl.compiler import compile_source
    from commdsl.interpreter import run
    source = """kernel k(idx: i32[M], y: out i32[M])
  grid(M)
{
  store y[pid.0] = max(load idx[pid.0], 0) + min(3, load idx[pid.0])
}"""
    kir = compile_source(source, "k.cdsl", emit="ir").ir[0]
    idx = torch.tensor([-5, 2, 7], dtype=torch.int32)
    y = torch.zeros(3, dtype=torch.int32)
    run(kir, dict(idx=idx, y=y), dict(M=3))
    assert y.tolist() == [-5, 4, 10]
