"""The PTX backend's table of emitters: one `emit(cg, op)` per (op name, target family).

An emitter is registered where it is written, with `@emits`:

    @emits("add")                          # plain PTX: every target
    def op_add(cg, op): ...
    @emits("mma", targets=("sm_90a",))     # wgmma: Hopper's arch-specific PTX only
    def emit_mma(cg, op): ...

`cg` is the kernel's codegen.KernelCodegen (its methods register the same way). Before a
kernel is emitted, every op in it must have an emitter for the target; a missing one is a
compile error at the op's source, not an AttributeError halfway through the module.
"""
from __future__ import annotations

from typing import Callable

from commdsl.diagnostics import CompileError
from commdsl.ir import KernelIR, Op
from commdsl.target import Target

GENERIC = "ptx"            # the family of emitters valid for every target

Emitter = Callable[[object, Op], None]
EMITTERS: dict[tuple[str, str], Emitter] = {}


def emits(*ops: str, targets: tuple[str, ...] = (GENERIC,)):
    """Registers the decorated function as the emitter of `ops` on `targets`."""
    def register(fn: Emitter) -> Emitter:
        for name in ops:
            for family in targets:
                if (name, family) in EMITTERS:
                    raise ValueError(f"'{name}' has two PTX emitters for {family}")
                EMITTERS[(name, family)] = fn
        return fn
    return register


def lookup(name: str, target: Target) -> Emitter | None:
    return EMITTERS.get((name, target.name)) or EMITTERS.get((name, GENERIC))


def emitter(op: Op, target: Target) -> Emitter:
    fn = lookup(op.name, target)
    if fn is None:
        families = sorted(f for n, f in EMITTERS if n == op.name)
        hint = (f"it is emitted for {', '.join(families)} only" if families else
                "no target emits it: a pass should have lowered it before the backend")
        raise CompileError(f"'{op.name}' has no PTX emitter for {target.name}", op.loc, hint)
    return fn


def check_emittable(kernel: KernelIR, target: Target) -> None:
    """Every op of the kernel has an emitter for the target (raises at the first that lacks one)."""
    for op in kernel.walk():
        emitter(op, target)
