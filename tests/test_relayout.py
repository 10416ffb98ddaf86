"""Tiles that threads hold differently, combined (issue 13: "broadcasts between 1-D and 2-D
tiles resolved by the compiler whatever their thread layouts"): passes/tile.py moves one
operand through shared memory (`relayout`), or computes an iota in its partner's layout.

Each kernel compiles, passes ptxas with no spills, and matches a float64 (or integer)
reference in the interpreter and, with poisoned outputs, on the GPU."""
import pytest
import torch

import commdsl
from commdsl.compiler import compile_source
from commdsl.runtime.ptxas import assemble

# A row sum (Sliced) plus a loaded column (its own shape's layout).
COLSUM = """kernel colsum(x: f32[M, 128], b: f32[M], y: out f32[M])
  grid(cdiv(M, 16))
{
  let t = load x[pid.0 * 16 : +16, 0 : +128]
  store y[pid.0 * 16 : +16] = sum(t, axis = 1) + load b[pid.0 * 16 : +16] * 2.0
}
"""
# A carried row vector broadcast back inside the loop that accumulates it: a relayout in a
# loop (its array written again by the next step: a second barrier).
PREFIX = """kernel prefix(x: f32[M, N], y: out f32[M, N])
  grid(cdiv(M, 4))
{
  let acc = zeros(f32, 4)
  for n0 in 0 .. N step 128 {
    let t = load x[pid.0 * 4 : +4, n0 : +128]
    store y[pid.0 * 4 : +4, n0 : +128] = t * acc[:, None]
    acc += sum(t, axis = 1)
  }
}
"""
# Row maxima laid along the other axis: y[i, j] = max(t[i, j], amax of row j of the block).
ACROSS = """kernel across(x: f32[M, K], y: out f32[M, K])
  grid(K / 16, M / 16)
{
  let t = load x[pid.1 * 16 : +16, pid.0 * 16 : +16]
  store y[pid.1 * 16 : +16, pid.0 * 16 : +16] = max(t, amax(t, axis = 1)[None, :])
}
"""
# A 1-D vector as a row of a one-row tile.
ROW = """kernel row(x: f32[1, 256], w: f32[256], y: out f32[1, 256])
  grid(1)
{
  store y[0 : +1, 0 : +256] = load x[0 : +1, 0 : +256] * (load w[0 : +256])[None, :]
}
"""


def _inputs(shape, seed, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g)
    x.view(-1)[::97] *= 1000.0                                  # outliers
    return x.to(device)


def _cases(device="cpu"):
    x = _inputs((37, 128), 1, device)
    b = _inputs((37,), 2, device)
    yield COLSUM, (x, b), (x.double().sum(1) + 2 * b.double(),), dict(M=37)
    x = _inputs((9, 1000), 3, device)
    yield PREFIX, (x,), (_prefix_reference(x.double()),), dict(M=9, N=1000)
    x = _inputs((32, 48), 4, device)
    yield ACROSS, (x,), (_across_reference(x),), dict(M=32, K=48)
    x, w = _inputs((1, 256), 5, device), _inputs((256,), 6, device)
    yield ROW, (x, w), (x.double() * w.double()[None, :],), {}


def _prefix_reference(x):
    """y[:, block] = x[:, block] * (sum of the row before the block)."""
    y = torch.empty_like(x)
    acc = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for n0 in range(0, x.shape[1], 128):
        y[:, n0:n0 + 128] = x[:, n0:n0 + 128] * acc[:, None]
        acc = acc + x[:, n0:n0 + 128].sum(1)
    return y


