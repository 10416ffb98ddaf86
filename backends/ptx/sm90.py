"""Emitters for loops and Hopper's asynchronous machinery: shared-memory rings, mbarriers,
TMA copies, warpgroup roles (setmaxnreg) and wgmma, as LLVM IR around one-instruction asm.

Each `emit_<op>(cg, op)` registers itself in emitters.EMITTERS: loops and shared-memory
offsets for every target, the rest for sm_90a only. Loops are LLVM control flow with a phi
per carried register; every PTX instruction LLVM has no intrinsic for is a single inline-asm
instruction (predicate plumbing aside). Shared-memory addresses are 32-bit `.shared`
addresses: the dynamic shared memory's base plus an offset that passes/pipeline.py chose.
"""
from __future__ import annotations

from dataclasses import dataclass

from llvmlite import ir

from commdsl.diagnostics import CompileError
from commdsl.dtypes import dtype as dtype_info
from commdsl.fragments import WARPGROUP_ROWS, waves
from commdsl.ir import Op, TileType
from commdsl.ir import SWIZZLE_ATOM, SWIZZLE_BYTES, WGMMA_K_BYTES

from .asm import F32, I32, I64
from .emitters import emits

TENSOR_MAP = ir.PointerType(ir.ArrayType(ir.IntType(8), 128))   # byval CUtensorMap
VOID = ir.VoidType()
# Shared-memory matrix descriptor of a K-major, 128B-swizzled tile (PTX ISA "matrix
# descriptor"): LBO 16 B (encoded 1), SBO 1024 B between 8-row groups (64), layout 1 = 128B.
DESC_128B = (1 << 16) | (64 << 32) | (1 << 62)
WAIT_HINT_NS = 0x989680           # try_wait's suspend-time hint, as CUTLASS and DeepGEMM use
# wgmma's names of operand types that differ from commdsl's
WGMMA_TYPE = {"f32": "tf32", "i8": "s8"}
HOPPER = ("sm_90a",)              # wgmma, setmaxnreg, TMA, mbarrier tx counts, clusters


def _asm(cg, text: str, constraints: str, args=(), ret=VOID):
    fn = ir.FunctionType(ret, [a.type for a in args])
    return cg.b.call(ir.InlineAsm(fn, text, constraints, side_effect=True), list(args))


def _through(cg, text: str, values: list, reg=F32, constraint: str = "=f") -> list:
    """One instruction that takes `values` (f32, or `reg` under `constraint`) through
    unchanged: LLVM may not move their computation past it, nor their uses before it
    (CUTLASS's warpgroup_fence_operand)."""
    if not values:
        _asm(cg, text, "")
        return []
    n = len(values)
    out = _asm(cg, text, ",".join([constraint] * n + [str(i) for i in range(n)]), values,
               ir.LiteralStructType([reg] * n))
    return [cg.b.extract_value(out, i) for i in range(n)]


@dataclass
class Barriers:
    address: object       # i32 shared address of barrier 0
    count: int
    arrivals: int

    def at(self, cg, index):
        return cg.b.add(self.address, cg.b.mul(index, cg.i32(8)))


def _dynamic_smem(cg):
    gv = cg.module.globals.get("dsmem")
    if gv is None:
        gv = ir.GlobalVariable(cg.module, ir.ArrayType(ir.IntType(8), 0), "dsmem", addrspace=3)
        gv.linkage, gv.align = "external", SWIZZLE_ATOM
    return cg.b.ptrtoint(gv, I32)


# ---- structure ----------------------------------------------------------------------------

def _loop_registers(cg, value, dtype: str) -> list:
    """The registers a carried value rides the loop in: a tile's narrow elements packed 32
    bits to a register, as loads return them (a register per bf16 element would double a
    prefetched tile's registers, passes/prefetch.py), a scalar as itself."""
    return cg.words(value.regs, dtype) if hasattr(value, "regs") else [value]


def _carried(cg, init, dtype: str, phis: list):
    """The body's view of a carried value, from its phis."""
    if not hasattr(init, "regs"):
        return phis[0]
    if len(phis) != len(init.regs):
        # Packed words pass an empty asm first: seeing only their halves used, LLVM would
        # split each phi back into narrow ones, which ptxas gives a register each.
        one = len(phis) == 1                      # LLVM wants a lone output unwrapped
        fn = ir.FunctionType(I32 if one else ir.LiteralStructType([I32] * len(phis)),
                             [I32] * len(phis))
        tied = ",".join(["=r"] * len(phis) + [str(i) for i in range(len(phis))])
        out = cg.b.call(ir.InlineAsm(fn, "", tied), phis)
        phis = [out] if one else [cg.b.extract_value(out, i) for i in range(len(phis))]
    return type(init)(cg.elements(phis, dtype, len(init.regs)), init.dims, init.layout)


