"""Communication between ranks: peer memory, signals, waits, and who this rank is.

Indices are i32 scalars except where `gather` names a dimension: there the index is a 1-D
i32 tile of row numbers (its length is that dimension's size in `sizes`), and `rank` may be
a tile of the same length, one rank per row.
"""
from __future__ import annotations

from commdsl.ir import ScalarType, TensorType, TileType

from .memory import ACCESS_ATTRS, check_access_value
from .registry import (ACQUIRE, BARRIER, COMM, INDEX, MEMORY, READS, RELEASE, SIDE_EFFECTS,
                       WRITES, declare, fail)

FAMILY = "comm"


def _i32(t) -> bool:
    return t.dtype == "i32"


def _symmetric(op) -> TensorType:
    tensor = op.operands[0].type
    if not isinstance(tensor, TensorType) or not tensor.symmetric:
        fail(op, "needs a symmetric tensor as first operand")
    return tensor


def _peer_memory(op):
    tensor = _symmetric(op)
    sizes, gather = op.attrs["sizes"], op.attrs["gather"]
    idx = op.operands[1:1 + tensor.rank]
    rank = op.operands[1 + tensor.rank]
    if len(sizes) != tensor.rank or len(idx) != tensor.rank:
        fail(op, f"needs one index and one size per dimension of a rank-{tensor.rank} tensor")
    for d, i in enumerate(idx):
        if d in gather:
            if not (isinstance(i.type, TileType) and _i32(i.type) and
                    i.type.shape == (sizes[d],)):
                fail(op, f"gathered dimension {d} needs an i32 tile of {sizes[d]} row indices")
        elif not (isinstance(i.type, ScalarType) and _i32(i.type)):
            fail(op, "indices must be i32 scalars outside the gathered dimension")
    if gather and (len(gather) > 1 or gather[0] == tensor.rank - 1):
        fail(op, f"gathers along at most one dimension, never the innermost: {gather}")
    if not _i32(rank.type) or (isinstance(rank.type, TileType) and
                               (not gather or rank.type.shape != (sizes[gather[0]],))):
        fail(op, "rank must be an i32 scalar, or an i32 tile with one rank per gathered row")
    check_access_value(op, tensor, reads=op.name == "get", fixed=2 + tensor.rank)


BY = {"signal": ("program", "consumers"), "wait": ("program", "thread", "warpgroup")}


def _flag(op, trailing: int):
    by = op.attrs.get("by", "program")
    if by not in BY[op.name]:
        fail(op, f"runs by one of {', '.join(BY[op.name])}, not {by!r}")
    tensor = _symmetric(op)
    if tensor.dtype != "i32":
        fail(op, "flags are i32")
    if len(op.operands) != 1 + tensor.rank + trailing:
        fail(op, f"takes the flags, {tensor.rank} indices and {trailing} more operand(s)")
    if not all(isinstance(v.type, ScalarType) and _i32(v.type) for v in op.operands[1:]):
        fail(op, "indices, rank and value must be i32 scalars")


PEER_ATTRS = {**ACCESS_ATTRS, "gather": "the dimensions indexed by a tile of row numbers "
              "(at most one, never the innermost)"}


# ---- CPU meaning (commdsl/interpreter.py; other ranks in commdsl/interpreter_comm.py) ------

def _rows(op, indices, rank):
    """(rank, point indices) of each row a get/put moves; one entry without a gather."""
    gather = op.attrs["gather"]
    if not gather:
        return [(int(rank), list(indices))]
    d = gather[0]
    rows = indices[d].tolist()
    ranks = rank.tolist() if hasattr(rank, "tolist") and rank.dim() else [int(rank)] * len(rows)
    return [(r, [*indices[:d], row, *indices[d + 1:]]) for r, row in zip(ranks, rows)]


def _row_sizes(op):
    sizes = list(op.attrs["sizes"])
    for d in op.attrs["gather"]:
        sizes[d] = None
    return sizes


def _row_index(op, j, tile_index):
    """Where in the tile row j of a gather goes."""
    gathered = op.attrs["gather"]
    if not gathered:
        return tile_index
    axis = sum(1 for s in op.attrs["sizes"][:gathered[0]] if s is not None)
    return tile_index[:axis] + (j,) + tile_index[axis:]


