"""Register-tile views: slices with compile-time starts and lengths, reshapes that split or
merge axes, and reductions over any axis of them, on the CPU interpreter (before and after
every pass) and the GPU; their mistakes are located errors."""
import pytest
import torch

import commdsl
from commdsl.compiler import compile_source
from commdsl.interpreter import run
from commdsl.passes import PASS_ORDER, get_pass
from commdsl.runtime.ptxas import assemble, find_ptxas
from commdsl.target import get_target
from diagnostic_checks import compile_error, points_at

# A row of 512 in four groups of 128: each group's max and the sum across groups, and the
# second group on its own. Two rows per program, M ragged.
VIEWS = """\
kernel v(x: f32[M, 512], y: out f32[M, 4], z: out f32[M, 128], w: out f32[M, 128])
  grid(cdiv(M, 2))
  warps(WARPS)
  tune WARPS = 4 in [1, 4, 8]
{
  let t = load x[pid.0 * 2 : +2, 0 : +512]
  let g = reshape(t, 2, 4, 128)
  store y[pid.0 * 2 : +2, 0 : +4] = max(g, axis = 2)
  store z[pid.0 * 2 : +2, 0 : +128] = t[:, 128 : +128] * 2.0
  store w[pid.0 * 2 : +2, 0 : +128] = reshape(sum(g, axis = 1), 2, 128)
}
"""


def _reference(x):
    g = x.view(-1, 4, 128)
    return g.amax(2), x[:, 128:256] * 2.0, g.sum(1)


def _check(outs, x):
    for got, want in zip(outs, _reference(x)):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("warps", [1, 4, 8])
def test_views_at_every_stage(warps):
    x = torch.randn(5, 512)
    kir = compile_source(VIEWS, "v.cdsl", emit="ir", constants=dict(WARPS=warps)).ir[0]
    for stage in ["irgen", *PASS_ORDER]:
        if stage != "irgen":
            kir = get_pass(stage)(kir, get_target("sm_90a"))
        outs = [torch.full(s, float("nan")) for s in ((5, 4), (5, 128), (5, 128))]
        run(kir, dict(x=x, y=outs[0], z=outs[1], w=outs[2]), dict(M=5))
        _check(outs, x)


def test_a_slice_of_a_ragged_tile_reduces_only_what_was_read():
    source = """\
kernel s(x: f32[M, N], y: out f32[M])
  grid(M)
{
  let t = load x[pid.0 : +1, 0 : +512]
  store y[pid.0 : +1] = max(t[:, 256 : +256], axis = 1)
}
"""
    x = torch.randn(3, 300) - 5.0
    y = commdsl.load(source).interpret(x)
    assert torch.equal(y, x[:, 256:].amax(1))


def test_views_compile_and_ptxas_accepts_them():
    ptx = compile_source(VIEWS, "v.cdsl").ptx
    if find_ptxas():
        assemble(ptx, arch="sm_90a", entry="v")


@pytest.mark.gpu
@pytest.mark.parametrize("warps", [1, 4, 8])
def test_views_on_the_gpu(warps):
    x = torch.randn(301, 512)
    outs = commdsl.load(VIEWS, WARPS=warps)(x.cuda())
    _check([o.cpu() for o in outs], x)


# ---- diagnostics -------------------------------------------------------------------------


# (what the source says instead, the line, what the caret underlines, words the message has)
VIEW_MISTAKES = [
    (("reshape(t, 2, 4, 128)", "reshape(t, 2, 3, 128)"), 7, "reshape(t, 2, 3, 128)",
     ("768", "1024")),
    (("t[:, 128 : +128]", "t[:, 448 : +128]"), 9, "448 : +128", ("512",)),
    (("t[:, 128 : +128]", "t[:, pid.0 : +128]"), 9, "pid.0 : +128", ("compile-time",)),
    (("x: f32[M, 512]", "x: f32[M, N]"), 8, "max(g, axis = 2)", ("other = -inf",)),
]


@pytest.mark.parametrize("edit, line, under, words", VIEW_MISTAKES,
                         ids=["reshape_not_dividing", "slice_out_of_the_tile",
                              "slice_at_a_runtime_start", "reduce_reshaped_unread_elements"])
def test_a_view_mistake_is_a_located_compile_error(edit, line, under, words):
    source = VIEWS.replace(*edit)
    text = compile_error(source)
    points_at(text, source, line, under)
    assert "help:" in text, text
    assert all(w in text for w in words), text


def test_a_reshaped_ragged_tile_reduces_right_with_other():
    source = VIEWS.replace("x: f32[M, 512]", "x: f32[M, N]").replace(
        "0 : +512]", "0 : +512] other = 0.0").replace("max(g", "sum(g")
    x = torch.randn(5, 400)
    y, _, _ = commdsl.load(source).interpret(x)
    padded = torch.cat([x, torch.zeros(5, 112)], 1).view(5, 4, 128)
    torch.testing.assert_close(y, padded.sum(2))


def test_a_slice_of_a_tile_a_loop_built_from_ragged_loads_is_a_locatedcompile_error():
    source = """\
kernel c(x: f32[M, N], y: out f32[M])
  grid(M)
{
  let acc = load x[pid.0 : +1, 0 : +256]
  for n0 in 256 .. N step 256 {
    acc = max(acc, load x[pid.0 : +1, n0 : +256])
  }
  store y[pid.0 : +1] = max(acc[:, 0 : +128], axis = 1)
}
"""
    text = compile_error(source)
    points_at(text, source, 8, "max(acc[:, 0 : +128], axis = 1)")
    assert "help:" in text, text
    assert "loop" in text
