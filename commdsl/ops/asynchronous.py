"""Shared memory, mbarriers, TMA copies and the fences and barriers that order them."""
from __future__ import annotations

from commdsl.ir import BarrierType, ScalarType, SmemType, TensorType, TileType

from .operands import is_i32
from .registry import (ASYNC, BARRIER, MEMORY, READS, SHARED, SIDE_EFFECTS, WRITES, declare,
                       fail)

FAMILY = "asynchronous"


def _smem_alloc(op):
    # swizzled tiles repeat in 1024-byte atoms; a row (1-D, unswizzled) needs TMA's 128 bytes
    t = op.result.type
    if not isinstance(t, SmemType) or op.attrs["offset"] % (128 if len(t.shape) == 1 else 1024):
        fail(op, "gives a shared-memory ring at a 1024-byte aligned offset (a row's at 128)")


def _columns(op):
    t, r = op.operands[0].type, op.result.type
    if not isinstance(t, (TileType, SmemType)) or type(r) is not type(t) or len(t.shape) != 2 \
            or not is_i32(op.operands[1]):
        fail(op, "takes a 2-D tile (or its ring) and an i32 first column, and gives the same "
             "kind")
    if r.dtype != t.dtype or r.shape[0] != t.shape[0] or not 0 < r.shape[1] <= t.shape[1]:
        fail(op, f"result {r} is not some columns of {t}")
    if isinstance(t, SmemType) and (r.stages != t.stages or r.stage_bytes != t.stage_bytes):
        fail(op, f"a view of {t}'s columns keeps its stages and their pitch, not {r}")


def _mbarrier_alloc(op):
    t = op.result.type
    if not isinstance(t, BarrierType) or t.count != op.attrs["count"] or op.attrs["offset"] % 8:
        fail(op, "gives `count` barriers at an 8-byte aligned offset")
    if not 1 <= op.attrs["arrivals"] < 1 << 20:
        fail(op, "arrival count must be in 1 .. 2^20 - 1")


def _barriers(op, n_index: int = 1):
    if not isinstance(op.operands[0].type, BarrierType):
        fail(op, "takes barriers first")
    if not all(is_i32(v) for v in op.operands[1:1 + n_index]):
        fail(op, "takes i32 barrier indices")


def _mbarrier_init(op):
    if not op.operands or not all(isinstance(v.type, BarrierType) for v in op.operands):
        fail(op, "takes barrier arrays")


def _mbarrier_wait(op):
    _barriers(op, 2)


def _mbarrier_expect_tx(op):
    _barriers(op)
    if op.attrs["bytes"] <= 0 or op.attrs["bytes"] >= 1 << 20:
        fail(op, "expects 1 .. 2^20 - 1 bytes")


def _mbarrier_arrive(op):
    _barriers(op)
    if op.attrs["per"] not in ("thread", "warp"):
        fail(op, "arrives per 'thread' or per 'warp'")


def _tma_load(op):
    tensor, buf, stage = op.operands[:3]
    coords, bars, index = op.operands[3:-2], op.operands[-2], op.operands[-1]
    if not isinstance(tensor.type, TensorType) or not isinstance(buf.type, SmemType):
        fail(op, "copies from a tensor into a shared-memory ring")
    if tensor.type.dtype != buf.type.dtype:
        fail(op, "changes the dtype")
    if len(coords) != tensor.type.rank or not all(is_i32(v) for v in [stage, *coords, index]):
        fail(op, "takes an i32 stage, one i32 coordinate per dimension and a barrier index")
    if not isinstance(bars.type, BarrierType):
        fail(op, "completes on a barrier")
    if op.attrs.get("multicast", 1) not in (1, 2):
        fail(op, "multicasts to 1 or 2 CTAs")


def _no_operands(op):
    if op.operands or op.results or op.blocks:
        fail(op, "takes nothing")


def _smem_read(op):
    buf, stage = op.operands
    t = op.result.type
    if not isinstance(buf.type, SmemType) or not is_i32(stage) or not isinstance(t, TileType):
        fail(op, "reads a stage of a shared-memory ring into a tile")
    if t.dtype != buf.type.dtype or tuple(t.shape) != tuple(buf.type.shape):
        fail(op, f"gives the ring's tile ({buf.type}), not {t}")


def _smem_store(op):
    if len(op.operands) != 2 or not isinstance(op.operands[0].type, SmemType):
        fail(op, "takes a shared-memory buffer and a tile")
    buf, t = (v.type for v in op.operands)
    if not isinstance(t, TileType) or (t.dtype, t.shape) != (buf.dtype, buf.shape):
        fail(op, f"stores a {buf.dtype}{list(buf.shape)} tile, not {t}")


