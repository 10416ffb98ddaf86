"""Turns a `pipeline(STAGES)` loop with `via tma` loads into a warp-specialized TMA pipeline.

    for k in .. pipeline(S) { ta = load a[..] via tma; tb = load b[..] via tma; ...mma(ta, tb.T) }
 -> S-stage rings of 1024-byte aligned, 128B-swizzled buffers in dynamic shared memory,
    `full` and `empty` mbarriers per stage, and a warp_specialize op:
      producer (warpgroup 0, one thread): for each iteration of the loop nest
          wait empty[s] (parity ^ 1), expect the stage's bytes on full[s], TMA each box
      consumers (warpgroups 1..C): the original loop nest, where the loads become
          wait full[s] (parity) before the mma, which reads buf[s], and one arrival per
          warp on empty[s] after it
    Both sides count iterations `it` across the whole nest (the persistent tile loop
    included): stage s = it % S, parity = (it / S) % 2, so the ring runs on across tiles.
    The loop's other global loads (the scales) are issued one iteration ahead and carried
    in registers (passes/prefetch.py), so their latency hides under the previous step's
    wgmmas rather than delaying the next step's issue.

The producer's copy of the nest keeps only what the TMA coordinates and loop bounds need.
Registers move to the consumers with setmaxnreg (producer 24, consumers the rest).
A tile wider than one 128-byte swizzled row (K past 64 bf16, or an MN-major B's N) is a run of
[rows x 128 B] column slabs in its buffer, one TMA box each (`slabs`), which the mma's
descriptors step through.

A `via tma` tile loaded in a loop around the pipelined one (attention's q, read by every
step's first product) is not in the ring: it gets a buffer of one stage and a full / empty
barrier pair of its own. The producer loads it where it was loaded, once per iteration of
that loop (counted as `rit`, whose parity the pair takes); the consumers wait for it there
and hand it back after the loop that holds the pipelined one (`Resident`).

A flag wait in the loop nest (an ACQUIRE op: `wait ready[m0 / BM] >= e` ahead of the tile's
loads, where another kernel or rank writes the operands) gates both sides: the producer
thread spins on it before the TMA copies it gates, then fences the async proxy
(fence.proxy.async.global), since TMA reads what generic stores of other agents wrote; in
each consumer warpgroup one thread acquires the flag and the warpgroup meets, which orders
its loads (the scales) after the writer's release without a barrier the producer would have
to join (and without 128 threads polling). A signal in the consumers meets only the consumer
warpgroups before its release store.

In a cluster of C CTAs (passes/schedule.py: neighbouring tiles of one tile row), a load whose
coordinates do not depend on the tile origin that differs between them is the same tile for
all C: each producer copies 1/C of its rows with `.multicast::cluster`, landing in every
CTA's buffer and completing on every CTA's `full` barrier. A stage is then free only when
the consumers of all C CTAs are done with it, so they arrive on every CTA's `empty` barrier;
the CTAs of a cluster meet after the barrier inits and again before they exit.
"""
from __future__ import annotations

from dataclasses import dataclass

from commdsl.diagnostics import CompileError
from commdsl.dtypes import dtype as dtype_info
from commdsl.ir import Block, Builder, KernelIR, Op, ScalarType, Value
from commdsl.ir import SWIZZLE_BYTES, BarrierType, SmemType, atom_aligned
from commdsl.ops import (ACQUIRE, ASYNC, BARRIER, MMA, RELEASE, SIDE_EFFECTS, WRITES,
                          has_trait)
from commdsl.passes.prefetch import add_carried, issue_ahead
from commdsl.spec import TMA_ALIGNMENT, TensorMapParam
from commdsl.target import Target

I32 = ScalarType("i32")
MAX_TMA_RANK = 5                 # cp.async.bulk.tensor.1d .. .5d
MAX_BOX = 256                    # elements of a TMA box along one dimension
ROW_ALIGN = 128                  # bytes: a TMA copy's shared-memory destination, unswizzled


