"""Tile IR beyond elementwise math: loops, shared memory, barriers, TMA, warpgroup roles, MMA.

    for(lo, hi, step, inits...) ^(iv, carried...) { ...; yield(next...) } : carried types
        A counted loop (scf.for): the block's last op yields the carried values.
    tiles(lo0, hi0, lo1, hi1) {steps, raster, cluster} ^(m0, n0) { ... }
        Every tile origin of a persistent loop; passes/schedule.py lowers it to a `for`.
    nprogs() {axis}                     the number of CTAs along a grid axis
    mma(a, b[, acc]) {trans_b}          [M, K] x [N, K]^T tiles -> f32 [M, N]; with smem
    mma(bufA, bufB, stage[, acc])       operands after passes/pipeline.py (the stage's buffer)
    mma_promote(a, b, s, acc)           acc + mma(a, b) * s[:, None] (passes/mma.py fuses it;
                                        smem operands as for mma)
    mma_issue(bufA, bufB, stage)        mma_promote's first half (passes/overlap.py): starts
                                        the wgmmas; the partial product is in flight
    mma_retire(p, s, acc) {pending}     its second half: waits until at most `pending` later
                                        mma_issues are in flight, then acc + p * s[:, None]
    smem_alloc() {offset, ...}          a ring of tiles in dynamic shared memory
    mbarrier_alloc() {offset, count, arrivals}   `count` mbarriers, `arrivals` each
    mbarrier_init(bars...) {cluster}    one thread initializes them, then the CTA (or the
                                        cluster of `cluster` CTAs) syncs
    mbarrier_wait(bars, i, parity)      wait for phase `parity` of barrier i to complete
    mbarrier_expect_tx(bars, i) {bytes} arrive on barrier i, expecting `bytes` of TMA data
    mbarrier_arrive(bars, i) {per, cluster}   arrive once per `per` ("warp": lane 0 of each
                                        warp) on barrier i of each of the cluster's CTAs
    tma_load(tensor, buf, stage, coords..., bars, i) {map, multicast}   box of tensor map
                                        `map` into buf[stage], completing on barrier i; with
                                        multicast = C, this CTA's 1/C of the tile's rows,
                                        into buf[stage] and barrier i of all C CTAs
    cluster_sync()                      every thread of the cluster's CTAs meets
    smem_store(buf, t)                  each consumer thread writes its wgmma fragment of t
                                        into buf, its warpgroup's 64 rows as 64 x 128-byte
                                        boxes, 128B-swizzled
    fence_async_shared()                this thread's shared-memory writes, visible to TMA
    warpgroup_barrier()                 the threads of this consumer warpgroup meet
    tma_store(tensor, buf, coords...) {map}   one thread per consumer warpgroup copies its
                                        boxes of buf to the tile at coords (clipped at the
                                        tensor's edges) and commits them as a bulk group
    bulk_wait() {read}                  that thread waits until its bulk groups have read
                                        shared memory (read) or completed
    warp_specialize() {...} ^() {producer} ^() {consumers}   warpgroup 0 runs the first
                                        block on one thread; the others run the second

The verifier rules of these ops are in RULES, merged into commdsl.ir_verifier.
"""
from __future__ import annotations


from .ir import BarrierType, Op, ScalarType, SmemType, TensorType, TileType

MMA_OPS = ("mma", "mma_promote")
def _fail(op: Op, msg: str):
    from .ir_verifier import IRVerifyError     # that module merges RULES: import late
    raise IRVerifyError(f"'{op.name}' {msg}")


def _is_i32(v) -> bool:
    return isinstance(v.type, ScalarType) and v.type.dtype == "i32"


def _for(op: Op):
    if len(op.operands) < 3 or not all(_is_i32(v) for v in op.operands[:3]):
        _fail(op, "needs i32 lo, hi and step")
    inits = op.operands[3:]
    if len(op.blocks) != 1:
        _fail(op, "has one body block")
    body = op.blocks[0]
    if len(body.args) != 1 + len(inits) or not _is_i32(body.args[0]):
        _fail(op, "body takes the induction variable and one argument per carried value")
    if not body.ops or body.ops[-1].name != "yield":
        _fail(op, "body must end in yield")
    yielded = body.ops[-1].operands
    for kind, values in (("init", inits), ("block argument", body.args[1:]),
                         ("yielded value", yielded), ("result", op.results)):
        if [_shape_of(v.type) for v in values] != [_shape_of(v.type) for v in inits]:
            _fail(op, f"{kind} types {[str(v.type) for v in values]} differ from the inits'")


