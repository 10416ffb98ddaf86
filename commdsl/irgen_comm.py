"""Lowering of the communication statements and expressions to the tile IR (a mixin of
irgen's _Lowering).

    let t = get peer(src).x[rows, c : +CHUNK] cache(nc, L1 = no_allocate, L2 = 256B)
    put peer(dst).y[i, c : +CHUNK] = t
    signal peer(p).flags[rank] = epoch          # release store at system scope
    wait flags[p] >= epoch                      # acquire spin at system scope, bounded

`peer(r)` names rank r's copy of a `sym` tensor. An index of a get or put may be a 1-D
integer tile instead of a scalar: a gather (or scatter) of whole rows, one row per element,
as MoE dispatch reads the tokens a rank receives; `peer(...)` may then be a tile of the same
length, one rank per row. `rank`, `world` and `epoch` are this rank, the number of ranks and
the launch's epoch (the runtime gives every rank's n-th communication launch the same one).
"""
from __future__ import annotations

from . import ast
from .diagnostics import CompileError
from .ir import ScalarType, TileType, Value

BUILTINS = {
    "rank": "rank: this rank's index in the group",
    "world": "world: the number of ranks",
    "epoch": "epoch: this launch's epoch, the same on every rank for the n-th launch",
}
FLAG_DTYPE = "i32"


