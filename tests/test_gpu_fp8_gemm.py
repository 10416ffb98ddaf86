"""On a GPU: fp8_gemm against a float64 reference of the dequantized product on the issue's
shapes and ragged ones, the SASS the tensor cores run, and launch errors."""
import functools
import os
import shutil
import subprocess

import pytest
import torch

import commdsl
from test_fp8_gemm import FP8_GEMM, mn_major, quantize_a, quantize_b, reference, relative_error

pytestmark = pytest.mark.gpu

ISSUE_SHAPES = [(m, n, k) for m in (128, 4096)
                for n, k in ((2112, 7168), (24576, 1536), (7168, 16384), (4096, 7168),
                             (7168, 2048))] + [(8192, 8192, 8192)]
# K steps 56, 3, 2, 8, 1, 5, 9, 17: groups of 8 with 0, 1 or more steps before them. N a
# multiple of 16 (2112, 256, 1040, 2048: the variant specialized for it) stores through TMA,
# clipped at ragged M and N edges (passes/epilogue.py); the other shapes store directly.
RAGGED_SHAPES = [(1, 2112, 7168), (200, 300, 384), (4097, 1000, 256), (130, 4104, 1024),
                 (64, 256, 128), (300, 520, 640), (333, 1040, 1152), (4100, 2048, 2176)]
BY_MODEL = "by model"        # config="model": the schedule the cost model picks per shape
# The others: these constants on top of every declared default (config="declared").
CONFIGS = [BY_MODEL, dict(), dict(BM=64, BN=16, STAGES=8), dict(BM=128, BN=32, STAGES=4, GROUP=1),
           dict(BM=192, BN=128, STAGES=5), dict(PROMOTE=64), dict(BM=64, BN=32, PROMOTE=32),
           dict(CLUSTER=2), dict(BM=192, BN=128, STAGES=4, CLUSTER=2),
           dict(BM=64, BN=16, STAGES=8, CLUSTER=2), dict(BM=256, BN=128, STAGES=3),
           dict(BM=256, BN=64, STAGES=4, CLUSTER=2)]
_kernels = {}


def kernel_for(config):
    key = config if config == BY_MODEL else tuple(sorted(config.items()))
    if key not in _kernels:
        _kernels[key] = (commdsl.load(FP8_GEMM, config="model") if config == BY_MODEL else
                         commdsl.load(FP8_GEMM, config="declared", **config))
    return _kernels[key]


def operands(m, n, k):
    a, sa = quantize_a(torch.randn(m, k, device="cuda"))
    b, sb = quantize_b(torch.randn(n, k, device="cuda"))
    return a, sa, b, sb


@functools.lru_cache(maxsize=1)
def case(m, n, k):
    """Fresh operands and their float64 product, shared by the configs of one shape (the
    float64 GEMM costs more than all the configs' runs; parametrize orders tests by shape)."""
    a, sa, b, sb = operands(m, n, k)
    return (a, mn_major(sa), b, sb), reference(a, sa, b, sb)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c if c == BY_MODEL else (
    ",".join(f"{k}={v}" for k, v in c.items()) or "default"))
@pytest.mark.parametrize("m,n,k", ISSUE_SHAPES + RAGGED_SHAPES)
def test_matches_float64_reference(m, n, k, config):
    args, ref = case(m, n, k)
    d = torch.full((m, n), float("nan"), dtype=torch.bfloat16, device="cuda")
    kernel_for(config)(*args, d=d)
    assert not d.isnan().any()
    assert relative_error(d, ref) <= 2e-3


def test_allocates_the_output_and_reuses_tensor_maps():
    kernel = kernel_for({})
    a, sa, b, sb = operands(256, 512, 1024)
    d1 = kernel(a, mn_major(sa), b, sb)
    d2 = kernel(a, mn_major(sa), b, sb)
    assert d1.shape == (256, 512) and d1.dtype == torch.bfloat16
    assert torch.equal(d1, d2)
    a2, sa2, b2, sb2 = operands(256, 512, 1024)       # new addresses: new tensor maps
    assert relative_error(kernel(a2, mn_major(sa2), b2, sb2),
                          reference(a2, sa2, b2, sb2)) <= 2e-3


def test_sass_runs_on_fp8_tensor_cores(tmp_path):
    cuobjdump = shutil.which("cuobjdump") or "/usr/local/cuda/bin/cuobjdump"
    if not os.path.exists(cuobjdump):
        pytest.skip("cuobjdump not found")
    from commdsl.runtime.ptxas import assemble
    ptx = kernel_for({}).ptx
    cubin = tmp_path / "fp8_gemm.cubin"
    cubin.write_bytes(assemble(ptx, arch="sm_90a", entry="fp8_gemm").cubin)
    sass = subprocess.run([cuobjdump, "-sass", str(cubin)], capture_output=True, text=True,
                          check=True).stdout
    assert "QGMMA" in sass and "UTMALDG" in sass and "SYNCS" in sass
    assert "UTMASTG" in sass and "STG" not in sass.replace("UTMASTG", "")   # TMA epilogue


def test_launch_errors_name_the_argument():
    kernel = kernel_for({})
    a, sa, b, sb = operands(256, 384, 512)
    sa = mn_major(sa)
    with pytest.raises(commdsl.LaunchError, match=r"argument 'a'.*multiple of 128"):
        kernel(a[:, :500].contiguous(), sa, b[:, :500].contiguous(), sb)
    with pytest.raises(commdsl.LaunchError, match=r"argument 'sb'.*dimension 0"):
        kernel(a, sa, b, sb.T.contiguous())
    with pytest.raises(commdsl.LaunchError, match=r"argument 'sa'.*contiguous"):
        kernel(a, sa.T.contiguous().T, b, sb)
    with pytest.raises(commdsl.LaunchError, match=r"argument 'b'.*contiguous"):
        kernel(a, sa, b.T.contiguous().T, sb)
    misaligned = torch.empty(a.numel() + 16, dtype=torch.uint8, device="cuda")[8:8 + a.numel()]
    with pytest.raises(commdsl.LaunchError, match=r"argument 'a'.*16-byte aligned"):
        kernel(misaligned.view(torch.float8_e4m3fn).view(a.shape), sa, b, sb)
