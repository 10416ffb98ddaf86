"""Checks a kernel's signature: constants, dtypes, symbolic shapes, quant groups, attributes.

The result, a `Signature`, is what irgen lowers the body against and what the runtime
checks arguments against. Body expressions are checked while irgen lowers them.
"""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass

from . import ast
from .diagnostics import CompileError
from .dims import BinOp, Const, Dim, DimError, Sym
from .dtypes import DTYPES, FP8_MAX
from .folding import fold_binary, fold_cdiv, fold_neg
from .spec import QuantGroup, TensorParam
from .target import Target

KERNEL_ATTRS = {
    "grid": "grid(X[, Y[, Z]]): how many programs to launch, from sizes and constants",
    "warps": "warps(N): threads per program in warps of 32",
    "sms": "sms(N): an SM budget: N programs (one CTA each) that loop over the work, e.g. "
           "'for w in pid.0 .. ITEMS step N'",
    "fast_math": "fast_math(): math functions use PTX's .approx instructions (as the "
                 "fast_math compile option does)",
    "ctas_per_sm": "ctas_per_sm(N): fit N CTAs on an SM (.minnctapersm, CUDA's launch-bounds "
                   "minimum): registers are capped at 64K / (N x threads); what does not fit "
                   "spills",
}
# Scale formats: one f32 per group, or a power of two stored as its biased exponent (UE8M0).
SCALE_FORMATS = {
    "f32": "an f32 per group (DeepSeek-V3's default)",
    "ue8m0": "a power of two per group, one byte holding the biased exponent (DeepGEMM's UE8M0)",
}
SCALE_DTYPES = tuple(SCALE_FORMATS)
QUANT_OPTIONS = {"format": "format = f32 | ue8m0: how each group's scale is stored",
                 "layout": "layout = k_major | mn_major: scales row by row, or transposed "
                           "as DeepGEMM's TMA-aligned A scales"}
# mn_major: a [M, K] tensor's scales as [K / G, MP], MP = M rounded up to 16 bytes of scales
# (DeepGEMM's get_col_major_tma_aligned_tensor), so a K step's scales are one TMA row.
SCALE_LAYOUTS = ("k_major", "mn_major")
MN_MAJOR_ALIGN = 4
# Transposed UE8M0 scales (DeepGEMM's get_mn_major_tma_aligned_packed_ue8m0_tensor): the
# exponent bytes of four consecutive K groups in one i32, group 4w + j in byte j of word w.
PACKED_UE8M0 = "i32"
UE8M0_PER_WORD = 4


@dataclass
class Signature:
    name: str
    constants: dict[str, int | float]
    tensors: list[TensorParam]
    spans: dict[str, ast.Param]
    size_symbols: list[str]
    grid: tuple[Dim, ...]
    warps: int | None
    sms: int | None = None
    ctas_per_sm: int = 1
    fast_math: bool = False


def did_you_mean(name: str, options) -> str:
    close = difflib.get_close_matches(name, list(options), n=1)
    return f"did you mean '{close[0]}'?" if close else ""


def fold_constant(e: ast.Expr, constants: dict, what: str):
    """Evaluates a compile-time expression of literals and constants."""
    if isinstance(e, ast.IntLit):
        return e.value
    if isinstance(e, ast.FloatLit):
        return e.value
    if isinstance(e, ast.Name):
        if e.id in constants:
            return constants[e.id]
        if e.id in DTYPES:
            return e.id                # a dtype, for constants such as `const FMT = e4m3`
        raise CompileError(f"{what} must be known at compile time; '{e.id}' is not a constant",
                           e.span, "use a number or a name declared with 'const' or 'tune'")
    if isinstance(e, ast.Neg):
        return fold_neg(fold_constant(e.operand, constants, what), e.span)
    if isinstance(e, ast.BinOp):
        a, b = fold_constant(e.lhs, constants, what), fold_constant(e.rhs, constants, what)
        return fold_binary(e.op, a, b, e.span, e.rhs.span)
    if isinstance(e, ast.Call) and e.func == "cdiv" and len(e.args) == 2:
        a, b = (fold_constant(x, constants, what) for x in e.args)
        return fold_cdiv(a, b, e.span, e.args[1].span)
    if isinstance(e, ast.CacheClause):
        return e.text                  # a cache policy, for `tune XC = cache(nc) in [...]`
    raise CompileError(f"{what} must be known at compile time", e.span,
                       "use numbers, constants, + - * / % & | ^ << >> and cdiv(a, b)")


