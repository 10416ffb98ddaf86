"""Fuzz inputs for the compiler: kernels generated from the language's grammar, and mutants of
the examples. `outcome` runs one through the front end, the passes and LLVM IR generation:
every input must end in success or a commdsl diagnostic, within a time limit.
"""
from __future__ import annotations

import functools
import glob
import os
import random
import re
import signal
from contextlib import contextmanager
from dataclasses import dataclass, field

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
EXAMPLES = sorted(glob.glob(os.path.join(ROOT, "examples", "*.cdsl")))
LANGUAGE_DOC = os.path.join(ROOT, "docs", "language.md")
DTYPES = ["f32", "bf16", "f16", "e4m3", "e5m2", "i32", "i16", "i8", "u8", "ue8m0", "i64"]
INTS = ["0", "1", "2", "3", "7", "16", "48", "64", "128", "256", "1024", "65536",
        "2147483647", "2147483648", "4294967296"]
FLOATS = ["0.0", "-0.0", "1.0", "0.5", "1e-4", "448.0", "1e38", "3.4e38", "1e308"]
UNARY = ["abs", "exp", "exp2", "log", "log2", "sqrt", "rsqrt", "sigmoid", "silu", "tanh", "erf",
         "sin", "cos", "floor", "ceil", "round", "fast_exp", "fast_tanh", "neg", "sq"]
BINARY_FUNCS = ["max", "min", "nanmax", "nanmin"]
REDUCE = ["amax", "sum", "max", "min", "nanmax", "nanmin"]
OPS = ["+", "-", "*", "/", "%", "&", "|", "^", "<<", ">>"]
COMPARE = ["<", "<=", ">", ">=", "==", "!="]
# Inline functions a generated kernel may call (`sq` above, `gate` below) or misuse.
GENTLE_MATH = ["exp", "exp2", "sigmoid", "silu", "tanh", "erf", "abs", "sqrt"]
FUNCTIONS = ["fn sq(v) = v * v", "fn gate(a, b) { let g = sigmoid(a)\n  g * b }",
             "fn loop(v) = loop(v)", "fn max(v) = v"]
# Single characters and fragments a mutation may insert: delimiters, odd bytes, keywords.
NOISE = ["(", ")", "[", "]", "{", "}", ",", ":", "+", "-", "*", "/", "%", "=", ".", "<", ">",
         "\x00", "\u00e9", "\t", "\n", "#", "let", "store", "for", "via tma", "pipeline(2)",
         "None", "pid.3", "cdiv(", "cast<e4m3>(", "zeros(f32, 1, 128)", "1e999"]


@dataclass
class FuzzInput:
    text: str
    constants: dict = field(default_factory=dict)
    origin: str = ""

    def __str__(self):
        return f"--- {self.origin} constants={self.constants}\n{self.text}"


