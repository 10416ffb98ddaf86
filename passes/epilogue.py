"""Stores the consumers' accumulator tiles through shared memory and TMA.

A warp-specialized kernel's consumers end each output tile with a store of the converted
accumulator; lowered as it is, each thread writes 4-byte pairs to eight rows at a time (the
wgmma fragment), BN / 4 predicated stores per thread that hold the warpgroup and queue the
next tile's scale loads behind them. Instead, each consumer warpgroup stages its 64 rows in
a shared-memory buffer and one of its threads hands them to TMA, which writes whole lines,
clips the ragged edges and runs on while the warpgroup starts the next tile:

    store d[m0 : +BM, n0 : +BN] = t
 -> bulk_wait() {read = True}         the leader: the last tile's TMA store has read the buffer
    warpgroup_barrier()
    smem_store(buf, t)                each thread its fragment, 128B-swizzled (no bank conflict)
    fence_async_shared()              the writes, visible to TMA
    warpgroup_barrier()
    tma_store(d, buf, m0, n0) {map}   the leader: one 64-row box per 128 bytes of columns
and before the consumers finish, bulk_wait() {read = False}: the leader waits for its last
store to land.

A store masked by rows, `mask(v[:, None])` (the grouped GEMM's padding rows, which TMA
cannot skip), takes that path when every row its warpgroup holds is stored, and stays the
masked store otherwise:

    ok = warpgroup_all(v)             bar.red.and over the warpgroup's 128 threads
    ... tma_store(d, buf, m0, n0, ok) {map, when}
    store d[m0 : +BM, n0 : +BN] mask(v[:, None] and not ok) = t

Applies to a 2-byte (bf16, f16) tile in the wgmma fragment layout stored whole or by rows at
(..., m0, n0) of a tensor of rank 2 or more (one element deep in the leading dimensions: the
masked grouped GEMM's d[g]) with the default policy, when BN is 64 or more and a multiple of
64 (128-byte box rows) or 16 or 32 past one (BN = 144, 160: DeepGEMM's tiles across B's
128-row scale blocks; the last 32 or 64 bytes of each row go as a box of their own, 32B- or
64B-swizzled, by a second tensor map), the tensor's rows are a multiple of 16 bytes (TMA's
stride rule: known from the shapes or the size specialization) and the buffer fits beside
the pipeline's stages; other stores stay as they are.
"""
from __future__ import annotations

from commdsl.dtypes import dtype as dtype_info
from commdsl.fragments import WARPGROUP_ROWS, WgmmaAcc
from commdsl.ir import Block, Builder, KernelIR, Op, ScalarType, TileType, Value
from commdsl.ir import SWIZZLE_BYTES, SmemType, atom_aligned
from commdsl.layout import Sliced
from commdsl.passes.vectorize import size_facts
from commdsl.spec import TMA_ALIGNMENT, TensorMapParam
from commdsl.target import Target

BOOL = ScalarType("bool")


def _mask(op: Op) -> Value:
    """A masked store's mask: after the tensor and one coordinate per dimension."""
    return op.operands[1 + op.operands[0].type.rank]


def _row_mask(op: Op, producers: dict[int, Op]) -> Value | None:
    """The row vector v of a store's mask(v[:, None]) (a whole row stored or not), or None
    where the mask varies along a row. v is laid out as the fragment's rows (each thread
    holds its own rows), which the warpgroup's vote needs."""
    bcast = producers.get(_mask(op).id)
    expand = bcast and bcast.name == "broadcast" and producers.get(bcast.operands[0].id)
    if not expand or expand.name != "expand_dims" or expand.attrs["axis"] != 1:
        return None
    v = expand.operands[0]
    layout = v.type.layout
    if not (isinstance(layout, Sliced) and layout.axis == 1
            and isinstance(layout.parent, WgmmaAcc)):
        return None
    return v


def tail_bytes(row_bytes: int) -> int | None:
    """The bytes of a tile row past its whole 128-byte boxes: 0, or 32 or 64 (one narrower
    box, 32B- or 64B-swizzled); None where TMA cannot take the row (less than one whole box,
    or another remainder)."""
    tail = row_bytes % SWIZZLE_BYTES
    return tail if row_bytes >= SWIZZLE_BYTES and tail in (0, 32, 64) else None


