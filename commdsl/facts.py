"""What is known of a kernel's i32 scalars before they run: bounds and a divisor, from
constants, the sizes' divisibility, loop ranges and the arithmetic between them.

Passes ask it whether an index is a whole number of slabs into a tile (passes/subtile.py),
how wide a vector its alignment allows (passes/vectorize.py), or whether a bound is a
multiple of a chunk (passes/chunk.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from math import gcd

from .ir import KernelIR, Op, Value
from .ops import MEMORY, SIDE_EFFECTS, has_trait
from .ops.control import tile_ranges


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


def _mul(a: Facts, b: Facts) -> Facts:
    bounds = (None, None)
    if b.lo is not None and b.lo == b.hi and b.lo >= 0:       # times a constant k >= 0
        k = b.lo
        bounds = (None if a.lo is None else a.lo * k, None if a.hi is None else a.hi * k)
    return Facts(*bounds, a.divisor * b.divisor)


class Analysis:
    """Facts and structural equality of one kernel's i32 values. `sizes`: size symbol -> a
    number it is known to be a multiple of (the shapes' promises and the specialization)."""

    def __init__(self, kernel: KernelIR, sizes: dict[str, int] | None = None):
        self.producers: dict[int, Op] = {}
        self.ranges: dict[int, tuple] = {}   # a loop's index -> (lo, end or None, step)
        self._known: dict[int, Facts] = {v.id: Facts(0, None, (sizes or {}).get(v.name, 1))
                                         for v in kernel.sizes}
        for op in kernel.walk():
            for r in op.results:
                self.producers[r.id] = op
            if op.name == "tiles":
                for arg, (lo, end), step in zip(op.blocks[0].args, tile_ranges(op),
                                                op.attrs["steps"]):
                    self.ranges[arg.id] = (lo, end if isinstance(end, Value) else None, step)
            elif op.name == "for":
                lo, end, step = op.operands[:3]
                self.ranges[op.blocks[0].args[0].id] = (lo, end, step)

    def constant(self, v: Value) -> int | None:
        op = self.producers.get(v.id)
        if op is not None and op.name == "const" and isinstance(op.attrs["value"], int):
            return op.attrs["value"]
        return None

    def facts(self, v: Value) -> Facts:
        if v.id not in self._known:
            self._known[v.id] = self._facts(v)
        return self._known[v.id]

    def _facts(self, v: Value) -> Facts:
        k = self.constant(v)
        if k is not None:
            return Facts(k, k, abs(k))
        if v.id in self.ranges:
            return self._index(*self.ranges[v.id])
        op = self.producers.get(v.id)
        if op is None or len(op.results) != 1:
            return Facts()
        if op.name in ("add", "sub"):
            a, b = (self.facts(x) for x in op.operands)
            return _add(a, b, 1 if op.name == "add" else -1)
        if op.name == "mul":
            a, b = (self.facts(x) for x in op.operands)
            return _mul(a, b) if b.lo is not None and b.lo == b.hi else _mul(b, a)
        k = self.constant(op.operands[1]) if op.name in ("rem", "div") else None
        if k is not None and k > 0:
            f = self.facts(op.operands[0])
            if f.lo is not None and f.lo >= 0:        # both round toward zero alike
                if op.name == "rem":
                    return Facts(0, k - 1 if f.hi is None else min(k - 1, f.hi),
                                 gcd(f.divisor, k))
                return Facts(f.lo // k, None if f.hi is None else f.hi // k,
                             f.divisor // k if f.divisor % k == 0 else 1)
        return Facts()

    def _index(self, lo: Value, end: Value | None, step) -> Facts:
        """A loop index: lo, lo + step, ... below end."""
        first = self.facts(lo)
        stride = Facts(step, step, step) if isinstance(step, int) else self.facts(step)
        divisor = gcd(first.divisor, stride.divisor)
        if first.lo is None or stride.lo is None or stride.lo <= 0:
            return Facts(None, None, divisor)
        last = None
        if end is not None and first.lo == first.hi and stride.lo == stride.hi:
            e = self.facts(end).hi
            last = None if e is None else first.lo + max(0, e - 1 - first.lo) // stride.lo * stride.lo
        return Facts(first.lo, last, divisor)

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
