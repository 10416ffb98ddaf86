"""The syntax tree of a .cdsl file: frozen dataclasses, each with the span it came from."""
from __future__ import annotations

from dataclasses import dataclass, field

from .diagnostics import Span


@dataclass(frozen=True)
class Node:
    span: Span = field(compare=False, repr=False)


# ---- expressions -------------------------------------------------------------------------

@dataclass(frozen=True)
class IntLit(Node):
    value: int


@dataclass(frozen=True)
class FloatLit(Node):
    value: float
    text: str


@dataclass(frozen=True)
class Name(Node):
    id: str


@dataclass(frozen=True)
class Pid(Node):
    axis: int


@dataclass(frozen=True)
class BinOp(Node):
    op: str                      # + - * / %
    lhs: "Expr"
    rhs: "Expr"


@dataclass(frozen=True)
class Neg(Node):
    operand: "Expr"


@dataclass(frozen=True)
class Call(Node):
    func: str
    type_arg: str | None         # cast<e4m3>(...)
    args: tuple["Expr", ...]
    kwargs: tuple["KwArg", ...]


@dataclass(frozen=True)
class KwArg(Node):
    name: str
    value: "Expr"


@dataclass(frozen=True)
class Load(Node):
    tensor: Name
    indices: tuple["Index", ...]
    cache: "CacheClause | None"


@dataclass(frozen=True)
class Subscript(Node):
    base: "Expr"
    indices: tuple["Index", ...]


Expr = IntLit | FloatLit | Name | Pid | BinOp | Neg | Call | Load | Subscript


# ---- indices -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Point(Node):
    """`i`: one position; the dimension is dropped."""
    index: Expr


@dataclass(frozen=True)
class Slice(Node):
    """`start : +length`: `length` consecutive positions from `start`."""
    start: Expr
    length: Expr


@dataclass(frozen=True)
class All(Node):
    """`:` in a tile subscript: keep the dimension."""


@dataclass(frozen=True)
class NewAxis(Node):
    """`None` in a tile subscript: insert a dimension of size 1."""


Index = Point | Slice | All | NewAxis


# ---- cache clauses -----------------------------------------------------------------------

@dataclass(frozen=True)
class CacheArg(Node):
    key: str
    value: str | None


@dataclass(frozen=True)
class CacheClause(Node):
    args: tuple[CacheArg, ...]


# ---- statements --------------------------------------------------------------------------

@dataclass(frozen=True)
class Let(Node):
    name: str
    value: Expr


@dataclass(frozen=True)
class Store(Node):
    tensor: Name
    indices: tuple[Index, ...]
    cache: CacheClause | None
    value: Expr


Stmt = Let | Store


# ---- kernels -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Quant(Node):
    group: tuple[Expr, ...]
    scale: Name
    options: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Param(Node):
    name: str
    dtype: Name
    dims: tuple[Expr, ...]
    is_out: bool
    quant: Quant | None


@dataclass(frozen=True)
class Tune(Node):
    name: str
    default: Expr | None
    values: tuple[Expr, ...]


@dataclass(frozen=True)
class Const(Node):
    name: str
    value: Expr | None


@dataclass(frozen=True)
class KernelAttr(Node):
    """`grid(...)`, `warps(...)` and the other call-shaped annotations of a kernel."""
    name: str
    args: tuple[Expr, ...]
    kwargs: tuple[KwArg, ...]


@dataclass(frozen=True)
class Kernel(Node):
    name: str
    params: tuple[Param, ...]
    tunes: tuple[Tune, ...]
    consts: tuple[Const, ...]
    attrs: tuple[KernelAttr, ...]
    body: tuple[Stmt, ...]


@dataclass(frozen=True)
class Module(Node):
    kernels: tuple[Kernel, ...]