# Dtypes the language names but the code generator cannot handle yet: name -> what to use.
NOT_SUPPORTED_YET = {"i64": "use i32 (64-bit integer tiles are not lowered yet)"}


def supported_dtype(name: str, span) -> str:
    if name in NOT_SUPPORTED_YET:
        raise CompileError(f"{name} is not supported yet", span, NOT_SUPPORTED_YET[name])
    return name


def resolve_dtype(name: str, constants: dict, span) -> str:
    """A dtype written directly (`e4m3`) or through a constant (`FMT`, set by `-D FMT=e5m2`)."""
    if name in DTYPES:
        return supported_dtype(name, span)
    if name in constants:
        value = constants[name]
        if isinstance(value, str) and value in DTYPES:
            return supported_dtype(value, span)
        raise CompileError(f"constant '{name}' = {value!r} is not a dtype", span,
                           f"dtypes are: {', '.join(DTYPES)}; e.g. -D {name}=e4m3")
    raise CompileError(f"unknown dtype '{name}'", span,
                       did_you_mean(name, list(DTYPES) + list(constants)) or
                       f"dtypes are: {', '.join(DTYPES)}")


def _positive_int(e: ast.Expr, constants: dict, what: str) -> int:
    v = fold_constant(e, constants, what)
    if not isinstance(v, int) or v <= 0:
        raise CompileError(f"{what} must be a positive integer, got {v}", e.span)
    return v


def _constants(k: ast.Kernel, overrides: dict) -> dict:
    declared = {t.name: t for t in k.tunes} | {c.name: c for c in k.consts}
    for name in overrides:
        if name not in declared:
            hint = did_you_mean(name, declared) or (
                f"declared constants: {', '.join(declared) or 'none'}")
            raise CompileError(f"kernel '{k.name}' has no constant '{name}' to set", k.span, hint)
    constants: dict = {}
    for t in k.tunes:
        if t.by is not None and not t.by_model:
            raise CompileError(f"'by {t.by.id}' is not a way to pick a default", t.by.span,
                               f"write 'by model' (the cost model picks {t.name} per call "
                               "shape), or time the choices with `commdsl tune`")
        values = tuple(fold_constant(v, constants, f"value of '{t.name}'") for v in t.values)
        if t.default is not None:
            constants[t.name] = fold_constant(t.default, constants, f"default of '{t.name}'")
        else:
            constants[t.name] = values[0]
        policies = [is_cache_policy(v) for v in (constants[t.name], *values)]
        if any(policies) and not all(policies):
            raise CompileError(f"'{t.name}' mixes cache policies with other values", t.span,
                               f"give only cache clauses, e.g. 'tune {t.name} = cache(nc) in "
                               "[cache(), cache(nc)]'")
        if t.name in overrides:
            constants[t.name] = _override(t, constants[t.name], overrides[t.name])
    for c in k.consts:
        value = None if c.value is None else fold_constant(c.value, constants,
                                                           f"constant '{c.name}'")
        if c.name in overrides:
            constants[c.name] = _override(c, value, overrides[c.name])
        elif value is not None:
            constants[c.name] = value
        else:
            raise CompileError(f"constant '{c.name}' has no value", c.span,
                               f"give it one with -D {c.name}=VALUE on the command line or "
                               f"commdsl.load(..., {c.name}=VALUE), or write 'const {c.name} = VALUE'")
    return constants


