"""The error of FP8 GEMM against a float64 product of the same FP8 inputs, in one run:
commdsl with promotion every 32, 64 or 128 of K and without promotion, beside cuBLAS
(torch._scaled_mm) promoted and with fast accumulation. f32 output, M = N = 2048.

    python bench/precision.py [--ks 512 4096 16384] [--size 2048]

Inputs are e4m3 values with unit scales, so every method multiplies the same numbers:
all-positive data (|x|, where the errors of the sums add up) and random-sign data. Error:
max over the output of |d - ref| / max |ref| (normwise; an element near zero of a
random-sign sum has no useful relative error), and for all-positive data also the largest
elementwise |d - ref| / |ref|. The tensor cores add FP8 products with a narrow accumulator;
promotion moves each interval's partial sum into f32 (DeepSeek-V3 promotes every 128).
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402

FP8_GEMM = os.path.join(os.path.dirname(__file__), "..", "examples", "fp8_gemm.cdsl")
PROMOTED_STORE = "store d[m0 : +BM, n0 : +BN] = cast<bf16>(acc)"
PROMOTE = "acc += mma(ta, tb.T, promote_every = PROMOTE) * s[:, None]"


def f32_output(source: str) -> str:
    """fp8_gemm with an f32 output: the accumulator stored as it is."""
    for old, new in (("d: out bf16[M, N]", "d: out f32[M, N]"),
                     (PROMOTED_STORE, "store d[m0 : +BM, n0 : +BN] = acc")):
        assert old in source, f"examples/fp8_gemm.cdsl changed: {old!r} is gone"
        source = source.replace(old, new)
    return source


def unpromoted(source: str) -> str:
    """Accumulating in the tensor cores: acc = mma(ta, tb.T, acc) (the unit scales unused)."""
    assert PROMOTE in source
    return source.replace(PROMOTE, "acc = mma(ta, tb.T, acc)")


def fp8_inputs(m, n, k, positive: bool, seed: int):
    import torch
    g = torch.Generator(device="cuda").manual_seed(seed)
    a, b = (torch.randn(r, k, generator=g, device="cuda") * 4 for r in (m, n))
    if positive:
        a, b = a.abs(), b.abs()
    return a.to(torch.float8_e4m3fn), b.to(torch.float8_e4m3fn)


def errors(d, ref, positive: bool) -> dict:
    diff = (d.double() - ref).abs()
    out = {"normwise": (diff.max() / ref.abs().max()).item()}
    if positive:
        out["elementwise"] = (diff / ref.abs()).max().item()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ks", type=int, nargs="*", default=[512, 4096, 16384])
    ap.add_argument("--size", type=int, default=2048, help="M = N")
    args = ap.parse_args()
    import torch

    import commdsl
    source = f32_output(open(FP8_GEMM).read())
    # 64 x 64 tiles: one consumer warpgroup has the registers for four promotion intervals
    # in flight (promote every 32); the tile size does not change the sums.
    tiles = dict(BM=64, BN=64)
    methods = {f"commdsl, promoted every {p}": commdsl.load(source, PROMOTE=p, **tiles)
               for p in (32, 64, 128)}
    methods["commdsl, not promoted"] = commdsl.load(unpromoted(source), **tiles)
    m = n = args.size
    rows, results = [], {"size": m, "runs": []}
    for k in args.ks:
        for positive in (True, False):
            a, b = fp8_inputs(m, n, k, positive, seed=k + positive)
            ref = a.double() @ b.double().T
            ones_a = torch.ones(k // 128, -(-m // 4) * 4, device="cuda")     # mn_major
            ones_b = torch.ones(-(-n // 128), k // 128, device="cuda")
            run = {"k": k, "data": "all positive" if positive else "random sign", "errors": {}}
            for name, kernel in methods.items():
                d = torch.full((m, n), float("nan"), device="cuda")
                kernel(a, ones_a, b, ones_b, d=d)
                run["errors"][name] = errors(d, ref, positive)
            one = torch.ones((), device="cuda")
            for name, fast in (("cuBLAS, promoted", False), ("cuBLAS, fast accumulation", True)):
                d = torch._scaled_mm(a, b.t(), scale_a=one, scale_b=one,
                                     out_dtype=torch.float32, use_fast_accum=fast)
                run["errors"][name] = errors(d, ref, positive)
            results["runs"].append(run)
            for name, e in run["errors"].items():
                rows.append([k, run["data"], name, e["normwise"], e.get("elementwise", "-")])
    common.print_table(f"FP8 GEMM error vs float64 of the same inputs, M = N = {m}, f32 out",
                       ["K", "data", "method", "max |d - ref| / max |ref|",
                        "max |d - ref| / |ref|"], rows)
    verdict = []
    for run in results["runs"]:
        ours = run["errors"]["commdsl, promoted every 128"]["normwise"]
        theirs = run["errors"]["cuBLAS, promoted"]["normwise"]
        verdict.append(ours <= theirs)
    results["promoted_at_or_below_cublas"] = all(verdict)
    print(f"\ncommdsl promoted every 128 at or below cuBLAS promoted on every run: "
          f"{results['promoted_at_or_below_cublas']}")
    common.write_results("precision", results)


if __name__ == "__main__":
    main()
