"""mma on every operand type of Hopper's wgmma beyond FP8 and 16-bit floats: f32 read as tf32
(k8) and 8-bit integers (k32, exact in an s32 accumulator). The PTX, the interpreter against
exact references, and the located errors; on a GPU: test_gpu_mma_types.py."""
from __future__ import annotations

import re

import pytest
import torch

from commdsl.compiler import compile_source
from commdsl.cpu_numerics import tf32
from commdsl.diagnostics import CompileError
from commdsl.interpreter import run
from commdsl.runtime.ptxas import assemble

GEMM = """
kernel gemm(a: {A}[M, K], b: {B}[N, K], d: out {ACC}[M, N])
  tune BM = 128 in [64, 128]
  tune BN = 128 in [64, 128]
{{
  for m0 in 0 .. M step BM, n0 in 0 .. N step BN persistent(raster = 8) {{
    let acc = zeros({ACC}, BM, BN)
    for k in 0 .. K step {KS} pipeline(4) {{
      let ta = load a[m0 : +BM, k : +{KS}] via tma
      let tb = load b[n0 : +BN, k : +{KS}] via tma
      acc = mma(ta, tb.T, acc)
    }}
    store d[m0 : +BM, n0 : +BN] = acc
  }}
}}
"""
TF32 = GEMM.format(A="f32", B="f32", ACC="f32", KS=32)
I8 = GEMM.format(A="i8", B="i8", ACC="i32", KS=128)
MIXED_INT = GEMM.format(A="u8", B="i8", ACC="i32", KS=128)


@pytest.mark.parametrize("source,instr,immediates", [
    (TF32, r"m64n128k8\.f32\.tf32\.tf32", ", 1, 1, 1;"),
    (I8, r"m64n128k32\.s32\.s8\.s8", ", 1;"),             # integer types take no scales
    (GEMM.format(A="u8", B="u8", ACC="i32", KS=128), r"m64n128k32\.s32\.u8\.u8", ", 1;"),
])
def test_ptx_has_the_types_wgmma_and_assembles(source, instr, immediates):
    ptx = compile_source(source, "gemm.cdsl").ptx
    assert re.search(rf"wgmma\.mma_async\.sync\.aligned\.{instr} \{{[^}}]+\}}, %rd\d+, "
                     rf"%rd\d+{re.escape(immediates)}", ptx)
    report = assemble(ptx).report
    assert report.spill_stores_bytes == 0 and report.spill_loads_bytes == 0


def _interpret(source, a, b, dtype):
    m, n, k = a.shape[0], b.shape[0], a.shape[1]
    d = torch.full((m, n), -7, dtype=dtype) if dtype == torch.int32 else \
        torch.full((m, n), float("nan"), dtype=dtype)
    kir = compile_source(source, "gemm.cdsl", emit="ir", constants=dict(BM=64, BN=64)).ir[0]
    run(kir, dict(a=a, b=b, d=d), dict(M=m, N=n, K=k), sms=3)
    return d


def test_tf32_reads_the_top_19_bits_and_sums_in_f32():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(70, 100, generator=g), torch.randn(130, 100, generator=g)
    d = _interpret(TF32, a, b, torch.float32)
    ref = tf32(a).double() @ tf32(b).double().T
    assert ((d.double() - ref).abs() <= 2 ** -22 * (a.abs().double() @ b.abs().double().T)).all()
    # what tf32 drops is visible: the full f32 product differs
    assert not torch.equal(d, (a.double() @ b.double().T).float())


def test_int8_is_exact_including_ragged_k():
    g = torch.Generator().manual_seed(2)
    a = torch.randint(-128, 128, (70, 300), generator=g, dtype=torch.int8)
    b = torch.randint(-128, 128, (130, 300), generator=g, dtype=torch.int8)
    d = _interpret(I8, a, b, torch.int32)
    assert torch.equal(d, (a.long() @ b.long().T).int())


def test_u8_alone_is_unsigned():
    g = torch.Generator().manual_seed(3)
    a = torch.randint(0, 256, (64, 128), generator=g, dtype=torch.uint8)
    b = torch.randint(0, 256, (64, 128), generator=g, dtype=torch.uint8)
    d = _interpret(GEMM.format(A="u8", B="u8", ACC="i32", KS=128), a, b, torch.int32)
    assert torch.equal(d, (a.long() @ b.long().T).int())


def error(source: str) -> str:
    with pytest.raises(CompileError) as e:
        compile_source(source, "gemm.cdsl")
    return str(e.value)


def test_u8_by_i8_is_not_supported_yet():
    msg = error(MIXED_INT)
    assert re.search(r"gemm\.cdsl:\d+:\d+: error: wgmma on u8 by i8 needs PTX ISA 8\.4", msg)
    assert "help: store both operands as u8 or both as i8" in msg


def test_int8_by_a_float_type_is_located():
    msg = error(GEMM.format(A="i8", B="e4m3", ACC="i32", KS=128))
    assert re.search(r"gemm\.cdsl:\d+:\d+: error: wgmma multiplies FP8 by FP8 \(e4m3 and e5m2 "
                     r"mix\), 8-bit integers by 8-bit integers", msg)
    assert "not i8 by e4m3" in msg and "help: cast one operand" in msg


def test_an_integer_product_into_an_f32_accumulator_is_located():
    msg = error(GEMM.format(A="i8", B="i8", ACC="f32", KS=128))
    assert "the accumulator must be an i32 [128, 128] tile" in msg
    assert "help: start it with zeros(i32, 128, 128)" in msg


def test_promoting_an_integer_product_is_located():
    msg = error(I8.replace("acc = mma(ta, tb.T, acc)",
                           "acc += mma(ta, tb.T, promote_every = 64)"))
    assert "an integer product is exact in its i32 accumulator: it has nothing to promote" in msg


def test_a_tf32_k_step_that_is_not_whole_swizzled_rows():
    msg = error(TF32.replace("k : +32]", "k : +48]").replace("step 32", "step 48"))
    assert "a f32 mma takes K in whole 128-byte swizzled rows, multiples of 32, not 48" in msg


def test_mma_on_i32_tiles_is_located():
    msg = error(GEMM.format(A="i32", B="i32", ACC="i32", KS=32))
    assert re.search(r"gemm\.cdsl:\d+:\d+: error: mma takes FP8, bf16, f16, f32 \(as tf32\) or "
                     r"8-bit integer tiles, not i32", msg)
