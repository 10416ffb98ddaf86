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

from commdsl.dtypes import dtype as dtype_info
from commdsl.facts import Analysis
from commdsl.ir import SWIZZLE_BYTES, Block, Builder, KernelIR, Op, ScalarType
from commdsl.target import Target

I32 = ScalarType("i32")


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
