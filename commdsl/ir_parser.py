"""Reads the tile IR's text form (commdsl/ir_printer.py) back into KernelIR.

`print_kernel(parse_kernel(text)) == text` for whatever the printer writes, so a pass can be
run on IR written by hand or saved from `commdsl compile --emit ir` (`commdsl opt`).
Parsed ops carry the span of their line in the text, so a pass's error points there.
Attribute objects are built from ATTRIBUTE_CLASSES: a class a pass registers with
`attribute_class` is known once that pass's module is imported.
"""
from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, fields
from importlib import resources

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, VisitError

from .config import cache_dir
from .diagnostics import CompileError, Source, Span
from .dims import BinOp, Const, SmCount, Sym
from .ir import (BarrierType, Block, KernelIR, Op, ScalarType, SmemType, TensorType, TileType,
                 Value)
from .ir_printer import ATTRIBUTE_CLASSES, VALUE_ID_ATTRS


@functools.lru_cache(maxsize=1)
def _parser() -> Lark:
    grammar = resources.files("commdsl.grammar").joinpath("tile_ir.lark").read_text()
    folder = cache_dir()
    return Lark(grammar, parser="lalr", maybe_placeholders=True,
                cache=os.path.join(folder, "tile_ir.lark.cache") if folder else False)


def parse_module(text: str, path: str = "<string>") -> list[KernelIR]:
    """Every kernel of an IR text, in order."""
    source = Source(text, path)
    try:
        tree = _parser().parse(text)
        return [_Builder().kernel(k) for k in tree.children]
    except UnexpectedInput as e:
        raise _syntax_error(e, source) from None
    except CompileError as e:
        raise e.with_source(source) from None


def parse_kernel(text: str, path: str = "<string>") -> KernelIR:
    """The one kernel of an IR text."""
    kernels = parse_module(text, path)
    if len(kernels) != 1:
        raise CompileError(f"{path} holds {len(kernels)} kernels, expected one",
                           None, None, Source(text, path))
    return kernels[0]


@dataclass(frozen=True)
class _ValueName:
    """A value's name in an attribute, resolved to its id once the kernel is built."""
    token: Token


def _span(tok: Token) -> Span:
    return Span(tok.line, tok.column, tok.end_line, tok.end_column)


@v_args(inline=True)
class _Terms(Transformer):
    """Types, symbolic sizes and attribute values: built bottom-up, no context needed."""

    # ---- types
    def scalar_type(self, dtype):
        return ScalarType(str(dtype))

    def tile_type(self, dtype, shape, layout):
        return TileType(str(dtype), shape, layout)

    def tensor_type(self, dtype, dims, out, sym):
        return TensorType(str(dtype), dims, out is not None, sym is not None)

    def smem_type(self, dtype, stages, *shape):
        return SmemType(str(dtype), int(stages), tuple(int(s) for s in shape))

    def smem_view_type(self, dtype, stages, *shape_and_pitch):
        *shape, pitch = shape_and_pitch
        return SmemType(str(dtype), int(stages), tuple(int(s) for s in shape), int(pitch))

    def barrier_type(self, count):
        return BarrierType(int(count))

    def ints(self, *items):
        return tuple(int(i) for i in items if i is not None)

    # ---- symbolic sizes
    def dims(self, *items):
        return tuple(d for d in items if d is not None)

    def dim_const(self, tok):
        return Const(int(tok))

    def dim_sym(self, tok):
        return Sym(str(tok))

    def dim_sms(self, budget=None):
        return SmCount(None if budget is None else int(budget))

    def dim_binop(self, lhs, op, rhs):
        return BinOp(str(op), lhs, rhs)

    def dim_cdiv(self, lhs, rhs):
        return BinOp("cdiv", lhs, rhs)

    def dim_min(self, lhs, rhs):
        return BinOp("min", lhs, rhs)

    def dim_max(self, lhs, rhs):
        return BinOp("max", lhs, rhs)

    # ---- attribute values
    def attr_dict(self, *entries):
        return dict(entries)

    dict_attr = attr_dict

    def attr_entry(self, key, value):
        return (json.loads(key) if key.type == "STRING" else str(key), value)

    def int_attr(self, tok):
        return int(tok)

    def float_attr(self, tok):
        return float(tok)

    def str_attr(self, tok):
        return json.loads(tok)

    def true_attr(self):
        return True

    def false_attr(self):
        return False

    def none_attr(self):
        return None

    def tuple_attr(self, *items):
        return items

    def value_attr(self, tok):
        return _ValueName(tok)

    def dim_attr(self, dim):
        return dim

    def object_arg(self, key, value):
        return (None if key is None else str(key), value)

    def object(self, name, *args):
        cls = ATTRIBUTE_CLASSES.get(str(name))
        if cls is None:
            raise CompileError(f"unknown attribute object '{name}'", _span(name),
                               f"known: {', '.join(sorted(ATTRIBUTE_CLASSES))}; a pass's "
                               "class is known once its module is imported")
        names = [f.name for f in fields(cls)]
        kwargs = {}
        for i, (key, value) in enumerate(a for a in args if a is not None):
            key = key or (names[i] if i < len(names) else None)
            if key not in names or key in kwargs:
                raise CompileError(f"{name} has no field '{key}'" if key not in names else
                                   f"{name} gets '{key}' twice", _span(name),
                                   f"fields: {', '.join(names)}")
            kwargs[key] = value
        try:
            return cls(**kwargs)
        except TypeError as e:
            raise CompileError(f"{name}: {e}", _span(name)) from None


