"""Per-row scalar work done once per row, not once per copy of the row.

A reduction's result is Sliced (commdsl/layout.py): the C lanes that differed only along the
reduced axis all hold the same R slots, and every one of them runs the elementwise chain
that follows (quantization: max(amax, 1e-4), an IEEE division by max_finite, the
reciprocal of the scale; each division and reciprocal ~10 instructions) on all R slots.
Where R >= 2, C >= 2 and the chain holds such an expensive op, this pass splits the slots
among the copies instead:

    r  = reduce(..)                      (Sliced, R slots in each of C lanes)
 -> rc = reduce(..)                      (Compact: lane j of the group holds slots j, j+C, ..
                                          a reduce-scatter, backends/ptx/compact.py)
    ... the same elementwise ops on compact values (ceil(R / C) slots per lane) ...
    v  = gather_copies(vc)               (Sliced again: R shuffles, `shfl.sync.idx`)

for every value of the chain a broadcast takes back; stores write the compact values, each
slot from the one lane that holds it. Each slot is
computed by the same IEEE operations on the same inputs, only in one lane instead of C, so
the results are bit for bit the values every copy computed before.
Top-level ops only; a chain whose ops are all cheap is left alone (the shuffles would cost
more than they save).
"""
from __future__ import annotations

from commdsl.ir import KernelIR, Op, TileType, Value
from commdsl.layout import Blocked, Compact, Sliced, slots
from commdsl.ops import ELEMENTWISE, has_trait
from commdsl.target import Target

_CONVERTIBLE = ("f32", "ue8m0")     # one register per element, converted one by one


def _expensive(op: Op) -> bool:
    """An f32 division or reciprocal: div.rn / rcp.rn, ~8-10 instructions each."""
    return op.name in ("div", "recip") and op.result.type.dtype == "f32"


def _eligible(op: Op, region: set[int], splats: dict[int, Op]) -> bool:
    # Elementwise ops may run on compact values: codegen maps them slot by slot.
    if not has_trait(op, ELEMENTWISE) or len(op.results) != 1:
        return False
    if not isinstance(op.result.type, TileType):
        return False
    if op.name == "convert" and not (op.operands[0].type.dtype in _CONVERTIBLE
                                     and op.result.type.dtype in _CONVERTIBLE):
        return False
    inside = False
    for o in op.operands:
        if o.id in region:
            inside = True
        elif o.id not in splats:
            return False
    return inside


def run(kernel: KernelIR, target: Target) -> KernelIR:
    splats = {op.result.id: op for op in kernel.body.ops if op.name == "splat"}
    for reduce in [op for op in kernel.body.ops if op.name == "reduce"]:
        ops = kernel.body.ops                # (a rewrite replaces the list)
        t = reduce.result.type
        if not isinstance(t, TileType) or not isinstance(t.layout, Sliced):
            continue
        if not isinstance(t.layout.parent, Blocked):
            continue
        compact = Compact(t.layout)
        rows, copies = len(slots(t.layout.dims(t.shape))), compact.copies(t.shape)
        if rows < 2 or copies < 2:
            continue
        start = ops.index(reduce)
        region: set[int] = {reduce.result.id}
        chain: list[Op] = []
        for op in ops[start + 1:]:
            if _eligible(op, region, splats) and op.result.type.layout == t.layout:
                chain.append(op)
                region.add(op.result.id)
        if not any(_expensive(op) for op in chain):
            continue
        _rewrite(kernel, reduce, chain, compact)
    return kernel


def _rewrite(kernel: KernelIR, reduce: Op, chain: list[Op], compact: Compact) -> None:
    in_chain = {id(op) for op in [reduce] + chain}
    users: dict[int, list[Op]] = {}          # chain value id -> its users outside the chain
    for op in kernel.walk():
        if id(op) not in in_chain:
            for o in op.operands:
                users.setdefault(o.id, []).append(op)
    # Stores write the compact value, each slot from the one lane that holds it (a value
    # also taken back by a broadcast, or stored under a mask of the Sliced layout, is
    # gathered for that use alone).
    top = {id(op) for op in kernel.body.ops}
    stores = {id(u) for op in [reduce] + chain for u in users.get(op.result.id, [])
              if u.name == "store" and id(u) in top and not u.attrs.get("mask")}
    renamed: dict[int, Value] = {}           # original value id -> its compact value
    new_ops: list[Op] = []
    for op in kernel.body.ops:
        if id(op) in stores:                 # one element per access: a lane's slots are C apart
            op.operands[-1] = renamed[op.operands[-1].id]
            op.attrs = {**op.attrs, "vec": 1}
        if id(op) not in in_chain:
            new_ops.append(op)
            continue
        if op is not reduce:                 # (the reduce keeps its Blocked operand)
            operands = []
            for o in op.operands:
                if o.id in renamed:
                    operands.append(renamed[o.id])
                else:                        # a splat: a fresh one on the compact layout
                    s = Value(o.type.with_layout(compact))
                    new_ops.append(Op("splat", [kernel_splat_scalar(kernel, o)], [s], {},
                                      loc=op.loc))
                    operands.append(s)
            op.operands = operands
        original = op.result
        c = Value(original.type.with_layout(compact))
        op.results = [c]
        renamed[original.id] = c
        new_ops.append(op)
        if any(id(u) not in stores for u in users.get(original.id, [])):
            new_ops.append(Op("gather_copies", [c], [original], {}, loc=op.loc))
    kernel.body.ops = new_ops


def kernel_splat_scalar(kernel: KernelIR, v: Value) -> Value:
    for op in kernel.body.ops:
        if op.name == "splat" and op.result is v:
            return op.operands[0]
    raise KeyError(v)
