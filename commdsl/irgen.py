"""Lowers a checked kernel body to the tile IR, checking names, dtypes and shapes on the way.

Arithmetic on narrow floats (bf16, f16, e4m3, e5m2) is done in f32, as FP8 recipes expect;
integer and float values never mix silently. Literals and constants fold at compile time.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from . import ast
from .check import Signature, did_you_mean, is_cache_policy, supported_dtype
from .diagnostics import CompileError
from .folding import fold_binary, fold_cdiv, fold_neg, number
from .ir import Block, Builder, KernelIR, ScalarType, TensorType, TileType, Value
from .irgen_comm import BUILTINS as COMM_BUILTINS, CommLowering
from .ops import OPS, OpDef
from .target import Target
from .ragged import CARRIED, RESHAPED, Raggedness
from .ops.math import APPROX
from .ops.mma import OPERAND_TYPES as MMA_OPERANDS, accumulator_dtype
from .parser import parse_cache_policy

REDUCTIONS = {
    "amax": "amax(t, axis = A): largest |t| along axis A",
    "sum": "sum(t, axis = A)",
    "max": "max(t, axis = A)",
    "min": "min(t, axis = A)",
    "nanmax": "nanmax(t, axis = A): max leaving NaN out",
    "nanmin": "nanmin(t, axis = A): min leaving NaN out",
}
# The reductions a zero from the padding would change, with the `other` that would not.
MINMAX_ONLY = {"max": "-inf", "min": "inf", "nanmax": "-inf", "nanmin": "inf"}
# Elementwise functions, from their ops' declarations (commdsl/ops): name -> op.
ELEMENTWISE_BUILTINS: dict[str, OpDef] = {d.builtin.name: d for d in OPS.values() if d.builtin}


def _usage(name: str) -> str:
    """A function's help line: its elementwise form, its reduction, or both."""
    if name not in ELEMENTWISE_BUILTINS:
        return REDUCTIONS[name]
    usage = ELEMENTWISE_BUILTINS[name].builtin.usage
    return f"{usage} elementwise, or {REDUCTIONS[name]}" if name in REDUCTIONS else usage


FUNCTIONS = {
    **{name: _usage(name) for name in [*REDUCTIONS, *ELEMENTWISE_BUILTINS]},
    "cast": "cast<e4m3>(t): convert to another dtype (FP8 saturates; cast<ue8m0> rounds a "
            "scale up to a power of two, cast<f32> of a ue8m0 gives 2^(b - 127))",
    "cdiv": "cdiv(a, b): ceil(a / b) of integers",
    "transpose": "transpose(t): the 2-D tile t with its axes swapped (moves data through "
                 "shared memory)",
    "max_finite": "max_finite<e4m3>(): the largest finite value of a float format (448.0)",
    "zeros": "zeros(f32, R, C): a tile of zeros (an accumulator)",
    "reshape": "reshape(t, R, H / 128, 128): t's elements, row-major, in a new shape of the "
               "same element count (splits or merges axes; moves data through shared memory)",
    **{f"fast_{name}": f"fast_{name}(t): {name} by PTX's .approx instructions (needs the "
                         "fast_math option)" for name in sorted(APPROX)},
    "where": "where(c, a, b): a where the bool c holds, else b (a and b of one dtype)",
    "iota": "iota(N): the 1-D i32 tile 0, 1, ..., N - 1; iota(R, C, ..., axis = A): the "
            "[R, C, ...] tile of each element's index along axis A (default: the last)",
    "bitcast": "bitcast<i32>(t): t's bits as another dtype of the same width",
    "cumsum": "cumsum(t, axis = A): the running sum along axis A (default: the last), "
              "element i the sum of elements 0 .. i; of an integer or bool tile in i32, of a "
              "float tile in f32",
    "pow": "pow(t, N): t^N for a compile-time integer N, by repeated squaring (one rounding "
           "per multiply; N < 0: 1 / t^-N)",
    "mma": "mma(a, b.T): the f32 product of an [M, K] and an [N, K] tile, its tensor-core "
           "partial sums promoted into f32 every K (or every promote_every = P of K); "
           "mma(a, b.T, acc) accumulates into acc in the tensor cores",
}
LOOP_CLAUSES = {
    "pipeline": "pipeline(STAGES): overlap the loop's 'via tma' loads with its math through "
                "STAGES shared-memory buffers; pipeline(2) on a loop without them issues its "
                "loads one iteration ahead, into registers",
    "persistent": "persistent(raster = G, cluster = C, sms = S): one CTA per SM takes tiles "
                  "in turn, G tile rows at a time; with C = 2, pairs of CTAs take neighbouring "
                  "tiles of one tile row and share its first operand's tiles by TMA multicast; "
                  "sms = S runs on S SMs only, leaving the rest to other kernels",
}


COMPARISONS = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
               ">=": lambda a, b: a >= b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b}
BITWISE = {"&": "and", "|": "or", "^": "xor", "<<": "shl", ">>": "shr", "and": "and", "or": "or"}


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
    from .dtypes import DTYPES
    return DTYPES[dtype].is_int


def _ue8m0_byte(value: float, node) -> int:
    """A UE8M0 fill value (a scale, 2^(b - 127)) as its exponent byte b."""
    mantissa, exponent = math.frexp(value) if math.isfinite(value) else (0.0, 0)
    if mantissa != 0.5 or not -127 <= exponent - 1 <= 127:
        raise CompileError(f"'other' of a ue8m0 load is a scale, a power of two from 2^-127 "
                           f"to 2^127, not {value}", node.span, "e.g. other = 1.0")
    return exponent - 1 + 127


def _check_fits(value: int, dtype: str, node):
    from .dtypes import DTYPES
    d = DTYPES[dtype]
    lo, hi = (0, (1 << d.bits) - 1) if d.kind == "uint" else (-(1 << d.bits - 1),
                                                               (1 << d.bits - 1) - 1)
    if not lo <= value <= hi:
        raise CompileError(f"{value} does not fit in {dtype} ({lo} .. {hi})", node.span,
                           "indices and sizes are 32-bit: use smaller constants")


