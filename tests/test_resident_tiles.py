"""A `via tma` tile loaded in a loop around the pipelined one stays in shared memory while
that loop runs (passes/pipeline.py's Resident): examples/attention.cdsl reads q from there,
on the interpreter before and after every pass against float64, within ptxas's registers at
D = 128 with 128 keys a step; and the located errors around it."""
from __future__ import annotations

import os
import re

import pytest
import torch

from commdsl.compiler import compile_file, compile_source
from commdsl.diagnostics import CompileError
from commdsl.interpreter import run
from commdsl.passes import PASS_ORDER, get_pass
from commdsl.runtime.ptxas import assemble
from commdsl.target import get_target
from lowering import kernel_ir
from test_attention import operands, reference

RESIDENT = os.path.join(os.path.dirname(__file__), "..", "examples", "attention.cdsl")


@pytest.mark.parametrize("lowered", [False, True], ids=["source", "lowered"])
@pytest.mark.parametrize("bh,length,d,kb", [(2, 200, 64, 64), (1, 100, 128, 128),
                                             (3, 130, 64, 128)])
def test_interpreter_matches_float64(bh, length, d, kb, lowered):
    q, k, v = operands(bh, length, d, seed=length + kb)
    kir = kernel_ir(RESIDENT, lowered, D=d, KB=kb)
    o = torch.full((bh, length, d), float("nan"), dtype=torch.bfloat16)
    lse = torch.full((bh, length), float("nan"))
    run(kir, dict(q=q, k=k, v=v, o=o, lse=lse), dict(BH=bh, L=length), sms=2)
    ref_o, ref_lse = reference(q, k, v, causal=0)
    sdpa = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=0.125)
    assert (o.double() - ref_o).abs().max() <= 2 * (sdpa.double() - ref_o).abs().max()
    assert ((lse.double() - ref_lse).abs() <= 1e-4 * ref_lse.abs()).all()


def test_q_from_shared_memory_leaves_the_registers_for_128_keys_at_head_dim_128():
    ptx = compile_file(RESIDENT, constants=dict(D=128, KB=128)).ptx
    # q k^T from a shared-memory descriptor (no register A operand), p v from registers
    assert re.search(r"wgmma\.mma_async\.sync\.aligned\.m64n128k16\.f32\.bf16\.bf16 "
                     r"\{[^}]+\}, %rd\d+, %rd\d+", ptx)
    report = assemble(ptx).report
    assert report.spill_stores_bytes == 0 and report.spill_loads_bytes == 0


GEMM = """
kernel k(a: bf16[M, 64], b: bf16[N, K], d: out f32[M, N])
{
  for m0 in 0 .. M step 64, n0 in 0 .. N step 64 persistent(raster = 1) {
    let ta = load a[m0 : +64, 0 : +64] via tma
    let acc = zeros(f32, 64, 64)
    for k in 0 .. K step 64 pipeline(2) {
      let tb = load b[n0 : +64, k : +64] via tma
      acc = mma(ta, tb.T, acc)
    }
    store d[m0 : +64, n0 : +64] = acc
  }
}
"""


def test_a_gemm_with_a_resident_a_matches_torch():
    a = torch.randn(130, 64).to(torch.bfloat16)
    b = torch.randn(100, 192).to(torch.bfloat16)
    a_full = torch.cat([a] * 3, dim=1)                 # each K step reads the same A
    kir = compile_source(GEMM, "k.cdsl", emit="ir").ir[0]
    for name in PASS_ORDER:
        kir = get_pass(name)(kir, get_target("sm_90a"))
    d = torch.full((130, 100), float("nan"))
    run(kir, dict(a=a, b=b, d=d), dict(M=130, N=100, K=192), sms=2)
    assert torch.allclose(d.double(), a_full.double() @ b.double().T, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("edit,message", [
    (("    let ta = load a[m0 : +64, 0 : +64] via tma\n", "",
      "{\n  for m0", "{\n  let ta = load a[0 : +64, 0 : +64] via tma\n  for m0"),
     "'via tma' loads belong directly in the pipelined loop, or in a loop around it"),
    (("    store d[m0 : +64, n0 : +64] = acc\n",
      "    store d[m0 : +64, n0 : +64] = acc + mma(ta, ta.T)\n"),
     "a tile kept in shared memory across the pipelined loop is read by that loop's products "
     "only"),
    (("persistent(raster = 1)", "persistent(raster = 1, cluster = 2)"),
     "a tile kept in shared memory across the pipelined loop is not supported yet in a "
     "cluster"),
])
def test_mistakes_are_located(edit, message):
    source = GEMM
    for old, new in zip(edit[::2], edit[1::2]):
        source = source.replace(old, new)
    with pytest.raises(CompileError) as e:
        compile_source(source, "k.cdsl")
    text = str(e.value)
    assert message in text and re.search(r"k\.cdsl:\d+:\d+: error: ", text), text
    assert "help: " in text


def test_nine_swizzled_rows_of_k_in_one_product():
    """MLA's q k^T is 576 wide: nine 128-byte rows of bf16, one TMA box each, 36 k16 steps
    (q resident, k through the ring)."""
    source = GEMM.replace("a: bf16[M, 64]", "a: bf16[M, 576]").replace(
        "load a[m0 : +64, 0 : +64]", "load a[m0 : +64, 0 : +576]").replace(
        "k : +64]", "k : +576]").replace("step 64 pipeline", "step 576 pipeline")
    out = compile_source(source, "k.cdsl")
    assert len(re.findall(r"wgmma\.mma_async\.sync\.aligned\.m64n64k16", out.ptx)) == 36
    report = assemble(out.ptx).report
    assert report.spill_stores_bytes == 0 and report.spill_loads_bytes == 0
    kir = compile_source(source, "k.cdsl", emit="ir").ir[0]
    for name in PASS_ORDER:
        kir = get_pass(name)(kir, get_target("sm_90a"))
    a = torch.randn(70, 576).to(torch.bfloat16)
    b = torch.randn(80, 1152).to(torch.bfloat16)
    d = torch.full((70, 80), float("nan"))
    run(kir, dict(a=a, b=b, d=d), dict(M=70, N=80, K=1152), sms=2)
    ref = torch.cat([a, a], dim=1).double() @ b.double().T
    assert torch.allclose(d.double(), ref, rtol=1e-5, atol=1e-4)
