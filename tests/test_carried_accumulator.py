"""A loop-carried 1-D accumulator started from zeros(f32, R) and added to row reductions
(issue 13: "a 1-D accumulator and a row reduction cannot be added"): the splat that starts
it takes the reduction's layout (passes/tile.py), so it compiles and sums right, on the CPU
interpreter and on the GPU, ragged N included."""
import pytest
import torch

import commdsl
from commdsl.compiler import compile_source
from commdsl.runtime.ptxas import assemble

ROWSUM = """\
kernel rowsum(x: f32[M, N], y: out f32[M], z: out f32[M])
  tune ROWS = 4 in [1, 4, 16]
  tune WARPS = 4 in [1, 4, 8]
  grid(cdiv(M, ROWS))
  warps(WARPS)
{
  let acc = zeros(f32, ROWS)
  let big = zeros(f32, ROWS)
  for n0 in 0 .. N step 128 {
    let t = load x[pid.0 * ROWS : +ROWS, n0 : +128]
    acc += sum(t, axis = 1)
    big = max(big, amax(t, axis = 1))
  }
  store y[pid.0 * ROWS : +ROWS] = acc
  store z[pid.0 * ROWS : +ROWS] = big
}
"""
CONFIGS = [dict(ROWS=4, WARPS=4), dict(ROWS=1, WARPS=1), dict(ROWS=16, WARPS=8),
           dict(ROWS=4, WARPS=4, pipeline=True)]


def _source(cfg):
    """The kernel and its constants; pipeline: the loads of step i + 1 issued during step i."""
    text = ROWSUM.replace("step 128 {", "step 128 pipeline(2) {") if cfg.get("pipeline") else ROWSUM
    return text, {k: v for k, v in cfg.items() if k != "pipeline"}


def _id(cfg):
    return f"R{cfg['ROWS']}W{cfg['WARPS']}" + ("-pipeline" if cfg.get("pipeline") else "")


def _inputs(device="cpu"):
    g = torch.Generator(device=device).manual_seed(3)
    return torch.randn(37, 1000, generator=g, device=device) * 3      # N ragged: 1000


def _check(x, y, z):
    want = x.double().sum(1)
    assert torch.allclose(y.double(), want, rtol=1e-5, atol=1e-3), (y, want)
    assert torch.equal(z, x.abs().amax(1))


@pytest.mark.parametrize("cfg", CONFIGS, ids=_id)
def test_accumulator_compiles_and_sums_in_the_interpreter(cfg):
    source, constants = _source(cfg)
    compiled = compile_source(source, "rowsum.cdsl", constants=constants)
    report = assemble(compiled.ptx, arch=compiled.target, entry="rowsum").report
    assert report.spill_stores_bytes == 0
    x = _inputs()
    y, z = torch.full((37,), float("nan")), torch.full((37,), float("nan"))
    commdsl.load(source, **constants).interpret(x, y=y, z=z)
    _check(x, y, z)


@pytest.mark.gpu
@pytest.mark.parametrize("cfg", CONFIGS, ids=_id)
def test_accumulator_on_the_gpu(cfg):
    source, constants = _source(cfg)
    x = _inputs("cuda")
    y = torch.full((37,), float("nan"), device="cuda")
    z = torch.full((37,), float("nan"), device="cuda")
    commdsl.load(source, **constants)(x, y=y, z=z)
    torch.cuda.synchronize()
    _check(x.cpu(), y.cpu(), z.cpu())



COUNTERS = """\
kernel counters(x: f32[N], sums: out f32[1], steps: out i32[1])
  grid(1)
{
  let n = 0
  let s = 0.0
  for i in 0 .. N step 256 {
    n = n + 1
    s += sum(load x[i : +256])
  }
  store steps[0] = n
  store sums[0] = s
}
"""


def test_a_number_bound_by_let_and_reassigned_is_a_carried_variable():
    """`let n = 0` then `n = n + 1` in a loop: an i32 (a float literal: an f32) carried
    across steps, where it used to be a constant ("constants cannot change")."""
    x = torch.randn(1000)
    sums, steps = torch.full((1,), float("nan")), torch.full((1,), -1, dtype=torch.int32)
    commdsl.load(COUNTERS).interpret(x, sums, steps)
    assert steps.item() == 4
    assert torch.allclose(sums, x.sum().reshape(1), rtol=1e-5)
    ptx = compile_source(COUNTERS).ptx
    assert assemble(ptx, "sm_90a").report.spill_stores_bytes == 0