def _path_to(kernel: KernelIR, target_op: Op) -> list[Op] | None:
    """The ops enclosing `target_op`, outermost first, ending with it."""
    def search(block: Block):
        for op in block.ops:
            if op is target_op:
                return [op]
            for b in op.blocks:
                found = search(b)
                if found:
                    return [op] + found
        return None
    return search(kernel.body)


def _const(b: Builder, n: int) -> Value:
    return b.value("const", [], I32, value=n)


def _stage_and_parity(b: Builder, it: Value, stages: int) -> tuple[Value, Value]:
    s = _const(b, stages)
    return (b.value("rem", [it, s], I32),
            b.value("rem", [b.value("div", [it, s], I32), _const(b, 2)], I32))


def _check_loads(loop: Op, target: Target, users) -> list[Op]:
    loads = [op for op in loop.blocks[0].ops if op.name == "load" and op.attrs.get("via")]
    if not loads:
        raise CompileError("a pipelined loop needs 'via tma' loads to overlap", loop.loc,
                           "load the operands with 'load t[...] via tma'")
    if not target.has_tma:
        raise CompileError(f"TMA ('via tma') needs sm_90 or newer, not {target.name}",
                           loads[0].loc, "compile with --target sm_90a")
    for op in loads:
        _check_tile(op, users)
    return loads


def _check_row(op: Op, users) -> None:
    """What TMA asks of a 1-D `via tma` tile (a row, read from shared memory into
    registers: DeepGEMM's scales of a transposed, TMA-aligned scale tensor)."""
    t = op.result.type
    esize = dtype_info(t.dtype).bytes
    if esize != 4:
        raise CompileError(f"a 'via tma' row of {t.dtype} is not supported yet; rows of 4-byte "
                           "elements (f32, i32) are", op.loc, "load it without 'via tma'")
    if t.shape[0] * esize % TMA_ALIGNMENT or t.shape[0] > MAX_BOX:
        raise CompileError(f"a 'via tma' row is a multiple of {TMA_ALIGNMENT} bytes and at "
                           f"most {MAX_BOX} elements, not {t.shape[0]} x {t.dtype}", op.loc,
                           f"load a multiple of {TMA_ALIGNMENT // esize} elements")
    if any(has_trait(u, MMA) and op.result in u.operands[:2]
           for u in users.get(op.result.id, [])):
        raise CompileError("a 'via tma' row is read into registers, not by an mma as its A or "
                           "B", op.loc, "load an mma operand as a 2-D tile")


def _check_tile(op: Op, users) -> None:
    """What TMA and wgmma ask of a `via tma` tile."""
    tensor, t = op.operands[0], op.result.type
    sizes = op.attrs.get("sizes", ())
    if (len(t.shape) == 1 and 2 <= tensor.type.rank <= MAX_TMA_RANK and sizes[-1] is not None
            and all(s is None for s in sizes[:-1])):
        _check_row(op, users)
        return
    if (not 2 <= tensor.type.rank <= MAX_TMA_RANK or len(t.shape) != 2
            or sizes[-1:] in ((), (None,))):
        raise CompileError(f"a 'via tma' load takes a 2-D tile of a tensor of rank 2 to "
                           f"{MAX_TMA_RANK}: a range of its last dimension, a range of one "
                           "other, and one index for each of the rest (or a row: the range "
                           "of the last dimension alone)", op.loc,
                           "write 'load x[r0 : +R, c0 : +C] via tma' or "
                           "'load q[r0 : +R, h, c0 : +C] via tma'")
    rows, cols = t.shape
    row_bytes = cols * dtype_info(t.dtype).bytes
    uses = users.get(op.result.id, [])
    if row_bytes % SWIZZLE_BYTES:
        raise CompileError(f"a 'via tma' tile row must be whole {SWIZZLE_BYTES}-byte "
                           f"swizzled rows, not {cols} x {t.dtype}", op.loc,
                           f"load a multiple of {SWIZZLE_BYTES // dtype_info(t.dtype).bytes}"
                           " columns")
    if rows % 8 or rows > 256:
        raise CompileError(f"a 'via tma' tile has a multiple of 8 rows up to 256, not "
                           f"{rows}", op.loc, "pick BM / BN among 16, 32, 64, 128, 256")
    uses = [w for u in uses for w in (users.get(u.result.id, []) if u.name == "columns"
                                      else [u])]
    if any(not has_trait(u, MMA) for u in uses):
        raise CompileError("a 'via tma' tile lands in shared memory, where only mma reads "
                           "it", op.loc, "load tiles used by other math without 'via tma'")


