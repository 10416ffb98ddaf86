"""A `via tma` tile whose elements lie inside another one loaded in the same step becomes a
view of that one's columns: one TMA copy and one buffer fewer.

    tk = load kv[blk, r : +32, 0, 0 : +576] via tma       # q k^T's K
    tv = load kv[blk, r : +32, 0, c : +128] via tma       # p v's V: 128 of those columns
 -> tv = columns(tk, c)                                   # an mma reads tk's slabs in place

MLA's V is the first 512 columns of its K: reading them twice costs a quarter more L2
traffic and shared memory for a second ring (passes/pipeline.py gives the view the ring's
slabs, the backend a descriptor at slab c). The narrow load must read the same tensor at
the same indices and row range, and its first column must be provably inside the wide
load's columns and a whole 128-byte slab from its start: the first column's bounds and a
divisor of it come from constants and the loop ranges (`Facts`); where they do not prove it,
the load stays a load.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import gcd

from commdsl.dtypes import dtype as dtype_info
from commdsl.ir import SWIZZLE_BYTES, Block, Builder, KernelIR, Op, ScalarType, Value
from commdsl.ops import MEMORY, SIDE_EFFECTS, has_trait
from commdsl.ops.control import tile_ranges
from commdsl.target import Target

I32 = ScalarType("i32")


@dataclass(frozen=True)
class Facts:
    """What is known of an i32: lo <= it <= hi (None: unbounded) and it is a multiple of
    `divisor` (0 when it is 0)."""
    lo: int | None = None
    hi: int | None = None
    divisor: int = 1


def _add(a: Facts, b: Facts, sign: int) -> Facts:
    lo, hi = (b.lo, b.hi) if sign > 0 else (
        None if b.hi is None else -b.hi, None if b.lo is None else -b.lo)
    return Facts(None if a.lo is None or lo is None else a.lo + lo,
                 None if a.hi is None or hi is None else a.hi + hi, gcd(a.divisor, b.divisor))


class Analysis:
    """Facts and structural equality of the kernel's i32 values."""

    def __init__(self, kernel: KernelIR):
        self.producers: dict[int, Op] = {}
        self.ranges: dict[int, tuple] = {}       # a loop's index -> (lo, end, step) Values
        for op in kernel.walk():
            for r in op.results:
                self.producers[r.id] = op
            if op.name == "tiles":
                for arg, (lo, end), step in zip(op.blocks[0].args, tile_ranges(op),
                                                op.attrs["steps"]):
                    if isinstance(end, Value):
                        self.ranges[arg.id] = (lo, end, step)
            elif op.name == "for":
                lo, end, step = op.operands[:3]
                self.ranges[op.blocks[0].args[0].id] = (lo, end, step)

    def constant(self, v: Value) -> int | None:
        op = self.producers.get(v.id)
        if op is not None and op.name == "const" and isinstance(op.attrs["value"], int):
            return op.attrs["value"]
        return None

    def facts(self, v: Value) -> Facts:
        k = self.constant(v)
        if k is not None:
            return Facts(k, k, abs(k))
        if v.id in self.ranges:
            lo, end, step = self.ranges[v.id]
            lo, end = self.constant(lo), self.constant(end)
            step = step if isinstance(step, int) else self.constant(step)
            if lo is None or step is None or step <= 0:
                return Facts()
            last = None if end is None else lo + max(0, end - 1 - lo) // step * step
            return Facts(lo, last, gcd(lo, step))
        op = self.producers.get(v.id)
        if op is None:
            return Facts()
        if op.name in ("add", "sub"):
            a, b = (self.facts(x) for x in op.operands)
            return _add(a, b, 1 if op.name == "add" else -1)
        k = self.constant(op.operands[1]) if op.name in ("rem", "div") else None
        if k is not None and k > 0:
            f = self.facts(op.operands[0])
            if f.lo is not None and f.lo >= 0:        # both round toward zero alike
                if op.name == "rem":
                    return Facts(0, k - 1 if f.hi is None else min(k - 1, f.hi),
                                 gcd(f.divisor, k))
                return Facts(f.lo // k, None if f.hi is None else f.hi // k, 1)
        if op.name == "mul":
            for x, y in (op.operands, op.operands[::-1]):
                k = self.constant(y)
                if k is not None and k >= 0:
                    f = self.facts(x)
                    return Facts(None if f.lo is None else f.lo * k,
                                 None if f.hi is None else f.hi * k, f.divisor * k)
        return Facts()

    def same(self, a: Value, b: Value) -> bool:
        """Whether a and b hold the same value: one value, or the same pure op of the same
        values (`rem(n0, 64)` computed twice)."""
        if a.id == b.id:
            return True
        pa, pb = self.producers.get(a.id), self.producers.get(b.id)
        return (pa is not None and pb is not None and pa.name == pb.name
                and pa.attrs == pb.attrs and not pa.blocks and not pb.blocks
                and not has_trait(pa, MEMORY) and not has_trait(pa, SIDE_EFFECTS)
                and len(pa.operands) == len(pb.operands)
                and all(self.same(x, y) for x, y in zip(pa.operands, pb.operands)))


def _inside(narrow: Op, wide: Op, facts: Analysis) -> bool:
    """Whether `narrow`'s tile is columns of `wide`'s, a whole number of slabs in."""
    if (narrow.operands[0] is not wide.operands[0] or narrow is wide
            or len(narrow.operands) != len(wide.operands)):
        return False
    (rows, cols), (wrows, wcols) = narrow.result.type.shape, wide.result.type.shape
    sizes, wsizes = narrow.attrs["sizes"], wide.attrs["sizes"]
    if rows != wrows or cols >= wcols or list(sizes[:-1]) != list(wsizes[:-1]):
        return False
    if not all(facts.same(x, y) for x, y in zip(narrow.operands[1:-1], wide.operands[1:-1])):
        return False
    slab = SWIZZLE_BYTES // dtype_info(narrow.result.type.dtype).bytes
    start, first = facts.constant(wide.operands[-1]), facts.facts(narrow.operands[-1])
    return (start is not None and start % slab == 0 and first.divisor % slab == 0
            and first.lo is not None and first.hi is not None
            and start <= first.lo and first.hi + cols <= start + wcols)


def _share(block: Block, facts: Analysis) -> None:
    loads = [op for op in block.ops if op.name == "load" and op.attrs.get("via") == "tma"]
    views: set[int] = set()
    for narrow in loads:
        wide = next((w for w in loads if id(w) not in views and _inside(narrow, w, facts)
                     and block.ops.index(w) < block.ops.index(narrow)), None)
        if wide is None:
            continue
        b = Builder(Block(), narrow.loc)
        first, start = narrow.operands[-1], facts.constant(wide.operands[-1])
        if start:
            first = b.value("sub", [first, b.value("const", [], I32, value=start)], I32)
        b.op("columns", [wide.result, first], [narrow.result.type]).results = [narrow.result]
        at = block.ops.index(narrow)
        block.ops[at:at + 1] = b.block.ops
        views.add(id(narrow))


def run(kernel: KernelIR, target: Target) -> KernelIR:
    facts = Analysis(kernel)
    blocks = [kernel.body] + [b for op in kernel.walk() for b in op.blocks]
    for block in blocks:
        _share(block, facts)
    return kernel
