"""What one config of a kernel does, read from the compiler's IR without a GPU: the input of
the cost model (tune/model.py).

`profile(...)` compiles the config through irgen and the passes (no LLVM, no ptxas: ~10 ms)
and keeps two things: the resources the passes decided (threads, shared memory; registers
too where the compile cache holds ptxas's report for the config) and the tile IR as irgen
wrote it, where the work is still plain: the persistent `tiles` loop or the grid, `for`
loops, loads, stores and `mma`s. `KernelProfile.work(sizes)` walks that IR for one call
shape and counts, per work unit (an output tile of a persistent loop, else one CTA):

- the bytes each load and store moves (tile bytes x the trip counts of its loops), which
  tile coordinates its indices depend on (for L2 reuse), whether it is a TMA load, and how
  much of a TMA box lies out of bounds (boxes walked over a dimension cover it rounded up
  to whole boxes);
- the bytes in flight at once: the reads of one loop iteration x the loop's pipeline depth;
- the tensor-core FLOPs of each `mma` (2 x M x N x K x trips) and its N (narrow is slow);
- from the passes: whether a product promoted once a K step had its promotion overlapped
  with the next step's wgmmas (passes/overlap.py), which the registers decide.

Loop bounds are evaluated from the sizes; where one depends on the program (`pid`), it is
evaluated for program 0, the busiest of a strided loop.
"""
from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass, field

from ..diagnostics import CommdslError
from ..dims import SM_COUNT


class NotModelled(CommdslError):
    """The IR holds something the model cannot count (a bound it cannot evaluate)."""


@dataclass(frozen=True)
class Access:
    tensor: str
    bytes: int                    # per work unit, all trips
    tensor_bytes: int             # the whole tensor: a bound on what it takes from DRAM
    axes: frozenset[int]          # the tile coordinates its indices depend on
    tma: bool
    writes: bool
    out_of_bounds_bytes: int = 0  # of `bytes`, what lies past the tensor's edges (a box of
                                  # 64 rows over M = 3 rows: 61 of them)


@dataclass(frozen=True)
class Mma:
    flops: int                    # per work unit, all trips
    n: int                        # the N of one instruction's tile: the B operand's rows
    dtype: str


@dataclass
class Work:
    """One call shape's work, per unit; `tiles` (tile counts per axis) for a persistent loop."""
    units: int
    tiles: tuple[int, ...] | None
    raster: int = 1
    cluster: int = 1
    sm_budget: int | None = None
    accesses: list[Access] = field(default_factory=list)
    mmas: list[Mma] = field(default_factory=list)
    in_flight_bytes: int = 0

    @property
    def flops(self) -> int:
        return sum(m.flops for m in self.mmas)

    @property
    def read_bytes(self) -> int:
        return sum(a.bytes for a in self.accesses if not a.writes)

    @property
    def written_bytes(self) -> int:
        return sum(a.bytes for a in self.accesses if a.writes)


@dataclass
class KernelProfile:
    name: str
    config: dict
    threads: int = 0
    shared_bytes: int = 0
    registers: int | None = None  # per thread, from ptxas where the compile cache has it
    error: str | None = None      # why the config does not compile
    ir: object = None             # irgen's KernelIR
    # False where the passes left a product promoted once a K step without overlap (its
    # warpgroups' tensor-core queues drain while they promote); None: no such product
    promotion_overlapped: bool | None = None
    # False where a warp-specialized kernel's consumers store their tiles straight from
    # their registers (passes/epilogue.py found no room or no TMA form for them): the
    # warpgroups wait on those stores; True where the tiles go through shared memory and
    # TMA; None: no consumer warpgroups
    staged_stores: bool | None = None

    def work(self, sizes: dict[str, int], sms: int) -> Work:
        return _Walk(self.ir, sizes, sms).work()


@functools.lru_cache(maxsize=8)
def _parsed(text: str, path: str):
    from ..parser import parse
    return parse(text, path)


_PROFILES: dict[tuple, KernelProfile] = {}


