"""examples/grouped_fp8_gemm.cdsl (DeepGEMM's m-grouped contiguous layout) on the CPU: the
3-D TMA load of an expert's weights, the interpreter against a float64 product with padding
rows left as they were, and the located errors of TMA tiles it cannot take. On a GPU:
test_gpu_grouped_fp8_gemm.py."""
from __future__ import annotations

import os
import re

import pytest
import torch

from commdsl.compiler import compile_file, compile_source
from commdsl.diagnostics import CompileError
from commdsl.interpreter import run
from commdsl.passes import PASS_ORDER, get_pass
from commdsl.target import get_target

from grouped_layout import grouped_operands, grouped_reference
from test_fp8_gemm import mn_major

GROUPED = os.path.join(os.path.dirname(__file__), "..", "examples", "grouped_fp8_gemm.cdsl")
SOURCE = open(GROUPED).read()


def test_ptx_loads_the_experts_weights_with_a_rank_3_tma_box():
    ptx = compile_file(GROUPED).ptx
    assert re.search(r"cp\.async\.bulk\.tensor\.3d\.shared::cluster\.global\.tile\.mbarrier::"
                     r"complete_tx::bytes \[%r\d+\], \[%rd\d+, \{%r\d+, %r\d+, %r\d+\}\]", ptx)
    assert "cp.async.bulk.tensor.2d" in ptx                  # a's tiles
    assert "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3" in ptx


@pytest.mark.parametrize("lowered", [False, True], ids=["source", "lowered"])
@pytest.mark.parametrize("rows,config", [([70, 0, 130], dict(BM=64, BN=64)),
                                         ([128, 5], dict()),
                                         # CTA pairs share A's tile (multicast); the pair
                                         # past N's last column stores nothing
                                         ([200, 60], dict(BM=64, BN=64, CLUSTER=2))])
def test_interpreter_matches_float64_and_leaves_padding_rows(rows, config, lowered):
    n, k = 192, 256
    a, sa, b, sb, m_idx = grouped_operands(rows, n, k, seed=sum(rows))
    kir = compile_source(SOURCE, GROUPED, emit="ir", constants=config).ir[0]
    if lowered:
        for name in PASS_ORDER:
            kir = get_pass(name)(kir, get_target("sm_90a"))
    d = torch.full((a.shape[0], n), float("nan"), dtype=torch.bfloat16)
    run(kir, dict(a=a, sa=mn_major(sa), b=b, sb=sb, m_idx=m_idx, d=d),
        dict(M=a.shape[0], N=n, K=k, G=len(rows)), sms=3)
    ref = grouped_reference(a, sa, b, sb, m_idx)
    valid = m_idx >= 0
    assert d[~valid].isnan().all()                        # padding rows untouched
    err = (d[valid].double() - ref[valid]).norm() / ref[valid].norm()
    assert err < 2e-3


def error(source: str) -> str:
    with pytest.raises(CompileError) as e:
        compile_source(source, "grouped_fp8_gemm.cdsl")
    return str(e.value)


def test_a_tma_tile_across_a_leading_dimension_is_located():
    msg = error(SOURCE.replace("load b[g, n0 : +BN, k : +128] via tma",
                               "load b[g : +1, n0 : +BN, k : +128] via tma"))
    assert re.search(r"grouped_fp8_gemm\.cdsl:\d+:\d+: error: ", msg)


def test_a_tma_tile_without_the_last_dimension_is_located():
    """TMA boxes run along the contiguous last dimension (the swizzled rows)."""
    msg = error(SOURCE.replace("b: e4m3[G, N, K]", "b: e4m3[N, K, G]").replace(
        "load b[g, n0 : +BN, k : +128] via tma", "load b[n0 : +BN, k : +128, g] via tma"))
    assert "a 'via tma' load takes a 2-D tile of a tensor of rank 2 to 5: a range of its last " \
           "dimension, a range of one other, and one index for each of the rest" in msg
    assert "help: write 'load x[r0 : +R, c0 : +C] via tma' or 'load q[r0 : +R, h, c0 : +C] " \
           "via tma'" in msg


def test_the_row_masked_store_goes_by_tma_when_a_warpgroup_stores_every_row():
    """The padding rows' mask is by rows: each warpgroup votes (bar.red.and) and its leader
    copies the staged tile by TMA when all its rows are stored; the predicated stores keep
    the rest. A column mask would not (tests/passes/epilogue)."""
    ptx = compile_file(GROUPED).ptx
    assert len(re.findall(r"bar\.red\.and\.pred", ptx)) == 1
    assert len(re.findall(r"cp\.async\.bulk\.tensor\.2d\.global\.shared::cta", ptx)) == 2
    # the predicated path: a row's mask covers a thread's pair of columns, one 4-byte store
    assert len(re.findall(r"@%p\d+ st\.global\.b32", ptx)) == 32
    assert not re.search(r"st\.global\.b16", ptx)


def test_the_store_mask_takes_the_fragment_layout_and_no_cta_barrier_is_left():
    """The mask of the fragment's store is laid out like it (mma pass), so no tile moves
    through shared memory inside the consumers, where a CTA barrier would wait for the
    producer forever."""
    ptx = compile_file(GROUPED).ptx
    assert ptx.count("bar.sync 0;") == 1                 # after the mbarrier inits only
    assert not re.search(r"^\s*\.shared \.align", ptx, re.M)   # no static shared array


def test_moving_a_tile_between_threads_in_the_consumers_is_located():
    source = SOURCE.replace(
        "    let rows = load m_idx[m0 : +BM] >= 0\n",
        "    let rows = load m_idx[m0 : +BM] >= max(load m_idx[0 : +BM], axis = 0)\n")
    with pytest.raises(CompileError, match=r"grouped_fp8_gemm\.cdsl:\d+:\d+: error: moving a "
                       r"tile between threads \(through shared memory\) inside a "
                       r"warp-specialized GEMM's tile loop is not supported yet"):
        compile_source(source, "grouped_fp8_gemm.cdsl")
