"""Lowers a persistent tile loop to a tile scheduler over one CTA per SM.

    for m0 in 0 .. M step BM, n0 in 0 .. N step BN persistent(raster = G) { body }
 -> grid = min(cdiv(M, BM) * cdiv(N, BN), SMs)     (SMs: the device's, or S of `sms = S`)
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
"""
from __future__ import annotations

from commdsl.diagnostics import CompileError
from commdsl.dims import BinOp, Const, Dim, SmCount, Sym
from commdsl.ir import Block, Builder, KernelIR, Op, ScalarType, Value
from commdsl.target import Target

I32 = ScalarType("i32")


def _dim(v: Value, kernel: KernelIR, producers: dict[int, Op], loc) -> Dim:
    if v in kernel.sizes:
        return Sym(v.name)
    op = producers.get(v.id)
    if op is not None and op.name == "const":
        return Const(op.attrs["value"])
    raise CompileError("the bounds of a persistent loop must be sizes or constants", loc,
                       "write e.g. 'm0 in 0 .. M step BM' with M a dimension of a parameter")


def _lower(op: Op, kernel: KernelIR, producers: dict[int, Op]) -> list[Op]:
    pre = Block()
    b = Builder(pre, op.loc)

    def const(n):
        return b.value("const", [], I32, value=n)

    steps, raster = op.attrs["steps"], op.attrs["raster"]
    cluster = op.attrs.get("cluster", 1)
    bounds = list(zip(op.operands[0::2], op.operands[1::2]))
    counts, dims = [], []
    for (lo, hi), step in zip(bounds, steps):
        extent = b.value("sub", [hi, lo], I32)
        counts.append(b.value("div", [b.value("add", [extent, const(step - 1)], I32),
                                      const(step)], I32))
        lo_dim, hi_dim = (_dim(v, kernel, producers, op.loc) for v in (lo, hi))
        extent_dim = hi_dim if lo_dim == Const(0) else BinOp("-", hi_dim, lo_dim)
        dims.append(BinOp("cdiv", extent_dim, Const(step)))
    if cluster > 1:                                   # count groups of C tile columns
        counts[1] = b.value("div", [b.value("add", [counts[1], const(cluster - 1)], I32),
                                    const(cluster)], I32)
        dims[1] = BinOp("cdiv", dims[1], Const(cluster))
    total, total_dim = counts[0], dims[0]
    for c, d in zip(counts[1:], dims[1:]):
        total, total_dim = b.value("mul", [total, c], I32), BinOp("*", total_dim, d)
    sms = SmCount(op.attrs.get("sms"))           # every SM, or the budget `sms = S`
    if cluster == 1:
        kernel.grid = (BinOp("min", total_dim, sms),)
    else:         # floor(SMs / C) clusters of C CTAs (cdiv(s - C + 1, C) = floor(s / C))
        clusters = BinOp("cdiv", BinOp("-", sms, Const(cluster - 1)), Const(cluster))
        kernel.grid = (BinOp("*", Const(cluster), BinOp("min", total_dim, clusters)),)
    pid = b.value("pid", [], I32, axis=0)
    nprogs = b.value("nprogs", [], I32, axis=0)
    if cluster > 1:                  # a cluster's CTAs are consecutive along x
        rank = b.value("rem", [pid, const(cluster)], I32)
        pid = b.value("div", [pid, const(cluster)], I32)
        nprogs = b.value("div", [nprogs, const(cluster)], I32)
        kernel.attrs["cluster"] = cluster
    t = Value(I32, "t")
    body = Block(args=[t])
    loop = b.op("for", [pid, total, nprogs], [], pipeline=None)
    loop.blocks.append(body)

    inner = Builder(Block(), op.loc)
    origins = op.blocks[0].args
    if len(bounds) == 1:
        indices = [t]
    else:
        per_group = inner.value("mul", [counts[1], inner.value("const", [], I32, value=raster)],
                                I32)
        group = inner.value("div", [t, per_group], I32)
        first = inner.value("mul", [group, inner.value("const", [], I32, value=raster)], I32)
        rows = inner.value("min", [inner.value("sub", [counts[0], first], I32),
                                   inner.value("const", [], I32, value=raster)], I32)
        r = inner.value("sub", [t, inner.value("mul", [group, per_group], I32)], I32)
        indices = [inner.value("add", [first, inner.value("rem", [r, rows], I32)], I32),
                   inner.value("div", [r, rows], I32)]
        if cluster > 1:
            group_col = inner.value("mul", [indices[1], inner.value("const", [], I32,
                                                                    value=cluster)], I32)
            indices[1] = inner.value("add", [group_col, rank], I32)
    if cluster > 1:              # the tile origin that differs between a cluster's CTAs
        kernel.attrs["cluster_varying"] = origins[1].id
    for (lo, _), step, index, origin in zip(bounds, steps, indices, origins):
        scaled = inner.value("mul", [index, inner.value("const", [], I32, value=step)], I32)
        inner.op("add", [lo, scaled], [I32]).results = [origin]   # the body's m0, n0
    body.ops = inner.block.ops + op.blocks[0].ops
    Builder(body, op.loc).op("yield", [], [])
    return pre.ops


def run(kernel: KernelIR, target: Target) -> KernelIR:
    producers = {r.id: o for o in kernel.walk() for r in o.results}
    new_ops: list[Op] = []
    for op in kernel.body.ops:
        new_ops += _lower(op, kernel, producers) if op.name == "tiles" else [op]
    kernel.body.ops = new_ops
    return kernel