def profile(text: str, path: str, kernel: str | None, constants: dict,
            target: str) -> KernelProfile:
    """The profile of kernel `kernel` of `text` with `constants` set (memoized per process)."""
    key = (hashlib.sha256(text.encode()).hexdigest(), kernel,
           tuple(sorted((k, repr(v)) for k, v in constants.items())), target)
    if key not in _PROFILES:
        _PROFILES[key] = _profile(text, path, kernel, constants, target)
    return _PROFILES[key]


def _profile(text, path, kernel, constants, target) -> KernelProfile:
    from .parallel_compile import failure_message
    from .space import _pick_kernel
    name = kernel or "?"
    try:
        from ..check import check_launch_limits, check_signature
        from ..target import get_target
        k = _pick_kernel(_parsed(text, path).kernels, kernel, path)
        name, tgt = k.name, get_target(target)
        sig = check_signature(k, constants)
        check_launch_limits(k, sig, tgt)
        work_ir, passed = _lowered(sig, k, tgt), _lowered(sig, k, tgt)
        from commdsl.passes import PassManager
        passed = PassManager(tgt, set(), print, verify=False).run(passed)
    except Exception as e:          # as the tuner's compiles: the config is out, not the run
        return KernelProfile(name, dict(constants), error=failure_message(e))
    return KernelProfile(name, dict(constants), passed.num_threads, passed.shared_bytes,
                         _cached_registers(text, path, kernel, constants, target), ir=work_ir,
                         promotion_overlapped=_promotion_overlapped(passed),
                         staged_stores=_staged_stores(passed))


def _promotion_overlapped(kir) -> bool | None:
    """True where passes/overlap.py issues a step's wgmmas before the last step's promotion;
    False where a product is still promoted once a step, after all of its wgmmas."""
    from ..ops import ASYNC, MMA, PROMOTES, has_trait
    mmas = [op for op in kir.walk() if has_trait(op, MMA)]
    if any(has_trait(op, ASYNC) for op in mmas):         # split into issue and retire
        return True
    once = [op for op in mmas if has_trait(op, PROMOTES)
            and op.attrs["promote_steps"] == op.attrs["k_steps"]]
    return False if once else None


def _staged_stores(kir) -> bool | None:
    """Whether the consumer warpgroups' tiles go out through TMA (passes/epilogue.py): a
    store left beside a TMA store is the fallback for partly masked tiles, rarely taken."""
    from ..ops import ASYNC, WRITES, has_trait
    ws = next((op for op in kir.body.ops if op.name == "warp_specialize"), None)
    if ws is None:
        return None
    by_tma = {has_trait(op, ASYNC) for op in ws.blocks[1].walk() if has_trait(op, WRITES)}
    return False not in by_tma or True in by_tma


def _lowered(sig, k, tgt):
    from ..irgen import lower
    from ..spec import SPECIALIZE_DIVISOR
    kir = lower(sig, k, tgt)
    # Every size a multiple of 16, as the common specialization (compiler._lower).
    kir.attrs["size_divisibility"] = {s: SPECIALIZE_DIVISOR for s in sig.size_symbols}
    return kir


def _cached_registers(text, path, kernel, constants, target) -> int | None:
    """ptxas's registers per thread for this config, if an earlier compile left them."""
    from ..runtime.cache import CompileCache, cache_key
    cache = CompileCache()
    if cache.root is None:
        return None
    entry = cache.get(cache_key(text, path, kernel, constants, target, frozenset()))
    return entry.resources.registers if entry is not None and entry.resources else None