@dataclass
class Resident:
    """`via tma` tiles loaded in a loop around the pipelined one, kept in shared memory
    while it runs (e.g. attention's q, read by every step's product): one buffer each,
    loaded by the producer once per iteration of their loop (`level` in the nest) behind
    their own full / empty barrier pair."""
    loads: list[Op]
    level: int
    nbytes: int = 0
    full: Value | None = None
    empty: Value | None = None


def _resident_loads(path: list[Op], others: list[Op], users) -> Resident | None:
    """The `via tma` loads outside the pipelined loop: directly in one loop around it (so
    ahead of it: its products read them), read by those products only."""
    if not others:
        return None
    inner = {id(op) for op in path[-1].blocks[0].walk()}
    levels = set()
    for op in others:
        level = next((i for i, loop in enumerate(path[:-1]) if op in loop.blocks[0].ops), None)
        if level is None:
            raise CompileError("'via tma' loads belong directly in the pipelined loop, or in a "
                               "loop around it", op.loc,
                               "move the load into the pipeline(STAGES) loop or the tile loop")
        _check_tile(op, users)
        if len(op.result.type.shape) == 1:
            raise CompileError("a 'via tma' row kept across the pipelined loop is not "
                               "supported yet", op.loc,
                               "load it in the pipeline(STAGES) loop, or without 'via tma'")
        if any(id(u) not in inner for u in users.get(op.result.id, [])):
            raise CompileError("a tile kept in shared memory across the pipelined loop is "
                               "read by that loop's products only", op.loc,
                               "load it again for a product outside the loop")
        levels.add(level)
    if len(levels) > 1:
        raise CompileError("tiles kept in shared memory across the pipelined loop are loaded "
                           "in one loop around it; these are in two", others[-1].loc,
                           "load them in the same loop")
    return Resident(others, levels.pop())


def rows_dim(load: Op) -> int:
    """The tensor dimension a TMA tile's rows run along, counted from the end (-2: the one
    before the columns)."""
    sizes = load.attrs["sizes"]
    return next(d - len(sizes) for d in range(len(sizes) - 1) if sizes[d] is not None)


def slabs(t) -> int:
    """128-byte column slabs of a TMA tile: [rows x 128 B] each, one box each."""
    return t.shape[-1] * dtype_info(t.dtype).bytes // SWIZZLE_BYTES


def _multicast_loads(kernel: KernelIR, loads: list[Op], cluster: int) -> dict[int, int]:
    """{load result id: cluster} for the loads every CTA of a cluster makes alike: those
    whose coordinates do not depend on the tile origin that differs between them."""
    varying = kernel.attrs.get("cluster_varying")
    if cluster == 1 or varying is None:
        return {}
    producers = {r.id: op for op in kernel.walk() for r in op.results}

    def depends(v: Value, seen: set[int]) -> bool:
        if v.id == varying:
            return True
        op = producers.get(v.id)
        if op is None or id(op) in seen:
            return False
        seen.add(id(op))
        return any(depends(o, seen) for o in op.operands)

    shared = {}
    for op in loads:
        if (op.operands[0].type.rank != 2 or len(op.result.type.shape) != 2
                or slabs(op.result.type) > 1):
            continue                     # multicast splits the rows of one 2-D box only
        if any(depends(v, set()) for v in op.operands[1:]):
            continue
        rows = op.result.type.shape[0]
        if rows % (8 * cluster):
            raise CompileError(f"a tile of {rows} rows shared by a cluster of {cluster} splits "
                               f"into {cluster} copies of whole 8-row swizzle atoms only",
                               op.loc, f"make the rows a multiple of {8 * cluster}")
        shared[op.result.id] = cluster
    return shared


# Traits of ops a copy of a nested loop in the producer may not repeat.
IMPURE = (WRITES, SIDE_EFFECTS, ASYNC, BARRIER, MMA)