def _shape_of(t):
    """A type without its layout: carried tiles get theirs from passes one end at a time."""
    return (type(t).__name__, t.dtype, getattr(t, "shape", None))


def _yield(op: Op):
    if op.results:
        _fail(op, "has no results")


def _tiles(op: Op):
    ranks = len(op.attrs["steps"])
    if len(op.operands) != 2 * ranks or not all(_is_i32(v) for v in op.operands):
        _fail(op, "needs an i32 (lo, hi) pair per step")
    if len(op.blocks) != 1 or len(op.blocks[0].args) != ranks:
        _fail(op, "body takes one origin per range")
    if op.attrs["raster"] < 1:
        _fail(op, "raster must be positive")


def _mma(op: Op):
    a, b = op.operands[0].type, op.operands[1].type
    r = op.result.type
    if isinstance(a, SmemType):
        if not isinstance(b, SmemType) or not _is_i32(op.operands[2]):
            _fail(op, "takes two shared-memory rings and a stage index")
        rest = op.operands[3:]
        a_shape, b_shape = a.shape, b.shape
    else:
        if not isinstance(a, TileType) or not isinstance(b, TileType):
            _fail(op, "takes two tiles")
        rest = op.operands[2:]
        a_shape, b_shape = a.shape, (b.shape if op.attrs["trans_b"] else b.shape[::-1])
    if len(a_shape) != 2 or len(b_shape) != 2 or a_shape[1] != b_shape[1]:
        _fail(op, f"operand shapes {a_shape} and {b_shape} (as [N, K]) disagree on K")
    if not isinstance(r, TileType) or r.dtype != "f32" or r.shape != (a_shape[0], b_shape[0]):
        _fail(op, f"result must be f32 [{a_shape[0]}, {b_shape[0]}], not {r}")
    if rest and (len(rest) != 1 or _shape_of(rest[0].type) != _shape_of(r)):
        _fail(op, "accumulator must have the result's type")


def _mma_promote(op: Op):
    smem = isinstance(op.operands[0].type, SmemType)
    scale, acc = op.operands[-2:]
    if len(op.operands) != (5 if smem else 4):
        _fail(op, "takes a, b (or two rings and a stage), a row scale and an accumulator")
    _mma(Op("mma", op.operands[:-2], op.results, op.attrs))
    r = op.result.type
    if _shape_of(acc.type) != _shape_of(r):
        _fail(op, "accumulator must have the result's type")
    if not isinstance(scale.type, TileType) or scale.type.shape != r.shape[:1]:
        _fail(op, f"row scale must be a [{r.shape[0]}] tile, not {scale.type}")


def _mma_issue(op: Op):
    if len(op.operands) != 3 or not isinstance(op.operands[0].type, SmemType):
        _fail(op, "takes two shared-memory rings and a stage index")
    _mma(op)


def _mma_retire(op: Op):
    if len(op.operands) != 3:
        _fail(op, "takes an in-flight product, a row scale and an accumulator")
    partial, scale, acc = op.operands
    r = op.result.type
    if _shape_of(partial.type) != _shape_of(r) or _shape_of(acc.type) != _shape_of(r):
        _fail(op, "product and accumulator must have the result's type")
    if not isinstance(scale.type, TileType) or scale.type.shape != r.shape[:1]:
        _fail(op, f"row scale must be a [{r.shape[0]}] tile, not {scale.type}")
    if op.attrs["pending"] not in (0, 1):
        _fail(op, "leaves 0 or 1 later groups in flight")


def _nprogs(op: Op):
    if not _is_i32(op.result):
        _fail(op, "gives an i32")


def _smem_alloc(op: Op):
    if not isinstance(op.result.type, SmemType) or op.attrs["offset"] % 1024:
        _fail(op, "gives a shared-memory ring at a 1024-byte aligned offset")


def _mbarrier_alloc(op: Op):
    t = op.result.type
    if not isinstance(t, BarrierType) or t.count != op.attrs["count"] or op.attrs["offset"] % 8:
        _fail(op, "gives `count` barriers at an 8-byte aligned offset")
    if not 1 <= op.attrs["arrivals"] < 1 << 20:
        _fail(op, "arrival count must be in 1 .. 2^20 - 1")


