"""examples/bf16_gemm.cdsl and bf16_matmul.cdsl (B MN-major): what the compiler emits for a
bf16 (and f16) mma, the interpreter against a float64 product, and the located errors for
what the tensor-core lowering cannot take. The numerics on a GPU are in
test_gpu_bf16_gemm.py."""
from __future__ import annotations

import os
import re

import pytest
import torch

from commdsl.compiler import compile_file, compile_source
from commdsl.diagnostics import CompileError
from commdsl.interpreter import run
from commdsl.runtime.ptxas import assemble

BF16_GEMM = os.path.join(os.path.dirname(__file__), "..", "examples", "bf16_gemm.cdsl")
SOURCE = open(BF16_GEMM).read()


@pytest.mark.parametrize("config,shape", [({}, "m64n128k16"), (dict(BN=256, STAGES=3), "m64n256k16"),
                                          (dict(BM=64, BN=64), "m64n64k16")])
def test_ptx_is_a_bf16_wgmma_pipeline_and_assembles(config, shape):
    ptx = compile_file(BF16_GEMM, constants=config).ptx
    # 16-bit wgmma takes both operands' majors: 0, 0 is K-major for both.
    assert re.search(rf"wgmma\.mma_async\.sync\.aligned\.{shape}\.f32\.bf16\.bf16 \{{[^}}]+\}}, "
                     r"%rd\d+, %rd\d+, 1, 1, 1, 0, 0;", ptx)
    assert "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes" in ptx
    report = assemble(ptx).report
    assert report.spill_stores_bytes == 0 and report.spill_loads_bytes == 0


def test_f16_operands_give_an_f16_wgmma():
    ptx = compile_source(SOURCE.replace("bf16[M, K]", "f16[M, K]").replace("bf16[N, K]",
                                                                              "f16[N, K]"),
                         "f16_gemm.cdsl").ptx
    assert "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16" in ptx


def reference(a, b):
    return a.double() @ b.double().T


@pytest.mark.parametrize("m,n,k", [(70, 160, 200), (128, 64, 64)])
def test_interpreter_matches_float64_within_bf16_rounding(m, n, k):
    g = torch.Generator().manual_seed(m + n + k)
    a = torch.randn(m, k, generator=g).to(torch.bfloat16)
    b = torch.randn(n, k, generator=g).to(torch.bfloat16)
    a[0, 0] = 300.0                                       # an outlier
    d = torch.full((m, n), float("nan"), dtype=torch.bfloat16)
    kir = compile_file(BF16_GEMM, emit="ir", constants=dict(BN=64, BM=64)).ir[0]
    run(kir, dict(a=a, b=b, d=d), dict(M=m, N=n, K=k), sms=3)
    ref = reference(a, b)
    slack = 2 ** -8 * ref.abs() + 2 ** -20 * (a.double().abs() @ b.double().abs().T)
    assert not d.isnan().any()
    assert ((d.double() - ref).abs() <= slack).all()


def error(source: str, **constants) -> str:
    with pytest.raises(CompileError) as e:
        compile_source(source, "bf16_gemm.cdsl", constants=constants)
    return str(e.value)


def test_mixed_operand_types_are_located():
    msg = error(SOURCE.replace("b: bf16[N, K]", "b: e4m3[N, K]"))
    assert re.search(r"bf16_gemm\.cdsl:\d+:\d+: error: wgmma multiplies FP8 by FP8 \(e4m3 and "
                     r"e5m2 mix\), 8-bit integers by 8-bit integers or a 16- or 32-bit float "
                     r"type by itself, not bf16 by e4m3", msg)
    assert "help: cast one operand" in msg


def test_f16_by_bf16_is_an_error():
    msg = error(SOURCE.replace("b: bf16[N, K]", "b: f16[N, K]"))
    assert "not bf16 by f16" in msg


def test_a_k_step_that_is_not_whole_swizzled_rows():
    msg = error(SOURCE.replace("k : +64] via tma", "k : +96] via tma").replace("step 64", "step 96"))
    assert "a bf16 mma takes K in whole 128-byte swizzled rows, multiples of 64, not 96" in msg
    assert "help: make the product's K a multiple of 64, e.g. step the K loop by 64" in msg


def test_a_k_step_of_two_rows_steps_through_two_slabs():
    """K = 128 bf16: each operand's stage is two [rows x 128 B] slabs; the fifth k16 wgmma
    starts the second slab (A: 128 rows x 128 B = 1024 in 16-byte units; B likewise)."""
    src = SOURCE.replace("k : +64] via tma", "k : +128] via tma").replace("step 64", "step 128")
    ptx = compile_source(src, "bf16_gemm.cdsl", constants=dict(STAGES=3)).ptx
    assert len(re.findall(r"wgmma\.mma_async\.sync\.aligned\.m64n128k16", ptx)) == 8
    assert len(re.findall(r"cp\.async\.bulk\.tensor\.2d\.shared::cluster", ptx)) == 4
    m, n, k = 70, 136, 300
    g = torch.Generator().manual_seed(5)
    a = torch.randn(m, k, generator=g).to(torch.bfloat16)
    b = torch.randn(n, k, generator=g).to(torch.bfloat16)
    kir = compile_source(src, "bf16_gemm.cdsl", emit="ir", constants=dict(BM=64, STAGES=3)).ir[0]
    from commdsl.passes import PASS_ORDER, get_pass
    from commdsl.target import get_target
    for name in PASS_ORDER:
        kir = get_pass(name)(kir, get_target("sm_90a"))
    d = torch.full((m, n), float("nan"), dtype=torch.bfloat16)
    run(kir, dict(a=a, b=b, d=d), dict(M=m, N=n, K=k), sms=3)
    ref = a.double() @ b.double().T
    slack = 2 ** -8 * ref.abs() + 2 ** -20 * (a.double().abs() @ b.double().abs().T)
    assert ((d.double() - ref).abs() <= slack).all()