class Generator:
    """Random kernels from the grammar: a signature, constants, attributes and a body of
    lets, stores and loops over tiles loaded from the parameters."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def pick(self, xs):
        return self.rng.choice(xs)

    def number(self) -> str:
        return self.pick(INTS) if self.rng.random() < 0.6 else self.pick(FLOATS)

    def scalar(self, depth: int) -> str:
        r = self.rng.random()
        if depth <= 0 or r < 0.3:
            return self.pick([self.number(), "C", "pid.0", "pid.1", "M", "K"])
        if r < 0.7:
            return f"({self.scalar(depth - 1)} {self.pick(OPS)} {self.scalar(depth - 1)})"
        if r < 0.85:
            return f"cdiv({self.scalar(depth - 1)}, {self.scalar(depth - 1)})"
        return f"-{self.scalar(depth - 1)}"

    def tile(self, depth: int, names: list[str]) -> str:
        r = self.rng.random()
        if depth <= 0 or r < 0.25:
            return self.pick(names + [self.number()])
        if r < 0.45:
            return (f"({self.tile(depth - 1, names)} {self.sane(['+', '-', '*', '/'], OPS)} "
                    f"{self.tile(depth - 1, names)})")
        if r < 0.55:
            return f"cast<{self.sane(['f32', 'bf16', 'e4m3'], DTYPES)}>({self.tile(depth - 1, names)})"
        if r < 0.65:
            return f"{self.pick(UNARY)}({self.tile(depth - 1, names)})"
        if r < 0.75:
            return (f"{self.pick(BINARY_FUNCS)}({self.tile(depth - 1, names)}, "
                    f"{self.tile(depth - 1, names)})")
        if r < 0.85:
            axis = self.pick(["", ", axis = 0", ", axis = 1", ", axis = 2", ", axis = -1"])
            return f"{self.pick(REDUCE)}({self.tile(depth - 1, names)}{axis})"
        if r < 0.88:
            return f"{self.tile(depth - 1, names)}[{self.pick(VIEWS)}]"
        if r < 0.91:
            return (f"where({self.predicate(depth - 1, names)}, {self.tile(depth - 1, names)}, "
                    f"{self.tile(depth - 1, names)})")
        if r < 0.93:
            return self.pick([f"reshape({self.tile(depth - 1, names)}, {self.pick(SHAPES)})",
                              f"transpose({self.tile(depth - 1, names)})",
                              f"bitcast<{self.pick(DTYPES)}>({self.tile(depth - 1, names)})",
                              f"pow({self.tile(depth - 1, names)}, {self.pick(['0', '2', '-3', '2.5'])})",
                              f"gate({self.tile(depth - 1, names)}, {self.tile(depth - 1, names)})"])
        if r < 0.95:
            return f"cast<{self.pick(DTYPES)}>({self.iota()})"
        return f"zeros({self.pick(DTYPES)}, {self.pick(INTS[:9])}, {self.pick(INTS[:9])})"

    def iota(self) -> str:
        return self.pick([f"iota({self.pick(INTS[:9])})",
                          f"iota({self.pick(['1', '2', '16'])}, {self.pick(['64', '128'])}, "
                          f"axis = {self.sane(['0', '1'], ['2', '-1'])})"])

    def predicate(self, depth: int, names: list[str]) -> str:
        r = self.rng.random()
        if depth <= 0 or r < 0.6:
            return (f"{self.tile(depth - 1, names)} {self.pick(COMPARE)} "
                    f"{self.pick([self.tile(depth - 1, names), self.iota()])}")
        if r < 0.8:
            return (f"({self.predicate(depth - 1, names)}) {self.pick(['and', 'or'])} "
                    f"({self.predicate(depth - 1, names)})")
        return f"not ({self.predicate(depth - 1, names)})"

    def mask(self, names: list[str], store: bool = False) -> str:
        """An optional mask (and, for a load, fill value) clause."""
        r = self.rng.random()
        if r < 0.6:
            return ""
        if store:
            return f" mask({self.predicate(1, names)})"
        other = self.pick(["", " other = 0.0", " other = -inf", " other = inf", " other = 3",
                           " other = t"])
        if r < 0.7:
            return other
        return f" mask({self.predicate(1, names)}){other}"

    def slice(self, start: str, length: str) -> str:
        return f"{start} : +{length}"

    def sane(self, usual: list[str], wild: list[str]) -> str:
        """Mostly a choice a real kernel makes; now and then anything, so that each knob is
        wrong alone often enough and most inputs still reach the passes."""
        return self.pick(wild if self.rng.random() < 0.08 else usual)

    def kernel(self) -> FuzzInput:
        dx, dy = (self.sane(["f32", "bf16", "e4m3"], DTYPES) for _ in range(2))
        rows = self.sane(["1", "2", "ROWS"], ["16", "3", "0"])
        cols = self.sane(["128", "64", "C"], ["48", "100", "0"])
        quant = ""
        if dy in ("e4m3", "e5m2") and self.rng.random() < 0.5:
            quant = f" quant(1 x {self.sane(['128'], ['64', '0', '17', 'C'])}, scale = s)"
        params = (f"x: {dx}[M, K], y: out {dy}[M, K]{quant}, "
                  f"s: out {self.sane(['f32'], ['ue8m0', 'i32'])}"
                  f"[M, K / {self.sane(['128'], ['64', '0', 'C', 'pid.0'])}]")
        c = self.sane(["64", "128", "(32 * 4)", "(1 << 7)"], [self.scalar(2)])
        consts = [f"  const C = {c}",
                  f"  tune ROWS = {self.sane(['1', '2', '4'], INTS[:8])} in [1, 2, 4]"]
        grid = (["cdiv(M, ROWS)", "cdiv(K, 128)"] if self.rng.random() > 0.08 else
                [self.scalar(1) for _ in range(self.rng.randint(1, 3))])
        attrs = [f"  grid({', '.join(grid)})"]
        if self.rng.random() < 0.5:
            attrs.append(f"  warps({self.sane(['1', '2', '4'], INTS[:9])})")
        if self.rng.random() < 0.2:
            attrs.append("  fast_math()")
        names = ["t"]
        clause = self.sane(["", " cache(nc)", " cache(nc, L1 = no_allocate, L2 = 256B)"],
                           [" via tma", " cache(bogus)"])
        body = [f"  let t = load x[{self.slice('pid.0 * ' + rows, rows)}, {self.slice('0', cols)}]"
                f"{clause}{self.mask([self.iota()])}"]
        for i in range(self.rng.randint(0, 3)):
            name = f"u{i}"
            body.append(f"  let {name} = {self.tile(3, names)}")
            names.append(name)
        if self.rng.random() < 0.4:
            step = self.sane(["128", "C"], ["0", "1", "-1"])
            loop = self.sane(["", " pipeline(2)"], [" pipeline(3)", " pipeline(0)"])
            body.append(f"  for k0 in 0 .. K step {step}{loop} {{\n"
                        f"    let v = load x[{self.slice('pid.0', rows)}, {self.slice('k0', cols)}]\n"
                        f"    store y[{self.slice('pid.0', rows)}, {self.slice('k0', cols)}] = "
                        f"{self.tile(2, ['v'] + names)}\n  }}")
        body.append(f"  store y[{self.slice('pid.0 * ' + rows, rows)}, {self.slice('0', cols)}]"
                    f"{self.mask(names, store=True)} = "
                    f"{self.sane([f'cast<{dy}>({{}})'], ['{}']).format(self.tile(3, names))}")
        if self.rng.random() < 0.5:
            body.append(f"  store s[{self.slice('pid.0', rows)}, pid.1] = {self.tile(2, names)}")
        functions = self.rng.sample(FUNCTIONS[:2] if self.rng.random() > 0.08 else FUNCTIONS,
                                    self.rng.randint(0, 2))
        text = "".join(f + "\n" for f in functions) + (
            f"kernel k({params})\n" + "\n".join(consts + attrs) + "\n{\n" +
            "\n".join(body) + "\n}\n")
        return FuzzInput(text, origin="generated")


VIEWS = [":, None", "None, :", ":", ":, 0 : +64", "0 : +1, :", ":, 64 : +64", ":, 100 : +64",
         "0 : +2, 0 : +1"]
SHAPES = ["1, 2, 64", "2, 64", "1, 128", "128, 1", "3, 40", "1, 1, 128, 1"]


def doc_snippets() -> list[str]:
    """The language reference's ```cdsl blocks: every construct the language has."""
    text = open(LANGUAGE_DOC).read()
    return re.findall(r"^```cdsl\n(.*?)^```$", text, re.S | re.M)