def _producer(path: list[Op], loads: list[Op], bufs: dict[int, Value], maps: dict[int, int],
              full: Value, empty: Value, stages: int, nbytes: int,
              multicast: dict[int, int], resident: Resident | None) -> list[Op]:
    """A copy of the loop nest that only issues the TMA copies: the ring's per step, the
    resident tiles' once per iteration of their loop (counted by `rit`, whose parity their
    barriers take)."""
    kept = resident.loads if resident else []
    needed = {v.id for op in loads + kept for v in op.operands[1:]}
    for loop in path:
        needed |= {v.id for v in loop.operands[:3]}
        needed |= {v.id for op in loop.blocks[0].ops if has_trait(op, ACQUIRE)
                   for v in op.operands[1:]}
    for loop in reversed(path):                       # innermost block first
        for op in reversed(loop.blocks[0].ops):
            if any(r.id in needed for r in op.results):
                inside = [o for b in op.blocks for o in b.walk()]
                if any(has_trait(o, t) for o in inside for t in IMPURE):
                    raise CompileError("TMA coordinates may not depend on a nested loop "
                                       "that accesses memory other than by loads", op.loc,
                                       "compute them from the loop variables")
                needed |= {v.id for o in [op, *inside] for v in o.operands}
    carried = {a.id for loop in path for a in loop.blocks[0].args[1:]}
    if needed & carried:
        raise CompileError("TMA coordinates may not depend on values carried across "
                           "iterations", path[-1].loc, "compute them from the loop variables")
    mapping: dict[int, Value] = {}

    def get(v: Value) -> Value:
        return mapping.get(v.id, v)

    top = Block()
    start = _const(Builder(top, path[0].loc), 0)

    def build(level: int, b: Builder, counts: list[Value]) -> list[Value]:
        loop = path[level]
        new = b.op("for", [get(v) for v in loop.operands[:3]] + counts, [I32] * len(counts),
                   pipeline=loop.attrs.get("pipeline"))
        iv = loop.blocks[0].args[0]
        names = ("it", "rit")[:len(counts)]
        body = Block(args=[Value(I32, iv.name)] + [Value(I32, n) for n in names])
        new.blocks.append(body)
        mapping[iv.id] = body.args[0]
        inner = Builder(body, loop.loc)
        counts = body.args[1:]
        for op in loop.blocks[0].ops:
            it = counts[0]
            if level + 1 < len(path) and op is path[level + 1]:
                counts = build(level + 1, inner, counts)
            elif op in kept:
                inner.loc = op.loc
                if op is kept[0]:
                    zero = _const(inner, 0)
                    parity = inner.value("rem", [counts[1], _const(inner, 2)], I32)
                    flipped = inner.value("sub", [_const(inner, 1), parity], I32)
                    inner.op("mbarrier_wait", [resident.empty, zero, flipped], [])
                    inner.op("mbarrier_expect_tx", [resident.full, zero], [],
                             bytes=resident.nbytes)
                inner.op("tma_load", [op.operands[0], bufs[op.result.id], zero,
                                      *map(get, op.operands[1:]), resident.full, zero], [],
                         map=maps[op.result.id], multicast=1)
            elif op in loads:
                if op is loads[0]:
                    inner.loc = op.loc
                    stage, parity = _stage_and_parity(inner, it, stages)
                    flipped = inner.value("sub", [_const(inner, 1), parity], I32)
                    inner.op("mbarrier_wait", [empty, stage, flipped], [])
                    inner.op("mbarrier_expect_tx", [full, stage], [], bytes=nbytes)
                inner.op("tma_load", [op.operands[0], bufs[op.result.id], stage,
                                      *map(get, op.operands[1:]), full, stage], [],
                         map=maps[op.result.id], multicast=multicast.get(op.result.id, 1))
            elif has_trait(op, ACQUIRE):
                inner.block.ops.append(Op(op.name, [get(v) for v in op.operands], [],
                                          {**op.attrs, "by": "thread"}, loc=op.loc))
                inner.op("fence_async_global", [], [])
            elif op.name != "yield" and any(r.id in needed for r in op.results):
                inner.block.ops.append(op.copy(mapping))
        counts = list(counts)
        if level + 1 == len(path):
            counts[0] = inner.value("add", [counts[0], _const(inner, 1)], I32)
        if resident and level == resident.level:
            counts[1] = inner.value("add", [counts[1], _const(inner, 1)], I32)
        inner.op("yield", counts, [])
        return new.results

    build(0, Builder(top, path[0].loc), [start] * (2 if resident else 1))
    return top.ops


