"""Tile IR for communication between ranks: peer memory, signals, waits.

    get(x, idx..., rank[, g]) {sizes, gather, cache}    a tile of rank `rank`'s copy of the
                                                        symmetric tensor x; with attribute
                                                        `guard`, only where the i32 g > 0
    put(x, idx..., rank, value) {sizes, gather, cache}  value into rank `rank`'s copy of x
    signal(flags, idx..., rank, value)                  release store at system scope of value
                                                        into rank `rank`'s flags[idx], once per
                                                        program after its earlier accesses
    wait(flags, idx..., value)                          acquire spin at system scope until this
                                                        rank's flags[idx] >= value, once per
                                                        program; bounded by the launch's timeout
    rank(), world(), epoch()                            i32: this rank, the number of ranks, the
                                                        launch's epoch

Indices are i32 scalars except where `gather` names a dimension: there the index is a 1-D
i32 tile of row numbers (its length is that dimension's size in `sizes`), and `rank` may be
a tile of the same length, one rank per row. The verifier rules are in RULES, merged into
commdsl.ir_verifier.
"""
from __future__ import annotations

from .ir import Op, ScalarType, TensorType, TileType

PEER_OPS = ("get", "put")


def _fail(op: Op, msg: str):
    from .ir_verifier import IRVerifyError     # that module merges RULES: import late
    raise IRVerifyError(f"'{op.name}' {msg}")


def _is_i32(t) -> bool:
    return t.dtype == "i32"


def _symmetric(op: Op) -> TensorType:
    tensor = op.operands[0].type
    if not isinstance(tensor, TensorType) or not tensor.symmetric:
        _fail(op, "needs a symmetric tensor as first operand")
    return tensor


def _peer_memory(op: Op):
    tensor = _symmetric(op)
    sizes, gather = op.attrs["sizes"], op.attrs["gather"]
    idx = op.operands[1:1 + tensor.rank]
    rank = op.operands[1 + tensor.rank]
    if len(sizes) != tensor.rank or len(idx) != tensor.rank:
        _fail(op, f"needs one index and one size per dimension of a rank-{tensor.rank} tensor")
    for d, i in enumerate(idx):
        if d in gather:
            if not (isinstance(i.type, TileType) and _is_i32(i.type) and
                    i.type.shape == (sizes[d],)):
                _fail(op, f"gathered dimension {d} needs an i32 tile of {sizes[d]} row indices")
        elif not (isinstance(i.type, ScalarType) and _is_i32(i.type)):
            _fail(op, "indices must be i32 scalars outside the gathered dimension")
    if gather and (len(gather) > 1 or gather[0] == tensor.rank - 1):
        _fail(op, f"gathers along at most one dimension, never the innermost: {gather}")
    if not _is_i32(rank.type) or (isinstance(rank.type, TileType) and
                                  (not gather or rank.type.shape != (sizes[gather[0]],))):
        _fail(op, "rank must be an i32 scalar, or an i32 tile with one rank per gathered row")
    from .ir_verifier import check_access_value     # that module merges RULES: import late
    check_access_value(op, tensor, reads=op.name == "get", fixed=2 + tensor.rank)


def _flag(op: Op, trailing: int):
    tensor = _symmetric(op)
    if tensor.dtype != "i32":
        _fail(op, "flags are i32")
    if len(op.operands) != 1 + tensor.rank + trailing:
        _fail(op, f"takes the flags, {tensor.rank} indices and {trailing} more operand(s)")
    if not all(isinstance(v.type, ScalarType) and _is_i32(v.type) for v in op.operands[1:]):
        _fail(op, "indices, rank and value must be i32 scalars")


RULES = {
    "get": _peer_memory,
    "put": _peer_memory,
    "signal": lambda op: _flag(op, 2),
    "wait": lambda op: _flag(op, 1),
    "rank": lambda op: None,
    "world": lambda op: None,
    "epoch": lambda op: None,
}
