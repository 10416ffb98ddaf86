"""Issue 18's criterion 5 baseline, in the same run: commdsl's fp8_gemm as it was before that
work, timed as bench/fp8_gemm.py times commdsl now.

    python bench/fp8_gemm.py --before TREE     # runs this in a child process

TREE is a tree of commit ac54502 (the code behind bench/results/before-18), e.g.
`git worktree add /tmp/before ac54502`. bench/fp8_gemm.py installs it apart (pip --target)
and runs this script with only that install and TREE/tests on the path, so the old package
never meets the new one. Per shape given (M <= 128 ones), every config that commit's bench
hand-picked for small M is checked against a float64 reference and timed L2-flushed
(common.time_flushed_ms); the best is printed as one JSON line.

    python bench/fp8_gemm_before.py TREE ITERS M,N,K [M,N,K ...]
"""
from __future__ import annotations

import json
import os
import sys

TOLERANCE = 2e-3
# ac54502's bench/fp8_gemm.py candidates(m, n, k) for m <= 256, as it was.
CONFIGS = [dict(BM=64, BN=16, STAGES=8), dict(BM=64, BN=32, STAGES=8, PROMOTE=64),
           dict(BM=128, BN=32, STAGES=6, PROMOTE=64), dict(BM=64, BN=64, STAGES=6),
           dict(BM=64, BN=64, STAGES=6, PROMOTE=64), dict(BM=64, BN=128, STAGES=6),
           dict(BM=64, BN=32, STAGES=8, PROMOTE=64, CLUSTER=2)]


def main():
    tree, iters, shapes = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    sys.path.insert(0, os.path.join(tree, "tests"))
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import torch
    import common
    import commdsl
    from test_fp8_gemm import FP8_GEMM, quantize_a, quantize_b, reference, relative_error
    kernels = [(c, commdsl.load(FP8_GEMM, **c)) for c in CONFIGS]
    for text in shapes:
        m, n, k = map(int, text.split(","))
        torch.manual_seed(m * 31 + n * 7 + k)
        a, sa = quantize_a(torch.randn(m, k, device="cuda"))
        b, sb = quantize_b(torch.randn(n, k, device="cuda"))
        ref = reference(a, sa, b, sb)
        d = torch.empty(m, n, dtype=torch.bfloat16, device="cuda")
        best = None
        for config, kernel in kernels:
            d.fill_(float("nan"))
            kernel(a, sa, b, sb, d=d)
            err = relative_error(d, ref)
            if not err <= TOLERANCE:
                continue
            ms = common.time_flushed_ms(lambda: kernel(a, sa, b, sb, d=d), iters=iters)
            if best is None or ms < best["ms"]:
                best = {"config": common.config_name(config), "ms": ms,
                        "tflops": 2 * m * n * k / ms / 1e9, "rel_err": err}
        print(json.dumps({"shape": [m, n, k], "before": best}), flush=True)


if __name__ == "__main__":
    main()