_TOKEN = re.compile(r"\d+\.\d*(?:e-?\d+)?|\d+|\w+|[^\s\w]")


class Mutator:
    """Token-level mutations of the examples: numbers to interesting values, names swapped,
    operators changed, tokens dropped or repeated, noise inserted, constants overridden."""

    def __init__(self, rng: random.Random, sources: list[str] | None = None):
        self.rng = rng
        self.sources = (sources if sources is not None
                        else [open(p).read() for p in EXAMPLES] + doc_snippets())

    def mutate(self) -> FuzzInput:
        text = self.rng.choice(self.sources)
        for _ in range(self.rng.randint(1, 3)):
            text = self.once(text)
        constants = {}
        if self.rng.random() < 0.2:
            names = re.findall(r"(?:tune|const)\s+(\w+)", text)
            if names:
                constants[self.rng.choice(names)] = self.rng.choice(
                    [0, 1, 7, 64, 1024, 2147483648, -1, 0.5, "e5m2", "f32", "i64"])
        return FuzzInput(text, constants, origin="mutated")

    def gentle(self) -> FuzzInput:
        """One change that keeps a kernel meaningful: a number, an arithmetic operator or a
        math function swapped, or a tune constant set to another of its values."""
        text = self.rng.choice(self.plain)
        tokens = [t for t in _TOKEN.finditer(text) if t.group()[0].isdigit()
                  or t.group() in ("+", "-", "*") or t.group() in GENTLE_MATH]
        constants = {}
        tunes = re.findall(r"tune\s+(\w+)\s*=\s*\w+\s+in\s+\[([^\]]*)\]", text)
        if tunes and (self.rng.random() < 0.4 or not tokens):
            name, values = self.rng.choice(tunes)
            constants[name] = int(self.rng.choice(values.split(",")).strip())
        elif tokens:
            m = self.rng.choice(tokens)
            tok = m.group()
            if tok in GENTLE_MATH:
                new = self.rng.choice(GENTLE_MATH)
            elif tok in ("+", "-", "*"):
                new = self.rng.choice(["+", "-", "*"])
            elif "." in tok or "e" in tok:
                new = self.rng.choice(["0.5", "2.0", "1e-4", "448.0", "-3.0"])
            else:
                new = str(max(1, int(tok) * self.rng.choice([1, 2]) // self.rng.choice([1, 2])))
            text = text[:m.start()] + new + text[m.end():]
        return FuzzInput(text, constants, origin="gentle")

    @functools.cached_property
    def plain(self) -> list[str]:
        """The sources with no error example among them."""
        return [s for s in self.sources if "expect-error" not in s]

    def once(self, text: str) -> str:
        tokens = list(_TOKEN.finditer(text))
        if not tokens:
            return text
        m = self.rng.choice(tokens)
        tok, (a, b) = m.group(), m.span()
        r = self.rng.random()
        if r < 0.3 and tok[0].isdigit():
            new = self.rng.choice(INTS + FLOATS)
        elif r < 0.5 and (tok[0].isalpha() or tok[0] == "_"):
            words = [t.group() for t in tokens if t.group()[0].isalpha()]
            new = self.rng.choice(words + DTYPES + REDUCE + UNARY + ["where", "iota", "reshape",
                                                                     "transpose", "mask", "other"])
        elif r < 0.6 and tok in OPS + COMPARE:
            new = self.rng.choice(OPS + COMPARE)
        elif r < 0.7:
            new = ""
        elif r < 0.8:
            new = tok + " " + tok
        elif r < 0.9:
            new = tok + " " + self.rng.choice(NOISE) + " "
        else:                                       # move a line elsewhere
            lines = text.splitlines(keepends=True)
            if len(lines) > 2:
                line = lines.pop(self.rng.randrange(len(lines)))
                lines.insert(self.rng.randrange(len(lines)), line)
            return "".join(lines)
        return text[:a] + new + text[b:]


def inputs(seed: int, count: int, stream: str = "mixed"):
    """`count` inputs, the same for the same seed: "mixed" is half generated and half
    mutated; "valid" is gentle mutants, most of which compile (for runs through ptxas)."""
    rng = random.Random(seed)
    gen, mut = Generator(rng), Mutator(rng)
    for i in range(count):
        if stream == "valid":
            yield mut.gentle()
        else:
            yield gen.kernel() if i % 2 == 0 else mut.mutate()


class InputTimeout(Exception):
    """An input ran past its time limit (a hang, for the fuzzer)."""


@contextmanager
def deadline(seconds: float):
    def expire(signum, frame):
        raise InputTimeout(f"over {seconds} s")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class PtxasRejected(Exception):
    """ptxas refused PTX the compiler emitted: a backend bug, for the fuzzer."""


def outcome(item: FuzzInput, seconds: float = 5.0, emit: str = "llvm") -> str:
    """'ok' or 'error' (a diagnostic, rendered); anything else raises: an internal error,
    InputTimeout, or PtxasRejected. emit = "cubin" runs ptxas on the PTX of each kernel."""
    from commdsl.compiler import compile_source
    from commdsl.diagnostics import CommdslError, ToolError
    from commdsl.runtime.ptxas import assemble
    with deadline(seconds):
        try:
            compiled = compile_source(item.text, "fuzz.cdsl", constants=item.constants,
                                      emit="ptx" if emit == "cubin" else emit)
        except CommdslError as e:
            e.render()
            return "error"
    if emit == "cubin":
        for entry in re.findall(r"^\.visible \.entry (\w+)", compiled.ptx, re.M):
            try:
                assemble(compiled.ptx, arch=compiled.target, entry=entry)
            except ToolError as e:
                raise PtxasRejected(str(e)[:2000]) from None
    return "ok"