def _across_reference(x):
    m, k = x.shape
    blocks = x.abs().view(m // 16, 16, k // 16, 16).amax(3)       # [bi, row, bj]
    across = blocks.permute(0, 2, 1)[:, None, :, :].expand(m // 16, 16, k // 16, 16)
    return torch.maximum(x, across.reshape(m, k)).double()


def _outputs(source, sizes, device):
    k = commdsl.load(source)
    return {t.name: torch.full([int(d.evaluate(sizes)) for d in t.dims], float("nan"),
                               device=device)
            for t in k.spec.outputs}


def _check(got, want, name):
    """f32 sums against float64: within 1e-5 of the largest value (outliers of 1000)."""
    want = want.to(got.device)
    assert not got.isnan().any(), f"{name}: elements left unwritten"
    assert torch.allclose(got.double(), want, rtol=1e-5, atol=1e-5 * want.abs().max()), name


@pytest.mark.parametrize("case", range(4), ids=["colsum", "prefix", "across", "row"])
def test_relayout_compiles_and_computes_in_the_interpreter(case):
    source, inputs, reference, sizes = list(_cases())[case]
    compiled = compile_source(source, "relayout.cdsl")
    assert "bar.sync" in compiled.ptx, "the operand moves through shared memory"
    report = assemble(compiled.ptx, arch=compiled.target).report
    assert report.spill_stores_bytes == 0
    outs = _outputs(source, sizes, "cpu")
    commdsl.load(source).interpret(*inputs, **outs)
    for (name, got), want in zip(outs.items(), reference):
        _check(got, want, name)


def test_a_relayout_in_a_loop_meets_twice_per_step():
    """The loop's relayout writes the array again next step: a barrier after the reads."""
    ptx = compile_source(PREFIX, "prefix.cdsl").ptx
    loop = ptx[ptx.index("ld.global"):]
    assert loop.count("bar.sync") >= 2


@pytest.mark.gpu
@pytest.mark.parametrize("case", range(4), ids=["colsum", "prefix", "across", "row"])
def test_relayout_on_the_gpu(case):
    source, inputs, reference, sizes = list(_cases("cuda"))[case]
    outs = _outputs(source, sizes, "cuda")
    commdsl.load(source)(*inputs, **outs)
    torch.cuda.synchronize()
    for (name, got), want in zip(outs.items(), reference):
        _check(got, want, name)


# One iota-made row vector broadcast to two shapes: rows[:, None] to [2, 16] sets the iota's
# layout, so (rows < n)[:, None] reaches its [2, 128] broadcast in another layout and moves
# (a relayout before the broadcast; it was an error, "needs data to move between threads").
TWO_SHAPES = """kernel two(x: i32[16], n: i32[1], y: out i32[2, 16], z: out i32[2, 128])
  grid(1)
{
  let rows = iota(2)
  let valid = rows < load n[0]
  store y[0 : +2, 0 : +16] = rows[:, None] + load x[0 : +16][None, :]
  store z[0 : +2, 0 : +128] mask(valid[:, None]) = iota(2, 128, axis = 1)
}
"""


def _two_shapes(device):
    x = torch.randint(-50, 50, (16,), dtype=torch.int32, device=device)
    n = torch.ones(1, dtype=torch.int32, device=device)
    y = torch.full((2, 16), -7, dtype=torch.int32, device=device)
    z = torch.full((2, 128), -7, dtype=torch.int32, device=device)
    want_z = torch.full((2, 128), -7, dtype=torch.int32)
    want_z[0] = torch.arange(128)
    return (x, n, y, z), (torch.arange(2)[:, None].int() + x.cpu()[None, :], want_z)


def test_a_row_vector_broadcast_to_two_shapes():
    (x, n, y, z), (want_y, want_z) = _two_shapes("cpu")
    commdsl.load(TWO_SHAPES).interpret(x, n, y, z)
    assert torch.equal(y, want_y) and torch.equal(z, want_z)
    ptx = compile_source(TWO_SHAPES).ptx
    assert assemble(ptx, "sm_90a").report.spill_stores_bytes == 0


# One iota-made row vector expanded along both axes: computed once per layout.
BOTH_AXES = """kernel both(x: i32[16], w: i32[8, 4], y: out i32[4, 16], z: out i32[8, 4])
  grid(1)
{
  let rows = iota(4) + 1
  store y[0 : +4, 0 : +16] = rows[:, None] * load x[0 : +16][None, :]
  store z[0 : +8, 0 : +4] = sum(load w[0 : +8, 0 : +4], axis = 1)[:, None] + rows[None, :]
}
"""


def _both_axes(device):
    x = torch.randint(-50, 50, (16,), dtype=torch.int32, device=device)
    w = torch.randint(-50, 50, (8, 4), dtype=torch.int32, device=device)
    y = torch.full((4, 16), -7, dtype=torch.int32, device=device)
    z = torch.full((8, 4), -7, dtype=torch.int32, device=device)
    rows = torch.arange(1, 5, dtype=torch.int32)
    return (x, w, y, z), (rows[:, None] * x.cpu()[None, :], w.cpu().sum(1, dtype=torch.int32)
                          [:, None] + rows[None, :])


def test_an_iota_row_expanded_along_both_axes():
    (x, w, y, z), (want_y, want_z) = _both_axes("cpu")
    commdsl.load(BOTH_AXES).interpret(x, w, y, z)
    assert torch.equal(y, want_y) and torch.equal(z, want_z)
    assert assemble(compile_source(BOTH_AXES).ptx, "sm_90a").report.spill_stores_bytes == 0


@pytest.mark.gpu
@pytest.mark.parametrize("source,operands", [(TWO_SHAPES, _two_shapes),
                                             (BOTH_AXES, _both_axes)])
def test_a_row_vector_in_two_layouts_on_the_gpu(source, operands):
    (x, v, y, z), (want_y, want_z) = operands("cuda")
    commdsl.load(source)(x, v, y, z)
    torch.cuda.synchronize()
    assert torch.equal(y.cpu(), want_y) and torch.equal(z.cpu(), want_z)


# One zeros tile floors a loaded column and a row sum, which threads hold differently: each
# use gets its own splat in its own layout. One shared splat was held as one of them wants
# (its regs counted for that one): the other read too few and the compiler failed
# (IndexError) or would read the wrong ones.
SHARED_ZERO = """kernel floor0(x: f32[16, 64], b: f32[16], y: out f32[16], w: out f32[16])
  grid(1)
{
  let z = zeros(f32, 16)
  store w[0 : +16] = max(load b[0 : +16], z)
  store y[0 : +16] = max(sum(load x[0 : +16, 0 : +64], axis = 1), z)
}
"""


def _shared_zero(device):
    x, b = _inputs((16, 64), 7, device), _inputs((16,), 8, device)
    y = torch.full((16,), float("nan"), device=device)
    w = torch.full((16,), float("nan"), device=device)
    return (x, b, y, w), (x.double().sum(1).clamp(min=0), b.double().clamp(min=0))


def test_one_zeros_tile_used_in_two_layouts():
    (x, b, y, w), (want_y, want_w) = _shared_zero("cpu")
    commdsl.load(SHARED_ZERO).interpret(x, b, y, w)
    _check(y, want_y, "y")
    _check(w, want_w, "w")
    assert assemble(compile_source(SHARED_ZERO).ptx, "sm_90a").report.spill_stores_bytes == 0


@pytest.mark.gpu
def test_one_zeros_tile_used_in_two_layouts_on_the_gpu():
    (x, b, y, w), (want_y, want_w) = _shared_zero("cuda")
    commdsl.load(SHARED_ZERO)(x, b, y, w)
    torch.cuda.synchronize()
    _check(y, want_y, "y")
    _check(w, want_w, "w")