@emits("for")
def emit_for(cg, op: Op):
    """while (iv < hi) { body; iv += step } with one phi per carried scalar or tile register."""
    b = cg.b
    lo, hi, step = (cg.vals[v.id] for v in op.operands[:3])
    inits = [cg.vals[v.id] for v in op.operands[3:]]
    dtypes = [v.type.dtype for v in op.operands[3:]]
    entering = [_loop_registers(cg, init, dtype) for init, dtype in zip(inits, dtypes)]
    entry = b.block
    header = cg.fn.append_basic_block("loop")
    body = cg.fn.append_basic_block("body")
    done = cg.fn.append_basic_block("done")
    b.branch(header)
    b.position_at_end(header)
    iv = b.phi(I32, name="iv")
    iv.add_incoming(lo, entry)
    phis = []
    for regs in entering:
        phis.append([b.phi(r.type) for r in regs])
        for p, r in zip(phis[-1], regs):
            p.add_incoming(r, entry)
    carried = [_carried(cg, init, dtype, ps) for init, dtype, ps in zip(inits, dtypes, phis)]
    b.cbranch(b.icmp_signed("<", iv, hi), body, done)
    b.position_at_end(body)
    block = op.blocks[0]
    cg.vals[block.args[0].id] = iv
    for arg, value in zip(block.args[1:], carried):
        cg.vals[arg.id] = value
    yielded = [_loop_registers(cg, value, dtype)
               for value, dtype in zip(cg.emit_block(block), dtypes)]
    latch = b.block
    iv.add_incoming(b.add(iv, step), latch)
    for ps, regs in zip(phis, yielded):
        for p, r in zip(ps, regs):
            p.add_incoming(r, latch)
    b.branch(header)
    b.position_at_end(done)
    for result, value in zip(op.results, carried):
        cg.vals[result.id] = value


@emits("nprogs")
def emit_nprogs(cg, op: Op):
    cg.vals[op.result.id] = cg.special("nctaid." + "xyz"[op.attrs["axis"]])


@emits("warp_specialize", targets=HOPPER)
def emit_warp_specialize(cg, op: Op):
    """Warpgroup 0 gives registers back and one of its threads runs the producer block; the
    other warpgroups take the registers and run the consumer block."""
    b = cg.b
    warpgroup = b.lshr(cg._tid, cg.i32(7))
    producer = cg.fn.append_basic_block("producer")
    consumer = cg.fn.append_basic_block("consumer")
    joined = cg.fn.append_basic_block("joined")
    b.cbranch(b.icmp_unsigned("==", warpgroup, cg.i32(0)), producer, consumer)
    b.position_at_end(producer)
    _asm(cg, f"setmaxnreg.dec.sync.aligned.u32 {op.attrs['producer_regs']};", "")
    with b.if_then(b.icmp_unsigned("==", cg._tid, cg.i32(0))):
        for tmap in cg.tensor_maps:
            _asm(cg, "prefetch.tensormap [$0];", "l", [b.ptrtoint(tmap, I64)])
        cg.emit_block(op.blocks[0])
    b.branch(joined)
    b.position_at_end(consumer)
    _asm(cg, f"setmaxnreg.inc.sync.aligned.u32 {op.attrs['consumer_regs']};", "")
    # tid / 128 read from lane 0 (CUTLASS's canonical_warp_group_idx): ptxas then knows it is
    # one value per warp and keeps what derives from it, the wgmma descriptors of a
    # warpgroup's rows first, in uniform registers instead of moving them there every step
    first = _asm(cg, "shfl.sync.idx.b32 $0, $1, 0, 31, -1;", "=r,r",
                 [b.lshr(cg._tid, cg.i32(7))], I32)
    cg.consumer_warpgroup = b.sub(first, cg.i32(1))
    cg.emit_block(op.blocks[1])
    cg.consumer_warpgroup = None
    b.branch(joined)
    b.position_at_end(joined)


# ---- shared memory and barriers -------------------------------------------------------------

@emits("smem_alloc")
def emit_smem_alloc(cg, op: Op):
    cg.vals[op.result.id] = cg.b.add(_dynamic_smem(cg), cg.i32(op.attrs["offset"]))


@emits("columns")
def emit_columns(cg, op: Op):
    """A ring's tile lies in [rows x 128 B] column slabs (passes/pipeline.py): columns from
    c0, a whole slab's worth, start c0 x rows elements in."""
    ring = op.operands[0].type
    step = cg.i32(ring.shape[0] * dtype_info(ring.dtype).bytes)
    cg.vals[op.result.id] = cg.b.add(cg.vals[op.operands[0].id],
                                     cg.b.mul(cg.vals[op.operands[1].id], step))


@emits("mbarrier_alloc", targets=HOPPER)
def emit_mbarrier_alloc(cg, op: Op):
    address = cg.b.add(_dynamic_smem(cg), cg.i32(op.attrs["offset"]))
    cg.vals[op.result.id] = Barriers(address, op.attrs["count"], op.attrs["arrivals"])


