"""Text to AST: the lark parser (built once, tables cached) and friendly syntax errors."""
from __future__ import annotations

import functools
import os
from dataclasses import replace
from importlib import resources

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from . import ast
from .config import cache_dir
from .diagnostics import CompileError, Source, Span

# What the user most likely meant, by the token the parser stumbled on.
_TOKEN_HINTS = {
    "RBRACE": "a statement starts with 'let', 'store' or 'for', or assigns a name",
    "EQUAL": "bind a value with 'let NAME = ...' or write through 'store T[...] = ...'",
    "COLON": "a slice is written 'start : +length', e.g. 'pid.0 * 128 : +128'",
    "$END": "the file ended early: close every '(', '[' and '{'",
}


@functools.lru_cache(maxsize=1)
def _parser() -> Lark:
    grammar = resources.files("commdsl.grammar").joinpath("commdsl.lark").read_text()
    # lark keys its table cache by the grammar's hash, so a changed grammar rebuilds it.
    folder = cache_dir()
    return Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=True,
                start=["start", "cache"],
                cache=os.path.join(folder, "grammar.lark.cache") if folder else False)


def _span(node) -> Span:
    return Span.of(node.meta if hasattr(node, "meta") else node)


@v_args(meta=True)
class _ToAst(Transformer):
    """Builds ast nodes; every node keeps the span of the text it came from."""

    def start(self, meta, items):
        functions = tuple(i for i in items if isinstance(i, ast.Function))
        kernels = tuple(replace(k, functions=functions) for k in items
                        if isinstance(k, ast.Kernel))
        return ast.Module(Span.of(meta), kernels)

    def function(self, meta, items):
        name, *params, (lets, body) = items
        params = [p for p in params if p is not None]
        return ast.Function(Span.of(meta), str(name), tuple(str(p) for p in params),
                            tuple(_span(p) for p in params), body, lets)

    def fn_body(self, meta, items):
        return tuple(items[:-1]), items[-1]

    def fn_let(self, meta, items):
        return ast.Let(Span.of(meta), str(items[0]), items[1])

    def kernel(self, meta, items):
        name, params, *rest = items
        body = rest[-1]
        attrs = rest[:-1]
        return ast.Kernel(
            Span.of(meta), str(name), params,
            tunes=tuple(t for a in attrs if a[0] == "tune" for t in a[1]),
            consts=tuple(c for a in attrs if a[0] == "const" for c in a[1]),
            attrs=tuple(a[1] for a in attrs if a[0] == "call"),
            body=body)

    def params(self, meta, items):
        return tuple(p for p in items if p is not None)

    def param(self, meta, items):
        name, out, sym, dtype, dims, quant = items
        return ast.Param(Span.of(meta), str(name), ast.Name(_span(dtype), str(dtype)), dims,
                         out is not None, quant, sym is not None)

    def quant(self, meta, items):
        group, scale, *opts = items
        return ast.Quant(Span.of(meta), group, ast.Name(_span(scale), str(scale)), tuple(opts))

    def group(self, meta, items):
        return tuple(items)

    def quant_opt(self, meta, items):
        return (str(items[0]), str(items[1]))

    def tune_attr(self, meta, items):
        return ("tune", tuple(items))

    def tune_item(self, meta, items):
        name, default, values, by = items
        return ast.Tune(Span.of(meta), str(name), default, values, by)

    def tune_values(self, meta, items):
        return tuple(items)

    def tune_by(self, meta, items):
        return ast.Name(_span(items[0]), str(items[0]))

    def const_attr(self, meta, items):
        return ("const", tuple(items))

    def const_item(self, meta, items):
        return ast.Const(Span.of(meta), str(items[0]), items[1])

    def call_attr(self, meta, items):
        name, (args, kwargs) = items
        return ("call", ast.KernelAttr(Span.of(meta), str(name), args, kwargs))

    def block(self, meta, stmts):
        return tuple(stmts)

    def let_stmt(self, meta, items):
        return ast.Let(Span.of(meta), str(items[0]), items[1])

    def store_stmt(self, meta, items):
        name, indices, cache, mask, value = items
        return ast.Store(Span.of(meta), ast.Name(_span(name), str(name)), indices, cache, value,
                         mask)

    def add_assign_stmt(self, meta, items):
        return ast.Assign(Span.of(meta), str(items[0]), "+=", items[1])

    def assign_stmt(self, meta, items):
        return ast.Assign(Span.of(meta), str(items[0]), "=", items[1])

    def for_stmt(self, meta, items):
        ranges = tuple(i for i in items if isinstance(i, ast.Range))
        clauses = tuple(i for i in items if isinstance(i, ast.KernelAttr))
        return ast.For(Span.of(meta), ranges, clauses, items[-1])

    def loop_range(self, meta, items):
        name, lo, hi, step = items
        return ast.Range(Span.of(meta), str(name), lo, hi, step)

    def loop_clause(self, meta, items):
        name, (args, kwargs) = items
        return ast.KernelAttr(Span.of(meta), str(name), args, kwargs)

    def put_stmt(self, meta, items):
        peer, indices, cache, value = items
        return ast.Put(Span.of(meta), peer, indices, cache, value)

    def signal_stmt(self, meta, items):
        peer, indices, value = items
        return ast.Signal(Span.of(meta), peer, indices, value)

    def wait_stmt(self, meta, items):
        name, indices, value = items
        return ast.Wait(Span.of(meta), ast.Name(_span(name), str(name)), indices, value)

    def peer_ref(self, meta, items):
        rank, name = items
        return ast.PeerRef(Span.of(meta), rank, ast.Name(_span(name), str(name)))

    def get(self, meta, items):
        peer, indices, cache = items
        return ast.Get(Span.of(meta), peer, indices, cache)

    def indices(self, meta, items):
        return tuple(items)

    def idx_point(self, meta, items):
        return ast.Point(Span.of(meta), items[0])

    def idx_slice(self, meta, items):
        return ast.Slice(Span.of(meta), items[0], items[1])

    def idx_all(self, meta, items):
        return ast.All(Span.of(meta))

    def idx_new(self, meta, items):
        return ast.NewAxis(Span.of(meta))

    def exprs(self, meta, items):
        return tuple(items)

    def _bin(op):
        def build(self, meta, items):
            return ast.BinOp(Span.of(meta), op, items[0], items[1])
        return build

    add, sub, mul, div, mod = _bin("+"), _bin("-"), _bin("*"), _bin("/"), _bin("%")
    bit_or, bit_xor, bit_and, shl, shr = _bin("|"), _bin("^"), _bin("&"), _bin("<<"), _bin(">>")
    and_, or_ = _bin("and"), _bin("or")

    def compare(self, meta, items):
        return ast.BinOp(Span.of(meta), str(items[1]), items[0], items[2])

    def not_(self, meta, items):
        return ast.Not(Span.of(meta), items[0])

    def invert(self, meta, items):
        return ast.Invert(Span.of(meta), items[0])

    def neg(self, meta, items):
        return ast.Neg(Span.of(meta), items[0])

    def subscript(self, meta, items):
        return ast.Subscript(Span.of(meta), items[0], items[1])

    def attribute(self, meta, items):
        return ast.Attribute(Span.of(meta), items[0], str(items[1]))

    def int_lit(self, meta, items):
        return ast.IntLit(Span.of(meta), int(items[0]))

    def float_lit(self, meta, items):
        return ast.FloatLit(Span.of(meta), float(items[0]), str(items[0]))

    def name(self, meta, items):
        return ast.Name(Span.of(meta), str(items[0]))

    def pid(self, meta, items):
        return ast.Pid(Span.of(meta), int(items[0]))

    def call(self, meta, items):
        name, type_arg, (args, kwargs) = items
        return ast.Call(Span.of(meta), str(name), str(type_arg)[1:-1] if type_arg else None,
                        args, kwargs)

    def args(self, meta, items):
        items = [i for i in items if i is not None]
        return (tuple(i for i in items if not isinstance(i, ast.KwArg)),
                tuple(i for i in items if isinstance(i, ast.KwArg)))

    def kwarg(self, meta, items):
        return ast.KwArg(Span.of(meta), str(items[0]), items[1])

    def load(self, meta, items):
        name, indices, via, cache, mask, other = items
        return ast.Load(Span.of(meta), ast.Name(_span(name), str(name)), indices, cache, via,
                        mask, other)

    def mask(self, meta, items):
        return items[0]

    def other(self, meta, items):
        return items[0]

    def via(self, meta, items):
        return ast.Name(Span.of(meta), str(items[0]))

    def cache(self, meta, items):
        return ast.CacheClause(Span.of(meta), tuple(items))

    def cache_arg(self, meta, items):
        key, value = items
        return ast.CacheArg(Span.of(meta), str(key), str(value) if value is not None else None)


