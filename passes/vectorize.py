"""Chooses the vector width of each global load and store: 16 bytes wherever it is legal.

A vector along the innermost dimension is legal when the slice length, the slice start and
the row length are all multiples of it, so every vector is aligned and lies wholly inside or
wholly outside the tensor (one bounds test per vector). Divisibility of the start comes from
the index arithmetic; of the row length from the shapes (`s: f32[M, K / 128]` promises
128 | K, and the runtime checks it) and from the sizes the kernel is specialized for (like
Triton, the runtime compiles one variant for sizes that are multiples of 16 and one for the
rest). The base pointer's 16-byte alignment is checked at launch.
"""
from __future__ import annotations

import math

from commdsl.dims import divisibility_facts
from commdsl.facts import Analysis
from commdsl.ir import KernelIR, Op, TileType, Value
from commdsl.ops import ASYNC, ELEMENTWISE, MEMORY, has_trait
from commdsl.target import Target


def size_facts(kernel: KernelIR) -> dict[str, int]:
    """size symbol -> a number it is known to be a multiple of."""
    facts = divisibility_facts([d for t in kernel.tensors for d in t.type.dims])
    for name, div in kernel.attrs.get("size_divisibility", {}).items():
        facts[name] = math.lcm(facts.get(name, 1), div)
    return facts


def _largest_power_of_two_dividing(n: int, cap: int) -> int:
    v = 1
    while v * 2 <= cap and n % (v * 2) == 0:
        v *= 2
    return v


def vector_width(tensor: Value, start_div: int, length: int | None, facts: dict,
                 target: Target) -> int:
    """Elements per access for one load/store (1 when the innermost dim is indexed by a point)."""
    if length is None:
        return 1
    from commdsl.dtypes import dtype
    cap = target.max_vector_bytes // dtype(tensor.type.dtype).bytes
    row = tensor.type.dims[-1].divisibility(facts)
    return _largest_power_of_two_dividing(math.gcd(math.gcd(length, start_div), row), cap)


def _same_along_rows(value: Value, made_by: dict[int, Op]) -> bool:
    """Whether a mask tile holds one value per row (`rows[:, None]`, a scalar's splat, or
    elementwise ops of such): then a vector along the row is wholly in or wholly out."""
    op = made_by.get(value.id)
    if op is None or not isinstance(value.type, TileType):
        return not isinstance(value.type, TileType)
    if op.name == "splat":
        return True
    if op.name == "broadcast":
        return op.operands[0].type.shape[-1] == 1
    return has_trait(op, ELEMENTWISE) and all(_same_along_rows(o, made_by)
                                              for o in op.operands)


def run(kernel: KernelIR, target: Target) -> KernelIR:
    facts = size_facts(kernel)
    known = Analysis(kernel, facts)
    made_by = {r.id: op for op in kernel.walk() for r in op.results}
    for op in kernel.walk():
        if has_trait(op, MEMORY) and not has_trait(op, ASYNC):    # not a TMA copy
            tensor = op.operands[0]
            start = op.operands[tensor.type.rank]       # index of the innermost dimension
            # A vector store is all or nothing: a mask that varies along the row makes a
            # masked store write element by element.
            mask = op.operands[1 + tensor.type.rank] if op.attrs.get("mask") else None
            whole = (op.name == "store" and mask is not None
                     and not _same_along_rows(mask, made_by))
            op.attrs["vec"] = 1 if whole else vector_width(tensor, known.facts(start).divisor,
                                                           op.attrs["sizes"][-1], facts, target)
    return kernel