@emits("mbarrier_init", targets=HOPPER)
def emit_mbarrier_init(cg, op: Op):
    """Thread 0 initializes every barrier and fences the inits; then the CTA syncs."""
    b = cg.b
    with b.if_then(b.icmp_unsigned("==", cg._tid, cg.i32(0))):
        for v in op.operands:
            bars = cg.vals[v.id]
            for i in range(bars.count):
                _asm(cg, f"mbarrier.init.shared::cta.b64 [$0], {bars.arrivals};", "r",
                     [bars.at(cg, cg.i32(i))])
        _asm(cg, "fence.mbarrier_init.release.cluster;", "")
    if op.attrs.get("cluster", 1) > 1:        # the partner's TMA may signal these barriers
        _cluster_barrier(cg)
    else:
        _asm(cg, "bar.sync 0;", "")


def _cluster_barrier(cg):
    _asm(cg, "barrier.cluster.arrive.release;", "")
    _asm(cg, "barrier.cluster.wait.acquire;", "")


@emits("cluster_sync", targets=HOPPER)
def emit_cluster_sync(cg, op: Op):
    _cluster_barrier(cg)


@emits("mbarrier_wait", targets=HOPPER)
def emit_mbarrier_wait(cg, op: Op):
    """Spins on try_wait (which suspends the thread up to the hint) until the phase with
    the given parity has completed."""
    b = cg.b
    bars, index, parity = (cg.vals[v.id] for v in op.operands)
    address = bars.at(cg, index)
    spin = cg.fn.append_basic_block("wait")
    done = cg.fn.append_basic_block("waited")
    b.branch(spin)
    b.position_at_end(spin)
    ready = _asm(cg, "{ .reg .pred p; "
                 f"mbarrier.try_wait.parity.shared::cta.b64 p, [$1], $2, {WAIT_HINT_NS}; "
                 "selp.u32 $0, 1, 0, p; }", "=r,r,r", [address, parity], I32)
    b.cbranch(b.icmp_unsigned("!=", ready, cg.i32(0)), done, spin)
    b.position_at_end(done)


@emits("mbarrier_expect_tx", targets=HOPPER)
def emit_mbarrier_expect_tx(cg, op: Op):
    bars, index = (cg.vals[v.id] for v in op.operands)
    _asm(cg, f"mbarrier.arrive.expect_tx.shared::cta.b64 _, [$0], {op.attrs['bytes']};", "r",
         [bars.at(cg, index)])


@emits("mbarrier_arrive", targets=HOPPER)
def emit_mbarrier_arrive(cg, op: Op):
    b = cg.b
    bars, index = (cg.vals[v.id] for v in op.operands)
    address = bars.at(cg, index)
    cluster = op.attrs.get("cluster", 1)

    def arrive():
        if cluster == 1:
            _asm(cg, "mbarrier.arrive.shared::cta.b64 _, [$0];", "r", [address])
            return
        for rank in range(cluster):          # the same barrier in every CTA of the cluster
            remote = _asm(cg, f"mapa.shared::cluster.u32 $0, $1, {rank};", "=r,r", [address],
                          I32)
            # CUTLASS's ClusterBarrier::arrive form; `.release.cluster` made every arrive
            # wait for this thread's loads in flight (the next step's scales): 3x slower.
            _asm(cg, "mbarrier.arrive.shared::cluster.b64 _, [$0];", "r", [remote])
    if op.attrs["per"] == "warp":
        with b.if_then(b.icmp_unsigned("==", cg.lane, cg.i32(0))):
            arrive()
    else:
        arrive()


