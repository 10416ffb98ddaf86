"""Rejects ops the target cannot run, pointing at the source that asked for them."""
from __future__ import annotations

from commdsl.diagnostics import CompileError
from commdsl.ir import KernelIR
from commdsl.target import Target

FP8 = ("e4m3", "e5m2")


def run(kernel: KernelIR, target: Target) -> KernelIR:
    for op in kernel.walk():
        if op.name == "convert" and not target.has_fp8_convert:
            types = (op.operands[0].type.dtype, op.result.type.dtype)
            if any(t in FP8 for t in types):
                raise CompileError(f"FP8 conversion needs sm_89 or newer, not {target.name}",
                                   op.loc, "compile with --target sm_90a")
    return kernel
