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