def is_cache_policy(value) -> bool:
    """Whether a constant's value is a cache policy (`cache(...)`, as CacheClause.text)."""
    return isinstance(value, str) and value.startswith("cache(")


def _kind(value) -> str:
    return ("a cache policy" if is_cache_policy(value) else "a dtype" if isinstance(value, str)
            else "an integer" if isinstance(value, int) else "a number")


def _override(decl: ast.Tune | ast.Const, declared, value):
    """A -D (or load(...)) value for a declared constant: of the kind its declaration has (an
    integer stays an integer, a dtype a dtype), so a wrong -D is reported where it lands."""
    if is_cache_policy(declared) and isinstance(value, str):
        from .parser import parse_cache_policy
        return parse_cache_policy(value, decl.name).text
    if declared is None or _kind(declared) == _kind(value) or (
            _kind(declared) == "a number" and isinstance(value, int)):
        return value
    what = (f"constant '{decl.name}' = {value!r} is not {_kind(declared)}"
            if isinstance(declared, str) else
            f"'{decl.name}' is {_kind(declared)} ({declared}), so it cannot be set to {value!r}")
    example = f"'{declared}'" if is_cache_policy(declared) else declared
    raise CompileError(what, decl.span, f"give {_kind(declared)}, e.g. -D {decl.name}={example}")


def to_dim(e: ast.Expr, constants: dict, symbols: list[str], allow_new: bool = True) -> Dim:
    """A shape or grid expression as a symbolic Dim; new size names are added to `symbols`
    where `allow_new` (tensor shapes introduce sizes; a grid only uses them)."""
    if isinstance(e, ast.IntLit):
        return Const(e.value)
    if isinstance(e, ast.Name):
        if e.id in constants:
            v = constants[e.id]
            if not isinstance(v, int):
                raise CompileError(f"'{e.id}' = {v} is not an integer size", e.span,
                                   f"sizes are integers, e.g. -D {e.id}=128")
            return Const(v)
        if e.id not in symbols and not allow_new:
            raise CompileError(f"unknown size '{e.id}'", e.span,
                               did_you_mean(e.id, symbols + list(constants)) or
                               "sizes come from the tensor parameters' shapes")
        if e.id not in symbols:
            symbols.append(e.id)
        return Sym(e.id)
    if isinstance(e, ast.BinOp) and e.op in "+-*/":
        return _dim_op(e.op, e.lhs, e.rhs, constants, symbols, allow_new)
    if isinstance(e, ast.Call) and e.func == "cdiv" and len(e.args) == 2 and not e.kwargs:
        return _dim_op("cdiv", *e.args, constants, symbols, allow_new)
    raise CompileError("a size must be built from names, integers, + - * / and cdiv(a, b)",
                       e.span, "sizes are tensor dimensions and constants, e.g. cdiv(M, ROWS); "
                       "program ids and floats are not sizes")


def _dim_op(op: str, lhs: ast.Expr, rhs: ast.Expr, constants: dict, symbols: list[str],
            allow_new: bool) -> Dim:
    a, b = (to_dim(x, constants, symbols, allow_new) for x in (lhs, rhs))
    if op in ("/", "cdiv") and not b.symbols():
        try:
            divisor = b.evaluate({})
        except DimError as err:
            raise CompileError(str(err), rhs.span, "sizes are exact integer arithmetic") from None
        if divisor == 0:
            raise CompileError("a size is divided by zero", rhs.span,
                               "the divisor folds to 0 at compile time")
    return BinOp(op, a, b)


