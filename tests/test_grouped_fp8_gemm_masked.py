"""examples/grouped_fp8_gemm_masked.cdsl (DeepGEMM's masked layout for MoE decoding) and the
ragged persistent loop it stands on, on the CPU: the interpreter against a float64 product
per group (DeepGEMM's calc_diff), the rows at or past each group's count left as they were
(NaN), before the passes and after them; a ragged loop written persistent and as nested
loops means the same; the located errors of ends the scheduler cannot take. On a GPU:
test_gpu_grouped_fp8_gemm.py."""
from __future__ import annotations

import os
import re

import pytest
import torch

from commdsl.compiler import compile_file, compile_source
from commdsl.interpreter import run
from commdsl.passes import PASS_ORDER, get_pass
from commdsl.target import get_target

from diagnostic_checks import compile_error, points_at
from grouped_layout import calc_diff, masked_operands, masked_reference
from test_fp8_gemm import mn_major

MASKED = os.path.join(os.path.dirname(__file__), "..", "examples", "grouped_fp8_gemm_masked.cdsl")
SOURCE = open(MASKED).read()


def _lowered(kir):
    for name in PASS_ORDER:
        kir = get_pass(name)(kir, get_target("sm_90a"))
    return kir


def _run_masked(kir, counts, m_max, n, k, seed):
    a, sa, b, sb, masked_m = masked_operands(counts, m_max, n, k, seed=seed)
    d = torch.full((len(counts), m_max, n), float("nan"), dtype=torch.bfloat16)
    run(kir, dict(a=a, sa=mn_major(sa), b=b, sb=sb, masked_m=masked_m, d=d),
        dict(G=len(counts), M=m_max, N=n, K=k), sms=3)
    return d, masked_reference(a, sa, b, sb, masked_m)


def _check_groups(d, ref, counts):
    for g, count in enumerate(counts):
        valid = max(min(count, d.shape[1]), 0)
        assert d[g, valid:].isnan().all(), f"group {g}: a row past its count was written"
        if valid:
            assert calc_diff(d[g, :valid], ref[g, :valid]) < 1e-3, f"group {g}"


# counts 0, 1, a non-multiple of the tile rows, M_max; past M_max (clamped) and negative (none)
COUNTS = [[0, 1, 70, 128], [130, -5, 64]]
STAGES = [pytest.param(False, id="source"),
          pytest.param(True, id="lowered")]


@pytest.mark.parametrize("lowered", STAGES)
@pytest.mark.parametrize("counts,config,m_max", [(COUNTS[0], dict(BM=64, BN=64), 128),
                                                 (COUNTS[1], dict(), 128),
                                                 ([300, 5, 0], dict(BM=256, STAGES=3), 320),
                                                 ([200, 97], dict(BM=192, STAGES=4), 256)])
def test_interpreter_matches_float64_and_leaves_rows_past_the_count(counts, config, m_max,
                                                                    lowered):
    kir = compile_source(SOURCE, MASKED, emit="ir", constants=config).ir[0]
    d, ref = _run_masked(_lowered(kir) if lowered else kir, counts, m_max, 192, 256,
                         seed=sum(counts))
    _check_groups(d, ref, counts)


def test_ptx_takes_the_operands_and_a_scales_by_rank_3_tma_boxes_and_stores_by_rows():
    """d[g] by rank-3 TMA stores where a warpgroup's rows are all below the count (a bar.red
    vote), predicated stores for the tile that overhangs it."""
    ptx = compile_file(MASKED).ptx
    # a, b and the row of A's scales
    assert ptx.count("cp.async.bulk.tensor.3d.shared::cluster.global") == 3
    assert "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3" in ptx
    assert ptx.count("cp.async.bulk.tensor.3d.global.shared::cta.bulk_group") == 2
    # the overhanging tile: a row's mask covers a thread's pair of columns, 4-byte stores
    assert ptx.count("bar.red.and.pred") == 1 and re.search(r"@%p\d+ st\.global\.b32", ptx)


# ---- the ragged persistent loop itself -------------------------------------------------------

RAGGED = """kernel masked_copy(x: f32[G, M, N], cnt: i32[G], y: out f32[G, M, N])
{
  for g in 0 .. G, m0 in 0 .. min(load cnt[g], M) step 16, n0 in 0 .. N step 32 LOOP {
    let rows = m0 + iota(16, 32, axis = 0) < load cnt[g]
    store y[g, m0 : +16, n0 : +32] mask(rows) = load x[g, m0 : +16, n0 : +32] * 2.0
  }
}"""


@pytest.mark.parametrize("loop,lowered", [("persistent(raster = 2)", False),
                                          ("persistent(raster = 2)", True),
                                          ("persistent(raster = 2, sms = 2)", True),
                                          ("persistent(raster = 2, cluster = 2)", True),
                                          ("", True)],
                         ids=["persistent", "scheduled", "scheduled-on-2-sms",
                              "scheduled-in-cta-pairs", "nested"])
def test_a_ragged_loop_visits_exactly_the_tiles_below_each_count(loop, lowered):
    """Persistent (before and after the scheduler) or nested loops (a grid of one program):
    every row below min(count, M) doubled, the others untouched, empty groups included."""
    source = RAGGED.replace("LOOP", loop)
    if not loop:
        source = source.replace("{\n  for", "  grid(1)\n{\n  for")
    kir = compile_source(source, "k.cdsl", emit="ir").ir[0]
    counts = torch.tensor([0, 17, 40, 100, -1, 33], dtype=torch.int32)
    g, m, n = len(counts), 40, 70
    x = torch.randn(g, m, n)
    y = torch.full((g, m, n), float("nan"))
    run(_lowered(kir) if lowered else kir, dict(x=x, cnt=counts, y=y), dict(G=g, M=m, N=n),
        sms=3)
    for i, count in enumerate(counts.tolist()):
        valid = max(min(count, m), 0)
        assert torch.equal(y[i, :valid], 2 * x[i, :valid])
        assert y[i, valid:].isnan().all()


