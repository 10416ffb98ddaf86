"""A kernel's IR as the interpreter tests run it: as irgen makes it, or after every pass."""
from __future__ import annotations

from commdsl.compiler import compile_file
from commdsl.passes import PASS_ORDER, get_pass
from commdsl.target import get_target


def kernel_ir(path: str, lowered: bool, kernel: str | None = None, **constants):
    kir = compile_file(path, emit="ir", kernel=kernel, constants=constants).ir[0]
    if lowered:
        for name in PASS_ORDER:
            kir = get_pass(name)(kir, get_target("sm_90a"))
    return kir
