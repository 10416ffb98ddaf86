"""Lowers a persistent tile loop to a tile scheduler over one CTA per SM.

    for m0 in 0 .. M step BM, n0 in 0 .. N step BN persistent(raster = G) { body }
 -> grid = cdiv(T, cdiv(T, SMs))     T = cdiv(M, BM) * cdiv(N, BN) tiles, SMs the device's:
                                       the fewest CTAs that take the tiles in as many
                                       waves as one CTA per SM would
           (min(T, S) with a budget `sms = S`)
    for t in pid .. num_tiles step nprogs {
      m0, n0 = the t-th tile origin in grouped order;  body
    }

The grouped (rasterized) order walks G tile rows down before moving one tile column right,
so the ~SM-count tiles in flight at any time share G row bands of A and few column bands of
B: DeepGEMM's and Triton's L2-friendly order. The last band holds the rows that are left.

With `cluster = C` (2), the scheduler hands out C-wide groups of neighbouring tiles of one
tile row instead: CTA pairs of a cluster (pid / C, the same tile count for both) take tile
columns n * C + rank, so their first operand's tile (A's rows) is the same and TMA multicast
(passes/pipeline.py) loads it once for both. A pair's second tile may lie past N: the CTA
still runs the loop (its partner needs its half of A) and its stores are masked off.

A loop over groups of tiles (three ranges, or a range whose end depends on an earlier
coordinate: a `ragged` range, DeepGEMM's masked layout) numbers the tiles group after group:

    for g in 0 .. G, m0 in 0 .. load masked_m[g] step BM, n0 in 0 .. N step BN persistent(...)
 -> grid = SMs      (the tile count is known only at run time)
    total = sum over groups of tiles(g)         tiles(g): the group's m0 count x n0 count
    for t in pid .. total step nprogs {
      g, first, rows, cols = the group whose tiles t falls among (a scan over the groups)
      m0, n0 = tile t - first of that group's rows x cols tiles, in grouped order;  body
    }

so the tiles of every group are spread evenly over all CTAs, as DeepGEMM's masked scheduler
does. A ragged end is evaluated wherever tiles(g) is (its end block is copied there), so it
must give every CTA the same count: it may not depend on the program id or read a tensor
the kernel writes. An empty group (an end at or below the start) has no tiles.
"""
from __future__ import annotations

from commdsl.diagnostics import CompileError
from commdsl.dims import BinOp, Const, Dim, SmCount, Sym
from commdsl.ir import Block, Builder, KernelIR, Op, ScalarType, Value
from commdsl.ops import PER_CTA, READS, WRITES, has_trait
from commdsl.ops.control import tile_ranges
from commdsl.target import Target

I32 = ScalarType("i32")


# Integer ops a persistent loop's bound may combine sizes and constants with.
_ARITHMETIC = {"add": "+", "sub": "-", "mul": "*"}


def _dim(v: Value, kernel: KernelIR, producers: dict[int, Op], loc) -> Dim:
    if v in kernel.sizes:
        return Sym(v.name)
    op = producers.get(v.id)
    if op is not None and op.name == "const":
        return Const(op.attrs["value"])
    if op is not None and op.name in _ARITHMETIC:          # e.g. B * S
        lhs, rhs = (_dim(x, kernel, producers, loc) for x in op.operands)
        return BinOp(_ARITHMETIC[op.name], lhs, rhs)
    raise CompileError("the bounds of a persistent loop must be sizes or constants, or their sums, "
                       "differences and products",
                       loc if op is None else op.loc,
                       "write e.g. 'm0 in 0 .. M step BM' with M a dimension of a parameter; "
                       "a later range may end at a value of the earlier coordinates, e.g. "
                       "'m0 in 0 .. load masked_m[g] step BM'")


def _const(b: Builder, n: int) -> Value:
    return b.value("const", [], I32, value=n)


def _cdiv(b: Builder, x: Value, n: int) -> Value:
    return b.value("div", [b.value("add", [x, _const(b, n - 1)], I32), _const(b, n)], I32)


def _count(b: Builder, lo: Value, hi: Value, step: int) -> Value:
    """The number of origins lo, lo + step, ... below hi."""
    return _cdiv(b, b.value("sub", [hi, lo], I32), step)


