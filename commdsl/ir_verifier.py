"""Structural checks of the tile IR, run after irgen and after every pass.

A failure here is a compiler bug, not a user mistake: the message names the op and the rule.
"""
from __future__ import annotations

from .ir import Block, KernelIR, Op, TileType
from .layout import Compact, Sliced
from .ops import ELEMENTWISE, IRVerifyError, fail, has_trait, lookup

__all__ = ["IRVerifyError", "verify"]


def _compact_operands(op: Op):
    """Compact values (passes/replicas.py) come from a reduce (a reduce-scatter) or a
    splat, and feed only slot-by-slot elementwise ops of the same Compact layout, stores
    (one element per access) and gather_copies."""
    layouts = [getattr(v.type, "layout", None) for v in op.operands + op.results]
    compact = [l for l in layouts if isinstance(l, Compact)]
    if not compact or op.name in ("gather_copies", "splat"):
        return
    if op.name == "reduce":
        a, r = op.operands[0].type.layout, op.result.type.layout
        if r != Compact(Sliced(a, op.attrs["axis"])):
            fail(op, f"makes {r}, not the Compact layout of its Sliced result")
        return
    if op.name == "store":
        if op.attrs.get("vec", 1) != 1:
            fail(op, "stores a compact tile one element per access (vec 1)")
        return
    if not has_trait(op, ELEMENTWISE):
        fail(op, "takes a compact tile: only elementwise ops, stores and gather_copies may")
    if len(compact) != len(layouts) or len(set(compact)) != 1:
        fail(op, "mixes compact and other layouts")


def _same_layouts(op: Op):
    """An elementwise op combines its operands slot by slot, so every tile it reads and
    makes is held alike (passes/tile.py moves one that is not, or raises)."""
    if not has_trait(op, ELEMENTWISE):
        return
    layouts = {getattr(v.type, "layout", None) for v in op.operands + op.results
               if isinstance(v.type, TileType)}
    if len(layouts) > 1 and None not in layouts:
        fail(op, f"combines tiles held in {len(layouts)} layouts: "
                 + ", ".join(sorted(map(str, layouts))))


def verify(kernel: KernelIR, require_layouts: bool = False) -> None:
    defined = {v.id for v in kernel.tensors} | {v.id for v in kernel.sizes}
    _verify_block(kernel.body, defined, require_layouts)
    if require_layouts and kernel.num_threads <= 0:
        raise IRVerifyError("kernel has no thread count after layout assignment")


def _verify_block(block: Block, defined: set[int], require_layouts: bool):
    for arg in block.args:
        defined.add(arg.id)
    for op in block.ops:
        rule = lookup(op.name).verify
        for o in op.operands:
            if o.id not in defined:
                fail(op, f"uses {o!r} before it is defined")
        rule(op)
        _compact_operands(op)
        _same_layouts(op)
        for r in op.results:
            if require_layouts and isinstance(r.type, TileType) and r.type.layout is None:
                fail(op, "result tile has no layout")
            defined.add(r.id)
        for b in op.blocks:
            _verify_block(b, set(defined), require_layouts)
