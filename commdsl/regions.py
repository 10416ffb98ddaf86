"""The in-bounds part of a tile access, and whether its guard lets it run: what the CPU
interpreters read and write."""
from __future__ import annotations


def unguarded(op, operands):
    """(the operands without the guard, whether the access runs) of a load or get; a guard
    (passes/prefetch.py) turns it off where it is <= 0."""
    if not op.attrs.get("guard"):
        return operands, True
    return operands[:-1], operands[-1] > 0


def in_bounds_region(sizes, shape, starts):
    """(tensor index, tile index) of the in-bounds part of an access, or None; negative
    indices are out of bounds (as the GPU's unsigned compare makes them)."""
    t_index, tile_index = [], []
    for dim, start, size in zip(shape, starts, sizes):
        start = int(start)
        if size is None:
            if not 0 <= start < dim:
                return None
            t_index.append(start)
            continue
        lo, hi = max(start, 0), min(start + size, dim)
        if hi <= lo:
            return None
        t_index.append(slice(lo, hi))
        tile_index.append(slice(lo - start, hi - start))
    return tuple(t_index), tuple(tile_index)
