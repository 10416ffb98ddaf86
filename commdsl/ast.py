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
    op: str                      # + - * / %, < <= > >= == !=, & | ^ << >>, and or
    lhs: "Expr"
    rhs: "Expr"


@dataclass(frozen=True)
class Neg(Node):
    operand: "Expr"


@dataclass(frozen=True)
class Not(Node):
    """`not c`: logical negation of a bool."""
    operand: "Expr"


@dataclass(frozen=True)
class Invert(Node):
    """`~i`: bitwise complement of an integer."""
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
    via: Name | None = None      # `via tma`: an asynchronous bulk copy into shared memory
    mask: "Expr | None" = None   # `mask(c)`: read only where the bool tile c holds
    other: "Expr | None" = None  # `other = v`: what the elements not read are (0 if absent)


@dataclass(frozen=True)
class Subscript(Node):
    base: "Expr"
    indices: tuple["Index", ...]


@dataclass(frozen=True)
class Attribute(Node):
    """`t.T`: the transpose of a tile (as mma's second operand)."""
    base: "Expr"
    name: str


@dataclass(frozen=True)
class PeerRef(Node):
    """`peer(r).x`: rank r's copy of the symmetric tensor x."""
    rank: "Expr"
    tensor: Name


@dataclass(frozen=True)
class Get(Node):
    """`get peer(r).x[...]`: a tile read from another rank's symmetric tensor."""
    peer: PeerRef
    indices: tuple["Index", ...]
    cache: "CacheClause | None"


Expr = (IntLit | FloatLit | Name | Pid | BinOp | Neg | Not | Invert | Call | Load | Subscript
        | Attribute | Get)


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

    @property
    def text(self) -> str:
        """As written in a source, spaced one way: a cache-policy constant's value."""
        return "cache(" + ", ".join(a.key if a.value is None else f"{a.key} = {a.value}"
                                    for a in self.args) + ")"


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
    mask: Expr | None = None     # `mask(c)`: write only where the bool tile c holds


@dataclass(frozen=True)
class Assign(Node):
    """`acc += x` or `acc = x`: rebinds a `let` name; inside a loop it is carried across
    iterations."""
    name: str
    op: str                      # '=' or '+='
    value: Expr


@dataclass(frozen=True)
class Range(Node):
    """`k in lo .. hi step s`."""
    name: str
    lo: Expr
    hi: Expr
    step: Expr | None


@dataclass(frozen=True)
class For(Node):
    ranges: tuple[Range, ...]
    clauses: tuple["KernelAttr", ...]   # pipeline(STAGES), persistent(raster = 8)
    body: tuple["Stmt", ...]


@dataclass(frozen=True)
class Put(Node):
    """`put peer(r).x[...] = t`: a tile written into another rank's symmetric tensor."""
    peer: PeerRef
    indices: tuple[Index, ...]
    cache: CacheClause | None
    value: Expr


@dataclass(frozen=True)
class Signal(Node):
    """`signal peer(r).flags[i] = v`: a release store at system scope, once per program,
    after the program's earlier memory accesses."""
    peer: PeerRef
    indices: tuple[Index, ...]
    value: Expr


@dataclass(frozen=True)
class Wait(Node):
    """`wait flags[i] >= v`: an acquire spin at system scope on this rank's copy, once per
    program, bounded by the runtime's timeout."""
    tensor: Name
    indices: tuple[Index, ...]
    value: Expr


Stmt = Let | Store | Assign | For | Put | Signal | Wait


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
    is_sym: bool = False         # `sym`: allocated on every rank, reachable as peer(r).name


@dataclass(frozen=True)
class Tune(Node):
    name: str
    default: Expr | None
    values: tuple[Expr, ...]
    by: Name | None = None       # `by model`: the default is the cost model's pick per shape

    @property
    def by_model(self) -> bool:
        return self.by is not None and self.by.id == "model"


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
class Function(Node):
    """`fn silu(x) = x * sigmoid(x)`, or `fn f(x) { let y = x * x  y + 1 }`: expanded
    inline at each call."""
    name: str
    params: tuple[str, ...]
    param_spans: tuple[Span, ...]
    body: Expr                   # the value
    lets: tuple["Let", ...] = ()  # the block form's lets, before the value


@dataclass(frozen=True)
class Kernel(Node):
    name: str
    params: tuple[Param, ...]
    tunes: tuple[Tune, ...]
    consts: tuple[Const, ...]
    attrs: tuple[KernelAttr, ...]
    body: tuple[Stmt, ...]
    functions: tuple[Function, ...] = ()    # the file's `fn`s, which any kernel may call


@dataclass(frozen=True)
class Module(Node):
    kernels: tuple[Kernel, ...]