MATMUL = os.path.join(os.path.dirname(__file__), "..", "examples", "bf16_matmul.cdsl")


@pytest.mark.parametrize("config,slabs", [({}, 2), (dict(BN=256, STAGES=3), 4),
                                          (dict(BM=64, BN=64), 1)])
def test_an_mn_major_b_is_read_in_slabs_by_the_transposed_wgmma(config, slabs):
    ptx = compile_file(MATMUL, constants=config).ptx
    bn = config.get("BN", 128)
    # B transposed (the last immediate 1), its descriptor's LBO one slab of 64 K rows x 128
    # bytes (8192 B, encoded 512 at bit 16), SBO 1024 B; each k16 step moves 16 K rows.
    assert re.search(rf"wgmma\.mma_async\.sync\.aligned\.m64n{bn}k16\.f32\.bf16\.bf16 "
                     r"\{[^}]+\}, %rd\d+, %rd\d+, 1, 1, 1, 0, 1;", ptx)
    assert str((1 << 62) | (64 << 32) | (512 << 16)) in ptx
    copies = re.findall(r"cp\.async\.bulk\.tensor\.2d\.shared::cluster\.global\.tile\."
                        r"mbarrier::complete_tx::bytes \[%r\d+\], \[(%rd\d+),", ptx)
    assert len(copies) == 1 + slabs and len(set(copies)) == 2      # A's box, B's slabs
    report = assemble(ptx).report
    assert report.spill_stores_bytes == 0 and report.spill_loads_bytes == 0


@pytest.mark.parametrize("m,n,k,config", [(70, 136, 200, {}), (128, 256, 64, dict(BN=256))])
def test_mn_major_interpreter_matches_float64_within_bf16_rounding(m, n, k, config):
    g = torch.Generator().manual_seed(m + n + k)
    a = torch.randn(m, k, generator=g).to(torch.bfloat16)
    b = torch.randn(k, n, generator=g).to(torch.bfloat16)
    b[3, 5] = -300.0                                      # an outlier
    d = torch.full((m, n), float("nan"), dtype=torch.bfloat16)
    kir = compile_file(MATMUL, emit="ir", constants=dict(BM=64, STAGES=3, **config)).ir[0]
    run(kir, dict(a=a, b=b, d=d), dict(M=m, N=n, K=k), sms=3)
    ref = a.double() @ b.double()
    slack = 2 ** -8 * ref.abs() + 2 ** -20 * (a.double().abs() @ b.double().abs())
    assert not d.isnan().any()
    assert ((d.double() - ref).abs() <= slack).all()


def test_an_mn_major_fp8_b_is_located():
    src = SOURCE.replace("bf16[M, K]", "e4m3[M, K]").replace("b: bf16[N, K]", "b: e4m3[K, N]") \
        .replace("load b[n0 : +BN, k : +64]", "load b[k : +128, n0 : +BN]").replace("tb.T", "tb") \
        .replace("k : +64] via tma", "k : +128] via tma").replace("step 64", "step 128")
    msg = error(src)
    assert re.search(r"bf16_gemm\.cdsl:\d+:\d+: error: wgmma reads e4m3 operands K-major only",
                     msg)
    assert "help: store b as [N, K] and write mma(a, b.T)" in msg


def test_an_mn_major_b_narrower_than_a_slab_is_located():
    msg = error(open(MATMUL).read().replace("in [64, 128, 256]", "in [32, 64, 128, 256]"),
                BN=32)
    assert "an MN-major B tile ([K, N], no .T) is read in 64-column swizzled slabs; N = 32" in msg
    assert "help: use BN = 64, 128, 192 or 256" in msg


def test_a_256_row_tile_runs_two_waves_on_each_of_two_warpgroups():
    """BM = 256: each consumer warpgroup issues a K step's wgmmas for both its m64 blocks
    and stores a TMA box per block and 64 columns; ptxas keeps it all in registers."""
    ptx = {bm: compile_source(SOURCE, constants=dict(BM=bm, STAGES=3), path=BF16_GEMM).ptx
           for bm in (128, 256)}
    wgmmas = {bm: p.count("wgmma.mma_async") for bm, p in ptx.items()}
    stores = {bm: p.count("cp.async.bulk.tensor.2d.global.shared") for bm, p in ptx.items()}
    assert wgmmas == {128: 4, 256: 8} and stores == {128: 2, 256: 4}
    report = assemble(ptx[256], arch="sm_90a", entry="bf16_gemm").report
    assert report.spill_stores_bytes == 0 and report.spill_loads_bytes == 0, report.summary()


def test_an_accumulator_too_wide_for_what_ptxas_may_allocate():
    """Three consumer warpgroups and a producer: 128 registers a thread at compile time,
    whatever setmaxnreg gives at run time (ptxas stops with C7602 past it)."""
    msg = error(SOURCE, BN=256, BM=192, STAGES=3)
    assert "an accumulator of BN = 256 need about 152 registers per thread; 3 consumer " \
           "warpgroups get 128" in msg


def test_too_many_stages_for_shared_memory():
    msg = error(SOURCE, BN=256, STAGES=5)
    assert "5 stages of 49152 bytes need" in msg and "help: use fewer stages" in msg
