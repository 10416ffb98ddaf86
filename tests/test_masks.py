"""Elements a load did not read (past the tensor's edge) never take part in a reduction: max,
min, sum and amax over ragged tiles equal torch's over the tensor itself, on the CPU
interpreter (before and after every pass) and on the GPU (commdsl/ragged.py)."""
import pytest
import torch

import commdsl
from commdsl.compiler import compile_source
from commdsl.interpreter import run
from commdsl.ir_parser import parse_kernel
from commdsl.ir_printer import print_kernel
from commdsl.passes import PASS_ORDER, get_pass
from commdsl.runtime.ptxas import assemble, find_ptxas
from commdsl.target import get_target
from diagnostic_checks import compile_error, points_at

# One row of N per program in tiles of 512: N = 300 is one ragged tile, N = 1000 two tiles,
# the second ragged (the online-softmax case of issue 13).
ROWS = """\
kernel rows(x: f32[M, N], y: out f32[M, 4])
  grid(M)
{
  let t = load x[pid.0 : +1, 0 : +512]
  let mx = max(t, axis = 1)
  let mn = min(t, axis = 1)
  let sm = sum(t - 1.0, axis = 1)
  let am = amax(t - 1.0, axis = 1)
  for n0 in 512 .. N step 512 {
    let u = load x[pid.0 : +1, n0 : +512]
    mx = max(mx, max(u, axis = 1))
    mn = min(mn, min(u, axis = 1))
    sm += sum(u - 1.0, axis = 1)
    am = max(am, amax(u - 1.0, axis = 1))
  }
  store y[pid.0 : +1, 0] = mx
  store y[pid.0 : +1, 1] = mn
  store y[pid.0 : +1, 2] = sm
  store y[pid.0 : +1, 3] = am
}
"""

# A whole 64 x 64 block reduced to one value, ragged along both axes, read transposed too.
BLOCK = """\
kernel block(x: f32[R, C], y: out f32[cdiv(R, 64), cdiv(C, 64), 4])
  grid(cdiv(R, 64), cdiv(C, 64))
  warps(4)
{
  let t = load x[pid.0 * 64 : +64, pid.1 * 64 : +64]
  store y[pid.0, pid.1, 0] = max(max(t, axis = 1), axis = 0)
  store y[pid.0, pid.1, 1] = min(min(transpose(t), axis = 0), axis = 0)
  store y[pid.0, pid.1, 2] = sum(t + 2.0)
  store y[pid.0, pid.1, 3] = amax(t - 3.0)
}
"""


def _rows_reference(x):
    return torch.stack([x.amax(1), x.amin(1), (x - 1.0).double().sum(1).float(),
                        (x - 1.0).abs().amax(1)], 1)


def _block_reference(x, rr, cc):
    out = torch.empty(rr, cc, 4)
    for i in range(rr):
        for j in range(cc):
            b = x[i * 64:(i + 1) * 64, j * 64:(j + 1) * 64]
            out[i, j] = torch.stack([b.max(), b.min(), (b + 2.0).double().sum().float(),
                                     (b - 3.0).abs().max()])
    return out


def _inputs(m, n, seed, shift):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, n, generator=g) + shift


def _stages(source, sizes):
    """The kernel's IR after irgen, then after each pass."""
    kir = compile_source(source, "k.cdsl", emit="ir",
                         divisible={s: n % 16 == 0 for s, n in sizes.items()}).ir[0]
    yield "irgen", kir
    for name in PASS_ORDER:
        kir = get_pass(name)(kir, get_target("sm_90a"))
        yield name, kir


