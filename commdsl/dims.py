"""Symbolic dimension expressions: `M`, `K / 128`, `cdiv(N, 128)`, `2 * H`.

They appear in tensor shapes and grid sizes. The compiler compares them and derives
divisibility facts from them; the runtime evaluates them once the symbols are bound to the
shapes of the tensors a kernel is called with.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


class DimError(ValueError):
    """A dimension expression that cannot be evaluated for the given sizes."""


class Dim:
    def evaluate(self, env: dict[str, int]) -> int:
        raise NotImplementedError

    def symbols(self) -> set[str]:
        raise NotImplementedError

    def divisibility(self, facts: dict[str, int]) -> int:
        """A number this dimension is known to be a multiple of (1 if nothing is known)."""
        return 1


@dataclass(frozen=True)
class Const(Dim):
    value: int

    def evaluate(self, env):
        return self.value

    def symbols(self):
        return set()

    def divisibility(self, facts):
        return abs(self.value) or 1 << 30

    def __str__(self):
        return str(self.value)


@dataclass(frozen=True)
class Sym(Dim):
    name: str

    def evaluate(self, env):
        if self.name not in env:
            raise DimError(f"size '{self.name}' is not bound")
        return env[self.name]

    def symbols(self):
        return {self.name}

    def divisibility(self, facts):
        return facts.get(self.name, 1)

    def __str__(self):
        return self.name


@dataclass(frozen=True)
class BinOp(Dim):
    op: str  # '+', '-', '*', '/', 'cdiv', 'min', 'max'
    lhs: Dim
    rhs: Dim

    def evaluate(self, env):
        a, b = self.lhs.evaluate(env), self.rhs.evaluate(env)
        if self.op == "min":
            return min(a, b)
        if self.op == "max":
            return max(a, b)
        if self.op == "+":
            return a + b
        if self.op == "-":
            return a - b
        if self.op == "*":
            return a * b
        if b == 0:
            raise DimError(f"division by zero in '{self}'")
        if self.op == "/":
            if a % b:
                raise DimError(f"'{self}' needs {self.lhs} = {a} to be a multiple of {b}")
            return a // b
        return -(-a // b)

    def symbols(self):
        return self.lhs.symbols() | self.rhs.symbols()

    def divisibility(self, facts):
        a, b = self.lhs.divisibility(facts), self.rhs.divisibility(facts)
        if self.op == "*":
            return a * b
        if self.op in "+-":
            return math.gcd(a, b)
        if self.op == "/" and isinstance(self.rhs, Const) and a % self.rhs.value == 0:
            return a // self.rhs.value
        return 1

    def __str__(self):
        if self.op in ("cdiv", "min", "max"):
            return f"{self.op}({self.lhs}, {self.rhs})"
        return f"{_paren(self.lhs)} {self.op} {_paren(self.rhs)}"


def _paren(d: Dim) -> str:
    return f"({d})" if isinstance(d, BinOp) and d.op not in ("cdiv", "min", "max") else str(d)


@dataclass(frozen=True)
class SmCount(Dim):
    """The number of SMs of the device a kernel launches on: a persistent grid's size. The
    runtime binds it as the size named SM_COUNT. With a `budget` (`persistent(sms = S)`) it
    is S, leaving the other SMs to kernels running beside it (communication); the launcher
    checks that the device has S."""
    budget: int | None = None

    def evaluate(self, env):
        if self.budget is not None:
            return self.budget
        if SM_COUNT not in env:
            raise DimError("the SM count is known only when launching on a GPU")
        return env[SM_COUNT]

    def symbols(self):
        return set()

    def __str__(self):
        return "sms" if self.budget is None else f"sms({self.budget})"


SM_COUNT = "@sms"       # not a valid source name, so no size symbol can take it


def divisibility_facts(dims: list[Dim]) -> dict[str, int]:
    """What exact divisions in declared shapes promise: `K / 128` anywhere means 128 | K.

    The runtime checks each promise when it binds sizes, so the compiler may rely on it."""
    facts: dict[str, int] = {}

    def visit(d: Dim):
        if isinstance(d, BinOp):
            if d.op == "/" and isinstance(d.lhs, Sym) and isinstance(d.rhs, Const):
                name = d.lhs.name
                facts[name] = math.lcm(facts.get(name, 1), d.rhs.value)
            visit(d.lhs)
            visit(d.rhs)

    for d in dims:
        visit(d)
    return facts
