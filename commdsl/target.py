"""GPU targets: what each one can do, so passes can reject what it cannot."""
from __future__ import annotations

from dataclasses import dataclass

from .diagnostics import CompileError


@dataclass(frozen=True)
class Target:
    name: str          # as ptxas spells it: sm_90a
    sm: int            # 90
    arch_specific: bool  # the 'a' suffix: wgmma, setmaxnreg
    # 64K 32-bit registers per SM on every target here; shared memory is smaller still, so
    # no tile of one CTA can be larger (irgen checks before any layout work).
    register_file_bytes: int = 65536 * 4

    @property
    def ptx_version(self) -> int:
        """The PTX ISA version to emit (x10): the lowest that has every feature we use."""
        return 80 if self.sm >= 90 else (81 if self.sm == 89 else 78)

    @property
    def has_fp8_convert(self) -> bool:
        return self.sm >= 89

    @property
    def has_wgmma(self) -> bool:
        return self.sm == 90 and self.arch_specific


TARGETS = {t.name: t for t in (
    Target("sm_80", 80, False), Target("sm_86", 86, False), Target("sm_89", 89, False),
    Target("sm_90", 90, False), Target("sm_90a", 90, True),
)}
DEFAULT_TARGET = "sm_90a"


def get_target(name: str) -> Target:
    if name not in TARGETS:
        raise CompileError(f"unknown target '{name}'", None,
                           f"targets are: {', '.join(TARGETS)} (the default is {DEFAULT_TARGET})")
    return TARGETS[name]
