"""FP8 block-scaled GEMM (1x128 A groups, 128x128 B blocks, bf16 out): commdsl vs cuBLAS
(torch._scaled_mm with the same blockwise scales), in one run.

    python bench/fp8_gemm.py [--iters 50] [--shapes M,N,K ...]

For each shape: fresh random data quantized DeepSeek-style; each commdsl config in a small
per-shape candidate list is checked against a float64 reference of the dequantized product
(output NaN-poisoned first) and timed; the fastest correct one is reported. Times are the
median of CUDA-event-timed runs after a warm-up, on the same tensors for both libraries.
"""
from __future__ import annotations

import argparse
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
import common  # noqa: E402
from test_fp8_gemm import FP8_GEMM, quantize_a, quantize_b, reference, relative_error  # noqa: E402


SHAPES = [(m, n, k) for m in (128, 4096)
          for n, k in ((2112, 7168), (24576, 1536), (7168, 16384), (4096, 7168), (7168, 2048))]
SHAPES.append((8192, 8192, 8192))
TOLERANCE = 2e-3


def candidates(m: int, n: int, k: int) -> list[dict]:
    """Configs worth timing: small M wants many small tiles to keep all SMs streaming B;
    large M wants 128- or 192-row tiles, deep pipelines, and CTA pairs that load A's tile once
    for both (CLUSTER = 2: TMA multicast halves A's traffic from L2, which bounds big tiles)."""
    if m <= 256:
        return [dict(BM=64, BN=16, STAGES=8), dict(BM=64, BN=32, STAGES=8, PROMOTE=64),
                dict(BM=128, BN=32, STAGES=6, PROMOTE=64), dict(BM=64, BN=64, STAGES=6),
                dict(BM=64, BN=64, STAGES=6, PROMOTE=64), dict(BM=64, BN=128, STAGES=6),
                dict(BM=64, BN=32, STAGES=8, PROMOTE=64, CLUSTER=2)]
    return [dict(BM=128, BN=128, STAGES=5, GROUP=8), dict(BM=128, BN=128, STAGES=5, GROUP=8,
                                                          PROMOTE=64),
            dict(BM=192, BN=128, STAGES=4, GROUP=16),
            dict(BM=128, BN=128, STAGES=5, GROUP=8, CLUSTER=2),
            dict(BM=128, BN=128, STAGES=6, GROUP=16, CLUSTER=2),
            dict(BM=192, BN=128, STAGES=4, GROUP=16, CLUSTER=2),
            dict(BM=192, BN=128, STAGES=4, GROUP=8, CLUSTER=2)]


def cublas(a, sa, b, sb):
    """torch._scaled_mm's DeepSeek recipe: A row-major with 1x128 scales given M-major
    (stride (1, M)), B as a column-major [K, N] with its [N/128, K/128] scales transposed."""
    sa_mn = sa.t().contiguous().t()
    return lambda: torch._scaled_mm(a, b.t(), scale_a=sa_mn, scale_b=sb.t(),
                                    out_dtype=torch.bfloat16)


def main():
    args = common.gemm_args(argparse.ArgumentParser(), SHAPES)
    shapes = args.shapes
    kernels = common.ConfigKernels(FP8_GEMM)
    rows, results = [], {"shapes": []}
    for m, n, k in shapes:
        torch.manual_seed(m * 31 + n * 7 + k)
        a, sa = quantize_a(torch.randn(m, k, device="cuda"))
        b, sb = quantize_b(torch.randn(n, k, device="cuda"))
        ref = reference(a, sa, b, sb)
        d = torch.empty(m, n, dtype=torch.bfloat16, device="cuda")
        flops = 2 * m * n * k
        entry = {"shape": [m, n, k], "commdsl": {}}
        best = None
        for config in candidates(m, n, k):
            kernel = kernels(config)
            d.fill_(float("nan"))
            kernel(a, sa, b, sb, d=d)
            err = relative_error(d, ref)
            ms = common.time_ms(lambda: kernel(a, sa, b, sb, d=d), iters=args.iters)
            name = common.config_name(config)
            entry["commdsl"][name] = {"ms": ms, "tflops": flops / ms / 1e9, "rel_err": err}
            if err > TOLERANCE or math.isnan(err):
                print(f"{m}x{n}x{k} {name}: rel err {err:.2e} > {TOLERANCE}", file=sys.stderr)
            elif best is None or ms < best[1]:
                best = (name, ms, err)
        try:
            fn = cublas(a, sa, b, sb)
            cublas_err = relative_error(fn(), ref)
            cublas_ms = common.time_ms(fn, iters=args.iters)
        except RuntimeError as e:              # the recipe this torch/cuBLAS cannot run
            print(f"{m}x{n}x{k} cuBLAS: {e}", file=sys.stderr)
            cublas_ms, cublas_err = float("nan"), float("nan")
        entry["cublas"] = {"ms": cublas_ms, "tflops": flops / cublas_ms / 1e9,
                           "rel_err": cublas_err}
        if best is None:
            entry["best"] = None
            rows.append([f"{m}x{n}x{k}", "-", "no correct config", flops / cublas_ms / 1e9,
                         "-"])
        else:
            ours = flops / best[1] / 1e9
            theirs = flops / cublas_ms / 1e9
            entry["best"] = {"config": best[0], "ms": best[1], "tflops": ours,
                             "rel_err": best[2], "ratio": ours / theirs}
            rows.append([f"{m}x{n}x{k}", ours, best[0], theirs, f"{ours / theirs:.2f}x"])
        results["shapes"].append(entry)
    ratios = [e["best"]["ratio"] for e in results["shapes"] if e["best"]]
    geomean = math.exp(sum(map(math.log, ratios)) / len(ratios)) if ratios else float("nan")
    results["geomean_ratio"] = geomean
    results["all_correct"] = len(ratios) == len(shapes)
    common.print_table("FP8 block-scaled GEMM, TFLOP/s (bf16 out)",
                       ["M x N x K", "commdsl", "config", "cuBLAS", "commdsl / cuBLAS"], rows)
    print(f"\ngeometric mean commdsl / cuBLAS over {len(ratios)} shapes: {geomean:.3f}")
    common.write_results("fp8_gemm", results)


if __name__ == "__main__":
    main()
