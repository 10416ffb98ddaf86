"""commdsl.layout.reshaped: a reshape that moves no data keeps every element in the thread
and the slot that held it, checked element by element against the layouts' own coordinates;
and the layout choice that avoids copies by narrowing the vector; with copies, every slot
holds the same element and is the first copy or not in both layouts."""
import itertools

import pytest

from commdsl.layout import Blocked, choose_blocked, reshape_in_registers, reshaped, slots


def owners(layout, shape):
    """(warp, lane, slot) -> the element's row-major index, from the layout's definition."""
    dims = layout.dims(shape)
    out = {}
    for warp, lane in itertools.product(range(layout.num_warps), range(32)):
        for index, slot in enumerate(slots(dims)):
            flat = 0
            for m, (rep, e), n in zip(dims, slot, shape):
                lane_part = (lane // m.lane_stride) % m.tpw
                warp_part = (warp // m.warp_stride) % m.wpc
                flat = flat * n + rep * m.span + (warp_part * m.tpw + lane_part) * m.spt + e
            out[warp, lane, index] = flat
    return out


CASES = [((7168,), (56, 128)), ((4096,), (32, 128)), ((2048,), (16, 128)),
         ((16, 128), (2048,)), ((16, 128), (16, 16, 8)), ((8, 256), (8, 2, 128)),
         ((56, 128), (7168,)), ((64, 64), (4096,))]


@pytest.mark.parametrize("shape,new_shape", CASES)
@pytest.mark.parametrize("warps", [1, 4, 8])
@pytest.mark.parametrize("vec", [1, 4, 8])
def test_a_register_reshape_keeps_every_element_in_its_thread_and_slot(shape, new_shape,
                                                                        warps, vec):
    layout = choose_blocked(shape, vec, warps, 32)
    new = reshaped(layout, shape, new_shape)
    if new is None:         # then no Blocked layout of the new shape could do it
        return
    assert owners(new, new_shape) == owners(layout, shape)
    assert reshape_in_registers(layout, shape, new, new_shape)


def test_the_rmsnorm_row_reshapes_into_its_groups_for_free():
    layout = choose_blocked((7168,), 8, 4, 32)
    groups = reshaped(layout, (7168,), (56, 128))
    assert groups is not None and groups.dims((56, 128))[1].wpc == 1   # a group in one warp
    assert reshaped(groups, (56, 128), (7168,)) == layout


def test_a_reshape_that_would_reorder_lanes_is_refused():
    layout = choose_blocked((16, 128), 1, 4, 32)       # lanes, then repeats, then warps
    assert reshaped(layout, (16, 128), (2048,)) is None


def test_a_vector_that_leaves_copies_narrows_to_one_that_leaves_none():
    layout = choose_blocked((7168,), 8, 8, 32)         # 28 elements a thread: not 8 at a time
    assert layout.spt == (4,) and not layout.dims((7168,))[0].wraps
    small = choose_blocked((4, 128), 8, 4, 32)        # under a vector a thread: copies stay
    assert small.spt == (1, 8)


def owners_with_copies(layout, shape):
    """(warp, lane, slot) -> (the element's row-major index, whether it is the first copy):
    a slot past a dimension's end holds the element its coordinate wraps around to."""
    dims = layout.dims(shape)
    out = {}
    for warp, lane in itertools.product(range(layout.num_warps), range(32)):
        for index, slot in enumerate(slots(dims)):
            flat, first = 0, True
            for m, (rep, e), n in zip(dims, slot, shape):
                lane_part = (lane // m.lane_stride) % m.tpw
                warp_part = (warp // m.warp_stride) % m.wpc
                raw = rep * m.span + (warp_part * m.tpw + lane_part) * m.spt + e
                flat, first = flat * n + raw % n, first and raw < n
            out[warp, lane, index] = (flat, first)
    return out


@pytest.mark.parametrize("warps", [8, 16])
def test_a_row_with_copies_reshapes_into_its_groups_in_registers(warps):
    row = Blocked((8,), (32,), (warps,))          # 7168 = 3.5 (or 1.75) repeats of 8 a lane
    assert row.dims((7168,))[0].wraps
    groups = reshaped(row, (7168,), (56, 128))
    assert groups is not None and groups.dims((56, 128))[0].wraps      # rows 56.. are copies
    assert owners_with_copies(groups, (56, 128)) == owners_with_copies(row, (7168,))
    assert reshape_in_registers(row, (7168,), groups, (56, 128))
    assert reshaped(groups, (56, 128), (7168,)) == row


def test_copies_in_an_inner_dimension_that_a_reshape_merges_are_refused():
    layout = Blocked((1, 8), (1, 32), (1, 8))     # each row of 7168 padded to 8192
    assert reshaped(layout, (2, 7168), (14336,)) is None


@pytest.mark.parametrize("shape,new_shape,free", [
    ((4, 128), (512,), True), ((4, 128), (4, 2, 64), True), ((96,), (3, 32), True),
    ((1, 384), (3, 128), False)])      # its copies are lanes, the rows' repeats come first
def test_a_reshape_of_a_small_tile_keeps_its_copies_where_they_were(shape, new_shape, free):
    layout = choose_blocked(shape, 8, 4, 32)
    new = reshaped(layout, shape, new_shape)
    assert (new is not None) == free
    if free:
        assert owners_with_copies(new, new_shape) == owners_with_copies(layout, shape)