def _rasterize(b: Builder, t: Value, rows: Value, cols: Value, raster: int) -> list[Value]:
    """(row, column) of tile t of a rows x cols grid walked `raster` rows at a time."""
    per_group = b.value("mul", [cols, _const(b, raster)], I32)
    group = b.value("div", [t, per_group], I32)
    first = b.value("mul", [group, _const(b, raster)], I32)
    band = b.value("min", [b.value("sub", [rows, first], I32), _const(b, raster)], I32)
    r = b.value("sub", [t, b.value("mul", [group, per_group], I32)], I32)
    return [b.value("add", [first, b.value("rem", [r, band], I32)], I32),
            b.value("div", [r, band], I32)]


def _balanced(total: Dim, slots: Dim) -> Dim:
    """As few programs as take `total` tiles in the waves `slots` programs would need:
    cdiv(total, waves), waves = cdiv(total, slots). 896 tiles on 132 SMs take 7 waves either
    way, and 128 CTAs run them with every wave full and four SMs idle, which lowers the power
    drawn (DeepGEMM sizes its grid so). min(total, slots) where total <= slots; 0 for none."""
    waves = BinOp("max", BinOp("cdiv", total, slots), Const(1))
    return BinOp("cdiv", total, waves)


def _launch(b: Builder, kernel: KernelIR, op: Op, total_dim: Dim | None):
    """Sizes the grid (every SM of the budget when the tile count is known only at run
    time) and gives (pid, nprogs, rank): the cluster's index and count, and the CTA's rank
    in it (None without clusters)."""
    cluster = op.attrs.get("cluster", 1)
    sms = SmCount(op.attrs.get("sms"))           # every SM, or the budget `sms = S`
    # floor(SMs / C) clusters of C CTAs (cdiv(s - C + 1, C) = floor(s / C)), at least one
    slots = sms if cluster == 1 else BinOp("max", BinOp("cdiv", BinOp("-", sms, Const(
        cluster - 1)), Const(cluster)), Const(1))
    if total_dim is not None:     # a budget is the author's split with communication: kept
        slots = _balanced(total_dim, slots) if op.attrs.get("sms") is None else \
            BinOp("min", total_dim, slots)
    kernel.grid = (slots if cluster == 1 else BinOp("*", Const(cluster), slots),)
    pid = b.value("pid", [], I32, axis=0)
    nprogs = b.value("nprogs", [], I32, axis=0)
    if cluster == 1:
        return pid, nprogs, None
    rank = b.value("rem", [pid, _const(b, cluster)], I32)
    kernel.attrs["cluster"] = cluster
    return (b.value("div", [pid, _const(b, cluster)], I32),
            b.value("div", [nprogs, _const(b, cluster)], I32), rank)


def _tile_loop(b: Builder, start: Value, total: Value, step: Value) -> Block:
    """`for t in start .. total step step`: appends it and gives its body."""
    body = Block(args=[Value(I32, "t")])
    b.op("for", [start, total, step], [], pipeline=None).blocks.append(body)
    return body


def _set_origins(b: Builder, kernel: KernelIR, op: Op, ranges, steps, indices,
                 rank: Value | None, origins: list[Value]) -> None:
    """origin = lo + index * step for each tile range; with a cluster, the last index
    counts C-wide groups of tiles, of which the CTA takes the one at its rank."""
    cluster = op.attrs.get("cluster", 1)
    if cluster > 1:
        group_col = b.value("mul", [indices[-1], _const(b, cluster)], I32)
        indices[-1] = b.value("add", [group_col, rank], I32)
        kernel.attrs["cluster_varying"] = origins[-1].id   # differs between its CTAs
    for (lo, _), step, index, origin in zip(ranges, steps, indices, origins):
        scaled = b.value("mul", [index, _const(b, step)], I32)
        b.op("add", [lo, scaled], [I32]).results = [origin]   # the body's m0, n0


def _lower_flat(op: Op, kernel: KernelIR, producers: dict[int, Op]) -> list[Op]:
    """One or two ranges of fixed bounds: the tile index t is the loop variable."""
    b = Builder(Block(), op.loc)
    ranges, steps = tile_ranges(op), op.attrs["steps"]
    cluster = op.attrs.get("cluster", 1)
    counts = [_count(b, lo, hi, step) for (lo, hi), step in zip(ranges, steps)]
    dims = [_extent_dim(lo, hi, step, kernel, producers, op.loc)
            for (lo, hi), step in zip(ranges, steps)]
    if cluster > 1:                                   # count groups of C tile columns
        counts[-1] = _cdiv(b, counts[-1], cluster)
        dims[-1] = BinOp("cdiv", dims[-1], Const(cluster))
    total, total_dim = counts[0], dims[0]
    for c, d in zip(counts[1:], dims[1:]):
        total, total_dim = b.value("mul", [total, c], I32), BinOp("*", total_dim, d)
    pid, nprogs, rank = _launch(b, kernel, op, total_dim)
    body = _tile_loop(b, pid, total, nprogs)
    t = body.args[0]
    inner = Builder(body, op.loc)
    indices = [t] if len(ranges) == 1 else _rasterize(inner, t, *counts, op.attrs["raster"])
    _set_origins(inner, kernel, op, ranges, steps, indices, rank, op.blocks[0].args)
    body.ops += op.blocks[0].ops
    Builder(body, op.loc).op("yield", [], [])
    return b.block.ops