def _check_quant(p: ast.Param, tensors: dict[str, TensorParam], constants: dict):
    q = p.quant
    data = tensors[p.name]
    if data.dtype not in FP8_MAX:
        raise CompileError(f"'{p.name}' is {data.dtype}, but quant groups describe FP8 data",
                           p.dtype.span, f"declare it e4m3 or e5m2, e.g. '{p.name}: e4m3[...]'")
    options = {}
    for key, value in q.options:
        if key not in QUANT_OPTIONS:
            raise CompileError(f"unknown quant option '{key}'", q.span,
                               did_you_mean(key, QUANT_OPTIONS) or
                               "; ".join(QUANT_OPTIONS.values()))
        options[key] = constants.get(value, value)
    fmt = options.get("format")
    if fmt is not None and fmt not in SCALE_FORMATS:
        raise CompileError(f"unknown scale format '{fmt}' for '{p.name}'", q.span,
                           "formats: " + "; ".join(f"{k}: {v}" for k, v in SCALE_FORMATS.items()))
    layout = options.get("layout", "k_major")
    if layout not in SCALE_LAYOUTS:
        raise CompileError(f"unknown scale layout '{layout}' for '{p.name}'", q.span,
                           QUANT_OPTIONS["layout"])
    group = tuple(_positive_int(g, constants, "a group size") for g in q.group)
    if len(group) != len(data.dims):
        raise CompileError(
            f"quant group of '{p.name}' has {len(group)} extents but the tensor has "
            f"{len(data.dims)} dimensions", q.span,
            f"write one extent per dimension, e.g. quant({' x '.join(['1'] * (len(data.dims) - 1) + ['128'])}, ...)")
    for g, e in zip(group, q.group):
        if g != 1 and g % 16:
            raise CompileError(f"group extent {g} is not a multiple of 16", e.span,
                               "FP8 groups are 1 or a multiple of 16 elements per dimension "
                               "(DeepSeek-V3 uses 1 x 128 and 128 x 128)")
    if q.scale.id not in tensors:
        raise CompileError(f"scale tensor '{q.scale.id}' is not a parameter", q.scale.span,
                           did_you_mean(q.scale.id, tensors) or
                           f"add a parameter such as '{q.scale.id}: f32[...]'")
    scale = tensors[q.scale.id]
    if scale.name == p.name:
        raise CompileError("a tensor cannot be its own scale", q.scale.span)
    expected = []
    for d, g in zip(data.dims, group):
        if g == 1:
            expected.append((d,))
        else:
            expected.append((BinOp("/", d, Const(g)), BinOp("cdiv", d, Const(g))))
    # Transposed UE8M0 scales are DeepGEMM's packed ones: four groups' exponents to an i32.
    packed = layout == "mn_major" and (fmt or scale.dtype) == "ue8m0"
    if layout == "mn_major":
        expected = _mn_major(p, data, group, expected, q.span, packed)
    # Which scale dimension holds each data dimension's groups (mn_major swaps the last two).
    where = list(range(len(data.dims)))
    if layout == "mn_major":
        where[-2:] = where[-1], where[-2]
    for i, (d, g, e) in enumerate(zip(data.dims, group, q.group)):
        if isinstance(d, Const) and g > 1 and d.value % g:
            sd = scale.dims[where[i]] if where[i] < len(scale.dims) else None
            if packed and isinstance(sd, BinOp) and sd.op == "cdiv":
                sd = sd.lhs
            if not (isinstance(sd, BinOp) and sd.op == "cdiv"):
                extent = f"cdiv({d.value}, {g})"
                if packed:
                    extent = f"cdiv({extent}, {UE8M0_PER_WORD})"
                raise CompileError(f"group extent {g} does not divide dimension {d.value} of '{p.name}'",
                                   e.span, f"use a group that divides {d.value}, or give the scale "
                                   f"ceil-div extent {extent} so the last group is masked")
    ok_shape = len(scale.dims) == len(expected) and all(
        sd in opts or (isinstance(sd, Const) and any(_const_eq(sd, o) for o in opts))
        for sd, opts in zip(scale.dims, expected))
    want = ", ".join(str(o[0]) for o in expected)
    if packed and scale.dtype != PACKED_UE8M0:
        raise CompileError(f"transposed UE8M0 scales are packed four to an i32 (DeepGEMM's "
                           f"layout), so '{scale.name}' must be i32, not {scale.dtype}", None,
                           f"declare it as '{scale.name}: {'out ' * scale.is_out}"
                           f"{PACKED_UE8M0}[{want}]'")
    if scale.dtype == PACKED_UE8M0 and not packed:
        raise CompileError("an i32 scale holds UE8M0 exponents packed four to a word, "
                           "which is DeepGEMM's transposed layout only", q.span,
                           "write quant(..., format = ue8m0, layout = mn_major), or declare "
                           f"'{scale.name}' f32 or ue8m0")
    if scale.dtype not in SCALE_DTYPES and not packed:
        raise CompileError(f"scale '{scale.name}' of '{p.name}' must be f32 or ue8m0, not "
                           f"{scale.dtype}", None,
                           f"declare it as '{scale.name}: {fmt or 'f32'}[{want}]'")
    if fmt is not None and scale.dtype != fmt and not packed:
        raise CompileError(f"'{p.name}' has format = {fmt}, so its scale '{scale.name}' must be "
                           f"{fmt}, not {scale.dtype}", None,
                           f"declare it as '{scale.name}: {'out ' * scale.is_out}{fmt}[{want}]'")
    if not ok_shape:
        got = ", ".join(map(str, scale.dims))
        groups = " x ".join(map(str, group)) + (f", layout = {layout}"
                                                if layout != "k_major" else "")
        raise CompileError(
            f"scale '{scale.name}' has shape [{got}] but '{p.name}' in groups of {groups} "
            f"needs [{want}]", None,
            f"declare it as '{scale.name}: {'out ' * scale.is_out}{scale.dtype}[{want}]' "
            f"(or cdiv(...) for ragged groups)")
    if data.is_out and not scale.is_out:
        raise CompileError(f"'{p.name}' is an output, so its scale '{scale.name}' must be one too",
                           None, f"declare '{scale.name}: out {scale.dtype}[...]'")
    return QuantGroup(group, scale.name, fmt or scale.dtype, layout)


