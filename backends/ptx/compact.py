"""KernelCodegen's half for Compact tiles (commdsl/layout.py, passes/replicas.py): the C lanes
that held copies of a Sliced tile's R slots split them, lane position j keeping slots j,
j + C, ... (mod R). A reduce makes them by reduce-scatter, a store writes each slot from the
one lane that holds it, and `gather_copies` gives every lane all R slots back.

Only the lane position j is not known at compile time: a Compact tile's slots are computed
from it at run time, where other tiles' slots are constants.
"""
from __future__ import annotations

from commdsl.ir import Op, TileType
from commdsl.layout import Compact, DimMap, slots

from . import asm
from .asm import F32, I32
from .emitters import emits


class CompactCodegen:
    def lane_position(self, m: DimMap):
        """j: this lane's position in its group of `m.tpw` lanes, `m.lane_stride` apart."""
        return self.b.urem(self.b.udiv(self.lane, self.i32(m.lane_stride)), self.i32(m.tpw))

    def reduce_scatter(self, regs: list, m: DimMap, combine) -> list:
        """The butterfly across the C = m.tpw lanes of the reduced axis, but each lane keeps
        only its Compact slots: at lane distance stride << k (k = 0, 1, ...) the lane whose
        position has bit k clear keeps the slots with bit k clear and sends the others, its
        partner the reverse. R/2 + R/4 + ... shuffles and two selects each instead of
        R log2(C) shuffles, and every slot meets the same partners in the same order as in
        the butterfly, so sums round alike. Past R the slots wrap (layout.Compact), so
        exchanges of the same two registers repeat: they are made once, and one of a
        register with itself needs no selects (a butterfly step)."""
        b, copies, n = self.b, m.tpw, len(regs)
        # Padded slot -> register; after step k the key has bits 0..k cleared, and in lane
        # position j it stands for the slot key | (j's bits 0..k).
        held = {s: regs[s % n] for s in range(-(-n // copies) * copies)}
        for k in range(copies.bit_length() - 1):
            bit, distance, made = 1 << k, m.lane_stride << k, {}
            # bit k of the position is this bit of the lane id (tpw and strides: powers of 2)
            upper = b.icmp_unsigned("!=", b.and_(self.lane, self.i32(distance)), self.i32(0))
            for key in [key for key in held if not key & bit]:
                lo, hi = held.pop(key), held.pop(key | bit)
                if (id(lo), id(hi)) not in made:
                    keep, send = ((lo, lo) if lo is hi else
                                  (b.select(upper, hi, lo), b.select(upper, lo, hi)))
                    made[id(lo), id(hi)] = combine(keep, self.shuffle(send, distance))
                held[key] = made[id(lo), id(hi)]
        return [held[k * copies] for k in range(-(-n // copies))]

    def compact_slots(self, t: TileType) -> list:
        """This lane's slots of a Compact tile, in register order: slot (j + k C) mod R as
        (rep, elem) per dimension, run-time values (codegen.coord takes them)."""
        b, layout = self.b, t.layout
        dims = layout.dims(t.shape)
        count = len(slots(dims))
        j = self.lane_position(layout.parent.reduced_dim(t.shape))
        out = []
        for k in range(layout.held(t.shape)):
            index, inner, slot = b.add(j, self.i32(k * layout.copies(t.shape))), count, []
            for d in dims:                   # slots() order: the last dimension fastest
                inner //= d.reps * d.spt
                i = b.urem(b.udiv(index, self.i32(inner)), self.i32(d.reps * d.spt))
                slot.append((b.udiv(i, self.i32(d.spt)), b.urem(i, self.i32(d.spt))))
            out.append(tuple(slot))
        return out

    def compact_owner(self, layout: Compact, shape: tuple[int, ...], k: int):
        """True where this thread's k-th register is the copy of its slot that counts: not
        a wrapped repeat (j + k C < R), in the first warp along the reduced axis."""
        b, m = self.b, layout.parent.reduced_dim(shape)
        copies, count = layout.copies(shape), len(slots(layout.dims(shape)))
        flags = []
        if (k + 1) * copies > count:
            flags.append(b.icmp_unsigned("<", self.lane_position(m), self.i32(count - k * copies)))
        if m.wpc > 1:
            flags.append(b.icmp_unsigned("<", self.thread_coord(m), self.i32(m.tpw)))
        return self.all_of(flags)

    @emits("gather_copies")
    def op_gather_copies(self, op: Op):
        """Every lane gets all R slots back: slot i from lane position i % C of its group,
        compact slot i // C (one `shfl.sync.idx` with immediate lane and segment mask)."""
        b, src_t, t = self.b, op.operands[0].type, op.result.type
        src = self.tile(op.operands[0])
        copies = src_t.layout.copies(src_t.shape)
        stride = src_t.layout.lane_stride(src_t.shape)
        segmask = 0x1F & ~((copies - 1) * stride)
        out = []
        for i in range(len(slots(t.layout.dims(t.shape)))):
            reg = src.regs[i // copies]
            ty = reg.type
            word = (b.bitcast(reg, I32) if ty == F32 else
                    b.zext(reg, I32) if ty.width < 32 else reg)
            got = asm.shuffle_idx(b, word, (i % copies) * stride, segmask)
            out.append(b.bitcast(got, F32) if ty == F32 else
                       b.trunc(got, ty) if ty.width < 32 else got)
        self.vals[op.result.id] = self.new_tile(t, out)
