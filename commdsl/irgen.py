"""Lowers a checked kernel body to the tile IR, checking names, dtypes and shapes on the way.

Arithmetic on narrow floats (bf16, f16, e4m3, e5m2) is done in f32, as FP8 recipes expect;
integer and float values never mix silently. Literals and constants fold at compile time.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import ast
from .check import Signature, did_you_mean
from .diagnostics import CompileError, Span
from .ir import Block, Builder, KernelIR, ScalarType, TensorType, TileType, Value

REDUCTIONS = {"amax", "sum", "max", "min"}
FUNCTIONS = {
    "amax": "amax(t, axis = A): largest |t| along axis A",
    "sum": "sum(t, axis = A)",
    "max": "max(a, b) elementwise, or max(t, axis = A)",
    "min": "min(a, b) elementwise, or min(t, axis = A)",
    "abs": "abs(t)",
    "cast": "cast<e4m3>(t): convert to another dtype (FP8 saturates)",
    "cdiv": "cdiv(a, b): ceil(a / b) of integers",
}


@dataclass(frozen=True)
class Folded:
    """A compile-time number: a literal or a constant, typed where it meets a value."""
    value: int | float

    @property
    def is_int(self) -> bool:
        return isinstance(self.value, int)


def _is_narrow_float(dtype: str) -> bool:
    return dtype in ("bf16", "f16", "e4m3", "e5m2")


def _is_int(dtype: str) -> bool:
    return dtype.startswith(("i", "u"))


class _Lowering:
    def __init__(self, sig: Signature):
        self.sig = sig
        self.ir = KernelIR(
            name=sig.name,
            tensors=[Value(TensorType(t.dtype, t.dims, t.is_out), t.name) for t in sig.tensors],
            sizes=[Value(ScalarType("i32"), s) for s in sig.size_symbols],
            body=Block(), grid=sig.grid)
        self.b = Builder(self.ir.body)
        self.env: dict[str, Value | Folded] = {n: Folded(v) for n, v in sig.constants.items()}
        self.env.update({v.name: v for v in self.ir.sizes})
        self.tensors = {v.name: v for v in self.ir.tensors}

    # ---- helpers ---------------------------------------------------------------------

    def at(self, node: ast.Node):
        self.b.loc = node.span
        return self.b

    def const(self, value, dtype: str, node) -> Value:
        return self.at(node).value("const", [], ScalarType(dtype), value=value)

    def materialize(self, x, dtype: str, node) -> Value:
        if isinstance(x, Folded):
            if _is_int(dtype) and not x.is_int:
                raise CompileError(f"{x.value} is not an integer", node.span,
                                   "index arithmetic is on integers")
            return self.const(float(x.value) if not _is_int(dtype) else int(x.value), dtype, node)
        return x

    def to_dtype(self, v: Value, dtype: str, node) -> Value:
        if v.type.dtype == dtype:
            return v
        t = v.type
        new = ScalarType(dtype) if isinstance(t, ScalarType) else TileType(dtype, t.shape)
        return self.at(node).value("convert", [v], new)

    def broadcast_to(self, v: Value, shape: tuple[int, ...], node) -> Value:
        if isinstance(v.type, ScalarType):
            return self.at(node).value("splat", [v], TileType(v.type.dtype, shape))
        if v.type.shape == shape:
            return v
        return self.at(node).value("broadcast", [v], TileType(v.type.dtype, shape))

    def common_shape(self, a: Value, b: Value, node) -> tuple[int, ...] | None:
        sa = a.type.shape if isinstance(a.type, TileType) else None
        sb = b.type.shape if isinstance(b.type, TileType) else None
        if sa is None or sb is None:
            return sa or sb
        if len(sa) != len(sb) or any(x != y and 1 not in (x, y) for x, y in zip(sa, sb)):
            raise CompileError(
                f"tiles of shape [{', '.join(map(str, sa))}] and [{', '.join(map(str, sb))}] "
                "do not combine", node.span,
                "make the ranks equal and the sizes equal or 1, e.g. sc[:, None] for a "
                "per-row value")
        return tuple(max(x, y) for x, y in zip(sa, sb))

    # ---- expressions -------------------------------------------------------------------

    def expr(self, e: ast.Expr):
        method = getattr(self, "expr_" + type(e).__name__)
        return method(e)

    def value(self, e: ast.Expr, dtype_hint: str = "f32") -> Value:
        x = self.expr(e)
        if isinstance(x, Folded):
            return self.materialize(x, "i32" if x.is_int else dtype_hint, e)
        return x

    def expr_IntLit(self, e):
        return Folded(e.value)

    def expr_FloatLit(self, e):
        return Folded(e.value)

    def expr_Name(self, e: ast.Name):
        if e.id in self.env:
            return self.env[e.id]
        if e.id in self.tensors:
            raise CompileError(f"'{e.id}' is a tensor in global memory", e.span,
                               f"read a tile of it with 'load {e.id}[start : +length, ...]'")
        known = list(self.env) + list(self.tensors)
        raise CompileError(f"unknown name '{e.id}'", e.span,
                           did_you_mean(e.id, known) or "declare it with 'let' before its use")

    def expr_Pid(self, e: ast.Pid):
        if e.axis > 2:
            raise CompileError(f"pid.{e.axis} does not exist", e.span,
                               "programs are numbered along pid.0, pid.1 and pid.2")
        if e.axis >= len(self.sig.grid):
            raise CompileError(f"pid.{e.axis} is always 0: the grid has {len(self.sig.grid)} "
                               "dimension(s)", e.span, f"add a size for axis {e.axis} to grid(...)")
        return self.at(e).value("pid", [], ScalarType("i32"), axis=e.axis)

    def expr_Neg(self, e: ast.Neg):
        x = self.expr(e.operand)
        if isinstance(x, Folded):
            return Folded(-x.value)
        if _is_narrow_float(x.type.dtype):
            x = self.to_dtype(x, "f32", e)
        return self.at(e).value("neg", [x], x.type)

    def expr_BinOp(self, e: ast.BinOp):
        a, b = self.expr(e.lhs), self.expr(e.rhs)
        if isinstance(a, Folded) and isinstance(b, Folded):
            if e.op == "/" and a.is_int and b.is_int:
                return Folded(a.value // b.value)
            return Folded({"+": a.value + b.value, "-": a.value - b.value,
                           "*": a.value * b.value, "/": a.value / b.value,
                           "%": a.value % b.value}[e.op])
        name = {"+": "add", "-": "sub", "*": "mul", "/": "div", "%": "rem"}[e.op]
        return self.binary(name, a, b, e)

    def binary(self, name: str, a, b, node) -> Value:
        dtype = self.result_dtype(a, b, node)
        if name == "rem" and not _is_int(dtype):
            raise CompileError("'%' is for integers", node.span)
        a = self.to_dtype(self.materialize(a, dtype, node), dtype, node)
        b = self.to_dtype(self.materialize(b, dtype, node), dtype, node)
        shape = self.common_shape(a, b, node)
        if shape is not None:
            a, b = self.broadcast_to(a, shape, node), self.broadcast_to(b, shape, node)
        return self.at(node).value(name, [a, b], a.type)

    def result_dtype(self, a, b, node) -> str:
        """The dtype both sides are brought to: narrow floats compute in f32; a literal takes
        its partner's type; ints and floats never mix silently."""
        da = None if isinstance(a, Folded) else a.type.dtype
        db = None if isinstance(b, Folded) else b.type.dtype
        if da is None and db is None:
            return "i32" if a.is_int and b.is_int else "f32"
        if da is None or db is None:
            known, lit = (db, a) if da is None else (da, b)
            if _is_int(known) and not lit.is_int:
                raise CompileError(f"dtype mismatch: {known} value and float literal {lit.value}",
                                   node.span, "write cast<f32>(...) around the integer value")
            return "f32" if _is_narrow_float(known) else known
        if _is_int(da) != _is_int(db):
            raise CompileError(f"dtype mismatch: {da} and {db}", node.span,
                               "convert one side explicitly, e.g. cast<f32>(...)")
        if da == db and not _is_narrow_float(da):
            return da
        return "f32" if not _is_int(da) else max(da, db, key=lambda d: int(d[1:]))

    def expr_Call(self, e: ast.Call):
        if e.func not in FUNCTIONS:
            raise CompileError(f"unknown function '{e.func}'", e.span,
                               did_you_mean(e.func, FUNCTIONS) or
                               "functions: " + ", ".join(FUNCTIONS))
        kwargs = {k.name: k for k in e.kwargs}
        if e.func == "cast":
            return self.call_cast(e)
        if e.func == "cdiv":
            a, b = (self.expr(x) for x in self.expect_args(e, 2))
            if isinstance(a, Folded) and isinstance(b, Folded):
                return Folded(-(-a.value // b.value))
            return self.binary("div", self.binary("add", a, self.binary(
                "sub", b, Folded(1), e), e), b, e)
        if e.func in REDUCTIONS and "axis" in kwargs:
            return self.call_reduce(e, kwargs)
        if e.func == "amax" or e.func == "sum":
            raise CompileError(f"{e.func} needs an axis", e.span, FUNCTIONS[e.func])
        if e.func == "abs":
            (x,) = self.expect_args(e, 1)
            v = self.value(x)
            if _is_narrow_float(v.type.dtype):
                v = self.to_dtype(v, "f32", e)
            return self.at(e).value("abs", [v], v.type)
        a, b = self.expect_args(e, 2)
        return self.binary(e.func, self.expr(a), self.expr(b), e)

    def expect_args(self, e: ast.Call, n: int):
        if len(e.args) != n:
            raise CompileError(f"{e.func} takes {n} argument(s), got {len(e.args)}", e.span,
                               FUNCTIONS[e.func])
        return e.args

    def call_cast(self, e: ast.Call):
        from .dtypes import DTYPES
        if e.type_arg not in DTYPES:
            raise CompileError(f"cast to unknown dtype '{e.type_arg}'", e.span,
                               did_you_mean(str(e.type_arg), DTYPES) or "write cast<e4m3>(x)")
        (x,) = self.expect_args(e, 1)
        return self.to_dtype(self.value(x), e.type_arg, e)

    def call_reduce(self, e: ast.Call, kwargs):
        (x,) = self.expect_args(e, 1)
        v = self.value(x)
        if not isinstance(v.type, TileType) or not v.type.shape:
            raise CompileError(f"{e.func} reduces a tile, not a scalar", x.span)
        axis_node = kwargs["axis"].value
        axis = self.expr(axis_node)
        rank = len(v.type.shape)
        if not isinstance(axis, Folded) or not axis.is_int or not -rank <= axis.value < rank:
            raise CompileError(f"axis must be an integer in [0, {rank})", axis_node.span)
        ax = axis.value % rank
        if _is_narrow_float(v.type.dtype):
            v = self.to_dtype(v, "f32", e)
        shape = v.type.shape[:ax] + v.type.shape[ax + 1:]
        return self.at(e).value("reduce", [v], TileType(v.type.dtype, shape), kind=e.func, axis=ax)

    def expr_Subscript(self, e: ast.Subscript):
        v = self.value(e.base)
        if not isinstance(v.type, TileType):
            raise CompileError("only tiles can be subscripted", e.base.span)
        kept = [i for i in e.indices if isinstance(i, ast.All)]
        if len(kept) != len(v.type.shape) or any(
                not isinstance(i, (ast.All, ast.NewAxis)) for i in e.indices):
            raise CompileError("a tile subscript keeps every dimension with ':' and adds ones "
                               "with None", e.span,
                               f"this tile has {len(v.type.shape)} dimension(s), e.g. "
                               f"t[{', '.join([':'] * len(v.type.shape))}, None]")
        for axis, i in enumerate(e.indices):
            if isinstance(i, ast.NewAxis):
                shape = v.type.shape[:axis] + (1,) + v.type.shape[axis:]
                v = self.at(e).value("expand_dims", [v], TileType(v.type.dtype, shape), axis=axis)
        return v

    def expr_Load(self, e: ast.Load):
        tensor = self.tensor(e.tensor)
        idx, sizes = self.indices(tensor, e.indices, e)
        shape = tuple(s for s in sizes if s is not None)
        return self.at(e).value("load", [tensor, *idx], TileType(tensor.type.dtype, shape),
                                sizes=sizes, **_cache_attrs(e.cache))

    def tensor(self, name: ast.Name) -> Value:
        if name.id not in self.tensors:
            raise CompileError(f"'{name.id}' is not a tensor parameter", name.span,
                               did_you_mean(name.id, self.tensors) or
                               f"tensors: {', '.join(self.tensors)}")
        return self.tensors[name.id]

    def indices(self, tensor: Value, indices, node):
        rank = tensor.type.rank
        if len(indices) != rank:
            raise CompileError(f"'{tensor.name}' has {rank} dimension(s) but {len(indices)} "
                               "index(es) are given", node.span,
                               "give one 'i' or 'start : +length' per dimension")
        idx, sizes = [], []
        for i in indices:
            if isinstance(i, ast.Point):
                idx.append(self.index_value(i.index))
                sizes.append(None)
            elif isinstance(i, ast.Slice):
                idx.append(self.index_value(i.start))
                n = self.expr(i.length)
                if not isinstance(n, Folded) or not n.is_int or n.value <= 0:
                    raise CompileError("a tile's length must be a positive compile-time integer",
                                       i.length.span, "use a number or a tune/const name")
                sizes.append(n.value)
            else:
                raise CompileError("tensor indices are 'i' or 'start : +length'", i.span)
        return idx, tuple(sizes)

    def index_value(self, e: ast.Expr) -> Value:
        v = self.expr(e)
        if isinstance(v, Folded):
            return self.materialize(v, "i32", e)
        if not isinstance(v.type, ScalarType) or not _is_int(v.type.dtype):
            raise CompileError(f"an index must be an integer scalar, got {v.type}", e.span)
        return v

    # ---- statements --------------------------------------------------------------------

    def stmt_Let(self, s: ast.Let):
        if s.name in self.tensors or s.name in self.sig.constants:
            raise CompileError(f"'{s.name}' is already a parameter or constant", s.span,
                               "pick another name")
        self.env[s.name] = self.expr(s.value)

    def stmt_Store(self, s: ast.Store):
        tensor = self.tensor(s.tensor)
        if not tensor.type.is_out:
            raise CompileError(f"'{tensor.name}' is an input; kernels write only 'out' tensors",
                               s.tensor.span, f"declare it as '{tensor.name}: out ...'")
        idx, sizes = self.indices(tensor, s.indices, s)
        shape = tuple(n for n in sizes if n is not None)
        dtype = tensor.type.dtype
        value = self.expr(s.value)
        if isinstance(value, Folded):
            value = self.materialize(value, dtype, s.value)
        elif value.type.dtype != dtype:
            raise CompileError(f"cannot store {value.type.dtype} values into {dtype} tensor "
                               f"'{tensor.name}'", s.value.span,
                               f"convert explicitly: cast<{dtype}>(...)")
        vshape = value.type.shape if isinstance(value.type, TileType) else ()
        if isinstance(value.type, TileType) and self._broadcastable(vshape, shape) is False:
            raise CompileError(f"a tile of shape [{', '.join(map(str, vshape))}] does not fit "
                               f"the slice [{', '.join(map(str, shape))}] of '{tensor.name}'",
                               s.value.span, "make the slice lengths match the tile")
        value = self.broadcast_to(value, shape, s)
        self.at(s).op("store", [tensor, *idx, value], [], sizes=sizes, **_cache_attrs(s.cache))

    @staticmethod
    def _broadcastable(a, b) -> bool:
        return len(a) == len(b) and all(x in (1, y) for x, y in zip(a, b))


def _cache_attrs(clause: ast.CacheClause | None) -> dict:
    """The clause as written, for the `cache` pass to check and lower; spans kept apart."""
    if clause is None:
        return {"cache": None}
    return {"cache": tuple((a.key, a.value) for a in clause.args),
            "_cache_spans": tuple(a.span for a in clause.args)}


def lower(sig: Signature, kernel: ast.Kernel) -> KernelIR:
    low = _Lowering(sig)
    for s in kernel.body:
        getattr(low, "stmt_" + type(s).__name__)(s)
    low.ir.attrs["warps"] = sig.warps
    low.ir.attrs["span"] = kernel.span
    return low.ir