# How deeply syntax may nest (a sum of N terms nests N deep): the AST builder, the checker and
# irgen recurse over it, so this keeps them well inside Python's recursion limit.
MAX_NESTING = 256


def parse(text: str, path: str = "<string>") -> ast.Module:
    source = Source(text, path)
    try:
        tree = _parser().parse(text, start="start")
    except UnexpectedInput as e:
        raise _syntax_error(e, source) from None
    _check_nesting(tree, source)
    return _ToAst().transform(tree)


def parse_cache_policy(text: str, name: str) -> ast.CacheClause:
    """The value of cache-policy constant `name` given as text (`-D XC='cache(nc)'`, or
    `commdsl.load(..., XC="cache(nc)")`)."""
    try:
        return _ToAst().transform(_parser().parse(text, start="cache"))
    except UnexpectedInput:
        raise CompileError(f"{name} = {text!r} is not a cache policy", None,
                           f"write it as a cache clause, e.g. {name}=\"cache(nc, L1 = "
                           "no_allocate)\" or \"cache()\" for none") from None


# Rules inside an expression: a nesting error points at the whole expression, not at the
# subexpression where the count ran out.
_EXPRESSION_RULES = {"add", "sub", "mul", "div", "mod", "neg", "call", "args", "kwarg",
                     "subscript", "attribute", "load", "get", "indices", "idx_point",
                     "idx_slice", "exprs"}


