"""fp8_gemm's tile shapes timed over many call shapes: the data the cost model is fitted to.

    python bench/fp8_gemm_sweep.py                 # bench/fp8_gemm.py's 19 shapes, and
                                                   # M in 1, 8, 16, 32 at its (N, K) pairs
    python bench/fp8_gemm_sweep.py --shapes 4096,2112,7168 --iters 20

Per shape, every BM x BN x STAGES x CLUSTER of the source's tune lists that compiles (GROUP
and PROMOTE the source's defaults: PROMOTE changes the rounding, not only the speed), on
fresh data quantized DeepSeek-style; each output is NaN-poisoned and checked against the float64
product of the dequantized operands before it is timed as DeepGEMM times itself
(common.time_flushed_ms: L2 flushed, host cost hidden). Nothing is tuned or picked here:
`python bench/model_agreement.py --fit` reads the JSON this writes
(bench/results/fp8_gemm_sweep-<device>.json) with the other recorded timings.
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
import common  # noqa: E402
import fp8_gemm_report as report  # noqa: E402
from test_fp8_gemm import (FP8_GEMM, mn_major, quantize_a, quantize_b, reference,  # noqa: E402
                           relative_error)

import commdsl  # noqa: E402
from commdsl.tune.parallel_compile import compile_configs  # noqa: E402
from commdsl.tune.space import search_space  # noqa: E402

TOLERANCE = 2e-3
SWEPT = ("BM", "BN", "STAGES", "CLUSTER")      # GROUP and PROMOTE stay the source's
# Decode-sized M, where the fixed shapes have none: there the A tile is mostly out of bounds,
# and many CTAs read the same few rows of A.
TINY_M_SHAPES = [(m, n, k) for m in (1, 8, 16, 32) for n, k in report.NK_PAIRS]


def kernels() -> dict[str, object]:
    """label -> Kernel for every BM x BN x STAGES x CLUSTER of the source that compiles,
    compiled in worker processes as the tuner compiles (tune/parallel_compile.py)."""
    with open(FP8_GEMM) as f:
        axes = dict(search_space(f.read(), FP8_GEMM, None, {}, None).axes)
    configs = [dict(zip(SWEPT, values))
               for values in itertools.product(*(axes[name] for name in SWEPT))]
    default = commdsl.load(FP8_GEMM, config="declared")
    compiled = compile_configs(default, configs, lambda config, why: None)
    return {common.config_name(config): kernel                 # None: too much shared memory
            for config, (kernel, _) in zip(configs, compiled) if kernel is not None}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args = common.gemm_args(ap, report.SHAPES + TINY_M_SHAPES)
    started = time.perf_counter()
    tiles = kernels()
    print(f"{len(tiles)} tile configs compiled in {time.perf_counter() - started:.0f} s",
          flush=True)
    entries = []
    for m, n, k in args.shapes:
        torch.manual_seed(m * 31 + n * 7 + k)
        a, sa = quantize_a(torch.randn(m, k, device="cuda"))
        b, sb = quantize_b(torch.randn(n, k, device="cuda"))
        ours, ref = (a, mn_major(sa), b, sb), reference(a, sa, b, sb)
        d = torch.empty(m, n, dtype=torch.bfloat16, device="cuda")
        ms, errors = {}, {}
        for label, kernel in tiles.items():
            d.fill_(float("nan"))
            try:
                kernel(*ours, d=d)
                err = relative_error(d, ref)
            except commdsl.CommdslError as e:
                errors[label] = str(e).splitlines()[0]
                continue
            if not err <= TOLERANCE:                   # NaN lands here too
                errors[label] = f"relative error {err:.2e} > {TOLERANCE}"
                continue
            ms[label] = common.time_flushed_ms(lambda: kernel(*ours, d=d), iters=args.iters)
        del ref
        entries.append({"shape": [m, n, k], "ms": ms, "errors": errors})
        best = min(ms, key=ms.get, default=None)
        fastest = f"best {best} {2 * m * n * k / ms[best] / 1e9:.0f} TFLOP/s, " if best else ""
        print(f"{m}x{n}x{k}: {fastest}{len(ms)} timed, {len(errors)} failed", flush=True)
        for label, why in errors.items():
            print(f"  {label}: {why}", file=sys.stderr)
        # after every shape: a run cut short by a time limit keeps the shapes it finished
        common.write_results("fp8_gemm_sweep", {"shapes": entries, "iters": args.iters,
                                                "seconds": time.perf_counter() - started})


if __name__ == "__main__":
    main()