def _tma_store(op):
    tensor, buf, coords = op.operands[0], op.operands[1], op.operands[2:]
    if op.attrs.get("when"):
        coords, when = coords[:-1], coords[-1]
        if when.type != ScalarType("bool"):
            fail(op, "with `when`, takes a bool scalar after the coordinates")
    if not isinstance(tensor.type, TensorType) or not isinstance(buf.type, SmemType):
        fail(op, "copies from a shared-memory buffer into a tensor")
    if tensor.type.dtype != buf.type.dtype:
        fail(op, "changes the dtype")
    if len(coords) != tensor.type.rank or not all(is_i32(v) for v in coords):
        fail(op, "takes one i32 coordinate per dimension")


def _warpgroup_all(op):
    v = op.operands[0].type
    if not isinstance(v, TileType) or v.dtype != "bool" or len(v.shape) != 1 \
            or op.result.type != ScalarType("bool"):
        fail(op, "takes a bool row vector and gives a bool")


def _bulk_wait(op):
    _no_operands(op)
    if not isinstance(op.attrs.get("read"), bool):
        fail(op, "waits for reads (read = True) or completion (read = False)")


# ---- CPU meaning (commdsl/interpreter.py; rings, barriers and coroutines in
# commdsl/interpreter_async.py) -----------------------------------------------------------

def _run_smem_alloc(ctx, op):
    return ctx.ring(op.result.type)


def _run_columns(ctx, op, t, start):
    cols = op.result.type.shape[1]
    if isinstance(op.result.type, SmemType):
        return t.columns(int(start), cols, op.result.type)
    return t[:, int(start):int(start) + cols]


def _run_warpgroup_all(ctx, op, v):
    """Every row of the tile: the interpreter does not split a CTA into warpgroups, and where
    it answers False for a warpgroup whose own rows all hold, both paths store the same."""
    return bool(v.all())


def _run_mbarrier_alloc(ctx, op):
    return ctx.barriers(op.attrs["count"], op.attrs["arrivals"])


def _run_mbarrier_init(ctx, op, *bars):
    for b in bars:
        b.init()
    if op.attrs.get("cluster", 1) > 1:
        return ctx.cluster_sync(op)


def _run_mbarrier_wait(ctx, op, bars, i, parity):
    return bars.wait(op, i, parity)


def _run_mbarrier_expect_tx(ctx, op, bars, i):
    bars.expect_tx(op, i, op.attrs["bytes"])
    bars.arrive(op, i)                 # one thread: arrive.expect_tx