def _consumer(path: list[Op], loads: list[Op], bufs: dict[int, Value], full: Value,
              empty: Value, stages: int, cluster: int, resident: Resident | None) -> list[Op]:
    """The loop nest itself, waiting for each stage before its mma and releasing it after
    (and for the resident tiles before the pipelined loop, releasing them after it)."""
    top = Block()
    it = _const(Builder(top, path[0].loc), 0)
    for level, loop in enumerate(path):
        arg, result = add_carried(loop, it)
        if level:
            path[level - 1].blocks[0].ops[-1].operands.append(result)    # the parent's yield
        it = arg
    if resident:
        _wait_for_resident(path, resident, _const(Builder(top, path[0].loc), 0))
    loop = path[-1]
    body = loop.blocks[0]
    new_ops: list[Op] = []
    b = Builder(Block(), loop.loc)
    stage, parity = _stage_and_parity(b, it, stages)
    new_ops += b.block.ops
    # The stage is waited for before the step's first read of it (an mma, or a row read into
    # registers where it was loaded) and handed back after its last (each warp arrives once
    # a step: the empty barrier counts warps).
    rows = [op for op in loads if len(op.result.type.shape) == 1]
    reads = [op for op in body.ops if has_trait(op, MMA) or op in rows]
    for op in body.ops:
        if op in loads and op not in rows:
            continue
        if op is reads[0]:
            b = Builder(Block(), op.loc)
            b.op("mbarrier_wait", [full, stage, parity], [])
            new_ops += b.block.ops
        if op in rows:
            new_ops.append(Op("smem_read", [bufs[op.result.id], stage], op.results, {},
                              loc=op.loc))
        elif has_trait(op, MMA):
            a, bt = op.operands[:2]          # a stays a tile when computed in registers
            op.operands = [bufs.get(a.id, a), bufs[bt.id], stage] + op.operands[2:]
            new_ops.append(op)
        if op is reads[-1]:
            b = Builder(Block(), op.loc)
            b.op("mbarrier_arrive", [empty, stage], [], per="warp", cluster=cluster)
            new_ops += b.block.ops
        if op in reads:
            continue
        if op.name == "yield":
            b = Builder(Block(), loop.loc)
            nxt = b.value("add", [it, _const(b, 1)], I32)
            new_ops += b.block.ops
            op.operands.append(nxt)
        new_ops.append(op)
    body.ops = new_ops
    top.ops.append(path[0])
    return top.ops


def _wait_for_resident(path: list[Op], resident: Resident, start: Value) -> None:
    """Counts the resident level's iterations (`rit`) down to it; there, waits for the
    resident tiles where they were loaded and hands them back after the loop that holds the
    pipelined one (whose products have all completed by then)."""
    rit = start
    for level, loop in enumerate(path[:resident.level + 1]):
        arg, result = add_carried(loop, rit, "rit")
        if level:
            path[level - 1].blocks[0].ops[-1].operands.append(result)
        rit = arg
    ops = path[resident.level].blocks[0].ops
    at = ops.index(resident.loads[0])
    b = Builder(Block(), resident.loads[0].loc)
    zero = _const(b, 0)
    parity = b.value("rem", [rit, _const(b, 2)], I32)
    b.op("mbarrier_wait", [resident.full, zero, parity], [])
    ops[at:at + 1] = b.block.ops
    for op in resident.loads[1:]:
        ops.remove(op)
    b = Builder(Block(), path[resident.level + 1].loc)
    b.op("mbarrier_arrive", [resident.empty, _const(b, 0)], [], per="warp", cluster=1)
    after = ops.index(path[resident.level + 1]) + 1
    ops[after:after] = b.block.ops
    nxt = Builder(Block(), path[resident.level].loc)
    value = nxt.value("add", [rit, _const(nxt, 1)], I32)
    ops[-1:-1] = nxt.block.ops
    ops[-1].operands.append(value)


