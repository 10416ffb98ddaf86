"""cumsum (the `scan` op): the running sum along an axis, in the interpreter and on the GPU,
over layouts whose axis lies within a thread, across lanes, across warps and across
repeats; ragged tiles; bool and integer tiles summed in i32; and the mistakes it reports."""
import pytest
import torch

import commdsl
from commdsl.compiler import compile_source
from commdsl.runtime.ptxas import assemble
from test_diagnostics import assert_points_at, compile_error

KERNEL = """\
kernel scans(x: i32[M, N], f: f32[M, N], v: i32[L], rows: out i32[M, N], cols: out f32[M, N],
             flat: out i32[L], count: out i32[M, N])
  tune WARPS = 4 in [1, 4, 8]
  grid(cdiv(M, 8))
  warps(WARPS)
{
  let r = pid.0 * 8
  let t = load x[r : +8, 0 : +512]
  store rows[r : +8, 0 : +512] = cumsum(t)
  store cols[r : +8, 0 : +512] = cumsum(load f[r : +8, 0 : +512], axis = 0)
  store count[r : +8, 0 : +512] = cumsum(t > 0, axis = -1)
  store flat[0 : +2048] = cumsum(load v[0 : +2048])
}
"""


def inputs(m, n, length, device="cpu"):
    g = torch.Generator().manual_seed(m * 1000 + n)
    x = torch.randint(-1000, 1000, (m, n), generator=g, dtype=torch.int32)
    x[0, :7] = 2 ** 30 // 8                   # large terms: an i32 sum wraps as on the GPU
    f = torch.randn(m, n, generator=g) * torch.where(torch.rand(m, n, generator=g) < 0.01,
                                                     1000.0, 1.0)
    v = torch.randint(-50, 50, (length,), generator=g, dtype=torch.int32)
    return [t.to(device) for t in (x, f, v)]


def outputs(m, n, length, device="cpu"):
    outs = [torch.empty(m, n, dtype=torch.int32), torch.empty(m, n),
            torch.empty(length, dtype=torch.int32), torch.empty(m, n, dtype=torch.int32)]
    return [o.fill_(-7).to(device) for o in outs]


def check(x, f, v, rows, cols, flat, count):
    x, f, v, rows, cols, flat, count = (t.cpu() for t in (x, f, v, rows, cols, flat, count))
    n = min(x.shape[1], 512)
    assert torch.equal(rows[:, :n], x[:, :n].long().cumsum(1).int())     # wraps as i32 does
    assert torch.equal(count[:, :n], (x[:, :n] > 0).int().cumsum(1).int())
    assert torch.equal(flat[:2048], v[:2048].cumsum(0).int())
    # f32: against float64, relative to the sum of magnitudes (the order of the adds differs)
    want = torch.cat([f[i:i + 8, :n].double().cumsum(0) for i in range(0, len(f), 8)])
    scale = torch.cat([f[i:i + 8, :n].double().abs().cumsum(0) for i in range(0, len(f), 8)])
    assert ((cols[:, :n].double() - want).abs() / scale).max() < 1e-6
    assert (rows[:, n:] == -7).all() and (flat[2048:] == -7).all()     # past the tile: untouched


SHAPES = [(16, 512, 2048), (13, 700, 2100), (5, 300, 1500)]     # ragged rows and columns


@pytest.mark.parametrize("warps", [1, 4, 8])
@pytest.mark.parametrize("m,n,length", SHAPES)
def test_cumsum_in_the_interpreter(m, n, length, warps):
    ins, outs = inputs(m, n, length), outputs(m, n, length)
    commdsl.load(KERNEL, WARPS=warps).interpret(*ins, *outs)
    check(*ins, *outs)


@pytest.mark.gpu
@pytest.mark.parametrize("warps", [1, 4, 8])
@pytest.mark.parametrize("m,n,length", SHAPES)
def test_cumsum_on_the_gpu(m, n, length, warps):
    ins, outs = inputs(m, n, length, "cuda"), outputs(m, n, length, "cuda")
    commdsl.load(KERNEL, WARPS=warps)(*ins, *outs)
    torch.cuda.synchronize()
    check(*ins, *outs)


