"""GPU targets: one description per GPU family, with its limits and the instructions it has.

Every limit the compiler, the tuner and the runtime check against is read from here. The
numbers are the CUDA C++ Programming Guide's "Technical Specifications per Compute
Capability" table; the instructions are the PTX ISA's target requirements
(docs: shared/docs/hopper-ptx-reference.md, section 1). The SM count is not a target
property (two parts of one family differ): the runtime asks the device for it.
"""
from __future__ import annotations

from dataclasses import dataclass

from .diagnostics import CompileError

KIB = 1024

# Instructions a target may have. Kernels name them in errors, so they read as PTX does.
WGMMA = "wgmma"                    # wgmma.mma_async: sm_90a only
SETMAXNREG = "setmaxnreg"          # sm_90a only
TMA = "tma"                        # cp.async.bulk.tensor, mbarrier expect_tx: sm_90
TMA_MULTICAST = "tma multicast"    # cp.async.bulk.tensor .multicast::cluster: sm_90
CP_ASYNC_BULK = "cp.async.bulk"    # sm_90
CLUSTERS = "clusters"              # thread block clusters, distributed shared memory: sm_90
FP8_CONVERT = "fp8 convert"        # cvt to and from e4m3 / e5m2: sm_89
CP_ASYNC = "cp.async"              # sm_80
L1_EVICTION = "L1 eviction policies"   # ld/st .L1::evict_*, .L1::no_allocate: sm_70
L2_PREFETCH = "L2 prefetch sizes"      # ld .L2::64B, .L2::128B (sm_75), .L2::256B: sm_80
# ld.global.nc.L1::no_allocate of memory another GPU writes reads its writes: PTX leaves it
# undefined, DeepEP found Hopper honours it (passes/cache.py: the default of `peer_loads`).
NC_PEER_LOADS = "nc peer loads"