def _barriers(op: Op, n_index: int = 1):
    if not isinstance(op.operands[0].type, BarrierType):
        _fail(op, "takes barriers first")
    if not all(_is_i32(v) for v in op.operands[1:1 + n_index]):
        _fail(op, "takes i32 barrier indices")


def _mbarrier_init(op: Op):
    if not op.operands or not all(isinstance(v.type, BarrierType) for v in op.operands):
        _fail(op, "takes barrier arrays")


def _mbarrier_wait(op: Op):
    _barriers(op, 2)


def _mbarrier_expect_tx(op: Op):
    _barriers(op)
    if op.attrs["bytes"] <= 0 or op.attrs["bytes"] >= 1 << 20:
        _fail(op, "expects 1 .. 2^20 - 1 bytes")


def _mbarrier_arrive(op: Op):
    _barriers(op)
    if op.attrs["per"] not in ("thread", "warp"):
        _fail(op, "arrives per 'thread' or per 'warp'")


def _tma_load(op: Op):
    tensor, buf, stage = op.operands[:3]
    coords, bars, index = op.operands[3:-2], op.operands[-2], op.operands[-1]
    if not isinstance(tensor.type, TensorType) or not isinstance(buf.type, SmemType):
        _fail(op, "copies from a tensor into a shared-memory ring")
    if tensor.type.dtype != buf.type.dtype:
        _fail(op, "changes the dtype")
    if len(coords) != tensor.type.rank or not all(_is_i32(v) for v in [stage, *coords, index]):
        _fail(op, "takes an i32 stage, one i32 coordinate per dimension and a barrier index")
    if not isinstance(bars.type, BarrierType):
        _fail(op, "completes on a barrier")
    if op.attrs.get("multicast", 1) not in (1, 2):
        _fail(op, "multicasts to 1 or 2 CTAs")


def _no_operands(op: Op):
    if op.operands or op.results or op.blocks:
        _fail(op, "takes nothing")


def _smem_store(op: Op):
    if len(op.operands) != 2 or not isinstance(op.operands[0].type, SmemType):
        _fail(op, "takes a shared-memory buffer and a tile")
    buf, t = (v.type for v in op.operands)
    if not isinstance(t, TileType) or (t.dtype, t.shape) != (buf.dtype, buf.shape):
        _fail(op, f"stores a {buf.dtype}{list(buf.shape)} tile, not {t}")


def _tma_store(op: Op):
    tensor, buf, coords = op.operands[0], op.operands[1], op.operands[2:]
    if not isinstance(tensor.type, TensorType) or not isinstance(buf.type, SmemType):
        _fail(op, "copies from a shared-memory buffer into a tensor")
    if tensor.type.dtype != buf.type.dtype:
        _fail(op, "changes the dtype")
    if len(coords) != tensor.type.rank or not all(_is_i32(v) for v in coords):
        _fail(op, "takes one i32 coordinate per dimension")


def _bulk_wait(op: Op):
    _no_operands(op)
    if not isinstance(op.attrs.get("read"), bool):
        _fail(op, "waits for reads (read = True) or completion (read = False)")


def _warp_specialize(op: Op):
    if len(op.blocks) != 2 or op.results:
        _fail(op, "has a producer and a consumer block and no results")
    regs = (op.attrs["producer_regs"], op.attrs["consumer_regs"])
    if any(r % 8 or not 24 <= r <= 256 for r in regs):
        _fail(op, f"register counts {regs} must be multiples of 8 in 24 .. 256 (setmaxnreg)")
    if 128 * (regs[0] + op.attrs["consumers"] * regs[1]) > 65536:
        _fail(op, f"register counts {regs} exceed the 64K registers of an SM")


RULES = {
    "for": _for, "yield": _yield, "tiles": _tiles, "mma": _mma, "mma_promote": _mma_promote,
    "mma_issue": _mma_issue, "mma_retire": _mma_retire, "nprogs": _nprogs,
    "smem_alloc": _smem_alloc, "mbarrier_alloc": _mbarrier_alloc,
    "mbarrier_init": _mbarrier_init, "mbarrier_wait": _mbarrier_wait,
    "mbarrier_expect_tx": _mbarrier_expect_tx, "mbarrier_arrive": _mbarrier_arrive,
    "tma_load": _tma_load, "warp_specialize": _warp_specialize, "cluster_sync": _no_operands,
    "smem_store": _smem_store, "fence_async_shared": _no_operands,
    "warpgroup_barrier": _no_operands, "tma_store": _tma_store, "bulk_wait": _bulk_wait,
}