def _run_get(ctx, op, tensor, *rest):
    import torch
    from commdsl.regions import in_bounds_region, unguarded
    rest, runs = unguarded(op, rest)
    indices, rank = rest[:-1], rest[-1]
    t = op.result.type
    out = torch.zeros(t.shape if isinstance(t, TileType) else (), dtype=tensor.dtype)
    sizes = _row_sizes(op)
    for j, (r, starts) in enumerate(_rows(op, indices, rank) if runs else []):
        source = ctx.peer_copy(op, r)
        region = in_bounds_region(sizes, source.shape, starts)
        if region is not None:
            out[_row_index(op, j, region[1])] = source[region[0]]
    if isinstance(t, TileType) or out.is_floating_point():
        return out
    return int(out)


def _run_put(ctx, op, tensor, *rest):
    import torch
    from commdsl.regions import in_bounds_region
    indices, rank, value = rest[:-2], rest[-2], rest[-1]
    if not isinstance(value, torch.Tensor):
        value = torch.tensor(value)
    sizes = _row_sizes(op)
    for j, (r, starts) in enumerate(_rows(op, indices, rank)):
        target = ctx.peer_copy(op, r)
        region = in_bounds_region(sizes, target.shape, starts)
        if region is not None:
            target[region[0]] = value[_row_index(op, j, region[1])].to(target.dtype)


def _run_signal(ctx, op, flags, *rest):
    indices, rank, value = rest[:-2], rest[-2], rest[-1]
    ctx.peer_copy(op, int(rank))[tuple(indices)] = value


def _run_wait(ctx, op, flags, *rest):
    ctx.wait_flag(op, rest[:-1], rest[-1])


def _run_rank(ctx, op):
    return ctx.comm.rank


def _run_world(ctx, op):
    return ctx.comm.world


def _run_epoch(ctx, op):
    return ctx.comm.epoch


declare("get", "get(x, idx..., rank[, g]) {sizes, gather, cache} : tile | scalar",
        "a tile of rank `rank`'s copy of the symmetric tensor x; with attribute `guard`, "
        "only where the i32 g > 0", traits=(COMM, MEMORY, READS), verify=_peer_memory,
        attrs={**PEER_ATTRS, "guard": "a trailing i32 guard operand (passes/prefetch.py)"},
        interpret=_run_get, family=FAMILY)
declare("put", "put(x, idx..., rank, value) {sizes, gather, cache}",
        "value into rank `rank`'s copy of x", traits=(COMM, MEMORY, WRITES, SIDE_EFFECTS),
        verify=_peer_memory, attrs=PEER_ATTRS, interpret=_run_put, family=FAMILY)
declare("signal", "signal(flags, idx..., rank, value) {by}", "release store at system scope "
        "of value into rank `rank`'s flags[idx], once per program after its earlier accesses",
        traits=(COMM, BARRIER, RELEASE, SIDE_EFFECTS), verify=lambda op: _flag(op, 2),
        attrs={"by": "who meets before the store: the program (default) or, in a "
               "warp-specialized kernel, the consumer warpgroups (passes/pipeline.py)"},
        interpret=_run_signal, family=FAMILY)
declare("wait", "wait(flags, idx..., value) {by}", "acquire spin at system scope until this "
        "rank's flags[idx] >= value, once per program; bounded by the launch's timeout",
        traits=(COMM, BARRIER, ACQUIRE, SIDE_EFFECTS), verify=lambda op: _flag(op, 1),
        attrs={"by": "program (default: one thread spins, the program meets), thread (the "
               "thread that runs it spins and meets nobody: a warp-specialized kernel's "
               "producer) or warpgroup (its first thread spins, the warpgroup meets: the "
               "consumers; passes/pipeline.py)"},
        interpret=_run_wait, family=FAMILY)
declare("rank", "rank() : i32", "this rank", traits=(INDEX,), interpret=_run_rank, family=FAMILY)
declare("world", "world() : i32", "the number of ranks", traits=(INDEX,),
        interpret=_run_world, family=FAMILY)
declare("epoch", "epoch() : i32", "the launch's epoch", traits=(INDEX,),
        interpret=_run_epoch, family=FAMILY)