def _extent_dim(lo: Value, hi: Value, step: int, kernel, producers, loc) -> Dim:
    lo_dim, hi_dim = (_dim(v, kernel, producers, loc) for v in (lo, hi))
    extent = hi_dim if lo_dim == Const(0) else BinOp("-", hi_dim, lo_dim)
    return BinOp("cdiv", extent, Const(step))


def _end(b: Builder, end: Value | Block, group: Value) -> Value:
    """A range's end for the group at origin `group`: the operand, or its end block's
    value, copied in."""
    if isinstance(end, Value):
        return end
    mapping = {end.args[0].id: group}
    b.block.ops += [op.copy(mapping) for op in end.ops[:-1]]
    yielded = end.ops[-1].operands[0]
    return mapping.get(yielded.id, yielded)


def _group_tiles(b: Builder, op: Op, ranges, group: Value) -> tuple[list[Value], Value]:
    """The tile counts along each tile range of the group at origin `group` (the last in
    C-wide groups with a cluster) and their product. Ragged counts are clamped at 0."""
    counts = []
    for (lo, end), step in zip(ranges[1:], op.attrs["steps"][1:]):
        count = _count(b, lo, _end(b, end, group), step)
        counts.append(count if isinstance(end, Value)
                      else b.value("max", [count, _const(b, 0)], I32))
    cluster = op.attrs.get("cluster", 1)
    if cluster > 1:
        counts[-1] = _cdiv(b, counts[-1], cluster)
    tiles = counts[0]
    for c in counts[1:]:
        tiles = b.value("mul", [tiles, c], I32)
    return counts, tiles


def _group_origin(b: Builder, op: Op, ranges, j: Value) -> Value:
    return b.value("add", [ranges[0][0], b.value("mul", [j, _const(b, op.attrs["steps"][0])],
                                                 I32)], I32)


def _sum_over_groups(b: Builder, op: Op, ranges, groups: Value) -> Value:
    """Every group's tile count, added up (once per CTA, at the start)."""
    body = Block(args=[Value(I32, "j"), Value(I32, "tiles")])
    loop = b.op("for", [_const(b, 0), groups, _const(b, 1), _const(b, 0)], [I32],
                pipeline=None)
    loop.blocks.append(body)
    inner = Builder(body, op.loc)
    _, tiles = _group_tiles(inner, op, ranges, _group_origin(inner, op, ranges, body.args[0]))
    inner.op("yield", [inner.value("add", [body.args[1], tiles], I32)], [])
    return loop.result


def _find_group(b: Builder, op: Op, ranges, groups: Value, t: Value, group: Value):
    """(first tile, tile counts) of the group that holds tile t, whose origin becomes
    `group`: the last group starting at or before t (an empty one starts where the next
    does, so it is passed over), by a scan over the groups."""
    width = len(ranges) - 1
    zero = _const(b, 0)
    body = Block(args=[Value(I32, "j"), Value(I32, "g"), Value(I32, "first"),
                       *(Value(I32, "count") for _ in range(width)), Value(I32, "start")])
    loop = b.op("for", [zero, groups, _const(b, 1), ranges[0][0], zero, *[zero] * width, zero],
                [I32] * (3 + width), pipeline=None)
    loop.blocks.append(body)
    inner = Builder(body, op.loc)
    _, found_g, found_first, *found_counts, start = body.args
    origin = _group_origin(inner, op, ranges, body.args[0])
    counts, tiles = _group_tiles(inner, op, ranges, origin)
    reached = inner.value("cmp", [t, start], ScalarType("bool"), pred=">=")
    chosen = [inner.value("select", [reached, new, old], I32) for new, old in
              zip([origin, start, *counts], [found_g, found_first, *found_counts])]
    inner.op("yield", [*chosen, inner.value("add", [start, tiles], I32)], [])
    loop.results[0] = group
    return loop.results[1], loop.results[2:2 + width]


