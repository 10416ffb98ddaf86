"""A comparison of an index tile with a bound that is a multiple of p becomes the same
comparison of p-wide chunk numbers:

    let first = iota(160) < 128 - n0 % 128     # n0 steps by 160: the bound is a multiple of 32
 -> let first = iota(160) / 32 < (128 - n0 % 128) / 32

For c >= 0 and x a multiple of p, c < x exactly when c / p < x / p (and c >= x when
c / p >= x / p), so the meaning is kept. What it buys: a thread holds a tile's columns in short
aligned runs (wgmma's accumulator: two of every eight), so c / p is one compile-time constant
for each run of its registers, and the comparison is made once per run instead of once per
element; the runs the bound's range decides fold away. A B tile of 160 rows across B's
128-row scale blocks picks each column's scale by such a comparison: per element, the
predicates outnumbered what the registers could hold (the SASS recomputed them at every
promotion). p is the largest power of two the bound is known to be a multiple of (the loop
ranges and constants say: commdsl/facts.py), at most the tile's length rounded up to one.
"""
from __future__ import annotations

from commdsl.facts import Analysis
from commdsl.ir import Block, Builder, KernelIR, Op, ScalarType, TileType, Value
from commdsl.target import Target

I32 = ScalarType("i32")
# the predicates kept by dividing both sides, with the index tile on the left / on the right
INDEX_LEFT, INDEX_RIGHT = ("<", ">="), (">", "<=")


def _chunk(bound: int, length: int) -> int:
    """The largest power of two dividing `bound`, at most `length` rounded up to one."""
    p = 1
    while p < length and bound % (p * 2) == 0:
        p *= 2
    return p


def _operands(op: Op, producers: dict[int, Op]) -> tuple[int, Op, Value] | None:
    """(side of the index tile, its iota, the splatted bound) of a comparison that qualifies."""
    kinds = [producers.get(v.id) for v in op.operands]
    for side, preds in ((0, INDEX_LEFT), (1, INDEX_RIGHT)):
        index, other = kinds[side], kinds[1 - side]
        if (op.attrs["pred"] in preds and index is not None and index.name == "iota"
                and other is not None and other.name == "splat"
                and other.operands[0].type == I32):
            return side, index, other.operands[0]
    return None


def _rewrite(block: Block, facts: Analysis) -> list[Value]:
    """Rewrites the block's comparisons that qualify; gives the splats they no longer read."""
    detached = []
    for op in list(block.ops):
        found = op.name == "cmp" and _operands(op, facts.producers)
        if not found:
            continue
        side, iota, bound = found
        shape = iota.result.type.shape
        p = _chunk(facts.facts(bound).divisor, shape[iota.attrs["axis"]])
        if p < 2:
            continue
        b = Builder(Block(), op.loc)
        tile = TileType("i32", shape)
        divisor = b.value("const", [], I32, value=p)
        chunks = b.value("div", [iota.result, b.value("splat", [divisor], tile)], tile)
        limit = b.value("splat", [b.value("div", [bound, divisor], I32)], tile)
        detached.append(op.operands[1 - side])
        op.operands = [chunks, limit] if side == 0 else [limit, chunks]
        at = block.ops.index(op)
        block.ops[at:at] = b.block.ops
    return detached


def run(kernel: KernelIR, target: Target) -> KernelIR:
    facts = Analysis(kernel)
    blocks = [kernel.body] + [b for op in kernel.walk() for b in op.blocks]
    detached = {v.id for block in blocks for v in _rewrite(block, facts)}
    used = {v.id for op in kernel.walk() for v in op.operands}
    dead = detached - used         # the bounds' splats that nothing reads any more
    for block in blocks:
        block.ops = [op for op in block.ops if not any(r.id in dead for r in op.results)]
    return kernel
