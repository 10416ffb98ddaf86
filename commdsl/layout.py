"""Tile layouts: which thread of a CTA holds which element of a tile.

`Blocked` splits every dimension into `spt` contiguous elements per thread, `tpw` threads
per warp and `wpc` warps per CTA (the innermost dimension varies fastest across lanes), and
repeats that pattern when the tile is larger. When the tile is smaller than one pattern,
or a size (48, 80) is not a multiple of it, coordinates past the end wrap around and those
slots hold copies ("replicas"); only the first copy counts in reductions and stores.
`Sliced` is a layout with one dimension reduced away: the threads that differed only along
it hold the same values. A Sliced layout may slice a Sliced one (a block reduced along both
axes).

A thread's elements are "slots": one per (repeat, element) pair in every dimension, listed
innermost-fastest, so `spt[-1]` consecutive slots are one vector in memory.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class DimMap:
    """How one tile dimension of `size` elements spreads over a CTA."""
    size: int
    spt: int            # elements per thread per repeat (capped at size)
    tpw: int            # lanes along this dimension
    wpc: int            # warps along this dimension
    lane_stride: int    # lane id step between neighbours along this dimension
    warp_stride: int

    @property
    def span(self) -> int:
        return self.spt * self.tpw * self.wpc

    @property
    def reps(self) -> int:
        return -(-self.size // self.span)

    @property
    def wraps(self) -> bool:
        """Some slots fall past the tile's end and hold copies of earlier elements: threads
        beyond a small tile, or the last repeat of a size the span does not divide (48, 80)."""
        return self.span * self.reps != self.size

    def offset(self, rep: int, elem: int) -> int:
        """The compile-time part of a slot's coordinate (the thread adds tc * spt)."""
        return rep * self.span + elem