def _check_nesting(tree: Tree, source: Source):
    """Walks the parse tree without recursion; a node nested past MAX_NESTING is an error."""
    stack = [(tree, 1, None)]
    while stack:
        node, depth, outermost = stack.pop()
        if depth > MAX_NESTING:
            raise CompileError(f"this expression nests more than {MAX_NESTING} levels deep",
                               Span.of((outermost or node).meta),
                               "split it into several 'let' bindings", source)
        for child in node.children:
            if isinstance(child, Tree):
                top = outermost if node.data in _EXPRESSION_RULES else None
                stack.append((child, depth + 1, top or (child if child.data in
                                                        _EXPRESSION_RULES else None)))


def _syntax_error(e: UnexpectedInput, source: Source) -> CompileError:
    line, col = max(e.line, 1), max(e.column, 1)
    if isinstance(e, UnexpectedCharacters):
        char = source.line(line)[col - 1:col]
        return CompileError(f"unexpected character {char!r}", Span(line, col, line, col + 1),
                            "names are letters, digits and '_'; comments start with '#'",
                            source)
    if isinstance(e, UnexpectedEOF) or (isinstance(e, UnexpectedToken) and e.token.type == "$END"):
        last = len(text_lines := source.text.splitlines()) or 1
        end = len(text_lines[-1]) + 1 if text_lines else 1
        return CompileError("unexpected end of file", Span(last, end, last, end + 1),
                            _TOKEN_HINTS["$END"], source)
    token: Token = e.token
    closers = ("RSQB", "RPAR", "RBRACE")
    acceptable = getattr(e, "accepts", None) or e.expected
    ordered = sorted((t for t in acceptable if not t.startswith("_")),
                     key=lambda t: (t not in closers, t))
    expected = [_pretty(t) for t in ordered][:10]
    width = max(1, len(str(token)))
    hint = _TOKEN_HINTS.get(token.type) or f"expected one of: {', '.join(expected)}"
    return CompileError(f"unexpected {str(token)!r}", Span(line, col, line, col + width), hint,
                        source)


_TERMINAL_NAMES = {
    "LPAR": "'('", "RPAR": "')'", "LSQB": "'['", "RSQB": "']'", "LBRACE": "'{'",
    "RBRACE": "'}'", "COMMA": "','", "COLON": "':'", "EQUAL": "'='", "PLUS": "'+'",
    "MINUS": "'-'", "STAR": "'*'", "SLASH": "'/'", "PERCENT": "'%'", "DOT": "'.'",
    "NAME": "a name", "INT": "an integer", "FLOAT": "a number", "OUT": "'out'",
}


def _pretty(terminal: str) -> str:
    return _TERMINAL_NAMES.get(terminal, terminal.lower().strip("_").join("''"))