@emits("tma_load", targets=HOPPER)
def emit_tma_load(cg, op: Op):
    """The op's tile into buf[stage], completing on the barrier: one box of its tensor map
    per 128-byte column slab (passes/pipeline.py), each slab [rows x 128 B] after the last."""
    b = cg.b
    ring = op.operands[1].type
    buf, stage = cg.vals[op.operands[1].id], cg.vals[op.operands[2].id]
    coords = [cg.vals[v.id] for v in op.operands[3:-2]]
    bars, index = cg.vals[op.operands[-2].id], cg.vals[op.operands[-1].id]
    dst = b.add(buf, b.mul(stage, cg.i32(ring.stage_bytes)))
    tmap = b.ptrtoint(cg.tensor_maps[op.attrs["map"]], I64)
    inner_first = ", ".join(f"${i + 2}" for i in range(len(coords)))
    n = len(coords)
    share = op.attrs.get("multicast", 1)

    def copy(to, at):                           # one box into this CTA's shared memory
        _asm(cg, f"cp.async.bulk.tensor.{n}d.shared::cluster.global.tile."
             f"mbarrier::complete_tx::bytes [$0], [$1, {{{inner_first}}}], [${n + 2}];",
             ",".join(["r", "l"] + ["r"] * n + ["r"]), [to, tmap, *reversed(at),
                                                        bars.at(cg, index)])
    if len(ring.shape) == 1:                    # a row: one box, unswizzled
        copy(dst, coords)
        return
    if share == 1:
        rows = ring.shape[0]
        slab_cols = SWIZZLE_BYTES // dtype_info(ring.dtype).bytes
        for slab in range(ring.shape[1] // slab_cols):
            copy(b.add(dst, cg.i32(slab * rows * SWIZZLE_BYTES)),
                 [*coords[:-1], b.add(coords[-1], cg.i32(slab * slab_cols))])
        return
    # This CTA's 1/share of the rows, at the same offset in every CTA of the cluster.
    rows, cols = ring.shape
    part_rows = rows // share
    rank = cg.special("cluster.ctarank")
    row = cg.k.attrs["tensor_maps"][op.attrs["map"]].rows_dim
    coords[row] = b.add(coords[row], b.mul(rank, cg.i32(part_rows)))
    part_bytes = part_rows * cols * dtype_info(ring.dtype).bytes
    dst = b.add(dst, b.mul(rank, cg.i32(part_bytes)))
    mask = ir.Constant(ir.IntType(16), (1 << share) - 1)
    _asm(cg, f"cp.async.bulk.tensor.{n}d.shared::cluster.global.tile."
         f"mbarrier::complete_tx::bytes.multicast::cluster [$0], [$1, {{{inner_first}}}], "
         f"[${n + 2}], ${n + 3};",
         ",".join(["r", "l"] + ["r"] * n + ["r", "h"]),
         [dst, tmap, *reversed(coords), bars.at(cg, index), mask])


@emits("smem_read", targets=HOPPER)
def emit_smem_read(cg, op: Op):
    """Each held element of a row from its place in the stage: one ld.shared each, after the
    stage's barrier wait (inline asm, so LLVM keeps it there)."""
    b = cg.b
    ring, t = op.operands[0].type, op.result.type
    base = _stage_base(cg, cg.vals[op.operands[0].id], ring, cg.vals[op.operands[1].id])
    dim = t.layout.dims(t.shape)[0]
    regs = []
    for slot in cg.held_slots(t):
        at, _ = cg.coord(dim, *slot[0])
        word = _asm(cg, "ld.shared.b32 $0, [$1];", "=r,r",
                    [b.add(base, b.mul(at, cg.i32(dtype_info(ring.dtype).bytes)))], I32)
        regs.append(b.bitcast(word, F32) if ring.dtype == "f32" else word)
    cg.vals[op.result.id] = cg.new_tile(t, regs)


# ---- warpgroup MMA -------------------------------------------------------------------------

def _consumer_warpgroup(cg):
    if cg.consumer_warpgroup is not None:        # inside warp_specialize: the uniform one
        return cg.consumer_warpgroup
    return cg.b.sub(cg.b.lshr(cg._tid, cg.i32(7)), cg.i32(1))


def fragment_coord(cg, m, rep: int, elem: int):
    """Row or column of one accumulator slot (commdsl/fragments.py) in this thread."""
    b = cg.b
    if m.axis == 1:                              # 8 q + 2 (lane % 4) + e
        quad = b.mul(b.and_(cg.lane, cg.i32(3)), cg.i32(2))
        return b.add(quad, cg.i32(8 * rep + elem))
    warp = b.and_(cg.warp, cg.i32(3))            # 64 (c W + v) + 16 w + lane / 4 + 8 h
    base = b.add(b.mul(warp, cg.i32(16)), b.lshr(cg.lane, cg.i32(2)))
    group = b.mul(_consumer_warpgroup(cg), cg.i32(WARPGROUP_ROWS * waves(m)))
    wave, h = divmod(rep, 2)
    return b.add(b.add(base, group), cg.i32(WARPGROUP_ROWS * wave + 8 * h))


def _descriptor(cg, address, high: int = DESC_128B):
    b = cg.b
    start = b.lshr(b.and_(b.zext(address, I64), ir.Constant(I64, 0x3FFFF)), ir.Constant(I64, 4))
    return b.or_(start, ir.Constant(I64, high))


def _k_major_offset(ring):
    """K step kk's descriptor offset (16-byte units) in a K-major tile: 32 bytes of K along a
    128-byte swizzled row, then on to the next slab of [rows x 128 B] (a K wider than one
    row lies in slabs, passes/pipeline.py)."""
    per_slab = SWIZZLE_BYTES // WGMMA_K_BYTES
    slab = ring.shape[0] * SWIZZLE_BYTES // 16
    return lambda kk: kk // per_slab * slab + kk % per_slab * WGMMA_K_BYTES // 16


def _mn_major_descriptor(slab_bytes: int) -> int:
    """The high bits of an MN-major, 128B-swizzled tile's descriptor: 64-column slabs
    `slab_bytes` apart (LBO), 8-row (K) groups 1024 bytes apart (SBO)."""
    return ((slab_bytes >> 4) << 16) | (64 << 32) | (1 << 62)


def _fragment_order(n: int) -> list[int]:
    """wgmma register i = 4 q + 2 h + e -> its slot in the tile's Blocked-like order (row
    slot h, then column q, then e)."""
    return [(h * (n // 8) + q) * 2 + e for q in range(n // 8) for h in range(2)
            for e in range(2)]


def _stage_base(cg, buf, ring, stage):
    """The address of a step's stage of a ring; a ring of one stage (a tile kept across the
    pipelined loop) is at its start whatever the step."""
    if ring.stages == 1:
        return buf
    return cg.b.add(buf, cg.b.mul(stage, cg.i32(ring.stage_bytes)))


class _Wgmma:
    """The wgmmas of one mma op in this consumer warpgroup: one m64 block of rows per wave
    (commdsl/fragments.py), `waves` of them."""

    def __init__(self, cg, op: Op):
        b = self.b = cg.b
        self.cg, self.op = cg, op
        bufs = [cg.vals[v.id] for v in op.operands[:2]]
        rings = [v.type for v in op.operands[:2]]
        stage = cg.vals[op.operands[2].id]
        self.bn = op.result.type.shape[1]
        self.waves = op.attrs.get("waves", 1)
        self.a_tile = bufs[0] if isinstance(rings[0], TileType) else None
        if self.a_tile is None:
            rows = WARPGROUP_ROWS * self.waves * SWIZZLE_BYTES
            a_base = b.add(_stage_base(cg, bufs[0], rings[0], stage),
                           b.mul(_consumer_warpgroup(cg), cg.i32(rows)))
            self.a_desc = _descriptor(cg, a_base)
        b_base = _stage_base(cg, bufs[1], rings[1], stage)
        # K-major B: a wgmma's 32 bytes of K lie along each row (+2 in 16-byte units). An
        # MN-major B ([K, N] slabs, wgmma's transposed form) steps 16 K rows of 128 bytes.
        self.mn_major_b = not op.attrs["trans_b"]
        if self.mn_major_b:
            k_rows = rings[1].shape[0]
            self.b_desc = _descriptor(cg, b_base, _mn_major_descriptor(k_rows * SWIZZLE_BYTES))
            self.b_offset = lambda kk: 16 * SWIZZLE_BYTES // 16 * kk
        else:
            self.b_desc = _descriptor(cg, b_base)
            self.b_offset = _k_major_offset(rings[1])
        if self.a_tile is None:
            self.a_offset = _k_major_offset(rings[0])
        self.nregs = self.bn // 2
        self.order = _fragment_order(self.bn)
        self.integer = op.result.type.dtype == "i32"
        types = ".".join(WGMMA_TYPE.get(r.dtype, r.dtype) for r in rings)
        self.instr = (f"wgmma.mma_async.sync.aligned.{op.attrs['instr']}."
                      f"{'s32' if self.integer else 'f32'}.{types}")
        self.acc_reg, self.acc_constraint = (I32, "=r") if self.integer else (F32, "=f")
        # After scale-d: the operands' scales (+1), which integer types do not take, then
        # for 16-bit types the majors: A K-major (the register form has no A major), B either.
        trans_a = "" if self.a_tile is not None else " 0,"
        majors = (f",{trans_a} {int(self.mn_major_b)}"
                  if dtype_info(rings[1].dtype).bytes == 2 else "")
        self.immediates = majors if self.integer else ", 1, 1" + majors

    def _a_descriptor(self, kk: int, wave: int):
        """K step kk's A descriptor for a wave's rows. A tile kept across the pipelined loop
        has the same descriptors every step: computed where used (one add that LLVM may not
        hoist), as hoisted they would hold two registers per K step through the loop (72 for
        MLA's 576-wide q) and spill."""
        rows = wave * WARPGROUP_ROWS * SWIZZLE_BYTES // 16
        offset = ir.Constant(I64, self.a_offset(kk) + rows)
        if self.op.operands[0].type.stages > 1:
            return self.b.add(self.a_desc, offset)
        return _asm(self.cg, "add.s64 $0, $1, $2;", "=l,l,l", [self.a_desc, offset], I64)

    def slots(self, wave: int) -> list[int]:
        """The tile slots of a wave's wgmma registers, in wgmma order."""
        return [wave * self.nregs + slot for slot in self.order]

    def issue(self, steps: range, regs: list | None = None, wave: int = 0,
              reuse: list | None = None) -> list:
        """One wgmma per K step of 32 bytes (32 FP8 or int8, 16 bf16/f16, 8 tf32 elements)
        along the swizzled K rows for a wave's rows (the first zeroes the accumulator unless
        `regs`, in wgmma order, are given), then a commit. `reuse`: a finished partial sum
        whose registers the zeroing wgmma takes over; tied to them, ptxas gives both the same
        registers and issues this one after the FFMAs that read them, instead of keeping
        two partial sums live to overlap them."""
        b, cg, n = self.b, self.cg, self.nregs
        acc_type = ir.LiteralStructType([self.acc_reg] * n)
        out_kind = [self.acc_constraint] * n
        outputs = "{" + ", ".join(f"${i}" for i in range(n)) + "}"
        for kk in steps:
            a_ops = (self._a_registers(kk, wave) if self.a_tile is not None
                     else [self._a_descriptor(kk, wave)])
            a_kind = ["r"] * len(a_ops) if self.a_tile is not None else ["l"]
            descs = a_ops + [b.add(self.b_desc, ir.Constant(I64, self.b_offset(kk)))]
            tied = regs if regs is not None else reuse
            first = n if tied is None else 2 * n
            a_text = ", ".join(f"${first + i}" for i in range(len(a_ops)))
            if self.a_tile is not None:
                a_text = "{" + a_text + "}"
            b_text = f"${first + len(a_ops)}"
            text = (f"{self.instr} {outputs}, {a_text}, {b_text}, {int(regs is not None)}"
                    f"{self.immediates};")
            if tied is None:
                res = _asm(cg, text, ",".join(out_kind + a_kind + ["l"]), descs, acc_type)
            else:
                res = _asm(cg, text,
                           ",".join(out_kind + [str(i) for i in range(n)] + a_kind + ["l"]),
                           tied + descs, acc_type)
            regs = [b.extract_value(res, i) for i in range(n)]
        _asm(cg, "wgmma.commit_group.sync.aligned;", "")
        return regs

    def _a_registers(self, kk: int, wave: int) -> list:
        """The four .b32 registers of A for K step kk of a wave: the A tile holds the
        accumulator's fragment (passes/mma.py), whose wgmma-order elements 8 kk .. 8 kk + 7
        of the wave are the k16 step's A fragment, two 16-bit elements a register, the lower
        column low."""
        b, cg = self.b, self.cg
        tile = self.a_tile
        cols = tile.dims[1].size
        order = [wave * cols // 2 + slot for slot in _fragment_order(cols)]
        halves = [tile.regs[order[i]] for i in range(8 * kk, 8 * kk + 8)]
        return [b.or_(b.zext(lo, I32), b.shl(b.zext(hi, I32), cg.i32(16)))
                for lo, hi in zip(halves[0::2], halves[1::2])]

    def wait(self, pending: int, regs: list) -> list:
        return _wait_group(self.cg, pending, regs, self.acc_reg, self.acc_constraint)


def _wait_group(cg, pending: int, regs: list, reg=F32, constraint: str = "=f") -> list:
    """Waits until at most `pending` wgmma groups are in flight; the wait hands the group's
    accumulators through, so nothing reads them before it."""
    return _through(cg, f"wgmma.wait_group.sync.aligned {pending};", regs, reg, constraint)


@emits("mma", targets=HOPPER)
def emit_mma(cg, op: Op):
    """Every wave's wgmmas, then one wait for all of them."""
    w = _Wgmma(cg, op)
    acc_in = cg.vals[op.operands[3].id] if len(op.operands) > 3 else None
    _asm(cg, "wgmma.fence.sync.aligned;", "")
    issued, slots = [], []
    for wave in range(w.waves):
        given = [acc_in.regs[s] for s in w.slots(wave)] if acc_in is not None else None
        issued += w.issue(range(op.attrs["k_steps"]), given, wave)
        slots += w.slots(wave)
    out = [None] * (w.nregs * w.waves)
    for slot, r in zip(slots, w.wait(0, issued)):
        out[slot] = r
    cg.vals[op.result.id] = cg.new_tile(op.result.type, out)


def _promote(cg, bn: int, done: list, scale, out: list, slots: list[int]) -> None:
    """out[slot] += partial * scale[row] (or scale[slot], a scale per element in the
    accumulator's fragment): one FFMA per element of a completed group (in wgmma order, at
    `slots` of the tile)."""
    fma = cg.module.globals.get("llvm.fma.f32") or ir.Function(
        cg.module, ir.FunctionType(F32, [F32, F32, F32]), "llvm.fma.f32")
    per_row = 1 if len(scale.dims) == 2 else bn // 8 * 2       # slots per scale register
    for slot, p in zip(slots, done):
        out[slot] = cg.b.call(fma, [p, scale.regs[slot // per_row], out[slot]])


@emits("mma_promote", targets=HOPPER)
def emit_mma_promote(cg, op: Op):
    """acc + (a . b^T) * scale[:, None], promoted every `promote_steps` K steps: each
    interval's wgmmas accumulate into their own registers as one commit group; then each
    group in turn is waited for and added into the f32 accumulator with one FFMA per
    element, while the later groups still run on the tensor cores."""
    w = _Wgmma(cg, op)
    scale, acc = (cg.vals[v.id] for v in op.operands[3:5])
    out = list(acc.regs)
    steps, every = op.attrs["k_steps"], op.attrs["promote_steps"]
    # The waves in turn, one wave's partial sums live at a time (passes/mma.py): the last
    # wave's promoted sums go through the next wave's fence (else LLVM sinks their FFMAs
    # below the next wave's wgmmas), and the next wave takes over its partial's registers
    # (else ptxas overlaps the two with a second set: 256 x 128 spilled 412 bytes).
    promoted: list[int] = []
    done = None
    for wave in range(w.waves):
        for slot, r in zip(promoted, _through(cg, "wgmma.fence.sync.aligned;",
                                              [out[s] for s in promoted])):
            out[slot] = r
        groups = [w.issue(range(first, first + every), wave=wave,
                          reuse=done if first == 0 else None)
                  for first in range(0, steps, every)]
        for g, partial in enumerate(groups):
            done = w.wait(len(groups) - 1 - g, partial)
            _promote(cg, w.bn, done, scale, out, w.slots(wave))
        promoted = w.slots(wave)
    cg.vals[op.result.id] = cg.new_tile(op.result.type, out)


@emits("mma_issue", targets=HOPPER)
def emit_mma_issue(cg, op: Op):
    """One K step's wgmmas as one commit group; the result stays in flight until an
    mma_retire waits for it."""
    w = _Wgmma(cg, op)
    if w.waves > 1:
        raise CompileError("a product issued a K step ahead (passes/overlap.py) is lowered for "
                           "one m64 wave per warpgroup; a 256-row tile is not supported yet",
                           op.loc, "use BM = 64, 128 or 192")
    _asm(cg, "wgmma.fence.sync.aligned;", "")
    out = [None] * w.nregs
    for i, r in enumerate(w.issue(range(op.attrs["k_steps"]))):
        out[w.order[i]] = r
    cg.vals[op.result.id] = cg.new_tile(op.result.type, out)


@emits("mma_retire", targets=HOPPER)
def emit_mma_retire(cg, op: Op):
    partial, scale, acc = (cg.vals[v.id] for v in op.operands)
    bn = op.result.type.shape[1]
    slots = _fragment_order(bn)
    in_flight = [partial.regs[slot] for slot in slots]
    out = list(acc.regs)
    _promote(cg, bn, _wait_group(cg, op.attrs["pending"], in_flight), scale, out, slots)
    cg.vals[op.result.id] = cg.new_tile(op.result.type, out)


# ---- the epilogue through shared memory (passes/epilogue.py) ----------------------------------

def _leader(cg):
    """The first thread of each consumer warpgroup."""
    return cg.b.icmp_unsigned("==", cg.b.and_(cg._tid, cg.i32(127)), cg.i32(0))


def _wave_bytes(smem) -> int:
    """Bytes of one wave's 64 rows of a staged tile."""
    return WARPGROUP_ROWS * smem.shape[1] * dtype_info(smem.dtype).bytes


def _staged_waves(cg, smem) -> int:
    """The m64 waves of each consumer warpgroup in a staged [BM, BN] tile."""
    return smem.shape[0] // (WARPGROUP_ROWS * cg.k.attrs.get("mma_warpgroups", 1))


@emits("smem_store", targets=HOPPER)
def emit_smem_store(cg, op: Op):
    """Each thread's column pairs as 4-byte words at their place in its warpgroup's boxes of
    64 rows x 128 bytes (a wave's boxes, then the next wave's). SWIZZLE_128B moves a row's
    16-byte chunk c to c ^ (row % 8), and a thread's rows are 16 w + lane / 4 (+ 8), so
    row % 8 = lane / 4: a warp's 8 rows x 16 bytes per store land in 32 different banks."""
    b = cg.b
    smem, t = op.operands[0].type, op.operands[1].type
    tile = cg.tile(op.operands[1])
    cols = t.shape[1]
    pairs = cols // 8                                   # fragment column pairs per row slot
    per_box = SWIZZLE_BYTES // (8 * dtype_info(t.dtype).bytes)
    whole = pairs // per_box                            # 128-byte boxes; then a narrower one
    quad = b.lshr(cg.lane, cg.i32(2))
    row = b.add(b.mul(b.and_(cg.warp, cg.i32(3)), cg.i32(16)), quad)
    per_group = _staged_waves(cg, smem)
    group = b.add(cg.vals[op.operands[0].id],
                  b.mul(_consumer_warpgroup(cg), cg.i32(per_group * _wave_bytes(smem))))

    def row_start(row_bytes: int):
        # Computed here, once per tile: hoisted out of the tile loop, the per-chunk addresses
        # below would hold registers through the K loop (ptxas then spills at BM = 192).
        at = b.add(b.mul(row, cg.i32(row_bytes)), b.mul(b.and_(cg.lane, cg.i32(3)), cg.i32(4)))
        return _asm(cg, "mov.u32 $0, $1;", "=r,r", [b.add(group, at)], I32)
    base = row_start(SWIZZLE_BYTES)
    tail = (pairs - whole * per_box) * 16               # bytes of the last box's rows
    if tail:
        # 64B (32B) swizzle: a row's chunk c goes to c ^ ((row >> 1) & 3) (c ^ ((row >> 2)
        # & 1)); a thread's rows differ from quad by multiples of 8, which leave that alone
        chunks = tail // 16
        tail_base = row_start(tail)
        tail_xor = b.and_(b.lshr(quad, cg.i32((SWIZZLE_BYTES // tail).bit_length() - 1)),
                          cg.i32(chunks - 1))
    for rep in range(2 * per_group):
        wave, h = divmod(rep, 2)
        for q in range(pairs):
            box, c = divmod(q, per_box)
            start = wave * _wave_bytes(smem) + box * WARPGROUP_ROWS * SWIZZLE_BYTES
            if box < whole:
                chunk = b.shl(b.xor(quad, cg.i32(c)), cg.i32(4))
                address = b.add(b.add(base, cg.i32(start + 8 * h * SWIZZLE_BYTES)), chunk)
            else:
                chunk = b.shl(b.xor(tail_xor, cg.i32(c)), cg.i32(4))
                address = b.add(b.add(tail_base, cg.i32(start + 8 * h * tail)), chunk)
            first = (rep * pairs + q) * 2
            word = cg.pack(tile.regs[first:first + 2], t.dtype)[0]
            _asm(cg, "st.shared.b32 [$0], $1;", "r,r", [address, word])


@emits("fence_async_shared", targets=HOPPER)
def emit_fence_async_shared(cg, op: Op):
    _asm(cg, "fence.proxy.async.shared::cta;", "")


@emits("fence_async_global", targets=HOPPER)
def emit_fence_async_global(cg, op: Op):
    _asm(cg, "fence.proxy.async.global;", "")


@emits("warpgroup_barrier", targets=HOPPER)
def emit_warpgroup_barrier(cg, op: Op):
    """Named barrier 1 + c for consumer warpgroup c (0 is the CTA's)."""
    _asm(cg, "bar.sync $0, 128;", "r", [cg.b.add(_consumer_warpgroup(cg), cg.i32(1))])


@emits("tma_store", targets=HOPPER)
def emit_tma_store(cg, op: Op):
    """The leader copies its warpgroup's boxes (the tensor map's, one wave's 64 rows by 128
    bytes, then the tail map's narrower one where the rows have more) to (m0 + 64 (c W + v),
    n0 + box columns j) for each wave v."""
    b = cg.b
    smem = op.operands[1].type
    rank = op.operands[0].type.rank
    coords = [cg.vals[v.id] for v in op.operands[2:2 + rank]]
    tmap = b.ptrtoint(cg.tensor_maps[op.attrs["map"]], I64)
    tail_map = (b.ptrtoint(cg.tensor_maps[op.attrs["tail_map"]], I64)
                if "tail_map" in op.attrs else None)
    box_rows, box_cols = cg.k.attrs["tensor_maps"][op.attrs["map"]].box
    box_bytes = box_rows * box_cols * dtype_info(smem.dtype).bytes
    group = _consumer_warpgroup(cg)
    issue = _leader(cg)
    if op.attrs.get("when"):
        issue = b.and_(issue, b.trunc(cg.vals[op.operands[-1].id], ir.IntType(1)))
    inner_first = ", ".join(f"${i + 1}" for i in range(rank))
    per_group = _staged_waves(cg, smem)
    with b.if_then(issue):
        base = b.add(cg.vals[op.operands[1].id],
                     b.mul(group, cg.i32(per_group * _wave_bytes(smem))))
        for wave in range(per_group):
            row = b.add(coords[-2], b.mul(b.add(b.mul(group, cg.i32(per_group)), cg.i32(wave)),
                                          cg.i32(box_rows)))
            whole = smem.shape[1] // box_cols
            boxes = [(tmap, j) for j in range(whole)]
            if tail_map is not None:                # the rows' last, narrower box
                boxes.append((tail_map, whole))
            for m, j in boxes:
                at = [*coords[:-2], row, b.add(coords[-1], cg.i32(j * box_cols))]
                box = wave * _wave_bytes(smem) + j * box_bytes
                _asm(cg, f"cp.async.bulk.tensor.{rank}d.global.shared::cta.bulk_group "
                     f"[$0, {{{inner_first}}}], [${rank + 1}];",
                     ",".join(["l"] + ["r"] * (rank + 1)),
                     [m, *reversed(at), b.add(base, cg.i32(box))])
        _asm(cg, "cp.async.bulk.commit_group;", "")


@emits("warpgroup_all", targets=HOPPER)
def emit_warpgroup_all(cg, op: Op):
    """The thread's slots of v, and-ed, then bar.red.and over its consumer warpgroup (named
    barrier 1 + c, as warpgroup_barrier)."""
    b = cg.b
    mine = cg.i32(1)
    for r in cg.tile(op.operands[0]).regs:
        mine = b.and_(mine, b.zext(r, I32))
    every = _asm(cg, "{ .reg .pred p, q; setp.ne.u32 p, $1, 0; bar.red.and.pred q, $2, 128, p; "
                 "selp.u32 $0, 1, 0, q; }", "=r,r,r",
                 [mine, b.add(_consumer_warpgroup(cg), cg.i32(1))], I32)
    cg.vals[op.result.id] = b.trunc(every, ir.IntType(8))


@emits("bulk_wait", targets=HOPPER)
def emit_bulk_wait(cg, op: Op):
    read = ".read" if op.attrs["read"] else ""
    with cg.b.if_then(_leader(cg)):
        _asm(cg, f"cp.async.bulk.wait_group{read} 0;", "")

