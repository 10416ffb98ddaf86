"""Text form of the tile IR, for `--emit ir`, `--print-after`, golden tests and `commdsl opt`.

commdsl/ir_parser.py reads it back (grammar/tile_ir.lark): `print_kernel(parse_kernel(text))`
is `text`. So everything a pass reads is printed: the kernel's attributes (`attrs {...}`)
and every op attribute but `_`-prefixed ones (source spans for diagnostics); source spans
(`Op.loc`, the kernel's `span`) are not part of the IR text.

Values are named in definition order: parameters and values the source named keep their
name (`%m0`; a later value of the same name gets a suffix, `%m0.1`), the others are
numbered from `%0`.

Attribute values: ints, floats (Python's shortest exact spelling; `inf`, `-inf`, `nan`),
strings in double quotes, `true`, `false`, `none`, tuples `[a, b]`, dicts `{k = v}`, symbolic
sizes `dim<K / 128>`, value ids `%n0` (VALUE_ID_ATTRS), and attribute objects (layouts,
quantization groups, tensor maps, shared-memory plans) as `name<field=value, ...>`, the
class looked up by name in ATTRIBUTE_CLASSES; fields at their default are left out.
"""
from __future__ import annotations

import json
import math
from dataclasses import MISSING, fields

from .dims import Dim
from .fragments import WgmmaAcc
from .ir import Block, KernelIR, Op, Value
from .layout import Blocked, Compact, Sliced
from .spec import QuantGroup, TensorMapParam

# Attribute objects by their name in the text. Layouts print themselves in the same syntax
# (`sliced<blocked<...>, axis=1>`: leading fields may be given by position).
ATTRIBUTE_CLASSES: dict[str, type] = {
    "blocked": Blocked, "sliced": Sliced, "compact": Compact, "wgmma_acc": WgmmaAcc,
    "quant": QuantGroup, "tensor_map": TensorMapParam,
}

# Kernel attributes that hold a value's id: printed as the value's name.
VALUE_ID_ATTRS = ("cluster_varying",)

# Kernel attributes that are source locations, not IR.
SOURCE_ATTRS = ("span",)


def attribute_class(name: str):
    """Registers a dataclass a pass puts in op attributes (e.g. a shared-memory plan) under
    its name in the text, so the parser can build it."""
    def register(cls):
        ATTRIBUTE_CLASSES[name] = cls
        return cls
    return register


class Names:
    """The text name of every value of one kernel, fixed in definition order."""

    def __init__(self):
        self._names: dict[int, str] = {}
        self._taken: set[str] = set()
        self._numbered = 0

    def __getitem__(self, v: Value) -> str:
        if v.id not in self._names:        # used but never defined: named where first seen
            self.define(v)
        return self._names[v.id]

    def define(self, v: Value) -> None:
        if v.id in self._names:
            return
        if v.name:
            name, n = f"%{v.name}", 0
            while name in self._taken:
                n += 1
                name = f"%{v.name}.{n}"
        else:
            name = f"%{self._numbered}"
            self._numbered += 1
        self._names[v.id] = name
        self._taken.add(name)

    def define_block(self, block: Block) -> None:
        for a in block.args:
            self.define(a)
        for op in block.ops:
            for r in op.results:
                self.define(r)
            for b in op.blocks:
                self.define_block(b)

    def by_id(self, value_id: int) -> str | None:
        return self._names.get(value_id)


class _ValueRef(str):
    """A value's name where an attribute holds its id."""


def attr_text(v) -> str:
    """An attribute value in the text form the parser reads back."""
    if isinstance(v, _ValueRef):
        return str(v)
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "-nan" if math.copysign(1.0, v) < 0 else "nan"
        return repr(v)                      # the shortest spelling that reads back exactly
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(k)} = {attr_text(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (tuple, list)):            # read back as a tuple
        return "[" + ", ".join(attr_text(x) for x in v) + "]"
    if isinstance(v, Dim):
        return f"dim<{v}>"
    for name, cls in ATTRIBUTE_CLASSES.items():
        if type(v) is cls:
            args = [f"{f.name}={attr_text(getattr(v, f.name))}" for f in fields(cls)
                    if f.default is MISSING or getattr(v, f.name) != f.default]
            return f"{name}<{', '.join(args)}>"
    raise TypeError(f"the IR text has no form for the attribute value {v!r} "
                    f"({type(v).__name__}); register its class with attribute_class()")


def _key(k: str) -> str:
    return k if k.isidentifier() else json.dumps(k)


def print_op(op: Op, names: Names, indent: str = "  ") -> list[str]:
    lhs = ", ".join(names[r] for r in op.results)
    args = ", ".join(names[o] for o in op.operands)
    attrs = {k: v for k, v in op.attrs.items() if v is not None and not k.startswith("_")}
    text = f"{lhs} = " if lhs else ""
    text += f"{op.name}({args})"
    if attrs:
        text += " " + attr_text(attrs)
    if op.results:
        text += " : " + ", ".join(str(r.type) for r in op.results)
    lines = [indent + text]
    for b in op.blocks:
        lines[-1] += " {"
        if b.args:            # block arguments: a loop's induction variable and carried values
            lines[-1] += " ^(" + ", ".join(f"{names[a]}: {a.type}" for a in b.args) + ")"
        lines += print_block(b, names, indent + "  ")
        lines.append(indent + "}")
    return lines


def print_block(block: Block, names: Names, indent: str = "  ") -> list[str]:
    out = []
    for op in block.ops:
        out += print_op(op, names, indent)
    return out


def _kernel_attrs(k: KernelIR, names: Names) -> dict:
    attrs = {}
    for key, v in k.attrs.items():
        if v is None or key in SOURCE_ATTRS:
            continue
        if key in VALUE_ID_ATTRS:
            v = _ValueRef(names.by_id(v) or str(v))
        attrs[key] = v
    return attrs


def print_kernel(k: KernelIR) -> str:
    names = Names()
    for v in (*k.tensors, *k.sizes):
        names.define(v)
    names.define_block(k.body)
    params = [f"{names[t]}: {t.type}" for t in k.tensors]
    params += [f"{names[s]}: i32" for s in k.sizes]
    grid = ", ".join(map(str, k.grid))
    head = f"kernel @{k.name}({', '.join(params)}) grid({grid})"
    if k.num_threads:
        head += f" threads({k.num_threads})"
    if k.shared_bytes:
        head += f" shared({k.shared_bytes})"
    attrs = _kernel_attrs(k, names)
    if attrs:
        head += "\n    attrs " + attr_text(attrs)
    return "\n".join([head + " {", *print_block(k.body, names), "}"]) + "\n"