def _close(y, ref):
    torch.testing.assert_close(y[..., :2], ref[..., :2], rtol=0, atol=0)   # max, min: exact
    torch.testing.assert_close(y[..., 3], ref[..., 3], rtol=0, atol=0)     # amax: exact
    torch.testing.assert_close(y[..., 2], ref[..., 2], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("n", [300, 1000, 1024])
@pytest.mark.parametrize("shift", [-5.0, 5.0])      # all negative (0 would be the max), positive
def test_row_reductions_ignore_the_padding_at_every_stage(n, shift):
    x = _inputs(3, n, seed=n, shift=shift)
    ref = _rows_reference(x)
    for stage, kir in _stages(ROWS, dict(M=3, N=n)):
        y = torch.full((3, 4), float("nan"))
        run(kir, dict(x=x, y=y), dict(M=3, N=n))
        try:
            _close(y, ref)
        except AssertionError as e:
            raise AssertionError(f"after {stage}: {e}") from None


@pytest.mark.parametrize("r,c", [(100, 70), (64, 128), (1, 65)])
@pytest.mark.parametrize("shift", [-5.0, 5.0])
def test_block_reductions_ignore_the_padding_along_both_axes(r, c, shift):
    x = _inputs(r, c, seed=r * c, shift=shift)
    rr, cc = -(-r // 64), -(-c // 64)
    y = commdsl.load(BLOCK).interpret(x)
    _close(y, _block_reference(x, rr, cc))


def test_a_reduction_over_a_read_tile_gets_the_count_of_elements_read():
    kir = compile_source(ROWS, "k.cdsl", emit="ir").ir[0]
    reduces = [op for op in kir.walk() if op.name == "reduce"]
    assert len(reduces) == 8 and all(len(op.operands) == 2 for op in reduces)


def test_a_sum_or_amax_of_values_still_zero_past_the_edge_gets_no_count():
    """0 is their identity: act_quant's amax(t) and a product's sum keep their code."""
    source = """\
kernel z(x: bf16[M, N], s: f32[M], y: out f32[M, 2])
  grid(cdiv(M, 4))
{
  let t = load x[pid.0 * 4 : +4, 0 : +256]
  let v = -cast<f32>(t) * load s[pid.0 * 4 : +4][:, None]
  store y[pid.0 * 4 : +4, 0] = amax(v, axis = 1)
  store y[pid.0 * 4 : +4, 1] = sum(abs(v), axis = 1)
}
"""
    kir = compile_source(source, "k.cdsl", emit="ir").ir[0]
    assert [len(op.operands) for op in kir.walk() if op.name == "reduce"] == [1, 1]
    x = torch.randn(5, 200).to(torch.bfloat16)
    s = torch.rand(5) + 0.5
    y = commdsl.load(source).interpret(x, s)
    v = -x.float() * s[:, None]
    torch.testing.assert_close(y[:, 0], v.abs().amax(1), rtol=0, atol=0)
    torch.testing.assert_close(y[:, 1], v.abs().sum(1), rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("source", [ROWS, BLOCK])
def test_a_counted_reduce_reads_back_from_ir_text(source):
    for stage, kir in _stages(source, dict(M=3, N=1000, R=100, C=70)):
        text = print_kernel(kir)
        assert print_kernel(parse_kernel(text)) == text, stage


@pytest.mark.parametrize("source,entry", [(ROWS, "rows"), (BLOCK, "block")])
def test_counted_reductions_compile_and_ptxas_accepts_them(source, entry):
    ptx = compile_source(source, "k.cdsl").ptx
    assert "setp.lt.s32" in ptx
    if find_ptxas():
        assemble(ptx, arch="sm_90a", entry=entry)


@pytest.mark.gpu
@pytest.mark.parametrize("n", [300, 1000, 1024])
@pytest.mark.parametrize("shift", [-5.0, 5.0])
def test_row_reductions_ignore_the_padding_on_the_gpu(n, shift):
    x = _inputs(300, n, seed=n, shift=shift)
    y = torch.full((300, 4), float("nan"), device="cuda")
    commdsl.load(ROWS)(x.cuda(), y=y)
    _close(y.cpu(), _rows_reference(x))


@pytest.mark.gpu
@pytest.mark.parametrize("r,c", [(100, 70), (64, 128), (1000, 999)])
@pytest.mark.parametrize("shift", [-5.0, 5.0])
def test_block_reductions_ignore_the_padding_on_the_gpu(r, c, shift):
    x = _inputs(r, c, seed=r * c, shift=shift)
    rr, cc = -(-r // 64), -(-c // 64)
    y = commdsl.load(BLOCK)(x.cuda())
    _close(y.cpu(), _block_reference(x, rr, cc))


# ---- `load ... mask(c) other = v` and `store ... mask(c) = t` ---------------------------

MASKED = """\
kernel mk(x: bf16[M, N], c: bool[M, N], y: out f32[M, N], z: out bf16[M, N], w: out f32[M])
  grid(M)
{
  let keep = load c[pid.0 : +1, 0 : +256]
  let t = load x[pid.0 : +1, 0 : +256] mask(keep) other = -inf
  store y[pid.0 : +1, 0 : +256] = cast<f32>(t)
  store z[pid.0 : +1, 0 : +256] mask(keep) = load x[pid.0 : +1, 0 : +256]
  store w[pid.0 : +1] = max(t, axis = 1)
}
"""


def _masked_inputs(m, n, seed):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(m, n, generator=g) - 3.0).to(torch.bfloat16)
    return x, torch.rand(m, n, generator=g) > 0.5


def _check_masked(x, c, y, z, w):
    read = torch.where(c, x.float(), -torch.inf)
    assert torch.equal(y, read)
    assert torch.equal(z.float(), torch.where(c, x.float(), 7.0))   # untouched where c is false
    assert torch.equal(w, read.amax(1))


@pytest.mark.parametrize("n", [200, 256])
def test_a_masked_load_reads_other_and_a_masked_store_writes_only_where_the_mask_holds(n):
    x, c = _masked_inputs(3, n, seed=n)
    z = torch.full((3, n), 7.0).to(torch.bfloat16)
    y, _, w = commdsl.load(MASKED).interpret(x, c, z=z)
    _check_masked(x, c, y, z, w)


def test_other_without_a_mask_fills_past_the_edge_and_the_reduction_takes_it():
    source = """\
kernel o(x: f32[M, N], y: out f32[M])
  grid(M)
{
  let t = load x[pid.0 : +1, 0 : +128] other = 100.0
  store y[pid.0 : +1] = sum(t, axis = 1)
}
"""
    x = torch.ones(2, 100)
    assert torch.equal(commdsl.load(source).interpret(x), torch.full((2,), 100.0 + 28 * 100.0))


def test_masked_accesses_compile_and_ptxas_accepts_them():
    ptx = compile_source(MASKED, "k.cdsl").ptx
    if find_ptxas():
        assemble(ptx, arch="sm_90a", entry="mk")


def test_a_masked_access_reads_back_from_ir_text():
    for stage, kir in _stages(MASKED, dict(M=3, N=200)):
        text = print_kernel(kir)
        assert print_kernel(parse_kernel(text)) == text, stage
        assert "mask = true" in text


def test_a_variable_may_still_be_called_mask():
    source = MASKED.replace("keep", "mask")
    assert "let mask = load c" in source
    x, c = _masked_inputs(2, 256, seed=3)
    z = torch.full((2, 256), 7.0).to(torch.bfloat16)
    y, _, w = commdsl.load(source).interpret(x, c, z=z)
    _check_masked(x, c, y, z, w)


@pytest.mark.gpu
@pytest.mark.parametrize("n", [200, 256, 1000])
def test_masked_accesses_on_the_gpu(n):
    x, c = _masked_inputs(300, n, seed=n)
    z = torch.full((300, n), 7.0).to(torch.bfloat16).cuda()
    source = MASKED.replace("256", "1024") if n > 256 else MASKED
    y, _, w = commdsl.load(source)(x.cuda(), c.cuda(), z=z)
    _check_masked(x, c, y.cpu(), z.cpu(), w.cpu())


# ---- diagnostics: file:line:col, a caret under the mistake, a help line ------------------


# (the edits of the source, the line, what the caret underlines, words the message has)
MASK_MISTAKES = [
    ([("mask(keep) other", "mask(cast<f32>(keep)) other")], 5, "cast<f32>(keep)", ("bool",)),
    ([("mask(keep) =", "mask(load c[pid.0 : +1, 0 : +128]) =")], 7,
     "load c[pid.0 : +1, 0 : +128]", ("[1, 128]", "[1, 256]")),
    ([("other = -inf", "other = t0"),
      ("  let t =", "  let t0 = load x[pid.0 : +1, 0 : +256]\n  let t =")], 6, "t0",
     ("compile-time",)),
    ([("] mask(keep) other = -inf", "] via tma mask(keep)")], 5, "keep)", ("tma",)),
]


@pytest.mark.parametrize("edits, line, under, words", MASK_MISTAKES,
                         ids=["mask_not_bool", "mask_of_another_shape", "other_not_a_number",
                              "mask_on_a_tma_load"])
def test_a_mask_mistake_is_a_located_compile_error(edits, line, under, words):
    source = MASKED
    for edit in edits:
        source = source.replace(*edit)
    text = compile_error(source)
    points_at(text, source, line, under)
    assert "help:" in text, text
    assert all(w in text for w in words), text


ROW_MASK = """\
kernel r(x: f32[M, 128], c: bool[M], y: out f32[M])
  grid(cdiv(M, 64))
  warps(4)
{
  let t = load x[pid.0 * 64 : +64, 0 : +128]
  let s = 1.0 / max(t, axis = 1)
  store y[pid.0 * 64 : +64] mask(load c[pid.0 * 64 : +64]) = s
}
"""


def test_a_mask_spread_unlike_its_tile_moves_through_shared_memory():
    """A row result (Sliced over the threads, compact after passes/replicas.py) stored
    under a mask loaded on its own (Blocked)."""
    x, c = torch.randn(70, 128) - 3.0, torch.rand(70) > 0.5
    for stage, kir in _stages(ROW_MASK, dict(M=70)):
        y = torch.full((70,), 5.0)
        run(kir, dict(x=x, c=c, y=y), dict(M=70))
        assert torch.equal(y, torch.where(c, 1.0 / x.amax(1), 5.0)), stage
    store = next(op for op in kir.walk() if op.name == "store")
    assert store.attrs["smem_bytes"] == 64
    ptx = compile_source(ROW_MASK, "k.cdsl").ptx
    if find_ptxas():
        assemble(ptx, arch="sm_90a", entry="r")


@pytest.mark.gpu
def test_a_mask_spread_unlike_its_tile_on_the_gpu():
    x, c = torch.randn(300, 128) - 3.0, torch.rand(300) > 0.5
    y = torch.full((300,), 5.0, device="cuda")
    commdsl.load(ROW_MASK)(x.cuda(), c.cuda(), y=y)
    assert torch.equal(y.cpu(), torch.where(c, 1.0 / x.amax(1), 5.0))


CARRIED = """\
kernel c(x: f32[M, N], y: out f32[M])
  grid(M)
{
  let acc = load x[pid.0 : +1, 0 : +256]
  for n0 in 256 .. N step 256 {
    acc = ACC(acc, load x[pid.0 : +1, n0 : +256])
  }
  store y[pid.0 : +1] = RED(acc, axis = 1)
}
"""


def test_a_sum_of_a_tile_a_loop_accumulated_counts_the_padding_as_0():
    source = CARRIED.replace("ACC(acc, ", "acc + (").replace("RED", "sum")
    x = torch.randn(3, 600) - 5.0
    y = commdsl.load(source).interpret(x)
    torch.testing.assert_close(y, x.sum(1), rtol=1e-5, atol=1e-4)


def test_a_max_of_a_tile_a_loop_built_from_ragged_loads_is_a_locatedcompile_error():
    source = CARRIED.replace("ACC", "max").replace("RED", "max")
    text = compile_error(source)
    points_at(text, source, 8, "max(acc, axis = 1)")
    assert "help:" in text, text
    assert "max(t, axis = 1)" in text and "other = -inf" in text


def test_a_max_of_a_tile_a_loop_built_reduces_right_with_other():
    source = CARRIED.replace("ACC", "max").replace("RED", "max").replace(
        ": +256]", ": +256] other = -inf")
    x = torch.randn(3, 600) - 5.0
    assert torch.equal(commdsl.load(source).interpret(x), x.amax(1))


SOFTMAX = """\
kernel softmax(x: f32[M, N], y: out f32[M, N])
  grid(M)
{
  let t0 = load x[pid.0 : +1, 0 : +512]
  let m0 = max(t0, axis = 1)
  let s0 = sum(exp(t0 - m0[:, None]), axis = 1)
  let m = m0
  let s = s0
  for n0 in 512 .. N step 512 {
    let t = load x[pid.0 : +1, n0 : +512]
    let mn = max(m, max(t, axis = 1))
    s = s * exp(m - mn) + sum(exp(t - mn[:, None]), axis = 1)
    m = mn
  }
  for n0 in 0 .. N step 512 {
    store y[pid.0 : +1, n0 : +512] = exp(load x[pid.0 : +1, n0 : +512] - m[:, None]) / s[:, None]
  }
}
"""


def _needs_exp():
    from commdsl.irgen import FUNCTIONS
    if "exp" not in FUNCTIONS:
        pytest.skip("needs exp (helper math's elementwise functions)")


@pytest.mark.parametrize("n", [1000, 300, 1024])
def test_an_online_softmax_over_ragged_tiles_is_right(n):
    """Issue 13's case: N = 1000 in tiles of 512 was off by 5.9e-4 with the padding's exp(0)
    in the sums and its 0 in the maxima."""
    _needs_exp()
    x = torch.randn(4, n) * 3.0
    y = commdsl.load(SOFTMAX).interpret(x)
    ref = torch.softmax(x.double(), 1)
    assert ((y.double() - ref).abs() / ref).max() < 2e-6


@pytest.mark.gpu
@pytest.mark.parametrize("n", [1000, 4095, 8192])
def test_an_online_softmax_over_ragged_tiles_on_the_gpu(n):
    _needs_exp()
    x = torch.randn(64, n) * 3.0
    y = commdsl.load(SOFTMAX)(x.cuda()).cpu()
    ref = torch.softmax(x.double(), 1)
    assert ((y.double() - ref).abs() / ref).max() < 2e-6


@pytest.mark.parametrize("start,grid,inside", [
    ("pid.0 * 128", "grid(K / 128, M)", True),          # the grid covers K exactly
    ("pid.0 * 128", "grid(cdiv(K, 128), M)", False),
    ("pid.0 * 64", "grid(K / 128, M)", False),
])
def test_a_tile_that_stays_inside_the_tensor_gets_no_count(start, grid, inside):
    source = f"""\
kernel k(x: f32[M, K], y: out f32[M, K / 128])
  {grid}
{{
  let t = load x[pid.1 : +1, {start} : +128]
  store y[pid.1 : +1, pid.0] = max(t, axis = 1)
}}
"""
    kir = compile_source(source, "k.cdsl", emit="ir").ir[0]
    (reduce,) = [op for op in kir.walk() if op.name == "reduce"]
    assert len(reduce.operands) == (1 if inside else 2)


@pytest.mark.parametrize("shape,inside", [("K / 512", True), ("K", False)])
def test_a_loop_over_a_dim_its_step_divides_gets_no_count(shape, inside):
    source = f"""\
kernel k(x: f32[M, K], y: out f32[M], z: out f32[M, {shape}])
  grid(M)
{{
  for k0 in 0 .. K step 512 {{
    store y[pid.0 : +1] = max(load x[pid.0 : +1, k0 : +512], axis = 1)
  }}
}}
"""
    kir = compile_source(source, "k.cdsl", emit="ir").ir[0]
    (reduce,) = [op for op in kir.walk() if op.name == "reduce"]
    assert len(reduce.operands) == (1 if inside else 2)