@pytest.mark.gpu
def test_a_number_bound_by_let_and_reassigned_on_the_gpu():
    x = torch.randn(1000, device="cuda")
    sums = torch.full((1,), float("nan"), device="cuda")
    steps = torch.full((1,), -1, dtype=torch.int32, device="cuda")
    commdsl.load(COUNTERS)(x, sums, steps)
    assert steps.item() == 4
    assert torch.allclose(sums.cpu(), x.sum().cpu().reshape(1), rtol=1e-5)


def test_a_let_number_stays_a_constant_where_only_a_shadowing_let_is_reassigned():
    """The outer L is a tile length (compile-time); the loop's own L is the variable."""
    src = """\
kernel k(x: f32[N], y: out f32[N], c: out i32[1])
  grid(1)
{
  let L = 128
  store y[0 : +L] = load x[0 : +L]
  for i in 0 .. 3 {
    let L = 0
    L = L + i
    store c[0] = L
  }
}
"""
    x, y, c = torch.randn(128), torch.zeros(128), torch.zeros(1, dtype=torch.int32)
    commdsl.load(src).interpret(x, y, c)
    assert torch.equal(y, x) and c.item() == 2


KNOCKOUT = """\
kernel knockout(x: f32[T, 256], y: out f32[T, 8], last: out f32[T])
  tune R = 4 in [1, 4]
  grid(cdiv(T, R))
{
  let group = max(reshape(load x[pid.0 * R : +R, 0 : +256], R, 8, 32), axis = 2)
  let gi = iota(R, 8, axis = 1)
  let s = zeros(f32, R)
  let n = 0
  for j in 0 .. 3 {
    n = n + 1
    let pick = min(where(group == max(group, axis = 1)[:, None], gi, 8), axis = 1)
    group = where(gi == pick[:, None], -inf, group)
    s = sum(load x[pid.0 * R : +R, j * 32 : +32], axis = 1)
  }
  store y[pid.0 * R : +R, 0 : +8] = group
  store last[pid.0 * R : +R] = s + cast<f32>(n)
}
"""


def _knockout_check(x, y, last):
    """Each row's 8 group maxima with its 3 largest set to -inf; the sum of columns 64-95,
    plus the 3 steps counted."""
    want = x.view(-1, 8, 32).amax(-1)
    want.scatter_(1, want.topk(3, dim=1)[1], -torch.inf)
    assert torch.equal(y, want)
    assert torch.allclose(last.double(), x[:, 64:96].double().sum(1) + 3, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("r", [1, 4])
def test_a_carry_the_body_yields_in_another_layout(r):
    """`group` (a reduction's row of group maxima) comes back from a select in its shape's
    own layout, and `s` (zeros) comes back as a row sum: the first moves back before the
    yield, the second starts in the sum's layout (passes/tile.py); a counted scalar rides
    beside them. Both were carried
    register for register, elements mixed, before the ir verifier checked it."""
    x = torch.randn(13, 256) * 3
    y, last = torch.full((13, 8), float("nan")), torch.full((13,), float("nan"))
    commdsl.load(KNOCKOUT, R=r).interpret(x, y=y, last=last)
    _knockout_check(x, y, last)
    ptx = compile_source(KNOCKOUT, constants=dict(R=r)).ptx
    assert assemble(ptx, "sm_90a").report.spill_stores_bytes == 0


@pytest.mark.gpu
@pytest.mark.parametrize("r", [1, 4])
def test_a_carry_the_body_yields_in_another_layout_on_the_gpu(r):
    x = torch.randn(13, 256, device="cuda") * 3
    y = torch.full((13, 8), float("nan"), device="cuda")
    last = torch.full((13,), float("nan"), device="cuda")
    commdsl.load(KNOCKOUT, R=r)(x, y=y, last=last)
    _knockout_check(x.cpu(), y.cpu(), last.cpu())