@pytest.mark.parametrize("warps", [4, 8])     # (one warp holds 128 elements a thread)
def test_cumsum_compiles_without_spills(warps):
    ptx = compile_source(KERNEL, constants={"WARPS": warps}).ptx
    assert "shfl.sync.up.b32" in ptx
    report = assemble(ptx, "sm_90a").report
    assert report.spill_stores_bytes == 0 and not report.warnings, report.summary()


def test_cumsum_of_a_scalar_is_an_error(tmp_path, capsys):
    src = """\
kernel k(x: i32[N], y: out i32[N])
  grid(1)
{
  store y[0] = cumsum(load x[0])
}
"""
    err = compile_error(tmp_path, capsys, src)
    assert "cumsum sums along an axis of a tile" in str(err)
    assert_points_at(err, 4, "load x[0]")


@pytest.mark.parametrize("call,message", [
    ("cumsum(load x[0 : +256], axis = 1)", "axis must be an integer in [0, 1)"),
    ("cumsum(load x[0 : +256], dim = 0)", "cumsum takes one keyword, axis")])
def test_cumsum_arguments_are_checked(tmp_path, capsys, call, message):
    src = f"""\
kernel k(x: i32[N], y: out i32[N])
  grid(1)
{{
  store y[0 : +256] = {call}
}}
"""
    err = compile_error(tmp_path, capsys, src)
    assert message in str(err)


def test_cumsum_over_copies_that_are_not_whole_is_not_supported_yet(tmp_path, capsys):
    """80 elements over 128 threads: the last 48 threads hold copies of the first 48, not
    a whole second copy of the axis."""
    src = """\
kernel k(x: i32[N], y: out i32[N])
  grid(1)
{
  store y[0 : +80] = cumsum(load x[0 : +80])
}
"""
    err = compile_error(tmp_path, capsys, src)
    assert "cumsum over this tile is not supported yet" in str(err)
    assert_points_at(err, 4, "cumsum(load x[0 : +80])")


SHORT = """\
kernel short(x: i32[N], y: out i32[N], z: out i32[4, 8])
  tune WARPS = 4 in [1, 4]
  grid(1)
  warps(WARPS)
{
  store y[0 : +16] = cumsum(load x[0 : +16])
  store z[0 : +4, 0 : +8] = cumsum(load x[0 : +8])[None, :] + iota(4, 8, axis = 0)
}
"""


def _short(device):
    x = torch.randint(-100, 100, (16,), dtype=torch.int32, device=device)
    y = torch.full((16,), -7, dtype=torch.int32, device=device)
    z = torch.full((4, 8), -7, dtype=torch.int32, device=device)
    want_z = x[:8].cumsum(0).int()[None, :] + torch.arange(4, device=device)[:, None].int()
    return (x, y, z), (x.cumsum(0).int(), want_z)


@pytest.mark.parametrize("warps", [1, 4])
def test_cumsum_of_a_tile_the_threads_hold_several_times(warps):
    """16 and 8 elements over 32 or 128 threads: every copy of the axis sums on its own
    (the interpreter here; the PTX assembles; the GPU test below runs it)."""
    (x, y, z), (want_y, want_z) = _short("cpu")
    commdsl.load(SHORT, WARPS=warps).interpret(x, y, z)
    assert torch.equal(y, want_y) and torch.equal(z, want_z)
    ptx = compile_source(SHORT, constants={"WARPS": warps}).ptx
    assert assemble(ptx, "sm_90a").report.spill_stores_bytes == 0


@pytest.mark.gpu
@pytest.mark.parametrize("warps", [1, 4])
def test_cumsum_of_a_tile_the_threads_hold_several_times_on_the_gpu(warps):
    (x, y, z), (want_y, want_z) = _short("cuda")
    commdsl.load(SHORT, WARPS=warps)(x, y, z)
    torch.cuda.synchronize()
    assert torch.equal(y, want_y) and torch.equal(z, want_z)