def _views_of_rings(kernel: KernelIR, bufs: dict[int, Value]) -> None:
    """Columns of a TMA tile (passes/subtile.py) become the same columns of each stage of
    its ring: its slabs, the ring's pitch apart."""
    for op in kernel.walk():
        if op.name == "columns" and op.operands[0].id in bufs:
            ring = bufs[op.operands[0].id].type
            op.operands[0] = bufs[op.operands[0].id]
            op.result.type = SmemType(ring.dtype, ring.stages,
                                      (ring.shape[0], op.result.type.shape[1]),
                                      ring.stage_bytes)
            bufs[op.result.id] = op.result


def _without_program_barriers(consumers: Block) -> None:
    """The consumers' flag waits and signals, made to meet no thread outside them: the
    producer never reaches their CTA-wide barrier."""
    for op in consumers.walk():
        if has_trait(op, RELEASE):
            op.attrs["by"] = "consumers"
        elif has_trait(op, ACQUIRE):
            op.attrs["by"] = "warpgroup"


def _check_acquires(path: list[Op]) -> None:
    """A flag wait gates the TMA copies only where the producer's copy of the nest keeps
    it: directly in one of the loops around the pipelined loop, or in that loop."""
    kept = {id(op) for loop in path for op in loop.blocks[0].ops}
    for op in path[0].blocks[0].walk():
        if has_trait(op, ACQUIRE) and id(op) not in kept:
            raise CompileError("a wait inside other control flow of a pipelined loop nest is "
                               "not supported yet", op.loc,
                               "put the wait directly in the tile loop or the pipelined loop")