class _Walk:
    """One pass over irgen's IR for one shape: evaluates scalars, counts the work."""

    def __init__(self, kir, sizes: dict[str, int], sms: int):
        self.kir, self.sms = kir, sms
        self.defs = {v: op for op in kir.walk() for v in op.results}
        self.env = {v: sizes[v.name] for v in kir.sizes}
        self.sizes = {**sizes, SM_COUNT: sms}
        self.tile_args: dict[object, int] = {}

    def work(self) -> Work:
        tiles_op = next((op for op in self.kir.body.ops if op.name == "tiles"), None)
        if tiles_op is None:
            grid = [d.evaluate(self.sizes) for d in self.kir.grid] or [1]
            work = Work(units=math.prod(grid), tiles=None)
            self._count(self.kir.body, 1, 1, work)
            return work
        bounds = [self.value(v) for v in tiles_op.operands]
        steps = tiles_op.attrs["steps"]
        tiles = tuple(max(0, -(-(hi - lo) // s))
                      for lo, hi, s in zip(bounds[::2], bounds[1::2], steps))
        work = Work(units=math.prod(tiles), tiles=tiles, raster=tiles_op.attrs.get("raster", 1),
                    cluster=tiles_op.attrs.get("cluster") or 1,
                    sm_budget=tiles_op.attrs.get("sms"))
        block = tiles_op.blocks[0]
        for i, arg in enumerate(block.args):
            self.tile_args[arg] = i
            self.env[arg] = bounds[2 * i]           # the first tile stands for every tile
        self._count(block, 1, 1, work)
        return work

    def _count(self, block, trips: int, depth: int, work: Work) -> None:
        in_flight = 0
        for op in block.ops:
            if op.name == "for":
                lo, hi, step = (self.value(v) for v in op.operands[:3])
                n = max(0, -(-(hi - lo) // step))
                self.env[op.blocks[0].args[0]] = lo
                self._count(op.blocks[0], trips * n, op.attrs.get("pipeline") or 1, work)
                continue
            for inner in op.blocks:                  # other regions: taken once
                self._count(inner, trips, depth, work)
            if op.name == "mma":
                work.mmas.append(self._mma(op, trips))
            access = self._access(op, trips)
            if access is not None:
                work.accesses.append(access)
                if not access.writes:
                    in_flight += access.bytes // max(trips, 1)
        work.in_flight_bytes = max(work.in_flight_bytes, in_flight * depth)

    def _access(self, op, trips: int) -> Access | None:
        from ..ops.registry import READS, WRITES, has_trait
        reads, writes = has_trait(op, READS), has_trait(op, WRITES)
        if not (reads or writes) or not op.operands:
            return None
        tensor = op.operands[0]
        if tensor not in self.kir.tensors:
            return None
        moved = op.results[0].type if reads else op.operands[-1].type
        axes = frozenset().union(*(self._axes(v) for v in op.operands[1:]))
        ttype = tensor.type
        dims = [d.evaluate(self.sizes) for d in ttype.dims]
        tensor_bytes = math.prod(dims) * _bytes(ttype)
        nbytes, tma = _numel(moved) * _bytes(moved) * trips, op.attrs.get("via") == "tma"
        outside = 0
        if tma and reads:
            inside = math.prod(d / (-(-d // box) * box) for d, box
                               in zip(dims, op.attrs.get("sizes") or ()) if box and d)
            outside = round(nbytes * (1 - inside))
        return Access(tensor.name, nbytes, tensor_bytes, axes, tma, writes and not reads,
                      outside)

    def _mma(self, op, trips: int) -> Mma:
        a, b = op.operands[0].type, op.operands[1].type
        m, k = a.shape
        n = b.shape[0] if op.attrs.get("trans_b") else b.shape[1]
        return Mma(2 * m * n * k * trips, n, a.dtype)

    @functools.lru_cache(maxsize=None)
    def _axes(self, v) -> frozenset[int]:
        if v in self.tile_args:
            return frozenset([self.tile_args[v]])
        op = self.defs.get(v)
        if op is None:
            return frozenset()
        return frozenset().union(*(self._axes(o) for o in op.operands))

    def value(self, v) -> int:
        if v in self.env:
            return self.env[v]
        op = self.defs.get(v)
        if op is None:
            raise NotModelled(f"a loop bound depends on {v}, which the model cannot evaluate")
        if op.name == "const":
            return op.attrs["value"]
        if op.name == "pid":
            return 0
        if op.name == "nprogs":
            return self.kir.grid[op.attrs["axis"]].evaluate(self.sizes)
        args = [self.value(o) for o in op.operands]
        if op.name not in _SCALAR:
            raise NotModelled(f"a loop bound is computed by '{op.name}', which the model "
                              "cannot evaluate")
        return _SCALAR[op.name](*args)


_SCALAR = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
           "div": lambda a, b: a // b, "rem": lambda a, b: a % b, "min": min, "max": max}


def _numel(t) -> int:
    return math.prod(getattr(t, "shape", ()) or (1,))


def _bytes(t) -> int:
    from ..dtypes import dtype
    return dtype(t.dtype).bytes
