"""The PTX backend: tile IR -> LLVM IR (llvmlite) -> PTX through LLVM's NVPTX target."""
from __future__ import annotations

import functools

from commdsl.ir import KernelIR
from commdsl.target import Target

from .codegen import emit_module


def to_llvm(kernels: list[KernelIR], target: Target) -> str:
    return str(emit_module(kernels, target))


@functools.lru_cache(maxsize=None)
def _target_machine(cpu: str, ptx_version: int):
    import llvmlite.binding as llvm
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()
    target = llvm.Target.from_triple("nvptx64-nvidia-cuda")
    return target.create_target_machine(cpu=cpu, features=f"+ptx{ptx_version}", opt=3)


def to_ptx(llvm_ir: str, target: Target) -> str:
    """Optimizes the module at O3 and prints PTX for the target."""
    import llvmlite.binding as llvm
    tm = _target_machine(target.name, target.ptx_version)
    module = llvm.parse_assembly(llvm_ir)
    module.verify()
    pto = llvm.create_pipeline_tuning_options(speed_level=3)
    builder = llvm.create_pass_builder(tm, pto)
    builder.getModulePassManager().run(module, builder)
    return tm.emit_assembly(module)