def one_replica(m: DimMap) -> DimMap | None:
    """The lanes and warps that hold one whole copy of a dimension: m itself where nothing
    wraps; where the threads along it hold the elements several times over (a tile smaller
    than one pattern), the first size / spt of them, as a DimMap whose lane and warp
    coordinates are taken modulo its own counts. None where the copies are not whole
    replicas (a size the pattern does not divide, e.g. 80 over 64)."""
    if not m.wraps:
        return m
    threads = m.size // m.spt
    if m.reps != 1 or m.size % m.spt or threads & (threads - 1):
        return None
    lanes = min(m.tpw, threads)
    return replace(m, tpw=lanes, wpc=threads // lanes)


@dataclass(frozen=True)
class Blocked:
    spt: tuple[int, ...]
    tpw: tuple[int, ...]
    wpc: tuple[int, ...]

    def dims(self, shape: tuple[int, ...]) -> list[DimMap]:
        n = len(shape)
        lane_strides = [_prod(self.tpw[d + 1:]) for d in range(n)]
        warp_strides = [_prod(self.wpc[d + 1:]) for d in range(n)]
        return [DimMap(shape[d], min(self.spt[d], shape[d]), self.tpw[d], self.wpc[d],
                       lane_strides[d], warp_strides[d]) for d in range(n)]

    @property
    def num_warps(self) -> int:
        return _prod(self.wpc)

    def __str__(self):
        return f"blocked<spt={list(self.spt)}, tpw={list(self.tpw)}, wpc={list(self.wpc)}>"


@dataclass(frozen=True)
class Sliced:
    parent: "Blocked | Sliced"
    axis: int

    def dims(self, shape: tuple[int, ...]) -> list[DimMap]:
        full = shape[:self.axis] + (1,) + shape[self.axis:]
        maps = self.parent.dims(full)
        return maps[:self.axis] + maps[self.axis + 1:]

    def reduced_dim(self, shape: tuple[int, ...]) -> DimMap:
        """The dimension the threads that hold copies of each value differ along."""
        full = shape[:self.axis] + (1,) + shape[self.axis:]
        return self.parent.dims(full)[self.axis]

    def reduced_dims(self, shape: tuple[int, ...]) -> list[DimMap]:
        """The reduced dimension of this slice and of every slice it was made from."""
        full = shape[:self.axis] + (1,) + shape[self.axis:]
        inner = self.parent.reduced_dims(full) if isinstance(self.parent, Sliced) else []
        return [self.reduced_dim(shape)] + inner

    @property
    def root(self) -> Blocked:
        return self.parent.root if isinstance(self.parent, Sliced) else self.parent

    def __str__(self):
        return f"sliced<{self.parent}, axis={self.axis}>"


@dataclass(frozen=True)
class Compact:
    """A Sliced tile whose copies are split instead of repeated (passes/replicas.py): the
    `copies` lanes that hold the same slots of `parent` (they differ only along its reduced
    axis, `lane_stride` apart) each hold `ceil(R / copies)` of its R slots; lane position j
    of the group holds slots j, j + copies, ... modulo R (with R = 2 and 4 copies,
    positions 2 and 3 hold slots 0 and 1 again: the reduce-scatter that makes it keeps a
    power-of-two pattern; the copy at j + k * copies < R is the one that counts). A reduce
    makes it, elementwise ops and stores take it, `gather_copies` gives every lane all R
    slots back."""
    parent: Sliced

    def dims(self, shape: tuple[int, ...]) -> list[DimMap]:
        return self.parent.dims(shape)

    def copies(self, shape: tuple[int, ...]) -> int:
        return self.parent.reduced_dim(shape).tpw

    def lane_stride(self, shape: tuple[int, ...]) -> int:
        return self.parent.reduced_dim(shape).lane_stride

    def held(self, shape: tuple[int, ...]) -> int:
        return -(-len(slots(self.dims(shape))) // self.copies(shape))

    def __str__(self):
        return f"compact<{self.parent}>"


Layout = Blocked | Sliced | Compact


def slots(dims: list[DimMap]) -> list[tuple[tuple[int, int], ...]]:
    """Every slot as ((rep, elem) per dimension), innermost dimension fastest."""
    per_dim = [[(r, e) for r in range(d.reps) for e in range(d.spt)] for d in dims]
    return list(itertools.product(*per_dim))


def reshaped(layout: Blocked, shape: tuple[int, ...], new_shape: tuple[int, ...]) -> Blocked | None:
    """The Blocked layout of `new_shape` in which every thread holds, in the same slots, the
    elements (row-major) that `layout` gives it of `shape`; None where there is none, so a
    reshape between the two moves no data.

    Without copies, a Blocked layout writes an element's row-major index as mixed-radix
    digits, innermost dimension first and within each (element, lane, warp, repeat); a lane
    id's digits, a warp id's and a slot's appear in that sequence in their own order. So
    cutting the sequence where the new shape's dimensions begin gives the new layout, if
    each piece is again (element, lane, warp, repeat) in order. With copies (7168 elements
    over 256 threads 8 at a time: 3.5 repeats), the same cut of the layout padded to whole
    repeats, where the new shape's outer dimension takes the padding (56 x 128 padded to
    64 x 128: rows 56-63 copy rows 0-7 as elements 7168-8191 copy 0-1023), checked slot by
    slot."""
    dims = layout.dims(shape)
    if not any(d.wraps for d in dims):
        return _cut(dims, new_shape)
    padded = tuple(d.span * d.reps for d in dims)
    padded_new = _pad_outer(shape, padded, new_shape)
    if padded_new is None:
        return None
    new = _cut(layout.dims(padded), padded_new, wraps_allowed=True)
    if new is None or _owned(new, new_shape) != _owned(layout, shape):
        return None
    return new


def _cut(dims: list[DimMap], new_shape: tuple[int, ...], wraps_allowed=False) -> Blocked | None:
    digits = [(kind, count) for d in reversed(dims)
              for kind, count in (("e", d.spt), ("lane", d.tpw), ("warp", d.wpc), ("rep", d.reps))
              if count > 1]
    pieces = []
    for size in reversed(new_shape):
        piece = []
        while size > 1:
            if not digits:
                return None
            kind, count = digits[0]
            take = math.gcd(count, size)
            if take == 1:
                return None
            piece.append((kind, take))
            digits[0] = (kind, count // take)
            if count == take:
                digits.pop(0)
            size //= take
        pieces.append(piece)
    if digits:
        return None
    order = ("e", "lane", "warp", "rep")
    per_dim = []
    for piece in reversed(pieces):
        counts = dict.fromkeys(order, 1)
        last = -1
        for kind, count in piece:
            at = order.index(kind)
            if at < last:
                return None
            counts[kind] *= count
            last = at
        per_dim.append(counts)
    new = Blocked(tuple(c["e"] for c in per_dim), tuple(c["lane"] for c in per_dim),
                  tuple(c["warp"] for c in per_dim))
    return new if wraps_allowed or all(not d.wraps for d in new.dims(new_shape)) else None


def _pad_outer(shape, padded, new_shape) -> tuple[int, ...] | None:
    """new_shape grown where `shape` was padded: in each run of dimensions that the reshape
    maps onto each other, the new outer dimension takes the old outer one's padding; None
    where an inner dimension of a run is padded."""
    out, i, j = (), len(shape), len(new_shape)
    while i and j:
        old, new, a, b = [i - 1], [j - 1], shape[i - 1], new_shape[j - 1]
        i, j = i - 1, j - 1
        while a != b:
            if a < b and i:
                i -= 1
                old.append(i)
                a *= shape[i]
            elif b < a and j:
                j -= 1
                new.append(j)
                b *= new_shape[j]
            else:
                return None
        outer = old[-1]
        grown = new_shape[new[-1]] * padded[outer]
        if any(padded[d] != shape[d] for d in old[:-1]) or grown % shape[outer]:
            return None
        out = (grown // shape[outer], *(new_shape[d] for d in reversed(new[:-1]))) + out
    if any(padded[d] != shape[d] for d in range(i)):      # outer dimensions of size 1
        return None
    return tuple(new_shape[:j]) + out


def _owned(layout: Blocked, shape: tuple[int, ...]) -> dict:
    """(warp, lane, slot) -> (the element's row-major index, whether this is its first
    copy), from the layout's definition (the coordinates codegen.py computes)."""
    dims = layout.dims(shape)
    out = {}
    for warp, lane in itertools.product(range(layout.num_warps), range(_prod(layout.tpw))):
        base = [((warp // m.warp_stride) % m.wpc * m.tpw + (lane // m.lane_stride) % m.tpw)
                * m.spt for m in dims]
        for index, slot in enumerate(slots(dims)):
            raw = [b + m.offset(r, e) for b, m, (r, e) in zip(base, dims, slot)]
            flat = 0
            for x, n in zip(raw, shape):
                flat = flat * n + x % n
            out[warp, lane, index] = (flat, all(x < n for x, n in zip(raw, shape)))
    return out


def reshape_in_registers(layout, shape, new_layout, new_shape) -> bool:
    """Whether a reshape from (layout, shape) to (new_layout, new_shape) moves no data."""
    return isinstance(layout, Blocked) and reshaped(layout, shape, new_shape) == new_layout


def _prod(xs) -> int:
    p = 1
    for x in xs:
        p *= x
    return p


def choose_blocked(shape: tuple[int, ...], vec: int, num_warps: int, warp_size: int,
                   rows: int = 1) -> Blocked:
    """A layout that gives each thread `vec` contiguous innermost elements (and `rows`
    consecutive outermost ones, for a 2-D tile) and spreads lanes innermost-first and warps
    outermost-first, avoiding copies where the tile allows: where a tile that gives every
    thread a vector still leaves copies (7168 elements over 256 threads, 8 at a time: 3.5
    repeats), the widest narrower vector that leaves none. (A tile smaller than that keeps
    its vector: its copies are idle threads, not narrower loads.)"""
    layout = _blocked(shape, vec, num_warps, warp_size, rows)
    narrower = vec // 2 if _prod(shape) >= num_warps * warp_size * vec else 0
    while narrower >= 1 and any(d.wraps for d in layout.dims(shape)):
        candidate = _blocked(shape, narrower, num_warps, warp_size, rows)
        if not any(d.wraps for d in candidate.dims(shape)):
            return candidate
        narrower //= 2
    return layout


def _blocked(shape, vec, num_warps, warp_size, rows) -> Blocked:
    n = len(shape)
    if n == 0:
        return Blocked((), (), ())
    spt = [1] * n
    spt[-1] = vec if shape[-1] % vec == 0 else 1
    if n == 2 and rows > 1 and shape[0] % rows == 0:
        spt[0] = rows
    per_thread = [max(1, shape[d] // spt[d]) for d in range(n)]
    tpw, lanes = [1] * n, warp_size
    for d in reversed(range(n)):
        t = _pow2_dividing(per_thread[d], lanes)
        tpw[d], lanes = t, lanes // t
    tpw[0] *= lanes                                   # a small tile: the rest hold copies
    wpc, warps = [1] * n, num_warps
    for d in range(n):
        w = _pow2_dividing(max(1, per_thread[d] // tpw[d]), warps)
        wpc[d], warps = w, warps // w
    wpc[0] *= warps
    return Blocked(tuple(spt), tuple(tpw), tuple(wpc))


def _pow2_dividing(n: int, cap: int) -> int:
    p = 1
    while p * 2 <= cap and n % (p * 2) == 0:
        p *= 2
    return p
