"""Shared memory, mbarriers, TMA copies and the fences and barriers that order them."""
from __future__ import annotations

from commdsl.ir import BarrierType, SmemType, TensorType, TileType

from .operands import is_i32
from .registry import ASYNC, BARRIER, MEMORY, SHARED, SIDE_EFFECTS, declare, fail

FAMILY = "asynchronous"


def _smem_alloc(op):
    if not isinstance(op.result.type, SmemType) or op.attrs["offset"] % 1024:
        fail(op, "gives a shared-memory ring at a 1024-byte aligned offset")


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


def _smem_store(op):
    if len(op.operands) != 2 or not isinstance(op.operands[0].type, SmemType):
        fail(op, "takes a shared-memory buffer and a tile")
    buf, t = (v.type for v in op.operands)
    if not isinstance(t, TileType) or (t.dtype, t.shape) != (buf.dtype, buf.shape):
        fail(op, f"stores a {buf.dtype}{list(buf.shape)} tile, not {t}")


def _tma_store(op):
    tensor, buf, coords = op.operands[0], op.operands[1], op.operands[2:]
    if not isinstance(tensor.type, TensorType) or not isinstance(buf.type, SmemType):
        fail(op, "copies from a shared-memory buffer into a tensor")
    if tensor.type.dtype != buf.type.dtype:
        fail(op, "changes the dtype")
    if len(coords) != tensor.type.rank or not all(is_i32(v) for v in coords):
        fail(op, "takes one i32 coordinate per dimension")


def _bulk_wait(op):
    _no_operands(op)
    if not isinstance(op.attrs.get("read"), bool):
        fail(op, "waits for reads (read = True) or completion (read = False)")


declare("smem_alloc", "smem_alloc() {offset} : smem", "a ring of tiles in dynamic shared "
        "memory", traits=(SHARED,), verify=_smem_alloc,
        attrs={"offset": "its byte offset in dynamic shared memory, 1024-byte aligned"},
        family=FAMILY)
declare("mbarrier_alloc", "mbarrier_alloc() {offset, count, arrivals} : barriers",
        "`count` mbarriers, `arrivals` each", traits=(SHARED, BARRIER), verify=_mbarrier_alloc,
        attrs={"offset": "byte offset in shared memory, 8-byte aligned",
               "count": "the number of barriers", "arrivals": "arrivals that complete a phase"},
        family=FAMILY)
declare("mbarrier_init", "mbarrier_init(bars...) {cluster}", "one thread initializes them, "
        "then the CTA (or the cluster of `cluster` CTAs) syncs",
        traits=(BARRIER, SIDE_EFFECTS), verify=_mbarrier_init,
        attrs={"cluster": "CTAs per cluster that sync after the init"}, family=FAMILY)
declare("mbarrier_wait", "mbarrier_wait(bars, i, parity)", "wait for phase `parity` of "
        "barrier i to complete", traits=(BARRIER, ASYNC, SIDE_EFFECTS), verify=_mbarrier_wait,
        family=FAMILY)
declare("mbarrier_expect_tx", "mbarrier_expect_tx(bars, i) {bytes}", "arrive on barrier i, "
        "expecting `bytes` of TMA data", traits=(BARRIER, ASYNC, SIDE_EFFECTS),
        verify=_mbarrier_expect_tx, attrs={"bytes": "TMA bytes the phase waits for"},
        family=FAMILY)
declare("mbarrier_arrive", "mbarrier_arrive(bars, i) {per, cluster}", "arrive once per "
        "`per` (\"warp\": lane 0 of each warp) on barrier i of each of the cluster's CTAs",
        traits=(BARRIER, SIDE_EFFECTS), verify=_mbarrier_arrive,
        attrs={"per": "'thread' or 'warp'", "cluster": "CTAs of the cluster to arrive on"},
        family=FAMILY)
declare("tma_load", "tma_load(tensor, buf, stage, coords..., bars, i) {map, multicast}",
        "box of tensor map `map` into buf[stage], completing on barrier i; with multicast = "
        "C, this CTA's 1/C of the tile's rows, into buf[stage] and barrier i of all C CTAs",
        traits=(MEMORY, SHARED, ASYNC, SIDE_EFFECTS), verify=_tma_load,
        attrs={"map": "the index of its tensor map in kernel.attrs['tensor_maps']",
               "multicast": "CTAs of the cluster that receive the tile (1 or 2)"},
        family=FAMILY)
declare("tma_store", "tma_store(tensor, buf, coords...) {map}", "one thread per consumer "
        "warpgroup copies its boxes of buf to the tile at coords (clipped at the tensor's "
        "edges) and commits them as a bulk group",
        traits=(MEMORY, SHARED, ASYNC, SIDE_EFFECTS), verify=_tma_store,
        attrs={"map": "the index of its tensor map in kernel.attrs['tensor_maps']"},
        family=FAMILY)
declare("smem_store", "smem_store(buf, t)", "each consumer thread writes its wgmma fragment "
        "of t into buf, its warpgroup's 64 rows as 64 x 128-byte boxes, 128B-swizzled",
        traits=(SHARED, SIDE_EFFECTS), verify=_smem_store, family=FAMILY)
declare("fence_async_shared", "fence_async_shared()", "this thread's shared-memory writes, "
        "visible to TMA", traits=(BARRIER, ASYNC, SIDE_EFFECTS), verify=_no_operands,
        family=FAMILY)
declare("warpgroup_barrier", "warpgroup_barrier()", "the threads of this consumer warpgroup "
        "meet", traits=(BARRIER, SIDE_EFFECTS), verify=_no_operands, family=FAMILY)
declare("bulk_wait", "bulk_wait() {read}", "that thread waits until its bulk groups have "
        "read shared memory (read) or completed", traits=(ASYNC, BARRIER, SIDE_EFFECTS),
        verify=_bulk_wait, attrs={"read": "True: wait for the reads only; False: completion"},
        family=FAMILY)
declare("cluster_sync", "cluster_sync()", "every thread of the cluster's CTAs meets",
        traits=(BARRIER, SIDE_EFFECTS), verify=_no_operands, family=FAMILY)
