"""Runs passes in order, verifying the IR after each one; can print or time any pass."""
from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from typing import Callable

from commdsl.ir import KernelIR
from commdsl.ir_printer import print_kernel
from commdsl.ir_verifier import IRVerifyError, verify
from commdsl.target import Target

# name -> module in this package; each module has one entry `run(kernel, target) -> kernel`.
PASS_ORDER = {
    "legalize": "legalize",     # reject what the target cannot do (FP8 conversion, ...)
    "subtile": "subtile",       # a via tma tile inside another of the step -> a view of its columns
    "chunk": "chunk",           # iota < a multiple of p -> iota / p < bound / p, once per run
    "hoist": "hoist",           # small reads after a pipelined loop, needing nothing of it: before
    "schedule": "schedule",     # persistent tile loops -> one CTA per SM, rasterized tile order
    "cache": "cache",           # cache(...) clauses -> checked cache policies of accesses
    "vectorize": "vectorize",   # widest legal vector per global access (16 bytes)
    "divide": "divide",         # x / broadcast(d): one reciprocal per d, exact FMA correction
    "mma": "mma",               # mma -> wgmma shapes, warpgroups, fragments; fused promotion
    "prefetch": "prefetch",     # pipeline(2) without TMA -> loads an iteration ahead, in registers
    "pipeline": "pipeline",     # via tma loads -> TMA/mbarrier ring, producer/consumer warpgroups
    "tile": "tile",             # map tiles onto threads: layouts and the CTA size
    "replicas": "replicas",     # per-row work after a reduction split among the row's copies
    "overlap": "overlap",       # one K step of wgmmas in flight while the last one is promoted
    "epilogue": "epilogue",     # accumulator tiles out through shared memory and TMA stores
    "shared": "shared",         # static shared memory of transposes, relayouts, reductions
}


def get_pass(name: str) -> Callable[[KernelIR, Target], KernelIR]:
    return importlib.import_module(f"commdsl.passes.{PASS_ORDER[name]}").run


@dataclass
class PassManager:
    target: Target
    print_after: set[str] = field(default_factory=set)
    printer: Callable[[str], None] = print
    timings: dict[str, float] = field(default_factory=dict)
    observe: Callable[[str, KernelIR], None] | None = None   # called after each pass
    verify: bool = True      # the IR verifier after each pass; off where the same passes
                             # are checked by the compile (the cost model's profiles)

    def run(self, kernel: KernelIR) -> KernelIR:
        if self.verify:
            verify(kernel)
        layouts_assigned = False
        for name in PASS_ORDER:
            start = time.perf_counter()
            kernel = get_pass(name)(kernel, self.target)
            self.timings[name] = time.perf_counter() - start
            layouts_assigned |= name == "tile"
            try:
                if self.verify:
                    verify(kernel, require_layouts=layouts_assigned)
            except IRVerifyError as e:
                raise IRVerifyError(f"after pass '{name}': {e}") from None
            if self.observe is not None:
                self.observe(name, kernel)
            if name in self.print_after or "all" in self.print_after:
                self.printer(f"// ----- IR after {name} -----\n{print_kernel(kernel)}")
        return kernel
