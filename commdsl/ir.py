"""The tile IR: typed SSA operations on scalars and tiles, grouped in blocks.

A `KernelIR` is one kernel: its parameters (global tensors and the i32 sizes they are
shaped by), a body block of ops, and kernel-wide attributes (grid, threads, shared bytes).
Tiles are values a whole CTA holds together; passes attach a layout that says which thread
holds which element. Ops are generic (a name, operands, results, attributes, nested blocks),
so later ops (asynchronous copies, barriers, warpgroup roles, peer memory) need no new IR
machinery, only a verifier rule and a lowering.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import Any

from .diagnostics import Span
from .dims import Dim
from .dtypes import dtype as dtype_info


# ---- types -------------------------------------------------------------------------------

class Type:
    pass


@dataclass(frozen=True)
class ScalarType(Type):
    dtype: str

    def __str__(self):
        return self.dtype


@dataclass(frozen=True)
class TileType(Type):
    dtype: str
    shape: tuple[int, ...]
    layout: Any = None           # set by the `tile` pass (passes/layouts.py)

    def with_layout(self, layout) -> "TileType":
        return replace(self, layout=layout)

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    def __str__(self):
        dims = ", ".join(map(str, self.shape))
        lay = f", {self.layout}" if self.layout is not None else ""
        return f"tile<{self.dtype}[{dims}]{lay}>"


@dataclass(frozen=True)
class TensorType(Type):
    """A tensor in global memory, row-major and contiguous, shaped by size symbols."""
    dtype: str
    dims: tuple[Dim, ...]
    is_out: bool = False
    symmetric: bool = False      # on every rank; peer ops reach the other ranks' copies

    @property
    def rank(self) -> int:
        return len(self.dims)

    def __str__(self):
        dims = ", ".join(map(str, self.dims))
        return (f"tensor<{self.dtype}[{dims}]{' out' if self.is_out else ''}"
                f"{' sym' if self.symmetric else ''}>")


# ---- shared memory and barriers (after passes/pipeline.py) ----------------------------

SWIZZLE_BYTES = 128     # a 128B-swizzled row: TMA's SWIZZLE_128B, wgmma's descriptor layout 1
WGMMA_K_BYTES = 32      # the K one wgmma takes: 32 FP8/int8, 16 bf16/f16 or 8 tf32 elements
SWIZZLE_ATOM = 1024     # 8 such rows: the alignment of every shared-memory buffer


def atom_aligned(nbytes: int) -> int:
    """`nbytes` rounded up to whole swizzle atoms."""
    return -(-nbytes // SWIZZLE_ATOM) * SWIZZLE_ATOM


@dataclass(frozen=True)
class SmemType(Type):
    """`stages` tiles of `shape` in shared memory, each 1024-byte aligned (128B swizzle);
    with a `pitch`, `pitch` bytes apart instead: a view of some columns of a wider ring's
    tiles, or a ring of unswizzled rows."""
    dtype: str
    stages: int
    shape: tuple[int, ...]
    pitch: int = 0

    @property
    def stage_bytes(self) -> int:
        """Bytes from one tile to the next: the tile, rounded up to whole swizzle atoms."""
        if self.pitch:
            return self.pitch
        n = dtype_info(self.dtype).bytes
        for s in self.shape:
            n *= s
        return atom_aligned(n)

    def __str__(self):
        pitch = f" pitch {self.pitch}" if self.pitch else ""
        return f"smem<{self.dtype}[{self.stages} x {', '.join(map(str, self.shape))}]{pitch}>"


@dataclass(frozen=True)
class BarrierType(Type):
    count: int

    def __str__(self):
        return f"mbarriers<{self.count}>"


# ---- values, ops, blocks -----------------------------------------------------------------

_ids = itertools.count()


class Value:
    __slots__ = ("type", "name", "id")

    def __init__(self, type: Type, name: str | None = None):
        self.type = type
        self.name = name
        self.id = next(_ids)

    def __repr__(self):
        return f"%{self.name or self.id}: {self.type}"


@dataclass(eq=False)
class Op:
    name: str
    operands: list[Value]
    results: list[Value]
    attrs: dict[str, Any] = field(default_factory=dict)
    blocks: list["Block"] = field(default_factory=list)
    loc: Span | None = None

    @property
    def result(self) -> Value:
        assert len(self.results) == 1, f"{self.name} has {len(self.results)} results"
        return self.results[0]

    def copy(self, mapping: dict[int, Value]) -> "Op":
        """This op with its nested blocks, operands renamed by `mapping` (value id -> value),
        which gains the copy's results and block arguments."""
        clone = Op(self.name, [mapping.get(v.id, v) for v in self.operands],
                   [Value(r.type, r.name) for r in self.results], dict(self.attrs),
                   loc=self.loc)
        mapping.update({r.id: c for r, c in zip(self.results, clone.results)})
        for block in self.blocks:
            new = Block(args=[Value(a.type, a.name) for a in block.args])
            mapping.update({a.id: n for a, n in zip(block.args, new.args)})
            new.ops = [op.copy(mapping) for op in block.ops]
            clone.blocks.append(new)
        return clone


@dataclass(eq=False)
class Block:
    ops: list[Op] = field(default_factory=list)
    args: list[Value] = field(default_factory=list)

    def walk(self):
        for op in self.ops:
            yield op
            for b in op.blocks:
                yield from b.walk()


@dataclass(eq=False)
class KernelIR:
    name: str
    tensors: list[Value]              # TensorType, declaration order
    sizes: list[Value]                # ScalarType('i32'), one per size symbol
    body: Block
    grid: tuple[Dim, ...] = (  )
    num_threads: int = 0              # 0 until the `tile` pass decides
    shared_bytes: int = 0
    attrs: dict[str, Any] = field(default_factory=dict)

    def walk(self):
        return self.body.walk()


class Builder:
    """Appends ops to a block; irgen and passes create ops only through it."""

    def __init__(self, block: Block, loc: Span | None = None):
        self.block, self.loc = block, loc

    def op(self, name: str, operands, result_types, **attrs) -> Op:
        op = Op(name, list(operands), [Value(t) for t in result_types], attrs, loc=self.loc)
        self.block.ops.append(op)
        return op

    def value(self, name: str, operands, result_type, **attrs) -> Value:
        return self.op(name, operands, [result_type], **attrs).result