class CommLowering:
    """Builds on the host class's helpers (at, value, tensor, index_value, cache_attrs), so
    this module needs nothing from irgen."""

    def comm_builtin(self, e: ast.Name) -> Value:
        self.ir.attrs["comm"] = True
        return self.at(e).value(e.id, [], ScalarType("i32"))

    def peer_tensor(self, ref: ast.PeerRef) -> tuple[Value, Value]:
        """(tensor, rank) of `peer(r).x`: a symmetric tensor and a rank (scalar or 1-D tile)."""
        tensor = self.tensor(ref.tensor, local=False)
        if not tensor.type.symmetric:
            raise CompileError(f"'{tensor.name}' is not symmetric, so other ranks cannot reach "
                               "it", ref.tensor.span,
                               f"declare it '{tensor.name}: sym {tensor.type.dtype}[...]'")
        rank = self.value(ref.rank, "i32")
        if not _is_int_value(rank) or (isinstance(rank.type, TileType) and
                                       len(rank.type.shape) != 1):
            raise CompileError(f"peer(...) takes a rank: an integer or a 1-D tile of them, not "
                               f"{rank.type}", ref.rank.span, "e.g. peer(rank) or peer(src)")
        if isinstance(rank.type, TileType) and rank.type.dtype != "i32":
            raise CompileError(f"a tile of ranks is i32, not {rank.type.dtype}", ref.rank.span,
                               "load the ranks from an i32 tensor")
        rank = self.to_dtype(rank, "i32", ref.rank)
        self.ir.attrs["comm"] = True
        return tensor, rank

    def peer_indices(self, tensor: Value, rank: Value, indices, node):
        """Indices of a get/put: scalars, slices, and gathers (1-D integer tiles) of rows."""
        rank_n = tensor.type.rank
        if len(indices) != rank_n:
            raise CompileError(f"'{tensor.name}' has {rank_n} dimension(s) but {len(indices)} "
                               "index(es) are given", node.span,
                               "give one 'i', 'start : +length' or index tile per dimension")
        idx, sizes, gather = [], [], []
        for d, i in enumerate(indices):
            if isinstance(i, ast.Slice):
                idx.append(self.index_value(i.start))
                n = self.expr(i.length)
                if not getattr(n, "is_int", False) or n.value <= 0:
                    raise CompileError("a tile's length must be a positive compile-time integer",
                                       i.length.span, "use a number or a tune/const name")
                sizes.append(n.value)
                continue
            if not isinstance(i, ast.Point):
                raise CompileError("indices are 'i', 'start : +length' or a tile of row "
                                   "indices", i.span)
            v = self.value(i.index, "i32")
            if isinstance(v.type, ScalarType):
                idx.append(self.index_value(i.index))
                sizes.append(None)
                continue
            if v.type.dtype != "i32" or len(v.type.shape) != 1:
                raise CompileError(f"an index tile must be a 1-D i32 tile, not {v.type}",
                                   i.span, "e.g. load src_row[i : +ROWS] of an i32 tensor")
            if d == rank_n - 1:
                raise CompileError("a gather along the innermost dimension is not supported",
                                   i.span, "gather whole rows: index the outer dimension with "
                                   "the tile and slice the inner one")
            idx.append(v)
            sizes.append(v.type.shape[0])
            gather.append(d)
        if len(gather) > 1:
            raise CompileError("a get or put gathers along one dimension", node.span)
        if isinstance(rank.type, TileType):
            if not gather or rank.type.shape != (sizes[gather[0]],):
                raise CompileError("a tile of ranks needs a gather of as many rows",
                                   node.span, "peer(srcs).x[rows, ...] with srcs and rows of "
                                   "one length")
        return idx, tuple(sizes), tuple(gather)

    def expr_Get(self, e: ast.Get):
        tensor, rank = self.peer_tensor(e.peer)
        idx, sizes, gather = self.peer_indices(tensor, rank, e.indices, e)
        shape = tuple(s for s in sizes if s is not None)
        rtype = TileType(tensor.type.dtype, shape) if shape else ScalarType(tensor.type.dtype)
        return self.at(e).value("get", [tensor, *idx, rank], rtype, sizes=sizes, gather=gather,
                                **self.cache_attrs(e.cache))

    def stmt_Put(self, s: ast.Put):
        tensor, rank = self.peer_tensor(s.peer)
        idx, sizes, gather = self.peer_indices(tensor, rank, s.indices, s)
        shape = tuple(n for n in sizes if n is not None)
        value = self.value(s.value, tensor.type.dtype)
        if value.type.dtype != tensor.type.dtype:
            raise CompileError(f"cannot put {value.type.dtype} values into {tensor.type.dtype} "
                               f"tensor '{tensor.name}'", s.value.span,
                               f"convert explicitly: cast<{tensor.type.dtype}>(...)")
        vshape = value.type.shape if isinstance(value.type, TileType) else ()
        if isinstance(value.type, TileType) and vshape != shape:
            raise CompileError(f"a tile of shape [{', '.join(map(str, vshape))}] does not fit "
                               f"the slice [{', '.join(map(str, shape))}] of '{tensor.name}'",
                               s.value.span, "make the slice lengths match the tile")
        if shape and isinstance(value.type, ScalarType):
            value = self.broadcast_to(value, shape, s)
        self.at(s).op("put", [tensor, *idx, rank, value], [], sizes=sizes, gather=gather,
                      **self.cache_attrs(s.cache))

    def flag(self, tensor: Value, indices, node) -> list[Value]:
        """The scalar indices of one flag of a symmetric i32 tensor."""
        if not tensor.type.symmetric:
            raise CompileError(f"flags live in a symmetric tensor; '{tensor.name}' is not one",
                               node.span, f"declare it '{tensor.name}: sym i32[...]'")
        if tensor.type.dtype != FLAG_DTYPE:
            raise CompileError(f"flags are i32, but '{tensor.name}' is {tensor.type.dtype}",
                               node.span, f"declare it '{tensor.name}: sym i32[...]'")
        if len(indices) != tensor.type.rank or not all(isinstance(i, ast.Point) for i in indices):
            raise CompileError(f"a signal or wait names one element of '{tensor.name}'",
                               node.span, f"e.g. {tensor.name}[p]")
        return [self.index_value(i.index) for i in indices]

    def flag_value(self, e: ast.Expr) -> Value:
        v = self.value(e, "i32")
        if not isinstance(v.type, ScalarType) or v.type.dtype != FLAG_DTYPE:
            raise CompileError(f"a flag value is an i32 scalar, not {v.type}", e.span,
                               "e.g. epoch")
        return v

    def stmt_Signal(self, s: ast.Signal):
        tensor, rank = self.peer_tensor(s.peer)
        if isinstance(rank.type, TileType):
            raise CompileError("a signal goes to one rank", s.peer.rank.span,
                               "loop over the ranks: for p in 0 .. world { signal ... }")
        idx = self.flag(tensor, s.indices, s)
        self.at(s).op("signal", [tensor, *idx, rank, self.flag_value(s.value)], [])

    def stmt_Wait(self, s: ast.Wait):
        tensor = self.tensor(s.tensor, local=False)
        idx = self.flag(tensor, s.indices, s)
        self.ir.attrs["comm"] = True
        self.at(s).op("wait", [tensor, *idx, self.flag_value(s.value)], [])


def _is_int_value(v: Value) -> bool:
    from .dtypes import DTYPES
    return DTYPES[v.type.dtype].is_int and v.type.dtype not in ("bool", "ue8m0")