class _Builder:
    """Ops, blocks and kernels, built in text order so every use finds its definition."""

    def __init__(self):
        self.values: dict[str, Value] = {}

    def terms(self, tree):
        try:
            return _Terms().transform(tree)
        except VisitError as e:
            if isinstance(e.orig_exc, CompileError):
                raise e.orig_exc from None
            raise

    def attrs(self, tree, value_ids=()) -> dict:
        """An attribute dict; a value's name stands for its id in the keys `value_ids`."""
        attrs = self.terms(tree)
        for key, v in attrs.items():
            if key in value_ids and isinstance(v, _ValueName):
                attrs[key] = self.use(v.token).id
            else:
                _no_value_names(v)
        return attrs

    def define(self, tok: Token, type) -> Value:
        name = str(tok)
        if name in self.values:
            raise CompileError(f"{name} is defined twice", _span(tok), "rename one of them")
        base = name[1:].split(".")[0]
        v = Value(type, None if base.isdigit() else base)
        self.values[name] = v
        return v

    def use(self, tok: Token) -> Value:
        v = self.values.get(str(tok))
        if v is None:
            raise CompileError(f"{tok} is used before it is defined", _span(tok),
                               "define a value before the ops that use it")
        return v

    def kernel(self, tree: Tree) -> KernelIR:
        name, params, grid, threads, shared, attrs, *ops = tree.children
        k = KernelIR(str(name), [], [], Block(), self.terms(grid))
        for p in params.children:
            if p is None:
                continue
            tok, type = p.children[0], self.terms(p.children[1])
            if isinstance(type, TensorType):
                k.tensors.append(self.define(tok, type))
            elif type == ScalarType("i32"):
                k.sizes.append(self.define(tok, type))
            else:
                raise CompileError(f"parameter {tok} is a {type}: parameters are tensors or "
                                   "i32 sizes", _span(tok))
        k.num_threads = int(threads.children[0]) if threads is not None else 0
        k.shared_bytes = int(shared.children[0]) if shared is not None else 0
        k.body.ops = [self.op(o) for o in ops]
        if attrs is not None:
            k.attrs = self.attrs(attrs.children[0], VALUE_ID_ATTRS)
        return k

    def op(self, tree: Tree) -> Op:
        results, name, operands, attrs, types, *regions = tree.children
        operands = [self.use(t) for t in operands.children if t is not None]
        types = list(self.terms(types).children) if types is not None else []
        result_toks = results.children if results is not None else []
        if len(result_toks) != len(types):
            raise CompileError(f"{name} has {len(result_toks)} results and {len(types)} "
                               "result types", _span(name), "give one type per result")
        op = Op(str(name), operands, [self.define(t, ty) for t, ty in zip(result_toks, types)],
                self.attrs(attrs) if attrs is not None else {}, loc=_span(name))
        op.blocks = [self.block(r) for r in regions]
        return op

    def block(self, tree: Tree) -> Block:
        args, *ops = tree.children
        block = Block()
        if args is not None:
            for a in args.children:
                if a is not None:
                    block.args.append(self.define(a.children[0], self.terms(a.children[1])))
        block.ops = [self.op(o) for o in ops]
        return block


def _no_value_names(v) -> None:
    if isinstance(v, _ValueName):
        raise CompileError(f"{v.token}: a value stands in an attribute only for "
                           f"{', '.join(VALUE_ID_ATTRS)}", _span(v.token))
    for x in v.values() if isinstance(v, dict) else v if isinstance(v, tuple) else ():
        _no_value_names(x)


def _syntax_error(e: UnexpectedInput, source: Source) -> CompileError:
    line, col = max(e.line, 1), max(e.column, 1)
    if isinstance(e, UnexpectedCharacters):
        char = source.line(line)[col - 1:col]
        return CompileError(f"unexpected character {char!r}", Span(line, col, line, col + 1),
                            None, source)
    if isinstance(e, UnexpectedEOF) or e.token.type == "$END":
        lines = source.text.splitlines() or [""]
        end = len(lines[-1]) + 1
        return CompileError("unexpected end of the IR text",
                            Span(len(lines), end, len(lines), end + 1),
                            "close every '(', '<', '[' and '{'", source)
    token = e.token
    expected = sorted(t for t in (getattr(e, "accepts", None) or e.expected)
                      if not t.startswith("_"))
    return CompileError(f"unexpected {str(token)!r}",
                        Span(line, col, line, col + max(1, len(str(token)))),
                        f"expected one of: {', '.join(_pretty(t) for t in expected[:10])}",
                        source)


_TERMINALS = {
    "LPAR": "'('", "RPAR": "')'", "LSQB": "'['", "RSQB": "']'", "LBRACE": "'{'",
    "RBRACE": "'}'", "LESSTHAN": "'<'", "MORETHAN": "'>'", "COMMA": "','", "COLON": "':'",
    "EQUAL": "'='", "CIRCUMFLEX": "'^'", "AT": "'@'", "NAME": "a name", "INT": "an integer",
    "FLOAT": "a number", "STRING": "a string", "VALUE": "a value (%name)",
    "DIM_OP": "'+', '-', '*' or '/'",
}


def _pretty(terminal: str) -> str:
    return _TERMINALS.get(terminal, terminal.lower().join("''"))
