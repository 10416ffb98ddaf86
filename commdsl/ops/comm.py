"""Communication between ranks: peer memory, signals, waits, and who this rank is.

Indices are i32 scalars except where `gather` names a dimension: there the index is a 1-D
i32 tile of row numbers (its length is that dimension's size in `sizes`), and `rank` may be
a tile of the same length, one rank per row.
"""
from __future__ import annotations

from commdsl.ir import ScalarType, TensorType, TileType

from .memory import ACCESS_ATTRS, check_access_value
from .registry import BARRIER, COMM, INDEX, MEMORY, SIDE_EFFECTS, declare, fail

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


def _flag(op, trailing: int):
    tensor = _symmetric(op)
    if tensor.dtype != "i32":
        fail(op, "flags are i32")
    if len(op.operands) != 1 + tensor.rank + trailing:
        fail(op, f"takes the flags, {tensor.rank} indices and {trailing} more operand(s)")
    if not all(isinstance(v.type, ScalarType) and _i32(v.type) for v in op.operands[1:]):
        fail(op, "indices, rank and value must be i32 scalars")


PEER_ATTRS = {**ACCESS_ATTRS, "gather": "the dimensions indexed by a tile of row numbers "
              "(at most one, never the innermost)"}

declare("get", "get(x, idx..., rank[, g]) {sizes, gather, cache} : tile | scalar",
        "a tile of rank `rank`'s copy of the symmetric tensor x; with attribute `guard`, "
        "only where the i32 g > 0", traits=(COMM, MEMORY), verify=_peer_memory,
        attrs={**PEER_ATTRS, "guard": "a trailing i32 guard operand (passes/prefetch.py)"},
        family=FAMILY)
declare("put", "put(x, idx..., rank, value) {sizes, gather, cache}",
        "value into rank `rank`'s copy of x", traits=(COMM, MEMORY, SIDE_EFFECTS),
        verify=_peer_memory, attrs=PEER_ATTRS, family=FAMILY)
declare("signal", "signal(flags, idx..., rank, value)", "release store at system scope of "
        "value into rank `rank`'s flags[idx], once per program after its earlier accesses",
        traits=(COMM, BARRIER, SIDE_EFFECTS), verify=lambda op: _flag(op, 2), family=FAMILY)
declare("wait", "wait(flags, idx..., value)", "acquire spin at system scope until this "
        "rank's flags[idx] >= value, once per program; bounded by the launch's timeout",
        traits=(COMM, BARRIER, SIDE_EFFECTS), verify=lambda op: _flag(op, 1), family=FAMILY)
declare("rank", "rank() : i32", "this rank", traits=(INDEX,), family=FAMILY)
declare("world", "world() : i32", "the number of ranks", traits=(INDEX,), family=FAMILY)
declare("epoch", "epoch() : i32", "the launch's epoch", traits=(INDEX,), family=FAMILY)
