"""The CPU meaning of every op: interpret(ctx, op, *operand_values) -> result.

`ctx` is commdsl.interpreter.Program. Tiles are whole-CTA torch tensors, i32 scalars
Python ints, float scalars 0-d tensors; an op that waits returns a generator.
"""
from __future__ import annotations

import itertools
import math

import torch

from .cpu_numerics import convert, fma_f32, is_int, matmul_f32
from .dtypes import dtype as dtype_info, torch_dtype
from .ir import ScalarType, TileType
from .regions import in_bounds_region, unguarded


# ---- scalars and elementwise --------------------------------------------------------------

def _const(ctx, op):
    dtype = op.result.type.dtype
    value = op.attrs["value"]
    return int(value) if is_int(dtype) else torch.tensor(value, dtype=torch_dtype(dtype))


def _div(ctx, op, a, b):
    if isinstance(a, int):                        # C division: toward zero
        q = abs(a) // abs(b)
        return q if (a >= 0) == (b > 0) else -q
    return a / b


def _rem(ctx, op, a, b):
    return int(math.fmod(a, b)) if isinstance(a, int) else a.fmod(b)


def _max(ctx, op, a, b):
    return max(a, b) if isinstance(a, int) else torch.fmax(a, b)


def _min(ctx, op, a, b):
    return min(a, b) if isinstance(a, int) else torch.fmin(a, b)


def _recip(ctx, op, a):
    return 1.0 / a                                # rcp.rn: correctly rounded


def _fma(ctx, op, a, b, c):
    return fma_f32(a, b, c).to(a.dtype)


def _convert(ctx, op, a):
    return convert(a, op.operands[0].type.dtype, op.result.type.dtype)


# ---- tiles ------------------------------------------------------------------------------

def _splat(ctx, op, a):
    t = op.result.type
    return torch.full(t.shape, a if isinstance(a, int) else float(a), dtype=torch_dtype(t.dtype))


def _reduce(ctx, op, a):
    axis, kind = op.attrs["axis"], op.attrs["kind"]
    if kind == "amax":
        return a.abs().amax(axis)
    if kind == "sum":
        return a.sum(axis, dtype=a.dtype)
    return a.amax(axis) if kind == "max" else a.amin(axis)


def _same(ctx, op, a):
    """Layout only: the elements move between threads, the tile's values stay."""
    return a


# ---- global memory ----------------------------------------------------------------------

def _load(ctx, op, tensor, *starts):
    t = op.result.type
    out = torch.zeros(t.shape if isinstance(t, TileType) else (), dtype=tensor.dtype)
    starts, runs = unguarded(op, starts)
    region = in_bounds_region(op.attrs["sizes"], tensor.shape, starts)
    if runs and region is not None:
        out[region[1]] = tensor[region[0]]
    return out


def _store(ctx, op, tensor, *rest):
    starts, value = rest[:-1], rest[-1]
    if isinstance(op.operands[-1].type, ScalarType) and not isinstance(value, torch.Tensor):
        value = torch.tensor(value)
    region = in_bounds_region(op.attrs["sizes"], tensor.shape, starts)
    if region is not None:
        tensor[region[0]] = value[region[1]].to(tensor.dtype)


# ---- loops ------------------------------------------------------------------------------

def _for(ctx, op, lo, hi, step, *carried):
    carried = list(carried)
    for i in range(lo, hi, step):
        carried = yield from ctx.run_block(op.blocks[0], [i, *carried])
    return carried[0] if len(carried) == 1 else carried


def _tiles(ctx, op, *bounds):
    """Every tile origin in turn: the persistent schedule only changes who runs which."""
    ranges = [range(lo, hi, step) for (lo, hi), step in
              zip(zip(bounds[0::2], bounds[1::2]), op.attrs["steps"])]
    for origin in itertools.product(*ranges):
        yield from ctx.run_block(op.blocks[0], list(origin))


# ---- matrix products --------------------------------------------------------------------

def _operands(ctx, op, values):
    """(A tile, B tile as [K, N], the other operands): from registers, or from the stage of
    two shared-memory rings (after passes/pipeline.py)."""
    a, b, *rest = values
    if hasattr(a, "read"):
        stage, *rest = rest
        a, b = a.read(op, stage), b.read(op, stage)
    return a, (b.T if op.attrs["trans_b"] else b), rest


def _mma(ctx, op, *values):
    """The exact product rounded once to f32 (cpu_numerics.matmul_f32): more precise than
    the tensor cores' accumulation, which only changes the rounding."""
    a, b, rest = _operands(ctx, op, values)
    out = matmul_f32(a, b)
    return out if not rest else rest[0] + out


def _promote(op, a, b, s, acc):
    """acc + (a . b) * s[:, None], one FFMA per element per promotion interval of K, as the
    backend promotes (DeepGEMM's `final += scale * accum`)."""
    k = a.shape[1]
    every = op.attrs.get("promote_every") or k
    for first in range(0, k, every):
        part = matmul_f32(a[:, first:first + every], b[first:first + every])
        acc = fma_f32(part, s.unsqueeze(1), acc)
    return acc


