"""KernelCodegen's half for `scan` (cumsum): an inclusive prefix sum along one axis of a tile,
in the operand's own layout, so the result needs no data movement.

Along the axis a Blocked tile's element at coordinate c sits in repeat c // span, in the
thread whose coordinate (warp along the axis, then lane) is c % span // spt, at element
c % spt. So the sum runs in that order: each thread's elements of a repeat in sequence,
then across the lanes along the axis (shuffles up, lanes `lane_stride` apart), then across
the warps along it (their totals through shared memory), then across repeats (the totals
of the earlier repeats). Lanes and warps that differ along other axes hold other rows and
never mix; where the threads hold the axis several times over (a short tile), each copy
sums on its own (layout.one_replica).
"""
from __future__ import annotations

from llvmlite import ir

from commdsl.diagnostics import CompileError
from commdsl.fragments import FragmentDim
from commdsl.ir import Op
from commdsl.layout import Compact, DimMap, one_replica, slots

from . import asm
from .asm import F32
from .emitters import emits


def scan_groups(dims: list[DimMap], axis: int) -> dict[tuple, list[int]]:
    """The registers of one thread that lie on one line along `axis` in one repeat, in
    order along it: (the slot's other coordinates, the repeat) -> register indices."""
    groups: dict[tuple, list[int]] = {}
    for i, slot in enumerate(slots(dims)):
        rep, _ = slot[axis]
        groups.setdefault((slot[:axis] + slot[axis + 1:], rep), []).append(i)
    return groups


class ScanCodegen:
    @emits("scan")
    def op_scan(self, op: Op):
        src = self.tile(op.operands[0])
        axis = op.attrs["axis"]
        m = src.dims[axis]
        whole = None if isinstance(m, FragmentDim) else one_replica(m)
        if isinstance(src.layout, Compact) or whole is None:
            raise CompileError("cumsum over this tile is not supported yet: its threads hold "
                               "an mma's fragment, or the axis in copies that are not whole "
                               "(a size the threads' pattern does not divide)", op.loc,
                               "cumsum a tile whose length along the axis is a power of two, "
                               "loaded or computed elementwise")
        m = whole                 # each copy of the axis sums on its own
        add = self._combiner("sum", op.result.type.dtype)
        zero = self.zero_of(src.regs[0].type)
        groups = scan_groups(src.dims, axis)
        out = list(src.regs)
        totals = {}
        for key, regs in groups.items():            # within the thread
            acc = None
            for i in regs:
                acc = out[i] = src.regs[i] if acc is None else add(acc, src.regs[i])
            totals[key] = acc
        before = self.scan_lanes(totals, m, add, zero)
        line_totals = {k: self.last_lane(v, m) for k, v in self.inclusive(totals, before,
                                                                          add).items()}
        if m.wpc > 1:
            warp_before, line_totals = self.scan_warps(op, line_totals, m, add, zero)
            before = {k: add(before[k], warp_before[k]) for k in before}
        for key, regs in groups.items():
            other, rep = key
            carry = before[key]
            for r in range(rep):                      # the earlier repeats of this line
                carry = add(carry, line_totals[(other, r)])
            for i in regs:
                out[i] = add(out[i], carry)
        self.vals[op.result.id] = self.new_tile(op.result.type, out)

    @staticmethod
    def zero_of(ty):
        return ir.Constant(ty, 0.0 if ty == F32 else 0)

    @staticmethod
    def inclusive(totals: dict, before: dict, add) -> dict:
        return {k: add(v, before[k]) for k, v in totals.items()}

    def scan_lanes(self, totals: dict, m: DimMap, add, zero) -> dict:
        """Each thread's sum of the lanes before it along the axis (Hillis-Steele: the
        inclusive sum by shuffles up 1, 2, 4, ... lanes along it, then one more shuffle
        for the exclusive one, so no float is subtracted back out)."""
        b = self.b
        if m.tpw == 1:
            return {k: zero for k in totals}
        coord = self.lane_position(m)
        incl = dict(totals)
        steps = m.tpw.bit_length() - 1
        for k in range(steps):
            has = b.icmp_unsigned(">=", coord, self.i32(1 << k))
            incl = {key: b.select(has, add(v, self.shuffle_up(v, m.lane_stride << k)), v)
                    for key, v in incl.items()}
        first = b.icmp_unsigned("==", coord, self.i32(0))
        return {key: b.select(first, zero, self.shuffle_up(v, m.lane_stride))
                for key, v in incl.items()}

    def shuffle_up(self, x, delta: int):
        return self.as_word(x, lambda w: asm.shuffle_up(self.b, w, delta))

    def last_lane(self, x, m: DimMap):
        """x from the last lane along the axis that agrees with this one on other axes."""
        if m.tpw == 1:
            return x
        axis_bits = (m.tpw - 1) * m.lane_stride
        segmask = 0x1F & ~axis_bits
        return self.as_word(x, lambda w: asm.shuffle_idx(self.b, w, axis_bits, segmask))

    def scan_warps(self, op: Op, line_totals: dict, m: DimMap, add, zero):
        """Each warp's total of each line goes through shared memory (a word per lane, as
        in reduce_across_warps); a thread adds the warps before its own along the axis,
        and all of them for the line's total."""
        b = self.b
        keys = list(line_totals)
        slot_ptr = self.lane_words(self.static_smem(op, op.result.type.dtype))
        for i, key in enumerate(keys):
            b.store(line_totals[key], slot_ptr(i, self.warp))
        self.cta_barrier()
        coord, base = self.warp_along(m)
        before, total = {}, {}
        for i, key in enumerate(keys):
            acc_before, acc = zero, None
            for j in range(m.wpc):
                v = b.load(slot_ptr(i, b.add(base, self.i32(j * m.warp_stride))))
                acc = v if acc is None else add(acc, v)
                if j < m.wpc - 1:
                    earlier = b.icmp_unsigned("<", self.i32(j), coord)
                    acc_before = b.select(earlier, add(acc_before, v), acc_before)
            before[key], total[key] = acc_before, acc
        self.cta_barrier()
        return before, total