def _mn_major(p: ast.Param, data: TensorParam, group: tuple[int, ...], expected: list,
              span, packed: bool) -> list:
    """The transposed scale shape: [..., K / G, MP] for [..., M, K] data in 1 x ... x 1 x G
    groups, MP the padded M (`cdiv(M, 4) * 4`, or its value where M is a constant);
    [..., cdiv(K / G, 4), MP] where four groups share a word (`packed`)."""
    if len(group) < 2 or any(g != 1 for g in group[:-1]) or group[-1] == 1:
        raise CompileError(f"layout = mn_major needs groups of one row, 1 x G, not "
                           f"{' x '.join(map(str, group))}", span,
                           "transposed scales are DeepGEMM's layout for 1 x 128 activation "
                           "groups; keep the default k_major for blocks")
    rows = data.dims[-2]
    padded = BinOp("*", BinOp("cdiv", rows, Const(MN_MAJOR_ALIGN)), Const(MN_MAJOR_ALIGN))
    if isinstance(rows, Const):
        padded = Const(-(-rows.value // MN_MAJOR_ALIGN) * MN_MAJOR_ALIGN)
    groups = expected[-1]
    if packed:
        groups = tuple(_packed(g) for g in groups)
    return expected[:-2] + [groups, (padded,)]


def _packed(groups: Dim) -> Dim:
    """The words that hold `groups` exponent bytes, four to a word."""
    if isinstance(groups, Const):
        return Const(-(-groups.value // UE8M0_PER_WORD))
    return BinOp("cdiv", groups, Const(UE8M0_PER_WORD))


def _const_eq(a: Dim, b: Dim) -> bool:
    try:
        return a.evaluate({}) == b.evaluate({})
    except Exception:
        return False


def check_signature(k: ast.Kernel, overrides: dict) -> Signature:
    constants = _constants(k, overrides)
    symbols: list[str] = []
    tensors: dict[str, TensorParam] = {}
    spans: dict[str, ast.Param] = {}
    for p in k.params:
        if p.name in tensors:
            raise CompileError(f"parameter '{p.name}' is declared twice", p.span)
        dt = resolve_dtype(p.dtype.id, constants, p.dtype.span)
        dims = tuple(to_dim(d, constants, symbols) for d in p.dims)
        if p.is_sym and p.is_out:
            raise CompileError(f"'{p.name}' cannot be both 'out' and 'sym'", p.span,
                               "a symmetric buffer belongs to the runtime; write it with "
                               f"'put peer(rank).{p.name}[...] = ...'")
        tensors[p.name] = TensorParam(p.name, dt, dims, p.is_out, symmetric=p.is_sym)
        spans[p.name] = p
    for p in k.params:
        if p.quant is not None:
            try:
                quant = _check_quant(p, tensors, constants)
            except CompileError as e:
                if e.span is None:
                    e.span = spans[p.quant.scale.id].span if p.quant.scale.id in spans else p.span
                raise
            tensors[p.name] = dataclasses.replace(tensors[p.name], quant=quant)
    grid: tuple[Dim, ...] = (Const(1),)
    warps = sms = None
    ctas_per_sm = 1
    fast_math = False
    for a in k.attrs:
        if a.name not in KERNEL_ATTRS:
            raise CompileError(f"unknown kernel annotation '{a.name}'", a.span,
                               did_you_mean(a.name, KERNEL_ATTRS) or
                               "known: " + "; ".join(KERNEL_ATTRS.values()))
        if a.name == "grid":
            if not 1 <= len(a.args) <= 3 or a.kwargs:
                raise CompileError("grid takes one to three sizes", a.span, KERNEL_ATTRS["grid"])
            grid = tuple(to_dim(e, constants, symbols, allow_new=False) for e in a.args)
        elif a.name == "warps":
            if len(a.args) != 1:
                raise CompileError("warps takes one number", a.span, KERNEL_ATTRS["warps"])
            warps = _positive_int(a.args[0], constants, "the warp count")
        elif a.name == "sms":
            if len(a.args) != 1 or a.kwargs:
                raise CompileError("sms takes one number", a.span, KERNEL_ATTRS["sms"])
            sms = _positive_int(a.args[0], constants, "the SM budget")
        elif a.name == "fast_math":
            if a.args or a.kwargs:
                raise CompileError("fast_math takes no arguments", a.span,
                                   KERNEL_ATTRS["fast_math"])
            fast_math = True
        elif a.name == "ctas_per_sm":
            if len(a.args) != 1 or a.kwargs:
                raise CompileError("ctas_per_sm takes one number", a.span,
                                   KERNEL_ATTRS["ctas_per_sm"])
            ctas_per_sm = _positive_int(a.args[0], constants, "the CTAs per SM")
    if sms is not None:
        if any(a.name == "grid" for a in k.attrs):
            raise CompileError("sms(N) launches N programs, so the kernel takes no grid(...)",
                               next(a for a in k.attrs if a.name == "grid").span,
                               "drop grid(...) and loop over the work: "
                               "'for w in pid.0 .. ITEMS step N'")
        grid = (Const(sms),)
    return Signature(k.name, constants, list(tensors.values()), spans, symbols, grid, warps,
                     sms, ctas_per_sm, fast_math)



def check_launch_limits(k: ast.Kernel, sig: Signature, target: Target) -> None:
    """The kernel's warps(N) and ctas_per_sm(N) against what the target's CTAs and SMs hold."""
    spans = {a.name: a.args[0].span for a in k.attrs if a.name in ("warps", "ctas_per_sm")}
    max_warps = target.max_threads_per_block // target.warp_size
    if sig.warps is not None and sig.warps > max_warps:
        raise CompileError(f"{sig.warps} warps is more than a CTA can hold ({max_warps})",
                           spans["warps"])
    if sig.ctas_per_sm > target.max_ctas_per_sm:
        raise CompileError(f"an SM holds at most {target.max_ctas_per_sm} CTAs, not "
                           f"{sig.ctas_per_sm}", spans["ctas_per_sm"], KERNEL_ATTRS["ctas_per_sm"])