def test_the_scheduler_spreads_the_tiles_of_all_groups_over_every_cta():
    """DeepGEMM's balance: tiles numbered group after group, CTA c taking t = c, c + P, ...
    (P CTAs), so no CTA has more than one tile more than another, whatever the groups."""
    source = RAGGED.replace("LOOP", "persistent(raster = 2)").replace(
        "load x[g, m0 : +16, n0 : +32] * 2.0", "cast<f32>(pid.0) + zeros(f32, 16, 32)")
    kir = _lowered(compile_source(source, "k.cdsl", emit="ir").ir[0])
    counts = torch.tensor([5, 0, 40, 16, 33], dtype=torch.int32)
    y = torch.full((5, 40, 64), float("nan"))
    run(kir, dict(x=torch.zeros(5, 40, 64), cnt=counts, y=y), dict(G=5, M=40, N=64), sms=4)
    owners = torch.cat([y[i, 0:min(c, 40):16, 0::32].flatten() for i, c in
                        enumerate(counts.tolist())])
    per_cta = torch.bincount(owners.long(), minlength=4)
    assert int(per_cta.sum()) == (1 + 0 + 3 + 1 + 3) * 2       # every tile once
    assert int(per_cta.max() - per_cta.min()) <= 1


# ---- located errors ---------------------------------------------------------------------------

def _ragged_error(loop_ranges: str, under: str, body: str = "") -> str:
    source = RAGGED.replace("for g in 0 .. G, m0 in 0 .. min(load cnt[g], M) step 16, "
                            "n0 in 0 .. N step 32 LOOP", f"for {loop_ranges}")
    source = source.replace("    let rows", body + "    let rows")
    text = compile_error(source)
    points_at(text, source, 3 + body.count("\n"), under)
    return text


def test_an_end_that_uses_a_later_coordinate_is_located():
    text = _ragged_error("g in 0 .. G, m0 in 0 .. load cnt[n0] step 16, n0 in 0 .. N step 32 "
                         "persistent()", "n0]")
    assert "the range of 'm0' uses 'n0', which a later range of this loop defines" in text
    assert "help: a range may use only the coordinates before it" in text


def test_an_end_that_uses_its_own_coordinate_is_located():
    text = _ragged_error("g in 0 .. load cnt[g], m0 in 0 .. M step 16, n0 in 0 .. N step 32 "
                         "persistent()", "g]")
    assert "the range of 'g' uses itself" in text


def test_a_run_time_bound_on_the_first_coordinate_is_located():
    text = _ragged_error("g in 0 .. load cnt[0], m0 in 0 .. load cnt[g] step 16, n0 in 0 .. N "
                         "step 32 persistent()", "load cnt[0]")
    assert "the bounds of a persistent loop must be sizes or constants" in text
    assert "help: write e.g. 'm0 in 0 .. M step BM'" in text


def test_a_start_that_depends_on_an_earlier_coordinate_is_located():
    text = _ragged_error("g in 0 .. G, m0 in g * 16 .. M step 16, n0 in 0 .. N step 32 "
                         "persistent()", "g * 16")
    assert "a persistent range whose start depends on an earlier coordinate is not " \
           "supported yet" in text
    assert "help: start at a size or constant" in text


def test_an_end_that_depends_on_a_tile_coordinate_is_located():
    text = _ragged_error("g in 0 .. G, m0 in 0 .. M step 16, n0 in 0 .. m0 + 16 step 32 "
                         "persistent()", "m0 + 16")
    assert "a tile range whose end depends on another tile coordinate than the first (the " \
           "group) is not supported yet" in text
    assert "help: let the end depend on the first coordinate only" in text


def test_an_end_that_differs_between_ctas_is_located():
    """The scheduler counts the tiles on every CTA: an end from the program id would make
    them count different tiles (a value it cannot evaluate the same everywhere)."""
    text = _ragged_error("g in 0 .. G, m0 in 0 .. min(load cnt[g], smid) step 16, n0 in 0 .. N "
                         "step 32 persistent()", "min(load cnt[g], smid)")
    assert "the end of a persistent loop's range must be the same on every CTA" in text
    assert "depends on 'smid'" in text and "help: compute it from the earlier coordinates" \
        in text


def test_an_end_read_from_a_tensor_the_kernel_writes_is_located():
    source = RAGGED.replace("LOOP", "persistent()").replace("cnt: i32[G]", "cnt: out i32[G]")
    source = source.replace("  }\n}", "    store cnt[g] = 0\n  }\n}")
    text = compile_error(source)
    points_at(text, source, 3, "load cnt[g], M)")
    assert re.search(r"the end of a persistent loop's range reads 'cnt', which this kernel "
                     r"writes", text)
    assert "help: read the counts from a tensor the kernel does not write" in text


def test_more_than_three_persistent_ranges_are_located():
    text = _ragged_error("g in 0 .. G, h in 0 .. 2, m0 in 0 .. M step 16, n0 in 0 .. N step 32 "
                         "persistent()", "for g")
    assert "a persistent loop ranges over one to three tile coordinates" in text