class _Lowering(CommLowering):
    def __init__(self, sig: Signature, kernel: ast.Kernel, target: Target):
        self.sig, self.kernel, self.target = sig, kernel, target
        self.ir = KernelIR(
            name=sig.name,
            tensors=[Value(TensorType(t.dtype, t.dims, t.is_out, t.symmetric), t.name)
                     for t in sig.tensors],
            sizes=[Value(ScalarType("i32"), s) for s in sig.size_symbols],
            body=Block(), grid=sig.grid)
        self.b = Builder(self.ir.body)
        self.env: dict[str, Value | Folded] = {n: Folded(v) for n, v in sig.constants.items()}
        self.env.update({v.name: v for v in self.ir.sizes})
        self.tensors = {v.name: v for v in self.ir.tensors}
        self.sizes = {v.name: v for v in self.ir.sizes}
        self.functions = _functions(kernel.functions)
        self.expanding: list[str] = []         # the functions being expanded, outermost first
        self.ragged = Raggedness(self.ir)
        self.rest: list = []      # the statements after the one being lowered, in its block

    # ---- helpers ---------------------------------------------------------------------

    def at(self, node: ast.Node):
        self.b.loc = node.span
        return self.b

    def const(self, value, dtype: str, node) -> Value:
        return self.at(node).value("const", [], ScalarType(dtype), value=value)

    def materialize(self, x, dtype: str, node) -> Value:
        if isinstance(x, Folded):
            if _is_int(dtype) and not x.is_int:
                instead = f"write {int(x.value)}, or " if math.isfinite(x.value) else ""
                raise CompileError(f"{x.value} is not an integer", node.span,
                                   f"{dtype} values are integers: {instead}"
                                   f"cast<{dtype}>(...) to round")
            if _is_int(dtype):
                _check_fits(x.value, dtype, node)
                return self.const(int(x.value), dtype, node)
            f32 = self.const(float(x.value), "f32", node)
            # a number meets a narrow float (or ue8m0) as cast<dtype>(number) would
            return f32 if dtype == "f32" else self.to_dtype(f32, dtype, node)
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
        x = method(e)
        if isinstance(x, Value) and isinstance(x.type, TileType):
            self.check_tile_size(x.type.shape, x.type.dtype, e)
        return x

    def check_tile_size(self, shape: tuple[int, ...], dtype: str, node):
        """A tile larger than a CTA's registers can never be laid out: say so before trying
        (layout works element by element, so a huge tile would take minutes to reject)."""
        from .dtypes import DTYPES
        limit = self.target.register_file_bytes
        nbytes = math.prod(shape) * DTYPES[dtype].bytes
        if nbytes > limit:
            raise CompileError(
                f"a [{', '.join(map(str, shape))}] {dtype} tile is {nbytes} bytes, more than "
                f"the {limit} bytes of registers a CTA has on {self.target.name}", node.span,
                "use smaller tiles: loop over the data, or set smaller tile sizes")

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
            x = self.env[e.id]
            if isinstance(x, Folded):
                number(x.value, e.span, f"'{e.id}'")
            return x
        if e.id in COMM_BUILTINS:
            return self.comm_builtin(e)
        if e.id == "smid":      # a name, like rank: a let or parameter of that name shadows it
            return self.at(e).value("smid", [], ScalarType("i32"))
        if e.id in self.tensors:
            raise CompileError(f"'{e.id}' is a tensor in global memory", e.span,
                               f"read a tile of it with 'load {e.id}[start : +length, ...]'")
        if e.id == "inf":       # like smid: `-inf` starts a running max, masks a max's input
            return Folded(math.inf)
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
            return Folded(fold_neg(x.value, e.span))
        if _is_narrow_float(x.type.dtype):
            x = self.to_dtype(x, "f32", e)
        return self.at(e).value("neg", [x], x.type)

    def expr_BinOp(self, e: ast.BinOp):
        a, b = self.expr(e.lhs), self.expr(e.rhs)
        if e.op in COMPARISONS:
            return self.compare(e.op, a, b, e)
        if e.op in BITWISE:
            return self.bitwise(BITWISE[e.op], a, b, e)
        if isinstance(a, Folded) and isinstance(b, Folded):
            return Folded(fold_binary(e.op, a.value, b.value, e.span, e.rhs.span))
        name = {"+": "add", "-": "sub", "*": "mul", "/": "div", "%": "rem"}[e.op]
        return self.binary(name, a, b, e)

    def binary(self, name: str, a, b, node) -> Value:
        a, b = self.coerce(name, a, b, node)
        return self.at(node).value(name, [a, b], a.type)

    def coerce(self, name: str, a, b, node) -> tuple[Value, Value]:
        """Both operands of a binary op in their common dtype and shape."""
        for x in (a, b):
            if isinstance(x, Value) and x.type.dtype == "ue8m0":
                raise CompileError("ue8m0 values are scales stored as exponents, not numbers",
                                   node.span, "compute with cast<f32>(...) of them")
        dtype = self.result_dtype(a, b, node)
        if name == "rem" and not _is_int(dtype):
            raise CompileError("'%' is for integers", node.span)
        if name in ("div", "rem") and _is_int(dtype) and isinstance(b, Folded) and b.value == 0:
            raise CompileError("integer division by zero", node.span,
                               "the divisor is 0 at compile time")
        a = self.to_dtype(self.materialize(a, dtype, node), dtype, node)
        b = self.to_dtype(self.materialize(b, dtype, node), dtype, node)
        shape = self.common_shape(a, b, node)
        if shape is not None:
            a, b = self.broadcast_to(a, shape, node), self.broadcast_to(b, shape, node)
        return a, b

    def compare(self, pred: str, a, b, node) -> Value | Folded:
        if isinstance(a, Folded) and isinstance(b, Folded):
            return Folded(int(COMPARISONS[pred](a.value, b.value)))
        for x in (a, b):
            if isinstance(x, Value) and x.type.dtype == "bool" and pred not in ("==", "!="):
                raise CompileError(f"'{pred}' compares numbers, not bools", node.span,
                                   "combine conditions with and, or, not")
        a, b = self.coerce("cmp", a, b, node)
        t = a.type
        result = TileType("bool", t.shape) if isinstance(t, TileType) else ScalarType("bool")
        return self.at(node).value("cmp", [a, b], result, pred=pred)

    def bitwise(self, name: str, a, b, node) -> Value | Folded:
        symbol, logical = node.op, node.op in ("and", "or")
        for x in (a, b):
            if isinstance(x, Value):
                dt = x.type.dtype
            else:                          # a folded comparison is 0 or 1
                dt = "bool" if logical and x.value in (0, 1) else "i32" if x.is_int else "f32"
            if logical and dt != "bool":
                raise CompileError(f"'{node.op}' takes bools, not {dt}", node.span,
                                   "compare first, e.g. (a > 0.0) and (b < 1.0); for bits "
                                   "write & or |")
            if not logical and (not _is_int(dt) or dt == "ue8m0"):
                raise CompileError(f"'{symbol}' takes integers, not {dt}", node.span,
                                   "bitcast<i32>(t) gives a float's bits")
            if dt == "bool" and name in ("shl", "shr"):
                raise CompileError(f"'{symbol}' shifts integers, not bools", node.span)
        if isinstance(a, Folded) and isinstance(b, Folded):
            op = {"and": "&", "or": "|"}.get(symbol, symbol)
            return Folded(fold_binary(op, a.value, b.value, node.span, node.rhs.span))
        return self.binary(name, a, b, node)

    def expr_Not(self, e: ast.Not):
        x = self.expr(e.operand)
        dt = x.type.dtype if isinstance(x, Value) else "a number"
        if dt != "bool":
            raise CompileError(f"'not' takes a bool, not {dt}", e.operand.span,
                               "compare first, e.g. not (t > 0.0); ~i flips an integer's bits")
        return self.at(e).value("not", [x], x.type)

    def expr_Invert(self, e: ast.Invert):
        x = self.expr(e.operand)
        if isinstance(x, Folded):
            if not x.is_int:
                raise CompileError("'~' takes integers", e.operand.span)
            return Folded(~x.value)
        if not _is_int(x.type.dtype) or x.type.dtype in ("bool", "ue8m0"):
            raise CompileError(f"'~' takes integers, not {x.type.dtype}", e.operand.span,
                               "'not' negates a bool")
        return self.at(e).value("not", [x], x.type)

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
        if "bool" in (da, db):
            raise CompileError(f"dtype mismatch: {da} and {db}", node.span,
                               "a bool is not a number here: cast<i32>(c) gives 0 or 1")
        from .dtypes import DTYPES
        return "f32" if not _is_int(da) else max(da, db, key=lambda d: DTYPES[d].bits)

    def expr_Call(self, e: ast.Call):
        if e.func in self.functions:
            return self.call_function(self.functions[e.func], e)
        if e.func not in FUNCTIONS:
            raise CompileError(f"unknown function '{e.func}'", e.span,
                               did_you_mean(e.func, FUNCTIONS) or
                               "functions: " + ", ".join(FUNCTIONS))
        kwargs = {k.name: k for k in e.kwargs}
        if e.func == "cast":
            return self.call_cast(e)
        if e.func == "zeros":
            return self.call_zeros(e)
        if e.func == "mma":
            return self.call_mma(e)
        if e.func == "max_finite":
            from .dtypes import MAX_FINITE
            dt = self.type_arg(e, "max_finite<e4m3>()")
            if dt not in MAX_FINITE or e.args:
                raise CompileError(f"max_finite<{dt}>() is not defined", e.span,
                                   FUNCTIONS["max_finite"] + f"; formats: {', '.join(MAX_FINITE)}")
            return Folded(MAX_FINITE[dt])
        if e.func == "transpose":
            return self.call_transpose(e)
        if e.func == "reshape":
            return self.call_reshape(e)
        if e.func == "cdiv":
            a, b = (self.expr(x) for x in self.expect_args(e, 2))
            if isinstance(a, Folded) and isinstance(b, Folded):
                return Folded(fold_cdiv(a.value, b.value, e.span, e.args[1].span))
            return self.binary("div", self.binary("add", a, self.binary(
                "sub", b, Folded(1), e), e), b, e)
        if e.func == "pow":
            return self.call_pow(e)
        if e.func == "where":
            return self.call_where(e)
        if e.func == "iota":
            return self.call_iota(e)
        if e.func == "bitcast":
            return self.call_bitcast(e)
        if e.func == "cumsum":
            return self.call_cumsum(e, kwargs)
        if e.func.startswith("fast_"):
            return self.call_builtin(e, ELEMENTWISE_BUILTINS[e.func[5:]], approx=True)
        if e.func in REDUCTIONS and ("axis" in kwargs or e.func in ("amax", "sum")):
            return self.call_reduce(e, kwargs)
        return self.call_builtin(e, ELEMENTWISE_BUILTINS[e.func])

    def call_function(self, f: ast.Function, e: ast.Call):
        """A `fn` expanded here: its body lowered with its parameters bound to the call's
        arguments, and only the kernel's sizes and constants in scope besides. An error in
        the body points at the body, with a note at the call."""
        if f.name in self.expanding:
            raise CompileError(f"'{f.name}' calls itself", e.span,
                               "functions are expanded inline, so they cannot recurse; "
                               "write the repetition as a loop in the kernel")
        if len(e.args) != len(f.params) or e.kwargs:
            raise CompileError(f"{f.name} takes {len(f.params)} argument(s), got "
                               f"{len(e.args) + len(e.kwargs)}", e.span,
                               f"fn {f.name}({', '.join(f.params)})")
        args = [self.expr(a) for a in e.args]
        outer_env = self.env
        self.env = {n: x for n, x in outer_env.items() if n in self.sig.constants
                    or n in self.sizes}
        self.env.update(zip(f.params, args))
        self.expanding.append(f.name)
        try:
            for let in f.lets:
                self.stmt_Let(let)
            return self.expr(f.body)
        except CompileError as err:
            raise err.note(f"in this call of '{f.name}'", e.span) from None
        finally:
            self.expanding.pop()
            self.env = outer_env

    def call_builtin(self, e: ast.Call, op: OpDef, approx: bool = False) -> Value:
        """An elementwise function: its op from the registry, typed by its builtin's rule."""
        if op.builtin.arity == 2:
            a, b = self.expect_args(e, 2)
            return self.binary(op.name, self.expr(a), self.expr(b), e)
        if op.builtin.arity == 3:
            return self.call_ternary(e, op)
        (x,) = self.expect_args(e, 1)
        v = self.value(x)
        if v.type.dtype == "ue8m0":
            raise CompileError("ue8m0 values are scales stored as exponents, not numbers",
                               e.span, "compute with cast<f32>(...) of them")
        if op.builtin.floats_only and _is_int(v.type.dtype):
            raise CompileError(f"{e.func} takes floats, not {v.type.dtype}", x.span,
                               f"{FUNCTIONS[e.func]}; convert with cast<f32>(...)")
        if _is_narrow_float(v.type.dtype):
            v = self.to_dtype(v, "f32", e)
        attrs = {"approx": True} if approx else {}
        return self.at(e).value(op.name, [v], v.type, **attrs)

    def call_ternary(self, e: ast.Call, op: OpDef) -> Value | Folded:
        """fma(a, b, c): the three operands in their common float dtype and shape."""
        nodes = self.expect_args(e, 3)
        args = [self.expr(x) for x in nodes]
        for x, node in zip(args, nodes):          # a number written as 2 is a float here
            if isinstance(x, Value) and (_is_int(x.type.dtype) or x.type.dtype == "bool"):
                raise CompileError(f"{e.func} takes floats, not {x.type.dtype}", node.span,
                                   f"{FUNCTIONS[e.func]}; convert with cast<f32>(...)")
        if all(isinstance(x, Folded) for x in args):
            return Folded(float(args[0].value) * args[1].value + args[2].value)
        args = [self.to_dtype(x, "f32", e) if isinstance(x, Value)
                and _is_narrow_float(x.type.dtype) else x for x in args]
        a, b = self.coerce(op.name, args[0], args[1], e)
        a, c = self.coerce(op.name, a, args[2], e)
        b = self.to_dtype(b, a.type.dtype, e)
        if isinstance(a.type, TileType):
            b = self.broadcast_to(b, a.type.shape, e)
        return self.at(e).value(op.name, [a, b, c], a.type)

    def call_where(self, e: ast.Call):
        c_node, a_node, b_node = self.expect_args(e, 3)
        c, a, b = self.expr(c_node), self.expr(a_node), self.expr(b_node)
        if isinstance(c, Folded):
            return a if c.value else b
        if c.type.dtype != "bool":
            raise CompileError(f"where chooses by a bool, not {c.type.dtype}", c_node.span,
                               FUNCTIONS["where"])
        da, db = (x.type.dtype if isinstance(x, Value) else None for x in (a, b))
        if da and db and da != db:
            raise CompileError(f"where's choices differ in dtype: {da} and {db}", e.span,
                               "convert one, e.g. where(c, t, cast<f32>(i))")
        a, b = self.coerce("select", a, b, e)
        shape = self.common_shape(c, a, e)
        if shape is not None:
            c, a, b = (self.broadcast_to(x, shape, e) for x in (c, a, b))
        return self.at(e).value("select", [c, a, b], a.type)

    def call_iota(self, e: ast.Call):
        """iota(N), or iota(R, C, ..., axis = A): each element's index along axis A."""
        if not e.args:
            raise CompileError("iota takes its tile's sizes", e.span, FUNCTIONS["iota"])
        shape = []
        for a in e.args:
            n = self.expr(a)
            if not isinstance(n, Folded) or not n.is_int or n.value <= 0:
                raise CompileError("iota's sizes must be positive compile-time integers",
                                   a.span, FUNCTIONS["iota"])
            shape.append(n.value)
        axis = len(shape) - 1
        for kw in e.kwargs:
            a = self.expr(kw.value) if kw.name == "axis" else None
            if not isinstance(a, Folded) or not a.is_int or a.value not in range(len(shape)):
                raise CompileError(f"iota takes axis = 0 .. {len(shape) - 1}", kw.span,
                                   FUNCTIONS["iota"])
            axis = a.value
        return self.at(e).value("iota", [], TileType("i32", tuple(shape)), axis=axis)

    def call_bitcast(self, e: ast.Call):
        from .dtypes import DTYPES
        dt = self.type_arg(e, "bitcast<i32>(t)")
        (x,) = self.expect_args(e, 1)
        v = self.value(x)
        src = v.type.dtype
        for kind in ("bool", "ue8m0"):
            if kind in (src, dt):
                raise CompileError(f"bitcast does not take {kind}", e.span, FUNCTIONS["bitcast"])
        if DTYPES[src].bits != DTYPES[dt].bits:
            raise CompileError(f"bitcast<{dt}> of a {src} value: the widths differ", e.span,
                               FUNCTIONS["bitcast"])
        t = v.type
        new = ScalarType(dt) if isinstance(t, ScalarType) else TileType(dt, t.shape)
        return self.at(e).value("bitcast", [v], new)

    def call_pow(self, e: ast.Call):
        """t^N as multiplies: the square-and-multiply chain of N's bits."""
        x, n_node = self.expect_args(e, 2)
        n = self.expr(n_node)
        if not isinstance(n, Folded) or not n.is_int:
            raise CompileError("pow's exponent must be a compile-time integer", n_node.span,
                               FUNCTIONS["pow"] + "; for a float exponent write "
                               "exp2(y * log2(t))")
        v = self.value(x)
        if _is_int(v.type.dtype) or v.type.dtype == "ue8m0":
            raise CompileError(f"pow takes floats, not {v.type.dtype}", x.span,
                               f"{FUNCTIONS['pow']}; convert with cast<f32>(...)")
        if _is_narrow_float(v.type.dtype):
            v = self.to_dtype(v, "f32", e)
        result, square, k = None, v, abs(n.value)
        while k:
            if k & 1:
                result = square if result is None else self.binary("mul", result, square, e)
            k >>= 1
            if k:
                square = self.binary("mul", square, square, e)
        if result is None:                              # t^0 is 1, as C's pow says
            one = self.const(1.0, "f32", e)
            return (self.broadcast_to(one, v.type.shape, e) if isinstance(v.type, TileType)
                    else one)
        return self.at(e).value("recip", [result], result.type) if n.value < 0 else result

    def expect_args(self, e: ast.Call, n: int):
        if len(e.args) != n:
            raise CompileError(f"{e.func} takes {n} argument(s), got {len(e.args)}", e.span,
                               FUNCTIONS[e.func])
        return e.args

    def type_arg(self, e: ast.Call, example: str) -> str:
        """The dtype in `f<T>(...)`, written directly or as a dtype constant."""
        from .check import resolve_dtype
        if e.type_arg is None:
            raise CompileError(f"{e.func} needs a dtype", e.span, f"write {example}")
        return resolve_dtype(e.type_arg, self.sig.constants, e.span)

    def call_cast(self, e: ast.Call):
        dt = self.type_arg(e, "cast<e4m3>(x)")
        (x,) = self.expect_args(e, 1)
        v = self.value(x)
        if "ue8m0" in (dt, v.type.dtype) and "f32" not in (dt, v.type.dtype):
            raise CompileError(f"ue8m0 converts only from and to f32, not {v.type.dtype} to {dt}",
                               e.span, "go through f32: cast<ue8m0>(cast<f32>(x))")
        return self.to_dtype(v, dt, e)

    def call_transpose(self, e: ast.Call):
        (x,) = self.expect_args(e, 1)
        v = self.value(x)
        if not isinstance(v.type, TileType) or len(v.type.shape) != 2:
            raise CompileError("transpose takes a 2-D tile", x.span, FUNCTIONS["transpose"])
        rows, cols = v.type.shape
        return self.at(e).value("transpose", [v], TileType(v.type.dtype, (cols, rows)))

    def tile_sizes(self, args: list) -> list[int]:
        """A tile's sizes written as call arguments: each a positive compile-time integer."""
        shape = []
        for a in args:
            n = self.expr(a)
            if not isinstance(n, Folded) or not n.is_int or n.value <= 0:
                raise CompileError("a tile's size must be a positive compile-time integer",
                                   a.span, "use a number or a tune/const name")
            shape.append(n.value)
        return shape

    def call_zeros(self, e: ast.Call):
        from .dtypes import DTYPES
        if len(e.args) < 2 or not isinstance(e.args[0], ast.Name) or e.args[0].id not in DTYPES:
            raise CompileError("zeros takes a dtype and the tile's sizes", e.span,
                               FUNCTIONS["zeros"])
        shape = self.tile_sizes(e.args[1:])
        dtype = supported_dtype(e.args[0].id, e.args[0].span)
        if dtype == "ue8m0":
            raise CompileError("ue8m0 has no zero: its bytes are the powers of two 2^-127 .. "
                               "2^127", e.args[0].span, "zeros(f32, ...), then cast<ue8m0>(...)")
        self.check_tile_size(tuple(shape), dtype, e)
        zero = self.materialize(Folded(0 if _is_int(dtype) else 0.0), dtype, e)
        return self.at(e).value("splat", [zero], TileType(dtype, tuple(shape)))

    def call_mma(self, e: ast.Call):
        if len(e.args) not in (2, 3):
            raise CompileError(f"mma takes 2 or 3 arguments, got {len(e.args)}", e.span,
                               FUNCTIONS["mma"])
        a_node, b_node = e.args[:2]
        if isinstance(a_node, ast.Attribute) and a_node.name == "T":
            raise CompileError("mma reads A K-major ([M, K]): wgmma's register form has no "
                               "transposed A, and an MN-major A in shared memory is not "
                               "lowered yet", a_node.span,
                               "load or compute a as [M, K] and write mma(a, b.T)")
        trans_b = isinstance(b_node, ast.Attribute) and b_node.name == "T"
        a = self.value(a_node)
        b = self.value(b_node.base if trans_b else b_node)
        for v, node in ((a, a_node), (b, b_node)):
            if not isinstance(v.type, TileType) or len(v.type.shape) != 2:
                raise CompileError("mma multiplies 2-D tiles", node.span, FUNCTIONS["mma"])
            if v.type.dtype not in MMA_OPERANDS:
                raise CompileError(f"mma takes FP8, bf16, f16, f32 (as tf32) or 8-bit integer "
                                   f"tiles, not {v.type.dtype}", node.span,
                                   "load the operands in their stored dtype")
        m, k = a.type.shape
        n, kb = b.type.shape if trans_b else b.type.shape[::-1]
        if k != kb:
            raise CompileError(f"mma operands disagree on K: [{m}, {k}] times "
                               f"[{', '.join(map(str, b.type.shape))}]{'.T' if trans_b else ''}",
                               e.span, "b of shape [N, K] goes in as b.T")
        acc_dtype = accumulator_dtype(a.type.dtype)
        result = TileType(acc_dtype, (m, n))
        operands = [a, b]
        if len(e.args) == 3:
            acc = self.value(e.args[2])
            if not isinstance(acc.type, TileType) or acc.type.shape != (m, n) \
                    or acc.type.dtype != acc_dtype:
                raise CompileError(f"the accumulator must be an {acc_dtype} [{m}, {n}] tile, "
                                   f"not {acc.type}", e.args[2].span,
                                   f"start it with zeros({acc_dtype}, {m}, {n})")
            operands.append(acc)
        every = k
        for kw in e.kwargs:
            if kw.name == "promote_every" and acc_dtype == "i32":
                raise CompileError("an integer product is exact in its i32 accumulator: it has "
                                   "nothing to promote", kw.span,
                                   "write acc = mma(ta, tb.T, acc)")
            if kw.name != "promote_every" or len(e.args) == 3:
                raise CompileError(f"mma takes no keyword '{kw.name}'" if kw.name != "promote_every"
                                   else "mma(a, b.T, acc) accumulates in the tensor cores, so "
                                   "it promotes nothing", kw.span, FUNCTIONS["mma"])
            n_every = self.expr(kw.value)
            if (not isinstance(n_every, Folded) or not n_every.is_int or n_every.value <= 0
                    or k % n_every.value):
                raise CompileError(f"promote_every must be a compile-time divisor of the "
                                   f"product's K = {k}", kw.value.span,
                                   "e.g. promote_every = 64 promotes twice per 128 of K")
            every = n_every.value
        return self.at(e).value("mma", operands, result, trans_b=trans_b,
                                promote_every=every if len(e.args) == 2 else None)

    def expr_Attribute(self, e: ast.Attribute):
        raise CompileError(f"'.{e.name}' is only supported as mma's second operand", e.span,
                           "write mma(a, b.T) for a [M, K] times [N, K] product")

    def call_reduce(self, e: ast.Call, kwargs):
        """`amax(t, axis = A)` drops one axis; `amax(t)` reduces every axis to a scalar (the
        amax of a whole 128 x 128 weight block), one axis after another."""
        (x,) = self.expect_args(e, 1)
        v = self.value(x)
        if not isinstance(v.type, TileType) or not v.type.shape:
            raise CompileError(f"{e.func} reduces a tile, not a scalar", x.span)
        rank = len(v.type.shape)
        if "axis" in kwargs:
            axis_node = kwargs["axis"].value
            axis = self.expr(axis_node)
            if not isinstance(axis, Folded) or not axis.is_int or not -rank <= axis.value < rank:
                raise CompileError(f"axis must be an integer in [0, {rank})", axis_node.span)
            axes = [axis.value % rank]
        else:
            axes = list(reversed(range(rank)))        # innermost first: within threads
        if v.type.dtype == "ue8m0":
            raise CompileError("ue8m0 values are scales, not numbers to reduce", x.span,
                               "reduce cast<f32>(...) of them")
        if e.func == "amax" and _is_int(v.type.dtype):
            raise CompileError(f"amax takes floats, not {v.type.dtype}", x.span,
                               f"max(t, axis = A) is the largest integer; {REDUCTIONS['amax']}")
        if _is_narrow_float(v.type.dtype):
            v = self.to_dtype(v, "f32", e)
        kind = e.func
        # Elements no load read are 0: left out of max and min, and of sum and amax unless
        # they are still 0 here (commdsl/ragged.py).
        masked = kind in MINMAX_ONLY or not self.ragged.zero_padded(v)
        for ax in axes:
            shape = v.type.shape[:ax] + v.type.shape[ax + 1:]
            rtype = TileType(v.type.dtype, shape) if shape else ScalarType(v.type.dtype)
            edges = self.ragged.edges(v)[ax] if masked else ()
            fill = MINMAX_ONLY.get(e.func, "0.0")
            if RESHAPED in edges:
                raise CompileError(f"{e.func} over axis {ax} of a reshaped tile that a load "
                                   "may not have read to the end", e.span,
                                   "say what the load reads past the tensor's edge, e.g. "
                                   f"'other = {fill}', or reduce before the reshape")
            if CARRIED in edges:
                raise CompileError(f"{e.func} over axis {ax} of a tile a loop built from "
                                   "loads that may not have read to the end", e.span,
                                   f"reduce each step's tile in the loop ({e.func}(t, axis = "
                                   f"{ax})) and combine those, or load with 'other = {fill}'")
            count = [self.ragged.count(self.at(e), edges, self.sizes)] if edges else []
            v = self.at(e).value("reduce", [v, *count], rtype, kind=kind, axis=ax)
            kind = "max" if kind == "amax" else kind         # |.| is taken once
        return v

    def call_cumsum(self, e: ast.Call, kwargs):
        (x,) = self.expect_args(e, 1)
        v = self.value(x)
        if not isinstance(v.type, TileType) or not v.type.shape:
            raise CompileError("cumsum sums along an axis of a tile, not a scalar", x.span,
                               FUNCTIONS["cumsum"])
        if set(kwargs) - {"axis"}:
            raise CompileError("cumsum takes one keyword, axis", e.span, FUNCTIONS["cumsum"])
        rank = len(v.type.shape)
        axis = rank - 1
        if "axis" in kwargs:
            a = self.expr(kwargs["axis"].value)
            if not isinstance(a, Folded) or not a.is_int or not -rank <= a.value < rank:
                raise CompileError(f"axis must be an integer in [0, {rank})",
                                   kwargs["axis"].span, FUNCTIONS["cumsum"])
            axis = a.value % rank
        if v.type.dtype == "ue8m0":
            raise CompileError("ue8m0 values are scales, not numbers to sum", x.span,
                               "sum cast<f32>(...) of them")
        if v.type.dtype == "i64":
            raise CompileError("cumsum of i64 tiles is not supported yet", x.span,
                               "cast<i32>(t) if the sums fit in 32 bits")
        v = self.to_dtype(v, "i32" if _is_int(v.type.dtype) else "f32", e)
        return self.at(e).value("scan", [v], v.type, kind="sum", axis=axis)

    def expr_Subscript(self, e: ast.Subscript):
        v = self.value(e.base)
        if not isinstance(v.type, TileType):
            raise CompileError("only tiles can be subscripted", e.base.span)
        kept = [i for i in e.indices if isinstance(i, (ast.All, ast.Slice))]
        if len(kept) != len(v.type.shape) or any(
                not isinstance(i, (ast.All, ast.Slice, ast.NewAxis)) for i in e.indices):
            raise CompileError("a tile subscript keeps every dimension with ':' or "
                               "'start : +length' and adds ones with None", e.span,
                               f"this tile has {len(v.type.shape)} dimension(s), e.g. "
                               f"t[{', '.join([':'] * len(v.type.shape))}, None]")
        if any(isinstance(i, ast.Slice) for i in kept):
            v = self.tile_slice(v, kept, e)
        for axis, i in enumerate(e.indices):
            if isinstance(i, ast.NewAxis):
                shape = v.type.shape[:axis] + (1,) + v.type.shape[axis:]
                v = self.at(e).value("expand_dims", [v], TileType(v.type.dtype, shape), axis=axis)
        return v

    def tile_slice(self, v: Value, kept, e: ast.Subscript) -> Value:
        """`t[:, g : +128]`: a view of the elements from compile-time starts."""
        offsets, shape = [], []
        for i, n in zip(kept, v.type.shape):
            if isinstance(i, ast.All):
                offsets.append(0)
                shape.append(n)
                continue
            start, length = self.expr(i.start), self.expr(i.length)
            for x, node in ((start, i.start), (length, i.length)):
                if not isinstance(x, Folded) or not x.is_int:
                    raise CompileError("a slice of a tile needs a compile-time start and "
                                       "length", node.span, "use numbers or tune/const names; "
                                       "a slice at a runtime index is a load")
            if start.value < 0 or length.value <= 0 or start.value + length.value > n:
                raise CompileError(f"the slice {start.value} : +{length.value} is not inside "
                                   f"the tile's {n} elements along this axis", i.span,
                                   f"take at most {n} elements from 0 .. {n - 1}")
            offsets.append(start.value)
            shape.append(length.value)
        return self.at(e).value("slice", [v], TileType(v.type.dtype, tuple(shape)),
                                offsets=tuple(offsets))

    def call_reshape(self, e: ast.Call) -> Value:
        """`reshape(t, R, H / 128, 128)`: the same elements, row-major, in another shape."""
        if len(e.args) < 2 or e.kwargs:
            raise CompileError("reshape takes a tile and its new sizes", e.span,
                               FUNCTIONS["reshape"])
        v = self.value(e.args[0])
        if not isinstance(v.type, TileType):
            raise CompileError("reshape takes a tile, not a scalar", e.args[0].span,
                               FUNCTIONS["reshape"])
        shape = self.tile_sizes(e.args[1:])
        numel = 1
        for n in shape:
            numel *= n
        if numel != v.type.numel:
            old = " x ".join(map(str, v.type.shape))
            raise CompileError(f"reshape to {' x '.join(map(str, shape))} = {numel} elements "
                               f"does not divide the tile's {old} = {v.type.numel}", e.span,
                               "the new sizes must multiply to the tile's element count")
        return self.at(e).value("reshape", [v], TileType(v.type.dtype, tuple(shape)))

    def expr_Load(self, e: ast.Load):
        tensor = self.tensor(e.tensor)
        idx, sizes = self.indices(tensor, e.indices, e)
        shape = tuple(s for s in sizes if s is not None)
        # Every index a point: one element, a scalar every thread holds (a block's scale).
        rtype = TileType(tensor.type.dtype, shape) if shape else ScalarType(tensor.type.dtype)
        via = None
        if e.via is not None:
            if e.via.id != "tma":
                raise CompileError(f"unknown copy engine '{e.via.id}'", e.via.span,
                                   "write 'via tma' for a bulk tensor copy into shared memory")
            if e.cache is not None:
                raise CompileError("a 'via tma' load takes no cache clause", e.cache.span,
                                   "TMA copies bypass L1; drop the cache(...) clause")
            via = "tma"
        masking = self.access_mask(e.mask, shape, e, via)
        if e.other is not None:
            masking["other"] = self.fill_value(e.other, tensor.type.dtype)
        return self.at(e).value("load", [tensor, *idx, *masking.pop("operands")], rtype,
                                sizes=sizes, via=via, **masking, **self.cache_attrs(e.cache))

    def access_mask(self, node: ast.Expr | None, shape, access, via=None) -> dict:
        """A load's or store's `mask(c)`: the bool tile c, broadcast to the access's shape."""
        if node is None:
            return {"operands": []}
        if via is not None:
            raise CompileError("a 'via tma' load takes no mask", node.span,
                               "TMA copies whole boxes; mask the values after the load")
        if not shape:
            raise CompileError("a mask needs a tile: this access moves one element",
                               node.span, "slice a dimension with 'start : +length'")
        m = self.value(node)
        if m.type.dtype != "bool":
            raise CompileError(f"a mask is a bool tile, not {m.type.dtype}", node.span,
                               "load it from a bool tensor, or compare: mask(t > 0.0)")
        mshape = m.type.shape if isinstance(m.type, TileType) else ()
        if isinstance(m.type, TileType) and not self._broadcastable(mshape, shape):
            raise CompileError(f"a mask of shape [{', '.join(map(str, mshape))}] does not fit "
                               f"the access's tile [{', '.join(map(str, shape))}]", node.span,
                               "give the mask the tile's shape, or sizes of 1 to broadcast")
        return {"operands": [self.broadcast_to(m, shape, access)], "mask": True}

    def fill_value(self, node: ast.Expr, dtype: str):
        """`other = v`: a compile-time number (or inf, -inf) for the elements not read."""
        v = self.expr(node)
        if not isinstance(v, Folded):
            raise CompileError("'other' must be a compile-time number", node.span,
                               "e.g. other = 0.0, other = -inf")
        if _is_int(dtype):
            if not v.is_int:
                raise CompileError(f"'other' of an {dtype} load must be an integer", node.span)
            return int(v.value)
        if dtype == "ue8m0":
            return _ue8m0_byte(float(v.value), node)
        return float(v.value)

    def cache_attrs(self, clause: ast.CacheClause | None) -> dict:
        """The clause as written, for the `cache` pass to check and lower; spans kept apart.
        A cache-policy constant (`cache(XC)`, XC tuned over `cache(...)` values) stands for
        its value's options, located at the name."""
        if clause is None:
            return {"cache": None}
        args, spans = [], []
        for a in clause.args:
            value = self.sig.constants.get(a.key) if a.value is None else None
            if value is None:
                args.append((a.key, a.value))
                spans.append(a.span)
            elif not is_cache_policy(value):
                raise CompileError(f"'{a.key}' = {value} is not a cache policy", a.span,
                                   f"declare it as one: 'tune {a.key} = cache(nc) in "
                                   "[cache(), cache(nc)]'")
            else:
                options = parse_cache_policy(value, a.key).args
                args += [(o.key, o.value) for o in options]
                spans += [a.span] * len(options)
        return {"cache": tuple(args) or None, "_cache_spans": tuple(spans)}

    def tensor(self, name: ast.Name, local: bool = True) -> Value:
        """A tensor parameter; `local`: for load and store, which reach no symmetric tensor
        (get and put name the rank)."""
        if name.id not in self.tensors:
            raise CompileError(f"'{name.id}' is not a tensor parameter", name.span,
                               did_you_mean(name.id, self.tensors) or
                               f"tensors: {', '.join(self.tensors)}")
        t = self.tensors[name.id]
        if local and t.type.symmetric:
            raise CompileError(f"'{name.id}' is symmetric: say whose copy", name.span,
                               f"read it with 'get peer(rank).{name.id}[...]', write it with "
                               f"'put peer(rank).{name.id}[...] = ...'")
        return t

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
        self.check_tile_size(tuple(n for n in sizes if n is not None), tensor.type.dtype, node)
        return idx, tuple(sizes)

    def index_value(self, e: ast.Expr) -> Value:
        v = self.expr(e)
        if isinstance(v, Folded):
            return self.materialize(v, "i32", e)
        if (not isinstance(v.type, ScalarType) or not _is_int(v.type.dtype)
                or v.type.dtype in ("bool", "ue8m0")):
            raise CompileError(f"an index must be an integer scalar, got {v.type}", e.span,
                               "index with an i32 value: pid.0 * 128, a loop variable, a "
                               "loaded index, cast<i32>(...)")
        return v if v.type.dtype == "i32" else self.to_dtype(v, "i32", e)

    # ---- statements --------------------------------------------------------------------

    def lower_in(self, body: Block, stmts, finish=None):
        """Lowers `stmts` into `body` with its arguments in scope; names bound inside stay
        inside. `finish` runs last, still inside (a loop's yield)."""
        outer_env, outer_b = self.env, self.b
        self.env = dict(outer_env)
        self.env.update({a.name: a for a in body.args})
        self.b = Builder(body)
        self.statements(stmts)
        if finish is not None:
            finish()
        self.env, self.b = outer_env, outer_b

    def statements(self, stmts) -> None:
        for i, stmt in enumerate(stmts):
            self.rest = stmts[i + 1:]
            getattr(self, "stmt_" + type(stmt).__name__)(stmt)

    def stmt_Let(self, s: ast.Let):
        if s.name in self.tensors or s.name in self.sig.constants:
            raise CompileError(f"'{s.name}' is already a parameter or constant", s.span,
                               "pick another name")
        reassigned = s.name in _assigned(self.rest)
        value = self.expr(s.value)
        if isinstance(value, Folded) and reassigned:
            # `let n = 0` then `n = n + ...`: a variable, an i32 or an f32 as the number is
            value = self.materialize(value, "i32" if value.is_int else "f32", s.value)
        self.env[s.name] = value

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
        if shape or isinstance(value.type, TileType):
            value = self.broadcast_to(value, shape, s)
        masking = self.access_mask(s.mask, shape, s)
        self.at(s).op("store", [tensor, *idx, *masking.pop("operands"), value], [], sizes=sizes,
                      **masking, **self.cache_attrs(s.cache))

    def stmt_Assign(self, s: ast.Assign):
        old = self.env.get(s.name)
        if not isinstance(old, Value):
            raise CompileError(f"'{s.name}' is not a variable", s.span,
                               f"declare it first: let {s.name} = ..."
                               if old is None else "constants cannot change")
        new = self.expr(s.value)
        if s.op == "+=":
            new = self.binary("add", old, new, s)
        elif isinstance(new, Folded):
            new = self.materialize(new, old.type.dtype, s.value)
        if new.type != old.type:
            raise CompileError(f"'{s.name}' is {old.type}; this assigns {new.type}", s.span,
                               "a variable keeps its dtype and shape; convert with cast<...>")
        self.env[s.name] = new

    def stmt_For(self, s: ast.For):
        for c in s.clauses:
            if c.name not in LOOP_CLAUSES:
                raise CompileError(f"unknown loop clause '{c.name}'", c.span,
                                   did_you_mean(c.name, LOOP_CLAUSES) or
                                   "clauses: " + "; ".join(LOOP_CLAUSES.values()))
        clauses = {c.name: c for c in s.clauses}
        _check_range_order(s.ranges)
        if "persistent" in clauses:
            return self.persistent_loop(s, clauses)
        if len(s.ranges) > 1:        # several ranges without a scheduler: nested loops
            inner = ast.For(s.span, s.ranges[1:], s.clauses, s.body)
            return self.stmt_For(ast.For(s.span, s.ranges[:1], (), (inner,)))
        r = s.ranges[0]
        lo, hi, step = self.range_bounds(r)
        stages = None
        if "pipeline" in clauses:
            c = clauses["pipeline"]
            if len(c.args) != 1 or c.kwargs:
                raise CompileError("pipeline takes one number", c.span, LOOP_CLAUSES["pipeline"])
            stages = self.expr(c.args[0])
            if not isinstance(stages, Folded) or not stages.is_int or stages.value < 2:
                raise CompileError("pipeline needs a compile-time stage count of at least 2",
                                   c.args[0].span, LOOP_CLAUSES["pipeline"])
            stages = stages.value
        carried = [n for n in _assigned(s.body) if isinstance(self.env.get(n), Value)]
        inits = [self.env[n] for n in carried]
        body = Block(args=[Value(ScalarType("i32"), r.name)] +
                     [Value(v.type, n) for n, v in zip(carried, inits)])
        loop = self.at(s).op("for", [lo, hi, step, *inits], [v.type for v in inits],
                             pipeline=stages)
        loop.blocks.append(body)
        self.lower_in(body, s.body,
                      lambda: self.at(s).op("yield", [self.env[n] for n in carried], []))
        if stages not in (None, 2) and not any(op.name == "load" and op.attrs.get("via")
                                               for op in body.walk()):
            raise CompileError("a loop without 'via tma' loads prefetches one iteration ahead: "
                               "write pipeline(2)", clauses["pipeline"].span,
                               "more stages need 'via tma' loads (a shared-memory ring)")
        for n, v in zip(carried, loop.results):
            v.name = None
            self.env[n] = v

    def persistent_loop(self, s: ast.For, clauses):
        c = clauses["persistent"]
        kwargs = {k.name: k.value for k in c.kwargs}
        if c.args or set(kwargs) - {"raster", "cluster", "sms"}:
            raise CompileError("persistent takes only 'raster = G', 'cluster = C' and "
                               "'sms = S'", c.span,
                               LOOP_CLAUSES["persistent"])
        if "pipeline" in clauses:
            raise CompileError("a persistent loop is not pipelined itself", clauses["pipeline"].span,
                               "put pipeline(...) on the inner loop over K")
        if self.b.block is not self.ir.body:
            raise CompileError("only the kernel's outermost loop can be persistent", c.span,
                               "move this loop to the top of the kernel body")
        if any(a.name == "grid" for a in self.kernel.attrs):
            raise CompileError("a persistent kernel launches one CTA per SM, so it takes no "
                               "grid(...)", c.span, "drop the grid(...) annotation")
        if len(s.ranges) > 3:
            raise CompileError("a persistent loop ranges over one to three tile coordinates",
                               s.span, "write 'for m0 in 0 .. M step BM, n0 in 0 .. N step BN', "
                               "or 'for g in 0 .. G, m0 in ..., n0 in ...' for groups")
        raster = 1
        if "raster" in kwargs:
            g = self.expr(kwargs["raster"])
            if not isinstance(g, Folded) or not g.is_int or g.value < 1:
                raise CompileError("raster must be a positive compile-time integer",
                                   kwargs["raster"].span, LOOP_CLAUSES["persistent"])
            raster = g.value
        cluster = 1
        if "cluster" in kwargs:
            g = self.expr(kwargs["cluster"])
            if not isinstance(g, Folded) or not g.is_int or g.value not in (1, 2):
                raise CompileError("cluster must be 1 or 2 (CTAs sharing tiles by multicast)",
                                   kwargs["cluster"].span, LOOP_CLAUSES["persistent"])
            cluster = g.value
            if cluster > 1 and len(s.ranges) < 2:
                raise CompileError("a cluster shares tiles of one tile row, so the persistent "
                                   "loop needs two tile coordinates", kwargs["cluster"].span,
                                   "write 'for m0 in 0 .. M step BM, n0 in 0 .. N step BN'")
        budget = {}
        if "sms" in kwargs:
            g = self.expr(kwargs["sms"])
            if not isinstance(g, Folded) or not g.is_int or g.value < 1:
                raise CompileError("sms must be a positive compile-time integer",
                                   kwargs["sms"].span, LOOP_CLAUSES["persistent"])
            if g.value % cluster:
                raise CompileError(f"sms = {g.value} does not split into clusters of {cluster} "
                                   "CTAs", kwargs["sms"].span, f"use a multiple of {cluster}")
            budget["sms"] = g.value       # absent by default: the IR text stays as it was
        assigned = [n for n in _assigned(s.body) if isinstance(self.env.get(n), Value)]
        if assigned:
            raise CompileError(f"the iterations of a persistent loop run on different CTAs, so "
                               f"it cannot carry '{assigned[0]}' from one to the next", s.span,
                               f"declare '{assigned[0]}' inside the loop")
        operands, ends, ragged = [], [], []
        for i, r in enumerate(s.ranges):
            earlier = [x.name for x in s.ranges[:i]]
            if _coordinates_used(r.lo, earlier):
                raise CompileError("a persistent range whose start depends on an earlier "
                                   "coordinate is not supported yet", r.lo.span,
                                   "start at a size or constant; only the end may depend on "
                                   "earlier coordinates, e.g. 'm0 in 0 .. load masked_m[g] "
                                   "step BM'")
            operands.append(self.index_value(r.lo))
            if _coordinates_used(r.hi, earlier):      # ragged: an end block per range
                ends.append(self.range_end_block(r, earlier))
                ragged.append(i)
            else:
                operands.append(self.index_value(r.hi))
        steps = tuple(self.range_step(r) for r in s.ranges)
        body = Block(args=[Value(ScalarType("i32"), r.name) for r in s.ranges])
        extra = {"ragged": tuple(ragged)} if ragged else {}   # absent: the IR text stays
        loop = self.at(s).op("tiles", operands, [], steps=steps, raster=raster,
                             cluster=cluster, **budget, **extra)
        loop.blocks += [body, *ends]
        self.lower_in(body, s.body)

    def range_end_block(self, r: ast.Range, earlier: list[str]) -> Block:
        """The end of a persistent range that depends on earlier coordinates, as a block
        taking them (the scheduler evaluates it wherever it counts tiles)."""
        block = Block(args=[Value(ScalarType("i32"), name) for name in earlier])
        self.lower_in(block, [], lambda: self.at(r.hi).op("yield", [self.index_value(r.hi)], []))
        return block

    def range_step(self, r: ast.Range) -> int:
        step = Folded(1) if r.step is None else self.expr(r.step)
        if not isinstance(step, Folded) or not step.is_int or step.value <= 0:
            raise CompileError("a loop step must be a positive compile-time integer",
                               (r.step or r).span, "use a number or a tune/const name")
        return step.value

    def range_bounds(self, r: ast.Range):
        """(lo, hi, step) of a range as i32 values; the step is a positive constant."""
        step = self.range_step(r)
        return (self.index_value(r.lo), self.index_value(r.hi),
                self.materialize(Folded(step), "i32", r.step or r))

    @staticmethod
    def _broadcastable(a, b) -> bool:
        return len(a) == len(b) and all(x in (1, y) for x, y in zip(a, b))