def run(kernel: KernelIR, target: Target) -> KernelIR:
    loops = [op for op in kernel.walk() if op.name == "for" and op.attrs.get("pipeline")]
    stray = [op for op in kernel.walk() if op.name == "load" and op.attrs.get("via")]
    if not loops:
        if stray:
            raise CompileError("'via tma' loads belong in a pipeline(STAGES) loop", stray[0].loc,
                               "add pipeline(STAGES) to the loop around them")
        return kernel
    if len(loops) > 1:
        raise CompileError("one pipelined loop per kernel is lowered so far", loops[1].loc,
                           "pipeline only the K loop")
    loop = loops[0]
    users: dict[int, list[Op]] = {}
    for op in kernel.walk():
        for v in op.operands:
            users.setdefault(v.id, []).append(op)
    loads = _check_loads(loop, target, users)
    path = _path_to(kernel, loop)
    if any(op.name != "for" for op in path):
        raise CompileError("a pipelined loop may sit only inside other loops", loop.loc,
                           "move it out of this construct")
    resident = _resident_loads(path, [op for op in stray if op not in loads], users)
    if (kernel.attrs.get("ctas_per_sm") or 1) > 1:
        raise CompileError("a TMA-pipelined kernel runs one CTA per SM: its warpgroups trade "
                           "registers with setmaxnreg, sized for the whole SM", loop.loc,
                           "drop ctas_per_sm(...) from this kernel")
    _check_acquires(path)
    stages = loop.attrs["pipeline"]
    groups = kernel.attrs.get("mma_warpgroups", 1)
    cluster = kernel.attrs.get("cluster", 1)
    multicast = _multicast_loads(kernel, loads, cluster)

    pre = Builder(Block(), loop.loc)
    offset, bufs, maps, stage_bytes = 0, {}, {}, 0
    tensor_maps: list[TensorMapParam] = list(kernel.attrs.get("tensor_maps", ()))
    # Rows after the tiles: a row needs only TMA's 128-byte alignment, so its ring is packed
    # where the swizzled tiles' 1024-byte atoms would leave gaps.
    for op in sorted(loads, key=lambda op: len(op.result.type.shape) == 1):
        t = op.result.type
        rows, cols = t.shape if len(t.shape) == 2 else (1, t.shape[0])
        stage_bytes += rows * cols * dtype_info(t.dtype).bytes
        ring = SmemType(t.dtype, stages, t.shape,
                        pitch=-(-cols * dtype_info(t.dtype).bytes // ROW_ALIGN) * ROW_ALIGN
                        if len(t.shape) == 1 else 0)
        bufs[op.result.id] = pre.value("smem_alloc", [], ring, offset=offset)
        offset += stages * ring.stage_bytes
        maps[op.result.id] = len(tensor_maps)
        share = multicast.get(op.result.id, 1)
        if len(t.shape) == 1:                # a row: one box, as it lies (no swizzle)
            tensor_maps.append(TensorMapParam(op.operands[0].name, (1, cols), 0))
            continue
        tensor_maps.append(TensorMapParam(op.operands[0].name,
                                          (rows // share, cols // slabs(t)),
                                          SWIZZLE_BYTES, rows_dim(op)))
    if resident is not None:
        if cluster > 1:
            raise CompileError("a tile kept in shared memory across the pipelined loop is not "
                               "supported yet in a cluster", resident.loads[0].loc,
                               "drop cluster = ..., or load the tile in the pipelined loop")
        offset = atom_aligned(offset)          # swizzled tiles again, after any rows
        for op in resident.loads:
            rows, cols = op.result.type.shape
            resident.nbytes += rows * cols * dtype_info(op.result.type.dtype).bytes
            one = SmemType(op.result.type.dtype, 1, (rows, cols))
            bufs[op.result.id] = pre.value("smem_alloc", [], one, offset=offset)
            offset += one.stage_bytes
            maps[op.result.id] = len(tensor_maps)
            tensor_maps.append(TensorMapParam(op.operands[0].name,
                                              (rows, cols // slabs(op.result.type)),
                                              SWIZZLE_BYTES, rows_dim(op)))
        resident.full = pre.value("mbarrier_alloc", [], BarrierType(1), offset=offset,
                                  count=1, arrivals=1)
        resident.empty = pre.value("mbarrier_alloc", [], BarrierType(1), offset=offset + 8,
                                   count=1, arrivals=4 * groups)
        offset += 16
    _views_of_rings(kernel, bufs)
    full = pre.value("mbarrier_alloc", [], BarrierType(stages), offset=offset, count=stages,
                     arrivals=1)
    empty = pre.value("mbarrier_alloc", [], BarrierType(stages), offset=offset + 8 * stages,
                      count=stages, arrivals=4 * groups * cluster)
    total = offset + 16 * stages
    if total > target.shared_bytes_per_block:
        kept = f" and {resident.nbytes} kept across the loop" if resident else ""
        raise CompileError(f"{stages} stages of {stage_bytes} bytes{kept} need {total} bytes "
                           f"of shared memory; a CTA can have {target.shared_bytes_per_block}",
                           loop.loc,
                           "use fewer stages or smaller tiles")
    pre.op("mbarrier_init", [full, empty] + ([resident.full, resident.empty] if resident
                                              else []), [], cluster=cluster)

    producer = Block(ops=_producer(path, loads, bufs, maps, full, empty, stages, stage_bytes,
                                   multicast, resident))
    index = kernel.body.ops.index(path[0])
    after = kernel.body.ops[index + 1:]
    first = issue_ahead(path[-1])            # the scales: a K step ahead, in registers
    if len(path) > 1:                        # else they open the consumers' block
        outer = path[-2].blocks[0].ops
        outer[outer.index(path[-1]):outer.index(path[-1])] = first
        first = []
    consumer = Block(ops=first + _consumer(path, loads, bufs, full, empty, stages, cluster,
                                           resident) + after)
    _without_program_barriers(consumer)
    ws = Op("warp_specialize", [], [], dict(producer_regs=target.producer_registers,
                                             consumer_regs=target.consumer_registers(groups),
                                             consumers=groups), [producer, consumer],
            loc=loop.loc)
    kernel.body.ops = kernel.body.ops[:index] + pre.block.ops + [ws]
    if cluster > 1:         # no CTA exits while its partner may still signal its barriers
        kernel.body.ops.append(Op("cluster_sync", [], [], {}, loc=loop.loc))
    kernel.attrs["tensor_maps"] = tuple(tensor_maps)
    kernel.shared_bytes = total
    return kernel