def _lower_grouped(op: Op, kernel: KernelIR, producers: dict[int, Op]) -> list[Op]:
    """Ranges (group, tile rows[, tile columns]): the tiles numbered group after group."""
    ranges, steps = tile_ranges(op), op.attrs["steps"]
    for lo, end in ranges:
        if isinstance(end, Block):
            _check_end(end, kernel, producers)
    b = Builder(Block(), op.loc)
    (lo0, hi0), step0 = ranges[0], steps[0]
    group_dim = _extent_dim(lo0, hi0, step0, kernel, producers, op.loc)
    groups = _count(b, lo0, hi0, step0)
    dims = []                              # None for a ragged range: a run-time count
    for (lo, end), step in zip(ranges[1:], steps[1:]):
        dims.append(None if isinstance(end, Block) else
                    _extent_dim(lo, end, step, kernel, producers, op.loc))
        _dim(lo, kernel, producers, op.loc)
    total_dim = None
    if None not in dims:
        cluster = op.attrs.get("cluster", 1)
        if cluster > 1:
            dims[-1] = BinOp("cdiv", dims[-1], Const(cluster))
        total_dim = group_dim
        for d in dims:
            total_dim = BinOp("*", total_dim, d)
    total = _sum_over_groups(b, op, ranges, groups)
    pid, nprogs, rank = _launch(b, kernel, op, total_dim)
    body = _tile_loop(b, pid, total, nprogs)
    inner = Builder(body, op.loc)
    origins = op.blocks[0].args
    first, counts = _find_group(inner, op, ranges, groups, body.args[0], origins[0])
    local = inner.value("sub", [body.args[0], first], I32)
    indices = ([local] if len(counts) == 1 else
               _rasterize(inner, local, *counts, op.attrs["raster"]))
    _set_origins(inner, kernel, op, ranges[1:], steps[1:], indices, rank, origins[1:])
    body.ops += op.blocks[0].ops
    Builder(body, op.loc).op("yield", [], [])
    return b.block.ops


def _check_end(end: Block, kernel: KernelIR, producers: dict[int, Op]) -> None:
    """A ragged end must be one value for the whole launch, computable wherever the
    scheduler counts a group's tiles: from the group's origin, not the other tile origins,
    and the same on every CTA."""
    others = {a.id for a in end.args[1:]}
    for op in end.walk():
        if any(v.id in others for v in op.operands):
            raise CompileError("a tile range whose end depends on another tile coordinate "
                               "than the first (the group) is not supported yet", op.loc,
                               "let the end depend on the first coordinate only, e.g. "
                               "'n0 in 0 .. load n_of[g] step BN'")
    written = {op.operands[0].id for op in kernel.walk() if has_trait(op, WRITES)}
    seen: set[int] = set()
    pending = list(end.ops)
    while pending:                      # the end block and the values it uses, transitively
        op = pending.pop()
        if id(op) in seen:
            continue
        seen.add(id(op))
        if has_trait(op, PER_CTA):
            raise CompileError("the end of a persistent loop's range must be the same on "
                               "every CTA, so that each counts the same tiles; this one "
                               f"depends on '{op.name}'", end.ops[-1].loc,
                               "compute it from the earlier coordinates, sizes and tensors "
                               "the kernel only reads, e.g. 'load masked_m[g]'")
        if has_trait(op, READS) and op.operands[0].id in written:
            raise CompileError(f"the end of a persistent loop's range reads "
                               f"'{op.operands[0].name}', which this kernel writes: CTAs "
                               "would count different tiles", op.loc,
                               "read the counts from a tensor the kernel does not write")
        for block in op.blocks:
            pending += block.ops
        pending += [producers[v.id] for v in op.operands if v.id in producers]


def run(kernel: KernelIR, target: Target) -> KernelIR:
    producers = {r.id: o for o in kernel.walk() for r in o.results}
    new_ops: list[Op] = []
    for op in kernel.body.ops:
        if op.name != "tiles":
            new_ops.append(op)
        elif len(op.attrs["steps"]) == 3 or op.attrs.get("ragged"):
            new_ops += _lower_grouped(op, kernel, producers)
        else:
            new_ops += _lower_flat(op, kernel, producers)
    kernel.body.ops = new_ops
    return kernel