def _run_mbarrier_arrive(ctx, op, bars, i):
    """Each thread arrives, or lane 0 of each warp with per = "warp"; with cluster = C on
    barrier i of each of the cluster's CTAs."""
    n = -(-ctx.threads // 32) if op.attrs.get("per") == "warp" else ctx.threads
    for cta in ctx.peers() if op.attrs.get("cluster", 1) > 1 else [ctx]:
        cta.vals[op.operands[0].id].arrive(op, i, n)


def _run_tma_load(ctx, op, tensor, buf, stage, *rest):
    """The boxes of tensor map `map` at the coordinates into buf[stage], one per column
    slab of the tile (with multicast = C, this CTA's 1/C of the tile's rows into every CTA
    of the cluster), completing their bytes on barrier i of each; they land later
    (interpreter_async.Scheduler.land)."""
    import torch
    from commdsl.dtypes import dtype as dtype_info
    from commdsl.regions import in_bounds_region
    coords, i = rest[:-2], rest[-1]
    tmap = ctx.k.attrs["tensor_maps"][op.attrs["map"]]
    (rows, cols), row_dim = tmap.box, tensor.dim() + tmap.rows_dim
    share = op.attrs.get("multicast", 1)
    part = ctx.cluster_rank() if share > 1 else 0
    row = len(op.operands[1].type.shape) == 1                 # a 1-D tile: one box row
    width = op.operands[1].type.shape[-1]                     # slabs x cols
    box = torch.zeros((rows, width), dtype=tensor.dtype)     # TMA fills what is outside
    deep = {d: int(c) for d, c in enumerate(coords[:-1]) if d != row_dim}   # one element
    if all(0 <= c < tensor.shape[d] for d, c in deep.items()):
        plane = tensor[tuple(deep.get(d, slice(None)) for d in range(tensor.dim()))]
        for c0 in range(0, width, cols):
            region = in_bounds_region((rows, cols), plane.shape,
                                      (coords[row_dim] + part * rows, coords[-1] + c0))
            if region is not None:
                box[:, c0:c0 + cols][region[1]] = plane[region[0]]
    nbytes = rows * width * dtype_info(op.operands[0].type.dtype).bytes
    for cta in ctx.peers() if share > 1 else [ctx]:
        ring, bars = cta.vals[op.operands[1].id], cta.vals[op.operands[-2].id]
        ring.start_copy(op, stage)

        def land(ring=ring, bars=bars):
            if row:
                ring.data[stage] = box[0]
            else:
                ring.data[stage, part * rows:(part + 1) * rows] = box
            ring.copies_in_flight[stage] -= 1
            bars.complete_tx(op, i, nbytes)
        ctx.in_flight(land)


def _run_tma_store(ctx, op, tensor, buf, *coords):
    """buf's tile to `tensor` at coords in boxes of tensor map `map`, clipped at the
    tensor's edges (with `when`, only where it holds); buf is read when the bulk group is
    waited for (bulk_wait)."""
    from commdsl.regions import in_bounds_region
    if op.attrs.get("when"):
        *coords, when = coords
        if not bool(when):
            return
    rows, cols = ctx.k.attrs["tensor_maps"][op.attrs["map"]].box
    *index, m0, n0 = (int(c) for c in coords)     # one element deep in the leading dims
    if any(not 0 <= i < n for i, n in zip(index, tensor.shape)):
        return                                    # TMA clips the box away
    plane = tensor[tuple(index)]

    def store():
        tile = buf.data[0]
        for r in range(0, tile.shape[0], rows):
            for c in range(0, tile.shape[1], cols):        # the last box may be narrower
                box = tile[r:r + rows, c:c + cols]
                region = in_bounds_region(tuple(box.shape), plane.shape, (m0 + r, n0 + c))
                if region is not None:
                    plane[region[0]] = box[region[1]]
    ctx.bulk_groups.append(store)


def _run_smem_read(ctx, op, buf, stage):
    return buf.read(op, int(stage)).clone()


def _run_smem_store(ctx, op, buf, t):
    buf.data[0] = t.to(buf.data.dtype)


def _run_nothing(ctx, op, *values):
    """Orders or meets threads that the interpreter runs as one thread set: no effect."""


def _run_bulk_wait(ctx, op):
    ctx.land_bulk_groups()


def _run_cluster_sync(ctx, op):
    return ctx.cluster_sync(op)


declare("smem_alloc", "smem_alloc() {offset} : smem", "a ring of tiles in dynamic shared "
        "memory", traits=(SHARED,), verify=_smem_alloc,
        attrs={"offset": "its byte offset in dynamic shared memory, 1024-byte aligned (a "
                              "row's, 128)"},
        interpret=_run_smem_alloc, family=FAMILY)
declare("columns", "columns(t, c0) : tile | columns(buf, c0) : smem",
        "columns c0 .. c0 + the result's width of a 'via tma' tile, read in place by an mma "
        "(passes/subtile.py); after passes/pipeline.py, the same columns of each stage of its "
        "ring (c0 a multiple of a 128-byte swizzled slab)", traits=(SHARED,), verify=_columns,
        interpret=_run_columns, family=FAMILY)
declare("mbarrier_alloc", "mbarrier_alloc() {offset, count, arrivals} : barriers",
        "`count` mbarriers, `arrivals` each", traits=(SHARED, BARRIER), verify=_mbarrier_alloc,
        attrs={"offset": "byte offset in shared memory, 8-byte aligned",
               "count": "the number of barriers", "arrivals": "arrivals that complete a phase"},
        interpret=_run_mbarrier_alloc, family=FAMILY)
declare("mbarrier_init", "mbarrier_init(bars...) {cluster}", "one thread initializes them, "
        "then the CTA (or the cluster of `cluster` CTAs) syncs",
        traits=(BARRIER, SIDE_EFFECTS), verify=_mbarrier_init,
        attrs={"cluster": "CTAs per cluster that sync after the init"},
        interpret=_run_mbarrier_init, family=FAMILY)
declare("mbarrier_wait", "mbarrier_wait(bars, i, parity)", "wait for phase `parity` of "
        "barrier i to complete", traits=(BARRIER, ASYNC, SIDE_EFFECTS), verify=_mbarrier_wait,
        interpret=_run_mbarrier_wait, family=FAMILY)
declare("mbarrier_expect_tx", "mbarrier_expect_tx(bars, i) {bytes}", "arrive on barrier i, "
        "expecting `bytes` of TMA data", traits=(BARRIER, ASYNC, SIDE_EFFECTS),
        verify=_mbarrier_expect_tx, attrs={"bytes": "TMA bytes the phase waits for"},
        interpret=_run_mbarrier_expect_tx, family=FAMILY)
declare("mbarrier_arrive", "mbarrier_arrive(bars, i) {per, cluster}", "arrive once per "
        "`per` (\"warp\": lane 0 of each warp) on barrier i of each of the cluster's CTAs",
        traits=(BARRIER, SIDE_EFFECTS), verify=_mbarrier_arrive,
        attrs={"per": "'thread' or 'warp'", "cluster": "CTAs of the cluster to arrive on"},
        interpret=_run_mbarrier_arrive, family=FAMILY)
declare("tma_load", "tma_load(tensor, buf, stage, coords..., bars, i) {map, multicast}",
        "box of tensor map `map` into buf[stage], completing on barrier i; with multicast = "
        "C, this CTA's 1/C of the tile's rows, into buf[stage] and barrier i of all C CTAs",
        traits=(MEMORY, READS, SHARED, ASYNC, SIDE_EFFECTS), verify=_tma_load,
        attrs={"map": "the index of its tensor map in kernel.attrs['tensor_maps']",
               "multicast": "CTAs of the cluster that receive the tile (1 or 2)"},
        interpret=_run_tma_load, family=FAMILY)
declare("tma_store", "tma_store(tensor, buf, coords...[, ok]) {map, when}", "one thread per "
        "consumer warpgroup copies its boxes of buf to the tile at coords (clipped at the "
        "tensor's edges) and commits them as a bulk group; with `when`, only if the bool ok "
        "holds", traits=(MEMORY, WRITES, SHARED, ASYNC, SIDE_EFFECTS), verify=_tma_store,
        attrs={"map": "the index of its tensor map in kernel.attrs['tensor_maps']",
               "tail_map": "the map of each row's last, narrower box (32 or 64 bytes), where "
                           "the rows are not whole 128-byte boxes",
               "when": "True: a bool operand after the coordinates gates the copy"},
        interpret=_run_tma_store, family=FAMILY)
declare("warpgroup_all", "warpgroup_all(v) : bool", "whether every element of the bool row "
        "vector v that this consumer warpgroup holds is true (bar.red.and over its 128 "
        "threads; they meet); the interpreter takes every row", traits=(BARRIER, SIDE_EFFECTS),
        verify=_warpgroup_all, interpret=_run_warpgroup_all, family=FAMILY)
declare("smem_read", "smem_read(buf, stage) : tile", "each thread reads the elements it "
        "holds of buf's stage (a row a TMA copy laid there) into registers",
        traits=(SHARED,), verify=_smem_read, interpret=_run_smem_read, family=FAMILY)
declare("smem_store", "smem_store(buf, t)", "each consumer thread writes its wgmma fragment "
        "of t into buf, its warpgroup's 64 rows as 64 x 128-byte boxes, 128B-swizzled (a "
        "last box of 32 or 64-byte rows 32B- or 64B-swizzled)",
        traits=(SHARED, SIDE_EFFECTS), verify=_smem_store, interpret=_run_smem_store, family=FAMILY)
declare("fence_async_shared", "fence_async_shared()", "this thread's shared-memory writes, "
        "visible to TMA", traits=(BARRIER, ASYNC, SIDE_EFFECTS), verify=_no_operands,
        interpret=_run_nothing, family=FAMILY)
declare("fence_async_global", "fence_async_global()", "global memory this thread sees "
        "(after an acquire: other agents' writes), ordered before its later TMA loads",
        traits=(BARRIER, ASYNC, SIDE_EFFECTS), verify=_no_operands,
        interpret=_run_nothing, family=FAMILY)
declare("warpgroup_barrier", "warpgroup_barrier()", "the threads of this consumer warpgroup "
        "meet", traits=(BARRIER, SIDE_EFFECTS), verify=_no_operands,
        interpret=_run_nothing, family=FAMILY)
declare("bulk_wait", "bulk_wait() {read}", "that thread waits until its bulk groups have "
        "read shared memory (read) or completed", traits=(ASYNC, BARRIER, SIDE_EFFECTS),
        verify=_bulk_wait, attrs={"read": "True: wait for the reads only; False: completion"},
        interpret=_run_bulk_wait, family=FAMILY)
declare("cluster_sync", "cluster_sync()", "every thread of the cluster's CTAs meets",
        traits=(BARRIER, SIDE_EFFECTS), verify=_no_operands,
        interpret=_run_cluster_sync, family=FAMILY)
