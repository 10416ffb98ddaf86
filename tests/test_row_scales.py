"""A `via tma` row: DeepGEMM's A-scale layout (sa transposed to [K / 128, cdiv(M, 4) * 4])
loaded by the producer's TMA beside the A and B tiles, read by the consumers from shared
memory (passes/pipeline.py's smem_read), as examples/fp8_gemm.cdsl does: the meaning kept by
every pass (tests/test_stage_equivalence.py), what ptxas makes of it, and its errors."""
from __future__ import annotations

import re

import pytest

from commdsl.compiler import compile_file, compile_source
from commdsl.diagnostics import CompileError
from commdsl.runtime.ptxas import assemble
from test_fp8_gemm import FP8_GEMM


@pytest.mark.parametrize("config", [{}, dict(CLUSTER=2), dict(BM=64, BN=64)])
def test_the_row_is_one_unswizzled_box_read_after_the_barrier(config):
    ptx = compile_file(FP8_GEMM, constants=config).ptx
    copies = re.findall(r"cp\.async\.bulk\.tensor\.2d\.shared::cluster\.global\.tile\S*", ptx)
    assert len(copies) >= 3                     # a, b and the row of scales
    assert "ld.shared.b32" in ptx and "ld.global" in ptx     # sb stays a register prefetch
    report = assemble(ptx, arch="sm_90a", entry="fp8_gemm").report
    assert report.spill_stores_bytes == 0 and report.spill_loads_bytes == 0, report.summary()


SOURCE = open(FP8_GEMM).read()


def error(text: str, **constants) -> CompileError:
    with pytest.raises(CompileError) as e:
        compile_source(text, "k.cdsl", constants=constants)
    return e.value


def test_a_row_of_bf16_is_not_supported_yet():
    text = SOURCE.replace("quant(1 x 128, scale = sa, layout = mn_major)", "").replace(
        "sa: f32[K / 128, cdiv(M, 4) * 4]", "sa: bf16[K / 128, cdiv(M, 4) * 4]").replace(
        "load sa[k / 128, m0 : +BM] via tma", "cast<f32>(load sa[k / 128, m0 : +BM] via tma)")
    e = error(text)
    assert "a 'via tma' row of bf16 is not supported yet" in e.message
    assert e.hint == "load it without 'via tma'" and e.span is not None


ROW_SUM = """kernel k(x: f32[N, C], y: out f32[C])
{
  let acc = zeros(f32, C)
  for n in 0 .. N pipeline(3) {
    acc = acc + load x[n, 0 : +C] via tma
  }
  store y[0 : +C] = acc
}"""


@pytest.mark.parametrize("c,why", [(2, "a multiple of 16 bytes"), (512, "at most 256")])
def test_a_row_must_be_whole_16_bytes_and_one_box(c, why):
    e = error(ROW_SUM.replace("C]", f"{c}]").replace("+C]", f"+{c}]").replace(", C)", f", {c})"))
    assert why in e.message and e.span is not None


def test_a_row_kept_across_the_pipelined_loop_is_not_supported_yet():
    text = SOURCE.replace(
        "    let acc = zeros(f32, BM, BN)\n",
        "    let acc = zeros(f32, BM, BN)\n    let s0 = load sa[0, m0 : +BM] via tma\n").replace(
        "load sa[k / 128, m0 : +BM] via tma * load sb", "s0 * load sb")
    e = error(text)
    assert "a 'via tma' row kept across the pipelined loop is not supported yet" in e.message
    assert e.span is not None