def _coordinates_used(e: ast.Node, coordinates: list[str]) -> list[ast.Name]:
    """The names in expression `e` that are among `coordinates` (loop variables)."""
    if isinstance(e, ast.Name):
        return [e] if e.id in coordinates else []
    found = []
    for f in dataclasses.fields(e):
        value = getattr(e, f.name)
        for x in value if isinstance(value, tuple) else (value,):
            if isinstance(x, ast.Node):
                found += _coordinates_used(x, coordinates)
    return found


def _check_range_order(ranges) -> None:
    """Each range of a loop over several may use the coordinates before it, not its own or
    later ones (`for g in 0 .. G, m0 in 0 .. load masked_m[g] step BM`)."""
    for i, r in enumerate(ranges):
        later = [x.name for x in ranges[i:]]
        for e in (r.lo, r.hi):
            used = _coordinates_used(e, later)
            if used:
                what = ("itself" if used[0].id == r.name else
                        f"'{used[0].id}', which a later range of this loop defines")
                raise CompileError(f"the range of '{r.name}' uses {what}", used[0].span,
                                   "a range may use only the coordinates before it: 'for g in "
                                   "0 .. G, m0 in 0 .. load masked_m[g] step BM'")


def _functions(functions) -> dict[str, ast.Function]:
    """The file's `fn`s by name; a name given twice, a builtin's name, or a parameter
    named twice is an error at the definition."""
    out: dict[str, ast.Function] = {}
    for f in functions:
        if f.name in out or f.name in FUNCTIONS:
            raise CompileError(f"'{f.name}' is already "
                               f"{'defined' if f.name in out else 'a builtin function'}",
                               f.span, "give the function another name")
        for i, (p, span) in enumerate(zip(f.params, f.param_spans)):
            if p in f.params[:i]:
                raise CompileError(f"parameter '{p}' is named twice", span,
                                   "give each parameter its own name")
        out[f.name] = f
    return out


def _assigned(body) -> list[str]:
    """Names a loop body assigns (not counting its own lets), in first-assignment order."""
    names: list[str] = []
    for stmt in body:
        if isinstance(stmt, ast.Assign) and stmt.name not in names:
            names.append(stmt.name)
        elif isinstance(stmt, ast.For):
            names += [n for n in _assigned(stmt.body) if n not in names]
    local = {stmt.name for stmt in body if isinstance(stmt, ast.Let)}
    return [n for n in names if n not in local]


def lower(sig: Signature, kernel: ast.Kernel, target: Target) -> KernelIR:
    low = _Lowering(sig, kernel, target)
    low.statements(list(kernel.body))
    low.ir.attrs["warps"] = sig.warps
    low.ir.attrs["ctas_per_sm"] = sig.ctas_per_sm
    low.ir.attrs["span"] = kernel.span
    low.ir.attrs["quant"] = {t.name: t.quant for t in sig.tensors if t.quant is not None}
    return low.ir
