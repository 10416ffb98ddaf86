"""Lowering of the communication ops (commdsl/ir_comm.py): a mixin of KernelCodegen.

A symmetric tensor parameter is a pointer to a table of every rank's base address of that
tensor (runtime/symmetric.py builds it); `get`/`put` load the base of the rank they name
from it and otherwise are loads and stores (KernelCodegen._access), so cache policies,
vector widths and bounds work the same. `signal` and `wait` are the release/acquire pair
at system scope that orders memory between GPUs of one host:

    signal:  bar.sync 0;  thread 0: st.release.sys.global.b32 [peer's flag], v
    wait:    thread 0: spin on ld.acquire.sys.global.b32 [own flag] until >= v, or until
             %globaltimer has advanced timeout_ns;  barrier.red.or.pred (every thread learns
             whether it timed out);  on a timeout thread 0 writes the status word and the
             program returns, so a rank that never signals ends the kernel with an error the
             host reports instead of a hang.

In a warp-specialized kernel (passes/pipeline.py) the producer warpgroup never joins a CTA
barrier, so there a wait runs `by = thread` in the producer (its one thread spins) and `by =
warpgroup` in the consumers (each warpgroup's first thread spins, then the warpgroup meets on
its named barrier, 1 + its index, which orders the others' later loads after the acquire);
on a timeout the spinning thread writes the status word and goes on (the kernel ends, its
output unspecified, and the host raises CommError), so neither side hangs on the other. A
signal runs `by = consumers`: the consumer warpgroups meet on a named barrier and the first
consumer thread stores.
"""
from __future__ import annotations

from llvmlite import ir

from commdsl.ir import KernelIR, Op, TileType
from commdsl.layout import slots
from commdsl.spec import COMM_PARAMS

from .asm import GLOBAL_PTR, I1, I8, I32, I64, barrier, global_store
from .emitters import emits

_PARAM_TYPES = {"u32": I32, "u64": I64, "ptr": GLOBAL_PTR}
TIMED_OUT = 1            # status[0] after a wait ran out of time
# The consumers' named barrier of a signal: 0 is the CTA's, 1 + c warpgroup c's
# (backends/ptx/sm90.py), at most 15 in all.
CONSUMERS_BARRIER = 15
# A spinning thread sleeps this long between polls of a flag that is not there yet: a GEMM's
# CTAs waiting for their rows must not crowd the memory system the copy raising them uses.
BACKOFF_NS = 256


def comm_param_types(kernel: KernelIR) -> list:
    """The trailing entry parameters of a communication kernel (spec.COMM_PARAMS)."""
    if not kernel.attrs.get("comm") and not any(t.type.symmetric for t in kernel.tensors):
        return []
    return [_PARAM_TYPES[kind] for _, kind in COMM_PARAMS]


# ---- single instructions -------------------------------------------------------------------

def release_store(b: ir.IRBuilder, address, value, predicate):
    fn = ir.FunctionType(ir.VoidType(), [GLOBAL_PTR, I32, I1])
    asm = ir.InlineAsm(fn, "@$2 st.release.sys.global.b32 [$0], $1;", "l,r,b", side_effect=True)
    b.call(asm, [address, value, predicate])


def acquire_load(b: ir.IRBuilder, address):
    fn = ir.FunctionType(I32, [GLOBAL_PTR])
    asm = ir.InlineAsm(fn, "ld.acquire.sys.global.b32 $0, [$1];", "=r,l", side_effect=True)
    return b.call(asm, [address])


def relaxed_load(b: ir.IRBuilder, address):
    fn = ir.FunctionType(I32, [GLOBAL_PTR])
    asm = ir.InlineAsm(fn, "ld.relaxed.gpu.global.b32 $0, [$1];", "=r,l", side_effect=True)
    return b.call(asm, [address])


def global_timer(b: ir.IRBuilder):
    fn = ir.FunctionType(I64, [])
    return b.call(ir.InlineAsm(fn, "mov.u64 $0, %globaltimer;", "=l", side_effect=True), [])


def barrier_any(b: ir.IRBuilder, predicate):
    """True in every thread when `predicate` is true in any thread of the CTA. The
    non-aligned form: lanes of one warp may arrive from different paths (a spinning lane)."""
    fn = ir.FunctionType(I1, [I1])
    asm = ir.InlineAsm(fn, "barrier.red.or.pred $0, 0, $1;", "=b,b", side_effect=True)
    return b.call(asm, [predicate])


