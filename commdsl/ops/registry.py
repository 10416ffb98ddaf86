"""The op registry: every tile-IR op is declared once, here or in a sibling module.

A declaration (`OpDef`) holds what the rest of the compiler needs to know about an op:
its operands and results in one line of text, the attributes it carries, its traits (which
passes select ops by, never by lists of names), its verifier rule, its meaning on the CPU
(the interpreter runs it), and a one-line doc. `docs/ir.md` is generated from the
declarations. Backends keep their own table of emitters per (op, target).

    interpret(ctx, op, *operand_values) -> result value (or a list, one per result)
        ctx is the interpreter's state of one program (commdsl/interpreter.py). An op that
        may wait (a barrier, a loop whose body waits) returns a generator instead: the
        program runs it as part of its coroutine and takes its return value as the result.
    verify(op) -> None, raising IRVerifyError through `fail(op, message)`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


class IRVerifyError(Exception):
    """The IR breaks an op's rule: a compiler bug, not a user mistake."""


def fail(op, msg: str):
    raise IRVerifyError(f"'{op.name}' {msg}")


# ---- traits: what a pass may ask of an op -----------------------------------------------
ELEMENTWISE = "elementwise"    # result element i depends on operand elements i only
REDUCTION = "reduction"        # folds an axis of a tile
MEMORY = "memory"              # reads or writes global memory
READS = "reads"                # a memory op that reads it (into its result, or shared memory)
WRITES = "writes"              # a memory op that writes it
SHARED = "shared"              # reads or writes shared memory
ASYNC = "async"                # starts or completes work that runs beside the thread
BARRIER = "barrier"            # threads (or async units) meet or order their accesses
TERMINATOR = "terminator"      # ends a block
REGION = "region"              # holds nested blocks
SIDE_EFFECTS = "side_effects"  # must not be removed or reordered even if its results are unused
COMM = "comm"                  # reaches other ranks' memory
MMA = "mma"                    # tensor-core matrix product
PROMOTES = "promotes"          # scales a tensor-core partial product into an f32 accumulator
LAYOUT = "layout"              # moves a tile's elements between threads, same values
INDEX = "index"                # gives an i32 index of the launch (pid, rank, ...)
PER_CTA = "per_cta"            # gives a value that differs between the CTAs of one launch
CONSTANT = "constant"          # a compile-time value
ACQUIRE = "acquire"            # orders the thread's later reads after another agent's release
RELEASE = "release"            # publishes the program's earlier writes to another agent
# What an op's result sign is, for a pass that needs to know a value is >= +0 (or NaN):
NONNEGATIVE = "nonnegative"    # always, whatever the operands
KEEPS_NONNEGATIVE = "keeps_nonnegative"   # when every operand is
ANY_NONNEGATIVE = "any_nonnegative"       # when any operand is (max)

TRAITS = (ELEMENTWISE, REDUCTION, MEMORY, READS, WRITES, SHARED, ASYNC, BARRIER, TERMINATOR, REGION,
          SIDE_EFFECTS, COMM, MMA, PROMOTES, LAYOUT, INDEX, PER_CTA, CONSTANT, ACQUIRE, RELEASE,
          NONNEGATIVE, KEEPS_NONNEGATIVE, ANY_NONNEGATIVE)


@dataclass(frozen=True)
class Builtin:
    """An elementwise op the language calls as a function, `name(args)` (commdsl/irgen.py):
    narrow floats are computed in f32, scalars and tiles broadcast as for `+`."""
    name: str                  # the function's name in commdsl source
    usage: str                 # its help line in diagnostics, e.g. "abs(t)"
    arity: int = 1             # 1 to 3 arguments
    floats_only: bool = False  # integer arguments are an error


@dataclass(frozen=True)
class OpDef:
    name: str
    syntax: str                            # "add(a, b) : T", operands and results in IR text
    doc: str                               # one line
    traits: frozenset[str]
    verify: Callable[[Any], None]
    interpret: Callable[..., Any] | None
    attrs: dict[str, str] = field(default_factory=dict)    # attribute -> its meaning
    family: str = ""                       # the module that declares it: a section of docs/ir.md
    builtin: Builtin | None = None         # how the language calls it, if it does

    def has(self, trait: str) -> bool:
        return trait in self.traits


OPS: dict[str, OpDef] = {}


def declare(name: str, syntax: str, doc: str, *, traits=(), verify=None, interpret=None,
            attrs: dict[str, str] | None = None, family: str = "",
            builtin: Builtin | None = None) -> OpDef:
    unknown = set(traits) - set(TRAITS)
    if unknown:
        raise ValueError(f"op '{name}': unknown traits {sorted(unknown)}")
    if builtin and (ELEMENTWISE not in traits or builtin.arity not in (1, 2, 3)):
        raise ValueError(f"op '{name}': a builtin is an elementwise op of 1 to 3 operands")
    if name in OPS:
        raise ValueError(f"op '{name}' is declared twice")
    d = OpDef(name, syntax, doc, frozenset(traits), verify or (lambda op: None), interpret,
              dict(attrs or {}), family, builtin)
    OPS[name] = d
    return d


def lookup(name: str) -> OpDef:
    try:
        return OPS[name]
    except KeyError:
        raise IRVerifyError(f"unknown op '{name}': it has no declaration in commdsl/ops") from None


def has_trait(op, trait: str) -> bool:
    """Whether an IR op (or op name) has `trait`; an undeclared op has none."""
    d = OPS.get(op if isinstance(op, str) else op.name)
    return d is not None and trait in d.traits


def with_trait(trait: str) -> frozenset[str]:
    return frozenset(n for n, d in OPS.items() if trait in d.traits)