def _mma_promote(ctx, op, *values):
    a, b, (s, acc) = _operands(ctx, op, values)
    return _promote(op, a, b, s, acc)


class Partial:
    """mma_issue's product, in flight: its rings' stage is read when it retires, and no TMA
    copy may land in it before."""

    def __init__(self, op, rings, stage):
        self.op, self.rings, self.stage = op, rings, stage
        for ring in rings:
            ring.readers[stage] += 1

    def retire(self, op):
        a, b, _ = _operands(None, self.op, [*self.rings, self.stage])
        for ring in self.rings:
            ring.readers[self.stage] -= 1
        return matmul_f32(a, b)


def _mma_issue(ctx, op, buf_a, buf_b, stage):
    return Partial(op, (buf_a, buf_b), stage)


def _mma_retire(ctx, op, partial, s, acc):
    return fma_f32(partial.retire(op), s.unsqueeze(1), acc)


# ---- shared memory, mbarriers, TMA ------------------------------------------------------

def _smem_alloc(ctx, op):
    return ctx.ring(op.result.type)


def _mbarrier_alloc(ctx, op):
    return ctx.barriers(op.attrs["count"], op.attrs["arrivals"])


def _mbarrier_init(ctx, op, *bars):
    for b in bars:
        b.init()
    if op.attrs.get("cluster", 1) > 1:
        return ctx.cluster_sync(op)


def _mbarrier_wait(ctx, op, bars, i, parity):
    return bars.wait(op, i, parity)


def _mbarrier_expect_tx(ctx, op, bars, i):
    bars.expect_tx(op, i, op.attrs["bytes"])
    bars.arrive(op, i)                 # one thread: arrive.expect_tx