@dataclass(frozen=True)
class Target:
    name: str                      # as ptxas spells it: sm_90a
    sm: int                        # 90
    arch_specific: bool            # the 'a' suffix: wgmma, setmaxnreg; runs on sm_90 only
    features: frozenset[str]
    max_threads_per_sm: int
    max_ctas_per_sm: int
    shared_bytes_per_sm: int
    shared_bytes_per_block: int    # the most a block may opt in to (dynamic shared memory)
    warp_size: int = 32
    max_threads_per_block: int = 1024
    max_grid: tuple[int, int, int] = (2**31 - 1, 65535, 65535)    # CTAs along x, y, z
    registers_per_sm: int = 64 * KIB          # 32-bit registers
    registers_per_block: int = 64 * KIB
    max_registers_per_thread: int = 255
    # Static shared memory per block, and dynamic shared memory without opting in.
    default_shared_bytes_per_block: int = 48 * KIB
    shared_banks: int = 32         # shared memory serves one word of each bank per cycle
    shared_bank_bytes: int = 4
    max_vector_bytes: int = 16     # ld/st .v4.b32 / .v2.b64; 32-byte accesses need sm_100
    setmaxnreg_range: tuple[int, int] = (24, 256)   # setmaxnreg's counts: multiples of
    setmaxnreg_step: int = 8                        # this, in this range

    @property
    def capability(self) -> tuple[int, int]:
        return divmod(self.sm, 10)

    @property
    def warpgroup_threads(self) -> int:
        """Four consecutive warps: what one wgmma and one setmaxnreg act on."""
        return 4 * self.warp_size

    @property
    def producer_registers(self) -> int:
        """Registers per thread a TMA producer warpgroup keeps: the least setmaxnreg allows."""
        return self.setmaxnreg_range[0]

    def consumer_registers(self, groups: int) -> int:
        """Registers per thread of each of `groups` consumer warpgroups in a warp-specialized
        CTA that has the SM to itself, once the producer has given its registers back."""
        step = self.setmaxnreg_step
        spare = self.registers_per_sm // self.warpgroup_threads - self.producer_registers
        return min(self.max_registers_per_thread // step * step, spare // groups // step * step)

    def compiled_registers(self, groups: int) -> int:
        """Registers per thread ptxas may allocate in a CTA of a producer and `groups`
        consumer warpgroups: the register file over all its threads. setmaxnreg moves
        registers between warpgroups at run time but cannot raise this (ptxas C7602)."""
        step = self.setmaxnreg_step
        threads = self.warpgroup_threads * (groups + 1)
        return min(self.max_registers_per_thread, self.registers_per_block // threads) \
            // step * step

    @property
    def register_file_bytes(self) -> int:
        """No tile of one CTA can be larger (irgen checks before any layout work)."""
        return self.registers_per_sm * 4

    @property
    def ptx_version(self) -> int:
        """The PTX ISA version to emit (x10): the lowest that has every feature we use."""
        return 80 if self.sm >= 90 else (81 if self.sm == 89 else 78)

    def has(self, feature: str) -> bool:
        return feature in self.features

    @property
    def has_fp8_convert(self) -> bool:
        return self.has(FP8_CONVERT)

    @property
    def has_wgmma(self) -> bool:
        return self.has(WGMMA)

    @property
    def has_tma(self) -> bool:
        return self.has(TMA)

    def runs_on(self, capability: tuple[int, int]) -> bool:
        """Whether a cubin compiled for this target runs on a device of compute capability
        (major, minor): an arch-specific one on its own SM only, any other on its major
        version from its own minor version up."""
        major, minor = self.capability
        if self.arch_specific:
            return capability == (major, minor)
        return capability[0] == major and capability[1] >= minor


_AMPERE = frozenset({CP_ASYNC, L1_EVICTION, L2_PREFETCH})
_ADA = _AMPERE | {FP8_CONVERT}
_HOPPER = _ADA | {TMA, TMA_MULTICAST, CP_ASYNC_BULK, CLUSTERS, NC_PEER_LOADS}

TARGETS = {t.name: t for t in (
    Target("sm_80", 80, False, _AMPERE, max_threads_per_sm=2048, max_ctas_per_sm=32,
           shared_bytes_per_sm=164 * KIB, shared_bytes_per_block=163 * KIB),
    Target("sm_86", 86, False, _AMPERE, max_threads_per_sm=1536, max_ctas_per_sm=16,
           shared_bytes_per_sm=100 * KIB, shared_bytes_per_block=99 * KIB),
    Target("sm_89", 89, False, _ADA, max_threads_per_sm=1536, max_ctas_per_sm=24,
           shared_bytes_per_sm=100 * KIB, shared_bytes_per_block=99 * KIB),
    Target("sm_90", 90, False, _HOPPER, max_threads_per_sm=2048, max_ctas_per_sm=32,
           shared_bytes_per_sm=228 * KIB, shared_bytes_per_block=227 * KIB),
    Target("sm_90a", 90, True, _HOPPER | {WGMMA, SETMAXNREG}, max_threads_per_sm=2048,
           max_ctas_per_sm=32, shared_bytes_per_sm=228 * KIB, shared_bytes_per_block=227 * KIB),
)}
DEFAULT_TARGET = "sm_90a"


def get_target(name: str) -> Target:
    if name not in TARGETS:
        raise CompileError(f"unknown target '{name}'", None,
                           f"targets are: {', '.join(TARGETS)} (the default is {DEFAULT_TARGET})")
    return TARGETS[name]


def target_for_capability(major: int, minor: int) -> Target | None:
    """The target to compile for on a device of compute capability major.minor: its own
    family (with the arch-specific instructions where it has them), else the newest older
    one of its major version (sm_86 for 8.7); None for a device no target runs on."""
    fits = [t for t in TARGETS.values() if t.runs_on((major, minor))]
    return max(fits, key=lambda t: (t.sm, t.arch_specific), default=None)
