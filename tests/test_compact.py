"""Lane and slot bookkeeping of Compact tiles (backends/ptx/compact.py), run on the CPU: the
codegen methods are called with a stand-in for llvmlite's builder whose values are numpy
vectors of a warp's 32 lanes, so the very code that emits the PTX is what is checked."""
import operator

import numpy as np
import pytest

from backends.ptx.compact import CompactCodegen
from commdsl.ir import TileType
from commdsl.layout import Blocked, Compact, DimMap, Sliced, slots

LANES = np.arange(32)


class LaneBuilder:
    """The IRBuilder calls compact.py makes, one numpy element per lane."""
    add, udiv, urem, and_ = operator.add, operator.floordiv, operator.mod, operator.and_

    def icmp_unsigned(self, op, a, b):
        return {"<": operator.lt, "!=": operator.ne}[op](a, b)

    def select(self, pred, a, b):
        return np.where(pred, a, b)


class Warp(CompactCodegen):
    """One warp of a CTA as KernelCodegen would see it, counting its shuffles."""

    def __init__(self, warp: int = 0):
        self.b, self.lane, self.warp, self.shuffles = LaneBuilder(), LANES, warp, 0

    def i32(self, n):
        return n

    def shuffle(self, x, lane_mask):
        self.shuffles += 1
        return x[LANES ^ lane_mask]

    def thread_coord(self, m: DimMap):
        return ((self.warp // m.warp_stride) % m.wpc) * m.tpw + (self.lane // m.lane_stride) % m.tpw

    def all_of(self, flags):
        return None if not flags else np.logical_and.reduce(flags)


def _leaves(slot: int):
    """Each lane's partial of one slot, as a symbol (lane, slot)."""
    out = np.empty(32, dtype=object)
    for lane in range(32):
        out[lane] = (lane, slot)
    return out


# A combination as a symbol that ignores operand order (max and + are commutative bit for
# bit) but not grouping: equal symbols mean equal bits, for sums too.
_combine = np.frompyfunc(lambda a, b: tuple(sorted((a, b), key=repr)), 2, 1)


def _butterfly(x, m: DimMap):
    """op_reduce's cross-lane loop for non-Compact results: the reference."""
    for k in range(m.tpw.bit_length() - 1):
        x = _combine(x, x[LANES ^ (m.lane_stride << k)])
    return x


@pytest.mark.parametrize("rows,copies,stride", [
    (8, 8, 1), (2, 8, 1), (4, 16, 1), (16, 4, 8), (12, 8, 1), (3, 8, 2), (5, 4, 4), (1, 2, 1),
    (32, 32, 1), (6, 2, 16)])
def test_reduce_scatter_gives_each_lane_its_compact_slots(rows, copies, stride):
    m = DimMap(size=copies, spt=1, tpw=copies, wpc=1, lane_stride=stride, warp_stride=1)
    partials = [_leaves(s) for s in range(rows)]
    warp = Warp()
    held = warp.reduce_scatter(partials, m, _combine)
    assert len(held) == -(-rows // copies)
    j = (LANES // stride) % copies
    for k, got in enumerate(held):
        want = [_butterfly(partials[(k * copies + j[lane]) % rows], m)[lane] for lane in range(32)]
        assert list(got) == want, f"register {k}"
    if rows % copies == 0:
        assert warp.shuffles == rows - rows // copies          # R/2 + R/4 + ... + R/C


@pytest.mark.parametrize("rows,copies,shuffles", [(8, 8, 7), (2, 8, 3), (4, 16, 5)])
def test_reduce_scatter_shares_repeated_exchanges(rows, copies, shuffles):
    """Fewer rows than copies: wrapped slots pair the same registers again (one exchange),
    then a register with itself (a butterfly step, no selects)."""
    m = DimMap(size=copies, spt=1, tpw=copies, wpc=1, lane_stride=1, warp_stride=1)
    warp = Warp()
    warp.reduce_scatter([_leaves(s) for s in range(rows)], m, _combine)
    assert warp.shuffles == shuffles


LAYOUTS = [  # (blocked layout, tile shape, reduced axis)
    (Blocked((4, 16), (4, 8), (4, 1)), (128, 128), 1),    # requant_t, 4 warps: R = C = 8
    (Blocked((1, 16), (4, 8), (16, 1)), (128, 128), 1),   # 16 warps: R = 2 < C = 8
    (Blocked((1, 8), (2, 16), (8, 1)), (64, 128), 1),     # act_quant ROWS = 64: R = 4, C = 16
    (Blocked((3, 16), (4, 8), (4, 1)), (192, 128), 1),    # R = 12: a wrapped last register
    (Blocked((2, 1), (8, 4), (1, 4)), (32, 64), 0),       # reduced along lanes 4 apart
    (Blocked((1, 4), (4, 8), (2, 2)), (16, 64), 1),       # two warps along the reduced axis
    (Blocked((2, 4), (2, 16), (2, 1)), (24, 64), 1),      # rows wrap past the tile (24 of 32)
]


@pytest.mark.parametrize("blocked,shape,axis", LAYOUTS)
def test_compact_slots_and_owners(blocked, shape, axis):
    """Lane position j's k-th register is slot (j + kC) mod R, and of the threads that hold
    copies of a row of slots, exactly one owns each slot (the one that stores it)."""
    layout = Compact(Sliced(blocked, axis))
    out_shape = shape[:axis] + shape[axis + 1:]
    m = layout.parent.reduced_dim(out_shape)
    all_slots = slots(layout.dims(out_shape))
    copies, count = layout.copies(out_shape), len(all_slots)
    t = TileType("f32", out_shape, layout)
    owners: dict[tuple, list] = {}
    for w in range(blocked.num_warps):
        warp = Warp(w)
        held = warp.compact_slots(t)
        assert len(held) == layout.held(out_shape)
        j = (LANES // m.lane_stride) % m.tpw
        for k, slot in enumerate(held):
            owner = warp.compact_owner(layout, out_shape, k)
            for lane in range(32):
                index = (k * copies + j[lane]) % count
                got = tuple((int(r[lane]), int(e[lane])) for r, e in slot)
                assert got == all_slots[index]
                if owner is None or owner[lane]:
                    # the threads that hold the same slots differ only along the reduced axis
                    group = (lane - j[lane] * m.lane_stride,
                             w - ((w // m.warp_stride) % m.wpc) * m.warp_stride)
                    owners.setdefault(group, []).append(index)
    assert owners and all(sorted(v) == list(range(count)) for v in owners.values())