def _arrivals(ctx, op) -> int:
    """Arrivals of one execution: each thread, or lane 0 of each warp with per = "warp"."""
    return -(-ctx.threads // 32) if op.attrs.get("per") == "warp" else ctx.threads


def _mbarrier_arrive(ctx, op, bars, i):
    n = _arrivals(ctx, op)
    targets = ctx.peers() if op.attrs.get("cluster", 1) > 1 else [ctx]
    for cta in targets:
        cta.vals[op.operands[0].id].arrive(op, i, n)


def _tma_load(ctx, op, tensor, buf, stage, *rest):
    """The box of tensor map `map` at the coordinates, into buf[stage] of this CTA (or,
    with multicast = C, this CTA's 1/C of the tile's rows into every CTA of the cluster),
    completing its bytes on barrier i; it lands later (Scheduler.land)."""
    coords, bar, i = rest[:-2], op.operands[-2], rest[-1]
    rows, cols = ctx.k.attrs["tensor_maps"][op.attrs["map"]].box
    share = op.attrs.get("multicast", 1)
    part = ctx.cluster_rank() if share > 1 else 0
    starts = (coords[0] + part * rows, *coords[1:])
    box = torch.zeros((rows, cols), dtype=tensor.dtype)
    region = in_bounds_region((rows, cols), tensor.shape, starts)
    if region is not None:
        box[region[1]] = tensor[region[0]]                 # TMA fills the rest with zeros
    nbytes = rows * cols * dtype_info(op.operands[0].type.dtype).bytes
    for cta in (ctx.peers() if share > 1 else [ctx]):
        ring, bars = cta.vals[op.operands[1].id], cta.vals[bar.id]
        ring.start_copy(op, stage)

        def land(ring=ring, bars=bars):
            ring.data[stage, part * rows:(part + 1) * rows] = box
            ring.copies_in_flight[stage] -= 1
            bars.complete_tx(op, i, nbytes)
        ctx.in_flight(land)


def _cluster_sync(ctx, op):
    return ctx.cluster_sync(op)


def _smem_store(ctx, op, buf, t):
    buf.data[0] = t.to(buf.data.dtype)


def _nothing(ctx, op, *values):
    """Orders or meets threads that the interpreter runs as one: nothing to do."""


def _tma_store(ctx, op, tensor, buf, *coords):
    """buf's tile to `tensor` at coords in boxes of tensor map `map`, clipped at the
    tensor's edges; buf is read when the bulk group is waited for (bulk_wait)."""
    rows, cols = ctx.k.attrs["tensor_maps"][op.attrs["map"]].box

    def store():
        tile = buf.data[0]
        for r in range(0, tile.shape[0], rows):
            for c in range(0, tile.shape[1], cols):
                region = in_bounds_region((rows, cols), tensor.shape,
                                          (coords[0] + r, coords[1] + c))
                if region is not None:
                    tensor[region[0]] = tile[r:r + rows, c:c + cols][region[1]]
    ctx.bulk_groups.append(store)


def _bulk_wait(ctx, op):
    ctx.land_bulk_groups()


def _warp_specialize(ctx, op):
    """The producer block on one thread and the consumer block on the consumer warpgroups,
    as two coroutines; the op ends when both have."""
    producer = ctx.role(1).spawn("producer", op.blocks[0])
    consumers = ctx.role(128 * op.attrs["consumers"]).spawn("consumers", op.blocks[1])
    return ctx.join(op, [producer, consumers])


# ---- communication ----------------------------------------------------------------------

def _rows(op, indices, rank):
    """(rank, point indices) of each row a get/put moves; one entry without a gather."""
    gather = op.attrs["gather"]
    if not gather:
        return [(int(rank), list(indices))]
    d = gather[0]
    rows = indices[d].tolist()
    ranks = rank.tolist() if hasattr(rank, "tolist") and rank.dim() else [int(rank)] * len(rows)
    return [(r, [*indices[:d], row, *indices[d + 1:]]) for r, row in zip(ranks, rows)]


def _row_sizes(op):
    sizes = list(op.attrs["sizes"])
    for d in op.attrs["gather"]:
        sizes[d] = None
    return sizes


def _row_index(op, j, tile_index):
    gathered = op.attrs["gather"]
    if not gathered:
        return tile_index
    axis = sum(1 for s in op.attrs["sizes"][:gathered[0]] if s is not None)
    return tile_index[:axis] + (j,) + tile_index[axis:]


def _get(ctx, op, tensor, *rest):
    rest, runs = unguarded(op, rest)
    indices, rank = rest[:-1], rest[-1]
    t = op.result.type
    out = torch.zeros(t.shape if isinstance(t, TileType) else (), dtype=tensor.dtype)
    sizes = _row_sizes(op)
    for j, (r, starts) in enumerate(_rows(op, indices, rank) if runs else []):
        source = ctx.peer_copy(op, r)
        region = in_bounds_region(sizes, source.shape, starts)
        if region is not None:
            out[_row_index(op, j, region[1])] = source[region[0]]
    if isinstance(t, TileType):
        return out
    return out if out.is_floating_point() else int(out)


def _put(ctx, op, tensor, *rest):
    indices, rank, value = rest[:-2], rest[-2], rest[-1]
    if not isinstance(value, torch.Tensor):
        value = torch.tensor(value)
    sizes = _row_sizes(op)
    for j, (r, starts) in enumerate(_rows(op, indices, rank)):
        target = ctx.peer_copy(op, r)
        region = in_bounds_region(sizes, target.shape, starts)
        if region is not None:
            target[region[0]] = value[_row_index(op, j, region[1])].to(target.dtype)


def _signal(ctx, op, tensor, *rest):
    indices, rank, value = rest[:-2], rest[-2], rest[-1]
    ctx.peer_copy(op, int(rank))[tuple(indices)] = value


def _wait(ctx, op, tensor, *rest):
    ctx.wait_flag(op, rest[:-1], rest[-1])


INTERPRET = {
    "const": _const,
    "pid": lambda ctx, op: ctx.pid[op.attrs["axis"]],
    "nprogs": lambda ctx, op: ctx.nprogs(op.attrs["axis"]),
    "rank": lambda ctx, op: ctx.comm.rank,
    "world": lambda ctx, op: ctx.comm.world,
    "epoch": lambda ctx, op: ctx.comm.epoch,
    "add": lambda ctx, op, a, b: a + b,
    "sub": lambda ctx, op, a, b: a - b,
    "mul": lambda ctx, op, a, b: a * b,
    "div": _div,
    "rem": _rem,
    "max": _max,
    "min": _min,
    "abs": lambda ctx, op, a: abs(a),
    "neg": lambda ctx, op, a: -a,
    "fma": _fma,
    "recip": _recip,
    "convert": _convert,
    "splat": _splat,
    "expand_dims": lambda ctx, op, a: a.unsqueeze(op.attrs["axis"]),
    "broadcast": lambda ctx, op, a: a.expand(op.result.type.shape).contiguous(),
    "reduce": _reduce,
    "transpose": lambda ctx, op, a: a.t().contiguous(),
    "relayout": _same,
    "gather_copies": _same,
    "load": _load,
    "store": _store,
    "for": _for,
    "tiles": _tiles,
    "mma": _mma,
    "mma_promote": _mma_promote,
    "mma_issue": _mma_issue,
    "mma_retire": _mma_retire,
    "smem_alloc": _smem_alloc,
    "mbarrier_alloc": _mbarrier_alloc,
    "mbarrier_init": _mbarrier_init,
    "mbarrier_wait": _mbarrier_wait,
    "mbarrier_expect_tx": _mbarrier_expect_tx,
    "mbarrier_arrive": _mbarrier_arrive,
    "tma_load": _tma_load,
    "cluster_sync": _cluster_sync,
    "smem_store": _smem_store,
    "fence_async_shared": _nothing,
    "warpgroup_barrier": _nothing,
    "tma_store": _tma_store,
    "bulk_wait": _bulk_wait,
    "warp_specialize": _warp_specialize,
    "get": _get,
    "put": _put,
    "signal": _signal,
    "wait": _wait,
}
