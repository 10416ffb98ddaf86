"""Host time per call of act_quant as a torch custom op (Kernel.as_torch_op): called eagerly,
and inside a torch.compile(fullgraph=True) graph, beside commdsl's own repeated-call fast
path and torch's eager amax on the same input (a torch op's dispatch, for scale).

    python bench/torch_op_overhead.py [--m 128] [--k 512] [--launches 500] [--rounds 30]

Host time per call is launch_overhead.py's: the wall time of N back-to-back calls, no
synchronization between them, divided by N, the median over rounds. The compiled graph
holds the op alone, so its time is the op's dispatch through the compiled graph's wrapper
(issue 16: the op's host overhead inside a compiled graph).
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402
from launch_overhead import EXAMPLE, host_us_per_launch  # noqa: E402

import commdsl  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--m", type=int, default=128)
    ap.add_argument("--k", type=int, default=512)
    ap.add_argument("--launches", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    device = torch.device("cuda")
    kernel = commdsl.load(EXAMPLE)
    op = kernel.as_torch_op("commdsl_bench::act_quant")
    x = torch.randn(args.m, args.k, device=device).to(torch.bfloat16)
    y = torch.empty(args.m, args.k, dtype=torch.float8_e4m3fn, device=device)
    s = torch.empty(args.m, args.k // 128, device=device)
    compiled = torch.compile(lambda t: op(t), fullgraph=True)
    want = op(x)
    got = compiled(x)
    same = all(torch.equal(a.view(torch.uint8) if a.element_size() == 1 else a,
                           b.view(torch.uint8) if b.element_size() == 1 else b)
               for a, b in zip(got, want))
    paths = {
        "commdsl kernel(x, y=y, s=s)": lambda: kernel(x, y=y, s=s),
        "commdsl kernel(x) (allocating)": lambda: kernel(x),
        "torch op, eager": lambda: op(x),
        "torch op, in a compiled graph": lambda: compiled(x),
        "torch amax (eager, for scale)": lambda: x.abs().amax(),
    }
    us = {name: host_us_per_launch(fn, args.launches, args.rounds, device)
          for name, fn in paths.items()}
    common.print_table(f"host time per call, act_quant {args.m}x{args.k} "
                       f"(compiled == eager bytes: {same})", ["path", "us per call"],
                       [[n, v] for n, v in us.items()])
    common.write_results("torch_op_overhead", {"shape": [args.m, args.k],
                                               "host_us_per_launch": us,
                                               "compiled_equals_eager": same})


if __name__ == "__main__":
    main()
