"""A `via tma` row: DeepGEMM's A-scale layout (sa transposed to [K / 128, MP], MP = M
rounded up to 4) loaded by the producer's TMA beside the A and B tiles, read by the
consumers from shared memory (passes/pipeline.py's smem_read). tests/fp8_gemm_row_scales.cdsl
on the interpreter, the meaning kept by every pass, what ptxas makes of it, and its errors."""
from __future__ import annotations

import os
import re

import pytest
import torch

from commdsl.compiler import compile_file, compile_source
from commdsl.diagnostics import CompileError
from commdsl.runtime.ptxas import assemble
from test_fp8_gemm import random_operands, reference, relative_error
from test_stage_equivalence import _check, _runner

ROW_SCALES = os.path.join(os.path.dirname(__file__), "fp8_gemm_row_scales.cdsl")


def transposed_scales(sa: torch.Tensor) -> torch.Tensor:
    """[M, K / 128] -> [K / 128, MP], MP = M rounded up to 4 (the padding never read)."""
    m, groups = sa.shape
    out = torch.full((groups, -(-m // 4) * 4), float("nan"), device=sa.device)
    out[:, :m] = sa.T
    return out


@pytest.mark.parametrize("m,n,k,config", [
    (70, 160, 1280, {}),                        # ragged M, 10 K steps: the overlap's groups
    (130, 200, 640, dict(BM=64, BN=64)),        # one consumer warpgroup
    (200, 256, 384, dict(CLUSTER=2)),           # CTA pairs: the row is loaded by each
])
def test_every_pass_keeps_the_meaning_and_matches_float64(m, n, k, config):
    a, sa, b, sb = random_operands(m, n, k, seed=m + k)
    sizes = dict(M=m, N=n, K=k, MP=-(-m // 4) * 4)
    outputs = []
    execute = _runner(dict(a=a, sa=transposed_scales(sa), b=b, sb=sb),
                      dict(d=((m, n), torch.bfloat16)), sizes, sms=5)

    def keep(kir):
        outputs.append(execute(kir))
        return outputs[-1]
    _check(ROW_SCALES, "fp8_gemm_row_scales", sizes, keep, tolerance=2 ** -7, **config)
    assert relative_error(outputs[-1][0], reference(a, sa, b, sb)) < 2e-3


@pytest.mark.parametrize("config", [{}, dict(CLUSTER=2), dict(BM=64, BN=64)])
def test_the_row_is_one_unswizzled_box_read_after_the_barrier(config):
    ptx = compile_file(ROW_SCALES, constants=config).ptx
    copies = re.findall(r"cp\.async\.bulk\.tensor\.2d\.shared::cluster\.global\.tile\S*", ptx)
    assert len(copies) >= 3                     # a, b and the row of scales
    assert "ld.shared.b32" in ptx and "ld.global" in ptx     # sb stays a register prefetch
    report = assemble(ptx, arch="sm_90a", entry="fp8_gemm_row_scales").report
    assert report.spill_stores_bytes == 0 and report.spill_loads_bytes == 0, report.summary()


SOURCE = open(ROW_SCALES).read()


def error(text: str, **constants) -> CompileError:
    with pytest.raises(CompileError) as e:
        compile_source(text, "k.cdsl", constants=constants)
    return e.value


def test_a_row_of_bf16_is_not_supported_yet():
    text = SOURCE.replace("sa: f32[K / 128, MP]", "sa: bf16[K / 128, MP]").replace(
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