def _stageable(op: Op, facts: dict[str, int], producers: dict[int, Op]) -> bool:
    """Whether TMA can take this store (see the module doc)."""
    value = op.operands[-1]
    t, tensor = value.type, op.operands[0].type
    if not (isinstance(t, TileType) and isinstance(t.layout, WgmmaAcc) and len(t.shape) == 2):
        return False
    esize = dtype_info(t.dtype).bytes
    rows, cols = t.shape
    row_multiple = tensor.dims[-1].divisibility(facts)
    sizes = tuple(op.attrs.get("sizes", ()))
    return (esize == 2 and tensor.rank >= 2
            and (not op.attrs.get("mask") or _row_mask(op, producers) is not None)
            and sizes[-2:] == (rows, cols) and all(n is None for n in sizes[:-2])
            and op.attrs.get("cache_policy") == {} and tail_bytes(cols * esize) is not None
            and row_multiple * esize % TMA_ALIGNMENT == 0)


def _staged(op: Op, buf: Value, maps: dict, producers: dict[int, Op]) -> list[Op]:
    """The store through shared memory and TMA; a row-masked one goes that way when every
    row of the warpgroup is stored, and as it was (its mask and-ed with the other case)
    otherwise: the same bytes either way."""
    tensor, value = op.operands[0], op.operands[-1]
    coords = op.operands[1:1 + tensor.type.rank]
    b = Builder(Block(), op.loc)
    b.op("bulk_wait", [], [], read=True)
    b.op("warpgroup_barrier", [], [])
    b.op("smem_store", [buf, value], [])
    b.op("fence_async_shared", [], [])
    b.op("warpgroup_barrier", [], [])
    if not op.attrs.get("mask"):
        b.op("tma_store", [tensor, buf, *coords], [], **maps)
        return b.block.ops
    mask = _mask(op)
    every = b.value("warpgroup_all", [_row_mask(op, producers)], BOOL)
    b.op("tma_store", [tensor, buf, *coords, every], [], **maps, when=True)
    others = b.value("splat", [b.value("not", [every], BOOL)], mask.type)
    op.operands[1 + tensor.type.rank] = b.value("and", [mask, others], mask.type)
    b.block.ops.append(op)
    return b.block.ops


def _rewrite(block: Block, stores: list[Op], bufs: dict[int, Value], maps: dict[int, int],
             producers: dict[int, Op]):
    for op in list(block.ops):
        for inner in op.blocks:
            _rewrite(inner, stores, bufs, maps, producers)
        if op in stores:
            at = block.ops.index(op)
            block.ops[at:at + 1] = _staged(op, bufs[id(op)], maps[id(op)], producers)


def run(kernel: KernelIR, target: Target) -> KernelIR:
    ws = next((op for op in kernel.body.ops if op.name == "warp_specialize"), None)
    if ws is None:
        return kernel
    facts = size_facts(kernel)
    consumers = ws.blocks[1]
    producers = {r.id: op for op in kernel.walk() for r in op.results}
    stores = [op for op in consumers.walk()
              if op.name == "store" and _stageable(op, facts, producers)]
    offset = atom_aligned(kernel.shared_bytes)
    tensor_maps = list(kernel.attrs.get("tensor_maps", ()))
    bufs, maps, allocs = {}, {}, []
    for op in stores:
        t = op.operands[-1].type
        buf = SmemType(t.dtype, 1, t.shape)
        if offset + buf.stage_bytes > target.shared_bytes_per_block:
            continue
        alloc = Op("smem_alloc", [], [Value(buf)], {"offset": offset}, loc=op.loc)
        allocs.append(alloc)
        bufs[id(op)], maps[id(op)] = alloc.result, {"map": len(tensor_maps)}
        esize = dtype_info(t.dtype).bytes
        tensor_maps.append(TensorMapParam(op.operands[0].name,
                                          (WARPGROUP_ROWS, SWIZZLE_BYTES // esize),
                                          SWIZZLE_BYTES))
        tail = tail_bytes(t.shape[1] * esize)
        if tail:
            maps[id(op)]["tail_map"] = len(tensor_maps)
            tensor_maps.append(TensorMapParam(op.operands[0].name,
                                              (WARPGROUP_ROWS, tail // esize), tail))
        offset += buf.stage_bytes
    staged = [op for op in stores if id(op) in bufs]
    if not staged:
        return kernel
    _rewrite(consumers, staged, bufs, maps, producers)
    consumers.ops.append(Op("bulk_wait", [], [], {"read": False}, loc=ws.loc))
    at = kernel.body.ops.index(ws)
    kernel.body.ops[at:at] = allocs
    kernel.attrs["tensor_maps"] = tuple(tensor_maps)
    kernel.shared_bytes = offset
    return kernel