# ---- the mixin -----------------------------------------------------------------------------

class CommCodegen:
    def bind_comm_params(self, args):
        """Names the trailing parameters (args: those after the sizes), if the kernel has them."""
        if not comm_param_types(self.k):
            self.comm_args = {}
            return
        self.comm_args = {name: arg for (name, _), arg in zip(COMM_PARAMS, args)}
        for name, arg in self.comm_args.items():
            arg.name = name

    @emits("rank")
    def op_rank(self, op: Op):
        self.vals[op.result.id] = self.comm_args["rank"]

    @emits("world")
    def op_world(self, op: Op):
        self.vals[op.result.id] = self.comm_args["world"]

    @emits("epoch")
    def op_epoch(self, op: Op):
        self.vals[op.result.id] = self.comm_args["epoch"]

    @emits("get")
    def op_get(self, op: Op):
        self.op_load(op)

    @emits("put")
    def op_put(self, op: Op):
        self.op_store(op)

    def rank_base(self, table, rank):
        """Rank `rank`'s base address of a symmetric tensor, from its table of bases."""
        b = self.b
        entry = b.gep(table, [b.mul(b.sext(rank, I64), ir.Constant(I64, 8))], source_etype=I8)
        base = b.load(entry, typ=I64, align=8)
        # The table does not change while a kernel runs: the read-only path may cache it.
        base.set_metadata("invariant.load", self.module.add_metadata([]))
        return b.inttoptr(base, GLOBAL_PTR)

    def peer_bases(self, op: Op, guard: list):
        """slot -> the base address of the rank that slot of a get/put reaches: one rank for
        the whole tile, or (a gather with a tile of ranks) each row's own. Where the access
        is guarded off (`guard`: [] or [its i1]) the rank may be out of range (the step past
        a prefetched loop over ranks), so the table is read at rank 0."""
        tensor = op.operands[0]
        table = self.vals[tensor.id]
        rank = op.operands[1 + tensor.type.rank]

        def base(reg):
            if guard:
                reg = self.b.select(guard[0], reg, ir.Constant(I32, 0))
            return self.rank_base(table, reg)
        if not isinstance(rank.type, TileType):
            whole = base(self.vals[rank.id])
            return lambda slot: whole
        row = self.gather_lookup(op, self.tile(rank))
        cache: dict[int, object] = {}

        def base_of(slot):
            reg = row(slot)
            if id(reg) not in cache:
                cache[id(reg)] = base(reg)
            return cache[id(reg)]
        return base_of

    def gather_lookup(self, op: Op, index_tile):
        """slot of the moved tile -> the register of `index_tile` (a 1-D tile laid out like
        the gathered axis, passes/tile.py) for that slot's row."""
        dim = op.attrs["gather"][0]
        axis = sum(1 for s in op.attrs["sizes"][:dim] if s is not None)
        position = {s[0]: i for i, s in enumerate(slots(index_tile.dims))}
        return lambda slot: index_tile.regs[position[slot[axis]]]

    def element_address(self, tensor, base, indices):
        """Address of one element: row-major offset of scalar indices from `base`."""
        b = self.b
        offset, stride = ir.Constant(I64, 0), ir.Constant(I64, 1)
        for d, i in reversed(list(zip(tensor.type.dims, indices))):
            offset = b.add(offset, b.mul(b.sext(self.vals[i.id], I64), stride))
            stride = b.mul(stride, self.dim_value(d))
        return b.gep(base, [b.mul(offset, ir.Constant(I64, 4))], source_etype=I8)

    @emits("signal")
    def op_signal(self, op: Op):
        tensor, *rest = op.operands
        idx, rank, value = rest[:-2], rest[-2], rest[-1]
        base = self.rank_base(self.vals[tensor.id], self.vals[rank.id])
        address = self.element_address(tensor, base, idx)
        storer = 0
        if op.attrs.get("by") == "consumers":
            consumers = 128 * self.k.attrs.get("mma_warpgroups", 1)
            consumers_meet = ir.InlineAsm(ir.FunctionType(ir.VoidType(), []),
                                          f"bar.sync {CONSUMERS_BARRIER}, {consumers};", "",
                                          side_effect=True)
            self.b.call(consumers_meet, [])
            storer = 128                      # the first thread past the producer warpgroup
        else:
            barrier(self.b)                   # the program's earlier accesses come first
        release_store(self.b, address, self.vals[value.id],
                      self.b.icmp_unsigned("==", self._tid, ir.Constant(I32, storer)))

    def spin(self, address, target):
        """Blocks of an acquire spin on `address` until it reaches `target`, the timeout
        passes or another wait of the launch has timed out (the status word is set: a
        kernel whose waits time out one after another ends after one timeout, not one per
        wait); returns (the last value seen, whether it reached target)."""
        b = self.b
        start = global_timer(b)
        spin = self.fn.append_basic_block("wait.spin")
        done = self.fn.append_basic_block("wait.done")
        b.branch(spin)
        b.position_at_end(spin)
        seen = acquire_load(b, address)
        ok = b.icmp_signed(">=", seen, target)
        late = b.icmp_unsigned(">", b.sub(global_timer(b), start), self.comm_args["timeout_ns"])
        failed = b.icmp_unsigned("!=", relaxed_load(b, self.comm_args["status"]),
                                 ir.Constant(I32, 0))
        backoff = self.fn.append_basic_block("wait.backoff")
        b.cbranch(b.or_(ok, b.or_(late, failed)), done, backoff)
        b.position_at_end(backoff)
        b.call(ir.InlineAsm(ir.FunctionType(ir.VoidType(), []),
                            f"nanosleep.u32 {BACKOFF_NS};", "", side_effect=True), [])
        b.branch(spin)
        b.position_at_end(done)
        return seen, ok

    def timed_out_status(self, idx, target, last, failed):
        """Where `failed`: the status word the host reads (runtime/symmetric.py's check)."""
        flag = self.vals[idx[-1].id] if idx else ir.Constant(I32, 0)
        words = [ir.Constant(I32, TIMED_OUT), flag, target, last]
        global_store(self.b, {}, 16, self.comm_args["status"], words, failed)

    @emits("wait")
    def op_wait(self, op: Op):
        b = self.b
        tensor, *rest = op.operands
        idx, target = rest[:-1], self.vals[rest[-1].id]
        own = self.rank_base(self.vals[tensor.id], self.comm_args["rank"])
        address = self.element_address(tensor, own, idx)
        by = op.attrs.get("by")
        if by == "thread":
            seen, ok = self.spin(address, target)
            self.timed_out_status(idx, target, seen, b.not_(ok))
            return
        if by == "warpgroup":
            lane = b.and_(self._tid, ir.Constant(I32, 127))
            with b.if_then(b.icmp_unsigned("==", lane, ir.Constant(I32, 0))):
                seen, ok = self.spin(address, target)
                self.timed_out_status(idx, target, seen, b.not_(ok))
            warpgroup = b.lshr(self._tid, ir.Constant(I32, 7))
            meet = ir.InlineAsm(ir.FunctionType(ir.VoidType(), [I32]), "bar.sync $0, 128;", "r",
                                side_effect=True)
            b.call(meet, [warpgroup])
            return
        before = b.block
        start_block = self.fn.append_basic_block("wait.start")
        after = self.fn.append_basic_block("wait.after")
        b.cbranch(b.icmp_unsigned("==", self._tid, ir.Constant(I32, 0)), start_block, after)
        b.position_at_end(start_block)
        seen, ok = self.spin(address, target)
        done = b.block
        missed = b.not_(ok)
        b.branch(after)
        b.position_at_end(after)
        failed = b.phi(I1)
        failed.add_incoming(ir.Constant(I1, 0), before)
        failed.add_incoming(missed, done)
        last = b.phi(I32)
        last.add_incoming(ir.Constant(I32, 0), before)
        last.add_incoming(seen, done)
        timed_out = self.fn.append_basic_block("wait.timed_out")
        cont = self.fn.append_basic_block("wait.ok")
        b.cbranch(barrier_any(b, failed), timed_out, cont)
        b.position_at_end(timed_out)
        self.timed_out_status(idx, target, last, failed)
        b.ret_void()
        b.position_at_end(cont)
